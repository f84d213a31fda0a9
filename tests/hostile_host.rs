//! The host around the format, tried as a hostile local user or a misbehaving
//! management plane would: every input that is not the stream itself.

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mdevmig")
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("mdevmig-hostile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

/// Runs the binary with peak-RSS reporting; (status, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin())
        .args(args)
        .env("MDEVMIG_REPORT_RSS", "1")
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

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
    use mdevmig::codec::stream::StreamWriter;
    use mdevmig::codec::SECTION_REQUIRED;
    use mdevmig::device::{MigState, MigrationDevice};
    use mdevmig::fuzzing::{test_signer, test_trust};
    use mdevmig::plugins::Registry;

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
            mdevmig::codec::stream::StreamReader::open(&bytes[..], &test_trust(), &Default::default())
                .unwrap();
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
