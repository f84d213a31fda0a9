//! The migration region served over the socket.
//!
//! A VMM passes its VFIO device fd (SCM_RIGHTS, then `getfd`) and opens it with
//! `device-open-fd`; the service drives the device and hands back, with the reply
//! to `device-set-state`, the data fd of the new stream (SCM_RIGHTS again). The
//! VMM reads the signed envelope from it on a source, or writes one into it on a
//! destination, exactly as it would use the kernel's data fd; vendor parsers run
//! in the service, never in the VMM. The arcs are the kernel's
//! (`include/uapi/linux/vfio.h`, `enum vfio_device_mig_state`); see
//! `spec/live.md` for the region's behaviour and `spec/qmp.md` for the commands.
//!
//! A region belongs to its connection: when the connection ends the region is
//! dropped, which abandons a migration in flight (a source back to RUNNING, a
//! touched destination reset).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::device::{self, DeviceSpec, MigState, VfioFdBackend};
use mdevmig::{RestoreOptions, SaveOptions};

use crate::commands::{args, policy_of, take_fd, take_session};
use crate::conn::{Reply, Session};
use crate::errors::{bad_args, QErr};
use crate::log;

/// An open region and what it was opened on.
pub(crate) struct Slot {
    region: MigrationRegion,
    device: String,
    /// The journal entry while the region is mid-migration on a device that
    /// outlives the service (a `vfio:` or `file:` spec), and its role.
    journal: Option<(crate::journal::Entry, &'static str)>,
    /// The spec and entry name to journal under, for such devices.
    journaled: Option<(String, String)>,
    /// Released after the region (field order: dropped after it).
    _claim: Option<crate::commands::Claim>,
}

const STATES: &[(&str, MigState)] = &[
    ("error", MigState::Error),
    ("stop", MigState::Stop),
    ("running", MigState::Running),
    ("stop-copy", MigState::StopCopy),
    ("resuming", MigState::Resuming),
    ("running-p2p", MigState::RunningP2p),
    ("pre-copy", MigState::PreCopy),
    ("pre-copy-p2p", MigState::PreCopyP2p),
];

fn state_name(s: MigState) -> &'static str {
    STATES.iter().find(|(_, m)| *m == s).map_or("error", |(n, _)| n)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Common {
    id: String,
    /// Destination: a nonce this service issued with session-new.
    #[serde(default)]
    session: Option<String>,
    /// Source: the destination's nonce the stream is bound to.
    #[serde(default)]
    bind_session: Option<String>,
    #[serde(default)]
    policy: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenArgs {
    device: String,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenFdArgs {
    fdname: String,
    sysfs: String,
    #[serde(flatten)]
    common: Common,
}

fn config(
    s: &Session<'_>,
    c: &Common,
    versions: Option<mdevmig_plugin_api::VersionWindow>,
) -> Result<RegionConfig, QErr> {
    let policy = policy_of(c.policy.clone())?;
    let bind = c
        .bind_session
        .as_deref()
        .map(mdevmig::auth::parse_nonce)
        .transpose()
        .map_err(|e| bad_args(e.message))?;
    // Last: a refused command leaves the nonce usable.
    let session = c.session.as_deref().map(|n| take_session(s, n)).transpose()?;
    Ok(RegionConfig {
        registry: Arc::clone(&s.shared.registry),
        key: s.shared.key.clone(),
        trust: s.shared.trust.clone(),
        save: SaveOptions {
            session: bind,
            produce_window: versions,
            ..Default::default()
        },
        restore: RestoreOptions {
            session,
            policy,
            load_window: versions,
            validation: s.shared.cfg.validation.clone(),
            ..Default::default()
        },
    })
}

fn admit(s: &Session<'_>, id: &str) -> Result<(), QErr> {
    if s.shared.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(QErr::new(
            "qmp.shutting_down",
            "the service is shutting down and opens no new regions",
        ));
    }
    if s.regions.contains_key(id) {
        return Err(bad_args(format!(
            "a region named {id:?} is open on this connection"
        )));
    }
    if id.is_empty() || id.len() > 64 {
        return Err(bad_args("id must be 1 to 64 characters"));
    }
    let max = s.shared.cfg.limits.max_regions_per_client;
    if s.regions.len() >= max {
        return Err(QErr::new(
            "qmp.too_many",
            format!("this connection has {max} regions open"),
        ));
    }
    if s.shared.key.is_none() && s.shared.trust.is_none() {
        return Err(QErr::new(
            "qmp.no_key",
            "the service has neither a signing key (--key) nor a trust store (--trust)",
        ));
    }
    Ok(())
}

fn opened(
    s: &mut Session<'_>,
    id: String,
    region: MigrationRegion,
    device: String,
    claim: crate::commands::Claim,
) -> Result<Reply, QErr> {
    let flags = device::flag_names(region.migration_flags());
    let state = state_name(region.state());
    log(&format!("{}: region {id:?} open on {device}", s.who()));
    s.regions.insert(
        id.clone(),
        Slot {
            region,
            journaled: crate::commands::device_key_of(&device)
                .map(|_| (device.clone(), format!("region{}", s.shared.next_id()))),
            device,
            journal: None,
            _claim: Some(claim),
        },
    );
    Ok(Reply::of(
        json!({"id": id, "migration-flags": flags, "state": state}),
    ))
}

/// `device-open`: a region over a device spec (sim:, file:, vfio:).
pub(crate) fn open(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: OpenArgs = args(a)?;
    admit(s, &a.common.id)?;
    if s.shared.named.contains_key(&a.device) {
        return Err(bad_args(format!(
            "{:?} is a configured device, which jobs use; open a device spec as a region",
            a.device
        )));
    }
    let spec: DeviceSpec = a.device.parse()?;
    crate::commands::confine(s.shared, &spec)?;
    let claim = crate::commands::Claim::take(s.shared, &spec)?;
    let (dev, host) = device::open(&spec, &s.shared.registry)?;
    // Last: a region refused for any other reason leaves the nonce usable.
    let cfg = config(s, &a.common, host.versions)?;
    opened(s, a.common.id, MigrationRegion::new(dev, cfg), a.device, claim)
}

/// `device-open-fd`: a region over the VFIO device fd the client passed.
pub(crate) fn open_fd(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: OpenFdArgs = args(a)?;
    admit(s, &a.common.id)?;
    let claim = crate::commands::Claim::take(
        s.shared,
        &DeviceSpec::Vfio {
            path: a.sysfs.clone(),
        },
    )?;
    let fd: OwnedFd = take_fd(s, &a.fdname)?;
    let dev = VfioFdBackend::new(fd, &a.sysfs, &s.shared.registry)?;
    let cfg = config(s, &a.common, None)?;
    opened(
        s,
        a.common.id,
        MigrationRegion::new(Box::new(dev), cfg),
        format!("vfio-fd:{}", a.sysfs),
        claim,
    )
}

fn slot<'s>(s: &'s mut Session<'_>, id: &str) -> Result<&'s mut Slot, QErr> {
    s.regions.get_mut(id).ok_or_else(|| {
        QErr::new(
            "qmp.no_such_device",
            format!("no region named {id:?} is open on this connection"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArg {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateArgs {
    id: String,
    state: String,
}

/// `device-set-state`: one arc (or the kernel's path of arcs); a new stream's
/// data fd comes back with the reply.
pub(crate) fn set_state(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: StateArgs = args(a)?;
    let target = STATES
        .iter()
        .find(|(n, _)| *n == a.state)
        .map(|(_, m)| *m)
        .filter(|m| *m != MigState::Error)
        .ok_or_else(|| bad_args(format!("state {:?} is not one of stop, running, stop-copy, resuming, running-p2p, pre-copy, pre-copy-p2p", a.state)))?;
    let s_state_dir = s.shared.cfg.state_dir.clone();
    let slot = slot(s, &a.id)?;
    let before = slot.region.state();
    let moved = slot.region.set_state(target);
    track(slot, &s_state_dir);
    moved?;
    let fd = match slot.region.data_fd() {
        // A stream starts only from a state without one, as the kernel's arcs do.
        Some(fd) if target.is_streaming() && !before.is_streaming() => Some(
            fd.try_clone_to_owned()
                .map_err(|e| mdevmig::Error::io(mdevmig::Code::IoOpen, "data fd", &e))?,
        ),
        _ => None,
    };
    Ok(Reply {
        value: json!({"state": state_name(slot.region.state()), "data-fd": fd.is_some()}),
        fd,
    })
}

/// Keeps the journal in step with the region: an entry while the device is
/// streaming (or failed mid-stream), so a service killed then leaves the next
/// start a device to put back (`journal.rs`); none once it is back at rest.
fn track(slot: &mut Slot, state_dir: &std::path::Path) {
    let Some((spec, name)) = &slot.journaled else {
        return;
    };
    let role = match slot.region.state() {
        MigState::Resuming => Some("restore"),
        MigState::PreCopy | MigState::PreCopyP2p | MigState::StopCopy => Some("save"),
        MigState::Error => slot.journal.as_ref().map(|(_, r)| *r),
        _ => None,
    };
    match role {
        Some(r) if slot.journal.as_ref().map(|(_, had)| *had) != Some(r) => {
            slot.journal = crate::journal::begin(state_dir, name, r, spec).map(|e| (e, r));
        }
        Some(_) => {}
        None => slot.journal = None,
    }
}

/// `device-query`: state, flags, the arcs taken, and the state digest where the
/// backend has one.
pub(crate) fn query(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: IdArg = args(a)?;
    let slot = slot(s, &a.id)?;
    let arcs: Vec<Value> = slot
        .region
        .history()
        .iter()
        .map(|(f, t)| json!([state_name(*f), state_name(*t)]))
        .collect();
    let state = state_name(slot.region.state());
    let flags = device::flag_names(slot.region.migration_flags());
    let digest = slot
        .region
        .device()
        .and_then(|d| d.state_digest())
        .map(|d: [u8; 32]| mdevmig::auth::hex(&d));
    Ok(Reply::of(json!({
        "id": a.id, "device": slot.device, "state": state, "migration-flags": flags,
        "arcs": arcs, "state-digest": digest,
    })))
}

/// `device-precopy-info`: VFIO_MIG_GET_PRECOPY_INFO, in envelope bytes.
pub(crate) fn precopy_info(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: IdArg = args(a)?;
    let p = slot(s, &a.id)?.region.precopy_info()?;
    Ok(Reply::of(
        json!({"initial-bytes": p.initial_bytes, "dirty-bytes": p.dirty_bytes}),
    ))
}

/// `device-data-size`: VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, in envelope bytes.
pub(crate) fn data_size(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: IdArg = args(a)?;
    let n = slot(s, &a.id)?.region.data_size()?;
    Ok(Reply::of(json!({"stop-copy-bytes": n})))
}

/// `device-reset`: VFIO_DEVICE_RESET, the way out of ERROR.
pub(crate) fn reset(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: IdArg = args(a)?;
    let slot = slot(s, &a.id)?;
    slot.region.reset()?;
    Ok(Reply::of(json!({"state": state_name(slot.region.state())})))
}

/// `device-close`: drops the region (a migration in flight is abandoned).
pub(crate) fn close(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: IdArg = args(a)?;
    let slot = s.regions.remove(&a.id).ok_or_else(|| {
        QErr::new(
            "qmp.no_such_device",
            format!("no region named {:?} is open on this connection", a.id),
        )
    })?;
    let state = state_name(slot.region.state());
    drop(slot);
    log(&format!("{}: region {:?} closed in {state}", s.who(), a.id));
    Ok(Reply::of(json!({})))
}
