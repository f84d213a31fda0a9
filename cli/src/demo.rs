//! `mdevmig demo`: a whole migration on simulated devices, narrated.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::json;

use super::output::Out;
use mdevmig::auth::{hex, SigningKeyPair, TrustStore};
use mdevmig::broker::{self, RestoreOptions, SaveOptions};
use mdevmig::compat;
use mdevmig::device::{self, DeviceSpec, MigrationDevice};
use mdevmig::plugins::Registry;
use mdevmig::{Code, Error, Result};

fn open(spec: &str, registry: &Registry) -> Result<(Box<dyn MigrationDevice>, device::HostOverrides)> {
    device::open(&spec.parse::<DeviceSpec>()?, registry)
}

/// A variable-length device: an Intel Xe VF, whose packet stream's length the
/// device knows only at its end, migrated; then a packet whose 64-bit `size` would
/// size a kernel allocation refused before the device sees it.
fn xe_step(
    t: &mut String,
    steps: &mut Vec<serde_json::Value>,
    registry: &Registry,
    key: &SigningKeyPair,
    trust: &TrustStore,
    dir: &std::path::Path,
) -> Result<()> {
    let (src_spec, dst_spec) = (
        "sim:xe/xe-vf-64m,seed=43,dirty-rate=32M",
        "sim:xe/xe-vf-64m,seed=8",
    );
    let (mut src, _) = open(src_spec, registry)?;
    let (mut dst, _) = open(dst_spec, registry)?;
    let estimate = src.data_size()?;
    let mut stream = Vec::new();
    // Live: PRE_COPY rounds while the guest dirties VRAM, until what is left
    // fits a 1 MiB downtime budget.
    let live = SaveOptions {
        precopy: true,
        converge: broker::Converge {
            downtime_bytes: Some(1 << 20),
            ..Default::default()
        },
        ..SaveOptions::default()
    };
    let saved = broker::save(&mut *src, registry, key, &mut stream, &live)?;
    let restored = broker::restore(
        &mut *dst,
        registry,
        trust,
        &stream[..],
        &RestoreOptions::default(),
    )?;
    let bound = saved.header.sections.first().map_or(0, |s| s.length);
    let same = saved.state_digest.is_some() && saved.state_digest == restored.state_digest;
    let _ = writeln!(
        t,
        "\n6. Variable-length state. A passthrough vGPU (here a simulated Intel Xe VF, {src_spec})"
    );
    let _ = writeln!(
        t,
        "   emits self-describing packets whose total is known only at the device's end of data."
    );
    let _ = writeln!(
        t,
        "   MIG_DATA_SIZE estimate {estimate} bytes; the device gave {} bytes. The header",
        saved.raw_bytes
    );
    let _ = writeln!(
        t,
        "   declared a bound of {bound}, and a signed end record fixed the final length."
    );
    let rounds: Vec<String> = saved.live.rounds.iter().map(|r| r.bytes.to_string()).collect();
    let _ = writeln!(
        t,
        "   Live: the guest dirtied VRAM at 32 MiB/s; PRE_COPY took {} round(s) [{}] bytes",
        rounds.len(),
        rounds.join(", ")
    );
    let _ = writeln!(
        t,
        "   ({}), then {} bytes moved after STOP_COPY in {:.1} ms.",
        saved.live.stop_reason.as_str(),
        saved.live.downtime_bytes,
        saved.live.downtime_seconds * 1e3
    );
    let _ = writeln!(
        t,
        "   restored into {dst_spec}, every packet checked by the Xe plugin as it streamed: {}",
        if same { "MATCH" } else { "MISMATCH" }
    );
    steps.push(
        json!({"step": "xe", "estimate": estimate, "bytes": saved.raw_bytes, "bound": bound, "match": same,
               "rounds": saved.live.rounds.iter().map(|r| r.bytes).collect::<Vec<_>>(),
               "downtime_bytes": saved.live.downtime_bytes, "converged": saved.live.converged}),
    );
    if !same {
        return Err(Error::new(
            Code::Internal,
            "demo: Xe digests differ after restore",
        ));
    }
    // A raw image as a hostile source would make it: the descriptor, then a VRAM
    // packet whose size field is 2^63 (the driver sizes kvzalloc() from it).
    use mdevmig_xe::format::{encode_descriptor, packet, Header, PacketType};
    let mut raw = packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20b, 0));
    raw.extend_from_slice(&Header::new(PacketType::VRAM, 0, 0, 0, 1 << 63).encode());
    raw.extend_from_slice(&[0u8; 4096]);
    let image = dir.join("hostile-xe.raw");
    std::fs::write(&image, &raw).map_err(|e| Error::io(Code::IoWrite, image.display(), &e))?;
    let file_spec = format!("file:{},plugin=xe,type=xe-vf-64m", image.display());
    let (mut file_dev, _) = open(&file_spec, registry)?;
    let mut hostile = Vec::new();
    broker::save(
        &mut *file_dev,
        registry,
        key,
        &mut hostile,
        &SaveOptions::default(),
    )?;
    let (mut victim, _) = open(dst_spec, registry)?;
    let before = victim.state_digest();
    let e = broker::restore(
        &mut *victim,
        registry,
        trust,
        &hostile[..],
        &RestoreOptions::default(),
    )
    .err()
    .ok_or_else(|| Error::new(Code::Internal, "demo: a 2^63-byte Xe packet was accepted"))?;
    let untouched = victim.state_digest() == before && victim.state()? == device::MigState::Running;
    let _ = writeln!(
        t,
        "   a signed stream whose VRAM packet claims size 2^63: error[{}] {}",
        e.code, e.message
    );
    let _ = writeln!(
        t,
        "     destination: {}",
        if untouched {
            "state unchanged, device RUNNING: the kernel never saw the size"
        } else {
            "CHANGED"
        }
    );
    steps.push(json!({"step": "xe_hostile", "code": e.code.as_str(), "untouched": untouched}));
    Ok(())
}

/// Runs the demo for `sim:<vendor>/<device_type>`.
pub fn run(device_type: &str, out: Out) -> Result<()> {
    let vendor = if device_type.starts_with("mtty") {
        "mtty"
    } else if device_type.starts_with("xe-") {
        "xe"
    } else {
        "simgpu"
    };
    run_for(vendor, device_type, out)
}

fn run_for(vendor: &str, device_type: &str, out: Out) -> Result<()> {
    let registry = Registry::builtin();
    let mut t = String::new();
    let mut steps = Vec::new();
    // A new private directory (mode 0700, a name nobody could have planted), gone
    // when the demo ends.
    let tmp = tempfile::Builder::new()
        .prefix("mdevmig-demo-")
        .tempdir()
        .map_err(|e| Error::io(Code::IoOpen, std::env::temp_dir().display(), &e))?;
    let dir = tmp.path();
    let started = Instant::now();

    // 1. Keys.
    let source_key = SigningKeyPair::generate();
    let (key_path, pub_path) = source_key.write_files(&dir.join("source"))?;
    let rogue_key = SigningKeyPair::generate();
    let trust = TrustStore::load(&pub_path)?;
    let _ = writeln!(
        t,
        "mdevmig demo: live-migrate a simulated {vendor} {device_type} between two hosts\n"
    );
    let _ = writeln!(
        t,
        "1. Keys. The source host signs device state with an ed25519 key; the destination"
    );
    let _ = writeln!(t, "   trusts only that key's public half.");
    let _ = writeln!(
        t,
        "   source key  {} (id {})",
        key_path.display(),
        source_key.id()
    );
    let _ = writeln!(t, "   trust store {}\n", pub_path.display());
    steps.push(json!({"step": "keys", "key_id": source_key.id().to_string()}));

    // 2. Pre-check.
    let src_spec = format!("sim:{vendor}/{device_type},seed=42");
    let dst_spec = format!("sim:{vendor}/{device_type},seed=7");
    let (mut src, src_host) = open(&src_spec, &registry)?;
    let (mut dst, dst_host) = open(&dst_spec, &registry)?;
    let plugin = registry.for_state(vendor, device_type)?;
    let produce = compat::effective_window(plugin.produces(device_type), src_host.versions)
        .ok_or_else(|| Error::new(Code::CannotConvert, "source produces nothing"))?;
    let claim = compat::StateClaim {
        vendor: vendor.into(),
        device_type: device_type.into(),
        state_version: produce.newest,
        min_version: produce.oldest,
        attributes: src.info().attributes.clone(),
        sections: plugin
            .sections(src.info(), produce.newest)?
            .iter()
            .map(|s| compat::StateSection {
                name: s.name.clone(),
                version: s.version,
                required: s.required,
            })
            .collect(),
    };
    let load = compat::effective_window(plugin.loads(device_type), dst_host.versions);
    let verdict = compat::evaluate(&claim, dst.info(), Some(plugin), load, &compat::Policy::default());
    let _ = writeln!(
        t,
        "2. Pre-check, before the destination VM exists: the source's state version and"
    );
    let _ = writeln!(t, "   sections against what the destination's plugin loads.");
    let _ = writeln!(
        t,
        "   source {src_spec} emits {vendor} state v{}; destination {dst_spec} loads {}",
        produce.newest,
        load.map(|l| l.to_string()).unwrap_or("nothing".into())
    );
    for s in &verdict.sections {
        let _ = writeln!(t, "   section {:<22} {:?}", s.name, s.action);
    }
    let _ = writeln!(
        t,
        "   verdict: {}\n",
        if verdict.compatible {
            "compatible"
        } else {
            "INCOMPATIBLE"
        }
    );
    steps.push(json!({"step": "precheck", "compatible": verdict.compatible}));
    if !verdict.compatible {
        return verdict.into_result().map(|_| ());
    }

    // 3. Save.
    let stream_path = dir.join("state.mdm");
    let file = std::fs::File::create(&stream_path)
        .map_err(|e| Error::io(Code::IoOpen, stream_path.display(), &e))?;
    let saved = broker::save(
        &mut *src,
        &registry,
        &source_key,
        std::io::BufWriter::new(file),
        &SaveOptions {
            precopy: true,
            ..SaveOptions::default()
        },
    )?;
    let src_digest = saved.state_digest.map(|d| hex(&d)).unwrap_or_default();
    let size = std::fs::metadata(&stream_path).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        t,
        "3. Save. The source device goes RUNNING -> PRE_COPY ({} bytes sent while the VM",
        saved.precopy_bytes
    );
    let _ = writeln!(
        t,
        "   still runs) -> STOP_COPY; its raw state is cut into sections and every chunk signed."
    );
    for s in &saved.header.sections {
        let _ = writeln!(
            t,
            "   {:<22} v{} {:<8} {:>10} bytes",
            s.name,
            s.version,
            if s.required() { "required" } else { "optional" },
            s.length
        );
    }
    let _ = writeln!(t, "   envelope: {} bytes in {}", size, stream_path.display());
    let _ = writeln!(t, "   source state-digest: {src_digest}\n");
    steps.push(json!({"step": "save", "bytes": size, "state_digest": src_digest}));

    // 4. Restore.
    let before = dst.state_digest().map(|d| hex(&d)).unwrap_or_default();
    let input =
        std::fs::File::open(&stream_path).map_err(|e| Error::io(Code::IoOpen, stream_path.display(), &e))?;
    let restored = broker::restore(
        &mut *dst,
        &registry,
        &trust,
        std::io::BufReader::new(input),
        &RestoreOptions::default(),
    )?;
    let dst_digest = restored.state_digest.map(|d| hex(&d)).unwrap_or_default();
    let _ = writeln!(
        t,
        "4. Restore. The destination checks the header and signature, the version window and"
    );
    let _ = writeln!(
        t,
        "   section policy, verifies every chunk and lets the plugin validate the state; only"
    );
    let _ = writeln!(t, "   then does the device enter RESUMING and see a byte.");
    let _ = writeln!(t, "   destination state-digest before: {before}");
    let _ = writeln!(t, "   destination state-digest after:  {dst_digest}");
    let same = !dst_digest.is_empty() && dst_digest == src_digest;
    let _ = writeln!(
        t,
        "   {} (device left in {} for the VMM to resume)\n",
        if same {
            "MATCH: the destination now holds the source's state"
        } else {
            "MISMATCH"
        },
        restored.final_state
    );
    steps.push(json!({"step": "restore", "state_digest": dst_digest, "match": same}));
    if !same {
        return Err(Error::new(Code::Internal, "demo: digests differ after restore"));
    }

    // 5. Attacks.
    let _ = writeln!(
        t,
        "5. Hostile streams are refused before any byte reaches the plugin or the device."
    );
    let mut tampered =
        std::fs::read(&stream_path).map_err(|e| Error::io(Code::IoRead, stream_path.display(), &e))?;
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let (mut victim, _) = open(&dst_spec, &registry)?;
    let before = victim.state_digest();
    let e = broker::restore(
        &mut *victim,
        &registry,
        &trust,
        &tampered[..],
        &RestoreOptions::default(),
    )
    .err()
    .ok_or_else(|| Error::new(Code::Internal, "demo: a tampered stream was accepted"))?;
    let untouched = victim.state_digest() == before && victim.state()? == device::MigState::Running;
    let _ = writeln!(
        t,
        "   one bit flipped at byte {mid}:  error[{}] {}",
        e.code, e.message
    );
    let _ = writeln!(
        t,
        "     destination: {}",
        if untouched {
            "state unchanged, device RUNNING (reset if it had begun loading)"
        } else {
            "CHANGED"
        }
    );
    steps.push(json!({"step": "tampered", "code": e.code.as_str()}));

    let (mut src2, _) = open(&src_spec, &registry)?;
    let mut rogue = Vec::new();
    broker::save(
        &mut *src2,
        &registry,
        &rogue_key,
        &mut rogue,
        &SaveOptions::default(),
    )?;
    let (mut victim, _) = open(&dst_spec, &registry)?;
    let e = broker::restore(
        &mut *victim,
        &registry,
        &trust,
        &rogue[..],
        &RestoreOptions::default(),
    )
    .err()
    .ok_or_else(|| {
        Error::new(
            Code::Internal,
            "demo: a stream from an untrusted key was accepted",
        )
    })?;
    let _ = writeln!(
        t,
        "   signed by an unknown key:     error[{}] {}",
        e.code, e.message
    );
    steps.push(json!({"step": "untrusted", "code": e.code.as_str()}));
    if vendor != "xe" {
        xe_step(&mut t, &mut steps, &registry, &source_key, &trust, dir)?;
    }
    let _ = writeln!(
        t,
        "\ndone in {:.1} s. Next: `mdevmig save --help`, `mdevmig restore --help`, spec/wire-format.md",
        started.elapsed().as_secs_f64()
    );
    out.ok(&t, json!({"steps": steps}));
    Ok(())
}
