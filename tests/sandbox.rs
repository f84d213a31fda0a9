//! Containment: a vendor plugin that panics, loops forever, waits forever,
//! allocates without bound, makes a forbidden system call or answers with a code
//! no documentation lists inside the sandbox gets its section refused with
//! `io.sandbox`, and the broker (this process) carries on.
//!
//! Each limit is shown stopping its own misbehaviour, and the refusal names it:
//! the memory limit an allocation bomb long before the deadline (and a fixed
//! allocation only when the limit is below it), the CPU limit a spinning parser
//! long before the deadline, the deadline a validator that waits without using
//! CPU or stops reading, seccomp each forbidden call or argument, `close_range` a
//! descriptor leaked without close-on-exec; and no environment variable chooses
//! what runs as the validator. The policy table itself is tested where it lives,
//! in `src/sandbox/policy.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mdevmig::sandbox::{Sandbox, SandboxConfig, Validation};
use mdevmig::Code;
use mdevmig_plugin_api::{DeviceInfo, SectionKind, SectionSpec};

fn hostile() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mdevmig-validator"));
    bin.parent().unwrap().join("examples/hostile_validator")
}

fn validator() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mdevmig-validator"))
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

/// Section `name` with `data` in a fresh validator started with `cfg`: its
/// result, and how long the start, the request and the answer took.
fn run(cfg: &SandboxConfig, name: &str, data: &[u8]) -> (mdevmig::Result<()>, Duration) {
    let t = Instant::now();
    let mut sb = Sandbox::start(cfg).unwrap();
    let r = sb.validate(&device(), &spec(name), data);
    (r, t.elapsed())
}

/// Section `name` in a fresh validator; the error it ends with.
fn refused(name: &str) -> mdevmig::Error {
    run(&cfg(), name, b"state").0.unwrap_err()
}

/// The broker carries on with a fresh validator.
fn a_fresh_validator_works() {
    Sandbox::start(&cfg())
        .unwrap()
        .validate(&device(), &spec("fine"), b"state")
        .unwrap();
}

#[test]
fn a_panicking_or_crashing_plugin_is_contained_and_the_broker_survives() {
    assert!(
        hostile().exists(),
        "{} not built (cargo test builds examples)",
        hostile().display()
    );
    let e = refused("hostile.panic");
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(e.message.contains("exit status: 101: panicked"), "{e}");
    // A memory fault is a crash, not a seccomp kill: std's fault handler may
    // reset itself.
    let e = refused("hostile.segv");
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(
        e.message.contains("SIGSEGV") && e.message.contains("crashed"),
        "{e}"
    );
    a_fresh_validator_works();
}

#[test]
fn the_memory_limit_stops_an_allocation_bomb_long_before_the_deadline() {
    let limited = |memory_limit: u64| SandboxConfig {
        memory_limit,
        cpu_limit_secs: 60,
        deadline: Duration::from_secs(60),
        ..cfg()
    };
    // The bomb reserves address space only (its pages are never touched): no
    // limit but RLIMIT_AS stops it before the deadline.
    let (r, took) = run(&limited(64 << 20), "hostile.alloc", b"");
    let e = r.unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(
        e.message.contains("SIGABRT") && e.message.contains("RLIMIT_AS"),
        "{e}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // It is the limit: 96 MiB is refused under 64 MiB and validates under 512.
    let e = run(&limited(64 << 20), "hostile.alloc_mib", b"96").0.unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(e.message.contains("RLIMIT_AS"), "{e}");
    run(&limited(512 << 20), "hostile.alloc_mib", b"96").0.unwrap();
    a_fresh_validator_works();
}

#[test]
fn the_cpu_limit_stops_a_spinning_parser_long_before_the_deadline() {
    let cfg = SandboxConfig {
        cpu_limit_secs: 1,
        deadline: Duration::from_secs(60),
        ..cfg()
    };
    let (r, took) = run(&cfg, "hostile.loop", b"");
    let e = r.unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    // SIGXCPU is the kernel's, at RLIMIT_CPU's soft limit (setrlimit(2)); the
    // broker kills with SIGKILL, and only at its deadline.
    assert!(
        e.message.contains("SIGXCPU") && e.message.contains("RLIMIT_CPU"),
        "{e}"
    );
    assert!(!e.message.contains("did not answer"), "{e}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    a_fresh_validator_works();
}

#[test]
fn the_deadline_stops_a_validator_that_uses_no_cpu() {
    // A CPU limit far below the deadline cannot stop a validator that waits.
    let cfg = SandboxConfig {
        cpu_limit_secs: 1,
        deadline: Duration::from_secs(3),
        ..cfg()
    };
    let t = Instant::now();
    let mut sb = Sandbox::start(&cfg).unwrap();
    let e = sb.validate(&device(), &spec("hostile.block"), b"").unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(
        e.message.contains("did not answer within 3s")
            && e.message.contains("SIGKILL")
            && e.message.contains("killed by the broker"),
        "{e}"
    );
    assert!(took >= cfg.deadline, "killed before its deadline: {took:?}");
    assert!(took < cfg.deadline + Duration::from_secs(3), "took {took:?}");
    a_fresh_validator_works();
}

#[test]
fn the_deadline_stops_a_spinning_parser_when_it_comes_first() {
    let cfg = SandboxConfig {
        cpu_limit_secs: 60,
        deadline: Duration::from_secs(2),
        ..cfg()
    };
    let (r, took) = run(&cfg, "hostile.loop", b"");
    let e = r.unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(
        e.message.contains("did not answer within 2s") && !e.message.contains("SIGXCPU"),
        "{e}"
    );
    assert!(
        took >= cfg.deadline && took < cfg.deadline + Duration::from_secs(3),
        "took {took:?}"
    );
}

#[test]
fn forbidden_calls_and_arguments_are_killed_by_seccomp() {
    // Unconfined, each call fails harmlessly or does nothing lasting, and the
    // section validates fine.
    for name in [
        "hostile.open",
        "hostile.socket",
        "hostile.execve",
        "hostile.read_fd",
        "hostile.write_fd",
        "hostile.exec_map",
        "hostile.exec_protect",
        "hostile.exec_pkey",
        "hostile.remap_fixed",
        "hostile.futex_requeue",
        "hostile.signal_other",
        "hostile.ignore_xcpu",
    ] {
        let e = refused(name);
        assert_eq!(e.code, Code::SandboxFailed, "{name}: {e}");
        assert!(
            e.message.contains("SIGSYS") && e.message.contains("seccomp"),
            "{name}: {e}"
        );
    }
    a_fresh_validator_works();
}

#[test]
fn an_answer_with_an_undocumented_code_is_refused() {
    let mut sb = Sandbox::start(&cfg()).unwrap();
    let e = sb
        .validate(&device(), &spec("hostile.code_undocumented"), b"state")
        .unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(
        e.message.contains("undocumented code \"vendor.hostile.made_up\""),
        "{e}"
    );
    // The misbehaving validator was stopped: it answers nothing more.
    let e = sb.validate(&device(), &spec("fine"), b"state").unwrap_err();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    // A documented code that is not a vendor's is not the validator's to give.
    let e = refused("hostile.code_auth");
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    assert!(e.message.contains("\"auth.untrusted_key\""), "{e}");
    // The broker's own documented vendor codes come back as themselves.
    let e = refused("hostile.code_framing");
    assert_eq!(e.code, Code::Framing, "{e}");
}

#[test]
fn the_real_validator_answers_with_plugin_codes() {
    let cfg = SandboxConfig {
        program: Some(validator()),
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
    // A vendor it has no plugin for is a documented refusal, not a failure.
    assert_eq!(
        sb.validate(&device(), &self::spec("fine"), b"state")
            .unwrap_err()
            .code,
        Code::Vendor("vendor.no_plugin")
    );
}

#[test]
fn record_streams_are_validated_in_the_child_in_any_split() {
    use mdevmig_plugin_api::VendorPlugin;
    let cfg = SandboxConfig {
        program: Some(validator()),
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
    a_fresh_validator_works();
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

/// The variable an embedder might expect to choose the validator program.
const VAR: &str = "MDEVMIG_VALIDATOR";
const ENV_TEST: &str = "an_environment_variable_does_not_choose_the_validator";

/// Saves a simulated mtty and restores it with `opts`: mtty's state is a
/// structured section, validated in the sandbox.
fn mtty_round_trip(opts: &mdevmig::broker::RestoreOptions) -> mdevmig::Result<()> {
    use mdevmig::auth::{SigningKeyPair, TrustStore};
    use mdevmig::broker::{restore, save, SaveOptions};
    use mdevmig::device::{self, DeviceSpec};
    let reg = mdevmig::plugins::Registry::builtin();
    let key = SigningKeyPair::from_seed(&[7; 32]);
    let mut trust = TrustStore::new();
    trust.add(key.verifying_key(), "test");
    let open = |spec: &str| {
        device::open(&spec.parse::<DeviceSpec>().unwrap(), &reg)
            .unwrap()
            .0
    };
    let mut src = open("sim:mtty/mtty-2,seed=3");
    let mut stream = Vec::new();
    save(&mut *src, &reg, &key, &mut stream, &SaveOptions::default()).unwrap();
    let mut dst = open("sim:mtty/mtty-2,seed=9");
    restore(&mut *dst, &reg, &trust, &stream[..], opts).map(|_| ())
}

#[test]
fn an_environment_variable_does_not_choose_the_validator() {
    let Some(value) = std::env::var_os(VAR) else {
        // Run this test again, alone, in a process started with the variable
        // pointing at the hostile validator (setting it here would race the
        // threads of the other tests).
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([ENV_TEST, "--exact", "--test-threads=1"])
            .env(VAR, hostile())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    };
    assert_eq!(PathBuf::from(value), hostile());
    // The defaults name no program: the running executable validates.
    assert_eq!(SandboxConfig::default().program, None);
    assert!(matches!(Validation::default(), Validation::Sandbox(c) if c.program.is_none()));
    // A configured program is the one that runs. The hostile validator knows no
    // mtty: had it run, the restore would be refused with vendor.no_plugin.
    let opts = mdevmig::broker::RestoreOptions {
        validation: Validation::sandbox(validator()),
        ..Default::default()
    };
    mtty_round_trip(&opts).unwrap();
    // With no program configured, this executable starts (a test binary, not a
    // validator); the hostile validator the variable names would have started.
    let e = Sandbox::start(&SandboxConfig::default()).err().unwrap();
    assert_eq!(e.code, Code::SandboxFailed, "{e}");
    let me = std::env::current_exe().unwrap();
    assert!(
        e.message
            .contains(&format!("{} did not start as a validator", me.display())),
        "{e}"
    );
}

/// A descriptor the parent holds without close-on-exec (as a library of an
/// embedding VMM might open one) is inherited across exec, and the validator
/// closes it before it reads a byte: once the child has said it is ready, its
/// `/proc/<pid>/fd` lists only stdin, stdout and stderr.
#[test]
fn the_child_closes_every_descriptor_it_inherited() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let leaked = std::fs::File::open("/proc/self/exe").unwrap();
    // dup(2) makes a copy without FD_CLOEXEC: this one survives the exec.
    let inheritable = nix::unistd::dup(&leaked).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdevmig-validator"))
        .arg(mdevmig::sandbox::CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(inheritable);
    let mut ready = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"MDVREADY");
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    drop(child.stdin.take()); // EOF: the child ends
    assert!(child.wait().unwrap().success());
    assert_eq!(fds, ["0", "1", "2"], "descriptors the validator kept");
}
