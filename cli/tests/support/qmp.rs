//! A small QMP client for tests and benchmarks of `mdevmig serve`, and a guard
//! that runs the service.
//!
//! The service writes one JSON object per line: the greeting, replies (`return`
//! or `error`, with the `id` the command carried), and events, which may come
//! between a command and its reply. [`Qmp::execute`] matches replies by `id` and
//! keeps the events and the errors that carry no id (a malformed message's) for
//! the caller. Fds travel as QEMU's do: a byte with SCM_RIGHTS, then `getfd`.
//! Every read has a deadline: a test fails, it never hangs.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a reply may take before the caller fails (a loaded CI machine).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// One connection to the service.
pub struct Qmp {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    /// The greeting.
    pub greeting: Value,
    /// Events received and not yet taken, oldest first.
    pub events: VecDeque<Value>,
    /// Error replies without an id (answers to malformed input), oldest first.
    pub stray: VecDeque<Value>,
}

/// Why a read gave nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    /// The service closed the connection.
    Closed,
    /// Nothing complete arrived before the deadline.
    Timeout,
}

impl Qmp {
    /// Connects and reads the greeting.
    pub fn connect(socket: &Path) -> Qmp {
        let stream =
            UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        let mut q = Qmp {
            stream,
            buf: Vec::new(),
            next_id: 0,
            greeting: Value::Null,
            events: VecDeque::new(),
            stray: VecDeque::new(),
        };
        let g = q.recv(REPLY_TIMEOUT).expect("the greeting");
        assert!(g.get("QMP").is_some(), "not a QMP greeting: {g}");
        q.greeting = g;
        q
    }

    /// Connects, reads the greeting and negotiates capabilities.
    pub fn negotiated(socket: &Path) -> Qmp {
        let mut q = Qmp::connect(socket);
        q.ok("qmp_capabilities", json!({}));
        q
    }

    /// The socket itself, for raw writes and fd passing.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the service");
    }

    /// Sends one message (no id is added).
    pub fn send(&mut self, msg: &Value) {
        let mut b = msg.to_string().into_bytes();
        b.push(b'\n');
        self.send_raw(&b);
    }

    /// Passes fds with one space byte (as qemu.qmp does).
    pub fn send_fds(&self, fds: &[BorrowedFd<'_>]) {
        send_fds(&self.stream, fds);
    }

    /// The next message, waiting at most `within`.
    pub fn recv(&mut self, within: Duration) -> Result<Value, Gone> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                return Ok(serde_json::from_str(text.trim())
                    .unwrap_or_else(|e| panic!("the service sent invalid JSON ({e}): {text}")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Gone::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Gone::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Gone::Closed),
                Err(e) => panic!("read from the service: {e}"),
            }
        }
    }

    /// Files an event or an id-less error; returns the message back if it is
    /// neither.
    fn file(&mut self, m: Value) -> Option<Value> {
        if m.get("event").is_some() {
            self.events.push_back(m);
            None
        } else if m.get("error").is_some() && m.get("id").is_none() {
            self.stray.push_back(m);
            None
        } else {
            Some(m)
        }
    }

    /// Sends a command with a fresh id and waits for its reply: `Ok(return)` or
    /// `Err(error object)`. Events and id-less errors that come first are kept.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = format!("t{}", self.next_id);
        self.send(&json!({"execute": cmd, "arguments": args, "id": id}));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.recv(left) {
                Ok(m) => m,
                Err(g) => panic!("no reply to {cmd}: {g:?}"),
            };
            let Some(m) = self.file(m) else { continue };
            if m.get("id") != Some(&json!(id)) {
                panic!("a reply with an unexpected id to {cmd} ({id}): {m}");
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            return Err(m.get("error").cloned().unwrap_or(m));
        }
    }

    /// A command that must succeed.
    pub fn ok(&mut self, cmd: &str, args: Value) -> Value {
        self.execute(cmd, args.clone())
            .unwrap_or_else(|e| panic!("{cmd} {args} failed: {e}"))
    }

    /// A command that must fail; its error code.
    pub fn err(&mut self, cmd: &str, args: Value) -> String {
        match self.execute(cmd, args.clone()) {
            Ok(r) => panic!("{cmd} {args} succeeded ({r}) but should have failed"),
            Err(e) => code(&e),
        }
    }

    /// Passes `fd` and names it with getfd.
    pub fn getfd(&mut self, name: &str, fd: BorrowedFd<'_>) {
        self.send_fds(&[fd]);
        self.ok("getfd", json!({ "fdname": name }));
    }

    /// Waits for the first event (kept or new) that `pred` accepts, and takes it.
    pub fn wait_event(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i).unwrap();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(m) => {
                    if let Some(m) = self.file(m) {
                        panic!("a reply nobody waits for: {m}");
                    }
                }
                Err(g) => panic!(
                    "no awaited event within {within:?} ({g:?}); kept: {:?}",
                    self.events
                ),
            }
        }
    }

    /// Waits for `JOB_FINISHED` of job `id`; its data.
    pub fn wait_job(&mut self, id: &str, within: Duration) -> Value {
        let ev = self.wait_event(within, |e| {
            e["event"] == "JOB_FINISHED" && e["data"]["id"] == json!(id)
        });
        ev["data"].clone()
    }

    /// Reads until the service closes the connection; what came first.
    pub fn read_to_close(&mut self, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(m) => got.push(m),
                Err(Gone::Closed) => return got,
                Err(Gone::Timeout) => {
                    panic!("the service kept the connection open for {within:?}; got {got:?}")
                }
            }
        }
    }

    /// The job `id` as query-jobs shows it, if listed.
    pub fn job(&mut self, id: &str) -> Option<Value> {
        let jobs = self.ok("query-jobs", json!({}));
        jobs.as_array()?.iter().find(|j| j["id"] == json!(id)).cloned()
    }
}

/// An error object's stable code.
pub fn code(e: &Value) -> String {
    e.get("code")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("an error without a code: {e}"))
        .to_string()
}

/// Sends fds over a socket with one space byte.
pub fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    assert!(fds.len() <= 8, "at most 8 fds in one message here");
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
    let n = rustix::net::sendmsg(
        stream,
        &[std::io::IoSlice::new(b" ")],
        &mut anc,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg with SCM_RIGHTS");
    assert_eq!(n, 1);
}

/// Polls `f` until it returns `Some`, for at most `within`; panics with `what`.
pub fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A running `mdevmig serve`, killed (SIGKILL) when dropped if still running.
pub struct Service {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Service {
    /// Starts `bin serve --socket <socket> <args>`, its stderr into `log`, and
    /// waits until it listens.
    pub fn start(bin: &str, socket: &Path, log: &Path, args: &[String]) -> Service {
        let err = File::create(log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn mdevmig serve");
        let mut s = Service {
            child: Some(child),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let want = format!("listening on {}", socket.display());
        poll(Duration::from_secs(120), "the service to listen", || {
            if let Some(st) = s.try_wait() {
                panic!("the service exited with {st} before listening:\n{}", s.log_text());
            }
            s.log_text().contains(&want).then_some(())
        });
        s
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("waitpid")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap());
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the exit, at most `within`.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let st = poll(within, "the service to exit", || self.try_wait());
        self.child = None;
        st
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (File, File) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    (File::from(r), File::from(w))
}

/// Borrows a file's fd.
pub fn fd_of(f: &File) -> BorrowedFd<'_> {
    f.as_fd()
}
