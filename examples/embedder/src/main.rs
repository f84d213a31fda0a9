//! The smallest VMM-shaped embedder of mdevmig, using only the library's public
//! API, as a VMM would:
//!
//! 1. a pre-check: the source describes its device, the destination checks the
//!    description against its own device before anything moves;
//! 2. a live save through the source's migration region, the loop of QEMU's
//!    `hw/vfio/migration.c`: PRE_COPY, rounds of "read until no more now, ask
//!    for precopy info and the data size" while the guest runs, until what is
//!    left fits a downtime budget; STOP_COPY, read the data fd to its end, STOP;
//! 3. a restore through the destination's region: RESUMING, write as data
//!    arrives, STOP;
//! 4. the destination's state digest compared with the source's.
//!
//! The devices are simulated vGPUs (`sim:` specs, the embedded default); a real
//! one is `vfio:<mdev uuid or sysfs path>`. The restore's validation runs in a
//! sandboxed child, which is this same program started again: `main` hands
//! that case to [`mdevmig::sandbox::child_entry`] before anything else.
//!
//! Usage: `mdevmig-embedder [DEVICE_TYPE]` (default `vgpu-64m`). Prints one
//! line per step and `MATCH` at the end; exits non-zero on any failure.

use std::process::ExitCode;
use std::sync::Arc;

use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::device::{self, DataRead, DeviceSpec, MigState};
use mdevmig::{Registry, RestoreOptions, SaveOptions, SigningKeyPair, TrustStore};

fn main() -> ExitCode {
    if let Some(status) = mdevmig::sandbox::child_entry(&Registry::builtin()) {
        return ExitCode::from(status);
    }
    let device_type = std::env::args().nth(1).unwrap_or_else(|| "vgpu-64m".into());
    match migrate(&device_type) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error[{}]: {e}", e.code);
            ExitCode::from(e.code.exit_status())
        }
    }
}

fn migrate(device_type: &str) -> mdevmig::Result<()> {
    let registry = Arc::new(Registry::builtin());
    let key = Arc::new(SigningKeyPair::generate());
    let mut trust = TrustStore::new();
    trust.add(key.verifying_key(), "source host");
    let trust = Arc::new(trust);
    let open = |seed: u32| -> mdevmig::Result<Box<dyn device::MigrationDevice>> {
        let spec: DeviceSpec = format!("sim:simgpu/{device_type},seed={seed},dirty-rate=16M").parse()?;
        Ok(device::open(&spec, &registry)?.0)
    };
    let (source, destination) = (open(1)?, open(2)?);

    // 1. Pre-check, before anything moves.
    let described = mdevmig::compat::describe(&*source, &registry, None)?;
    let load = registry.load_window(destination.info(), None);
    let verdict = mdevmig::compat::check(
        &described,
        destination.info(),
        &registry,
        load,
        &Default::default(),
    );
    println!(
        "pre-check: {} (emit state version {})",
        if verdict.verdict.compatible {
            "compatible"
        } else {
            "incompatible"
        },
        verdict.emit_version
    );
    verdict.verdict.clone().into_result()?;

    let config = || RegionConfig {
        registry: registry.clone(),
        key: Some(key.clone()),
        trust: Some(trust.clone()),
        save: SaveOptions::default(),
        restore: RestoreOptions::default(),
    };
    let mut src = MigrationRegion::new(source, config());
    let mut dst = MigrationRegion::new(destination, config());

    // 2 and 3. The source streams while the destination loads, as two VMMs
    // connected by a socket would; here the "socket" is this loop.
    dst.set_state(MigState::Resuming)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |src: &mut MigrationRegion, dst: &mut MigrationRegion| -> mdevmig::Result<u64> {
        let mut moved = 0u64;
        while let DataRead::Data(n) = src.read_data(&mut buf)? {
            dst.write_data(buf.get(..n).unwrap_or_default())?;
            moved += n as u64;
        }
        Ok(moved)
    };
    let live = src.migration_flags() & mdevmig::device::FLAG_PRE_COPY != 0;
    if live {
        // PRE_COPY rounds while the guest runs, until what STOP_COPY would still
        // move (in envelope bytes) fits the downtime budget.
        const BUDGET: u64 = 4 << 20;
        src.set_state(MigState::PreCopy)?;
        for round in 1..=10 {
            let moved = pump(&mut src, &mut dst)?;
            src.precopy_info()?;
            let left = src.data_size()?;
            println!("pre-copy round {round}: {moved} bytes; {left} left");
            if left <= BUDGET {
                break;
            }
        }
    }
    src.set_state(MigState::StopCopy)?;
    let moved = pump(&mut src, &mut dst)?;
    src.set_state(MigState::Stop)?;
    dst.set_state(MigState::Stop)?;
    println!("moved {moved} envelope bytes after the stop; source and destination in STOP");

    // 4. The same state on both sides.
    let digest = |r: &mut MigrationRegion| r.device().and_then(|d| d.state_digest());
    let (a, b) = (digest(&mut src), digest(&mut dst));
    if a.is_none() || a != b {
        return Err(mdevmig::Error::new(
            mdevmig::Code::Internal,
            "state digests differ",
        ));
    }
    println!("MATCH");
    Ok(())
}
