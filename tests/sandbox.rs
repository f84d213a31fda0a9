//! Containment: a vendor plugin that panics, loops forever, allocates without
//! bound or makes a forbidden system call inside the sandbox gets its section
//! refused with `io.sandbox`, and the broker (this process) carries on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mdevmig::sandbox::{Sandbox, SandboxConfig};
use mdevmig::Code;
use mdevmig_plugin_api::{DeviceInfo, SectionKind, SectionSpec};

fn hostile() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mdevmig"));
    bin.parent().unwrap().join("examples/hostile_validator")
}

fn cfg() -> SandboxConfig {
    SandboxConfig {
        program: Some(hostile()),
        deadline: Duration::from_secs(2),
        memory_limit: 256 << 20,
        cpu_limit_secs: 10,
    }
}

fn spec(name: &str) -> SectionSpec {
    SectionSpec {
        name: name.into(),
        version: 1,
        required: true,
        capability: None,
        max_len: 1 << 20,
        kind: SectionKind::Structured,
        streamed: false,
    }
}

fn device() -> DeviceInfo {
    DeviceInfo {
        vendor: "hostile".into(),
        device_type: "evil".into(),
        ..Default::default()
    }
}

#[test]
fn a_misbehaving_plugin_is_contained_and_the_broker_survives() {
    assert!(
        hostile().exists(),
        "{} not built (cargo test builds examples)",
        hostile().display()
    );
    for name in ["hostile.panic", "hostile.loop", "hostile.alloc", "hostile.open"] {
        let t = Instant::now();
        let mut sb = Sandbox::start(&cfg()).unwrap();
        let e = sb.validate(&device(), &spec(name), b"state").unwrap_err();
        assert_eq!(e.code, Code::SandboxFailed, "{name}: {e}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            t.elapsed()
        );
        // A fresh validator works after each failure: the broker carries on.
        let mut again = Sandbox::start(&cfg()).unwrap();
        again.validate(&device(), &spec("fine"), b"state").unwrap();
    }
}

#[test]
fn the_real_validator_answers_with_plugin_codes() {
    let cfg = SandboxConfig {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_mdevmig"))),
        ..SandboxConfig::default()
    };
    let mut sb = Sandbox::start(&cfg).unwrap();
    let dev = DeviceInfo {
        vendor: "mtty".into(),
        device_type: "mtty-2".into(),
        ..Default::default()
    };
    let spec = mdevmig_mtty::MttyPlugin::section_spec();
    let good = mdevmig_mtty::MttyState::busy_for(mdevmig_mtty::MttyType::Mtty2).to_bytes();
    sb.validate(&dev, &spec, &good).unwrap();
    let mut bad = good.clone();
    bad[24 + 24] = 200;
    assert_eq!(
        sb.validate(&dev, &spec, &bad).unwrap_err().code,
        Code::Vendor("vendor.mtty.fifo_index")
    );
    // The same child keeps serving.
    sb.validate(&dev, &spec, &good).unwrap();
}

#[test]
fn a_program_that_is_not_a_validator_is_refused() {
    let cfg = SandboxConfig {
        program: Some(PathBuf::from("/bin/true")),
        ..SandboxConfig::default()
    };
    assert_eq!(Sandbox::start(&cfg).err().unwrap().code, Code::SandboxFailed);
}

#[test]
fn the_policy_compiles_and_every_entry_is_justified() {
    mdevmig::sandbox::policy::filter().unwrap();
    for (n, why) in mdevmig::sandbox::policy::ALLOWED {
        assert!(!why.is_empty(), "syscall {n} has no reason");
    }
}
