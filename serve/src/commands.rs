//! The command table: names, who may run them, and the read-only commands.
//!
//! Arguments are JSON objects checked by serde with unknown members refused;
//! names follow the CLI's (`device`, `source`, `policy`) in QMP's kebab-case.
//! Results of `describe`, `check` and `labels` have exactly the JSON shape of
//! the CLI's `--json` output.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use mdevmig::compat::{self, Descriptor};
use mdevmig::device::{self, DeviceSpec, MigrationDevice};

use crate::conn::{allowed, Reply, Session};
use crate::errors::{bad_args, QErr};

/// Who may run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Anyone connected (negotiation, introspection).
    Always,
    /// Peers with the query right.
    Query,
    /// Peers with the migrate right.
    Migrate,
}

type Handler = fn(&mut Session<'_>, Map<String, Value>) -> Result<Reply, QErr>;

/// Every command: name, class, handler.
pub(crate) const COMMANDS: &[(&str, Class, Handler)] = &[
    ("qmp_capabilities", Class::Always, capabilities),
    ("query-commands", Class::Always, query_commands),
    ("query-version", Class::Always, query_version),
    ("query-devices", Class::Query, query_devices),
    ("describe", Class::Query, describe),
    ("check", Class::Query, check),
    ("labels", Class::Query, labels),
    ("query-jobs", Class::Query, crate::jobs::query_jobs),
    ("session-new", Class::Migrate, session_new),
    ("getfd", Class::Migrate, getfd),
    ("closefd", Class::Migrate, closefd),
    ("save", Class::Migrate, crate::jobs::save),
    ("restore", Class::Migrate, crate::jobs::restore),
    ("job-cancel", Class::Migrate, crate::jobs::cancel),
    ("job-dismiss", Class::Migrate, crate::jobs::dismiss),
    ("device-open", Class::Migrate, crate::regions::open),
    ("device-open-fd", Class::Migrate, crate::regions::open_fd),
    ("device-set-state", Class::Migrate, crate::regions::set_state),
    ("device-query", Class::Migrate, crate::regions::query),
    (
        "device-precopy-info",
        Class::Migrate,
        crate::regions::precopy_info,
    ),
    ("device-data-size", Class::Migrate, crate::regions::data_size),
    ("device-reset", Class::Migrate, crate::regions::reset),
    ("device-close", Class::Migrate, crate::regions::close),
];

/// Runs one command for a session.
pub(crate) fn run(s: &mut Session<'_>, name: &str, args: Map<String, Value>) -> Result<Reply, QErr> {
    let Some((_, class, handler)) = COMMANDS.iter().find(|(n, _, _)| *n == name) else {
        return Err(QErr {
            class: "CommandNotFound",
            code: "qmp.unknown_command".into(),
            message: format!("The command {name} has not been found"),
        });
    };
    let negotiated = s.peer.negotiated.load(std::sync::atomic::Ordering::Acquire);
    if !negotiated && name != "qmp_capabilities" && name != "query-commands" {
        return Err(QErr {
            class: "CommandNotFound",
            code: "qmp.no_capabilities".into(),
            message: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
        });
    }
    if !allowed(s.peer.rights, *class) {
        let need = if *class == Class::Query {
            "query"
        } else {
            "migrate"
        };
        return Err(QErr::new(
            "qmp.access_denied",
            format!(
                "uid {} gid {} may not run {name} (it needs the {need} right)",
                s.uid, s.gid
            ),
        ));
    }
    handler(s, args)
}

/// Arguments as a typed struct; unknown or missing members are `qmp.bad_arguments`.
pub(crate) fn args<T: DeserializeOwned>(a: Map<String, Value>) -> Result<T, QErr> {
    serde_json::from_value(Value::Object(a)).map_err(|e| bad_args(format!("invalid arguments: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapArgs {
    #[serde(default)]
    enable: Vec<String>,
}

fn capabilities(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: CapArgs = args(a)?;
    if let Some(c) = a.enable.first() {
        return Err(QErr::new(
            "qmp.bad_arguments",
            format!("Capability '{c}' not available"),
        ));
    }
    if s.peer.negotiated.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Err(QErr {
            class: "CommandNotFound",
            code: "qmp.already_negotiated".into(),
            message: "Capabilities negotiation is already complete, command ignored".into(),
        });
    }
    Ok(Reply::of(json!({})))
}

pub(crate) fn no_args(a: Map<String, Value>) -> Result<(), QErr> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct None {}
    args::<None>(a).map(|_| ())
}

fn query_commands(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    no_args(a)?;
    let list: Vec<Value> = COMMANDS
        .iter()
        .filter(|(_, c, _)| allowed(s.peer.rights, *c))
        .map(|(n, _, _)| json!({"name": n}))
        .collect();
    Ok(Reply::of(Value::Array(list)))
}

fn query_version(_: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    no_args(a)?;
    Ok(Reply::of(crate::conn::version()))
}

fn query_devices(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    no_args(a)?;
    let mut list = crate::sysfs::discover(&s.shared.cfg.sysfs_root);
    for (name, n) in &s.shared.named {
        let busy = n.dev.lock().map(|d| d.is_none()).unwrap_or(true);
        list.push(json!({"name": name, "kind": "configured", "spec": n.spec, "busy": busy}));
    }
    Ok(Reply::of(Value::Array(list)))
}

/// A device an argument names: a configured device (taken while in use, put
/// back when the lease drops) or a spec opened for this use.
pub(crate) enum Lease {
    Named(
        std::sync::Arc<crate::Shared>,
        String,
        Option<Box<dyn MigrationDevice>>,
    ),
    Opened(
        Box<dyn MigrationDevice>,
        Option<mdevmig_plugin_api::VersionWindow>,
        String,
        // Held for its Drop: the device is released after it is closed.
        #[expect(dead_code)] Claim,
    ),
}

impl Lease {
    pub fn dev(&mut self) -> Result<&mut dyn MigrationDevice, QErr> {
        match self {
            Lease::Named(_, _, Some(d)) => Ok(&mut **d),
            Lease::Named(_, name, None) => {
                Err(QErr::new("qmp.device_busy", format!("device {name:?} is in use")))
            }
            Lease::Opened(d, _, _, _) => Ok(&mut **d),
        }
    }

    /// The device spec (a configured device's, or the one opened).
    pub fn spec(&self) -> String {
        match self {
            Lease::Named(shared, name, _) => {
                shared.named.get(name).map(|n| n.spec.clone()).unwrap_or_default()
            }
            Lease::Opened(_, _, spec, _) => spec.clone(),
        }
    }

    pub fn versions(&self) -> Option<mdevmig_plugin_api::VersionWindow> {
        match self {
            Lease::Named(shared, name, _) => shared.named.get(name).and_then(|n| n.versions),
            Lease::Opened(_, v, _, _) => *v,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::Named(shared, name, d) = self {
            if let (Some(n), Some(dev)) = (shared.named.get(name.as_str()), d.take()) {
                if let Ok(mut slot) = n.dev.lock() {
                    *slot = Some(dev);
                }
            }
        }
    }
}

/// What identifies a device whose state outlives the service: a `file:`
/// image's canonical path, a `vfio:` device's sysfs path or uuid. Simulated
/// devices are opened afresh for every use and need none.
pub(crate) fn device_key(spec: &DeviceSpec) -> Option<String> {
    match spec {
        DeviceSpec::File { path, .. } => {
            let dir = path.parent().and_then(|p| std::fs::canonicalize(p).ok());
            let name = path.file_name()?;
            Some(format!(
                "file:{}",
                dir.map_or_else(|| path.clone(), |d| d.join(name)).display()
            ))
        }
        DeviceSpec::Vfio { path } => {
            let uuid = path.rsplit('/').next().unwrap_or(path);
            Some(format!("vfio:{uuid}"))
        }
        DeviceSpec::Sim { .. } => None,
    }
}

/// [`device_key`] of a spec string (None for a simulated or unparsable one).
pub(crate) fn device_key_of(spec: &str) -> Option<String> {
    spec.parse::<DeviceSpec>().ok().as_ref().and_then(device_key)
}

/// A device in use by a job or region; released when dropped.
pub(crate) struct Claim {
    shared: std::sync::Arc<crate::Shared>,
    key: Option<String>,
}

impl Claim {
    /// Claims the device `spec` names, or refuses with `qmp.device_busy`.
    pub fn take(shared: &std::sync::Arc<crate::Shared>, spec: &DeviceSpec) -> Result<Claim, QErr> {
        let key = device_key(spec);
        if let Some(k) = &key {
            let mut used = shared
                .in_use
                .lock()
                .map_err(|_| QErr::new("qmp.device_busy", "device table poisoned"))?;
            if !used.insert(k.clone()) {
                return Err(QErr::new(
                    "qmp.device_busy",
                    format!("{k} is in use by a job or region"),
                ));
            }
        }
        Ok(Claim {
            shared: std::sync::Arc::clone(shared),
            key,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let (Some(k), Ok(mut used)) = (&self.key, self.shared.in_use.lock()) {
            used.remove(k);
        }
    }
}

/// Takes the device `name` names: a configured device, or a spec to open.
pub(crate) fn lease(
    shared: &std::sync::Arc<crate::Shared>,
    name: &str,
    registry: &mdevmig::Registry,
) -> Result<Lease, QErr> {
    if let Some(n) = shared.named.get(name) {
        let dev = n.dev.lock().ok().and_then(|mut d| d.take());
        return match dev {
            Some(d) => Ok(Lease::Named(
                std::sync::Arc::clone(shared),
                name.to_string(),
                Some(d),
            )),
            None => Err(QErr::new(
                "qmp.device_busy",
                format!("device {name:?} is in use by a job or region"),
            )),
        };
    }
    let spec: DeviceSpec = name.parse()?;
    confine(shared, &spec)?;
    let claim = Claim::take(shared, &spec)?;
    let (dev, host) = device::open(&spec, registry)?;
    Ok(Lease::Opened(dev, host.versions, name.to_string(), claim))
}

/// A client's `file:` device must be an image in the state directory's
/// `files/`: the service may run as root, and a client must not make it read or
/// write any other path. Devices configured with `--device` are the operator's
/// choice and are not confined.
pub(crate) fn confine(shared: &crate::Shared, spec: &DeviceSpec) -> Result<(), QErr> {
    let DeviceSpec::File { path, .. } = spec else {
        return Ok(());
    };
    let files = shared.cfg.state_dir.join("files");
    let inside = path
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .zip(std::fs::canonicalize(&files).ok())
        .is_some_and(|(p, f)| p == f);
    let plain = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    if inside && plain {
        return Ok(());
    }
    Err(QErr::new(
        "qmp.bad_path",
        format!(
            "{}: a client's file: device must be a plain name in {}",
            path.display(),
            files.display()
        ),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DescribeArgs {
    device: String,
    #[serde(default)]
    allow_opaque: Vec<String>,
}

fn describe(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: DescribeArgs = args(a)?;
    if let (Some(n), true) = (s.shared.named.get(&a.device), a.allow_opaque.is_empty()) {
        return Ok(Reply::of(cli_shape(to_json(&n.descriptor)?)));
    }
    let registry = mdevmig::Registry::builtin().allow_opaque(&a.allow_opaque);
    let mut l = lease(s.shared, &a.device, &registry)?;
    let versions = l.versions();
    let d = compat::describe(l.dev()?, &registry, versions)?;
    Ok(Reply::of(cli_shape(to_json(&d)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckArgs {
    device: String,
    source: Value,
    #[serde(default)]
    policy: Option<Value>,
}

fn check(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: CheckArgs = args(a)?;
    let policy = policy_of(a.policy)?;
    // The descriptor as an object, or as the text `describe --json` printed.
    let source = match &a.source {
        Value::Object(_) => Descriptor::parse(&a.source.to_string())?,
        Value::String(text) => Descriptor::parse(text)?,
        _ => return Err(bad_args("source must be a descriptor object (or its JSON text)")),
    };
    let registry = if policy.allow_opaque.is_empty() {
        std::sync::Arc::clone(&s.shared.registry)
    } else {
        std::sync::Arc::new(mdevmig::Registry::builtin().allow_opaque(&policy.allow_opaque))
    };
    let (info, versions) = match s.shared.named.get(&a.device) {
        Some(n) => (n.info.clone(), n.versions),
        None => {
            let mut l = lease(s.shared, &a.device, &registry)?;
            (l.dev()?.info().clone(), l.versions())
        }
    };
    let load = registry.load_window(&info, versions);
    let r = compat::check(&source, &info, &registry, load, &policy);
    Ok(Reply::of(cli_shape(to_json(&r)?)))
}

/// A policy argument: an object in `spec/compat.md`'s policy shape.
pub(crate) fn policy_of(v: Option<Value>) -> Result<compat::Policy, QErr> {
    match v {
        None => Ok(compat::Policy::default()),
        Some(v @ Value::Object(_)) => Ok(compat::parse_policy(&v.to_string())?),
        Some(Value::String(text)) => Ok(compat::parse_policy(&text)?),
        Some(_) => Err(bad_args("policy must be an object (or its JSON text)")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceArg {
    device: String,
}

fn labels(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: DeviceArg = args(a)?;
    if let Some(n) = s.shared.named.get(&a.device) {
        return Ok(Reply::of(cli_shape(to_json(&compat::labels(&n.descriptor))?)));
    }
    let registry = std::sync::Arc::clone(&s.shared.registry);
    let mut l = lease(s.shared, &a.device, &registry)?;
    let versions = l.versions();
    let d = compat::describe(l.dev()?, &registry, versions)?;
    Ok(Reply::of(cli_shape(to_json(&compat::labels(&d))?)))
}

/// The CLI's `--json` object: the value with `"ok": true`, which the CLI adds
/// to every successful command's output (an incompatible verdict is still a
/// successful `check`).
fn cli_shape(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("ok".into(), Value::Bool(true));
    }
    v
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, QErr> {
    serde_json::to_value(v)
        .map_err(|e| QErr::from(mdevmig::Error::new(mdevmig::Code::Internal, e.to_string())))
}

fn session_new(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    no_args(a)?;
    let nonce = mdevmig::auth::new_session_nonce();
    let limits = &s.shared.cfg.limits;
    let mut sessions = s
        .shared
        .sessions
        .lock()
        .map_err(|_| QErr::new("qmp.too_many", "session table poisoned"))?;
    sessions.retain(|_, t| t.elapsed() < limits.session_ttl);
    if sessions.len() >= limits.max_sessions {
        return Err(QErr::new(
            "qmp.too_many",
            format!("{} session nonces are outstanding", limits.max_sessions),
        ));
    }
    sessions.insert(nonce, std::time::Instant::now());
    Ok(Reply::of(
        json!({"nonce": mdevmig::auth::hex(&nonce), "expires-in": limits.session_ttl.as_secs()}),
    ))
}

/// Consumes a nonce this service issued (one use each).
pub(crate) fn take_session(s: &Session<'_>, hex: &str) -> Result<[u8; 32], QErr> {
    let nonce = mdevmig::auth::parse_nonce(hex).map_err(|e| bad_args(e.message))?;
    let ttl = s.shared.cfg.limits.session_ttl;
    let mut sessions = s
        .shared
        .sessions
        .lock()
        .map_err(|_| QErr::new("qmp.bad_session", "session table poisoned"))?;
    match sessions.remove(&nonce) {
        Some(t) if t.elapsed() < ttl => Ok(nonce),
        _ => Err(QErr::new(
            "qmp.bad_session",
            "the session nonce was not issued by this service with session-new, expired, or was used already",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FdName {
    fdname: String,
}

fn getfd(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: FdName = args(a)?;
    if a.fdname.is_empty() || a.fdname.len() > 64 || a.fdname.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad_args(
            "fdname must be 1 to 64 characters and not start with a digit",
        ));
    }
    let fd = s
        .received
        .pop_back()
        .ok_or_else(|| QErr::new("qmp.no_such_fd", "No file descriptor supplied via SCM_RIGHTS"))?;
    // As QEMU's getfd: the most recent fd is taken; older unclaimed ones are closed.
    s.received.clear();
    s.fds.insert(a.fdname, fd);
    Ok(Reply::of(json!({})))
}

fn closefd(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: FdName = args(a)?;
    s.fds
        .remove(&a.fdname)
        .map(|_| Reply::of(json!({})))
        .ok_or_else(|| {
            QErr::new(
                "qmp.no_such_fd",
                format!("File descriptor named '{}' not found", a.fdname),
            )
        })
}

/// Takes a named fd out of the session (the command now owns it).
pub(crate) fn take_fd(s: &mut Session<'_>, name: &str) -> Result<std::os::fd::OwnedFd, QErr> {
    s.fds.remove(name).ok_or_else(|| {
        QErr::new(
            "qmp.no_such_fd",
            format!("File descriptor named '{name}' not found"),
        )
    })
}
