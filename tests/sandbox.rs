//! Containment: a vendor plugin that panics, loops forever, allocates without
//! bound or makes a forbidden system call inside the sandbox gets its section
//! refused with `io.sandbox`, and the broker (this process) carries on. Each limit
//! is shown stopping its own misbehaviour: the deadline a validator that stops
//! reading, the seccomp argument rules a read or write of another descriptor and
//! executable memory, `close_range` a descriptor leaked without close-on-exec;
//! and no environment variable chooses what runs as the validator.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mdevmig::sandbox::{Sandbox, SandboxConfig};
use mdevmig::Code;
use mdevmig_plugin_api::{DeviceInfo, SectionKind, SectionSpec};

fn hostile() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mdevmig-validator"));
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
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_mdevmig-validator"))),
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
fn record_streams_are_validated_in_the_child_in_any_split() {
    use mdevmig_plugin_api::VendorPlugin;
    let cfg = SandboxConfig {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_mdevmig-validator"))),
        ..SandboxConfig::default()
    };
    let plugin = mdevmig_xe::XePlugin::new();
    let attributes = plugin.configure("xe-vf-64m", &Default::default()).unwrap();
    let dev = DeviceInfo {
        vendor: "xe".into(),
        device_type: "xe-vf-64m".into(),
        attributes,
        ..Default::default()
    };
    let spec = plugin.sections(&dev, 1).unwrap().remove(0);
    let good = mdevmig_xe::testing::valid_stream("xe-vf-64m", 3);
    let mut sb = Sandbox::start(&cfg).unwrap();
    // A valid stream in odd pieces (headers cut anywhere) is accepted ...
    sb.records_begin(&dev, &spec).unwrap();
    for piece in good.chunks(4093) {
        sb.records_feed(piece).unwrap();
    }
    sb.records_finish().unwrap();
    // ... and one whose second packet claims 2^63 bytes is refused by the
    // child at that packet, with the plugin's code.
    use mdevmig_xe::format::{encode_descriptor, packet, Header, PacketType};
    let mut bad = packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20b, 0));
    bad.extend_from_slice(&Header::new(PacketType::VRAM, 0, 0, 0, 1 << 63).encode());
    sb.records_begin(&dev, &spec).unwrap();
    sb.records_feed(&bad[..30]).unwrap();
    assert_eq!(
        sb.records_feed(&bad[30..]).unwrap_err().code,
        Code::Vendor("vendor.xe.size_too_large")
    );
    // A truncated stream is refused at its end; the same child keeps serving.
    sb.records_begin(&dev, &spec).unwrap();
    sb.records_feed(&good[..1000]).unwrap();
    assert!(matches!(sb.records_finish().unwrap_err().code, Code::Vendor(c) if c.starts_with("vendor.xe.")));
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

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mdevmig-sandbox-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `name` in a fresh validator; the error it ends with.
fn refused(name: &str) -> mdevmig::Error {
    let mut sb = Sandbox::start(&cfg()).unwrap();
    sb.validate(&device(), &spec(name), b"state").unwrap_err()
}

#[test]
fn a_validator_that_stops_reading_is_killed_at_the_deadline() {
    let d = TempDir::new("deaf");
    // The hostile validator started under a name ending in -deaf reports ready and
    // never reads its stdin again.
    let deaf = d.0.join("hostile_validator-deaf");
    std::os::unix::fs::symlink(hostile(), &deaf).unwrap();
    let deaf_cfg = SandboxConfig {
        program: Some(deaf),
        ..cfg()
    };
    let mut sb = Sandbox::start(&deaf_cfg).unwrap();
    // Far more than a pipe holds: the write itself blocks.
    let data = vec![0u8; 8 << 20];
    let t = Instant::now();
    let e = sb.validate(&device(), &spec("fine"), &data).unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(e.message.contains("did not read its request"), "{e}");
    assert!(
        t.elapsed() >= deaf_cfg.deadline,
        "killed before its deadline: {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < deaf_cfg.deadline + Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // The broker carries on with a fresh validator.
    Sandbox::start(&cfg())
        .unwrap()
        .validate(&device(), &spec("fine"), b"state")
        .unwrap();
}

#[test]
fn reading_or_writing_another_descriptor_is_killed_by_seccomp() {
    // Unconfined, each call would fail with EBADF and the section validate fine.
    for name in ["hostile.read_fd", "hostile.write_fd"] {
        let e = refused(name);
        assert_eq!(e.code, Code::SandboxFailed, "{name}: {e}");
        assert!(
            e.message.contains("SIGSYS") && e.message.contains("seccomp"),
            "{name}: {e}"
        );
    }
}

#[test]
fn executable_memory_is_killed_by_seccomp() {
    // Unconfined, each call would succeed and the section validate fine.
    for name in ["hostile.exec_map", "hostile.exec_protect"] {
        let e = refused(name);
        assert_eq!(e.code, Code::SandboxFailed, "{name}: {e}");
        assert!(
            e.message.contains("SIGSYS") && e.message.contains("seccomp"),
            "{name}: {e}"
        );
    }
}

#[test]
fn a_descriptor_leaked_without_cloexec_does_not_reach_the_validator() {
    use std::io::Read;
    use std::os::fd::AsFd;
    // A pipe whose write end is inheritable (pipe(2) without O_CLOEXEC). Once this
    // process drops its copy, its read end sees EOF only when no child holds the
    // write end either: the validator, which stays alive, must not.
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut sb = Sandbox::start(&cfg()).unwrap();
    drop(w);
    let flags = nix::fcntl::fcntl(r.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(r.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    let mut r = std::fs::File::from(r);
    // Children other tests start meanwhile may hold it briefly; the validator
    // would hold it for as long as it lives.
    let t = Instant::now();
    loop {
        match r.read(&mut [0u8; 1]) {
            Ok(0) => break,
            Ok(_) => panic!("nothing was written"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the validator kept a descriptor it inherited"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    // It is the same, live validator.
    sb.validate(&device(), &spec("fine"), b"state").unwrap();
}

#[test]
fn an_environment_variable_does_not_choose_the_validator() {
    let d = TempDir::new("env");
    let bin = env!("CARGO_BIN_EXE_mdevmig-validator");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("MDEVMIG_VALIDATOR", hostile())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let prefix = d.0.join("k");
    let (key, public, stream) = (d.0.join("k.key"), d.0.join("k.pub"), d.0.join("s.mdm"));
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (rc, err) = run(&["keygen", "--out", &s(&prefix)]);
    assert_eq!(rc, Some(0), "{err}");
    let (rc, err) = run(&[
        "save",
        "--device",
        "sim:mtty/mtty-2,seed=3",
        "--key",
        &s(&key),
        "-o",
        &s(&stream),
    ]);
    assert_eq!(rc, Some(0), "{err}");
    // mtty's state is a structured section: validated in the sandbox. Were the
    // variable obeyed, the hostile validator (which knows no mtty) would answer
    // and the restore fail with io.sandbox.
    let (rc, err) = run(&[
        "restore",
        "--device",
        "sim:mtty/mtty-2,seed=9",
        "--trust",
        &s(&public),
        "-i",
        &s(&stream),
    ]);
    assert_eq!(rc, Some(0), "{err}");
    assert_eq!(SandboxConfig::default().program, None);
}

#[test]
fn the_policy_pins_descriptors_and_refuses_executable_memory() {
    use mdevmig::sandbox::policy::{ArgRule, ALLOWED, ARG_RULES};
    use nix::libc;
    let rule = |nr: i64| ARG_RULES.iter().find(|(n, _, _)| *n == nr).map(|(_, r, _)| *r);
    assert_eq!(rule(libc::SYS_read), Some(ArgRule::Fd(&[0])));
    assert_eq!(rule(libc::SYS_write), Some(ArgRule::Fd(&[1, 2])));
    assert_eq!(rule(libc::SYS_mmap), Some(ArgRule::NoExec));
    assert_eq!(rule(libc::SYS_mprotect), Some(ArgRule::NoExec));
    for (n, _, why) in ARG_RULES {
        assert!(
            ALLOWED.iter().any(|(a, _)| a == n),
            "rule for {n}, which is not allowed"
        );
        assert!(!why.is_empty(), "argument rule for {n} has no reason");
    }
    // Calls that reach other descriptors or map code are not allowed at all.
    for nr in [
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_pwrite64,
        libc::SYS_writev,
        libc::SYS_pkey_mprotect,
        libc::SYS_openat,
        libc::SYS_execve,
    ] {
        assert!(!ALLOWED.iter().any(|(a, _)| *a == nr), "syscall {nr} is allowed");
    }
}
