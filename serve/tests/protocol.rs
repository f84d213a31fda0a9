//! The service in-process (mini-redis style: `Server::bind`, then `serve` with a
//! stop flag), driven by a small QMP client: negotiation, error precedence, jobs
//! and their events, fd passing both ways, and the file: confinement.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mdevmig_serve::{Config, Listen, Server};
use serde_json::{json, Value};

struct Svc {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Svc {
    fn start(devices: &[(&str, &str)]) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        let key = mdevmig::SigningKeyPair::generate();
        let (k, p) = key.write_files(&dir.path().join("site")).unwrap();
        let mut cfg = Config::new(Listen::Path(dir.path().join("s.sock")), dir.path().join("state"));
        cfg.key = Some(k);
        cfg.trust = Some(p);
        cfg.validation = mdevmig::sandbox::Validation::InProcess;
        cfg.devices = devices
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        let server = Server::bind(cfg).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || server.serve(&s2).unwrap());
        Svc {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let s = UnixStream::connect(self.dir.path().join("s.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            events: Vec::new(),
            next: 0,
        };
        let g = c.line();
        assert!(g["QMP"]["version"]["qemu"]["major"].is_u64(), "{g}");
        c
    }

    fn negotiated(&self) -> Client {
        let mut c = self.connect();
        assert_eq!(
            c.cmd("qmp_capabilities", json!({})),
            json!({"return": {}, "id": 1})
        );
        c
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    events: Vec<Value>,
    next: u64,
}

impl Client {
    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// The next reply (events are kept aside).
    fn reply(&mut self) -> Value {
        loop {
            let v = self.line();
            if v.get("event").is_some() {
                self.events.push(v);
            } else {
                return v;
            }
        }
    }

    fn cmd(&mut self, name: &str, args: Value) -> Value {
        self.next += 1;
        let msg = json!({"execute": name, "arguments": args, "id": self.next});
        self.send_raw(format!("{msg}\n").as_bytes());
        let r = self.reply();
        assert_eq!(r["id"], json!(self.next), "{r}");
        r
    }

    fn ok(&mut self, name: &str, args: Value) -> Value {
        let r = self.cmd(name, args.clone());
        assert!(r.get("return").is_some(), "{name} {args}: {r}");
        r["return"].clone()
    }

    fn err(&mut self, name: &str, args: Value) -> (String, String) {
        let r = self.cmd(name, args);
        let e = &r["error"];
        (
            e["class"].as_str().unwrap().to_string(),
            e["code"].as_str().unwrap().to_string(),
        )
    }

    /// Sends an fd with one space, as qemu.qmp's send_fd_scm does.
    fn send_fd(&mut self, fd: impl AsFd) {
        let fds = [fd.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
        anc.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg(
            &self.w,
            &[std::io::IoSlice::new(b" ")],
            &mut anc,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
    }

    /// A command whose reply carries an fd (read with recvmsg, byte by byte up
    /// to the reply's newline so nothing after it is consumed).
    fn cmd_fd(&mut self, name: &str, args: Value) -> (Value, Option<OwnedFd>) {
        assert!(self.r.buffer().is_empty());
        self.next += 1;
        let msg = json!({"execute": name, "arguments": args, "id": self.next});
        self.send_raw(format!("{msg}\n").as_bytes());
        let mut line = Vec::new();
        let mut fd = None;
        loop {
            let mut b = [0u8; 1];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                &self.w,
                &mut [std::io::IoSliceMut::new(&mut b)],
                &mut anc,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            )
            .unwrap();
            for m in anc.drain() {
                if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = m {
                    fd = fds.into_iter().next();
                }
            }
            assert_eq!(got.bytes, 1, "the service closed the connection");
            if b[0] == b'\n' {
                let v: Value = serde_json::from_slice(&line).unwrap();
                if v.get("event").is_some() {
                    self.events.push(v);
                    line.clear();
                    continue;
                }
                return (v, fd);
            }
            line.push(b[0]);
        }
    }

    fn wait_event(&mut self, name: &str, id: &str) -> Value {
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["event"] == name && e["data"]["id"] == id)
            {
                return self.events.remove(i);
            }
            let v = self.line();
            assert!(v.get("event").is_some(), "unexpected reply {v}");
            self.events.push(v);
        }
    }
}

#[test]
fn negotiation_comes_first_and_only_once_and_ids_are_echoed() {
    let svc = Svc::start(&[]);
    let mut c = svc.connect();
    assert_eq!(
        c.err("query-version", json!({})),
        ("CommandNotFound".into(), "qmp.no_capabilities".into())
    );
    // An unknown command is that, negotiated or not (it is checked first).
    assert_eq!(
        c.err("no-such", json!({})),
        ("CommandNotFound".into(), "qmp.unknown_command".into())
    );
    assert!(c.ok("query-commands", json!({})).as_array().unwrap().len() > 20);
    c.ok("qmp_capabilities", json!({}));
    assert_eq!(
        c.err("qmp_capabilities", json!({})),
        ("CommandNotFound".into(), "qmp.already_negotiated".into())
    );
    c.send_raw(br#"{"execute":"query-version","id":{"any":["json"]}}"#);
    let r = c.reply();
    assert_eq!(r["id"], json!({"any": ["json"]}));
    assert_eq!(
        r["return"]["package"],
        json!(format!("mdevmig {}", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn malformed_input_gets_one_error_each_and_the_connection_goes_on() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    c.send_raw(b"garbage\n[1,2]\n{\"execute\": 5}{\"execute\":\"query-version\",\"x\":1}{\"exec-oob\":\"a\"}{bad json}\n");
    let codes: Vec<String> = (0..6)
        .map(|_| c.reply()["error"]["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codes,
        [
            "qmp.bad_json",
            "qmp.bad_json",
            "qmp.bad_message",
            "qmp.bad_message",
            "qmp.bad_message",
            "qmp.bad_json"
        ]
    );
    let big = format!(
        "{{\"execute\":\"x\",\"arguments\":{{\"s\":\"{}\"}}}}",
        "a".repeat(70_000)
    );
    c.send_raw(big.as_bytes());
    assert_eq!(c.reply()["error"]["code"], "qmp.message_too_large");
    c.send_raw(format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40)).as_bytes());
    assert_eq!(c.reply()["error"]["code"], "qmp.too_deep");
    assert!(c.ok("query-version", json!({}))["package"].is_string());
}

#[test]
fn arguments_are_checked_before_anything_runs() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    assert_eq!(c.err("describe", json!({})).1, "qmp.bad_arguments");
    assert_eq!(
        c.err("describe", json!({"device": "sim:mtty/mtty-2", "bogus": 1}))
            .1,
        "qmp.bad_arguments"
    );
    assert_eq!(
        c.err("describe", json!({"device": "nonsense"})).1,
        "usage.bad_device_spec"
    );
    assert_eq!(
        c.err(
            "check",
            json!({"device": "sim:mtty/mtty-2", "source": {"schema": "x"}})
        )
        .1,
        "format.bad_descriptor"
    );
}

#[test]
fn check_answers_like_the_library_for_configured_and_spec_devices() {
    let svc = Svc::start(&[("dst", "sim:mtty/mtty-2,seed=2")]);
    let mut c = svc.negotiated();
    let src = c.ok("describe", json!({"device": "sim:mtty/mtty-2,seed=1"}));
    assert_eq!(src["vendor"], "mtty");
    let ok = c.ok("check", json!({"device": "dst", "source": src}));
    assert_eq!(ok["compatible"], true);
    let old = c.ok("check", json!({"device": "sim:mtty/mtty-1", "source": src}));
    assert_eq!(old["compatible"], false, "{old}");
    assert!(!old["reasons"].as_array().unwrap().is_empty());
    let labels = c.ok("labels", json!({"device": "dst"}));
    assert!(labels["offers"].is_object() && labels["requires"].is_object());
}

#[test]
fn a_save_and_a_session_bound_restore_run_as_jobs_with_events() {
    let svc = Svc::start(&[
        ("src", "sim:simgpu/vgpu-64m,seed=1"),
        ("dst", "sim:simgpu/vgpu-64m,seed=2"),
    ]);
    let mut c = svc.negotiated();
    let nonce = c.ok("session-new", json!({}))["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let id = c.ok(
        "save",
        json!({"device": "src", "file": "s.mdm", "session": nonce, "job-id": "s1"}),
    )["job-id"]
        .clone();
    assert_eq!(id, "s1");
    let statuses: Vec<Value> = ["created", "running", "concluded"]
        .iter()
        .map(|_| c.wait_event("JOB_STATUS_CHANGE", "s1")["data"]["status"].clone())
        .collect();
    assert_eq!(statuses, ["created", "running", "concluded"]);
    let saved = c.wait_event("JOB_FINISHED", "s1");
    assert_eq!(saved["data"]["ok"], true, "{saved}");
    assert!(c.events.iter().all(|e| e["timestamp"]["seconds"].is_u64()));
    c.ok(
        "restore",
        json!({"device": "dst", "file": "s.mdm", "session": nonce, "job-id": "r1"}),
    );
    let restored = c.wait_event("JOB_FINISHED", "r1");
    assert_eq!(restored["data"]["ok"], true, "{restored}");
    assert_eq!(
        restored["data"]["result"]["state_digest"],
        saved["data"]["result"]["state_digest"]
    );
    // A nonce is good once.
    assert_eq!(
        c.err(
            "restore",
            json!({"device": "dst", "file": "s.mdm", "session": nonce})
        )
        .1,
        "qmp.bad_session"
    );
    let jobs = c.ok("query-jobs", json!({}));
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    c.ok("job-dismiss", json!({"id": "s1"}));
    assert_eq!(c.wait_event("JOB_STATUS_CHANGE", "s1")["data"]["status"], "null");
    assert_eq!(c.err("job-dismiss", json!({"id": "s1"})).1, "qmp.no_such_job");
}

#[test]
fn a_client_file_device_must_live_in_the_state_directory() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    let outside = svc.dir.path().join("image");
    std::fs::write(&outside, b"x").unwrap();
    for spec in [
        format!("file:{},plugin=mtty,type=mtty-2", outside.display()),
        format!(
            "file:{}/state/files/../../image,plugin=mtty,type=mtty-2",
            svc.dir.path().display()
        ),
        "file:/etc/passwd,plugin=mtty,type=mtty-2".to_string(),
    ] {
        assert_eq!(
            c.err("save", json!({"device": spec, "file": "x.mdm"})).1,
            "qmp.bad_path",
            "{spec}"
        );
        assert_eq!(
            c.err("device-open", json!({"id": "r", "device": spec})).1,
            "qmp.bad_path",
            "{spec}"
        );
    }
    for name in ["../x", ".hidden", "a/b", ""] {
        assert_eq!(
            c.err("save", json!({"device": "sim:mtty/mtty-2", "file": name}))
                .1,
            "qmp.bad_path",
            "{name:?}"
        );
    }
}

#[test]
fn the_region_over_the_socket_passes_data_fds_and_migrates() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    let nonce = c.ok("session-new", json!({}))["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let src = c.ok(
        "device-open",
        json!({"id": "s", "device": "sim:xe/xe-vf-64m,seed=5", "bind-session": nonce}),
    );
    assert!(
        src["migration-flags"]
            .as_array()
            .unwrap()
            .contains(&json!("PRE_COPY")),
        "{src}"
    );
    c.ok(
        "device-open",
        json!({"id": "d", "device": "sim:xe/xe-vf-64m,seed=6", "session": nonce}),
    );
    let (r, dfd) = c.cmd_fd("device-set-state", json!({"id": "d", "state": "resuming"}));
    assert_eq!(r["return"], json!({"state": "resuming", "data-fd": true}), "{r}");
    let (r, sfd) = c.cmd_fd("device-set-state", json!({"id": "s", "state": "stop-copy"}));
    assert_eq!(r["return"]["data-fd"], true, "{r}");
    let mut from = std::fs::File::from(sfd.unwrap());
    let mut to = std::fs::File::from(dfd.unwrap());
    let copier = std::thread::spawn(move || {
        let mut stream = Vec::new();
        from.read_to_end(&mut stream).unwrap();
        to.write_all(&stream).unwrap();
        stream.len()
    });
    let moved = copier.join().unwrap();
    assert!(moved > 64 << 20, "{moved}");
    c.ok("device-set-state", json!({"id": "s", "state": "stop"}));
    assert_eq!(
        c.ok("device-set-state", json!({"id": "d", "state": "stop"}))["state"],
        "stop"
    );
    let a = c.ok("device-query", json!({"id": "s"}));
    let b = c.ok("device-query", json!({"id": "d"}));
    assert_eq!(a["state-digest"], b["state-digest"]);
    assert!(a["state-digest"].is_string());
    let arcs = b["arcs"].as_array().unwrap();
    assert!(
        arcs.contains(&json!(["stop", "resuming"])) && arcs.contains(&json!(["resuming", "stop"])),
        "{arcs:?}"
    );
    c.ok("device-close", json!({"id": "s"}));
    assert_eq!(c.err("device-query", json!({"id": "s"})).1, "qmp.no_such_device");
}

#[test]
fn a_tampered_stream_through_the_region_is_refused_and_the_destination_reset() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    c.ok(
        "device-open",
        json!({"id": "s", "device": "sim:mtty/mtty-2,seed=1"}),
    );
    c.ok(
        "device-open",
        json!({"id": "d", "device": "sim:mtty/mtty-2,seed=2"}),
    );
    let before = c.ok("device-query", json!({"id": "d"}))["state-digest"].clone();
    let (_, dfd) = c.cmd_fd("device-set-state", json!({"id": "d", "state": "resuming"}));
    let (_, sfd) = c.cmd_fd("device-set-state", json!({"id": "s", "state": "stop-copy"}));
    let mut stream = Vec::new();
    std::fs::File::from(sfd.unwrap())
        .read_to_end(&mut stream)
        .unwrap();
    let mid = stream.len() / 2;
    stream[mid] ^= 0x40;
    let _ = std::fs::File::from(dfd.unwrap()).write_all(&stream);
    let (class, code) = c.err("device-set-state", json!({"id": "d", "state": "stop"}));
    assert_eq!(class, "GenericError");
    assert!(code.starts_with("auth.") || code.starts_with("format."), "{code}");
    let q = c.ok("device-query", json!({"id": "d"}));
    assert_eq!(q["state-digest"], before, "the destination was touched");
}

#[test]
fn getfd_names_the_latest_fd_and_a_used_name_is_gone() {
    let svc = Svc::start(&[("src", "sim:mtty/mtty-2,seed=1")]);
    let mut c = svc.negotiated();
    assert_eq!(c.err("getfd", json!({"fdname": "out"})).1, "qmp.no_such_fd");
    let (r, w) = rustix::pipe::pipe().unwrap();
    c.send_fd(&w);
    drop(w);
    c.ok("getfd", json!({"fdname": "out"}));
    c.ok("save", json!({"device": "src", "fdname": "out", "job-id": "j"}));
    let mut stream = Vec::new();
    std::fs::File::from(r).read_to_end(&mut stream).unwrap();
    assert_eq!(c.wait_event("JOB_FINISHED", "j")["data"]["ok"], true);
    assert_eq!(stream.get(1..8), Some(&b"MDEVMIG"[..]));
    assert_eq!(
        c.err("save", json!({"device": "src", "fdname": "out"})).1,
        "qmp.no_such_fd"
    );
    assert_eq!(c.err("closefd", json!({"fdname": "out"})).1, "qmp.no_such_fd");
}

#[test]
fn query_devices_lists_mdevs_vfio_functions_and_configured_devices() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
    let dev = r.join("devices/virtual/mtty/mtty").join(uuid);
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir_all(r.join("devices/virtual/mtty/mtty/mdev_supported_types/mtty-2")).unwrap();
    std::os::unix::fs::symlink(
        r.join("devices/virtual/mtty/mtty/mdev_supported_types/mtty-2"),
        dev.join("mdev_type"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("bus/mdev/devices")).unwrap();
    std::os::unix::fs::symlink(&dev, r.join("bus/mdev/devices").join(uuid)).unwrap();
    for (bdf, driver) in [("0000:03:00.1", "mlx5_vfio_pci"), ("0000:00:02.0", "i915")] {
        let d = r.join("bus/pci/devices").join(bdf);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(r.join("bus/pci/drivers").join(driver)).unwrap();
        std::os::unix::fs::symlink(r.join("bus/pci/drivers").join(driver), d.join("driver")).unwrap();
        std::fs::write(d.join("vendor"), "0x15b3\n").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(Listen::Path(dir.path().join("s.sock")), dir.path().join("state"));
    cfg.sysfs_root = r.to_path_buf();
    cfg.devices = vec![("gpu0".into(), "sim:simgpu/vgpu-64m".into())];
    let server = Server::bind(cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let t = std::thread::spawn(move || server.serve(&s2).unwrap());
    let s = UnixStream::connect(dir.path().join("s.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = Client {
        r: BufReader::new(s.try_clone().unwrap()),
        w: s,
        events: Vec::new(),
        next: 0,
    };
    c.line();
    c.ok("qmp_capabilities", json!({}));
    let list = c.ok("query-devices", json!({}));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(list[0]["kind"], "mdev");
    assert_eq!(list[0]["spec"], format!("vfio:{uuid}"));
    assert_eq!(list[0]["mdev_type"], "mtty-2");
    assert_eq!(list[0]["parent"], "mtty");
    assert_eq!(list[1]["kind"], "vfio-pci");
    assert_eq!(list[1]["driver"], "mlx5_vfio_pci");
    assert_eq!(list[1]["vendor_id"], "0x15b3");
    assert_eq!(
        list[2],
        json!({"kind": "configured", "name": "gpu0", "spec": "sim:simgpu/vgpu-64m", "busy": false})
    );
    stop.store(true, Ordering::Release);
    drop(c);
    t.join().unwrap();
}

#[test]
fn a_descriptor_and_a_policy_may_come_as_json_text() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    let mut src = c.ok("describe", json!({"device": "sim:mtty/mtty-2,seed=1"}));
    src["ok"] = json!(true); // as `describe --json` prints it
    let text = src.to_string();
    let r = c.ok(
        "check",
        json!({"device": "sim:mtty/mtty-2", "source": text, "policy": "{}"}),
    );
    assert_eq!(r["compatible"], true);
    assert_eq!(
        c.err("check", json!({"device": "sim:mtty/mtty-2", "source": 5}))
            .1,
        "qmp.bad_arguments"
    );
    assert_eq!(
        c.err("check", json!({"device": "sim:mtty/mtty-2", "source": "{"}))
            .1,
        "format.bad_descriptor"
    );
}

#[test]
fn jobs_and_regions_keep_to_the_hosts_version_window() {
    let svc = Svc::start(&[
        ("new", "sim:simgpu/vgpu-64m,seed=1"),
        ("old", "sim:simgpu/vgpu-64m,seed=3,versions=1..1"),
    ]);
    let mut c = svc.negotiated();
    c.ok("save", json!({"device": "new", "file": "v3.mdm", "job-id": "s3"}));
    let s3 = c.wait_event("JOB_FINISHED", "s3");
    assert_eq!(s3["data"]["result"]["state_version"], 3, "{s3}");
    // An older host's device refuses the newer state, as `mdevmig restore` does.
    c.ok(
        "restore",
        json!({"device": "old", "file": "v3.mdm", "job-id": "r3"}),
    );
    let r3 = c.wait_event("JOB_FINISHED", "r3");
    assert_eq!(r3["data"]["ok"], false, "{r3}");
    assert_eq!(r3["data"]["error"]["code"], "compat.version_too_new", "{r3}");
    // And saves what it produces.
    c.ok("save", json!({"device": "old", "file": "v1.mdm", "job-id": "s1"}));
    let s1 = c.wait_event("JOB_FINISHED", "s1");
    assert_eq!(s1["data"]["ok"], true, "{s1}");
    assert_eq!(s1["data"]["result"]["state_version"], 1, "{s1}");
    // A region over such a spec refuses the newer stream too.
    c.ok(
        "device-open",
        json!({"id": "d", "device": "sim:simgpu/vgpu-64m,seed=4,versions=1..1"}),
    );
    c.ok(
        "device-open",
        json!({"id": "s", "device": "sim:simgpu/vgpu-64m,seed=5"}),
    );
    let (_, dfd) = c.cmd_fd("device-set-state", json!({"id": "d", "state": "resuming"}));
    let (_, sfd) = c.cmd_fd("device-set-state", json!({"id": "s", "state": "stop-copy"}));
    let mut from = std::fs::File::from(sfd.unwrap());
    let mut to = std::fs::File::from(dfd.unwrap());
    let copier = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).unwrap();
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    copier.join().unwrap();
    let (_, code) = c.err("device-set-state", json!({"id": "d", "state": "stop"}));
    assert_eq!(code, "compat.version_too_new");
}

#[test]
fn a_device_that_outlives_the_service_serves_one_job_or_region_at_a_time() {
    let svc = Svc::start(&[("src", "sim:mtty/mtty-2,seed=1")]);
    let mut c = svc.negotiated();
    c.ok("save", json!({"device": "src", "file": "m.mdm", "job-id": "s"}));
    assert_eq!(c.wait_event("JOB_FINISHED", "s")["data"]["ok"], true);
    let files = svc.dir.path().join("state/files");
    let img = format!("file:{}/img,plugin=mtty,type=mtty-2", files.display());
    // A restore waiting on a pipe holds the image; a second job or a region on
    // the same image (however the path is spelled) is refused at once.
    let (r, w) = rustix::pipe::pipe().unwrap();
    c.send_fd(&r);
    drop(r);
    c.ok("getfd", json!({"fdname": "in"}));
    c.ok("restore", json!({"device": img, "fdname": "in", "job-id": "r1"}));
    assert_eq!(
        c.err("restore", json!({"device": img, "file": "m.mdm"})).1,
        "qmp.device_busy"
    );
    assert_eq!(
        c.err("device-open", json!({"id": "x", "device": img})).1,
        "qmp.device_busy"
    );
    drop(w);
    let r1 = c.wait_event("JOB_FINISHED", "r1");
    assert_eq!(r1["data"]["ok"], false, "{r1}");
    // Released: the image takes the next restore.
    c.ok("restore", json!({"device": img, "file": "m.mdm", "job-id": "r2"}));
    assert_eq!(c.wait_event("JOB_FINISHED", "r2")["data"]["ok"], true);
}

#[test]
fn a_region_mid_migration_on_a_lasting_device_is_journaled_until_it_is_at_rest() {
    let svc = Svc::start(&[]);
    let mut c = svc.negotiated();
    let files = svc.dir.path().join("state/files");
    let journal = svc.dir.path().join("state/journal");
    let entries = || std::fs::read_dir(&journal).unwrap().count();
    let img = format!("file:{}/img,plugin=mtty,type=mtty-2", files.display());
    c.ok("device-open", json!({"id": "d", "device": img}));
    assert_eq!(entries(), 0);
    let (_, fd) = c.cmd_fd("device-set-state", json!({"id": "d", "state": "resuming"}));
    assert_eq!(entries(), 1);
    let name = std::fs::read_dir(&journal)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let entry: Value = serde_json::from_slice(&std::fs::read(name).unwrap()).unwrap();
    assert_eq!(entry["role"], "restore");
    assert_eq!(entry["device"], json!(img));
    drop(fd);
    c.ok("device-close", json!({"id": "d"}));
    assert_eq!(entries(), 0);
    // Simulated devices are not journaled.
    c.ok("device-open", json!({"id": "s", "device": "sim:mtty/mtty-2"}));
    let _fd = c.cmd_fd("device-set-state", json!({"id": "s", "state": "stop-copy"}));
    assert_eq!(entries(), 0);
}
