//! The destination side: an untrusted stream, checked, into a device.
//!
//! ```text
//! RestoreSession::open   header parsed and authenticated; compat::evaluate;
//!                        the section table against the plugin's layout
//!                        (check_shape) and the policy's skip bound
//!                        (check_skipped): nothing touched yet
//! RestoreSession::chunk  each verified chunk: validated (bulk bounds, records
//!                        chunk by chunk, structured sections whole), queued
//! Sink::flush            the hold-back buffer full or the stream complete:
//!                        RESUMING (the destination is now touched), writes
//! RestoreSession::finish the trailer verified; every section closed; STOP
//! ```
//!
//! The device is held by a [`DestinationGuard`]: any failure after it was
//! touched, a panic included, resets it.

use std::io::Read;

use mdevmig_plugin_api::{DeviceInfo, RecordValidator, SectionKind, SectionSpec, VendorPlugin};

use super::guard::DestinationGuard;
use super::{check_idle, RestoreOptions, RestoreReport};
use crate::auth::TrustStore;
use crate::codec::ReadOptions;
use crate::codec::{Header, StreamReader, VerifiedChunk};
use crate::compat::{self, Action, Policy, SectionVerdict, Verdict};
use crate::device::{MigState, MigrationDevice};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;
use crate::sandbox::{Sandbox, Validation};

/// Restores a signed envelope from `input` into `dev`.
///
/// Nothing reaches the device before the header is authenticated and the state
/// is found compatible; verified data is then held back (up to
/// [`RestoreOptions::hold_back`] bytes) before the device is first touched. On
/// success the device is in STOP (RUNNING with [`RestoreOptions::resume`]); on
/// any failure a touched device is reset and an untouched one left as it was.
pub fn restore(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    trust: &TrustStore,
    input: impl Read,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    check_idle(dev, "destination device")?;
    let mut dev = DestinationGuard::new(dev);
    let (mut reader, mut session) = RestoreSession::open(dev.info().clone(), registry, trust, input, opts)?;
    while let Some(chunk) = reader.next_chunk()? {
        session.chunk(&chunk, &mut dev)?;
    }
    // The trailer has been verified (next_chunk returned None).
    let report = session.finish(&mut dev, opts.resume)?;
    dev.done();
    Ok(report)
}

/// A restore in progress: the authenticated header, the verdict applied, and
/// where each section's bytes go.
struct RestoreSession<'a> {
    header: Header,
    verdict: Verdict,
    plugin: &'a dyn VendorPlugin,
    validator: Validator<'a>,
    sink: Sink,
    /// The structured section being gathered, validated whole when it closes.
    section_buf: Vec<u8>,
    /// Sections below `next` have been closed (handed to the sink or skipped).
    next: usize,
    hold_back: usize,
}

impl<'a> RestoreSession<'a> {
    /// Steps before the first chunk: the header authenticated, the verdict, the
    /// section table's shape and the skipped bytes' bound.
    fn open<R: Read>(
        dest: DeviceInfo,
        registry: &'a Registry,
        trust: &TrustStore,
        input: R,
        opts: &'a RestoreOptions,
    ) -> Result<(StreamReader<R>, Self)> {
        if opts.policy.require_session && opts.session.is_none() {
            return Err(Error::new(
                Code::UnboundStream,
                "policy requires session-bound streams, and no session nonce was issued for this restore (pass --session)",
            ));
        }
        let reader = StreamReader::open(
            input,
            trust,
            &ReadOptions {
                expected_nonce: opts.session,
                ..Default::default()
            },
        )?;
        let header = reader.header().header.clone();
        let plugin = registry
            .vendor(&header.vendor)
            .filter(|_| header.vendor == dest.vendor);
        let load = plugin.and_then(|_| registry.load_window(&dest, opts.load_window));
        let verdict =
            compat::evaluate(&compat::claim_of(&header), &dest, plugin, load, &opts.policy).into_result()?;
        let plugin = plugin.ok_or_else(|| Error::new(Code::NoPlugin, "no plugin"))?;
        let loads = load.ok_or_else(|| Error::new(Code::NoPlugin, "no load window"))?;
        check_shape(
            &header,
            &verdict,
            plugin,
            &dest,
            header.state_version.min(loads.newest),
        )?;
        check_skipped(&header, &verdict, &opts.policy)?;
        let session = RestoreSession {
            header,
            verdict,
            plugin,
            validator: Validator {
                validation: &opts.validation,
                plugin,
                dest,
                sandbox: None,
                records: None,
            },
            sink: Sink::default(),
            section_buf: Vec::new(),
            next: 0,
            hold_back: opts.hold_back,
        };
        Ok((reader, session))
    }

    /// Section `idx`'s header entry and verdict (the reader has checked `idx`
    /// against the table).
    fn section(&self, idx: usize) -> Result<(u64, &SectionVerdict)> {
        match (self.header.sections.get(idx), self.verdict.sections.get(idx)) {
            (Some(s), Some(v)) => Ok((s.length, v)),
            _ => Err(Error::new(Code::Internal, format!("no section {idx}"))),
        }
    }

    /// One verified chunk: sections before it are closed, its bytes validated
    /// and queued (or written at once when the device is already loading and
    /// nothing is held back).
    fn chunk(&mut self, chunk: &VerifiedChunk<'_>, dev: &mut DestinationGuard<'_>) -> Result<()> {
        let idx = usize::from(chunk.section_index);
        self.close_before(idx)?;
        let (length, v) = self.section(idx)?;
        if let Some(spec) = sent_spec(v).cloned() {
            if spec.kind == SectionKind::Structured {
                self.section_buf.extend_from_slice(chunk.data);
            } else {
                self.stream_chunk(idx, length, &spec, chunk, dev)?;
            }
        }
        if self.sink.queued >= self.hold_back {
            self.sink.flush(dev)?;
        }
        Ok(())
    }

    /// A verified chunk of a bulk or record section: validated as it comes,
    /// then queued, or written at once when the device is already loading and
    /// nothing is held back.
    fn stream_chunk(
        &mut self,
        idx: usize,
        length: u64,
        spec: &SectionSpec,
        chunk: &VerifiedChunk<'_>,
        dev: &mut DestinationGuard<'_>,
    ) -> Result<()> {
        if spec.kind == SectionKind::Records {
            self.validator.records_feed(idx, spec, chunk.data)?;
        } else {
            self.plugin
                .validate_bulk(&self.validator.dest, spec, chunk.offset, chunk.data)?;
        }
        if chunk.offset == 0 {
            let framing = self.plugin.framing(spec, length);
            if !framing.is_empty() {
                self.sink.push(framing);
            }
        }
        if self.sink.open && self.sink.queue.is_empty() {
            // Streaming: nothing is held back, so the verified chunk goes
            // straight in without a copy.
            dev.write_data(chunk.data)?;
            self.sink.written = self.sink.written.saturating_add(chunk.data.len() as u64);
        } else {
            self.sink.push(chunk.data.to_vec());
        }
        Ok(())
    }

    /// Closes every section before `idx` (the one in progress and any empty
    /// ones).
    fn close_before(&mut self, idx: usize) -> Result<()> {
        while self.next < idx {
            self.close(self.next)?;
            self.section_buf.clear();
            self.next = self.next.saturating_add(1);
        }
        Ok(())
    }

    /// Section `idx` is complete and its end authenticated (its end record, or
    /// the trailer for an exact length).
    fn close(&mut self, idx: usize) -> Result<()> {
        let (length, v) = self.section(idx)?;
        let Some(spec) = sent_spec(v).cloned() else {
            return Ok(());
        };
        match spec.kind {
            // A record cut short or a missing end marker is refused now, before
            // the device is told the state is complete. A section without
            // chunks still gets a validator.
            SectionKind::Records => self.validator.records_finish(idx, &spec)?,
            SectionKind::Structured => {
                self.validator.section(&spec, &self.section_buf)?;
                // Framing and structure in one write(2): drivers must see it
                // whole (hisi_acc once mis-restored a state split across writes).
                let mut one = self.plugin.framing(&spec, length);
                one.extend_from_slice(&self.section_buf);
                self.sink.push(one);
            }
            _ if length == 0 => self.sink.push(self.plugin.framing(&spec, 0)),
            _ => {}
        }
        Ok(())
    }

    /// After the trailer: the last sections closed, everything written, then
    /// STOP (the driver's final check) and RUNNING if asked.
    fn finish(mut self, dev: &mut DestinationGuard<'_>, resume: bool) -> Result<RestoreReport> {
        self.close_before(self.header.sections.len())?;
        self.sink.flush(dev)?;
        dev.set_state(MigState::Stop)?;
        if resume {
            dev.set_state(MigState::Running)?;
        }
        let final_state = dev.state()?;
        Ok(RestoreReport {
            header: self.header,
            verdict: self.verdict,
            written: self.sink.written,
            state_digest: dev.state_digest(),
            final_state,
        })
    }
}

/// The spec a section is loaded under, when the verdict sends it to the device.
fn sent_spec(v: &SectionVerdict) -> Option<&SectionSpec> {
    match (v.action, &v.spec) {
        (Action::Send, Some(spec)) => Some(spec),
        _ => None,
    }
}

/// The whole state before the device: the section table must be what the
/// plugin's layout for this version allows, checked from the authenticated
/// header alone (O(header)), before a chunk is read. In order: each sent
/// section's length within the plugin's bound (`limit.section_too_large`); the
/// known sections in the plugin's order (`vendor.section_order`); every section
/// the plugin requires present (`vendor.missing_section`); each sent section's
/// shape and length what the plugin fixes for this device
/// (`vendor.section_length`).
fn check_shape(
    header: &Header,
    verdict: &Verdict,
    plugin: &dyn VendorPlugin,
    dest: &DeviceInfo,
    version: u32,
) -> Result<()> {
    check_bounds(header, verdict)?;
    let layout = plugin.sections(dest, version)?;
    check_order(header, &layout)?;
    check_required(header, &layout, version)?;
    check_lengths(header, verdict, plugin, dest, version)
}

/// Each sent section within the plugin's bound for it.
fn check_bounds(header: &Header, verdict: &Verdict) -> Result<()> {
    for (s, v) in header.sections.iter().zip(&verdict.sections) {
        if let Some(spec) = sent_spec(v).filter(|spec| s.length > spec.max_len) {
            return Err(Error::new(
                Code::SectionTooLarge,
                format!(
                    "section {} is {} bytes; the plugin allows at most {}",
                    s.name, s.length, spec.max_len
                ),
            ));
        }
    }
    Ok(())
}

/// The sections the plugin knows, in the plugin's order.
fn check_order(header: &Header, layout: &[SectionSpec]) -> Result<()> {
    let mut last: Option<(usize, &str)> = None;
    for s in &header.sections {
        let Some(at) = layout.iter().position(|l| l.name == s.name) else {
            continue;
        };
        if let Some((_, name)) = last.filter(|(prev, _)| *prev > at) {
            return Err(Error::new(
                Code::SectionOrder,
                format!(
                    "section {} comes after {name}; the {} layout puts it before",
                    s.name, header.vendor
                ),
            ));
        }
        last = Some((at, s.name.as_str()));
    }
    Ok(())
}

/// Every section the plugin requires at this version present.
fn check_required(header: &Header, layout: &[SectionSpec], version: u32) -> Result<()> {
    match layout
        .iter()
        .find(|l| l.required && header.sections.iter().all(|s| s.name != l.name))
    {
        Some(missing) => Err(Error::new(
            Code::MissingSection,
            format!(
                "the stream has no {} section, which {} state version {version} requires",
                missing.name, header.vendor
            ),
        )),
        None => Ok(()),
    }
}

/// Each sent section streamed or exact-length as the plugin says, and of the
/// length the plugin fixes for this device, where it fixes one.
fn check_lengths(
    header: &Header,
    verdict: &Verdict,
    plugin: &dyn VendorPlugin,
    dest: &DeviceInfo,
    version: u32,
) -> Result<()> {
    let shape = |streamed: bool| if streamed { "streamed" } else { "exact-length" };
    for (s, v) in header.sections.iter().zip(&verdict.sections) {
        let Some(spec) = sent_spec(v) else {
            continue;
        };
        if s.streamed() != spec.streamed {
            return Err(Error::new(
                Code::SectionLength,
                format!(
                    "section {} is {} in the stream but {} for the plugin",
                    s.name,
                    shape(s.streamed()),
                    shape(spec.streamed)
                ),
            ));
        }
        if let Some(want) = plugin
            .expected_len(dest, version, spec)
            .filter(|w| *w != s.length)
        {
            return Err(Error::new(
                Code::SectionLength,
                format!(
                    "section {} is {} bytes; on this {} it is {want}",
                    s.name, s.length, dest.device_type
                ),
            ));
        }
    }
    Ok(())
}

/// Sections this destination skips are read, verified and discarded: their
/// total (bounds, for streamed ones) must stay within the policy's bound.
fn check_skipped(header: &Header, verdict: &Verdict, policy: &Policy) -> Result<()> {
    let skipped = header
        .sections
        .iter()
        .zip(&verdict.sections)
        .filter(|(_, v)| v.action != Action::Send)
        .fold(0u64, |acc, (s, _)| acc.saturating_add(s.length));
    if skipped > policy.max_skipped() {
        return Err(Error::new(
            Code::SkippedTooLarge,
            format!(
                "the stream carries {skipped} bytes of sections this destination skips; policy allows {}",
                policy.max_skipped()
            ),
        ));
    }
    Ok(())
}

/// Where the plugin's checks of the state run: structured sections and record
/// streams go to the sandboxed child (started on first use) unless in-process
/// validation was chosen; bulk sections' bounds checks stay in the broker.
struct Validator<'a> {
    validation: &'a Validation,
    plugin: &'a dyn VendorPlugin,
    dest: DeviceInfo,
    sandbox: Option<Sandbox>,
    /// The record section in progress and, in process, its validator (`None`
    /// when the child holds it).
    records: Option<(usize, Option<Box<dyn RecordValidator>>)>,
}

/// The sandbox `validation` asks for, started in `slot` on first use; `None`
/// for in-process validation.
fn sandbox<'s>(validation: &Validation, slot: &'s mut Option<Sandbox>) -> Result<Option<&'s mut Sandbox>> {
    match validation {
        Validation::InProcess => Ok(None),
        Validation::Sandbox(cfg) => {
            if slot.is_none() {
                *slot = Some(Sandbox::start(cfg)?);
            }
            Ok(slot.as_mut())
        }
    }
}

impl Validator<'_> {
    /// A whole structured section.
    fn section(&mut self, spec: &SectionSpec, data: &[u8]) -> Result<()> {
        let (plugin, dest) = (self.plugin, &self.dest);
        match sandbox(self.validation, &mut self.sandbox)? {
            Some(sb) => sb.validate(dest, spec, data),
            None => Ok(plugin.validate_section(dest, spec, data)?),
        }
    }

    /// Starts section `idx`'s record stream if it is not the one in progress.
    fn records_begin(&mut self, idx: usize, spec: &SectionSpec) -> Result<()> {
        if self.records.as_ref().is_some_and(|(i, _)| *i == idx) {
            return Ok(());
        }
        let (plugin, dest) = (self.plugin, &self.dest);
        let inproc = match sandbox(self.validation, &mut self.sandbox)? {
            Some(sb) => {
                sb.records_begin(dest, spec)?;
                None
            }
            None => Some(plugin.record_validator(dest, spec)?),
        };
        self.records = Some((idx, inproc));
        Ok(())
    }

    /// The next verified bytes of section `idx`'s record stream.
    fn records_feed(&mut self, idx: usize, spec: &SectionSpec, data: &[u8]) -> Result<()> {
        self.records_begin(idx, spec)?;
        match self.records.as_mut() {
            Some((_, Some(r))) => Ok(r.feed(data)?),
            _ => match self.sandbox.as_mut() {
                Some(sb) => sb.records_feed(data),
                None => Err(Error::new(Code::Internal, "no record validator")),
            },
        }
    }

    /// Section `idx`'s record stream ended (its end is authenticated).
    fn records_finish(&mut self, idx: usize, spec: &SectionSpec) -> Result<()> {
        self.records_begin(idx, spec)?;
        match self.records.take() {
            Some((_, Some(mut r))) => Ok(r.finish()?),
            _ => match self.sandbox.as_mut() {
                Some(sb) => sb.records_finish(),
                None => Err(Error::new(Code::Internal, "no record validator")),
            },
        }
    }
}

/// Writes queued on the way to the device.
#[derive(Default)]
struct Sink {
    queue: Vec<Vec<u8>>,
    queued: usize,
    /// The device is in RESUMING.
    open: bool,
    written: u64,
}

impl Sink {
    fn push(&mut self, bytes: Vec<u8>) {
        self.queued = self.queued.saturating_add(bytes.len());
        self.queue.push(bytes);
    }

    /// Writes everything queued, moving the device to RESUMING first if this is
    /// the first write (from here on the guard resets it on failure).
    fn flush(&mut self, dev: &mut DestinationGuard<'_>) -> Result<()> {
        if !self.open {
            dev.open_resuming()?;
            self.open = true;
        }
        for w in self.queue.drain(..) {
            dev.write_data(&w)?;
            self.written = self.written.saturating_add(w.len() as u64);
        }
        self.queued = 0;
        Ok(())
    }
}
