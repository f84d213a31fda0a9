//! One client connection: credentials, the greeting, negotiation, reading
//! messages within limits, received fds, replies and events.
//!
//! ```text
//!   accept -> SO_PEERCRED -> greeting -> capabilities mode
//!     capabilities mode: only qmp_capabilities (and query-commands) run
//!     command mode:      every command the peer's rights allow
//!   EOF, idle or slow message, write timeout, drain -> cleanup:
//!     running jobs of this connection cancelled (source RUNNING, destination
//!     reset), regions dropped (the same), fds closed
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde_json::{json, Map, Value};

use crate::errors::QErr;
use crate::wire::{Frame, Framer};
use crate::{log, Peer, Rights, Shared};

/// A connection's write side: replies and events wait in a bounded queue that
/// the connection's writer thread drains, so a client that does not read slows
/// nobody else. Past the queue's bounds, or a write that times out, the
/// connection is closed.
pub(crate) struct Writer {
    q: Mutex<Queue>,
    cv: Condvar,
    stream: UnixStream,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Queue {
    msgs: VecDeque<(Vec<u8>, Option<OwnedFd>)>,
    bytes: usize,
    /// No more messages: the writer thread flushes what is queued and ends.
    closing: bool,
    /// The connection failed: nothing more is written.
    dead: bool,
}

/// Messages a connection may have waiting to be written.
const MAX_QUEUED: usize = 4096;
/// Bytes a connection may have waiting to be written.
const MAX_QUEUED_BYTES: usize = 16 << 20;

impl Writer {
    fn new(stream: UnixStream) -> Arc<Self> {
        let w = Arc::new(Writer {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            stream,
            thread: Mutex::new(None),
        });
        let me = Arc::clone(&w);
        let t = std::thread::Builder::new()
            .name("qmp-write".into())
            .spawn(move || me.drain());
        match t {
            Ok(t) => {
                if let Ok(mut slot) = w.thread.lock() {
                    *slot = Some(t);
                }
            }
            Err(_) => w.kill(),
        }
        w
    }

    fn drain(&self) {
        loop {
            let (bytes, fd) = {
                let Ok(mut q) = self.q.lock() else { return };
                loop {
                    if q.dead {
                        return;
                    }
                    if let Some(m) = q.msgs.pop_front() {
                        q.bytes = q.bytes.saturating_sub(m.0.len());
                        break m;
                    }
                    if q.closing {
                        let _ = self.stream.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    q = match self.cv.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            };
            if write_all(&self.stream, &bytes, fd.as_ref().map(|f| f.as_fd())).is_err() {
                self.kill();
                return;
            }
        }
    }

    /// True once the connection failed or was closed.
    pub fn is_dead(&self) -> bool {
        self.q.lock().map(|q| q.dead).unwrap_or(true)
    }

    /// Queues one message (and a newline).
    pub fn send(&self, msg: &Value) {
        self.send_with_fd(msg, None);
    }

    /// Queues one message with `fd` attached (SCM_RIGHTS) to its first byte.
    pub fn send_with_fd(&self, msg: &Value, fd: Option<OwnedFd>) {
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let Ok(mut q) = self.q.lock() else { return };
        if q.dead || q.closing {
            return;
        }
        if q.msgs.len() >= MAX_QUEUED || q.bytes.saturating_add(bytes.len()) > MAX_QUEUED_BYTES {
            drop(q);
            log("a client does not read its replies and events: closing it");
            self.kill();
            return;
        }
        q.bytes = q.bytes.saturating_add(bytes.len());
        q.msgs.push_back((bytes, fd));
        self.cv.notify_all();
    }

    /// Closes the connection after what is queued is written.
    pub fn close(&self) {
        if let Ok(mut q) = self.q.lock() {
            q.closing = true;
        }
        self.cv.notify_all();
    }

    /// Closes the connection now, dropping what is queued.
    pub fn kill(&self) {
        if let Ok(mut q) = self.q.lock() {
            q.dead = true;
            q.msgs.clear();
        }
        self.cv.notify_all();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Waits for the writer thread (after [`Writer::close`] or [`Writer::kill`]).
    pub fn join(&self) {
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

fn write_all(stream: &UnixStream, mut bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let mut first = true;
    while !bytes.is_empty() {
        let fds;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if let (true, Some(fd)) = (first, fd) {
            fds = [fd];
            anc.push(SendAncillaryMessage::ScmRights(&fds));
        }
        let n = rustix::net::sendmsg(
            stream,
            &[std::io::IoSlice::new(bytes)],
            &mut anc,
            SendFlags::NOSIGNAL,
        )?;
        first = false;
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}

/// An event message, timestamped as QMP's are.
pub(crate) fn event(name: &str, data: Value) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    json!({
        "event": name,
        "data": data,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
    })
}

/// The greeting: QMP's shape, the broker's version under `qemu` (qmp-shell and
/// libvirt read it there) and the package name.
fn greeting() -> Value {
    json!({"QMP": {"version": version(), "capabilities": []}})
}

/// The version object of the greeting and of `query-version`.
pub(crate) fn version() -> Value {
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    json!({
        "qemu": {"major": parts.next().unwrap_or(0), "minor": parts.next().unwrap_or(0), "micro": parts.next().unwrap_or(0)},
        "package": format!("mdevmig {v}"),
    })
}

/// Tells a client over the connection limit why it is turned away.
pub(crate) fn refuse_full(stream: UnixStream, max: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let e = QErr::new("qmp.too_many", format!("the service already has {max} clients"));
    for m in [greeting(), json!({"error": e.to_json()})] {
        let mut bytes = m.to_string().into_bytes();
        bytes.push(b'\n');
        if write_all(&stream, &bytes, None).is_err() {
            break;
        }
    }
    log(&format!("refused a connection: {max} clients already"));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// What one connection holds between messages.
pub(crate) struct Session<'a> {
    pub shared: &'a Arc<Shared>,
    pub peer: Arc<Peer>,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Fds received and not yet named by getfd, oldest first.
    pub received: VecDeque<OwnedFd>,
    /// Fds named by getfd.
    pub fds: HashMap<String, OwnedFd>,
    pub regions: HashMap<String, crate::regions::Slot>,
    /// Jobs this connection started (ids).
    pub jobs: Vec<String>,
}

impl Session<'_> {
    pub fn held_fds(&self) -> usize {
        self.received.len().saturating_add(self.fds.len())
    }

    pub fn who(&self) -> String {
        format!(
            "client {} (uid {}, gid {}, pid {})",
            self.peer.id, self.uid, self.gid, self.pid
        )
    }

    fn busy(&self) -> bool {
        !self.regions.is_empty() || self.jobs.iter().any(|j| self.shared.jobs.is_running(j))
    }
}

/// Serves one connection to its end.
pub(crate) fn serve(shared: &Arc<Shared>, stream: UnixStream) {
    let limits = shared.cfg.limits.clone();
    // nix, not rustix: a peer in another pid namespace has pid 0, which
    // rustix's non-zero pid type refuses.
    let cred = match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("SO_PEERCRED failed, closing the connection: {e}"));
            return;
        }
    };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let rights = shared.access.rights(uid, gid);
    let _ = stream.set_write_timeout(Some(limits.write));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
    let Ok(reader) = stream.try_clone() else { return };
    let peer = Arc::new(Peer {
        id: shared.next_id(),
        out: Writer::new(stream),
        rights,
        negotiated: AtomicBool::new(false),
    });
    if let Ok(mut p) = shared.peers.lock() {
        p.insert(peer.id, Arc::clone(&peer));
    }
    let mut s = Session {
        shared,
        peer: Arc::clone(&peer),
        uid,
        gid,
        pid,
        received: VecDeque::new(),
        fds: HashMap::new(),
        regions: HashMap::new(),
        jobs: Vec::new(),
    };
    log(&format!(
        "{} connected: query {}, migrate {}",
        s.who(),
        rights.query,
        rights.migrate
    ));
    peer.out.send(&greeting());
    let why = read_loop(&mut s, &reader, &limits);
    log(&format!("{} disconnected: {why}", s.who()));
    cleanup(&mut s);
    if let Ok(mut p) = shared.peers.lock() {
        p.remove(&peer.id);
    }
    peer.out.close();
    peer.out.join();
}

fn read_loop(s: &mut Session<'_>, reader: &UnixStream, limits: &crate::Limits) -> String {
    let mut framer = Framer::new(limits.max_message, limits.max_depth);
    let mut buf = vec![0u8; 16 << 10];
    let mut frames = Vec::new();
    let mut last_activity = Instant::now();
    let mut message_started: Option<Instant> = None;
    loop {
        if s.peer.out.is_dead() {
            return "closed".into();
        }
        match recv(reader, &mut buf, s) {
            Ok(0) => return "end of stream".into(),
            Ok(n) => {
                last_activity = Instant::now();
                framer.push(buf.get(..n).unwrap_or_default(), &mut frames);
                // A message that started in a read that also ended one is a
                // new message: its clock starts now.
                let ended = !frames.is_empty();
                for f in frames.drain(..) {
                    handle_frame(s, f);
                }
                message_started = match (framer.in_message(), message_started) {
                    (true, Some(t)) if !ended => Some(t),
                    (true, _) => Some(Instant::now()),
                    (false, _) => None,
                };
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return format!("read failed: {e}"),
        }
        if let Some(t) = message_started {
            if t.elapsed() > limits.message {
                timeout(s, "a message was not completed in time");
                return format!("slow client: a message took over {:?}", limits.message);
            }
        }
        if last_activity.elapsed() > limits.idle && !s.busy() {
            timeout(s, "the connection was idle");
            return format!("idle for {:?}", limits.idle);
        }
    }
}

fn timeout(s: &Session<'_>, what: &str) {
    let e = QErr::new("qmp.timeout", format!("{what}; closing the connection"));
    s.peer.out.send(&json!({"error": e.to_json()}));
}

/// One recvmsg: data into `buf`, fds onto the session's received list (fds past
/// the connection's limit are closed and reported).
fn recv(reader: &UnixStream, buf: &mut [u8], s: &mut Session<'_>) -> std::io::Result<usize> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        reader,
        &mut [IoSliceMut::new(buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut dropped = 0usize;
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                if s.held_fds() < s.shared.cfg.limits.max_fds_per_client {
                    s.received.push_back(fd);
                } else {
                    dropped = dropped.saturating_add(1);
                }
            }
        }
    }
    if dropped > 0 || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        log(&format!(
            "{}: closed fds past its limit of {}",
            s.who(),
            s.shared.cfg.limits.max_fds_per_client
        ));
        let e = QErr::new(
            "qmp.too_many",
            format!(
                "fds past this connection's limit of {} were closed",
                s.shared.cfg.limits.max_fds_per_client
            ),
        );
        s.peer.out.send(&json!({"error": e.to_json()}));
    }
    Ok(msg.bytes)
}

fn handle_frame(s: &mut Session<'_>, f: Frame) {
    let bytes = match f {
        Frame::Message(b) => b,
        Frame::Malformed(code, msg) => {
            s.peer.out.send(&json!({"error": QErr::new(code, msg).to_json()}));
            return;
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let e = QErr::new("qmp.bad_json", format!("JSON parse error: {e}"));
            s.peer.out.send(&json!({"error": e.to_json()}));
            return;
        }
    };
    let Value::Object(obj) = value else {
        let e = QErr::new("qmp.bad_json", "JSON parse error: expected an object");
        s.peer.out.send(&json!({"error": e.to_json()}));
        return;
    };
    let id = obj.get("id").cloned();
    let (reply, fd) = match parse_command(&obj) {
        Ok((name, args)) => match crate::commands::run(s, name, args) {
            Ok(r) => (json!({"return": r.value}), r.fd),
            Err(e) => {
                if e.code == "qmp.access_denied" {
                    log(&format!("{}: refused {name:?}: {}", s.who(), e.message));
                }
                (json!({"error": e.to_json()}), None)
            }
        },
        Err(e) => (json!({"error": e.to_json()}), None),
    };
    let mut reply = reply;
    if let (Some(id), Some(o)) = (id, reply.as_object_mut()) {
        o.insert("id".into(), id);
    }
    s.peer.out.send_with_fd(&reply, fd);
}

fn parse_command(obj: &Map<String, Value>) -> Result<(&str, Map<String, Value>), QErr> {
    if obj.contains_key("exec-oob") {
        return Err(QErr::new(
            "qmp.bad_message",
            "out-of-band execution is not offered (no 'oob' capability)",
        ));
    }
    for k in obj.keys() {
        if !matches!(k.as_str(), "execute" | "arguments" | "id") {
            return Err(QErr::new(
                "qmp.bad_message",
                format!("QMP input member '{k}' is unexpected"),
            ));
        }
    }
    let name = match obj.get("execute") {
        Some(Value::String(n)) => n.as_str(),
        Some(_) => {
            return Err(QErr::new(
                "qmp.bad_message",
                "QMP input member 'execute' must be a string",
            ))
        }
        None => return Err(QErr::new("qmp.bad_message", "QMP input lacks member 'execute'")),
    };
    let args = match obj.get("arguments") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err(QErr::new(
                "qmp.bad_message",
                "QMP input member 'arguments' must be an object",
            ))
        }
    };
    Ok((name, args))
}

/// A connection's end: its running jobs are cancelled and waited for, its
/// regions dropped (which abandons their migrations), its fds closed.
fn cleanup(s: &mut Session<'_>) {
    for id in std::mem::take(&mut s.jobs) {
        if s.shared.jobs.cancel_if_running(s.shared, &id) {
            log(&format!("{}: went away; cancelling its job {id:?}", s.who()));
            s.shared.jobs.wait(&id);
        }
    }
    let who = s.who();
    for (id, slot) in s.regions.drain() {
        log(&format!("{who}: went away; abandoning region {id:?}"));
        drop(slot);
    }
    s.received.clear();
    s.fds.clear();
}

/// What a command answers: its return value, and an fd to pass with it.
pub(crate) struct Reply {
    pub value: Value,
    pub fd: Option<OwnedFd>,
}

impl Reply {
    pub fn of(value: Value) -> Self {
        Reply { value, fd: None }
    }
}

/// Whether a right covers a command class.
pub(crate) fn allowed(rights: Rights, class: crate::commands::Class) -> bool {
    match class {
        crate::commands::Class::Always => true,
        crate::commands::Class::Query => rights.query,
        crate::commands::Class::Migrate => rights.migrate,
    }
}
