//! Live migration through the migration region, driven exactly as QEMU's
//! hw/vfio/migration.c drives a kernel device, and the broker's own convergence
//! policy (`save --precopy --downtime-bytes`).
//!
//! Source: PRE_COPY; rounds of "read until no more now, query precopy info"
//! while the guest keeps dirtying; PRE_COPY_P2P; STOP_COPY; read to EOF; STOP.
//! Destination: RESUMING; every block written as it arrives; STOP.

#[path = "support/opts.rs"]
mod opts;

use std::sync::Arc;
use std::time::Duration;

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::broker::{restore, save, Converge, SaveOptions, StopReason};
use mdevmig::device::{self, DataRead, MigState, MigrationDevice};
use mdevmig::plugins::Registry;
use mdevmig::Code;
use opts::ropts;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[7; 32])
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(key().verifying_key(), "test");
    t
}

fn open(spec: &str) -> Box<dyn MigrationDevice> {
    device::open(&spec.parse().unwrap(), &Registry::builtin())
        .unwrap()
        .0
}

fn region(spec: &str) -> MigrationRegion {
    MigrationRegion::new(
        open(spec),
        RegionConfig {
            registry: Arc::new(Registry::builtin()),
            key: Some(Arc::new(key())),
            trust: Some(Arc::new(trust())),
            save: SaveOptions::default(),
            restore: ropts(),
        },
    )
}

/// Moves bytes from `src` to `dst` until the source has no more now or ends.
fn pump(src: &mut MigrationRegion, dst: &mut MigrationRegion) -> (u64, DataRead) {
    let mut buf = vec![0u8; 1 << 20];
    let mut moved = 0;
    loop {
        match src.read_data(&mut buf).unwrap() {
            DataRead::Data(n) => {
                dst.write_data(&buf[..n]).unwrap();
                moved += n as u64;
            }
            other => return (moved, other),
        }
    }
}

fn digest(r: &mut MigrationRegion) -> [u8; 32] {
    r.device().unwrap().state_digest().unwrap()
}

/// QEMU's loop over `rounds` PRE_COPY rounds; returns the bytes of each round.
fn qemu_migrate(src: &mut MigrationRegion, dst: &mut MigrationRegion, rounds: usize) -> Vec<u64> {
    dst.set_state(MigState::Resuming).unwrap();
    src.set_state(MigState::PreCopy).unwrap();
    let mut moved = Vec::new();
    for round in 0..rounds {
        let (n, end) = pump(src, dst);
        assert_eq!(
            end,
            DataRead::NotYet,
            "round {round} ends at a temporary end of data"
        );
        // No kick since: still nothing now.
        assert_eq!(src.read_data(&mut [0u8; 64]).unwrap(), DataRead::NotYet);
        moved.push(n);
        let info = src.precopy_info().unwrap();
        assert_eq!(info.initial_bytes, 0, "the initial data has been read");
        assert!(
            info.dirty_bytes > 0,
            "section ends and the trailer are still to come"
        );
        // The guest keeps running between rounds.
        std::thread::sleep(Duration::from_millis(30));
    }
    src.set_state(MigState::PreCopyP2p).unwrap();
    src.set_state(MigState::StopCopy).unwrap();
    let (_, end) = pump(src, dst);
    assert_eq!(end, DataRead::End);
    src.set_state(MigState::Stop).unwrap();
    dst.set_state(MigState::Stop).unwrap();
    moved
}

fn arcs(r: &MigrationRegion) -> Vec<String> {
    r.history().iter().map(|(a, b)| format!("{a}->{b}")).collect()
}

#[test]
fn a_qemu_shaped_loop_migrates_a_variable_length_vgpu_while_its_guest_dirties() {
    let mut src = region("sim:xe/xe-vf-64m,seed=5,dirty-rate=64M");
    let mut dst = region("sim:xe/xe-vf-64m,seed=6");
    let before = digest(&mut dst);
    let rounds = qemu_migrate(&mut src, &mut dst, 4);
    assert!(rounds[0] > 64 << 20, "round 1 carries the VRAM: {rounds:?}");
    assert!(
        rounds[1..].iter().all(|&n| n > 0),
        "each later round re-sends what the guest dirtied: {rounds:?}"
    );
    let saved = src.last_save.as_ref().unwrap();
    let restored = dst.last_restore.as_ref().unwrap();
    assert_eq!(saved.state_digest, restored.state_digest);
    assert_ne!(restored.state_digest, Some(before));
    assert_eq!(saved.live.stop_reason, StopReason::Vmm);
    // The save counts the rounds it read in PRE_COPY: the VMM's four, and the
    // re-sends its last query prepared if they were read before the stop.
    assert!(
        (4..=5).contains(&saved.live.rounds.len()),
        "{:?}",
        saved.live.rounds
    );
    assert_eq!(
        arcs(&src),
        [
            "RUNNING->PRE_COPY",
            "PRE_COPY->PRE_COPY_P2P",
            "PRE_COPY_P2P->STOP_COPY",
            "STOP_COPY->STOP"
        ]
    );
    assert_eq!(
        arcs(&dst),
        [
            "RUNNING->RUNNING_P2P",
            "RUNNING_P2P->STOP",
            "STOP->RESUMING",
            "RESUMING->STOP"
        ]
    );
}

#[test]
fn a_qemu_shaped_loop_migrates_simgpu_whose_layout_has_fixed_lengths() {
    let mut src = region("sim:simgpu/vgpu-64m,seed=5,dirty-rate=16M");
    let mut dst = region("sim:simgpu/vgpu-64m,seed=6");
    let rounds = qemu_migrate(&mut src, &mut dst, 3);
    // One round of initial data (the framebuffer); its dirtied pages travel in
    // fb-dirty, whose length the header fixed, after the stop.
    assert!(
        rounds[0] >= 64 << 20 && rounds[1..].iter().all(|&n| n == 0),
        "{rounds:?}"
    );
    let saved = src.last_save.as_ref().unwrap();
    assert_eq!(
        saved.state_digest,
        dst.last_restore.as_ref().unwrap().state_digest
    );
    assert!(saved.live.downtime_bytes > 0 && saved.live.downtime_bytes < 8 << 20);
}

#[test]
fn precopy_info_and_data_size_count_what_the_vmm_will_read() {
    let mut src = region("sim:xe/xe-vf-64m,seed=9");
    let mut dst = region("sim:xe/xe-vf-64m,seed=10");
    dst.set_state(MigState::Resuming).unwrap();
    src.set_state(MigState::PreCopy).unwrap();
    let first = src.precopy_info().unwrap();
    assert!(first.initial_bytes > 64 << 20, "{first:?}");
    let (n, _) = pump(&mut src, &mut dst);
    let estimate = src.data_size().unwrap();
    src.set_state(MigState::StopCopy).unwrap();
    let (rest, _) = pump(&mut src, &mut dst);
    assert!(
        first.initial_bytes >= n,
        "initial {} < read {n}",
        first.initial_bytes
    );
    assert!(
        estimate >= rest,
        "data size {estimate} < what STOP_COPY moved {rest}"
    );
    src.set_state(MigState::Stop).unwrap();
    dst.set_state(MigState::Stop).unwrap();
    let saved = src.last_save.as_ref().unwrap();
    assert_eq!(saved.live.downtime_bytes, rest);
    // Outside PRE_COPY, precopy info is EINVAL, as the kernel's.
    assert!(src.precopy_info().is_err());
}

/// Leaving PRE_COPY for RUNNING after `k` rounds: the source is RUNNING with its
/// state unchanged, the destination (fed part of a stream) is reset, and both
/// can migrate again.
#[test]
fn leaving_precopy_for_running_in_any_round_leaves_the_source_running_and_unchanged() {
    for spec in ["sim:xe/xe-vf-64m,seed=21", "sim:simgpu/vgpu-64m,seed=21"] {
        let other = spec.replace("seed=21", "seed=22");
        for k in 1..=3 {
            let mut src = region(spec);
            let mut dst = region(&other);
            let (src_before, dst_before) = (digest(&mut src), digest(&mut dst));
            dst.set_state(MigState::Resuming).unwrap();
            src.set_state(MigState::PreCopy).unwrap();
            for _ in 0..k {
                pump(&mut src, &mut dst);
                src.precopy_info().unwrap();
            }
            src.set_state(MigState::Running).unwrap();
            assert_eq!(src.state(), MigState::Running);
            assert_eq!(src.device().unwrap().state().unwrap(), MigState::Running);
            assert_eq!(digest(&mut src), src_before, "{spec}: round {k}");
            assert_eq!(arcs(&src).last().map(String::as_str), Some("PRE_COPY->RUNNING"));
            // The destination's restore refuses the partial stream and resets it.
            let e = dst.set_state(MigState::Stop).unwrap_err();
            assert_eq!(e.code, Code::Truncated, "{spec}: round {k}: {e}");
            assert_eq!(dst.state(), MigState::Error);
            dst.reset().unwrap();
            assert_eq!(dst.device().unwrap().state().unwrap(), MigState::Running);
            assert_eq!(digest(&mut dst), dst_before, "{spec}: round {k}");
            // Both migrate afterwards.
            qemu_migrate(&mut src, &mut dst, 1);
            assert_eq!(
                src.last_save.as_ref().unwrap().state_digest,
                dst.last_restore.as_ref().unwrap().state_digest
            );
        }
    }
}

#[test]
fn p2p_precopy_abort_returns_to_running_p2p() {
    let mut src = region("sim:xe/xe-vf-64m,seed=31");
    let before = digest(&mut src);
    src.set_state(MigState::RunningP2p).unwrap();
    src.set_state(MigState::PreCopyP2p).unwrap();
    let mut sink = region("sim:xe/xe-vf-64m,seed=32");
    sink.set_state(MigState::Resuming).unwrap();
    pump(&mut src, &mut sink);
    src.set_state(MigState::PreCopy).unwrap();
    src.set_state(MigState::PreCopyP2p).unwrap();
    src.set_state(MigState::RunningP2p).unwrap();
    assert_eq!(src.device().unwrap().state().unwrap(), MigState::RunningP2p);
    src.set_state(MigState::Running).unwrap();
    assert_eq!(digest(&mut src), before);
    sink.reset().unwrap();
}

#[test]
fn a_region_dropped_mid_precopy_gives_the_device_back_running() {
    // The worker is parked at the temporary end; dropping the region must end it
    // (a VMM that dies mid-migration), not leave a thread holding the device.
    let mut src = region("sim:xe/xe-vf-64m,seed=41");
    let mut dst = region("sim:xe/xe-vf-64m,seed=42");
    dst.set_state(MigState::Resuming).unwrap();
    src.set_state(MigState::PreCopy).unwrap();
    pump(&mut src, &mut dst);
    drop(src);
    drop(dst);
}

fn converge(budget: Option<u64>, max_rounds: u32) -> SaveOptions {
    SaveOptions {
        precopy: true,
        converge: Converge {
            downtime_bytes: budget,
            max_rounds,
            max_precopy: Duration::from_secs(30),
        },
        ..Default::default()
    }
}

#[test]
fn a_converging_save_moves_at_most_its_budget_after_the_stop() {
    let budget = 2 << 20;
    let mut src = open("sim:xe/xe-vf-64m,seed=51,dirty-rate=32M");
    let mut out = Vec::new();
    let r = save(
        &mut *src,
        &Registry::builtin(),
        &key(),
        &mut out,
        &converge(Some(budget), 30),
    )
    .unwrap();
    assert!(r.live.converged, "{:?}", r.live);
    assert_eq!(r.live.stop_reason, StopReason::Budget);
    assert!(r.live.downtime_bytes <= budget, "{:?}", r.live);
    assert!(r.live.downtime_bytes <= r.live.left_at_stop);
    let before: u64 = r.live.rounds.iter().map(|x| x.bytes).sum();
    assert_eq!(before + r.live.downtime_bytes, out.len() as u64);
    let mut dst = open("sim:xe/xe-vf-64m,seed=52");
    let restored = restore(&mut *dst, &Registry::builtin(), &trust(), &out[..], &ropts()).unwrap();
    assert_eq!(restored.state_digest, r.state_digest);
}

#[test]
fn a_save_that_cannot_converge_stops_at_its_limit_and_says_so() {
    // A budget below what STOP_COPY must always move (GuC, GGTT, MMIO, the
    // trailer): rounds go on to the limit.
    let mut src = open("sim:xe/xe-vf-64m,seed=61,dirty-rate=64M");
    let mut out = Vec::new();
    let r = save(
        &mut *src,
        &Registry::builtin(),
        &key(),
        &mut out,
        &converge(Some(1024), 3),
    )
    .unwrap();
    assert!(!r.live.converged, "{:?}", r.live);
    assert_eq!(r.live.stop_reason, StopReason::MaxRounds);
    assert_eq!(r.live.rounds.len(), 3, "{:?}", r.live.rounds);
    assert!(r.live.downtime_bytes > 1024);
    let mut dst = open("sim:xe/xe-vf-64m,seed=62");
    let restored = restore(&mut *dst, &Registry::builtin(), &trust(), &out[..], &ropts()).unwrap();
    assert_eq!(restored.state_digest, r.state_digest);

    // simgpu's after-stop part has a fixed length: a budget under it never fits,
    // and the save goes on to its round limit, its later rounds empty.
    let mut g = open("sim:simgpu/vgpu-64m,seed=63,dirty-rate=8M");
    let r = save(
        &mut *g,
        &Registry::builtin(),
        &key(),
        &mut Vec::new(),
        &converge(Some(4096), 10),
    )
    .unwrap();
    assert!(!r.live.converged);
    assert_eq!(r.live.stop_reason, StopReason::MaxRounds);
    assert_eq!(r.live.rounds.len(), 10);
    assert!(
        r.live.rounds[1..].iter().all(|x| x.raw_bytes == 0),
        "{:?}",
        r.live.rounds
    );
}

#[test]
fn a_device_without_precopy_saves_in_stop_copy_and_reports_it() {
    let mut src = open("sim:xe/xe-vf-64m,seed=71,flags=1");
    let mut out = Vec::new();
    let r = save(
        &mut *src,
        &Registry::builtin(),
        &key(),
        &mut out,
        &converge(Some(1 << 30), 5),
    )
    .unwrap();
    assert_eq!(r.live.stop_reason, StopReason::NoPrecopy);
    assert!(r.live.rounds.is_empty());
    assert_eq!(r.live.downtime_bytes, out.len() as u64);
    assert!(r.live.converged);
}
