//! The source side: a device's raw state into a signed envelope.
//!
//! [`save`] plans the stream from the plugin's layout and the header alone
//! ([`SavePlan`]: which version, which sections, converted how), then copies the
//! device's raw stream section by section into the envelope writer
//! ([`SavePlan::copy`]), checking the plugin's framing on the way. The device is
//! held by a [`SourceGuard`] throughout, so any failure (or panic) puts the
//! source back to RUNNING.

use std::io::Write;

use mdevmig_plugin_api::{SectionConversion, SectionLayout, SectionSpec, VendorPlugin};

use super::guard::SourceGuard;
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
    let report = plan.copy(&mut dev, key, out, opts)?;
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
        })
    }

    /// Moves the device to PRE_COPY (when asked and supported) or STOP_COPY,
    /// copies every section into the envelope, and stops the device.
    fn copy(
        self,
        dev: &mut SourceGuard<'_>,
        key: &SigningKeyPair,
        out: impl Write,
        opts: &SaveOptions,
    ) -> Result<SaveReport> {
        let mut w = StreamWriter::new(out, &self.header, key)?;
        let precopy = opts.precopy && dev.migration_flags() & FLAG_PRE_COPY != 0;
        dev.set_state(if precopy {
            MigState::PreCopy
        } else {
            MigState::StopCopy
        })?;
        let mut src = RawSource {
            dev: &mut *dev,
            in_precopy: precopy,
            read: 0,
            precopy_bytes: 0,
        };
        for (l, keep) in self.layout.iter().zip(&self.keep) {
            if l.spec.streamed {
                let bound = keep.as_ref().map_or(l.spec.max_len, |s| s.max_len);
                src.stream_section(keep.as_ref().map(|_| &mut w), bound, &l.spec.name)?;
            } else {
                check_framing(self.plugin, &mut src, l)?;
                src.copy_exact(keep.as_ref().map(|_| &mut w), l.len)?;
            }
        }
        src.expect_end()?;
        let (raw_bytes, precopy_bytes) = (src.read, src.precopy_bytes);
        let data_bytes = w.data_bytes();
        w.finish()?;
        dev.set_state(MigState::Stop)?;
        Ok(SaveReport {
            header: self.header,
            raw_bytes,
            data_bytes,
            precopy_bytes,
            state_digest: dev.state_digest(),
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

/// Reads the device's raw stream in exact amounts, moving from PRE_COPY to
/// STOP_COPY at the first temporary end of data.
struct RawSource<'g, 'd> {
    dev: &'g mut SourceGuard<'d>,
    in_precopy: bool,
    read: u64,
    precopy_bytes: u64,
}

impl RawSource<'_, '_> {
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

    /// Copies an exact-length section of `len` bytes into `w` (the device writes
    /// straight into the chunk being signed), or reads and discards it when the
    /// section is left out.
    fn copy_exact<W: Write>(&mut self, mut w: Option<&mut StreamWriter<W>>, len: u64) -> Result<()> {
        let mut left = len;
        let mut discard = Vec::new();
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            let n = match w.as_mut() {
                Some(w) => w.write_with(max, |space| self.fill(space))?,
                None => {
                    discard.resize(max.min(1 << 20), 0);
                    self.fill(&mut discard)?;
                    discard.len()
                }
            };
            left = left.saturating_sub(n as u64);
        }
        Ok(())
    }

    /// After the last section: the device's stream must be at its end.
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

fn check_framing(plugin: &dyn VendorPlugin, src: &mut RawSource<'_, '_>, l: &SectionLayout) -> Result<()> {
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
