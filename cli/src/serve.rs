//! `mdevmig serve`: the command line of the QMP service (`mdevmig-serve`).

use std::path::PathBuf;
use std::time::Duration;

use mdevmig::{Code, Error, Result};
use mdevmig_serve::{Config, Limits, Listen};

/// `mdevmig serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The Unix socket to create (mode 0660; a stale socket there is replaced).
    /// When systemd passed this process a socket (LISTEN_FDS, LISTEN_PID), that
    /// one is served and PATH only names it.
    #[arg(long, conflicts_with = "systemd")]
    socket: Option<PathBuf>,
    /// Take the listening socket from systemd (LISTEN_FDS, LISTEN_PID); an
    /// error if none was passed.
    #[arg(long)]
    systemd: bool,
    /// Group owning the socket (a name or a number).
    #[arg(long = "socket-group")]
    socket_group: Option<String>,
    /// Access policy (JSON: which uids and gids may query and which may migrate).
    /// Without it only root and this service's uid may run commands.
    #[arg(long)]
    access: Option<PathBuf>,
    /// Signing key (PEM) for saves and source regions.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Trust store (a .pub file or a directory of them) for restores.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Do not check the trust store's owner and permissions (loudly).
    #[arg(long = "insecure-trust-store")]
    insecure_trust_store: bool,
    /// A device the service holds: NAME=SPEC (repeatable); commands name it.
    #[arg(long = "device", value_parser = parse_named)]
    devices: Vec<(String, String)>,
    /// State directory: files that save and restore name, and the journal of
    /// migrations in flight (devices a killed run left mid-migration are reset
    /// at start).
    #[arg(long = "state-dir")]
    state_dir: Option<PathBuf>,
    /// Root of sysfs for query-devices.
    #[arg(long = "sysfs-root", default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Validate vendor structures in this process instead of a sandboxed child.
    #[arg(long = "validate-in-process")]
    validate_in_process: bool,
    /// Largest message in bytes.
    #[arg(long = "max-message", default_value_t = 64 << 10)]
    max_message: usize,
    /// Connections at once.
    #[arg(long = "max-clients", default_value_t = 256)]
    max_clients: usize,
    /// Jobs at once over all clients.
    #[arg(long = "max-jobs", default_value_t = 16)]
    max_jobs: usize,
    /// Seconds a connection with nothing in flight may stay silent.
    #[arg(long = "idle-timeout", default_value_t = 600)]
    idle_timeout: u64,
    /// Seconds a started message has to complete.
    #[arg(long = "message-timeout", default_value_t = 10)]
    message_timeout: u64,
    /// Seconds SIGTERM waits for running jobs before cancelling them.
    #[arg(long = "drain-timeout", default_value_t = 30)]
    drain_timeout: u64,
}

fn parse_named(s: &str) -> std::result::Result<(String, String), String> {
    let (name, spec) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=SPEC"))?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok || name.contains(':') {
        return Err(format!(
            "{name:?}: a device name is 1 to 64 characters of [A-Za-z0-9._-]"
        ));
    }
    Ok((name.to_string(), spec.to_string()))
}

/// The default state directory: `$RUNTIME_DIRECTORY` (systemd), else
/// `/run/mdevmig` for root, else `$XDG_RUNTIME_DIR/mdevmig`.
fn default_state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
        return Ok(PathBuf::from(d));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run/mdevmig"));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("mdevmig"))
        .ok_or_else(|| Error::new(Code::Usage, "--state-dir is needed (no XDG_RUNTIME_DIR)"))
}

/// True when systemd (or `systemd-socket-activate`) passed this process its
/// listening socket: `LISTEN_PID` is our pid and `LISTEN_FDS` at least 1
/// (`sd_listen_fds(3)`).
fn activated() -> bool {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    ours && fds >= 1
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(a: ServeArgs) -> Result<()> {
    let listen = match a.socket {
        _ if a.systemd || activated() => Listen::Activated,
        Some(p) => Listen::Path(p),
        None => {
            return Err(Error::new(
                Code::Usage,
                "give --socket PATH, or --systemd (or run under socket activation)",
            ))
        }
    };
    let state_dir = match a.state_dir {
        Some(d) => d,
        None => default_state_dir()?,
    };
    let mut cfg = Config::new(listen, state_dir);
    cfg.socket_group = a.socket_group;
    cfg.access = a.access;
    cfg.key = a.key;
    cfg.trust = a.trust;
    cfg.insecure_trust_store = a.insecure_trust_store;
    cfg.devices = a.devices;
    cfg.sysfs_root = a.sysfs_root;
    if a.validate_in_process {
        cfg.validation = mdevmig::sandbox::Validation::InProcess;
    }
    cfg.limits = Limits {
        max_message: a.max_message.max(256),
        max_clients: a.max_clients.max(1),
        max_jobs: a.max_jobs.max(1),
        idle: Duration::from_secs(a.idle_timeout.max(1)),
        message: Duration::from_secs(a.message_timeout.max(1)),
        drain: Duration::from_secs(a.drain_timeout),
        ..Limits::default()
    };
    mdevmig_serve::run(cfg)
}
