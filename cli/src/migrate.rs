//! `save`, `restore` and the progress display.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::output::Out;
use super::{open_input, Output};
use mdevmig::auth::{hex, SigningKeyPair};
use mdevmig::broker::{self, RestoreOptions, SaveOptions};
use mdevmig::compat::Policy;
use mdevmig::compat::{self as descriptor, Descriptor};
use mdevmig::device::{self, DeviceSpec};
use mdevmig::plugins::Registry;
use mdevmig::{Code, Error, Result};

/// Shows progress on stderr when it is a terminal and the state is large.
pub struct Progress<T> {
    inner: T,
    total: u64,
    done: u64,
    label: &'static str,
    last: Instant,
    start: Instant,
    enabled: bool,
}

/// States at least this large get a progress bar.
const PROGRESS_MIN: u64 = 64 << 20;

impl<T> Progress<T> {
    /// Wraps `inner`; `total` is the expected byte count (0 if unknown).
    pub fn new(inner: T, total: u64, label: &'static str) -> Self {
        let now = Instant::now();
        Progress {
            inner,
            total,
            done: 0,
            label,
            last: now,
            start: now,
            enabled: std::io::stderr().is_terminal() && total >= PROGRESS_MIN,
        }
    }

    fn tick(&mut self, n: usize) {
        self.done += n as u64;
        if !self.enabled || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let pct = (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(0);
        let bar = "#".repeat((pct / 4) as usize);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        super::output::say_err(&format!(
            "\r{} [{bar:<25}] {pct:>3}% {:>6} MiB  {:>6.0} MiB/s",
            self.label,
            self.done >> 20,
            self.done as f64 / secs / 1048576.0
        ));
    }

    /// Clears the progress line.
    pub fn finish(&self) {
        if self.enabled {
            super::output::say_err(&format!("\r{:80}\r", ""));
        }
    }
}

impl<T: Write> Write for Progress<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tick(n);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.tick(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Progress<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tick(n);
        Ok(n)
    }
}

/// The PRE_COPY rounds and the downtime, for people.
fn live_text(l: &mdevmig::broker::LiveReport, budget: Option<u64>) -> String {
    let mut t = String::new();
    if !l.rounds.is_empty() {
        let list: Vec<String> = l.rounds.iter().map(|r| r.bytes.to_string()).collect();
        t.push_str(&format!(
            "pre-copy: {} round(s) [{}] bytes in {:.3} s; stopped: {}\n",
            l.rounds.len(),
            list.join(", "),
            l.precopy_seconds,
            l.stop_reason.as_str()
        ));
    }
    t.push_str(&format!(
        "downtime: {} bytes moved after STOP_COPY in {:.6} s\n",
        l.downtime_bytes, l.downtime_seconds
    ));
    if let Some(b) = budget {
        if l.converged {
            t.push_str(&format!(
                "converged: {} bytes left at stop, within the budget of {b}\n",
                l.left_at_stop
            ));
        } else {
            t.push_str(&format!(
                "did not converge: {} bytes left at stop, over the budget of {b} ({})\n",
                l.left_at_stop,
                l.stop_reason.as_str()
            ));
        }
    }
    t
}

/// Arguments of `save`.
pub struct SaveArgs<'a> {
    pub device: &'a str,
    pub key: &'a Path,
    pub output: &'a str,
    pub precopy: bool,
    pub converge: mdevmig::broker::Converge,
    pub version: Option<u32>,
    pub session: Option<&'a str>,
    pub chunk_size: Option<u32>,
    pub for_descriptor: Option<&'a str>,
    pub policy: Policy,
    pub force: bool,
    pub mode: u32,
    pub idle: Option<std::time::Duration>,
}

pub fn save(a: SaveArgs<'_>, out: Out) -> Result<()> {
    if a.converge.downtime_bytes.is_some() && !a.precopy {
        return Err(Error::new(
            Code::Usage,
            "--downtime-bytes is a PRE_COPY budget: it needs --precopy",
        ));
    }
    let registry = Registry::builtin().allow_opaque(&a.policy.allow_opaque);
    let session = a.session.map(mdevmig::auth::parse_nonce).transpose()?;
    let spec: DeviceSpec = a.device.parse()?;
    let key = SigningKeyPair::load(a.key)?;
    // The output exists (or is refused) before the device is touched.
    let output = Output::open(a.output, a.force, a.mode, a.idle)?;
    super::io::install_signal_handlers();
    let (mut dev, host) = device::open(&spec, &registry)?;
    let mut opts = SaveOptions {
        precopy: a.precopy,
        converge: a.converge,
        version: a.version,
        session,
        chunk_size: a.chunk_size.unwrap_or_else(mdevmig::codec::default_chunk_size),
        omit: Vec::new(),
        produce_window: host.versions,
    };
    if let Some(desc) = a.for_descriptor {
        // Emit what that destination accepts: the pre-check's choice of version
        // and sections, with the same policy the destination will apply.
        let source = descriptor::describe(&*dev, &registry, host.versions)?;
        let dest = Descriptor::load(desc)?;
        let load = dest
            .load
            .map(|w| mdevmig_plugin_api::VersionWindow::new(w.oldest, w.newest));
        let plan = descriptor::check(&source, &dest.info(), &registry, load, &a.policy);
        if !plan.verdict.compatible && !plan.convertible {
            let e = plan
                .verdict
                .error()
                .unwrap_or_else(|| Error::new(Code::Internal, "incompatible"));
            return Err(Error::new(
                e.code,
                format!("{} (checked against {desc})", e.message),
            ));
        }
        opts.version = Some(plan.emit_version);
        opts.omit = plan.omit;
    } else if let Some(pin) = a.policy.pin_version {
        opts.version = opts.version.or(Some(pin));
    }
    let total = dev.data_size().unwrap_or(0);
    let mut sink = Progress::new(output, total, "save");
    let report = broker::save(&mut *dev, &registry, &key, &mut sink, &opts)?;
    sink.finish();
    sink.inner.commit()?;
    let h = &report.header;
    let mut text = format!(
        "saved {} {} state v{} (min v{}): {} sections, {} bytes, signed by {}{}\n",
        h.vendor,
        h.device_type,
        h.state_version,
        h.min_version,
        h.sections.len(),
        report.data_bytes,
        h.key_id,
        if report.precopy_bytes > 0 {
            format!(", {} bytes during PRE_COPY", report.precopy_bytes)
        } else {
            String::new()
        }
    );
    if let Some(d) = report.state_digest {
        text.push_str(&format!("state-digest: {}\n", hex(&d)));
    }
    text.push_str(&live_text(&report.live, a.converge.downtime_bytes));
    let value = json!({
        "vendor": h.vendor, "device_type": h.device_type,
        "state_version": h.state_version, "min_version": h.min_version,
        "sections": super::inspect::sections_json(h),
        "total_len": report.data_bytes, "raw_bytes": report.raw_bytes, "estimated_bytes": total, "precopy_bytes": report.precopy_bytes,
        "key_id": h.key_id.to_string(), "session_bound": h.session_bound(),
        "state_digest": report.state_digest.map(|d| hex(&d)),
        "rounds": report.live.rounds.iter().map(|r| r.bytes).collect::<Vec<_>>(),
        "rounds_raw": report.live.rounds.iter().map(|r| r.raw_bytes).collect::<Vec<_>>(),
        "precopy_seconds": report.live.precopy_seconds,
        "downtime_bytes": report.live.downtime_bytes,
        "downtime_seconds": report.live.downtime_seconds,
        "downtime_budget": a.converge.downtime_bytes,
        "left_at_stop": report.live.left_at_stop,
        "converged": report.live.converged,
        "stop_reason": report.live.stop_reason.as_str(),
    });
    if a.output == "-" {
        // stdout carries the stream: the report goes to stderr.
        if out.json {
            let mut v = value;
            v["ok"] = json!(true);
            super::output::say_err(&format!("{v}\n"));
        } else {
            super::output::say_err(&super::output::printable(&text));
        }
    } else {
        out.ok(&text, value);
    }
    Ok(())
}

/// Arguments of `restore`.
pub struct RestoreArgs<'a> {
    pub device: &'a str,
    pub trust: &'a Path,
    pub input: &'a str,
    pub resume: bool,
    pub session: Option<&'a str>,
    pub policy: Policy,
    pub in_process: bool,
    pub insecure_trust_store: bool,
    pub force: bool,
    pub idle: Option<std::time::Duration>,
}

pub fn restore(a: RestoreArgs<'_>, out: Out) -> Result<()> {
    let registry = Registry::builtin().allow_opaque(&a.policy.allow_opaque);
    // Arguments first: a malformed nonce or device spec is a usage error whatever
    // the files and the device hold.
    let session = a.session.map(mdevmig::auth::parse_nonce).transpose()?;
    let mut spec: DeviceSpec = a.device.parse()?;
    if let DeviceSpec::File { replace, .. } = &mut spec {
        *replace = a.force;
    }
    let trust = super::load_trust(a.trust, a.insecure_trust_store)?;
    let (mut dev, host) = device::open(&spec, &registry)?;
    let opts = RestoreOptions {
        session,
        policy: a.policy,
        resume: a.resume,
        load_window: host.versions,
        validation: if a.in_process {
            mdevmig::sandbox::Validation::InProcess
        } else {
            mdevmig::sandbox::Validation::default()
        },
        ..RestoreOptions::default()
    };
    super::io::install_signal_handlers();
    let src = Progress::new(
        open_input(a.input, a.idle)?,
        if a.input == "-" { 0 } else { file_len(a.input) },
        "restore",
    );
    let report = broker::restore(&mut *dev, &registry, &trust, src, &opts)?;
    let h = &report.header;
    let skipped: Vec<&str> = report.verdict.skipped().collect();
    let mut text = format!(
        "restored {} {} state v{}: {} bytes written, device left in {}{}\n",
        h.vendor,
        h.device_type,
        h.state_version,
        report.written,
        report.final_state,
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {}", skipped.join(", "))
        }
    );
    if report.verdict.opaque {
        text.push_str(&format!("{}\n", opaque_warning(&h.vendor)));
    }
    if let Some(d) = report.state_digest {
        text.push_str(&format!("state-digest: {}\n", hex(&d)));
    }
    out.ok(
        &text,
        json!({
            "opaque": report.verdict.opaque,
            "vendor": h.vendor, "device_type": h.device_type, "state_version": h.state_version,
            "written": report.written, "device_state": report.final_state.to_string(),
            "skipped": skipped, "verdict": report.verdict,
            "state_digest": report.state_digest.map(|d| hex(&d)),
        }),
    );
    Ok(())
}

/// Words separated by spaces, or `-` when there are none: how text reports show
/// a configuration or a set of capabilities.
pub fn words_or_dash<T: std::fmt::Display>(words: impl IntoIterator<Item = T>) -> String {
    let words: Vec<String> = words.into_iter().map(|w| w.to_string()).collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(" ")
    }
}

/// Configuration attributes as `key=value` words (see [`words_or_dash`]).
pub fn attributes_text(attributes: &BTreeMap<String, String>) -> String {
    words_or_dash(attributes.iter().map(|(k, v)| format!("{k}={v}")))
}

/// What every report says of a vendor moved without a plugin.
pub fn opaque_warning(vendor: &str) -> String {
    format!(
        "OPAQUE: {vendor} has no plugin here; the operator allowed its state unvalidated. It is authenticated and its type and configuration matched, but nothing checked its content before the kernel driver."
    )
}

fn file_len(p: &str) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn describe(device: &str, allow_opaque: &[String], out: Out) -> Result<()> {
    let registry = Registry::builtin().allow_opaque(allow_opaque);
    let (dev, host) = device::open(&device.parse::<DeviceSpec>()?, &registry)?;
    let d = descriptor::describe(&*dev, &registry, host.versions)?;
    let w = |w: Option<descriptor::Window>| w.map_or("none".into(), |w| w.to_string());
    let mut t = format!(
        "{} {} ({} backend, plugin {} {}, mdevmig {})\n  migration flags: {}\n  produces state versions {}, loads {}\n",
        d.vendor,
        d.device_type,
        d.backend,
        d.vendor,
        d.plugin_version,
        d.broker_version,
        d.migration_flags.join("|"),
        w(d.produce),
        w(d.load)
    );
    if d.opaque {
        t.push_str(&format!("  {}\n", opaque_warning(&d.vendor)));
    }
    t.push_str(&format!("  configuration: {}\n", attributes_text(&d.attributes)));
    t.push_str(&format!(
        "  host capabilities: {}\n",
        words_or_dash(&d.capabilities)
    ));
    for (v, vd) in &d.versions {
        t.push_str(&format!("  state v{v} (min v{}):\n", vd.min_version));
        for s in &vd.sections {
            t.push_str(&format!(
                "    {:<22} v{} {:<8} {:<10}{}\n",
                s.name,
                s.version,
                if s.required { "required" } else { "optional" },
                s.kind,
                s.capability
                    .as_ref()
                    .map(|c| format!(" needs {c}"))
                    .unwrap_or_default()
            ));
        }
    }
    out.ok(
        &t,
        serde_json::to_value(&d).map_err(|e| Error::new(Code::Internal, e.to_string()))?,
    );
    Ok(())
}

pub fn check(device: &str, source: &str, policy: &Policy, out: Out) -> std::result::Result<(), super::Fail> {
    let registry = Registry::builtin().allow_opaque(&policy.allow_opaque);
    let (dev, host) = device::open(&device.parse::<DeviceSpec>()?, &registry)?;
    let src = Descriptor::load(source)?;
    let load = registry.load_window(dev.info(), host.versions);
    let r = descriptor::check(&src, dev.info(), &registry, load, policy);
    let mut t = format!(
        "{}: {} {} state v{} -> {} {}\n",
        if r.verdict.compatible {
            "COMPATIBLE"
        } else {
            "INCOMPATIBLE"
        },
        src.vendor,
        src.device_type,
        r.verdict.state_version,
        dev.info().vendor,
        dev.info().device_type
    );
    if r.verdict.opaque {
        t.push_str(&format!("  {}\n", opaque_warning(&src.vendor)));
    }
    t.push_str(&format!(
        "  migration: live {}, cold {}\n",
        if r.kinds.live { "possible" } else { "impossible" },
        if r.kinds.cold { "possible" } else { "impossible" }
    ));
    if r.verdict.compatible || r.convertible {
        t.push_str(&format!(
            "  the source should emit state version {}\n",
            r.emit_version
        ));
    }
    for s in &r.verdict.sections {
        t.push_str(&format!(
            "  section {:<22} {:<5}{}\n",
            s.name,
            format!("{:?}", s.action).to_lowercase(),
            s.reason().map(|x| format!("  ({x})")).unwrap_or_default()
        ));
    }
    for reason in &r.verdict.reasons {
        t.push_str(&format!("  [{}] {}\n", reason.code, reason.message));
    }
    let value = serde_json::to_value(&r).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
    out.ok(&t, value);
    // The verdict is already on stdout; the error line repeats the first reason.
    match r.verdict.error() {
        None => Ok(()),
        Some(e) => Err(super::Fail::reported(e, out.json)),
    }
}

pub fn labels(device: &str, out: Out) -> Result<()> {
    let registry = Registry::builtin();
    let (dev, host) = device::open(&device.parse::<DeviceSpec>()?, &registry)?;
    let d = descriptor::describe(&*dev, &registry, host.versions)?;
    let l = descriptor::labels(&d);
    let mut t = String::from("# offers (node labels of this host as a destination)\n");
    for (k, v) in &l.offers {
        t.push_str(&format!("{k}={v}\n"));
    }
    t.push_str("# requires (a VM with this device needs every one of these on its destination)\n");
    for (k, v) in &l.requires {
        t.push_str(&format!("{k}={v}\n"));
    }
    out.ok(
        &t,
        serde_json::to_value(&l).map_err(|e| Error::new(Code::Internal, e.to_string()))?,
    );
    Ok(())
}
