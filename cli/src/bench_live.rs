//! `mdevmig bench`'s live-migration part: what PRE_COPY saves in downtime, and
//! what the envelope costs in PRE_COPY rounds, each printed beside its baseline.
//!
//! The source is a simulated Xe VF (`sim:xe/<type>,dirty-rate=R`) whose guest
//! dirties `R` bytes of VRAM a second while the device runs; the device re-sends
//! dirtied pages in PRE_COPY rounds, each precopy-info query preparing the next
//! round (as mlx5 does). Every migration is driven as QEMU's hw/vfio/migration.c
//! drives kernel devices (the loop of `mdevmig live`): the destination to
//! RESUMING; the source to PRE_COPY; per round, read until "no more now"
//! (ENOMSG), query precopy info, query MIG_DATA_SIZE, and stop once that fits
//! the downtime budget (or at a limit); PRE_COPY_P2P for P2P devices; STOP_COPY,
//! read to the end; the source and the destination to STOP.
//!
//! * Downtime, the bytes and time from the source's STOP_COPY to the
//!   destination's STOP: PRE_COPY through two migration regions, against the
//!   baseline of the same devices with STOP_COPY only (the source region moved
//!   to STOP_COPY from RUNNING and read to its end); the two PRE_COPY
//!   migrations of the envelope part below are printed beside them as references.
//! * Envelope cost, over the whole migration: the same loop over bare simulated
//!   devices carrying raw bytes (source `read_data` into a pipe, a thread
//!   writing them into the destination's `write_data`) as the baseline, against
//!   the regions (signed envelope, verified and validated at the destination by
//!   the sandboxed child, as `mdevmig live` does), and for reference the regions
//!   with the validator in process. Rounds follow the guest's dirtying and each
//!   path's speed, so each run carries its own number of device bytes: bytes are
//!   compared within a run (envelope bytes against the device bytes they carry),
//!   time as device bytes per second.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use mdevmig::auth::{new_session_nonce, SigningKeyPair, TrustStore};
use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::broker::{Converge, RestoreOptions, SaveOptions, StopReason};
use mdevmig::device::{self, DataRead, DeviceSpec, MigState, MigrationDevice, FLAG_P2P, FLAG_PRE_COPY};
use mdevmig::plugins::Registry;
use mdevmig::sandbox::Validation;
use mdevmig::{Code, Error, Result};

/// What to migrate, and the VMM's downtime budget.
pub struct LiveBench<'a> {
    /// Xe VF type (`xe-vf-1g`).
    pub device_type: &'a str,
    /// Bytes per second the source's guest dirties while the device runs.
    pub dirty_rate: u64,
    /// Stop the source once what STOP_COPY would still move is at most this.
    pub downtime_bytes: u64,
}

/// The live part's report: text for people and the `live` object of `--json`.
pub struct LiveFigures {
    pub text: String,
    pub json: Value,
}

/// The VMM's read size, as `mdevmig live`.
const BUF_LEN: usize = 1 << 20;

/// The pipe the raw baseline carries its bytes in: as large as the region's.
const PIPE_SIZE: i32 = 2 << 20;

/// One migration as the benchmark saw it.
#[derive(Clone, Debug, Default)]
struct Migration {
    /// Bytes the VMM moved in each PRE_COPY round (envelope bytes through the
    /// regions, raw bytes on bare devices).
    rounds: Vec<u64>,
    /// Device bytes read in each PRE_COPY round (the regions' save counts them).
    device_rounds: Vec<u64>,
    stop_reason: &'static str,
    /// What STOP_COPY would still move fit the budget when the source stopped.
    converged: bool,
    /// Bytes moved from the source's STOP_COPY to the end of its stream.
    downtime_bytes: u64,
    /// Seconds from the source's STOP_COPY to the destination's STOP.
    downtime: f64,
    /// Seconds from the source's STOP_COPY to the end of its stream (the VMM
    /// read its last byte); the rest of the downtime is the destination's.
    source_end: f64,
    /// Bytes moved in all.
    bytes: u64,
    /// Device bytes they carried.
    device_bytes: u64,
    /// Seconds from the destination's RESUMING to its STOP.
    seconds: f64,
}

impl Migration {
    fn gbs(&self) -> f64 {
        self.device_bytes as f64 / self.seconds / 1e9
    }

    /// Envelope bytes over the device bytes they carried, in percent.
    fn overhead_pct(&self) -> f64 {
        (self.bytes as f64 / self.device_bytes as f64 - 1.0) * 100.0
    }

    fn json(&self) -> Value {
        json!({
            "rounds": self.rounds, "device_rounds": self.device_rounds,
            "stop_reason": self.stop_reason, "converged": self.converged,
            "downtime_bytes": self.downtime_bytes, "downtime_seconds": self.downtime,
            "source_end_seconds": self.source_end,
            "bytes": self.bytes, "device_bytes": self.device_bytes,
            "seconds": self.seconds, "gbs": self.gbs(),
        })
    }
}

/// Every round's run of one measurement.
#[derive(Default)]
struct Series(Vec<Migration>);

impl Series {
    fn median(&self, f: impl Fn(&Migration) -> f64) -> f64 {
        super::bench::median(self.0.iter().map(f).collect())
    }

    /// The run whose downtime is the median: its rounds are the ones printed.
    fn median_run(&self) -> Migration {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.downtime.total_cmp(&b.downtime));
        v.get(v.len() / 2).cloned().unwrap_or_default()
    }

    /// Every run's value of `f`, formatted, in run order.
    fn listed(&self, f: impl Fn(&Migration) -> String) -> String {
        self.0.iter().map(f).collect::<Vec<_>>().join(" ")
    }

    fn json(&self) -> Value {
        let m = self.median_run();
        json!({
            "rounds": m.rounds.len(), "round_bytes": m.rounds, "device_round_bytes": m.device_rounds,
            "stop_reason": m.stop_reason, "converged": m.converged,
            "downtime_bytes": self.median(|m| m.downtime_bytes as f64),
            "downtime_seconds": self.median(|m| m.downtime),
            "source_end_seconds": self.median(|m| m.source_end),
            "bytes": self.median(|m| m.bytes as f64),
            "device_bytes": self.median(|m| m.device_bytes as f64),
            "overhead_pct": self.median(Migration::overhead_pct),
            "seconds": self.median(|m| m.seconds),
            "gbs": self.median(Migration::gbs),
            "runs": self.0.iter().map(Migration::json).collect::<Vec<_>>(),
        })
    }
}

/// The VMM's decision after a round (`mdevmig live`'s and `save --precopy`'s).
/// The decision after a round: the broker's own rule, on the device's progress.
fn decide(c: &Converge, rounds: &[u64], left: u64, started: Instant) -> Option<StopReason> {
    let n = u32::try_from(rounds.len()).unwrap_or(u32::MAX);
    c.decide(n, left, started.elapsed())
}

fn no_precopy(spec: &str) -> Error {
    Error::new(
        Code::Usage,
        format!("{spec}: the device has no PRE_COPY; the live benchmark needs one that has"),
    )
}

fn digests_differ(what: &str) -> Error {
    Error::new(
        Code::Internal,
        format!("{what}: the destination's state digest differs from the source's"),
    )
}

/// The signing key and trust store every region migration uses.
struct Keys {
    registry: Arc<Registry>,
    key: Arc<SigningKeyPair>,
    trust: Arc<TrustStore>,
}

impl Keys {
    fn new() -> Self {
        let key = Arc::new(SigningKeyPair::generate());
        let mut trust = TrustStore::new();
        trust.add(key.verifying_key(), "bench live source (ephemeral key)");
        Keys {
            registry: Arc::new(Registry::builtin()),
            key,
            trust: Arc::new(trust),
        }
    }

    /// A source and a destination region, the stream bound to a session nonce
    /// the destination issued for this migration.
    fn regions(
        &self,
        from: &str,
        to: &str,
        validation: Validation,
    ) -> Result<(MigrationRegion, MigrationRegion)> {
        let session = Some(new_session_nonce());
        let cfg = RegionConfig {
            registry: self.registry.clone(),
            key: Some(self.key.clone()),
            trust: Some(self.trust.clone()),
            save: SaveOptions {
                session,
                ..Default::default()
            },
            restore: RestoreOptions {
                session,
                validation,
                ..Default::default()
            },
        };
        let (s, _) = device::open(&from.parse::<DeviceSpec>()?, &self.registry)?;
        let (d, _) = device::open(&to.parse::<DeviceSpec>()?, &self.registry)?;
        Ok((MigrationRegion::new(s, cfg.clone()), MigrationRegion::new(d, cfg)))
    }
}

fn ended_in_precopy() -> Error {
    Error::new(Code::DeviceData, "the source's stream ended in PRE_COPY")
}

/// PRE_COPY through two regions, QEMU-shaped.
fn precopy_regions(
    keys: &Keys,
    from: &str,
    to: &str,
    c: &Converge,
    validation: Validation,
) -> Result<Migration> {
    let (mut src, mut dst) = keys.regions(from, to, validation)?;
    let flags = src.migration_flags();
    if flags & FLAG_PRE_COPY == 0 {
        return Err(no_precopy(from));
    }
    let mut buf = vec![0u8; BUF_LEN];
    let mut m = Migration::default();
    let t0 = Instant::now();
    dst.set_state(MigState::Resuming)?;
    let started = Instant::now();
    src.set_state(MigState::PreCopy)?;
    let (reason, left) = loop {
        let (n, end) = super::live::pump(&mut src, &mut dst, &mut buf)?;
        if end == DataRead::End {
            return Err(ended_in_precopy());
        }
        m.rounds.push(n);
        src.precopy_info()?; // lets the device prepare its next round
        let left = src.data_size()?;
        if let Some(reason) = decide(c, &m.rounds, left, started) {
            break (reason, left);
        }
    };
    if flags & FLAG_P2P != 0 {
        src.set_state(MigState::PreCopyP2p)?;
    }
    let stop = Instant::now();
    src.set_state(MigState::StopCopy)?;
    let (n, _) = super::live::pump(&mut src, &mut dst, &mut buf)?;
    m.source_end = stop.elapsed().as_secs_f64();
    src.set_state(MigState::Stop)?;
    dst.set_state(MigState::Stop)?;
    m.downtime = stop.elapsed().as_secs_f64();
    m.seconds = t0.elapsed().as_secs_f64();
    m.downtime_bytes = n;
    m.bytes = m.rounds.iter().sum::<u64>().saturating_add(n);
    m.stop_reason = reason.as_str();
    m.converged = c.downtime_bytes.is_none_or(|b| left <= b);
    let save = src
        .last_save
        .as_ref()
        .ok_or_else(|| Error::new(Code::Internal, "the source region has no save report"))?;
    m.device_bytes = save.raw_bytes;
    m.device_rounds = save.live.rounds.iter().map(|r| r.raw_bytes).collect();
    let restored = dst.last_restore.as_ref().and_then(|r| r.state_digest);
    if save.state_digest.is_none() || save.state_digest != restored {
        return Err(digests_differ("PRE_COPY through the regions"));
    }
    Ok(m)
}

/// The baseline: STOP_COPY only, the same devices through the regions.
fn stop_copy_regions(keys: &Keys, from: &str, to: &str) -> Result<Migration> {
    let (mut src, mut dst) = keys.regions(from, to, Validation::default())?;
    let mut buf = vec![0u8; BUF_LEN];
    let mut m = Migration::default();
    let t0 = Instant::now();
    dst.set_state(MigState::Resuming)?;
    if src.migration_flags() & FLAG_P2P != 0 {
        // As PRE_COPY_P2P before the stop in the PRE_COPY migration.
        src.set_state(MigState::RunningP2p)?;
    }
    let stop = Instant::now();
    src.set_state(MigState::StopCopy)?;
    let (n, _) = super::live::pump(&mut src, &mut dst, &mut buf)?;
    m.source_end = stop.elapsed().as_secs_f64();
    src.set_state(MigState::Stop)?;
    dst.set_state(MigState::Stop)?;
    m.downtime = stop.elapsed().as_secs_f64();
    m.seconds = t0.elapsed().as_secs_f64();
    (m.downtime_bytes, m.bytes) = (n, n);
    m.stop_reason = StopReason::NoPrecopy.as_str();
    let save = src
        .last_save
        .as_ref()
        .ok_or_else(|| Error::new(Code::Internal, "the source region has no save report"))?;
    m.device_bytes = save.raw_bytes;
    let restored = dst.last_restore.as_ref().and_then(|r| r.state_digest);
    if save.state_digest.is_none() || save.state_digest != restored {
        return Err(digests_differ("STOP_COPY through the regions"));
    }
    Ok(m)
}

type Dev = Box<dyn MigrationDevice>;

/// The raw baseline's destination: bytes from the pipe into `write_data`.
fn sink(mut r: std::io::PipeReader, dst: &mut dyn MigrationDevice) -> Result<u64> {
    let mut buf = vec![0u8; BUF_LEN];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                dst.write_data(buf.get(..n).unwrap_or(&[]))?;
                total = total.saturating_add(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(Code::IoRead, "raw pipe", &e)),
        }
    }
}

/// The raw baseline's source: the QEMU-shaped loop on a bare device, every
/// byte into the pipe. Returns when the source was stopped (STOP_COPY).
fn raw_source(
    src: &mut dyn MigrationDevice,
    w: &mut impl Write,
    c: &Converge,
    m: &mut Migration,
) -> Result<Instant> {
    let flags = src.migration_flags();
    let mut buf = vec![0u8; BUF_LEN];
    let mut copy = |src: &mut dyn MigrationDevice| -> Result<(u64, DataRead)> {
        let mut moved = 0u64;
        loop {
            match src.read_data(&mut buf)? {
                DataRead::Data(n) => {
                    w.write_all(buf.get(..n).unwrap_or(&[]))
                        .map_err(|e| Error::io(Code::IoWrite, "raw pipe", &e))?;
                    moved = moved.saturating_add(n as u64);
                }
                other => return Ok((moved, other)),
            }
        }
    };
    let started = Instant::now();
    src.set_state(MigState::PreCopy)?;
    let (reason, left) = loop {
        let (n, end) = copy(src)?;
        if end == DataRead::End {
            return Err(ended_in_precopy());
        }
        m.rounds.push(n);
        src.precopy_info()?;
        let left = src.data_size()?;
        if let Some(reason) = decide(c, &m.rounds, left, started) {
            break (reason, left);
        }
    };
    if flags & FLAG_P2P != 0 {
        src.set_state(MigState::PreCopyP2p)?;
    }
    let stop = Instant::now();
    src.set_state(MigState::StopCopy)?;
    let (n, _) = copy(src)?;
    m.source_end = stop.elapsed().as_secs_f64();
    src.set_state(MigState::Stop)?;
    m.downtime_bytes = n;
    m.bytes = m.rounds.iter().sum::<u64>().saturating_add(n);
    m.device_bytes = m.bytes;
    m.device_rounds = m.rounds.clone();
    m.stop_reason = reason.as_str();
    m.converged = c.downtime_bytes.is_none_or(|b| left <= b);
    Ok(stop)
}

/// The envelope's baseline: PRE_COPY carried raw between bare devices.
fn precopy_raw(registry: &Registry, from: &str, to: &str, c: &Converge) -> Result<Migration> {
    let (mut src, _) = device::open(&from.parse::<DeviceSpec>()?, registry)?;
    let (mut dst, _) = device::open(&to.parse::<DeviceSpec>()?, registry)?;
    if src.migration_flags() & FLAG_PRE_COPY == 0 {
        return Err(no_precopy(from));
    }
    let (r, mut w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let mut m = Migration::default();
    let t0 = Instant::now();
    dst.set_state(MigState::Resuming)?;
    let h = std::thread::spawn(move || -> (Dev, Result<u64>) {
        let got = sink(r, &mut *dst);
        (dst, got)
    });
    let stop = raw_source(&mut *src, &mut w, c, &mut m);
    drop(w); // end of stream
    let (mut dst, got) = h
        .join()
        .map_err(|_| Error::new(Code::Internal, "raw destination thread panicked"))?;
    let stop = stop?;
    if got? != m.bytes {
        return Err(Error::new(Code::Internal, "the raw pipe lost bytes"));
    }
    dst.set_state(MigState::Stop)?;
    m.downtime = stop.elapsed().as_secs_f64();
    m.seconds = t0.elapsed().as_secs_f64();
    let source = src.state_digest();
    if source.is_none() || source != dst.state_digest() {
        return Err(digests_differ("PRE_COPY raw"));
    }
    Ok(m)
}

fn mib(b: f64) -> f64 {
    b / f64::from(1u32 << 20)
}

/// Runs the live part: `rounds` rounds, each migrating once with STOP_COPY only,
/// PRE_COPY through the regions (sandboxed validator, then in process) and
/// PRE_COPY raw, in that order.
pub fn run(a: &LiveBench<'_>, rounds: usize, p: impl Fn(&str)) -> Result<LiveFigures> {
    let rounds = rounds.max(1);
    let ty = a.device_type;
    let from = format!("sim:xe/{ty},seed=41,dirty-rate={}", a.dirty_rate);
    let to = format!("sim:xe/{ty},seed=42");
    let c = Converge {
        downtime_bytes: Some(a.downtime_bytes),
        ..Converge::default()
    };
    let keys = Keys::new();
    let [mut stop_copy, mut precopy, mut in_process, mut raw]: [Series; 4] = Default::default();
    for round in 1..=rounds {
        let p = |what: &str| p(&format!("round {round}/{rounds}: live {ty}: {what}"));
        p("baseline: STOP_COPY only, through the regions");
        stop_copy.0.push(stop_copy_regions(&keys, &from, &to)?);
        p("PRE_COPY through the regions");
        precopy
            .0
            .push(precopy_regions(&keys, &from, &to, &c, Validation::default())?);
        p("reference: PRE_COPY through the regions, validator in process");
        in_process
            .0
            .push(precopy_regions(&keys, &from, &to, &c, Validation::InProcess)?);
        p("baseline: PRE_COPY raw, bare devices and a pipe");
        raw.0.push(precopy_raw(&keys.registry, &from, &to, &c)?);
    }

    let mut t = String::new();
    let _ = writeln!(
        t,
        "Live migration: Xe VF {ty}, its guest dirtying {} bytes/s ({:.0} MiB/s) while it runs, \
         downtime budget {} bytes ({:.1} MiB)",
        a.dirty_rate,
        mib(a.dirty_rate as f64),
        a.downtime_bytes,
        mib(a.downtime_bytes as f64)
    );
    let _ = writeln!(
        t,
        "(QEMU-shaped: read to ENOMSG, precopy info, data size, stop once that fits), \
         median of {rounds} rounds\n"
    );
    let ms = |s: f64| s * 1e3;
    let down_bytes = |s: &Series| s.median(|m| m.downtime_bytes as f64);
    let down_secs = |s: &Series| s.median(|m| m.downtime);
    let (sc_bytes, sc_secs) = (down_bytes(&stop_copy), down_secs(&stop_copy));
    let (pc_bytes, pc_secs) = (down_bytes(&precopy), down_secs(&precopy));
    let _ = writeln!(
        t,
        "{:<45} {:>8} {:>13} {:>11} {:>12}   runs (ms)",
        "downtime: STOP_COPY to the destination's STOP", "rounds", "bytes", "time", "source end"
    );
    for (name, s) in [
        ("baseline  STOP_COPY only, through the regions", &stop_copy),
        ("PRE_COPY through the regions", &precopy),
        ("reference the same, validator in process", &in_process),
        ("reference PRE_COPY raw, bare devices, a pipe", &raw),
    ] {
        let _ = writeln!(
            t,
            "{name:<45} {:>8} {:>13.0} {:>8.2} ms {:>9.2} ms   {}",
            s.median_run().rounds.len(),
            down_bytes(s),
            ms(down_secs(s)),
            ms(s.median(|m| m.source_end)),
            s.listed(|m| format!("{:.2}", ms(m.downtime)))
        );
    }
    let _ = writeln!(
        t,
        "{:<45} {:>8} {:>12.1}x {:>10.1}x",
        "STOP_COPY only / PRE_COPY through the regions",
        "",
        sc_bytes / pc_bytes.max(1.0),
        sc_secs / pc_secs
    );
    t.push_str(
        "  (source end: STOP_COPY to the VMM reading the source's last byte; the rest of the time \
         the destination finishes: verify, validate, load, STOP)\n",
    );
    let rounds_mib = |m: &Migration| {
        m.rounds
            .iter()
            .map(|b| format!("{:.2}", mib(*b as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (name, s) in [("through the regions", &precopy), ("raw", &raw)] {
        let m = s.median_run();
        let _ = writeln!(
            t,
            "  PRE_COPY {name}, median run: MiB per round {}; stopped: {}{}; rounds per run: {}",
            rounds_mib(&m),
            m.stop_reason,
            if m.converged { "" } else { " (did not converge)" },
            s.listed(|m| m.rounds.len().to_string())
        );
    }
    t.push('\n');

    let raw_gbs = raw.median(Migration::gbs);
    let _ = writeln!(
        t,
        "{:<45} {:>13} {:>13} {:>9} {:>9}  {:>13}   runs (GB/s)",
        "envelope cost in PRE_COPY (whole migration)",
        "bytes moved",
        "device bytes",
        "overhead",
        "time",
        "device GB/s"
    );
    for (name, s) in [
        ("baseline  raw, bare devices, a pipe", &raw),
        ("signed envelope, through the regions", &precopy),
        ("reference the same, validator in process", &in_process),
    ] {
        let g = s.median(Migration::gbs);
        let _ = writeln!(
            t,
            "{name:<45} {:>13.0} {:>13.0} {:>+8.4}% {:>7.3} s  {g:>5.2} ({:.2}x)   {}",
            s.median(|m| m.bytes as f64),
            s.median(|m| m.device_bytes as f64),
            s.median(Migration::overhead_pct),
            s.median(|m| m.seconds),
            g / raw_gbs,
            s.listed(|m| format!("{:.2}", m.gbs()))
        );
    }
    t.push_str(
        "  (envelope bytes against the device bytes they carry in the same run; each path's rounds \
         follow its own speed, so time compares as device bytes per second)\n",
    );

    let json = json!({
        "device_type": ty, "source": from, "destination": to,
        "dirty_rate": a.dirty_rate, "downtime_budget": a.downtime_bytes,
        "rounds": rounds,
        "stop_copy_only": stop_copy.json(),
        "precopy": precopy.json(),
        "precopy_in_process": in_process.json(),
        "precopy_raw": raw.json(),
        "downtime_ratio": {"bytes": sc_bytes / pc_bytes.max(1.0), "seconds": sc_secs / pc_secs},
        "envelope": {
            "overhead_pct": precopy.median(Migration::overhead_pct),
            "gbs": precopy.median(Migration::gbs), "raw_gbs": raw_gbs,
            "ratio_raw": precopy.median(Migration::gbs) / raw_gbs,
            "in_process_gbs": in_process.median(Migration::gbs),
            "in_process_ratio_raw": in_process.median(Migration::gbs) / raw_gbs,
        },
    });
    Ok(LiveFigures { text: t, json })
}
