//! `mdevmig live`: a live migration between two devices in this process, through
//! two migration regions driven the way QEMU's hw/vfio/migration.c drives kernel
//! devices.
//!
//! ```text
//!   destination  RUNNING -> RESUMING                      (vfio_load_setup)
//!   source       RUNNING -> PRE_COPY                      (vfio_save_setup)
//!   rounds       read until ENOMSG, write each block to the destination
//!                (vfio_save_iterate); precopy info (vfio_query_precopy_size);
//!                MIG_DATA_SIZE (vfio_state_pending_exact); stop when what is
//!                left fits the downtime budget, or at a limit
//!   source       PRE_COPY -> PRE_COPY_P2P                 (vfio_vmstate_change_prepare, P2P devices)
//!                -> STOP_COPY, read to EOF                (vfio_save_complete_precopy)
//!                -> STOP                                  (vfio_save_cleanup)
//!   destination  RESUMING -> STOP, then RUNNING_P2P -> RUNNING (the VM starts)
//! ```
//!
//! Devices without PRE_COPY go straight to STOP_COPY. With `--abort-after-round
//! N` the migration is abandoned after round N, as QEMU does when a migration is
//! cancelled: the source leaves PRE_COPY for RUNNING and the destination, fed
//! half a stream, is torn down (its restore refuses the truncated stream and
//! resets the device) and reset.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::output::Out;
use mdevmig::auth::{hex, new_session_nonce, SigningKeyPair, TrustStore};
use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::broker::{Converge, RestoreOptions, SaveOptions, StopReason};
use mdevmig::device::{self, DataRead, DeviceSpec, MigState, FLAG_P2P, FLAG_PRE_COPY};
use mdevmig::plugins::Registry;
use mdevmig::sandbox::Validation;
use mdevmig::{Error, Result};

/// Arguments of `live`.
pub struct LiveArgs<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub converge: Converge,
    pub abort_after: Option<u32>,
    pub validation: Validation,
    pub chunk_size: Option<u32>,
}

/// One PRE_COPY round as the VMM saw it.
struct RoundSeen {
    bytes: u64,
    initial_bytes: u64,
    dirty_bytes: u64,
    device_initial_bytes: u64,
    device_dirty_bytes: u64,
    left: u64,
}

/// Moves envelope bytes from `src` to `dst` until the source has no more for
/// now (PRE_COPY) or ends (STOP_COPY). A write the destination refuses is
/// reported with the restore's own reason.
pub fn pump(src: &mut MigrationRegion, dst: &mut MigrationRegion, buf: &mut [u8]) -> Result<(u64, DataRead)> {
    let mut moved = 0u64;
    loop {
        match src.read_data(buf)? {
            DataRead::Data(n) => {
                let data = buf.get(..n).unwrap_or(&[]);
                if let Err(e) = dst.write_data(data) {
                    return Err(dst.set_state(MigState::Stop).err().unwrap_or(e));
                }
                moved = moved.saturating_add(n as u64);
            }
            other => return Ok((moved, other)),
        }
    }
}

fn arcs(r: &MigrationRegion) -> Vec<String> {
    r.history().iter().map(|(a, b)| format!("{a}->{b}")).collect()
}

fn digest_hex(d: Option<[u8; 32]>) -> Value {
    d.map_or(Value::Null, |d| json!(hex(&d)))
}

struct Regions {
    src: MigrationRegion,
    dst: MigrationRegion,
    src_before: Option<[u8; 32]>,
    dst_before: Option<[u8; 32]>,
}

fn open_regions(a: &LiveArgs<'_>) -> Result<Regions> {
    let registry = Arc::new(Registry::builtin());
    let key = Arc::new(SigningKeyPair::generate());
    let mut trust = TrustStore::new();
    trust.add(key.verifying_key(), "live source (ephemeral key)");
    // The destination issues the session nonce the stream is bound to.
    let session = Some(new_session_nonce());
    let cfg = RegionConfig {
        registry: registry.clone(),
        key: Some(key),
        trust: Some(Arc::new(trust)),
        save: SaveOptions {
            session,
            chunk_size: a.chunk_size.unwrap_or_else(mdevmig::codec::default_chunk_size),
            ..Default::default()
        },
        restore: RestoreOptions {
            session,
            validation: a.validation.clone(),
            ..Default::default()
        },
    };
    let (mut s, _) = device::open(&a.from.parse::<DeviceSpec>()?, &registry)?;
    let (mut d, _) = device::open(&a.to.parse::<DeviceSpec>()?, &registry)?;
    let (src_before, dst_before) = (s.state_digest(), d.state_digest());
    Ok(Regions {
        src: MigrationRegion::new(s, cfg.clone()),
        dst: MigrationRegion::new(d, cfg),
        src_before,
        dst_before,
    })
}

/// The PRE_COPY rounds: returns why they ended, or `None` when the migration
/// was abandoned after `abort_after` rounds.
fn precopy_rounds(
    r: &mut Regions,
    a: &LiveArgs<'_>,
    rounds: &mut Vec<RoundSeen>,
    buf: &mut [u8],
) -> Result<Option<StopReason>> {
    let started = Instant::now();
    r.src.set_state(MigState::PreCopy)?;
    loop {
        let (bytes, end) = pump(&mut r.src, &mut r.dst, buf)?;
        if end == DataRead::End {
            return Err(Error::new(
                mdevmig::Code::DeviceData,
                "the source's stream ended in PRE_COPY",
            ));
        }
        let info = r.src.precopy_info()?;
        let dev = r.src.last_device_precopy.unwrap_or_default();
        rounds.push(RoundSeen {
            bytes,
            initial_bytes: info.initial_bytes,
            dirty_bytes: info.dirty_bytes,
            device_initial_bytes: dev.initial_bytes,
            device_dirty_bytes: dev.dirty_bytes,
            left: r.src.data_size()?,
        });
        if a.abort_after == Some(u32::try_from(rounds.len()).unwrap_or(u32::MAX)) {
            return Ok(None);
        }
        let n = u32::try_from(rounds.len()).unwrap_or(u32::MAX);
        let left = rounds.last().map_or(0, |x| x.left);
        if let Some(reason) = a.converge.decide(n, left, started.elapsed()) {
            return Ok(Some(reason));
        }
    }
}

/// Abandons the migration: the source back to RUNNING, the destination torn
/// down. Returns the destination's refusal code.
fn abort(r: &mut Regions) -> Result<String> {
    r.src.set_state(MigState::Running)?;
    let refused = match r.dst.set_state(MigState::Stop) {
        Ok(()) => "none (the destination accepted a partial stream)".to_owned(),
        Err(e) => e.code.as_str().to_owned(),
    };
    r.dst.reset()?;
    Ok(refused)
}

pub fn run(a: LiveArgs<'_>, out: Out) -> Result<()> {
    let mut r = open_regions(&a)?;
    let flags = r.src.migration_flags();
    let mut buf = vec![0u8; 1 << 20];
    let mut rounds = Vec::new();
    let t0 = Instant::now();
    r.dst.set_state(MigState::Resuming)?;
    let reason = if flags & FLAG_PRE_COPY != 0 {
        match precopy_rounds(&mut r, &a, &mut rounds, &mut buf)? {
            Some(reason) => reason,
            None => {
                let refused = abort(&mut r)?;
                return report_abort(&a, &mut r, &rounds, &refused, out);
            }
        }
    } else {
        StopReason::NoPrecopy
    };
    let left_at_stop = rounds.last().map(|x| x.left);
    if flags & FLAG_P2P != 0 && flags & FLAG_PRE_COPY != 0 {
        r.src.set_state(MigState::PreCopyP2p)?;
    }
    let precopy_seconds = t0.elapsed();
    let stop_at = Instant::now();
    r.src.set_state(MigState::StopCopy)?;
    let (downtime_bytes, _) = pump(&mut r.src, &mut r.dst, &mut buf)?;
    r.src.set_state(MigState::Stop)?;
    r.dst.set_state(MigState::Stop)?;
    let downtime = stop_at.elapsed();
    r.dst.set_state(MigState::Running)?;
    let done = Done {
        rounds,
        reason,
        left_at_stop,
        precopy_seconds,
        downtime_bytes,
        downtime,
    };
    report(&a, &r, &done, out);
    Ok(())
}

struct Done {
    rounds: Vec<RoundSeen>,
    reason: StopReason,
    left_at_stop: Option<u64>,
    precopy_seconds: Duration,
    downtime_bytes: u64,
    downtime: Duration,
}

fn rounds_json(rounds: &[RoundSeen]) -> (Value, Value) {
    let bytes: Vec<u64> = rounds.iter().map(|x| x.bytes).collect();
    let info: Vec<Value> = rounds
        .iter()
        .map(|x| {
            json!({
                "initial_bytes": x.initial_bytes, "dirty_bytes": x.dirty_bytes,
                "device_initial_bytes": x.device_initial_bytes,
                "device_dirty_bytes": x.device_dirty_bytes,
                "left": x.left,
            })
        })
        .collect();
    (json!(bytes), json!(info))
}

fn report(a: &LiveArgs<'_>, r: &Regions, d: &Done, out: Out) {
    let src_digest = r.src.last_save.as_ref().and_then(|s| s.state_digest);
    let dst_digest = r.dst.last_restore.as_ref().and_then(|s| s.state_digest);
    let matched = src_digest.zip(dst_digest).map(|(s, t)| s == t);
    let converged = a
        .converge
        .downtime_bytes
        .is_none_or(|b| d.left_at_stop.is_some_and(|l| l <= b));
    let precopy_bytes: u64 = d.rounds.iter().map(|x| x.bytes).sum();
    let save = r.src.last_save.as_ref().map(|s| &s.live);
    let mut t = String::new();
    let list: Vec<String> = d.rounds.iter().map(|x| x.bytes.to_string()).collect();
    let _ = writeln!(t, "live migration {} -> {}", a.from, a.to);
    let _ = writeln!(
        t,
        "pre-copy: {} rounds [{}] bytes in {:.3} s; stopped: {}{}",
        d.rounds.len(),
        list.join(", "),
        d.precopy_seconds.as_secs_f64(),
        d.reason.as_str(),
        if converged { "" } else { " (did not converge)" }
    );
    let _ = writeln!(
        t,
        "downtime: {} bytes, {:.6} s from STOP_COPY to the destination's STOP",
        d.downtime_bytes,
        d.downtime.as_secs_f64()
    );
    let _ = writeln!(t, "source arcs: {}", arcs(&r.src).join(" "));
    let _ = writeln!(t, "destination arcs: {}", arcs(&r.dst).join(" "));
    match matched {
        Some(true) => t.push_str("state digests match\n"),
        Some(false) => t.push_str("STATE DIGESTS DIFFER\n"),
        None => t.push_str("state digests: not available for this backend\n"),
    }
    let (bytes, info) = rounds_json(&d.rounds);
    out.ok(
        &t,
        json!({
            "source": a.from, "destination": a.to,
            "flags": device::flag_names(r.src.migration_flags()),
            "rounds": bytes, "precopy_info": info,
            "precopy_bytes": precopy_bytes,
            "precopy_seconds": d.precopy_seconds.as_secs_f64(),
            "downtime_bytes": d.downtime_bytes,
            "downtime_seconds": d.downtime.as_secs_f64(),
            "save_downtime_seconds": save.map(|s| s.downtime_seconds),
            "downtime_budget": a.converge.downtime_bytes,
            "left_at_stop": d.left_at_stop,
            "converged": converged,
            "stop_reason": d.reason.as_str(),
            "aborted": false,
            "source_arcs": arcs(&r.src), "destination_arcs": arcs(&r.dst),
            "source_digest": digest_hex(src_digest),
            "destination_digest": digest_hex(dst_digest),
            "match": matched,
        }),
    );
}

fn report_abort(
    a: &LiveArgs<'_>,
    r: &mut Regions,
    rounds: &[RoundSeen],
    refused: &str,
    out: Out,
) -> Result<()> {
    let src_after = r.src.device().and_then(|d| d.state_digest());
    let dst_after = r.dst.device().and_then(|d| d.state_digest());
    let src_state = r.src.device().map(|d| d.state()).transpose()?;
    let dst_state = r.dst.device().map(|d| d.state()).transpose()?;
    let (bytes, info) = rounds_json(rounds);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "live migration {} -> {} abandoned after {} round(s)",
        a.from,
        a.to,
        rounds.len()
    );
    let _ = writeln!(
        t,
        "source: {} (state {}); destination refused the partial stream: {refused}; reset, {}",
        src_state.map_or("?".into(), |s| s.to_string()),
        if r.src_before.is_some() && r.src_before == src_after {
            "unchanged"
        } else {
            "see digests"
        },
        dst_state.map_or("?".into(), |s| s.to_string()),
    );
    out.ok(
        &t,
        json!({
            "source": a.from, "destination": a.to,
            "aborted": true, "rounds": bytes, "precopy_info": info,
            "source_state": src_state.map(|s| s.to_string()),
            "destination_state": dst_state.map(|s| s.to_string()),
            "destination_refused": refused,
            "source_arcs": arcs(&r.src), "destination_arcs": arcs(&r.dst),
            "source_digest_before": digest_hex(r.src_before),
            "source_digest_after": digest_hex(src_after),
            "destination_digest_before": digest_hex(r.dst_before),
            "destination_digest_after": digest_hex(dst_after),
        }),
    );
    Ok(())
}
