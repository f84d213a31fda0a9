//! [`SimGpuModel`]: a simulated vGPU for the broker's `sim` backend.
//!
//! # State
//!
//! The small sections (regs, telemetry, ctx3, encoder) are held decoded; the
//! framebuffer is one generation number per 4 KiB page and its bytes are generated
//! on the fly ([`crate::fbgen`]), so a 1 GiB device costs about 1 MiB. Everything
//! is derived from [`SimOptions::seed`]: the same seed gives the same bytes.
//!
//! # Saving and pre-copy
//!
//! The raw stream is `fb` first, then `fb-dirty`, `regs`, `telemetry` (v2+), `ctx3`
//! (v3) and `encoder` (with `encoder=on`). [`precopy_len`](SimModel::precopy_len)
//! covers the `fb` record: the framebuffer as it was at
//! [`begin_save`](SimModel::begin_save). Pages the guest writes after that
//! ([`guest_activity`](SimModel::guest_activity)) are tracked, and the rest of the
//! stream (everything after `fb`) is fixed at the first read past `precopy_len`,
//! i.e. when the device is stopped: `fb-dirty` then carries the current bytes of
//! every page dirtied since `begin_save`, and the small sections their current
//! values. Loading `fb` then `fb-dirty` gives the framebuffer at stop time.
//!
//! `fb-dirty` has a fixed capacity (256 or 1024 pages, see [`crate::types`]) because
//! the broker needs every section length before the first byte is sent. While a
//! save is being tracked the simulated guest is throttled like a real device would
//! be: once `capacity` distinct pages are dirty, writes to further pages are held
//! back (they do not happen); pages already dirty can be written again. Activity
//! after the stop-copy part was fixed means the device was resumed: the save is
//! over and tracking stops.
//!
//! # Loading
//!
//! Loads are parsed incrementally and checked as [`VendorPlugin`] validation would
//! (every structured section, record framing, order, lengths); the old state stays
//! until [`end_load`](SimModel::end_load) succeeds. Framebuffer pages that equal
//! the generator's output for their own key and generation are kept as 4 bytes;
//! other pages are kept verbatim up to 64 MiB in total ([`crate::fb::STORE_CAP`]),
//! beyond that only as SHA-256 digests: such a device keeps its digest but cannot be
//! saved again ([`SimGpuModel::resavable`]; `read_raw` then stops short at the
//! first such page). Any device loaded from a simulated source, and any `vgpu-64m`,
//! can always be saved again.
//!
//! # Digest
//!
//! [`digest`](SimModel::digest) is SHA-256 of the device's guest-visible state, not
//! of one raw stream, so that a state saved with pre-copy (fb + fb-dirty), or
//! converted to an older version (ctx3 unused, telemetry dropped), has the digest of
//! the state it restores:
//!
//! ```text
//! SHA-256( "mdevmig-simgpu-state/1" 00 ‖ u8 len(type) ‖ type
//!        ‖ regs (4096) ‖ ctx3 (272; the reset image when absent)
//!        ‖ 00 (encoder=off) | 01 ‖ encoder (256; idle when absent)
//!        ‖ u32 pages ‖ per page: 01 ‖ key u64 ‖ gen u64   (generated page)
//!                               | 02 ‖ SHA-256(page bytes) (any other page) )
//! ```
//!
//! Telemetry is host-side and not included. A page is "generated" when its bytes
//! equal the generator's output for its own word 0 and word 1, so equal bytes give
//! equal elements: equal digests mean equal states.
//!
//! [`VendorPlugin`]: mdevmig_plugin_api::VendorPlugin

use std::collections::BTreeSet;

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{DeviceInfo, SimOptions, VendorError, VersionWindow};

use crate::codes;
use crate::fb::Fb;
use crate::load::Loader;
use crate::record::{self, RecordHeader, Section, FRAMING_LEN_U64};
use crate::sections::{encode_fb_dirty, Encoder};
use crate::state::{DevState, Rng};
use crate::types::{Config, GpuType, PAGE_SIZE, PAGE_SIZE_U64, SIM_VERSION_KEY, VGPU_FUZZ};

/// Pages the simulated guest writes per activity round.
pub const PAGES_PER_ROUND: u32 = 8;
/// Of those, pages written in the hot region (the first `capacity / 2` pages); the
/// rest anywhere.
const HOT_PAGES_PER_ROUND: u32 = 6;

/// A save in progress (or the snapshot a save would serve).
struct Save {
    fb: Fb,
    dirty: BTreeSet<u32>,
    /// `begin_save` was called and the device has not run since stop-copy.
    tracking: bool,
    /// The records after `fb`, fixed at the first read past `precopy_len`.
    tail: Option<Vec<u8>>,
    /// The device changed since this snapshot was taken without a save.
    stale: bool,
}

impl Save {
    fn of(state: &DevState, tracking: bool) -> Self {
        Self {
            fb: state.fb.clone(),
            dirty: BTreeSet::new(),
            tracking,
            tail: None,
            stale: false,
        }
    }
}

/// A simulated simgpu device.
pub struct SimGpuModel {
    ty: GpuType,
    config: Config,
    device: DeviceInfo,
    known: u32,
    produces: VersionWindow,
    version: u32,
    seed: u64,
    tick: u64,
    live: DevState,
    save: Save,
    load: Option<Loader>,
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for SimGpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimGpuModel")
            .field("type", &self.ty.name())
            .field("config", &self.config)
            .field("version", &self.version)
            .field("seed", &self.seed)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl SimGpuModel {
    /// A device of `ty` for a plugin that produces `produces` and loads up to
    /// `known`. `opts.attributes` holds the configuration attributes and,
    /// optionally, `version=N` (the state version to produce; default the newest).
    pub(crate) fn build(
        ty: GpuType,
        opts: &SimOptions,
        produces: VersionWindow,
        known: u32,
    ) -> Result<Self, VendorError> {
        let mut attrs = opts.attributes.clone();
        let version = match attrs.remove(SIM_VERSION_KEY) {
            None => produces.newest,
            Some(v) => v.parse::<u32>().map_err(|_| {
                VendorError::new(
                    codes::ATTRIBUTE,
                    format!("sim option version={v:?} is not a state version number"),
                )
            })?,
        };
        let config = Config::parse(&attrs, known >= 3)?;
        let mut model = Self::from_parts(ty, config, opts.seed, produces, known);
        model.set_produced_version(version)?;
        Ok(model)
    }

    fn from_parts(ty: GpuType, config: Config, seed: u64, produces: VersionWindow, known: u32) -> Self {
        let live = DevState::seeded(ty, config, seed);
        let save = Save::of(&live, false);
        Self {
            ty,
            config,
            device: DeviceInfo {
                vendor: crate::VENDOR.to_owned(),
                device_type: ty.name().to_owned(),
                attributes: config.to_attributes(),
                ..DeviceInfo::default()
            },
            known,
            produces,
            version: produces.newest,
            seed,
            tick: 0,
            live,
            save,
            load: None,
            digest: None,
        }
    }

    /// A device of `ty` as the default plugin ([`crate::SimGpuPlugin::new`])
    /// simulates it.
    pub fn new(ty: GpuType, opts: &SimOptions) -> Result<Self, VendorError> {
        Self::build(ty, opts, crate::types::WINDOW, crate::types::NEWEST)
    }

    /// A 16-page (64 KiB) device for fuzzing the loader, producing state version 3:
    /// its whole raw stream is about 86 KiB. Not a device type the plugin offers.
    /// Attributes that do not parse are replaced by the defaults.
    #[doc(hidden)]
    pub fn fuzz_model(seed: u64, attributes: &std::collections::BTreeMap<String, String>) -> Self {
        let config = Config::parse(attributes, true).unwrap_or_default();
        Self::from_parts(
            VGPU_FUZZ,
            config,
            seed,
            crate::types::WINDOW,
            crate::types::NEWEST,
        )
    }

    /// The device as the plugin sees it (completed attributes, no capabilities).
    pub fn device_info(&self) -> &DeviceInfo {
        &self.device
    }

    /// The state version `read_raw` produces.
    pub fn produced_version(&self) -> u32 {
        self.version
    }

    /// Chooses the state version saves produce: one the plugin produces, and 3 when
    /// `ctx3=on` (an older state would silently lose the ctx3 queues).
    pub fn set_produced_version(&mut self, version: u32) -> Result<(), VendorError> {
        if !self.produces.contains(version) {
            return Err(VendorError::new(
                codes::UNSUPPORTED_VERSION,
                format!("simgpu produces state versions {}, not {version}", self.produces),
            ));
        }
        if self.config.ctx3 && version < 3 {
            return Err(VendorError::new(
                codes::ATTRIBUTE,
                format!("a ctx3=on device cannot produce state version {version}, which has no ctx3"),
            ));
        }
        self.version = version;
        self.save.stale = true;
        Ok(())
    }

    /// Pages dirtied since `begin_save` (while tracking).
    pub fn dirty_pages(&self) -> usize {
        self.save.dirty.len()
    }

    /// False when some framebuffer page is known by its digest only (a load of
    /// more than 64 MiB of non-generated pages): `read_raw` cannot serve it.
    pub fn resavable(&self) -> bool {
        self.live.fb.resavable()
    }

    /// The data of a structured section as a save started now would carry it
    /// (`fb-dirty` empty); `None` for `fb` and for sections this device's produced
    /// version or configuration does not have.
    pub fn section_data(&self, section: Section) -> Option<Vec<u8>> {
        if !section.present(self.version, self.config) {
            return None;
        }
        match section {
            Section::Fb => None,
            Section::FbDirty => Some(encode_fb_dirty(self.ty, std::iter::empty())),
            Section::Regs => Some(self.live.regs.encode()),
            Section::Telemetry => Some(self.live.telemetry.encode()),
            Section::Ctx3 => Some(self.live.ctx3.encode()),
            Section::Encoder => self.live.encoder.as_ref().map(Encoder::encode),
        }
    }

    fn precopy(&self) -> u64 {
        FRAMING_LEN_U64.saturating_add(self.ty.fb_len())
    }

    fn snapshot(&mut self, tracking: bool) {
        self.save = Save::of(&self.live, tracking);
    }
}

impl SimModel for SimGpuModel {
    fn raw_len(&self) -> u64 {
        record::raw_len(self.ty, self.version, self.config)
    }

    fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        if offset == 0 && self.save.stale {
            self.snapshot(false);
        }
        let total = self.raw_len();
        let precopy = self.precopy();
        let mut done = 0usize;
        let mut off = offset;
        while off < total {
            let Some(out) = buf.get_mut(done..).filter(|b| !b.is_empty()) else {
                break;
            };
            let n = if off < FRAMING_LEN_U64 {
                let header = RecordHeader::for_section(Section::Fb, self.ty.fb_len()).encode();
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|o| header.get(o..))
                    .unwrap_or(&[]);
                let n = src.len().min(out.len());
                if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                    d.copy_from_slice(s);
                }
                n
            } else if off < precopy {
                let at = off.saturating_sub(FRAMING_LEN_U64);
                let page = u32::try_from(at / PAGE_SIZE_U64).unwrap_or(u32::MAX);
                let start = usize::try_from(at % PAGE_SIZE_U64).unwrap_or(0);
                let n = PAGE_SIZE.saturating_sub(start).min(out.len());
                let Some(dst) = out.get_mut(..n) else { break };
                if !self.save.fb.fill(page, start, dst) {
                    break;
                }
                n
            } else {
                if self.save.tail.is_none() {
                    let tail = self
                        .live
                        .tail(self.ty, self.version, self.config, &self.save.dirty);
                    self.save.tail = Some(tail);
                }
                let tail = self.save.tail.as_deref().unwrap_or(&[]);
                let src = usize::try_from(off.saturating_sub(precopy))
                    .ok()
                    .and_then(|o| tail.get(o..))
                    .unwrap_or(&[]);
                let n = src.len().min(out.len());
                if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                    d.copy_from_slice(s);
                }
                n
            };
            if n == 0 {
                break;
            }
            done = done.saturating_add(n);
            off = off.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        done
    }

    fn begin_save(&mut self) {
        self.snapshot(true);
    }

    fn precopy_len(&self) -> u64 {
        self.precopy()
    }

    fn dirty_bytes(&self) -> u64 {
        if self.save.tracking {
            u64::try_from(self.save.dirty.len())
                .unwrap_or(0)
                .saturating_mul(PAGE_SIZE_U64)
        } else {
            0
        }
    }

    fn guest_activity(&mut self, rounds: u32) {
        let pages = self.ty.fb_pages();
        let hot = (self.ty.dirty_cap() / 2).clamp(1, pages);
        let cap = usize::try_from(self.ty.dirty_cap()).unwrap_or(0);
        for _ in 0..rounds {
            if self.save.tail.is_some() {
                // The device ran again after stop-copy: that save is over.
                self.save.tracking = false;
            }
            if !self.save.tracking {
                self.save.stale = true;
            }
            self.tick = self.tick.wrapping_add(1);
            let mut rng = Rng(self.seed ^ self.tick.wrapping_mul(0xa076_1d64_78bd_642f));
            for j in 0..PAGES_PER_ROUND {
                let span = if j < HOT_PAGES_PER_ROUND { hot } else { pages };
                let page = rng.below32(span);
                if self.save.tracking {
                    if !self.save.dirty.contains(&page) && self.save.dirty.len() >= cap {
                        continue;
                    }
                    self.save.dirty.insert(page);
                }
                self.live.fb.touch(page);
            }
            self.live.step(self.tick);
        }
        self.digest = None;
    }

    fn begin_load(&mut self) {
        self.load = Some(Loader::new(self.ty, self.config, self.known));
    }

    fn load_data(&mut self, data: &[u8]) -> Result<(), VendorError> {
        match self.load.as_mut() {
            Some(l) => l.feed(data),
            None => Err(VendorError::new(
                codes::NOT_LOADING,
                "load data without a load in progress",
            )),
        }
    }

    fn end_load(&mut self) -> Result<(), VendorError> {
        let loader = self
            .load
            .take()
            .ok_or_else(|| VendorError::new(codes::NOT_LOADING, "end of load without a load in progress"))?;
        self.live = loader.finish()?;
        self.snapshot(false);
        self.digest = None;
        Ok(())
    }

    fn abort_load(&mut self) {
        self.load = None;
    }

    fn digest(&mut self) -> [u8; 32] {
        if let Some(d) = self.digest {
            return d;
        }
        let d = self.live.digest(self.ty);
        self.digest = Some(d);
        d
    }
}
