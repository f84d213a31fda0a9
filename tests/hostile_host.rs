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
