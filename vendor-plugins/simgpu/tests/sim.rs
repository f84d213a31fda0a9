//! The simulated device: determinism, round trips at random split points, pre-copy
//! with dirty tracking, version and capability paths through a broker-like
//! transfer, load rejections, and the 1 GiB throughput.

mod common;

use std::time::Instant;

use common::*;
use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{SimOptions, SimProvider, VendorPlugin, VersionWindow};
use mdevmig_simgpu::record::{RecordHeader, FRAMING_LEN};
use mdevmig_simgpu::{codes, Section, SimGpuModel, SimGpuPlugin, PAGE_SIZE, VGPU_1G, VGPU_256M, VGPU_64M};

const CONFIGS: &[&[(&str, &str)]] = &[
    &[],
    &[("encoder", "on")],
    &[("ctx3", "on"), ("heads", "3")],
    &[("encoder", "on"), ("ctx3", "on"), ("heads", "4")],
];

#[test]
fn same_seed_same_bytes_different_seed_different_digest() {
    let mut a = model(VGPU_64M, 42, &[("encoder", "on")]);
    let mut b = model(VGPU_64M, 42, &[("encoder", "on")]);
    let mut c = model(VGPU_64M, 43, &[("encoder", "on")]);
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
    assert_eq!(stream_sha(&mut a), stream_sha(&mut b));
    assert_ne!(stream_sha(&mut a), stream_sha(&mut c));
    // Via the SimProvider, as the broker builds it.
    let plugin = SimGpuPlugin::new();
    let opts = SimOptions {
        seed: 42,
        attributes: attrs(&[("encoder", "on")]),
    };
    let mut d = plugin.sim_model("vgpu-64m", &opts).unwrap();
    assert_eq!(d.digest(), a.digest());
    assert_eq!(d.raw_len(), a.raw_len());
    // Configuration is part of the state.
    let mut e = model(VGPU_64M, 42, &[]);
    assert_ne!(e.digest(), a.digest());
    // Activity changes the digest, deterministically.
    a.guest_activity(3);
    b.guest_activity(3);
    assert_ne!(a.digest(), c.digest());
    assert_eq!(a.digest(), b.digest());
    assert_eq!(stream_sha(&mut a), stream_sha(&mut b));
}

#[test]
fn read_raw_is_the_same_at_any_offset_and_chunking() {
    let mut m = model(VGPU_64M, 7, &[("encoder", "on")]);
    let whole = read_all(&mut m, 1 << 20);
    let mut rng = TestRng(99);
    for _ in 0..300 {
        let off = rng.below(whole.len());
        let len = 1 + rng.below(20_000);
        let mut buf = vec![0u8; len];
        let n = m.read_raw(off as u64, &mut buf);
        assert_eq!(n, len.min(whole.len() - off));
        assert_eq!(&buf[..n], &whole[off..off + n], "offset {off}");
    }
    assert_eq!(whole, read_all(&mut m, 4093));
}

#[test]
fn round_trip_at_random_split_points_every_version_and_config() {
    let mut rng = TestRng(0x5eed);
    for (i, cfg) in CONFIGS.iter().enumerate() {
        for version in 1..=3u32 {
            if version < 3 && cfg.contains(&("ctx3", "on")) {
                continue;
            }
            let mut pairs = cfg.to_vec();
            let v = version.to_string();
            pairs.push(("version", &v));
            let mut src = model(VGPU_64M, 100 + i as u64, &pairs);
            src.guest_activity(5);
            let raw = read_all(&mut src, 1 << 20);
            let mut dst = model(VGPU_64M, 1, &pairs);
            assert_ne!(dst.digest(), src.digest());
            load_split(&mut dst, &raw, &mut rng).unwrap();
            assert_eq!(dst.digest(), src.digest(), "config {cfg:?} v{version}");
            // The restored device saves the same stream again.
            assert!(dst.resavable());
            assert_eq!(read_all(&mut dst, 777_777), raw);
        }
    }
}

#[test]
fn precopy_with_guest_activity_restores_the_final_state() {
    let mut rng = TestRng(17);
    for ty in [VGPU_64M, VGPU_256M] {
        let mut src = model(ty, 5, &[("encoder", "on"), ("ctx3", "on")]);
        let before = src.digest();
        src.begin_save();
        assert_eq!(src.dirty_bytes(), 0);
        let precopy = src.precopy_len();
        assert_eq!(precopy, FRAMING_LEN as u64 + ty.fb_len());
        let mut raw = vec![0u8; src.raw_len() as usize];
        // Pre-copy in pieces with the guest running in between.
        let mut off = 0usize;
        while (off as u64) < precopy {
            let end = (off + (3 << 20)).min(precopy as usize);
            assert_eq!(src.read_raw(off as u64, &mut raw[off..end]), end - off);
            off = end;
            src.guest_activity(2);
        }
        assert!(src.dirty_bytes() > 0);
        assert_eq!(src.dirty_bytes(), src.dirty_pages() as u64 * PAGE_SIZE as u64);
        // Stop-copy: the rest.
        let n = src.read_raw(off as u64, &mut raw[off..]);
        assert_eq!(off + n, raw.len());
        let after = src.digest();
        assert_ne!(before, after);
        let mut dst = model(ty, 6, &[("encoder", "on"), ("ctx3", "on")]);
        load_split(&mut dst, &raw, &mut rng).unwrap();
        assert_eq!(dst.digest(), after, "{}", ty.name());
        // The fb record alone holds the begin_save framebuffer: without fb-dirty's
        // pages applied the state would differ. Check by zeroing fb-dirty's count.
        let dirty_at = precopy as usize + FRAMING_LEN;
        assert_ne!(&raw[dirty_at + 4..dirty_at + 8], &[0, 0, 0, 0]);
    }
}

#[test]
fn dirty_pages_beyond_capacity_are_throttled_and_the_stream_stays_coherent() {
    let mut src = model(VGPU_64M, 9, &[]);
    src.begin_save();
    let precopy = src.precopy_len() as usize;
    let mut raw = vec![0u8; src.raw_len() as usize];
    assert_eq!(src.read_raw(0, &mut raw[..precopy]), precopy);
    src.guest_activity(2000);
    assert_eq!(src.dirty_pages(), VGPU_64M.dirty_cap() as usize);
    src.guest_activity(100);
    assert_eq!(src.dirty_pages(), VGPU_64M.dirty_cap() as usize);
    let n = src.read_raw(precopy as u64, &mut raw[precopy..]);
    assert_eq!(precopy + n, raw.len());
    let mut dst = model(VGPU_64M, 10, &[]);
    load_split(&mut dst, &raw, &mut TestRng(3)).unwrap();
    assert_eq!(dst.digest(), src.digest());

    // Running again after stop-copy ends the save: no throttling, and the next
    // save (even without begin_save) serves the new state.
    src.guest_activity(500);
    assert_eq!(src.dirty_bytes(), 0);
    let raw2 = read_all(&mut src, 1 << 20);
    let mut dst2 = model(VGPU_64M, 10, &[]);
    load_split(&mut dst2, &raw2, &mut TestRng(4)).unwrap();
    assert_eq!(dst2.digest(), src.digest());
}

#[test]
fn broker_transfer_every_version_pair_and_window() {
    let mut rng = TestRng(2024);
    for ctx3 in ["off", "on"] {
        let pairs = [("ctx3", ctx3), ("encoder", "on")];
        let caps = ["simgpu.hw-encoder"];
        let src_plugin = SimGpuPlugin::new();
        let sdev = device("vgpu-64m", &pairs, &caps);
        for version in 1..=3u32 {
            if ctx3 == "on" && version < 3 {
                continue;
            }
            let v = version.to_string();
            let mut sp = pairs.to_vec();
            sp.push(("version", &v));
            let mut src = model(VGPU_64M, 77, &sp);
            src.guest_activity(4);
            let raw = read_all(&mut src, 1 << 20);
            for oldest in 1..=3u32 {
                for newest in oldest..=3u32 {
                    let w = VersionWindow::new(oldest, newest);
                    let dp = SimGpuPlugin::with_windows(w, w).unwrap();
                    // A destination without version 3 cannot even be configured ctx3=on.
                    let dattrs = dp.configure("vgpu-64m", &attrs(&pairs));
                    if ctx3 == "on" && newest < 3 {
                        assert_eq!(dattrs.unwrap_err().code, codes::ATTRIBUTE);
                        continue;
                    }
                    let ddev = mdevmig_plugin_api::DeviceInfo {
                        attributes: dattrs.unwrap(),
                        ..sdev.clone()
                    };
                    assert_eq!(ddev.attributes, sdev.attributes);
                    let min = mdevmig_simgpu::record::min_version(
                        version,
                        mdevmig_simgpu::Config {
                            encoder: true,
                            ctx3: ctx3 == "on",
                            heads: 1,
                        },
                    );
                    // The broker's rule: accept iff O <= V and M <= L; otherwise
                    // convert down to L if the plugin can.
                    let direct = oldest <= version && min <= newest;
                    let to = if direct {
                        version.min(newest.max(version))
                    } else {
                        newest
                    };
                    let mut dst = dp
                        .model(
                            VGPU_64M,
                            &SimOptions {
                                seed: 1,
                                attributes: attrs(&pairs),
                            },
                        )
                        .unwrap();
                    let r = if direct || newest < version {
                        transfer(
                            (&src_plugin, &sdev, &raw, version),
                            (&dp, &ddev, &mut dst),
                            to,
                            &[],
                            &mut rng,
                        )
                    } else {
                        // V < O: only an up-conversion would help, which is refused.
                        let specs = src_plugin.sections(&sdev, version).unwrap();
                        let e = src_plugin.convert(&sdev, version, oldest, &specs).unwrap_err();
                        assert_eq!(e.code, codes::CANNOT_CONVERT);
                        continue;
                    };
                    let expect_ok = direct || ctx3 == "off";
                    match r {
                        Ok(()) => {
                            assert!(expect_ok, "v{version} -> {w} ctx3={ctx3} should fail");
                            assert_eq!(dst.digest(), src.digest(), "v{version} -> {w} ctx3={ctx3}");
                        }
                        Err(e) => {
                            assert!(!expect_ok, "v{version} -> {w} ctx3={ctx3}: {e:?}");
                            assert_eq!(e.code, codes::CANNOT_CONVERT);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn loader_skips_unknown_optional_records_and_refuses_unknown_required_ones() {
    let v1 = SimGpuPlugin::with_windows(VersionWindow::new(1, 1), VersionWindow::new(1, 1)).unwrap();
    let v2 = SimGpuPlugin::with_windows(VersionWindow::new(1, 2), VersionWindow::new(1, 2)).unwrap();
    let opts = SimOptions {
        seed: 3,
        attributes: attrs(&[]),
    };
    let mut src = model(VGPU_64M, 11, &[("version", "2")]);
    let raw_v2 = read_all(&mut src, 1 << 20);
    // A v1-only device skips telemetry (optional) and restores the same state.
    let mut d1 = v1.model(VGPU_64M, &opts).unwrap();
    load_split(&mut d1, &raw_v2, &mut TestRng(1)).unwrap();
    assert_eq!(d1.digest(), src.digest());
    // A v2-only device refuses a v3 stream: ctx3 is required and unknown to it.
    let mut src3 = model(VGPU_64M, 11, &[]);
    assert_eq!(
        src3.digest(),
        src.digest(),
        "telemetry and an unused ctx3 are not in the digest"
    );
    let raw_v3 = read_all(&mut src3, 1 << 20);
    let mut d2 = v2.model(VGPU_64M, &opts).unwrap();
    let before = d2.digest();
    let e = load_split(&mut d2, &raw_v3, &mut TestRng(2)).unwrap_err();
    assert_eq!(e.code, codes::UNKNOWN_SECTION);
    assert_eq!(d2.digest(), before, "a failed load leaves the old state");
    // An unknown optional record anywhere is skipped; an unknown required one is not.
    for (flags, ok) in [(0u32, true), (1, false)] {
        let mut raw = raw_v2.clone();
        let at = raw.len() - (FRAMING_LEN + 64);
        let mut extra = RecordHeader {
            tag: 99,
            version: 1,
            flags,
            length: 5,
        }
        .encode()
        .to_vec();
        extra.extend_from_slice(b"hello");
        raw.splice(at..at, extra);
        let mut d = model(VGPU_64M, 1, &[]);
        let r = load_split(&mut d, &raw, &mut TestRng(5));
        assert_eq!(r.is_ok(), ok, "{r:?}");
        if ok {
            assert_eq!(d.digest(), src.digest());
        } else {
            assert_eq!(r.unwrap_err().code, codes::UNKNOWN_SECTION);
        }
    }
}

#[test]
fn skipping_the_encoder_needs_the_capability_or_the_operator() {
    let pairs = [("encoder", "on")];
    let sp = SimGpuPlugin::new();
    let sdev = device("vgpu-64m", &pairs, &["simgpu.hw-encoder"]);
    let mut src = model(VGPU_64M, 8, &pairs);
    let raw = read_all(&mut src, 1 << 20);
    let spec = sp
        .sections(&sdev, 3)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "simgpu.encoder")
        .unwrap();
    assert!(spec.required);
    assert_eq!(spec.capability.as_deref(), Some("simgpu.hw-encoder"));
    // Destination without the capability: refused by default.
    let ddev = device("vgpu-64m", &pairs, &[]);
    let mut dst = model(VGPU_64M, 1, &pairs);
    let e = transfer(
        (&sp, &sdev, &raw, 3),
        (&sp, &ddev, &mut dst),
        3,
        &[],
        &mut TestRng(1),
    )
    .unwrap_err();
    assert_eq!(e.code, "test.missing_capability");
    // The operator allowed skipping simgpu.encoder: loads, but the encoder session
    // is lost, and the digest says so.
    transfer(
        (&sp, &sdev, &raw, 3),
        (&sp, &ddev, &mut dst),
        3,
        &["simgpu.encoder"],
        &mut TestRng(1),
    )
    .unwrap();
    assert_ne!(dst.digest(), src.digest());
    assert_eq!(dst.section_data(Section::Regs), src.section_data(Section::Regs));
    // With the capability everything arrives.
    let ddev = device("vgpu-64m", &pairs, &["simgpu.hw-encoder"]);
    transfer(
        (&sp, &sdev, &raw, 3),
        (&sp, &ddev, &mut dst),
        3,
        &[],
        &mut TestRng(1),
    )
    .unwrap();
    assert_eq!(dst.digest(), src.digest());
}

/// The records of a 64m stream: (offset, header).
fn records(raw: &[u8]) -> Vec<(usize, RecordHeader)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < raw.len() {
        let h = RecordHeader::decode(raw[off..off + FRAMING_LEN].try_into().unwrap()).unwrap();
        out.push((off, h));
        off += FRAMING_LEN + h.length as usize;
    }
    out
}

fn load_code(raw: &[u8], pairs: &[(&str, &str)]) -> &'static str {
    let mut d = model(VGPU_64M, 1, pairs);
    let before = d.digest();
    let e = load_split(&mut d, raw, &mut TestRng(8)).unwrap_err();
    assert_eq!(d.digest(), before);
    e.code
}

#[test]
fn load_rejections_carry_their_codes() {
    let pairs = [("encoder", "on")];
    let mut src = model(VGPU_64M, 21, &pairs);
    let raw = read_all(&mut src, 1 << 20);
    let recs = records(&raw);
    assert_eq!(recs.len(), 6);
    let span = |i: usize| {
        let (off, h) = recs[i];
        off..off + FRAMING_LEN + h.length as usize
    };
    // Framing: magic, checksum, reserved, unknown flag, wrong flags for the tag.
    for (at, x) in [(0usize, 1u8), (30, 1), (12, 1), (9, 0x10)] {
        let mut r = raw.clone();
        r[at] ^= x;
        assert_eq!(load_code(&r, &pairs), codes::FRAMING, "byte {at}");
    }
    let mut r = raw.clone();
    let (off, mut h) = recs[2];
    h.flags = 0;
    r[off..off + FRAMING_LEN].copy_from_slice(&h.encode());
    assert_eq!(load_code(&r, &pairs), codes::FRAMING);
    // Wrong record length.
    let mut r = raw.clone();
    let (off, mut h) = recs[2];
    h.length += 1;
    r[off..off + FRAMING_LEN].copy_from_slice(&h.encode());
    r.insert(off + FRAMING_LEN, 0);
    assert_eq!(load_code(&r, &pairs), codes::BAD_LENGTH);
    // Order: regs before fb-dirty; a record twice.
    let mut r = raw[span(0)].to_vec();
    r.extend_from_slice(&raw[span(2)]);
    r.extend_from_slice(&raw[span(1)]);
    assert_eq!(load_code(&r, &pairs), codes::RECORD_ORDER);
    let mut r = raw.clone();
    r.extend_from_slice(&raw[span(5)]);
    assert_eq!(load_code(&r, &pairs), codes::RECORD_ORDER);
    // Missing required records.
    let mut r = raw[span(0)].to_vec();
    r.extend_from_slice(&raw[span(1)]);
    assert_eq!(load_code(&r, &pairs), codes::MISSING_SECTION);
    let r = raw[span(1).start..].to_vec();
    assert_eq!(load_code(&r, &pairs), codes::MISSING_SECTION);
    // Truncation: inside a header, inside fb, inside a structured record.
    for cut in [raw.len() - 1, raw.len() - 300, 1000, 17, span(5).start + 5] {
        assert_eq!(load_code(&raw[..cut], &pairs), codes::TRUNCATED, "cut at {cut}");
    }
    // Encoder state for an encoder=off device.
    assert_eq!(load_code(&raw, &[]), codes::ENCODER_MISMATCH);
    // Heads mismatch (a shell device of the same type, configured differently).
    assert_eq!(
        load_code(&raw, &[("encoder", "on"), ("heads", "2")]),
        codes::HEADS
    );
    // A bad register inside the stream: ring head past the ring.
    let mut r = raw.clone();
    let regs = span(2).start + FRAMING_LEN;
    r[regs + 20..regs + 24].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(load_code(&r, &pairs), codes::RING_INDEX);
    // Without begin_load.
    let mut d = model(VGPU_64M, 1, &pairs);
    assert_eq!(d.load_data(&raw[..10]).unwrap_err().code, codes::NOT_LOADING);
    assert_eq!(d.end_load().unwrap_err().code, codes::NOT_LOADING);
    // The first error sticks; abort_load keeps the old state.
    let before = d.digest();
    d.begin_load();
    assert_eq!(d.load_data(&[0u8; 40]).unwrap_err().code, codes::FRAMING);
    assert_eq!(d.load_data(&raw).unwrap_err().code, codes::FRAMING);
    assert_eq!(d.end_load().unwrap_err().code, codes::FRAMING);
    d.begin_load();
    d.load_data(&raw[..5000]).unwrap();
    d.abort_load();
    assert_eq!(d.digest(), before);
    // A fresh load after all that works.
    load_split(&mut d, &raw, &mut TestRng(9)).unwrap();
    assert_eq!(d.digest(), src.digest());
}

#[test]
fn foreign_framebuffer_pages_are_kept_and_resaved() {
    let mut src = model(VGPU_64M, 31, &[]);
    let mut raw = read_all(&mut src, 1 << 20);
    let fb = FRAMING_LEN;
    // Pixels that no generator made: page 0 (which also sets the key), page 5, the
    // last page.
    let mut rng = TestRng(12);
    for page in [0usize, 5, VGPU_64M.fb_pages() as usize - 1] {
        for b in &mut raw[fb + page * PAGE_SIZE..fb + (page + 1) * PAGE_SIZE] {
            *b = rng.next() as u8;
        }
    }
    let mut a = model(VGPU_64M, 1, &[]);
    load_split(&mut a, &raw, &mut rng).unwrap();
    assert_ne!(a.digest(), src.digest());
    assert!(a.resavable());
    assert_eq!(read_all(&mut a, 1 << 20), raw);
    let mut b = model(VGPU_64M, 2, &[]);
    load_split(&mut b, &raw, &mut rng).unwrap();
    assert_eq!(a.digest(), b.digest());
    // One pixel differs: another digest.
    raw[fb + 5 * PAGE_SIZE + 100] ^= 1;
    let mut c = model(VGPU_64M, 2, &[]);
    load_split(&mut c, &raw, &mut rng).unwrap();
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn more_than_64_mib_of_foreign_pixels_is_kept_as_a_digest_only() {
    let mut src = model(VGPU_256M, 31, &[]);
    let len = src.raw_len() as usize;
    let mut raw = vec![0u8; len];
    assert_eq!(src.read_raw(0, &mut raw), len);
    // Scramble the first 100 MiB of the framebuffer.
    let mut rng = TestRng(77);
    for w in raw[FRAMING_LEN..FRAMING_LEN + (100 << 20)].chunks_exact_mut(8) {
        w.copy_from_slice(&rng.next().to_le_bytes());
    }
    let mut a = SimGpuModel::new(VGPU_256M, &SimOptions::default()).unwrap();
    load_split(&mut a, &raw, &mut rng).unwrap();
    assert!(!a.resavable());
    let mut buf = vec![0u8; len];
    let n = a.read_raw(0, &mut buf);
    assert_eq!(
        n,
        FRAMING_LEN + (64 << 20),
        "read_raw stops at the first page it cannot serve"
    );
    assert_eq!(buf[..n], raw[..n]);
    let mut b = SimGpuModel::new(VGPU_256M, &SimOptions::default()).unwrap();
    load_split(&mut b, &raw, &mut rng).unwrap();
    assert_eq!(a.digest(), b.digest());
    raw[FRAMING_LEN + (90 << 20)] ^= 1;
    let mut c = SimGpuModel::new(VGPU_256M, &SimOptions::default()).unwrap();
    load_split(&mut c, &raw, &mut rng).unwrap();
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn produced_version_is_selectable() {
    let plugin = SimGpuPlugin::new();
    let mut m = model(VGPU_64M, 1, &[("version", "1")]);
    assert_eq!(m.produced_version(), 1);
    let dev = device("vgpu-64m", &[], &[]);
    let l1 = plugin.layout(&dev, 1, m.raw_len()).unwrap();
    assert_eq!(l1.len(), 3);
    m.set_produced_version(2).unwrap();
    assert_eq!(plugin.layout(&dev, 2, m.raw_len()).unwrap().len(), 4);
    assert_eq!(
        m.set_produced_version(4).unwrap_err().code,
        codes::UNSUPPORTED_VERSION
    );
    let opts = |pairs: &[(&str, &str)]| SimOptions {
        seed: 0,
        attributes: attrs(pairs),
    };
    let e = SimGpuModel::new(VGPU_64M, &opts(&[("ctx3", "on"), ("version", "2")])).unwrap_err();
    assert_eq!(e.code, codes::ATTRIBUTE);
    let e = SimGpuModel::new(VGPU_64M, &opts(&[("version", "x")])).unwrap_err();
    assert_eq!(e.code, codes::ATTRIBUTE);
    let e = SimGpuModel::new(VGPU_64M, &opts(&[("colour", "red")])).unwrap_err();
    assert_eq!(e.code, codes::ATTRIBUTE);
    let e = plugin.sim_model("vgpu-2g", &opts(&[])).err().unwrap();
    assert_eq!(e.code, codes::DEVICE_TYPE);
    let old = SimGpuPlugin::with_windows(VersionWindow::new(1, 2), VersionWindow::new(1, 2)).unwrap();
    assert_eq!(old.model(VGPU_64M, &opts(&[])).unwrap().produced_version(), 2);
}

#[test]
fn vgpu_1g_streams_fast_and_round_trips() {
    let mut src = model(VGPU_1G, 2026, &[("encoder", "on"), ("ctx3", "on")]);
    assert!(src.raw_len() > 1 << 30);
    src.begin_save();
    let mut dst = model(VGPU_1G, 1, &[("encoder", "on"), ("ctx3", "on")]);
    dst.begin_load();
    let mut buf = vec![0u8; 1 << 20];
    let len = src.raw_len();
    // Read the whole stream once for timing alone.
    let t = Instant::now();
    let mut off = 0u64;
    while off < len {
        let n = src.read_raw(off, &mut buf);
        assert!(n > 0);
        off += n as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    // Then read and load it.
    let t = Instant::now();
    let mut off = 0u64;
    while off < len {
        let n = src.read_raw(off, &mut buf);
        dst.load_data(&buf[..n]).unwrap();
        off += n as u64;
    }
    dst.end_load().unwrap();
    let both_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = dst.digest();
    let digest_s = t.elapsed().as_secs_f64();
    assert_eq!(d, src.digest());
    let gb = len as f64 / 1e9;
    eprintln!(
        "vgpu-1g: {len} bytes; read_raw {:.2} GB/s; read_raw+load_data {:.2} GB/s; digest {:.3} s",
        gb / read_s,
        gb / both_s,
        digest_s
    );
}
