//! The source side: a device's raw state into a signed envelope.
//!
//! [`save`] plans the stream from the plugin's layout and the header alone
//! ([`SavePlan`]: which version, which sections, converted how), then copies the
//! device's raw stream section by section into the envelope writer
//! ([`SavePlan::copy`]), checking the plugin's framing on the way. The device is
//! held by a [`SourceGuard`] throughout, so any failure (or panic) puts the
//! source back to RUNNING.

use std::io::Write;
use std::sync::Arc;

use mdevmig_plugin_api::{SectionConversion, SectionLayout, SectionSpec, VendorPlugin};

use super::guard::SourceGuard;
use super::live::{Counted, Live, LiveCtl, Mode};
use super::{check_idle, SaveOptions, SaveReport};
use crate::auth::SigningKeyPair;
use crate::codec::{
    Header, SectionEntry, StreamWriter, FLAG_SESSION_BOUND, SECTION_REQUIRED, SECTION_STREAMED,
};
use crate::compat;
use crate::device::{DataRead, MigState, MigrationDevice, FLAG_PRE_COPY};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

/// Saves `dev`'s state as a signed envelope into `out`.
///
/// The device must be RUNNING or STOP (not mid-migration). On success it is left
/// in STOP, as the kernel's STOP_COPY -> STOP arc leaves a source; on any
/// failure it is put back to RUNNING (reset if that fails).
pub fn save(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    key: &SigningKeyPair,
    out: impl Write,
    opts: &SaveOptions,
) -> Result<SaveReport> {
    check_idle(dev, "source device")?;
    let mut dev = SourceGuard::new(dev);
    let plan = SavePlan::new(&mut *dev, registry, key, opts)?;
    let report = plan.copy(&mut dev, key, out, opts, Live::new(Mode::Policy(opts.converge)))?;
    dev.done();
    Ok(report)
}

/// The migration region's save: `dev` is already in PRE_COPY(_P2P) or
/// STOP_COPY (the region took the arc the VMM asked for), and the VMM decides,
/// through `ctl`, when PRE_COPY ends. On failure the device goes back to RUNNING.
pub(crate) fn save_driven(
    dev: &mut dyn MigrationDevice,
    registry: &Registry,
    key: &SigningKeyPair,
    out: impl Write,
    opts: &SaveOptions,
    ctl: Arc<LiveCtl>,
) -> Result<SaveReport> {
    let mut dev = SourceGuard::new(dev);
    let plan = SavePlan::new(&mut *dev, registry, key, opts)?;
    let report = plan.copy(&mut dev, key, out, opts, Live::new(Mode::Driven(ctl)))?;
    dev.done();
    Ok(report)
}

/// What the stream will hold, decided before the device moves.
struct SavePlan<'r> {
    plugin: &'r dyn VendorPlugin,
    header: Header,
    /// The raw stream's sections, in the device's order.
    layout: Vec<SectionLayout>,
    /// Per raw section: the spec it is sent under, or `None` when left out.
    keep: Vec<Option<SectionSpec>>,
    /// The device's size estimate when the save began.
    raw_estimate: u64,
}

impl<'r> SavePlan<'r> {
    fn new(
        dev: &mut dyn MigrationDevice,
        registry: &'r Registry,
        key: &SigningKeyPair,
        opts: &SaveOptions,
    ) -> Result<Self> {
        let plugin = registry.for_state(&dev.info().vendor, &dev.info().device_type)?;
        let info = dev.info().clone();
        let (native, target) = versions(plugin, &info, opts)?;
        // For a streamed layout this is only the device's estimate: the section
        // is read to the device's end of data, not to this length.
        let raw_len = dev.data_size()?;
        let layout = plugin.layout(&info, native, raw_len)?;
        check_streamed_layout(&layout)?;
        let keep = conversion(plugin, &info, &layout, native, target, opts)?;
        let header = Header {
            flags: if opts.session.is_some() {
                FLAG_SESSION_BOUND
            } else {
                0
            },
            state_version: target,
            min_version: compat::min_version_for(plugin, &info, target),
            chunk_size: opts.chunk_size,
            key_id: key.id(),
            session_nonce: opts.session.unwrap_or([0; 32]),
            stream_id: new_stream_id(),
            vendor: info.vendor.clone(),
            device_type: info.device_type.clone(),
            attributes: info.attributes.clone(),
            sections: section_table(&layout, &keep),
        };
        Ok(SavePlan {
            plugin,
            header,
            layout,
            keep,
            raw_estimate: raw_len,
        })
    }

    /// Moves the device to PRE_COPY (when asked and supported) or STOP_COPY
    /// (a driven save finds it there), copies every section into the envelope,
    /// going through PRE_COPY's rounds as `live` decides, and stops the device.
    fn copy(
        self,
        dev: &mut SourceGuard<'_>,
        key: &SigningKeyPair,
        out: impl Write,
        opts: &SaveOptions,
        mut live: Live,
    ) -> Result<SaveReport> {
        let precopy = opts.precopy && dev.migration_flags() & FLAG_PRE_COPY != 0;
        live.start(&mut **dev, precopy, &self.header, self.raw_estimate)?;
        let mut w = StreamWriter::new(Counted::new(out, live.counter()), &self.header, key)?;
        let mut src = RawSource {
            dev: &mut *dev,
            live,
            read: 0,
            precopy_bytes: 0,
        };
        for (l, keep) in self.layout.iter().zip(&self.keep) {
            if l.spec.streamed {
                let bound = keep.as_ref().map_or(l.spec.max_len, |s| s.max_len);
                src.stream_section(&mut w, keep.is_some(), bound, &l.spec.name)?;
            } else {
                check_framing(self.plugin, &mut src, &mut w, l)?;
                src.copy_exact(&mut w, keep.is_some(), l.len)?;
            }
        }
        src.expect_end(&mut w)?;
        let RawSource {
            live,
            read: raw_bytes,
            precopy_bytes,
            ..
        } = src;
        let data_bytes = w.data_bytes();
        w.finish()?;
        let live = live.report();
        dev.set_state(MigState::Stop)?;
        Ok(SaveReport {
            header: self.header,
            raw_bytes,
            data_bytes,
            precopy_bytes,
            state_digest: dev.state_digest(),
            live,
        })
    }
}

/// The plugin's native version for this device and the version to emit.
fn versions(
    plugin: &dyn VendorPlugin,
    info: &mdevmig_plugin_api::DeviceInfo,
    opts: &SaveOptions,
) -> Result<(u32, u32)> {
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
    Ok((native, target))
}

/// Per raw section, the spec it is sent under at version `target` (converted by
/// the plugin when `target` is older than `native`), or `None` when it is left
/// out (converted away, or an optional section the caller omits).
fn conversion(
    plugin: &dyn VendorPlugin,
    info: &mdevmig_plugin_api::DeviceInfo,
    layout: &[SectionLayout],
    native: u32,
    target: u32,
    opts: &SaveOptions,
) -> Result<Vec<Option<SectionSpec>>> {
    let specs: Vec<SectionSpec> = layout.iter().map(|l| l.spec.clone()).collect();
    let plan: Vec<SectionConversion> = if target == native {
        specs.into_iter().map(SectionConversion::Keep).collect()
    } else {
        plugin
            .convert(info, native, target, &specs)
            .map_err(|e| Error::new(Code::CannotConvert, format!("[{}] {}", e.code, e.message)))?
    };
    if plan.len() != layout.len() {
        return Err(Error::new(
            Code::Internal,
            "plugin conversion plan does not cover every section",
        ));
    }
    Ok(plan
        .into_iter()
        .map(|c| match c {
            SectionConversion::Keep(s) if !opts.omit.contains(&s.name) || s.required => Some(s),
            _ => None,
        })
        .collect())
}

/// The header's section table: one entry per kept section. A streamed section
/// declares its bound; its end record signs the final length.
fn section_table(layout: &[SectionLayout], keep: &[Option<SectionSpec>]) -> Vec<SectionEntry> {
    layout
        .iter()
        .zip(keep)
        .filter_map(|(l, k)| {
            k.as_ref().map(|s| SectionEntry {
                name: s.name.clone(),
                version: s.version,
                flags: if s.required { SECTION_REQUIRED } else { 0 }
                    | if s.streamed { SECTION_STREAMED } else { 0 },
                length: if s.streamed { s.max_len } else { l.len },
            })
        })
        .collect()
}

/// A fresh random stream id (`spec/wire-format.md`: unique per stream, so that
/// chunks cannot be spliced between streams signed by the same key).
fn new_stream_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    id
}

/// What one device read gave.
enum Got {
    Data(usize),
    /// PRE_COPY's temporary end of data ("no more now").
    Pause,
    End,
}

/// Reads the device's raw stream into the envelope writer; at each temporary end
/// of data in PRE_COPY, [`Live`] decides what comes next.
struct RawSource<'g, 'd> {
    dev: &'g mut SourceGuard<'d>,
    live: Live,
    read: u64,
    precopy_bytes: u64,
}

type Writer<W> = StreamWriter<Counted<W>>;

impl RawSource<'_, '_> {
    /// One device read.
    fn read_raw(&mut self, buf: &mut [u8]) -> Result<Got> {
        self.live.before_read();
        match self.dev.read_data(buf)? {
            DataRead::Data(n) => {
                self.read = self.read.saturating_add(n as u64);
                if self.live.in_precopy {
                    self.precopy_bytes = self.precopy_bytes.saturating_add(n as u64);
                }
                self.live.count_raw(n);
                Ok(Got::Data(n))
            }
            DataRead::NotYet if self.live.in_precopy => Ok(Got::Pause),
            DataRead::NotYet => Err(Error::new(
                Code::DeviceData,
                "device returned ENOMSG in STOP_COPY",
            )),
            DataRead::End => Ok(Got::End),
        }
    }

    /// The device has nothing now: send every complete chunk, then let the
    /// round's owner decide (the save reads again when this returns).
    fn pause<W: Write>(&mut self, w: &mut Writer<W>) -> Result<()> {
        w.flush_complete()?;
        self.live.emitted(w.emitted());
        self.live.at_temporary_end(&mut **self.dev, w.held())
    }

    /// Reads what the device has into `buf` (at least one byte), waiting out
    /// temporary ends; 0 at the device's end of data.
    fn read_some<W: Write>(&mut self, w: &mut Writer<W>, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.read_raw(buf)? {
                Got::Data(n) => return Ok(n),
                Got::Pause => self.pause(w)?,
                Got::End => return Ok(0),
            }
        }
    }

    /// Fills `buf` exactly: framing, or data that is not sent.
    fn fill<W: Write>(&mut self, w: &mut Writer<W>, buf: &mut [u8]) -> Result<()> {
        let mut got = 0;
        while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
            match self.read_some(w, rest)? {
                0 => return Err(self.short()),
                n => got += n,
            }
        }
        Ok(())
    }

    fn short(&self) -> Error {
        Error::new(
            Code::DeviceData,
            format!(
                "device stream ended after {} bytes, before its declared size",
                self.read
            ),
        )
    }

    /// Moves up to `max` bytes from the device straight into the chunk being
    /// built. The read happens inside the writer's callback, so a temporary end
    /// is reported out (as `Got::Pause`) and handled here, with the writer free.
    fn copy_into<W: Write>(&mut self, w: &mut Writer<W>, max: usize) -> Result<Got> {
        let mut got = Got::End;
        let n = w.write_some(max, |space| {
            got = self.read_raw(space)?;
            Ok(match got {
                Got::Data(n) => n,
                Got::Pause | Got::End => 0,
            })
        })?;
        self.live.emitted(w.emitted());
        Ok(match got {
            Got::Data(_) => Got::Data(n),
            other => other,
        })
    }

    /// Copies a streamed section from the device until the device's end of
    /// data (or, for a section left out, reads and discards it); a device that
    /// yields more than the section's bound is refused. Returns the final length.
    fn stream_section<W: Write>(
        &mut self,
        w: &mut Writer<W>,
        keep: bool,
        bound: u64,
        name: &str,
    ) -> Result<u64> {
        let over = || {
            Error::new(
                Code::DeviceOverBound,
                format!("the device yields more than section {name}'s bound of {bound} bytes"),
            )
        };
        if !keep {
            let mut discard = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = self.read_some(w, &mut discard)? as u64;
                if n == 0 {
                    return Ok(total);
                }
                total = total.saturating_add(n);
                if total > bound {
                    return Err(over());
                }
            }
        }
        loop {
            if w.section_room() == 0 {
                let mut probe = [0u8; 1];
                if self.read_some(w, &mut probe)? != 0 {
                    return Err(over());
                }
                return w.end_section();
            }
            match self.copy_into(w, usize::MAX)? {
                Got::Data(_) => {}
                Got::Pause => self.pause(w)?,
                Got::End => return w.end_section(),
            }
        }
    }

    /// Copies an exact-length section of `len` bytes into `w` (the device writes
    /// straight into the chunk being signed), or reads and discards it when the
    /// section is left out.
    fn copy_exact<W: Write>(&mut self, w: &mut Writer<W>, keep: bool, len: u64) -> Result<()> {
        let mut left = len;
        let mut discard = Vec::new();
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            let n = if keep {
                match self.copy_into(w, max)? {
                    Got::Data(n) => n,
                    Got::Pause => {
                        self.pause(w)?;
                        0
                    }
                    Got::End => return Err(self.short()),
                }
            } else {
                discard.resize(max.min(1 << 20), 0);
                self.fill(w, &mut discard)?;
                discard.len()
            };
            left = left.saturating_sub(n as u64);
        }
        Ok(())
    }

    /// After the last section: the device's stream must be at its end. A save
    /// still in PRE_COPY here (its whole state pre-copied) waits for STOP_COPY
    /// like any other temporary end.
    fn expect_end<W: Write>(&mut self, w: &mut Writer<W>) -> Result<()> {
        let mut probe = [0u8; 1];
        match self.read_some(w, &mut probe)? {
            0 => Ok(()),
            _ => Err(Error::new(
                Code::DeviceData,
                format!("device produced more than its declared {} bytes", self.read),
            )),
        }
    }
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

fn check_framing<W: Write>(
    plugin: &dyn VendorPlugin,
    src: &mut RawSource<'_, '_>,
    w: &mut Writer<W>,
    l: &SectionLayout,
) -> Result<()> {
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
    src.fill(w, &mut got)?;
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
