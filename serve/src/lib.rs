//! `mdevmig serve`: the broker as a management service that speaks QMP.
//!
//! Management stacks (libvirt, KubeVirt, OpenStack) ask "can this state go
//! there?" all the time and orchestrate migrations across hosts. This crate puts
//! the broker behind a Unix socket that speaks the QMP wire protocol (QEMU's
//! `docs/interop/qmp-spec.rst`), so the `qemu.qmp` Python package, `qmp-shell`
//! and libvirt-style clients talk to it as they talk to QEMU:
//!
//! ```text
//!   client                              mdevmig serve
//!     |  connect (SO_PEERCRED read)        |
//!     |  <------- {"QMP": {"version", "capabilities": []}}
//!     |  {"execute": "qmp_capabilities"} ->|
//!     |  <------- {"return": {}}           |   command mode
//!     |  {"execute": "check", "arguments": {...}, "id": 1} ->
//!     |  <------- {"return": {verdict}, "id": 1}
//!     |  {"execute": "save", ...}  ------->|   a job thread starts
//!     |  <------- {"event": "JOB_STATUS_CHANGE", "data": {"id", "status"}, "timestamp"}
//!     |  <------- {"event": "JOB_PROGRESS", ...}  ...  "concluded"
//! ```
//!
//! The service sits above the broker and calls it; the broker never imports it.
//! Every command, event and error code is documented in `spec/qmp.md`.
//!
//! One thread serves each connection (bounded by [`Limits::max_clients`]); one
//! thread runs each job (bounded by [`Limits::max_jobs`]). A client that goes
//! away takes its jobs and regions with it: a source goes back to RUNNING, a
//! touched destination is reset. SIGTERM stops accepting, lets running jobs
//! finish (up to [`Limits::drain`]), then cancels what is left and exits.

#![forbid(unsafe_code)]
// Every module sees bytes or values a client chose.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

mod access;
mod commands;
mod conn;
mod errors;
mod jobs;
mod journal;
mod regions;
mod sysfs;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdevmig::device::MigrationDevice;
use mdevmig::sandbox::Validation;
use mdevmig::{Code, Error, Registry, Result, SigningKeyPair, TrustStore};

pub use access::{AccessPolicy, Rights};
pub use errors::CODES;

/// The names of every command the service has.
pub fn command_names() -> Vec<&'static str> {
    commands::COMMANDS.iter().map(|(n, _, _)| *n).collect()
}

/// Limits that keep one client, or many, from exhausting the service.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_message: usize,
    /// Deepest nesting of a message (the outermost object is 1).
    pub max_depth: u32,
    /// Connections at once.
    pub max_clients: usize,
    /// Jobs running at once, over all clients.
    pub max_jobs: usize,
    /// Jobs one connection may have running.
    pub max_jobs_per_client: usize,
    /// Fds one connection may hold (received and named).
    pub max_fds_per_client: usize,
    /// Regions one connection may have open.
    pub max_regions_per_client: usize,
    /// A connection with no message, no job and no region for this long is closed.
    pub idle: Duration,
    /// A message that started must be complete within this.
    pub message: Duration,
    /// A reply or event that cannot be written within this closes the connection.
    pub write: Duration,
    /// How long SIGTERM waits for running jobs before cancelling them.
    pub drain: Duration,
    /// Session nonces issued and not yet used, and how long one lives.
    pub max_sessions: usize,
    /// Lifetime of an issued session nonce.
    pub session_ttl: Duration,
    /// Concluded jobs kept for query-jobs before the oldest are dismissed.
    pub max_concluded: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 << 10,
            max_depth: 32,
            max_clients: 256,
            max_jobs: 16,
            max_jobs_per_client: 4,
            max_fds_per_client: 16,
            max_regions_per_client: 8,
            idle: Duration::from_secs(600),
            message: Duration::from_secs(10),
            write: Duration::from_secs(10),
            drain: Duration::from_secs(30),
            max_sessions: 1024,
            session_ttl: Duration::from_secs(3600),
            max_concluded: 256,
        }
    }
}

/// Where the service listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Create (or replace a stale) socket at this path.
    Path(PathBuf),
    /// systemd socket activation: the fd `LISTEN_FDS` hands over.
    Activated,
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// Group owning the socket (a name or a number); the socket is mode 0660.
    pub socket_group: Option<String>,
    /// The access policy file; without one only root and the service's uid may connect usefully.
    pub access: Option<PathBuf>,
    /// Signing key for saves.
    pub key: Option<PathBuf>,
    /// Trust store for restores.
    pub trust: Option<PathBuf>,
    /// Skip the trust store's ownership checks (loudly).
    pub insecure_trust_store: bool,
    /// Named devices the service holds for its lifetime (`name`, device spec).
    pub devices: Vec<(String, String)>,
    /// The state directory: files `save`/`restore` name, and the journal of
    /// migrations in flight.
    pub state_dir: PathBuf,
    /// Root of sysfs for device discovery (`/sys`).
    pub sysfs_root: PathBuf,
    /// Where vendor plugins validate structured sections.
    pub validation: Validation,
    /// Limits.
    pub limits: Limits,
}

impl Config {
    /// A configuration with defaults for everything but where to listen and the
    /// state directory.
    pub fn new(listen: Listen, state_dir: PathBuf) -> Self {
        Config {
            listen,
            socket_group: None,
            access: None,
            key: None,
            trust: None,
            insecure_trust_store: false,
            devices: Vec::new(),
            state_dir,
            sysfs_root: PathBuf::from("/sys"),
            validation: Validation::default(),
            limits: Limits::default(),
        }
    }
}

/// A configured device: taken out while a job or region uses it.
pub(crate) struct Named {
    pub spec: String,
    pub dev: Mutex<Option<Box<dyn MigrationDevice>>>,
    /// Its descriptor, taken at start: describe, check and labels answer from it
    /// without waiting for a job that holds the device.
    pub descriptor: mdevmig::compat::Descriptor,
    /// Its identity and the version window its host is pinned to.
    pub info: mdevmig_plugin_api::DeviceInfo,
    pub versions: Option<mdevmig_plugin_api::VersionWindow>,
}

/// A connection's write side, shared with jobs that send it events.
pub(crate) struct Peer {
    pub id: u64,
    pub out: Arc<conn::Writer>,
    pub rights: Rights,
    pub negotiated: AtomicBool,
}

/// What every connection and job shares.
pub(crate) struct Shared {
    pub cfg: Config,
    pub registry: Arc<Registry>,
    pub key: Option<Arc<SigningKeyPair>>,
    pub trust: Option<Arc<TrustStore>>,
    pub access: AccessPolicy,
    pub named: BTreeMap<String, Named>,
    pub peers: Mutex<HashMap<u64, Arc<Peer>>>,
    pub jobs: jobs::Jobs,
    pub sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Devices whose state outlives the service (`vfio:`, `file:`) that a job or
    /// region is using, by [`commands::device_key`].
    pub in_use: Mutex<std::collections::HashSet<String>>,
    pub draining: AtomicBool,
    pub clients: AtomicUsize,
    next_id: AtomicU64,
}

impl Shared {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Sends an event to every negotiated connection that may migrate.
    pub fn broadcast(&self, event: &str, data: serde_json::Value) {
        let msg = conn::event(event, data);
        let peers: Vec<Arc<Peer>> = self
            .peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for p in peers {
            if p.rights.migrate && p.negotiated.load(Ordering::Acquire) {
                p.out.send(&msg);
            }
        }
    }
}

/// One log line on stderr (journald adds the time).
pub(crate) fn log(line: &str) {
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    eprintln!("mdevmig-serve: {clean}");
}

/// A bound service, ready to serve.
pub struct Server {
    listener: UnixListener,
    shared: Arc<Shared>,
    socket_path: Option<PathBuf>,
}

impl Server {
    /// Loads keys and the policy, opens the configured devices, resets devices a
    /// previous run left mid-migration, and binds the socket.
    pub fn bind(cfg: Config) -> Result<Server> {
        let registry = Arc::new(Registry::builtin());
        let key = cfg
            .key
            .as_deref()
            .map(SigningKeyPair::load)
            .transpose()?
            .map(Arc::new);
        let trust = cfg
            .trust
            .as_deref()
            .map(|t| load_trust(t, cfg.insecure_trust_store))
            .transpose()?;
        let access = match &cfg.access {
            Some(p) => AccessPolicy::load(p)?,
            None => AccessPolicy::owner_only(),
        };
        journal::prepare(&cfg.state_dir)?;
        journal::recover(&cfg.state_dir, &registry);
        let mut named = BTreeMap::new();
        for (name, spec) in &cfg.devices {
            let (dev, host) = mdevmig::device::open(&spec.parse()?, &registry)?;
            let descriptor = mdevmig::compat::describe(&*dev, &registry, host.versions)?;
            named.insert(
                name.clone(),
                Named {
                    spec: spec.clone(),
                    info: dev.info().clone(),
                    dev: Mutex::new(Some(dev)),
                    descriptor,
                    versions: host.versions,
                },
            );
        }
        let (listener, socket_path) = listen(&cfg)?;
        let shared = Arc::new(Shared {
            registry,
            key,
            trust: trust.map(Arc::new),
            access,
            named,
            peers: Mutex::new(HashMap::new()),
            jobs: jobs::Jobs::default(),
            sessions: Mutex::new(HashMap::new()),
            in_use: Mutex::new(std::collections::HashSet::new()),
            draining: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            cfg,
        });
        Ok(Server {
            listener,
            shared,
            socket_path,
        })
    }

    /// The socket's path (None when systemd passed the socket).
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// Serves until `stop` becomes true, then drains: no new connections or jobs,
    /// running jobs finish (up to the drain limit, then are cancelled), every
    /// connection is closed.
    pub fn serve(self, stop: &AtomicBool) -> Result<()> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(Code::IoOpen, "the socket", &e))?;
        let mut threads = Vec::new();
        while !stop.load(Ordering::Acquire) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    threads.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
                    if let Some(t) = self.admit(stream) {
                        threads.push(t);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let fd = rustix::event::PollFd::new(&self.listener, rustix::event::PollFlags::IN);
                    let _ = rustix::event::poll(
                        &mut [fd],
                        Some(&rustix::time::Timespec {
                            tv_sec: 0,
                            tv_nsec: 200_000_000,
                        }),
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(&format!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        self.drain(threads);
        Ok(())
    }

    fn admit(&self, stream: UnixStream) -> Option<std::thread::JoinHandle<()>> {
        let n = self.shared.clients.fetch_add(1, Ordering::AcqRel);
        if n >= self.shared.cfg.limits.max_clients {
            self.shared.clients.fetch_sub(1, Ordering::AcqRel);
            conn::refuse_full(stream, self.shared.cfg.limits.max_clients);
            return None;
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("qmp-conn".into())
            .spawn(move || {
                conn::serve(&shared, stream);
                shared.clients.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                self.shared.clients.fetch_sub(1, Ordering::AcqRel);
                log(&format!("cannot start a connection thread: {e}"));
                None
            }
        }
    }

    fn drain(self, threads: Vec<std::thread::JoinHandle<()>>) {
        let Server {
            listener,
            shared,
            socket_path,
        } = self;
        // Stop listening at once: a client that connects now is refused by the
        // kernel instead of waiting for a greeting that never comes.
        drop(listener);
        if let Some(p) = &socket_path {
            let _ = std::fs::remove_file(p);
        }
        let shared = &shared;
        shared.draining.store(true, Ordering::Release);
        let running = shared.jobs.running();
        log(&format!(
            "draining: {running} job(s) running, {} client(s)",
            shared.clients.load(Ordering::Acquire)
        ));
        let deadline = Instant::now()
            .checked_add(shared.cfg.limits.drain)
            .unwrap_or_else(Instant::now);
        while shared.jobs.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if shared.jobs.running() > 0 {
            log("drain time is up: cancelling the jobs still running");
            shared.jobs.cancel_all(shared);
            shared.jobs.wait_all();
        }
        let peers: Vec<Arc<Peer>> = shared
            .peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for p in peers {
            p.out.close();
        }
        for t in threads {
            let _ = t.join();
        }
        log("stopped");
    }
}

fn load_trust(path: &Path, insecure: bool) -> Result<TrustStore> {
    if insecure {
        log(&format!(
            "warning: --insecure-trust-store: the owner and permissions of {} are not checked",
            path.display()
        ));
    }
    TrustStore::load_with(path, mdevmig::auth::TrustOptions { insecure })
}

/// The listening socket: systemd's, or a new one at the path (a stale socket
/// there is replaced; anything else is refused), mode 0660, group as configured.
fn listen(cfg: &Config) -> Result<(UnixListener, Option<PathBuf>)> {
    let path = match &cfg.listen {
        Listen::Activated => {
            let mut fds = listenfd::ListenFd::from_env();
            let l = fds
                .take_unix_listener(0)
                .map_err(|e| Error::io(Code::IoOpen, "LISTEN_FDS", &e))?
                .ok_or_else(|| {
                    Error::new(
                        Code::Usage,
                        "--systemd: LISTEN_FDS/LISTEN_PID do not hand this process a Unix socket",
                    )
                })?;
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDNAMES");
            return Ok((l, None));
        }
        Listen::Path(p) => p.clone(),
    };
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::new(
                    Code::Busy,
                    format!("{}: another service is listening there", path.display()),
                ));
            }
            std::fs::remove_file(&path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
        }
        Ok(_) => {
            return Err(Error::new(
                Code::Exists,
                format!("{}: exists and is not a socket; not replacing it", path.display()),
            ))
        }
        Err(_) => {}
    }
    let gid = cfg.socket_group.as_deref().map(group_id).transpose()?;
    // Bind under a umask that leaves the socket 0660 from the start, so there is
    // no moment when others could connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o117));
    let bound = UnixListener::bind(&path);
    rustix::process::umask(old);
    let l = bound.map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let owned = || -> Result<()> {
        if let Some(gid) = gid {
            rustix::fs::chown(&path, None, Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(|e| Error::io(Code::IoOpen, path.display(), &std::io::Error::from(e)))?;
        }
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o660))
            .map_err(|e| Error::io(Code::IoOpen, path.display(), &std::io::Error::from(e)))
    };
    if let Err(e) = owned() {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((l, Some(path)))
}

fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(g)
        .ok()
        .flatten()
        .map(|gr| gr.gid.as_raw())
        .ok_or_else(|| Error::new(Code::Usage, format!("--socket-group: no group named {g:?}")))
}

/// Runs the service until SIGTERM or SIGINT, then drains and returns.
pub fn run(cfg: Config) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::io(Code::Internal, "signal handler", &e))?;
    }
    let server = Server::bind(cfg)?;
    match server.socket_path() {
        Some(p) => log(&format!("listening on {}", p.display())),
        None => log("listening on the socket systemd passed"),
    }
    server.serve(&stop)
}
