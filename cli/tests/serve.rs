//! `mdevmig serve` through its socket, as a management stack and a hostile or
//! careless client would use it: a service killed mid-restore or mid-save and
//! restarted, a client that goes away mid-save or mid-restore (also while its
//! job is blocked on a pipe), a flood of malformed messages beside a working
//! client, the limits (message and idle timers, clients, fds), and SIGTERM while
//! a job runs. Each test runs its own service in a private directory; the
//! service is killed when the test ends, passed or failed, and every wait has a
//! deadline.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/qmp.rs"]
mod qmp;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use qmp::{code, pipe, poll, Qmp, Service};
use serde_json::{json, Value};

/// Deadline for anything that should take seconds (a loaded 2-core CI machine).
const LONG: Duration = Duration::from_secs(120);

/// A private directory with a key pair.
struct Env {
    dir: cli::Dir,
    key: String,
    trust: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = cli::dir(&format!("serve-{tag}"));
        let (key, trust) = cli::keys(&dir);
        Env { dir, key, trust }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("s.sock")
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// Starts the service on this directory's socket and state directory, its
    /// log in `log`, with more arguments.
    fn serve(&self, log: &str, extra: &[&str]) -> Service {
        let mut args: Vec<String> = [
            "--state-dir",
            &self.state().to_string_lossy(),
            "--key",
            &self.key,
            "--trust",
            &self.trust,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Service::start(cli::bin(), &self.socket(), &self.path(log), &args)
    }
}

/// Names in `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn partials(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".mdevmig-partial"))
        .collect()
}

/// The job's status and progress from query-jobs, polled until `pred` holds.
fn wait_job_state(q: &mut Qmp, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    poll(LONG, what, || q.job(id).filter(|j| pred(j)))
}

/// Whether a thread of process `pid` sleeps in a kernel function whose name
/// contains `what` (its wchan: `pipe_write`, `pipe_read`).
/// True when the pipe whose read end is `r` is full: its writer cannot go on
/// until someone reads (whether it waits in write(2) or in poll(2)). A
/// non-blocking writer leaves at most the last page partly empty.
fn pipe_full(r: &impl std::os::fd::AsFd) -> bool {
    let size = rustix::pipe::fcntl_getpipe_size(r).unwrap_or(usize::MAX);
    rustix::io::ioctl_fionread(r).is_ok_and(|n| usize::try_from(n).unwrap_or(0).saturating_add(4096) >= size)
}

/// True when a thread of `pid` sleeps waiting for `what` (a pipe read or write,
/// which the service does in poll(2) on its non-blocking fds).
fn thread_waiting_on_pipe(pid: u32, what: &str) -> bool {
    thread_blocked_in(pid, what) || thread_blocked_in(pid, "poll")
}

fn thread_blocked_in(pid: u32, what: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains(what)))
        })
        .unwrap_or(false)
}

/// Waits until `job`'s status is `concluded` (at most 30 s); its last state.
fn concluded_within_30s(q: &mut Qmp, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = q.job(job).unwrap_or(Value::Null);
        if last["status"] == "concluded" || Instant::now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saves `spec` with the CLI into `out`; its state digest.
fn cli_save(e: &Env, spec: &str, out: &Path) -> String {
    let out_s = out.to_string_lossy();
    let (code, stdout, stderr) =
        cli::run(&["save", "--device", spec, "--key", &e.key, "-o", &out_s, "--json"]);
    assert_eq!(code, 0, "save {spec}: {stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["state_digest"].as_str().expect("a state digest").to_string()
}

/// The descriptor `describe` gives for `spec`.
fn describe(q: &mut Qmp, spec: &str) -> Value {
    q.ok("describe", json!({ "device": spec }))
}

/// 1. A service killed (SIGKILL) while a restore writes a `file:` device leaves a
///    journal entry and a partial file; the next start removes both, the real
///    name never holds half a state, and the restarted service restores the
///    whole stream.
#[test]
fn kill_9_mid_restore_then_restart_recovers_the_file_device() {
    let e = Env::new("kill");
    let stream = e.path("gpu.mig");
    // An Xe VF's state is one streamed section: after the broker's 8 MiB
    // hold-back its bulk data reaches the device chunk by chunk.
    let bytes = xe_stream(&e, &stream);
    let stream_s = stream.to_string_lossy().into_owned();
    // What the image must hold in the end: the same stream restored by the CLI.
    let expected_img = e.path("expected.img");
    let expected_spec = format!("file:{},plugin=xe,type=xe-vf-64m", expected_img.display());
    let (c, _, err) = cli::run(&[
        "restore",
        "--device",
        &expected_spec,
        "--trust",
        &e.trust,
        "-i",
        &stream_s,
    ]);
    assert_eq!(c, 0, "{err}");
    let want = std::fs::read(&expected_img).unwrap();
    // Past the hold-back and the reader's read-ahead (some chunks verified in
    // flight), so the device is touched, and short of the end, so the restore is
    // still running when the service dies.
    let part = 48 << 20;
    assert!(bytes.len() > part + (8 << 20), "stream of {} bytes", bytes.len());

    let img_dir = e.path("img");
    std::fs::create_dir(&img_dir).unwrap();
    let img = img_dir.join("gpu.img");
    let spec = format!("file:{},plugin=xe,type=xe-vf-64m", img.display());
    let dev = format!("dst={spec}");
    let journal = e.state().join("journal");

    let mut svc = e.serve("serve-1.log", &["--device", &dev]);
    let mut q = Qmp::negotiated(&svc.socket);
    let (r, mut w) = pipe();
    q.getfd("in", r.as_fd());
    drop(r);
    let started = q.ok(
        "restore",
        json!({"job-id": "r1", "device": "dst", "fdname": "in"}),
    );
    assert_eq!(started["job-id"], "r1");
    let head = bytes[..part].to_vec();
    let feeder = std::thread::spawn(move || {
        // The service may die before it has read everything: EPIPE is fine.
        let _ = w.write_all(&head);
        w
    });
    let deadline = Instant::now() + LONG;
    let partial = loop {
        if let Some(p) = partials(&img_dir)
            .into_iter()
            .find(|n| n.starts_with(".gpu.img."))
        {
            break p;
        }
        if Instant::now() > deadline {
            panic!(
                "no partial file in {}: {:?}; job {:?}; log:\n{}",
                img_dir.display(),
                names(&img_dir),
                q.job("r1"),
                svc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_job_state(&mut q, "r1", "the restore to read what was sent", |j| {
        j["status"] == "running" && j["current-progress"].as_u64() == Some(part as u64)
    });
    let entries = names(&journal);
    let entry_name = format!("r1.{}.json", svc.pid());
    assert_eq!(entries, vec![entry_name.clone()], "journal: {entries:?}");
    let entry: Value = serde_json::from_slice(&std::fs::read(journal.join(&entry_name)).unwrap()).unwrap();
    assert_eq!(entry["role"], "restore");
    assert_eq!(entry["device"], json!(spec));

    svc.kill9();
    drop(q);
    drop(feeder.join().unwrap());
    assert!(
        img_dir.join(&partial).exists(),
        "the partial file is left after kill -9"
    );
    assert_eq!(names(&journal), vec![entry_name]);
    assert!(
        !img.exists(),
        "a killed restore must not leave an image under the real name"
    );

    let mut svc = e.serve("serve-2.log", &["--device", &dev]);
    let log = svc.log_text();
    assert!(
        log.contains(&format!("recovered {spec} left mid-restore by a previous run")),
        "the restart does not say it recovered the device:\n{log}"
    );
    assert!(log.contains("1 partial file(s) removed"), "{log}");
    assert!(partials(&img_dir).is_empty(), "left: {:?}", names(&img_dir));
    assert!(names(&journal).is_empty(), "journal: {:?}", names(&journal));
    assert!(!img.exists(), "nothing half-loaded under the real name");
    // kill -9 leaves the writer's lock file behind (an empty file whose flock
    // died with the process): it does not stop the next writer.
    let left = names(&img_dir);
    assert!(left.iter().all(|n| n == "gpu.img.mdevmig-lock"), "left: {left:?}");

    let mut q = Qmp::negotiated(&svc.socket);
    let f = File::open(&stream).unwrap();
    q.getfd("in", f.as_fd());
    drop(f);
    q.ok(
        "restore",
        json!({"job-id": "r2", "device": "dst", "fdname": "in"}),
    );
    let done = q.wait_job("r2", LONG);
    assert_eq!(done["ok"], true, "{done}");
    assert!(names(&journal).is_empty());
    assert!(partials(&img_dir).is_empty(), "left: {:?}", names(&img_dir));
    // The image holds the whole state, as the CLI restores it.
    assert!(
        std::fs::read(&img).unwrap() == want,
        "the restored image differs from the CLI's"
    );
    assert_eq!(names(&img_dir), vec!["gpu.img".to_string()]);
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(svc.wait(LONG).success());
}

/// An Xe VF stream saved by the CLI into `path`: its bytes.
fn xe_stream(e: &Env, path: &Path) -> Vec<u8> {
    let p = path.to_string_lossy();
    let (c, _, err) = cli::run(&["save", "--device", "sim:xe/xe-vf-64m", "--key", &e.key, "-o", &p]);
    assert_eq!(c, 0, "{err}");
    std::fs::read(path).unwrap()
}

/// 1b. A client that goes away while its restore writes a `file:` device: the
///     job ends `qmp.cancelled`, the partial file and the journal entry go, no
///     image appears, and the device takes the next restore.
#[test]
fn a_client_gone_mid_restore_leaves_no_partial_file_and_no_journal_entry() {
    let e = Env::new("gone-restore");
    let stream = e.path("xe.mig");
    let bytes = xe_stream(&e, &stream);
    let part = 48 << 20;
    assert!(bytes.len() > part + (8 << 20));
    let img_dir = e.path("img");
    std::fs::create_dir(&img_dir).unwrap();
    let img = img_dir.join("xe.img");
    let dev = format!("dst=file:{},plugin=xe,type=xe-vf-64m", img.display());
    let journal = e.state().join("journal");
    let svc = e.serve("serve.log", &["--device", &dev]);
    let mut watch = Qmp::negotiated(&svc.socket);

    let mut c = Qmp::negotiated(&svc.socket);
    let (r, mut w) = pipe();
    c.getfd("in", r.as_fd());
    drop(r);
    c.ok(
        "restore",
        json!({"job-id": "r1", "device": "dst", "fdname": "in"}),
    );
    let head = bytes[..part].to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = w.write_all(&head);
        w
    });
    poll(LONG, "the restore's partial file", || {
        (!partials(&img_dir).is_empty()).then_some(())
    });
    assert_eq!(names(&journal), vec![format!("r1.{}.json", svc.pid())]);
    // Everything sent is read: the job waits in read(2) for more, and the pipe's
    // writer (another process, in life) keeps it open.
    let pid = svc.pid();
    wait_job_state(&mut watch, "r1", "the restore to read what was sent", |j| {
        j["current-progress"].as_u64() == Some(part as u64)
    });
    poll(LONG, "the restore to wait for more input", || {
        thread_waiting_on_pipe(pid, "pipe_read").then_some(())
    });
    drop(c);
    let last = concluded_within_30s(&mut watch, "r1");
    // Unblock the job whatever happened, so the service can be inspected.
    drop(feeder.join().unwrap());
    assert_eq!(
        last["status"], "concluded",
        "30 s after its client went away the restore waiting on an open pipe was still not over: {last}"
    );
    assert_eq!(last["error-code"], "qmp.cancelled", "{last}");
    assert!(partials(&img_dir).is_empty(), "left: {:?}", names(&img_dir));
    assert!(names(&journal).is_empty(), "journal: {:?}", names(&journal));
    assert!(!img.exists());

    let f = File::open(&stream).unwrap();
    watch.getfd("in", f.as_fd());
    watch.ok(
        "restore",
        json!({"job-id": "r2", "device": "dst", "fdname": "in"}),
    );
    let done = watch.wait_job("r2", LONG);
    assert_eq!(done["ok"], true, "{done}");
    assert!(img.exists());
}

/// 1c. A service killed while a save writes a state-directory file: the next
///     start removes the partial file, and the name was never taken.
#[test]
fn kill_9_mid_save_to_a_state_file_leaves_nothing_after_restart() {
    let e = Env::new("kill-save");
    let files = e.state().join("files");
    let mut svc = e.serve("serve-1.log", &["--device", "big=sim:simgpu/vgpu-1g"]);
    let mut q = Qmp::negotiated(&svc.socket);
    q.ok(
        "save",
        json!({"job-id": "s1", "device": "big", "file": "big.mig"}),
    );
    let partial = poll(LONG, "the save's partial file to grow", || {
        partials(&files)
            .into_iter()
            .find(|p| std::fs::metadata(files.join(p)).is_ok_and(|m| m.len() > (1 << 20)))
    });
    svc.kill9();
    drop(q);
    assert!(files.join(&partial).exists());
    assert!(
        !files.join("big.mig").exists(),
        "a killed save must not leave the file under its name"
    );
    let svc = e.serve(
        "serve-2.log",
        &[
            "--device",
            "big=sim:simgpu/vgpu-1g",
            "--device",
            "tty0=sim:mtty/mtty-2",
        ],
    );
    assert!(partials(&files).is_empty(), "left in files/: {:?}", names(&files));
    assert!(!files.join("big.mig").exists());
    // As for a restore, the writer's empty lock file may be left; the name is free.
    let left = names(&files);
    assert!(left.iter().all(|n| n == "big.mig.mdevmig-lock"), "left: {left:?}");
    let mut q = Qmp::negotiated(&svc.socket);
    q.ok(
        "save",
        json!({"job-id": "s2", "device": "tty0", "file": "big.mig"}),
    );
    assert_eq!(q.wait_job("s2", LONG)["ok"], true);
}

/// A restore never replaces an existing `file:` image through the service (there
/// is no `--force` there): it is refused before a byte is written, and the image
/// stays byte-identical.
#[test]
fn a_restore_onto_an_existing_file_image_leaves_it_byte_identical() {
    let e = Env::new("exists");
    let stream = e.path("gpu.mig");
    cli_save(&e, "sim:simgpu/vgpu-64m", &stream);
    let img_dir = e.path("img");
    std::fs::create_dir(&img_dir).unwrap();
    let img = img_dir.join("gpu.img");
    let original: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&img, &original).unwrap();
    let dev = format!("dst=file:{},plugin=simgpu,type=vgpu-64m", img.display());
    let _svc = e.serve("serve.log", &["--device", &dev]);
    let mut q = Qmp::negotiated(&e.socket());
    let f = File::open(&stream).unwrap();
    q.getfd("in", f.as_fd());
    q.ok("restore", json!({"job-id": "r", "device": "dst", "fdname": "in"}));
    let done = q.wait_job("r", LONG);
    assert_eq!(done["ok"], false, "{done}");
    assert_eq!(code(&done["error"]), "io.exists", "{done}");
    assert_eq!(std::fs::read(&img).unwrap(), original);
    assert!(partials(&img_dir).is_empty(), "left: {:?}", names(&img_dir));
    assert!(names(&e.state().join("journal")).is_empty());
}

/// Reads a pipe slowly (64 KiB every 10 ms) until it ends; the bytes read.
fn slow_reader(mut r: File) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0;
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// 2. A client that goes away while its save runs: the job ends `qmp.cancelled`
///    (as another client sees it), the configured source is usable again and
///    saves the same state, and no partial file is left.
#[test]
fn a_client_gone_mid_save_cancels_its_job_and_puts_the_source_back() {
    let e = Env::new("gone");
    let svc = e.serve(
        "serve.log",
        &[
            "--device",
            "gpu0=sim:simgpu/vgpu-64m",
            "--device",
            "big=sim:simgpu/vgpu-1g",
        ],
    );
    let files = e.state().join("files");
    let mut watch = Qmp::negotiated(&svc.socket);
    watch.ok(
        "save",
        json!({"job-id": "before", "device": "gpu0", "file": "before.mig"}),
    );
    let before = watch.wait_job("before", LONG);
    assert_eq!(before["ok"], true, "{before}");
    let digest = before["result"]["state_digest"].clone();
    assert!(digest.is_string(), "{before}");

    // A slow reader: the save runs, the client goes away, the job is cancelled.
    let mut c = Qmp::negotiated(&svc.socket);
    let (r, w) = pipe();
    c.getfd("out", w.as_fd());
    drop(w);
    let reader = slow_reader(r);
    c.ok(
        "save",
        json!({"job-id": "slow", "device": "gpu0", "fdname": "out"}),
    );
    wait_job_state(&mut watch, "slow", "the slow save to move bytes", |j| {
        j["current-progress"].as_u64().unwrap_or(0) > 0
    });
    drop(c);
    let slow = watch.wait_job("slow", LONG);
    assert_eq!(slow["ok"], false, "{slow}");
    assert_eq!(code(&slow["error"]), "qmp.cancelled", "{slow}");
    let read = reader.join().unwrap();
    assert!(read < 64 << 20, "the cancelled save streamed {read} bytes");
    let info = watch.job("slow").expect("the concluded job is listed");
    assert_eq!(info["status"], "concluded");
    assert_eq!(info["error-code"], "qmp.cancelled");

    // A file target: the client goes away right after the job starts.
    let mut c = Qmp::negotiated(&svc.socket);
    c.ok(
        "save",
        json!({"job-id": "tofile", "device": "big", "file": "big.mig"}),
    );
    drop(c);
    let tofile = watch.wait_job("tofile", LONG);
    assert_eq!(code(&tofile["error"]), "qmp.cancelled", "{tofile}");
    assert!(partials(&files).is_empty(), "left: {:?}", names(&files));
    assert!(!files.join("big.mig").exists());

    // The source is back: another save gives the same state.
    watch.ok(
        "save",
        json!({"job-id": "after", "device": "gpu0", "file": "after.mig"}),
    );
    let after = watch.wait_job("after", LONG);
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(after["result"]["state_digest"], digest);
    let devices = watch.ok("query-devices", json!({}));
    for d in devices.as_array().unwrap() {
        if d["kind"] == "configured" {
            assert_eq!(d["busy"], false, "{d}");
        }
    }
}

/// 2b. A client that goes away while its save is blocked writing to a pipe
///     nobody reads: cancelling must not wait for a reader that never comes.
#[test]
fn a_client_gone_mid_save_to_a_pipe_never_read_cancels_its_job() {
    let e = Env::new("stuck");
    let svc = e.serve("serve.log", &["--device", "gpu0=sim:simgpu/vgpu-64m"]);
    let mut watch = Qmp::negotiated(&svc.socket);
    watch.ok(
        "save",
        json!({"job-id": "before", "device": "gpu0", "file": "before.mig"}),
    );
    let before = watch.wait_job("before", LONG);
    assert_eq!(before["ok"], true, "{before}");

    let mut c = Qmp::negotiated(&svc.socket);
    let (r, w) = pipe();
    c.getfd("out", w.as_fd());
    drop(w);
    c.ok(
        "save",
        json!({"job-id": "stuck", "device": "gpu0", "fdname": "out"}),
    );
    // The pipe fills and the job blocks in write(2).
    let pid = svc.pid();
    poll(LONG, "the save to fill the pipe and wait", || {
        (pipe_full(&r) && thread_waiting_on_pipe(pid, "pipe_write")).then_some(())
    });
    drop(c);
    let last = concluded_within_30s(&mut watch, "stuck");
    // Nothing in the service still holds the pipe (no thread left blocked in a
    // write to it).
    let pipe_name = {
        use std::os::unix::fs::MetadataExt;
        format!("pipe:[{}]", r.metadata().unwrap().ino())
    };
    let fd_dir = format!("/proc/{}/fd", svc.pid());
    let held = || {
        std::fs::read_dir(&fd_dir)
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|l| l.to_string_lossy() == pipe_name)
    };
    let released = last["status"] == "concluded" && {
        let t = Instant::now();
        while held() && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        !held()
    };
    // Unblock the job whatever happened, so the service can be inspected.
    drop(r);
    assert_eq!(
        last["status"], "concluded",
        "30 s after its client went away the save blocked on a full pipe was still not over: {last}"
    );
    assert_eq!(last["error-code"], "qmp.cancelled", "{last}");
    assert!(released, "the service still holds the pipe of a cancelled save");
    watch.ok(
        "save",
        json!({"job-id": "after", "device": "gpu0", "file": "after.mig"}),
    );
    let after = watch.wait_job("after", LONG);
    assert_eq!(after["result"]["state_digest"], before["result"]["state_digest"]);
}

/// One malformed input: its bytes (written in pieces), and the error it earns:
/// code, and the id the reply carries (malformed framing and JSON carry none).
struct Bad {
    pieces: Vec<Vec<u8>>,
    code: &'static str,
    id: Option<u64>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const MAX_MESSAGE: usize = 4096;

fn malformed(i: u64, rng: &mut Rng) -> Bad {
    let one = |s: &[u8], code| Bad {
        pieces: vec![s.to_vec()],
        code,
        id: None,
    };
    let with_id = |s: String, code| Bad {
        pieces: vec![s.into_bytes()],
        code,
        id: Some(i),
    };
    match rng.below(16) {
        0 => one(format!("garbage line {i}\n").as_bytes(), "qmp.bad_json"),
        // A stray line swallows an object on it: one error, no reply.
        1 => one(
            format!("x {{\"execute\":\"query-version\",\"id\":\"swallowed-{i}\"}}\n").as_bytes(),
            "qmp.bad_json",
        ),
        // Truncated, then closed in a later write into invalid JSON.
        2 => Bad {
            pieces: vec![
                br#"{"execute":"check","arguments":{"device":"#.to_vec(),
                b"}}\n".to_vec(),
            ],
            code: "qmp.bad_json",
            id: None,
        },
        3 => {
            let v: &[&[u8]] = &[
                b"[1,2,3]\n",
                b"42\n",
                b"\"text\"\n",
                b"null\n",
                b"true\n",
                b"-0.5e3\n",
            ];
            one(v[rng.below(v.len() as u64) as usize], "qmp.bad_json")
        }
        4 => with_id(
            format!("{{\"execute\":\"no-such-command-{i}\",\"id\":{i}}}\n"),
            "qmp.unknown_command",
        ),
        5 => {
            let v = [
                format!(r#"{{"execute":"check","arguments":{{"device":"x","bogus":true}},"id":{i}}}"#),
                format!(r#"{{"execute":"query-version","arguments":{{"x":1}},"id":{i}}}"#),
                format!(r#"{{"execute":"getfd","arguments":{{"fdname":""}},"id":{i}}}"#),
                format!(r#"{{"execute":"describe","arguments":{{"device":7}},"id":{i}}}"#),
            ];
            with_id(v[rng.below(4) as usize].clone(), "qmp.bad_arguments")
        }
        6 => {
            let v = [
                format!(r#"{{"id":{i}}}"#),
                format!(r#"{{"execute":"query-version","extra":1,"id":{i}}}"#),
                format!(r#"{{"execute":1,"id":{i}}}"#),
                format!(r#"{{"execute":"query-version","arguments":[],"id":{i}}}"#),
            ];
            with_id(v[rng.below(4) as usize].clone(), "qmp.bad_message")
        }
        7 => {
            let pad = "p".repeat(MAX_MESSAGE + 100 + rng.below(2000) as usize);
            one(
                format!(r#"{{"execute":"query-version","arguments":{{"pad":"{pad}"}},"id":{i}}}"#).as_bytes(),
                "qmp.message_too_large",
            )
        }
        8 => {
            let d = 33 + rng.below(40) as usize;
            one(
                format!(r#"{{"a":{}{}}}"#, "[".repeat(d), "]".repeat(d)).as_bytes(),
                "qmp.too_deep",
            )
        }
        9 => one(b"{\"execute\":\"\xff\xfe query-version\"}", "qmp.bad_json"),
        10 => one(b"\xff\xfe\xfd\n", "qmp.bad_json"),
        11 => one(b"}\n", "qmp.bad_json"),
        12 => one(br#"{"execute":"query-version",}"#, "qmp.bad_json"),
        // Too deep and too large: the first limit broken is the one error.
        13 => one(
            format!(
                r#"{{"a":{}"{}"{}}}"#,
                "[".repeat(40),
                "q".repeat(MAX_MESSAGE),
                "]".repeat(40)
            )
            .as_bytes(),
            "qmp.too_deep",
        ),
        14 => with_id(
            format!(r#"{{"execute":"qmp_capabilities","id":{i}}}"#),
            "qmp.already_negotiated",
        ),
        _ => with_id(
            format!(r#"{{"exec-oob":"query-version","id":{i}}}"#),
            "qmp.bad_message",
        ),
    }
}

/// 3. Ten thousand malformed messages on one connection: each earns exactly one
///    error, in order; a second connection's checks succeed meanwhile; the first
///    connection still answers afterwards.
#[test]
fn ten_thousand_malformed_messages_each_get_one_error_and_nobody_else_notices() {
    const N: u64 = 10_000;
    let e = Env::new("flood");
    // A generous message timeout: this test is about framing, not slow clients.
    let svc = e.serve(
        "serve.log",
        &[
            "--max-message",
            &MAX_MESSAGE.to_string(),
            "--message-timeout",
            "600",
        ],
    );
    let socket = svc.socket.clone();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bad: Vec<Bad> = (0..N).map(|i| malformed(i, &mut rng)).collect();
    let expected: Vec<(&'static str, Option<u64>)> = bad.iter().map(|b| (b.code, b.id)).collect();

    // The second connection: checks until the flood is over.
    let flood_over = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (socket, flood_over, checks) = (socket.clone(), flood_over.clone(), checks.clone());
        std::thread::spawn(move || {
            let mut q = Qmp::negotiated(&socket);
            let source = describe(&mut q, "sim:mtty/mtty-2");
            while !flood_over.load(Ordering::Acquire) {
                let r = q.ok("check", json!({"device": "sim:mtty/mtty-2", "source": source}));
                assert!(r.is_object(), "{r}");
                checks.fetch_add(1, Ordering::AcqRel);
            }
            q.ok("query-version", json!({}));
        })
    };

    poll(LONG, "the first concurrent check", || {
        (checks.load(Ordering::Acquire) > 0).then_some(())
    });
    let checks_before = checks.load(Ordering::Acquire);
    let mut q = Qmp::negotiated(&socket);
    let mut out = q.stream().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for b in &bad {
            for p in &b.pieces {
                out.write_all(p).unwrap();
            }
        }
        out.write_all(b"{\"execute\":\"query-version\",\"id\":\"after\"}\n")
            .unwrap();
    });

    let mut got = Vec::new();
    let version = loop {
        let m = q
            .recv(LONG)
            .unwrap_or_else(|g| panic!("after {} errors: {g:?}", got.len()));
        if m.get("event").is_some() {
            continue;
        }
        if m["id"] == "after" {
            break m;
        }
        let err = m.get("error").unwrap_or_else(|| panic!("not an error: {m}"));
        got.push((code(err), m.get("id").and_then(Value::as_u64)));
    };
    let checks_during = checks.load(Ordering::Acquire) - checks_before;
    flood_over.store(true, Ordering::Release);
    writer.join().unwrap();
    assert!(version["return"]["package"].is_string(), "{version}");
    assert_eq!(got.len(), expected.len(), "one error per malformed message");
    for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
        assert_eq!((g.0.as_str(), g.1), (w.0, w.1), "message {i}");
    }
    checker.join().expect("the concurrent checks");
    assert!(checks_during > 0, "no check completed during the flood");
    // The flooded connection still works.
    q.ok("query-version", json!({}));
    assert!(q.stray.is_empty());
}

/// 4a. A message that starts and never ends is dropped after --message-timeout;
///     a silent connection after --idle-timeout; each with an error line first.
#[test]
fn slow_messages_and_idle_connections_are_closed() {
    let e = Env::new("timeouts");
    let svc = e.serve("serve.log", &["--message-timeout", "1", "--idle-timeout", "1"]);

    let mut q = Qmp::negotiated(&svc.socket);
    // The service's timers start when it reads what comes after this instant.
    let t = Instant::now();
    q.send_raw(br#"{"execute":"query-"#);
    let got = q.read_to_close(LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(code(&got[0]["error"]), "qmp.timeout", "{got:?}");
    assert!(got[0]["error"]["desc"]
        .as_str()
        .unwrap()
        .contains("not completed in time"));
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());

    let t = Instant::now();
    let mut q = Qmp::negotiated(&svc.socket);
    let got = q.read_to_close(LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(code(&got[0]["error"]), "qmp.timeout", "{got:?}");
    assert!(
        got[0]["error"]["desc"].as_str().unwrap().contains("idle"),
        "{got:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());
}

/// 4a'. The message timer is per message: a client that keeps sending complete
///      messages, each write ending inside the next one, is not a slow client.
#[test]
fn messages_split_across_writes_are_not_a_slow_client() {
    let e = Env::new("split");
    let svc = e.serve("serve.log", &["--message-timeout", "1"]);
    let mut q = Qmp::negotiated(&svc.socket);
    let mut out = q.stream().try_clone().unwrap();
    // Each write completes one query-version (which took 50 ms) and starts the
    // next; 3 s in all, three times the message timeout.
    let n = 60;
    let _ = out.write_all(br#"{"execute":"query-"#);
    for k in 0..n {
        std::thread::sleep(Duration::from_millis(50));
        let piece = format!(r#"version","id":{k}}}{{"execute":"query-"#);
        if out.write_all(piece.as_bytes()).is_err() {
            break;
        }
    }
    let _ = out.write_all(br#"version","id":"last"}"#);
    let mut got = Vec::new();
    loop {
        match q.recv(LONG) {
            Ok(m) if m["id"] == "last" => break,
            Ok(m) => got.push(m),
            Err(g) => panic!(
                "the connection ended ({g:?}) after {} replies; the last: {:?}",
                got.len(),
                got.last()
            ),
        }
    }
    assert_eq!(got.len(), n, "{got:?}");
    assert!(got.iter().all(|m| m.get("return").is_some()), "{got:?}");
}

/// 4b. `--max-clients 2`: a third client gets the greeting and `qmp.too_many`,
///     and a place frees when a client leaves.
#[test]
fn a_client_past_max_clients_is_refused() {
    let e = Env::new("clients");
    let svc = e.serve("serve.log", &["--max-clients", "2"]);
    let mut a = Qmp::negotiated(&svc.socket);
    let mut b = Qmp::negotiated(&svc.socket);
    let mut c = Qmp::connect(&svc.socket);
    let got = c.read_to_close(LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(code(&got[0]["error"]), "qmp.too_many");
    a.ok("query-version", json!({}));
    b.ok("query-version", json!({}));
    drop(b);
    // The service notices the end within its read tick; then there is room.
    let mut d = poll(LONG, "room for a client again", || {
        let mut d = Qmp::connect(&svc.socket);
        // A refused client may find the connection closed before it writes.
        let _ = d
            .stream()
            .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"cap\"}\n");
        match d.recv(LONG) {
            Ok(m) if m["id"] == "cap" && m.get("return").is_some() => Some(d),
            _ => None,
        }
    });
    d.ok("query-version", json!({}));
    a.ok("query-version", json!({}));
}

/// 4c. Fds past the per-connection limit (16) are closed with an error, and the
///     connection keeps working, getfd included.
#[test]
fn fds_past_the_connection_limit_are_refused_and_the_connection_still_works() {
    let e = Env::new("fds");
    let svc = e.serve("serve.log", &[]);
    let mut q = Qmp::negotiated(&svc.socket);
    let files: Vec<File> = (0..20).map(|_| File::open("/dev/null").unwrap()).collect();
    for batch in files.chunks(4) {
        let fds: Vec<_> = batch.iter().map(|f| f.as_fd()).collect();
        q.send_fds(&fds);
    }
    q.ok("query-version", json!({}));
    let errors: Vec<String> = q.stray.drain(..).map(|m| code(&m["error"])).collect();
    assert!(
        !errors.is_empty() && errors.len() <= 5 && errors.iter().all(|c| c == "qmp.too_many"),
        "{errors:?}"
    );
    q.ok("getfd", json!({"fdname": "kept"}));
    q.ok("closefd", json!({"fdname": "kept"}));
    assert_eq!(q.err("closefd", json!({"fdname": "kept"})), "qmp.no_such_fd");
    // Room again: a new fd is taken.
    q.getfd("again", files[0].as_fd());
    q.ok("query-version", json!({}));
    assert!(q.stray.is_empty(), "{:?}", q.stray);
}

/// 5. SIGTERM while a job runs: the job completes, new work is refused with
///    `qmp.shutting_down` meanwhile, the service exits 0 and removes its socket.
#[test]
fn sigterm_lets_the_running_job_finish_and_refuses_new_work() {
    let e = Env::new("term");
    let mut svc = e.serve(
        "serve.log",
        &[
            "--device",
            "gpu0=sim:simgpu/vgpu-64m",
            "--device",
            "tty0=sim:mtty/mtty-2",
            "--drain-timeout",
            "600",
        ],
    );
    let mut a = Qmp::negotiated(&svc.socket);
    let mut b = Qmp::negotiated(&svc.socket);
    let (r, w) = pipe();
    a.getfd("out", w.as_fd());
    drop(w);
    let (go, wait_go) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut r = r;
        wait_go.recv().unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        all
    });
    a.ok(
        "save",
        json!({"job-id": "long", "device": "gpu0", "fdname": "out"}),
    );
    wait_job_state(&mut a, "long", "the save to fill the pipe", |j| {
        j["status"] == "running" && j["current-progress"].as_u64().unwrap_or(0) > 0
    });

    svc.signal(nix::sys::signal::Signal::SIGTERM);
    // Before the service notices: a save without a target is bad arguments; once
    // it drains, refused as shutting down before the arguments matter.
    poll(LONG, "qmp.shutting_down", || {
        let c = b.err("save", json!({"device": "tty0"}));
        assert!(c == "qmp.bad_arguments" || c == "qmp.shutting_down", "{c}");
        (c == "qmp.shutting_down").then_some(())
    });
    assert_eq!(
        b.err("save", json!({"device": "tty0", "file": "x.mig"})),
        "qmp.shutting_down"
    );
    assert_eq!(
        b.err("restore", json!({"device": "tty0", "file": "x.mig"})),
        "qmp.shutting_down"
    );
    assert_eq!(
        b.err("device-open", json!({"device": "sim:mtty/mtty-2", "id": "r"})),
        "qmp.shutting_down"
    );
    let j = a.job("long").unwrap();
    assert_eq!(j["status"], "running", "{j}");
    assert!(svc.try_wait().is_none(), "the service left with a job running");

    go.send(()).unwrap();
    let done = a.wait_job("long", LONG);
    assert_eq!(done["ok"], true, "{done}");
    let status = svc.wait(LONG);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!svc.socket.exists(), "the socket is left behind");
    let log = svc.log_text();
    assert!(log.contains("draining: 1 job(s) running"), "{log}");
    assert!(log.contains("stopped"), "{log}");

    let saved = reader.join().unwrap();
    let file = e.path("long.mig");
    std::fs::write(&file, &saved).unwrap();
    let (c, _, err) = cli::run(&["verify", &file.to_string_lossy(), "--trust", &e.trust]);
    assert_eq!(c, 0, "the stream saved while draining does not verify: {err}");
}

/// 5b. SIGTERM with a job that outlives `--drain-timeout` while blocked on a pipe
///     nobody reads: the job is cancelled and the service still exits.
#[test]
fn sigterm_past_the_drain_timeout_cancels_a_job_blocked_on_a_pipe_and_exits() {
    let e = Env::new("term-stuck");
    let mut svc = e.serve(
        "serve.log",
        &["--device", "gpu0=sim:simgpu/vgpu-64m", "--drain-timeout", "1"],
    );
    let mut a = Qmp::negotiated(&svc.socket);
    let (r, w) = pipe();
    a.getfd("out", w.as_fd());
    drop(w);
    a.ok(
        "save",
        json!({"job-id": "stuck", "device": "gpu0", "fdname": "out"}),
    );
    let pid = svc.pid();
    poll(LONG, "the save to fill the pipe and wait", || {
        (pipe_full(&r) && thread_waiting_on_pipe(pid, "pipe_write")).then_some(())
    });
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = svc.try_wait() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = svc.log_text();
    drop(r);
    let status = status.unwrap_or_else(|| {
        panic!("30 s after SIGTERM (drain timeout 1 s) the service had not exited:\n{log}")
    });
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    assert!(!svc.socket.exists());
}

/// Checks against one configured device from several clients at once: `check`
/// only reads the device's description, so none is refused as busy.
#[test]
fn concurrent_checks_on_a_configured_device_all_succeed() {
    let e = Env::new("checks");
    let svc = e.serve("serve.log", &["--device", "tty0=sim:mtty/mtty-2"]);
    let mut q = Qmp::negotiated(&svc.socket);
    let source = describe(&mut q, "sim:mtty/mtty-2");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (socket, source) = (svc.socket.clone(), source.clone());
            std::thread::spawn(move || {
                let mut q = Qmp::negotiated(&socket);
                let mut refused = Vec::new();
                for _ in 0..200 {
                    if let Err(e) = q.execute("check", json!({"device": "tty0", "source": source})) {
                        refused.push(code(&e));
                    }
                }
                refused
            })
        })
        .collect();
    let refused: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        refused.is_empty(),
        "{} of 800 concurrent checks on a configured device were refused: {:?}",
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
}

/// Two services on one state directory (both on the default one, say): a
/// service that starts while the other runs a restore leaves that job's journal
/// entry and partial file alone, and the running job completes.
#[test]
fn a_second_service_on_the_same_state_directory_leaves_the_first_ones_job_alone() {
    let e = Env::new("shared-state");
    let stream = e.path("xe.mig");
    let bytes = xe_stream(&e, &stream);
    let part = 48 << 20;
    let img_dir = e.path("img");
    std::fs::create_dir(&img_dir).unwrap();
    let img = img_dir.join("xe.img");
    let dev = format!("dst=file:{},plugin=xe,type=xe-vf-64m", img.display());
    let journal = e.state().join("journal");
    let first = e.serve("first.log", &["--device", &dev]);
    let mut c = Qmp::negotiated(&first.socket);
    let (r, mut w) = pipe();
    c.getfd("in", r.as_fd());
    drop(r);
    c.ok(
        "restore",
        json!({"job-id": "r1", "device": "dst", "fdname": "in"}),
    );
    w.write_all(&bytes[..part]).unwrap();
    poll(LONG, "the restore's partial file", || {
        (!partials(&img_dir).is_empty()).then_some(())
    });
    let entry = format!("r1.{}.json", first.pid());
    assert_eq!(names(&journal), vec![entry.clone()]);

    let second_socket = e.path("second.sock");
    let args: Vec<String> = [
        "--state-dir",
        &e.state().to_string_lossy(),
        "--key",
        &e.key,
        "--trust",
        &e.trust,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let second = Service::start(cli::bin(), &second_socket, &e.path("second.log"), &args);
    let mut q = Qmp::negotiated(&second.socket);
    q.ok("query-version", json!({}));
    assert_eq!(
        names(&journal),
        vec![entry],
        "the second service took the first one's journal entry"
    );
    assert_eq!(
        partials(&img_dir).len(),
        1,
        "the second service removed a live writer's partial file"
    );
    assert!(!second.log_text().contains("recovered"), "{}", second.log_text());

    w.write_all(&bytes[part..]).unwrap();
    drop(w);
    let done = c.wait_job("r1", LONG);
    assert_eq!(done["ok"], true, "{done}");
    assert!(img.exists());
    assert!(names(&journal).is_empty());
}
