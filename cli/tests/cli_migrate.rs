//! save / restore / check through the binary: files, pipes, digests, exit codes.

use std::process::{Command, Stdio};

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
    let p = std::env::temp_dir().join(format!("mdevmig-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    let d = Dir(p);
    let out = Command::new(bin())
        .args(["keygen", "--out"])
        .arg(d.0.join("k"))
        .output()
        .unwrap();
    assert!(out.status.success());
    d
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin()).args(args).output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn digest(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("state-digest: "))
        .unwrap_or_else(|| panic!("no digest in {text}"))
        .to_string()
}

#[test]
fn save_to_a_file_and_restore_gives_equal_digests() {
    let d = dir("file");
    let (k, p, s) = (d.0.join("k.key"), d.0.join("k.pub"), d.0.join("s.mdm"));
    let (rc, out, err) = run(&[
        "save",
        "--device",
        "sim:simgpu/vgpu-64m,seed=5",
        "--key",
        k.to_str().unwrap(),
        "-o",
        s.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let src = digest(&out);
    let (rc, out, err) = run(&[
        "restore",
        "--device",
        "sim:simgpu/vgpu-64m,seed=6",
        "--trust",
        p.to_str().unwrap(),
        "-i",
        s.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(digest(&out), src);
    let (rc, out, _) = run(&[
        "restore",
        "--device",
        "sim:simgpu/vgpu-64m,seed=6",
        "--trust",
        p.to_str().unwrap(),
        "-i",
        s.to_str().unwrap(),
        "--json",
        "--resume",
    ]);
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state_digest"], src);
    assert_eq!(v["device_state"], "RUNNING");
}

#[test]
fn save_pipe_restore_gives_equal_digests() {
    let d = dir("pipe");
    let k = d.0.join("k.key");
    let p = d.0.join("k.pub");
    let mut save = Command::new(bin())
        .args([
            "save",
            "--device",
            "sim:mtty/mtty-2,seed=3",
            "--key",
            k.to_str().unwrap(),
            "-o",
            "-",
            "--precopy",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restore = Command::new(bin())
        .args([
            "restore",
            "--device",
            "sim:mtty/mtty-2,seed=4",
            "--trust",
            p.to_str().unwrap(),
            "-i",
            "-",
        ])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    let save_out = save.wait_with_output().unwrap();
    assert!(save_out.status.success());
    assert_eq!(
        restore.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    // With -o -, save's report goes to stderr.
    assert_eq!(
        digest(&String::from_utf8_lossy(&save_out.stderr)),
        digest(&String::from_utf8_lossy(&restore.stdout))
    );
}

#[test]
fn exit_codes_follow_the_convention() {
    let d = dir("codes");
    let (k, p, s) = (d.0.join("k.key"), d.0.join("k.pub"), d.0.join("s.mdm"));
    assert_eq!(
        run(&[
            "save",
            "--device",
            "sim:mtty/mtty-2",
            "--key",
            k.to_str().unwrap(),
            "-o",
            s.to_str().unwrap()
        ])
        .0,
        0
    );
    // incompatible: 3
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        "sim:mtty/mtty-1",
        "--trust",
        p.to_str().unwrap(),
        "-i",
        s.to_str().unwrap(),
    ]);
    assert_eq!(rc, 3, "{err}");
    assert!(err.starts_with("error[compat.type_mismatch]"), "{err}");
    // rejected stream: 4
    let mut bytes = std::fs::read(&s).unwrap();
    let n = bytes.len();
    bytes[n - 150] ^= 1;
    std::fs::write(&s, &bytes).unwrap();
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        "sim:mtty/mtty-2",
        "--trust",
        p.to_str().unwrap(),
        "-i",
        s.to_str().unwrap(),
    ]);
    assert_eq!(rc, 4, "{err}");
    // device error: 5 (a vfio device that does not exist)
    let (rc, _, err) = run(&[
        "save",
        "--device",
        "vfio:00000000-0000-0000-0000-000000000000",
        "--key",
        k.to_str().unwrap(),
        "-o",
        "-",
    ]);
    assert_eq!(rc, 5, "{err}");
    // usage: 2
    assert_eq!(run(&["save", "--device", "sim:mtty/mtty-2"]).0, 2);
    let (rc, _, err) = run(&[
        "save",
        "--device",
        "nonsense",
        "--key",
        k.to_str().unwrap(),
        "-o",
        "-",
    ]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.starts_with("error[usage.bad_device_spec]"), "{err}");
}

#[test]
fn check_exits_3_with_an_actionable_reason_and_save_for_fixes_it() {
    let d = dir("check");
    let (k, p) = (d.0.join("k.key"), d.0.join("k.pub"));
    let src = d.0.join("src.json");
    let dst = d.0.join("dst.json");
    let (rc, out, _) = run(&["describe", "--device", "sim:simgpu/vgpu-64m", "--json"]);
    assert_eq!(rc, 0);
    std::fs::write(&src, out).unwrap();
    let (rc, out, _) = run(&[
        "describe",
        "--device",
        "sim:simgpu/vgpu-64m,versions=1..2",
        "--json",
    ]);
    assert_eq!(rc, 0);
    std::fs::write(&dst, out).unwrap();
    let (rc, out, err) = run(&[
        "check",
        "--device",
        "sim:simgpu/vgpu-64m,versions=1..2",
        "--source",
        src.to_str().unwrap(),
    ]);
    assert_eq!(rc, 3, "{out}{err}");
    assert!(out.contains("destination plugin loads simgpu state 1..2; source emits 3 with minimum 3; upgrade the destination plugin or pin the source to 2"), "{out}");
    let s = d.0.join("s.mdm");
    let (rc, _, err) = run(&[
        "save",
        "--device",
        "sim:simgpu/vgpu-64m",
        "--key",
        k.to_str().unwrap(),
        "-o",
        s.to_str().unwrap(),
        "--for",
        dst.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = run(&[
        "restore",
        "--device",
        "sim:simgpu/vgpu-64m,versions=1..2,seed=9",
        "--trust",
        p.to_str().unwrap(),
        "-i",
        s.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("state v2"), "{out}");
    // Same host: compatible, exit 0.
    let (rc, out, _) = run(&[
        "check",
        "--device",
        "sim:simgpu/vgpu-64m",
        "--source",
        src.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["compatible"], true);
    assert_eq!(v["kinds"]["live"], true);
}
