//! The host around the format, tried as a hostile local user or a misbehaving
//! management plane would: every input that is not the stream itself.

use std::process::Command;

#[path = "support/cli.rs"]
mod cli;
use cli::{bin, dir, run};

fn peak_rss_kib(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"))
}

fn source_descriptor() -> serde_json::Value {
    let (rc, out, err) = run(&["describe", "--device", "sim:simgpu/vgpu-64m", "--json"]);
    assert_eq!(rc, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_descriptor_with_a_huge_version_window_is_checked_without_allocating_per_version() {
    let d = dir("window");
    let mut desc = source_descriptor();
    // The whole u32 range, with the newest version unknown to the destination so
    // the pre-check looks for an older one to convert to.
    desc["produce"] = serde_json::json!({"oldest": 1, "newest": u32::MAX});
    let mut v = desc["versions"]["3"].clone();
    v["min_version"] = serde_json::json!(u32::MAX);
    desc["versions"][u32::MAX.to_string()] = v;
    let path = d.0.join("src.json");
    std::fs::write(&path, desc.to_string()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 8192);
    let (rc, out, err) = run(&[
        "check",
        "--device",
        "sim:simgpu/vgpu-64m",
        "--source",
        path.to_str().unwrap(),
    ]);
    // Version 4294967295 is too new; 3 is what the source can convert to.
    assert_eq!(rc, 3, "{out}{err}");
    assert!(out.contains("compat.version_too_new"), "{out}");
    assert!(peak_rss_kib(&err) < 64 * 1024, "{err}");
}

#[test]
fn descriptor_strings_with_terminal_escapes_are_refused_and_never_printed() {
    let d = dir("escape");
    let evil = "simgpu\u{1b}[2K\r\u{1b}[32mCOMPATIBLE";
    for patch in [
        |v: &mut serde_json::Value, s: &str| v["vendor"] = s.into(),
        |v: &mut serde_json::Value, s: &str| v["device_type"] = s.into(),
        |v: &mut serde_json::Value, s: &str| v["attributes"]["heads"] = s.into(),
        |v: &mut serde_json::Value, s: &str| v["versions"]["1"]["sections"][0]["name"] = s.into(),
        |v: &mut serde_json::Value, s: &str| v["plugin_version"] = s.into(),
    ] {
        let mut desc = source_descriptor();
        patch(&mut desc, evil);
        let path = d.0.join("src.json");
        std::fs::write(&path, desc.to_string()).unwrap();
        let (rc, out, err) = run(&[
            "check",
            "--device",
            "sim:simgpu/vgpu-64m",
            "--source",
            path.to_str().unwrap(),
        ]);
        assert_eq!(rc, 4, "{out}{err}");
        assert!(err.contains("error[format.bad_descriptor]"), "{err}");
        assert!(!out.contains('\u{1b}') && !err.contains('\u{1b}'), "{out}{err}");
    }
}

#[test]
fn file_names_with_control_characters_are_shown_escaped() {
    let d = dir("name");
    let name = d.0.join("x\u{1b}[31mred");
    let (rc, out, err) = run(&[
        "verify",
        name.to_str().unwrap(),
        "--trust",
        name.to_str().unwrap(),
    ]);
    assert_ne!(rc, 0);
    assert!(!out.contains('\u{1b}') && !err.contains('\u{1b}'), "{out}{err}");
    assert!(err.contains("\\u{1b}"), "{err}");
}

#[test]
fn a_closed_stdout_does_not_panic_after_the_device_was_loaded() {
    let d = dir("stdout");
    let key = d.0.join("k");
    assert!(Command::new(bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap()
        .status
        .success());
    let stream = d.0.join("s.mdm");
    let (rc, _, err) = run(&[
        "save",
        "--device",
        "sim:mtty/mtty-2",
        "--key",
        d.0.join("k.key").to_str().unwrap(),
        "-o",
        stream.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let mut child = Command::new(bin())
        .args(["restore", "--device", "sim:mtty/mtty-2,seed=3", "--trust"])
        .arg(d.0.join("k.pub"))
        .arg("-i")
        .arg(&stream)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(101),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

mod whole_state {
    //! Signed streams whose section table is not what the plugin's layout
    //! allows: refused from the header alone, the device untouched.

    use mdevmig::broker::{self, RestoreOptions, SaveOptions};
    use mdevmig::codec::header::Header;
    use mdevmig::codec::StreamWriter;
    use mdevmig::codec::SECTION_REQUIRED;
    use mdevmig::device::{MigState, MigrationDevice};
    use mdevmig::plugins::Registry;
    use mdevmig_testkit::{test_signer, test_trust};

    fn open(spec: &str) -> Box<dyn MigrationDevice> {
        mdevmig::device::open(&spec.parse().unwrap(), &Registry::builtin())
            .unwrap()
            .0
    }

    /// A stream saved from `spec`, decoded into its header and section data.
    fn saved(spec: &str) -> (Header, Vec<Vec<u8>>) {
        let mut dev = open(spec);
        let mut bytes = Vec::new();
        broker::save(
            &mut *dev,
            &Registry::builtin(),
            &test_signer(),
            &mut bytes,
            &SaveOptions {
                chunk_size: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        let mut r =
            mdevmig::codec::StreamReader::open(&bytes[..], &test_trust(), &Default::default()).unwrap();
        let header = r.header().header.clone();
        let mut data = vec![Vec::new(); header.sections.len()];
        while let Some(c) = r.next_chunk().unwrap() {
            data[usize::from(c.section_index)].extend_from_slice(c.data);
        }
        (header, data)
    }

    fn sign(h: &Header, data: &[Vec<u8>]) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), h, &test_signer()).unwrap();
        for d in data {
            w.write_data(d).unwrap();
        }
        w.finish().unwrap()
    }

    /// Restores `stream` into a fresh `spec` device; the error code, after
    /// checking the device is RUNNING with its state unchanged.
    fn refused(spec: &str, stream: &[u8], policy: mdevmig::compat::Policy) -> String {
        let mut dev = open(spec);
        let before = dev.state_digest();
        let opts = RestoreOptions {
            policy,
            validation: mdevmig::sandbox::Validation::InProcess,
            ..Default::default()
        };
        let e = broker::restore(&mut *dev, &Registry::builtin(), &test_trust(), stream, &opts).unwrap_err();
        assert_eq!(dev.state_digest(), before, "{e:?}");
        assert_eq!(dev.state().unwrap(), MigState::Running);
        e.code.as_str().to_string()
    }

    #[test]
    fn a_stream_missing_its_required_sections_is_refused() {
        let (mut h, mut d) = saved("sim:mtty/mtty-2,seed=3");
        // The state's only section replaced by an optional one no plugin knows.
        h.sections[0].name = "mtty.padding".into();
        h.sections[0].flags = 0;
        d[0].truncate(10);
        h.sections[0].length = 10;
        assert_eq!(
            refused("sim:mtty/mtty-2,seed=7", &sign(&h, &d), Default::default()),
            "vendor.missing_section"
        );
        // Likewise a simgpu state without its framebuffer.
        let (mut h, mut d) = saved("sim:simgpu/vgpu-64m,seed=3");
        let fb = h.sections.iter().position(|s| s.name == "simgpu.fb").unwrap();
        h.sections.remove(fb);
        d.remove(fb);
        assert_eq!(
            refused("sim:simgpu/vgpu-64m,seed=7", &sign(&h, &d), Default::default()),
            "vendor.missing_section"
        );
    }

    #[test]
    fn sections_out_of_the_plugins_order_are_refused() {
        let (mut h, mut d) = saved("sim:simgpu/vgpu-64m,seed=3");
        h.sections.swap(0, 1);
        d.swap(0, 1);
        assert_eq!(
            refused("sim:simgpu/vgpu-64m,seed=7", &sign(&h, &d), Default::default()),
            "vendor.section_order"
        );
    }

    #[test]
    fn a_short_framebuffer_is_refused_before_the_device_sees_it() {
        let (mut h, mut d) = saved("sim:simgpu/vgpu-64m,seed=3");
        let fb = h.sections.iter().position(|s| s.name == "simgpu.fb").unwrap();
        h.sections[fb].length -= 4096;
        let n = d[fb].len() - 4096;
        d[fb].truncate(n);
        assert_eq!(
            refused("sim:simgpu/vgpu-64m,seed=7", &sign(&h, &d), Default::default()),
            "vendor.section_length"
        );
    }

    #[test]
    fn a_section_declared_version_0_is_not_read_as_version_1() {
        let (mut h, d) = saved("sim:mtty/mtty-2,seed=3");
        h.sections[0].version = 0;
        assert_eq!(
            refused("sim:mtty/mtty-2,seed=7", &sign(&h, &d), Default::default()),
            "compat.section_version"
        );
    }

    #[test]
    fn skipped_sections_count_against_a_bound_checked_from_the_header() {
        let (mut h, mut d) = saved("sim:mtty/mtty-2,seed=3");
        // An optional section the destination skips, declared 2^39 bytes: refused
        // from the header, without reading (there is no data behind it here).
        h.sections.push(mdevmig::codec::header::SectionEntry {
            name: "mtty.extra".into(),
            version: 1,
            flags: 0,
            length: 1 << 39,
        });
        d.push(Vec::new());
        let signed = h.sign(&test_signer()).unwrap();
        assert_eq!(
            refused("sim:mtty/mtty-2,seed=7", &signed.bytes, Default::default()),
            "limit.skipped_too_large"
        );
        // Within a raised bound the same shape passes the check (and then fails
        // for the missing data, which is truncation).
        let policy = mdevmig::compat::Policy {
            max_skipped_bytes: Some(1 << 40),
            ..Default::default()
        };
        assert_eq!(
            refused("sim:mtty/mtty-2,seed=7", &signed.bytes, policy),
            "format.truncated"
        );
        let _ = SECTION_REQUIRED;
    }

    #[test]
    fn a_policy_that_requires_sessions_refuses_unbound_and_unissued_restores() {
        let (h, d) = saved("sim:mtty/mtty-2,seed=3");
        let policy = mdevmig::compat::Policy {
            require_session: true,
            ..Default::default()
        };
        assert_eq!(
            refused("sim:mtty/mtty-2,seed=7", &sign(&h, &d), policy),
            "auth.unbound_stream"
        );
    }
}

#[test]
fn session_nonces_are_hex_digits_only() {
    let (rc, _, err) = run(&[
        "verify",
        "/nonexistent",
        "--trust",
        "/nonexistent",
        "--session",
        "+1111111111111111111111111111111111111111111111111111111111111111"[..64].as_ref(),
    ]);
    assert_eq!(rc, 2, "{err}");
    let plus = format!("+{}", "1".repeat(63));
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        "sim:mtty/mtty-2",
        "--trust",
        "/x",
        "-i",
        "/x",
        "--session",
        &plus,
    ]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("usage.bad_arguments"), "{err}");
    let (rc, out, _) = run(&["session"]);
    assert_eq!(rc, 0);
    assert_eq!(out.trim().len(), 64);
    assert!(out.trim().bytes().all(|b| b.is_ascii_hexdigit()));
}

mod files_and_signals {
    //! Files an attacker plants next to the destination, streams that stall, and
    //! signals: nothing written outside the destination, no partial file left.

    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::cli::{bin, dir, keys, run, Dir};

    /// A 64 MiB-class simgpu stream in a file.
    fn stream(d: &Dir, key: &str) -> PathBuf {
        let s = d.0.join("s.mdm");
        let (rc, _, err) = run(&[
            "save",
            "--device",
            "sim:simgpu/vgpu-64m,seed=5",
            "--key",
            key,
            "-o",
            s.to_str().unwrap(),
        ]);
        assert_eq!(rc, 0, "{err}");
        s
    }

    /// Names in `dir` other than the ones given.
    fn others(dir: &Path, known: &[&str]) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !known.contains(&n.as_str()))
            .collect()
    }

    /// A restore into a file: image reading its stream from a pipe we hold.
    fn restore_from_pipe(d: &Dir, public: &str, image: &Path, extra: &[&str]) -> Child {
        let spec = format!("file:{},plugin=simgpu,type=vgpu-64m", image.display());
        Command::new(bin())
            .args(["restore", "--device", &spec, "--trust", public, "-i", "-"])
            .args(extra)
            .current_dir(&d.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A restore into a file: image that has been sent the first 48 MiB of a
    /// 64 MiB-class stream: more than the 32 MiB read-ahead and the 8 MiB
    /// hold-back, so the image is being written. `stdin` is the rest's way in.
    struct Midway {
        d: Dir,
        public: String,
        stream: PathBuf,
        image: PathBuf,
        child: Child,
        stdin: std::process::ChildStdin,
        bytes: Vec<u8>,
    }

    fn restore_midway(tag: &str, idle: &str) -> Midway {
        let d = dir(tag);
        let (key, public) = keys(&d);
        let stream = stream(&d, &key);
        let image = d.0.join("img.raw");
        let mut child = restore_from_pipe(&d, &public, &image, &["--idle-timeout", idle]);
        let bytes = std::fs::read(&stream).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes[..48 << 20]).unwrap();
        Midway {
            d,
            public,
            stream,
            image,
            child,
            stdin,
            bytes,
        }
    }

    /// What a restore left in its directory besides the keys and the stream.
    fn leftovers(d: &Dir) -> Vec<String> {
        others(&d.0, &["k.key", "k.pub", "s.mdm"])
    }

    fn finish(child: Child) -> (i32, String) {
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    #[test]
    fn a_stalled_sender_is_refused_after_the_idle_timeout_and_nothing_is_left() {
        let m = restore_midway("stall", "1");
        let start = Instant::now();
        let (rc, err) = finish(m.child);
        drop(m.stdin);
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(rc, 1, "{err}");
        assert!(err.contains("error[io.idle_timeout]"), "{err}");
        assert!(!m.image.exists());
        assert!(leftovers(&m.d).is_empty(), "{:?}", leftovers(&m.d));
    }

    /// Waits until a restore has begun writing its image (past its read-ahead
    /// and hold-back): its partial file exists.
    fn wait_for_partial(d: &Dir) {
        let start = Instant::now();
        while !leftovers(d).iter().any(|n| n.ends_with(".mdevmig-partial")) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the restore never started writing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_mid_restore(sig: nix::sys::signal::Signal, want: i32) {
        let m = restore_midway(&format!("sig{}", sig as i32), "0");
        wait_for_partial(&m.d);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.child.id() as i32), sig).unwrap();
        let (rc, err) = finish(m.child);
        drop(m.stdin);
        assert_eq!(rc, want, "{err}");
        assert!(err.contains("error[io.interrupted]"), "{err}");
        assert!(!m.image.exists());
        assert!(leftovers(&m.d).is_empty(), "{:?}", leftovers(&m.d));
    }

    #[test]
    fn sigterm_mid_restore_removes_the_partial_image_and_exits_143() {
        signal_mid_restore(nix::sys::signal::Signal::SIGTERM, 143);
    }

    #[test]
    fn sigint_mid_restore_removes_the_partial_image_and_exits_130() {
        signal_mid_restore(nix::sys::signal::Signal::SIGINT, 130);
    }

    #[test]
    fn sigterm_mid_save_to_a_file_leaves_no_partial_file() {
        let d = dir("savesig");
        let (key, _) = keys(&d);
        let out = d.0.join("out.mdm");
        let child = Command::new(bin())
            .args(["save", "--device", "sim:xe/xe-vf-4g", "--key", &key, "-o"])
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_partial(&d);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let (rc, err) = finish(child);
        assert_eq!(rc, 143, "{err}");
        assert!(err.contains("error[io.interrupted]"), "{err}");
        assert!(!out.exists());
        assert!(
            others(&d.0, &["k.key", "k.pub"]).is_empty(),
            "{:?}",
            others(&d.0, &["k.key", "k.pub"])
        );
    }

    #[test]
    fn a_pipe_shared_with_other_processes_is_left_blocking() {
        // The pipe is made non-blocking while the stream moves (a stalled reader
        // must not block past the idle timeout); the flag belongs to everyone
        // holding the pipe, so it is put back.
        let d = dir("nonblock");
        let (key, _) = keys(&d);
        let (r, w) = nix::unistd::pipe().unwrap();
        let ours = w.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut all).unwrap();
            all.len()
        });
        let status = Command::new(bin())
            .args(["save", "--device", "sim:mtty/mtty-2", "--key", &key, "-o", "-"])
            .stdout(Stdio::from(w))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let flags = nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & nix::fcntl::OFlag::O_NONBLOCK.bits(), 0);
        drop(ours);
        assert!(reader.join().unwrap() > 96);
    }

    #[test]
    fn a_reader_that_goes_away_ends_a_save_with_sigpipe_status() {
        let d = dir("pipe");
        let (key, _) = keys(&d);
        let mut child = Command::new(bin())
            .args([
                "save",
                "--device",
                "sim:simgpu/vgpu-64m",
                "--key",
                &key,
                "-o",
                "-",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 4096];
        std::io::Read::read_exact(&mut out, &mut first).unwrap();
        drop(out);
        let (rc, err) = finish(child);
        assert_eq!(rc, 141, "{err}");
        assert!(
            err.contains("error[io.interrupted]") && err.contains("SIGPIPE"),
            "{err}"
        );
    }

    #[test]
    fn outputs_are_new_files_mode_0600_and_planted_files_are_neither_followed_nor_reused() {
        let d = dir("plant");
        let (key, _) = keys(&d);
        let victim = d.0.join("victim");
        std::fs::write(&victim, b"root-only").unwrap();
        let out = d.0.join("out.mdm");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        let o = out.to_str().unwrap();
        let (rc, _, err) = run(&["save", "--device", "sim:mtty/mtty-2", "--key", &key, "-o", o]);
        assert_eq!(rc, 1, "{err}");
        assert!(err.contains("error[io.exists]"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"root-only");
        // With --force the link itself is replaced, not its target.
        let (rc, _, err) = run(&[
            "save",
            "--device",
            "sim:mtty/mtty-2",
            "--key",
            &key,
            "-o",
            o,
            "--force",
        ]);
        assert_eq!(rc, 0, "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"root-only");
        let m = std::fs::symlink_metadata(&out).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // A file another user created is replaced by a new inode of ours, never written.
        let theirs = d.0.join("theirs.mdm");
        std::fs::write(&theirs, b"x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let ino = std::fs::metadata(&theirs).unwrap().ino();
        let t = theirs.to_str().unwrap();
        let (rc, _, err) = run(&["save", "--device", "sim:mtty/mtty-2", "--key", &key, "-o", t]);
        assert_eq!(rc, 1, "{err}");
        let (rc, _, err) = run(&[
            "save",
            "--device",
            "sim:mtty/mtty-2",
            "--key",
            &key,
            "-o",
            t,
            "--force",
            "--mode",
            "640",
        ]);
        assert_eq!(rc, 0, "{err}");
        let m = std::fs::metadata(&theirs).unwrap();
        assert_ne!(m.ino(), ino);
        assert_eq!((m.uid(), m.permissions().mode() & 0o777), (0, 0o640));
    }

    #[test]
    fn file_sources_must_be_regular_files_reached_without_symlinks() {
        let d = dir("src");
        let (key, _) = keys(&d);
        let out = d.0.join("o.mdm");
        let secret = d.0.join("secret");
        std::fs::write(&secret, [0u8; 96]).unwrap();
        let link = d.0.join("link.raw");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let spec = format!("file:{},plugin=mtty,type=mtty-2", link.display());
        let (rc, _, err) = run(&[
            "save",
            "--device",
            &spec,
            "--key",
            &key,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(rc, 1, "{err}");
        assert!(
            err.contains("error[io.not_regular]") && err.contains("symlink"),
            "{err}"
        );
        assert!(!out.exists());
        let fifo = d.0.join("fifo.raw");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let spec = format!("file:{},plugin=mtty,type=mtty-2", fifo.display());
        let start = Instant::now();
        let (rc, _, err) = run(&[
            "save",
            "--device",
            &spec,
            "--key",
            &key,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_ne!(rc, 0, "{err}");
        assert!(err.contains("io.not_regular"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn two_restores_to_one_image_do_not_interleave() {
        let mut m = restore_midway("two", "0");
        wait_for_partial(&m.d);
        let spec = format!("file:{},plugin=simgpu,type=vgpu-64m", m.image.display());
        let (rc, _, err) = run(&[
            "restore",
            "--device",
            &spec,
            "--trust",
            &m.public,
            "-i",
            m.stream.to_str().unwrap(),
        ]);
        assert_eq!(rc, 1, "{err}");
        assert!(err.contains("error[io.busy]"), "{err}");
        m.stdin.write_all(&m.bytes[48 << 20..]).unwrap();
        drop(m.stdin);
        let (rc, err) = finish(m.child);
        assert_eq!(rc, 0, "{err}");
        assert!(m.image.exists());
        assert_eq!(leftovers(&m.d), ["img.raw"]);
    }
}
