//! Save (source) and restore (destination) orchestration.
//!
//! ```text
//! save:    RUNNING ─[PRE_COPY: initial bytes]─► STOP_COPY: rest ─► STOP
//!            device raw stream ─► plugin layout (framing checked, stripped)
//!            ─► sections ─► envelope writer (signed chunks) ─► output
//!          any failure: back to RUNNING (reset if that fails too)
//!
//! restore: 1 header parsed and authenticated     (nothing touched yet)
//!          2 compatibility and section policy    (compat::evaluate)
//!          3 each chunk verified                 (signature, sequence)
//!          4 the vendor plugin validates         (whole structured sections)
//!          5 RESUMING, writes to the device      (framing re-inserted)
//!          6 the trailer verified
//!          7 STOP: the driver's final check; RUNNING with --resume
//!          any failure after the device was touched: reset
//! ```
//!
//! Verified and validated data is held back in a bounded buffer (8 MiB by default)
//! before the device is touched, so a state that fits (mtty, hisi_acc, any small
//! device) is verified to its trailer and validated whole before its first byte
//! reaches the kernel. Larger states stream: each structured section is still
//! validated whole before any of it is written, bulk data chunk by chunk, and a
//! failure later in the stream resets the device.

pub mod region;

use std::io::{Read, Write};

use mdevmig_plugin_api::{
    RecordValidator, SectionConversion, SectionKind, SectionLayout, SectionSpec, VendorPlugin,
};

use crate::auth::{SigningKeyPair, TrustStore};
use crate::codec::header::{Header, SectionEntry};
use crate::codec::stream::{ReadOptions, StreamReader, StreamWriter};
use crate::codec::{FLAG_SESSION_BOUND, SECTION_REQUIRED, SECTION_STREAMED};
use crate::compat::{self, Action, Policy};
use crate::device::{DataRead, MigState, MigrationDevice, FLAG_PRE_COPY};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;
use crate::sandbox::{Sandbox, Validation};

/// How to save.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Use PRE_COPY when the device supports it: initial bytes flow while the
    /// device still runs.
    pub precopy: bool,
    /// Emit this state version (converting through the plugin if needed).
    pub version: Option<u32>,
    /// Bind the stream to the destination's session nonce.
    pub session: Option<[u8; 32]>,
    /// Chunk size (a power of two, 4 KiB..16 MiB).
    pub chunk_size: u32,
    /// Sections to leave out (optional ones the destination would skip anyway).
    pub omit: Vec<String>,
    /// The versions the plugin on this host produces, if narrowed.
    pub produce_window: Option<mdevmig_plugin_api::VersionWindow>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            precopy: false,
            version: None,
            session: None,
            chunk_size: crate::codec::stream::default_chunk_size(),
            omit: Vec::new(),
            produce_window: None,
        }
    }
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The header written.
    pub header: Header,
    /// Raw bytes read from the device.
    pub raw_bytes: u64,
    /// Data bytes the envelope carries (sections left out are not counted;
    /// streamed sections count at their final length).
    pub data_bytes: u64,
    /// Raw bytes read during PRE_COPY, before STOP_COPY.
    pub precopy_bytes: u64,
    /// Device state digest (simulated devices).
    pub state_digest: Option<[u8; 32]>,
}

/// Reads the device's raw stream in exact amounts, moving from PRE_COPY to
/// STOP_COPY at the first temporary end of data.
struct RawSource<'d> {
    dev: &'d mut dyn MigrationDevice,
    in_precopy: bool,
    read: u64,
    precopy_bytes: u64,
}

impl RawSource<'_> {
    /// Fills `buf` exactly: for an exact-length section.
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.read_some(&mut buf[got..])? {
                0 => {
                    return Err(Error::new(
                        Code::DeviceData,
                        format!(
                            "device stream ended after {} bytes, before its declared size",
                            self.read
                        ),
                    ))
                }
                n => got += n,
            }
        }
        Ok(())
    }

    /// Reads what the device has (at least one byte), or 0 at its end of data:
    /// for a streamed section, whose length is known only at that end.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.dev.read_data(buf)? {
                DataRead::Data(n) => {
                    self.read += n as u64;
                    if self.in_precopy {
                        self.precopy_bytes += n as u64;
                    }
                    return Ok(n);
                }
                DataRead::NotYet if self.in_precopy => {
                    self.dev.set_state(MigState::StopCopy)?;
                    self.in_precopy = false;
                }
                DataRead::NotYet => {
                    return Err(Error::new(
                        Code::DeviceData,
                        "device returned ENOMSG in STOP_COPY",
                    ));
                }
                DataRead::End => return Ok(0),
            }
        }
    }

    /// Copies a streamed section from the device into `w` until the device's end
    /// of data (or, for a section left out, reads and discards it); a device that
    /// yields more than the section's bound is refused. Returns the final length.
    fn stream_section<W: Write>(
        &mut self,
        w: Option<&mut StreamWriter<W>>,
        bound: u64,
        name: &str,
    ) -> Result<u64> {
        let over = || {
            Error::new(
                Code::DeviceOverBound,
                format!("the device yields more than section {name}'s bound of {bound} bytes"),
            )
        };
        match w {
            Some(w) => loop {
                if w.section_room() == 0 {
                    let mut probe = [0u8; 1];
                    if self.read_some(&mut probe)? != 0 {
                        return Err(over());
                    }
                    return w.end_section();
                }
                if w.write_some(usize::MAX, |space| self.read_some(space))? == 0 {
                    return w.end_section();
                }
            },
            None => {
                let mut discard = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = self.read_some(&mut discard)? as u64;
                    if n == 0 {
                        return Ok(total);
                    }
                    total = total.saturating_add(n);
                    if total > bound {
                        return Err(over());
                    }
                }
            }
        }
    }

    fn expect_end(&mut self) -> Result<()> {
        if self.in_precopy {
            self.dev.set_state(MigState::StopCopy)?;
            self.in_precopy = false;
        }
        let mut probe = [0u8; 1];
        match self.dev.read_data(&mut probe)? {
            DataRead::End => Ok(()),
            _ => Err(Error::new(
                Code::DeviceData,
                format!("device produced more than its declared {} bytes", self.read),
            )),
        }
    }
}

fn plugin_for<'r>(registry: &'r Registry, dev: &dyn MigrationDevice) -> Result<&'r dyn VendorPlugin> {
    registry.for_state(&dev.info().vendor, &dev.info().device_type)
}

/// Puts a source back to RUNNING after a failed save; resets if that fails.
fn recover_source(dev: &mut dyn MigrationDevice) {
    if dev.set_state(MigState::Running).is_err() {
        let _ = dev.reset();
    }
}

/// A save or restore starts from a device that is not mid-migration.
fn check_idle(dev: &mut dyn MigrationDevice, role: &str) -> Result<()> {
    let start = dev.state()?;
    if matches!(start, MigState::Running | MigState::Stop | MigState::RunningP2p) {
        return Ok(());
    }
    Err(Error::new(
        Code::DeviceTransition,
        format!("{role} is in {start}; a migration starts from RUNNING or STOP (reset it first)"),
    ))
}

/// Saves `dev`'s state as a signed envelope into `out`.
pub fn save(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    key: &SigningKeyPair,
    out: impl Write,
    opts: &SaveOptions,
) -> Result<SaveReport> {
    check_idle(dev, "source device")?;
    match save_inner(dev, registry, key, out, opts) {
        Ok(r) => Ok(r),
        Err(e) => {
            recover_source(dev);
            Err(e)
        }
    }
}

fn save_inner(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    key: &SigningKeyPair,
    out: impl Write,
    opts: &SaveOptions,
) -> Result<SaveReport> {
    let plugin = plugin_for(registry, dev)?;
    let info = dev.info().clone();
    let produces = compat::effective_window(plugin.produces(&info.device_type), opts.produce_window)
        .ok_or_else(|| {
            Error::new(
                Code::CannotConvert,
                format!(
                    "plugin {} produces no state for {}",
                    plugin.vendor(),
                    info.device_type
                ),
            )
        })?;
    let native = produces.newest;
    let target = opts.version.unwrap_or(native);
    if target > native {
        return Err(Error::new(
            Code::CannotConvert,
            format!(
                "this source produces {} state {produces}; {target} was asked",
                plugin.vendor()
            ),
        ));
    }
    // For a streamed layout this is only the device's estimate: the section is
    // read to the device's end of data, not to this length.
    let raw_len = dev.data_size()?;
    let layout = plugin.layout(&info, native, raw_len)?;
    check_streamed_layout(&layout)?;
    let specs: Vec<SectionSpec> = layout.iter().map(|l| l.spec.clone()).collect();
    let plan: Vec<SectionConversion> = if target == native {
        specs.iter().cloned().map(SectionConversion::Keep).collect()
    } else {
        plugin
            .convert(&info, native, target, &specs)
            .map_err(|e| Error::new(Code::CannotConvert, format!("[{}] {}", e.code, e.message)))?
    };
    if plan.len() != layout.len() {
        return Err(Error::new(
            Code::Internal,
            "plugin conversion plan does not cover every section",
        ));
    }
    let plan: Vec<Option<SectionSpec>> = plan
        .into_iter()
        .map(|c| match c {
            SectionConversion::Keep(s) if !opts.omit.contains(&s.name) || s.required => Some(s),
            _ => None,
        })
        .collect();
    let mut stream_id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut stream_id);
    let header = Header {
        flags: if opts.session.is_some() {
            FLAG_SESSION_BOUND
        } else {
            0
        },
        state_version: target,
        min_version: compat::descriptor::min_version_for(plugin, &info, target),
        chunk_size: opts.chunk_size,
        key_id: key.id(),
        session_nonce: opts.session.unwrap_or([0; 32]),
        stream_id,
        vendor: info.vendor.clone(),
        device_type: info.device_type.clone(),
        attributes: info.attributes.clone(),
        sections: layout
            .iter()
            .zip(&plan)
            .filter_map(|(l, p)| {
                p.as_ref().map(|s| SectionEntry {
                    name: s.name.clone(),
                    version: s.version,
                    flags: if s.required { SECTION_REQUIRED } else { 0 }
                        | if s.streamed { SECTION_STREAMED } else { 0 },
                    // A streamed section declares its bound; its end record
                    // signs the final length.
                    length: if s.streamed { s.max_len } else { l.len },
                })
            })
            .collect(),
    };
    let mut w = StreamWriter::new(out, &header, key)?;
    let precopy = opts.precopy && dev.migration_flags() & FLAG_PRE_COPY != 0;
    dev.set_state(if precopy {
        MigState::PreCopy
    } else {
        MigState::StopCopy
    })?;
    let mut src = RawSource {
        dev,
        in_precopy: precopy,
        read: 0,
        precopy_bytes: 0,
    };
    let mut discard = Vec::new();
    for (l, keep) in layout.iter().zip(&plan) {
        if l.spec.streamed {
            let bound = keep.as_ref().map_or(l.spec.max_len, |s| s.max_len);
            src.stream_section(keep.as_ref().map(|_| &mut w), bound, &l.spec.name)?;
            continue;
        }
        check_framing(plugin, &mut src, l)?;
        let mut left = l.len;
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            let n = if keep.is_some() {
                // The device writes straight into the chunk being signed.
                w.write_with(max, |space| src.fill(space))?
            } else {
                discard.resize(max.min(1 << 20), 0);
                src.fill(&mut discard)?;
                discard.len()
            };
            left -= n as u64;
        }
    }
    src.expect_end()?;
    let (raw_bytes, precopy_bytes) = (src.read, src.precopy_bytes);
    let data_bytes = w.data_bytes();
    w.finish()?;
    dev.set_state(MigState::Stop)?;
    Ok(SaveReport {
        header,
        raw_bytes,
        data_bytes,
        precopy_bytes,
        state_digest: dev.state_digest(),
    })
}

/// A streamed section is read to the device's end of data, so it can only be the
/// last section of the raw stream, and it has no framing (whose length would
/// depend on a length not yet known).
fn check_streamed_layout(layout: &[SectionLayout]) -> Result<()> {
    let last = layout.len().saturating_sub(1);
    for (i, l) in layout.iter().enumerate() {
        if l.spec.streamed && (i != last || l.framing_len != 0) {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "plugin layout puts streamed section {} before another section or gives it framing",
                    l.spec.name
                ),
            ));
        }
    }
    Ok(())
}

fn check_framing(plugin: &dyn VendorPlugin, src: &mut RawSource<'_>, l: &SectionLayout) -> Result<()> {
    if l.framing_len == 0 {
        return Ok(());
    }
    let expected = plugin.framing(&l.spec, l.len);
    let n = usize::try_from(l.framing_len).map_err(|_| Error::new(Code::Framing, "framing too long"))?;
    if expected.len() != n {
        return Err(Error::new(
            Code::Framing,
            format!(
                "plugin framing for {} is {} bytes, layout says {n}",
                l.spec.name,
                expected.len()
            ),
        ));
    }
    let mut got = vec![0u8; n];
    src.fill(&mut got)?;
    if got != expected {
        return Err(Error::new(
            Code::Framing,
            format!(
                "raw stream framing of section {} is not what the plugin expects",
                l.spec.name
            ),
        ));
    }
    Ok(())
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The session nonce this destination issued, if any.
    pub session: Option<[u8; 32]>,
    /// Operator policy.
    pub policy: Policy,
    /// Leave the device RUNNING (else STOP, for the VMM to resume).
    pub resume: bool,
    /// Bytes of verified data held back before the device is touched.
    pub hold_back: usize,
    /// The versions the plugin on this host loads, if narrowed.
    pub load_window: Option<mdevmig_plugin_api::VersionWindow>,
    /// Where the vendor plugin validates structured sections (a sandboxed child
    /// process unless in-process is chosen explicitly).
    pub validation: Validation,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            session: None,
            policy: Policy::default(),
            resume: false,
            hold_back: 8 << 20,
            load_window: None,
            validation: Validation::default(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The authenticated header.
    pub header: Header,
    /// The verdict applied.
    pub verdict: compat::Verdict,
    /// Raw bytes written to the device.
    pub written: u64,
    /// Device state digest (simulated devices).
    pub state_digest: Option<[u8; 32]>,
    /// Final device state.
    pub final_state: MigState,
}

/// Restores a signed envelope from `input` into `dev`.
pub fn restore(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    trust: &TrustStore,
    input: impl Read,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    check_idle(dev, "destination device")?;
    let mut touched = false;
    match restore_inner(dev, registry, trust, input, opts, &mut touched) {
        Ok(r) => Ok(r),
        Err(e) => {
            if touched {
                let _ = dev.reset();
            }
            Err(e)
        }
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
    verdict: &compat::Verdict,
    plugin: &dyn VendorPlugin,
    dest: &mdevmig_plugin_api::DeviceInfo,
    version: u32,
) -> Result<()> {
    for (s, v) in header.sections.iter().zip(&verdict.sections) {
        if let (Action::Send, Some(spec)) = (v.action, &v.spec) {
            if s.length > spec.max_len {
                return Err(Error::new(
                    Code::SectionTooLarge,
                    format!(
                        "section {} is {} bytes; the plugin allows at most {}",
                        s.name, s.length, spec.max_len
                    ),
                ));
            }
        }
    }
    let layout = plugin.sections(dest, version)?;
    let mut last: Option<(usize, &str)> = None;
    for s in &header.sections {
        if let Some(at) = layout.iter().position(|l| l.name == s.name) {
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
    }
    if let Some(missing) = layout
        .iter()
        .find(|l| l.required && header.sections.iter().all(|s| s.name != l.name))
    {
        return Err(Error::new(
            Code::MissingSection,
            format!(
                "the stream has no {} section, which {} state version {version} requires",
                missing.name, header.vendor
            ),
        ));
    }
    for (s, v) in header.sections.iter().zip(&verdict.sections) {
        let (Action::Send, Some(spec)) = (v.action, &v.spec) else {
            continue;
        };
        if s.streamed() != spec.streamed {
            return Err(Error::new(
                Code::SectionLength,
                format!(
                    "section {} is {} in the stream but {} for the plugin",
                    s.name,
                    if s.streamed() { "streamed" } else { "exact-length" },
                    if spec.streamed { "streamed" } else { "exact-length" }
                ),
            ));
        }
        if let Some(want) = plugin.expected_len(dest, version, spec) {
            if s.length != want {
                return Err(Error::new(
                    Code::SectionLength,
                    format!(
                        "section {} is {} bytes; on this {} it is {want}",
                        s.name, s.length, dest.device_type
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Sections this destination skips are read, verified and discarded: their
/// total (bounds, for streamed ones) must stay within the policy's bound.
fn check_skipped(header: &Header, verdict: &compat::Verdict, policy: &Policy) -> Result<()> {
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
    dest: &'a mdevmig_plugin_api::DeviceInfo,
    sandbox: Option<Sandbox>,
    /// The record section in progress and, in process, its validator (`None`
    /// when the child holds it).
    records: Option<(usize, Option<Box<dyn RecordValidator>>)>,
}

impl Validator<'_> {
    fn sandbox(&mut self) -> Result<Option<&mut Sandbox>> {
        match self.validation {
            Validation::InProcess => Ok(None),
            Validation::Sandbox(cfg) => {
                if self.sandbox.is_none() {
                    self.sandbox = Some(Sandbox::start(cfg)?);
                }
                Ok(self.sandbox.as_mut())
            }
        }
    }

    /// A whole structured section.
    fn section(&mut self, spec: &SectionSpec, data: &[u8]) -> Result<()> {
        let (plugin, dest) = (self.plugin, self.dest);
        match self.sandbox()? {
            Some(sb) => sb.validate(dest, spec, data),
            None => Ok(plugin.validate_section(dest, spec, data)?),
        }
    }

    /// Starts section `idx`'s record stream if it is not the one in progress.
    fn records_begin(&mut self, idx: usize, spec: &SectionSpec) -> Result<()> {
        if self.records.as_ref().is_some_and(|(i, _)| *i == idx) {
            return Ok(());
        }
        let (plugin, dest) = (self.plugin, self.dest);
        let inproc = match self.sandbox()? {
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
struct Sink {
    queue: Vec<Vec<u8>>,
    queued: usize,
    open: bool,
    written: u64,
}

impl Sink {
    fn push(&mut self, bytes: Vec<u8>) {
        self.queued += bytes.len();
        self.queue.push(bytes);
    }

    fn flush(&mut self, dev: &mut dyn MigrationDevice, touched: &mut bool) -> Result<()> {
        if !self.open {
            *touched = true;
            dev.set_state(MigState::Resuming)?;
            self.open = true;
        }
        for w in self.queue.drain(..) {
            dev.write_data(&w)?;
            self.written += w.len() as u64;
        }
        self.queued = 0;
        Ok(())
    }
}

fn restore_inner(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    trust: &TrustStore,
    input: impl Read,
    opts: &RestoreOptions,
    touched: &mut bool,
) -> Result<RestoreReport> {
    if opts.policy.require_session && opts.session.is_none() {
        return Err(Error::new(
            Code::UnboundStream,
            "policy requires session-bound streams, and no session nonce was issued for this restore (pass --session)",
        ));
    }
    // 1. Header and authentication.
    let mut r = StreamReader::open(
        input,
        trust,
        &ReadOptions {
            expected_nonce: opts.session,
            ..Default::default()
        },
    )?;
    let header = r.header().header.clone();
    // 2. Compatibility and section policy.
    let dest = dev.info().clone();
    let plugin = registry
        .vendor(&header.vendor)
        .filter(|_| header.vendor == dest.vendor);
    let load = plugin.and_then(|p| compat::effective_window(p.loads(&dest.device_type), opts.load_window));
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
    // 3-5. Chunks: verify, validate, queue; touch the device only when the
    // hold-back buffer is full or the stream is complete.
    let mut sink = Sink {
        queue: Vec::new(),
        queued: 0,
        open: false,
        written: 0,
    };
    let mut section_buf: Vec<u8> = Vec::new();
    // Sections below `next` have been handed to the sink (or skipped).
    let mut next = 0usize;
    let mut validator = Validator {
        validation: &opts.validation,
        plugin,
        dest: &dest,
        sandbox: None,
        records: None,
    };
    let emit = |idx: usize, data: &[u8], sink: &mut Sink, validator: &mut Validator<'_>| -> Result<()> {
        let (v, s) = (&verdict.sections[idx], &header.sections[idx]);
        if let (Action::Send, Some(spec)) = (v.action, &v.spec) {
            if spec.kind == SectionKind::Records {
                // The section's end is authenticated (its end record, or the
                // trailer for an exact length): a record cut short or a missing
                // end marker is refused now, before the device is told the state
                // is complete. A section without chunks still gets a validator.
                validator.records_finish(idx, spec)?;
            } else if spec.kind == SectionKind::Structured {
                validator.section(spec, data)?;
                // Framing and structure in one write(2): drivers must see it whole
                // (hisi_acc once mis-restored a state split across writes).
                let mut one = plugin.framing(spec, s.length);
                one.extend_from_slice(data);
                sink.push(one);
            } else if s.length == 0 {
                sink.push(plugin.framing(spec, 0));
            }
        }
        Ok(())
    };
    while let Some(chunk) = r.next_chunk()? {
        let idx = usize::from(chunk.section_index);
        // Close the section in progress and any empty sections before this one.
        while next < idx {
            emit(next, &section_buf, &mut sink, &mut validator)?;
            section_buf.clear();
            next += 1;
        }
        let (v, s) = (&verdict.sections[idx], &header.sections[idx]);
        match (v.action, &v.spec) {
            (Action::Send, Some(spec)) if spec.kind == SectionKind::Structured => {
                section_buf.extend_from_slice(chunk.data);
            }
            (Action::Send, Some(spec)) => {
                if spec.kind == SectionKind::Records {
                    validator.records_feed(idx, spec, chunk.data)?;
                } else {
                    plugin.validate_bulk(&dest, spec, chunk.offset, chunk.data)?;
                }
                if chunk.offset == 0 {
                    let framing = plugin.framing(spec, s.length);
                    if !framing.is_empty() {
                        sink.push(framing);
                    }
                }
                if sink.open && sink.queue.is_empty() {
                    // Streaming: the device is already loading and nothing is held
                    // back, so the verified chunk goes straight in without a copy.
                    dev.write_data(chunk.data)?;
                    sink.written += chunk.data.len() as u64;
                } else {
                    sink.push(chunk.data.to_vec());
                }
            }
            _ => {}
        }
        if sink.queued >= opts.hold_back {
            sink.flush(dev, touched)?;
        }
    }
    // 6. The trailer has been verified (next_chunk returned None). Close the
    // last section and any empty ones after it.
    while next < header.sections.len() {
        emit(next, &section_buf, &mut sink, &mut validator)?;
        section_buf.clear();
        next += 1;
    }
    sink.flush(dev, touched)?;
    // 7. STOP: the driver's final check.
    dev.set_state(MigState::Stop)?;
    if opts.resume {
        dev.set_state(MigState::Running)?;
    }
    let final_state = dev.state()?;
    Ok(RestoreReport {
        header,
        verdict,
        written: sink.written,
        state_digest: dev.state_digest(),
        final_state,
    })
}
