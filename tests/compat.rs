//! The pre-check and the restore agree: a table of cases, each checked with
//! `compat::check` from descriptors alone and then acted out by saving
//! the source's state and restoring it with the same policy.

#[path = "support/opts.rs"]
mod opts;
use opts::ropts;
use std::collections::BTreeSet;

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::{restore, save, RestoreOptions, SaveOptions};
use mdevmig::codec::{StreamReader, StreamWriter};
use mdevmig::compat::{self as descriptor, Descriptor};
use mdevmig::compat::{effective_window, Policy};
use mdevmig::device::{self, DeviceSpec};
use mdevmig::plugins::Registry;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[9; 32])
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(key().verifying_key(), "test");
    t
}

fn describe(spec: &str) -> Descriptor {
    let reg = Registry::builtin();
    let (dev, host) = device::open(&spec.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    descriptor::describe(&*dev, &reg, host.versions).unwrap()
}

/// The stream the source emits by default (policy may pin a version).
fn default_stream(spec: &str, policy: &Policy) -> Vec<u8> {
    let reg = Registry::builtin();
    let (mut dev, host) = device::open(&spec.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let opts = SaveOptions {
        version: policy.pin_version,
        produce_window: host.versions,
        chunk_size: 1 << 20,
        ..Default::default()
    };
    let mut out = Vec::new();
    save(&mut *dev, &reg, &key(), &mut out, &opts).unwrap();
    out
}

/// Re-signs a stream's data under a modified header (a source that lies about
/// its minimum version, say), to reach cases a well-behaved plugin never emits.
fn rewrap(stream: &[u8], edit: impl FnOnce(&mut mdevmig::codec::Header)) -> Vec<u8> {
    let mut r = StreamReader::open(stream, &trust(), &Default::default()).unwrap();
    let mut h = r.header().header.clone();
    edit(&mut h);
    let k = key();
    let mut w = StreamWriter::new(Vec::new(), &h, &k).unwrap();
    while let Some(c) = r.next_chunk().unwrap() {
        w.write_data(c.data).unwrap();
    }
    w.finish().unwrap()
}

/// Restores `stream` into `dest`; Ok or the error code.
fn act(stream: &[u8], dest: &str, policy: &Policy) -> Result<(), String> {
    let reg = Registry::builtin();
    let (mut dev, host) = device::open(&dest.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let before = dev.state_digest();
    let opts = RestoreOptions {
        policy: policy.clone(),
        load_window: host.versions,
        ..ropts()
    };
    match restore(&mut *dev, &reg, &trust(), stream, &opts) {
        Ok(_) => Ok(()),
        Err(e) => {
            assert_eq!(
                dev.state_digest(),
                before,
                "a refused restore changed the destination"
            );
            Err(e.code.as_str().to_string())
        }
    }
}

fn precheck(source: &Descriptor, dest: &str, policy: &Policy) -> Result<(), String> {
    let reg = Registry::builtin();
    let (dev, host) = device::open(&dest.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let load = reg
        .vendor(&dev.info().vendor)
        .and_then(|p| effective_window(p.loads(&dev.info().device_type), host.versions));
    let r = descriptor::check(source, dev.info(), &reg, load, policy);
    if r.verdict.compatible {
        Ok(())
    } else {
        Err(r.verdict.reasons[0].code.to_string())
    }
}

struct Case {
    name: &'static str,
    source: &'static str,
    dest: &'static str,
    policy: Policy,
    /// Edits the source's header (and its descriptor) to reach the case.
    lie_min_version: Option<u32>,
    expect: Result<(), &'static str>,
}

fn case(
    name: &'static str,
    source: &'static str,
    dest: &'static str,
    expect: Result<(), &'static str>,
) -> Case {
    Case {
        name,
        source,
        dest,
        policy: Policy::default(),
        lie_min_version: None,
        expect,
    }
}

#[test]
fn precheck_and_restore_agree_on_every_case() {
    let skip_encoder = Policy {
        allow_skip: BTreeSet::from(["simgpu.encoder".to_string()]),
        ..Default::default()
    };
    let pin2 = Policy {
        pin_version: Some(2),
        ..Default::default()
    };
    let cases = vec![
        case(
            "same everything",
            "sim:simgpu/vgpu-64m",
            "sim:simgpu/vgpu-64m,seed=3",
            Ok(()),
        ),
        case(
            "vendor mismatch (GVT-g-like vs NVIDIA-like)",
            "sim:mtty/mtty-2",
            "sim:simgpu/vgpu-64m",
            Err("compat.vendor_mismatch"),
        ),
        case(
            "type mismatch",
            "sim:simgpu/vgpu-64m",
            "sim:simgpu/vgpu-256m",
            Err("compat.type_mismatch"),
        ),
        case(
            "type mismatch (mtty ports)",
            "sim:mtty/mtty-2",
            "sim:mtty/mtty-1",
            Err("compat.type_mismatch"),
        ),
        case(
            "shell device: same type, other configuration",
            "sim:simgpu/vgpu-64m,heads=2",
            "sim:simgpu/vgpu-64m,heads=1",
            Err("compat.config_mismatch"),
        ),
        case(
            "version too new",
            "sim:simgpu/vgpu-64m",
            "sim:simgpu/vgpu-64m,versions=1..2",
            Err("compat.version_too_new"),
        ),
        case(
            "version too old",
            "sim:simgpu/vgpu-64m,versions=1..1",
            "sim:simgpu/vgpu-64m,versions=2..3",
            Err("compat.version_too_old"),
        ),
        Case {
            lie_min_version: Some(2),
            ..case(
                "minimum version above the destination's loader",
                "sim:simgpu/vgpu-64m",
                "sim:simgpu/vgpu-64m,versions=1..1",
                Err("compat.min_version_too_new"),
            )
        },
        case(
            "optional section unknown to the destination: skipped",
            "sim:simgpu/vgpu-64m,versions=1..2",
            "sim:simgpu/vgpu-64m,versions=1..1",
            Ok(()),
        ),
        Case {
            lie_min_version: Some(1),
            ..case(
                "required section unknown to the destination: refused",
                "sim:simgpu/vgpu-64m",
                "sim:simgpu/vgpu-64m,versions=1..2",
                Err("compat.unknown_required_section"),
            )
        },
        case(
            "capability-bound section, host without it: refused",
            "sim:simgpu/vgpu-64m,encoder=on",
            "sim:simgpu/vgpu-64m,encoder=on",
            Err("compat.missing_capability"),
        ),
        Case {
            policy: skip_encoder.clone(),
            ..case(
                "capability-bound section, skipping allowed by name",
                "sim:simgpu/vgpu-64m,encoder=on",
                "sim:simgpu/vgpu-64m,encoder=on",
                Ok(()),
            )
        },
        case(
            "capability-bound section, host with it",
            "sim:simgpu/vgpu-64m,encoder=on",
            "sim:simgpu/vgpu-64m,encoder=on,caps=simgpu.hw-encoder",
            Ok(()),
        ),
        Case {
            policy: pin2.clone(),
            ..case(
                "a pinned older version",
                "sim:simgpu/vgpu-64m",
                "sim:simgpu/vgpu-64m",
                Ok(()),
            )
        },
        Case {
            policy: Policy {
                refuse_versions: BTreeSet::from([3]),
                ..Default::default()
            },
            ..case(
                "a refused version",
                "sim:simgpu/vgpu-64m",
                "sim:simgpu/vgpu-64m",
                Err("compat.version_refused"),
            )
        },
    ];
    for c in cases {
        let mut desc = describe(c.source);
        let mut stream = default_stream(c.source, &c.policy);
        if let Some(m) = c.lie_min_version {
            stream = rewrap(&stream, |h| h.min_version = m);
            let native = desc.produce.unwrap().newest.to_string();
            desc.versions.get_mut(&native).unwrap().min_version = m;
        }
        let pre = precheck(&desc, c.dest, &c.policy);
        let post = act(&stream, c.dest, &c.policy);
        assert_eq!(pre, c.expect.map_err(String::from), "{}: pre-check", c.name);
        assert_eq!(post, pre, "{}: the restore disagrees with the pre-check", c.name);
    }
}

#[test]
fn a_v3_source_is_refused_by_a_1_to_2_destination_and_save_for_fixes_it() {
    let source = describe("sim:simgpu/vgpu-64m");
    let dest_spec = "sim:simgpu/vgpu-64m,versions=1..2";
    let dest = describe(dest_spec);
    let reg = Registry::builtin();
    let load = dest
        .load
        .map(|w| mdevmig_plugin_api::VersionWindow::new(w.oldest, w.newest));
    let r = descriptor::check(&source, &dest.info(), &reg, load, &Policy::default());
    assert!(!r.verdict.compatible);
    assert_eq!(r.emit_version, 2);
    assert!(r.convertible);
    let first = &r.verdict.reasons[0];
    assert!(
        first.message.contains("loads simgpu state 1..2") && first.message.contains("pin the source to 2"),
        "{}",
        first.message
    );
    // save --for: the plan's version and omissions.
    let (mut dev, _) = device::open(&"sim:simgpu/vgpu-64m".parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let digest = dev.state_digest();
    let mut out = Vec::new();
    let opts = SaveOptions {
        version: Some(r.emit_version),
        omit: r.omit.clone(),
        ..Default::default()
    };
    save(&mut *dev, &reg, &key(), &mut out, &opts).unwrap();
    let (mut dst, host) = device::open(
        &format!("{dest_spec},seed=99").parse::<DeviceSpec>().unwrap(),
        &reg,
    )
    .unwrap();
    let rep = restore(
        &mut *dst,
        &reg,
        &trust(),
        &out[..],
        &RestoreOptions {
            load_window: host.versions,
            ..ropts()
        },
    )
    .unwrap();
    assert_eq!(rep.header.state_version, 2);
    assert_eq!(
        rep.state_digest, digest,
        "down-conversion lost guest-visible state"
    );
}

#[test]
fn labels_match_by_set_membership_exactly_when_the_check_passes() {
    let reg = Registry::builtin();
    let specs = [
        "sim:simgpu/vgpu-64m",
        "sim:simgpu/vgpu-64m,versions=1..2",
        "sim:simgpu/vgpu-64m,versions=1..1",
        "sim:simgpu/vgpu-64m,versions=2..3",
        "sim:simgpu/vgpu-64m,ctx3=on",
        "sim:simgpu/vgpu-64m,heads=2",
        "sim:simgpu/vgpu-64m,encoder=on",
        "sim:simgpu/vgpu-64m,encoder=on,caps=simgpu.hw-encoder",
        "sim:simgpu/vgpu-256m",
        "sim:mtty/mtty-2",
    ];
    for s in specs {
        for d in specs {
            let src = describe(s);
            let dst = describe(d);
            let need = descriptor::labels(&src).requires;
            let have = descriptor::labels(&dst).offers;
            let fits = need.iter().all(|(k, v)| have.get(k) == Some(v));
            let load = dst
                .load
                .map(|w| mdevmig_plugin_api::VersionWindow::new(w.oldest, w.newest));
            let r = descriptor::check(&src, &dst.info(), &reg, load, &Policy::default());
            let works = r.verdict.compatible;
            assert_eq!(
                fits, works,
                "{s} -> {d}: labels say {fits}, check says {works} ({:?})",
                r.verdict.reasons
            );
            for k in need.keys().chain(have.keys()) {
                let name = k.strip_prefix("mdevmig.io/").unwrap();
                assert!(
                    name.len() <= 63
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                    "{k}"
                );
            }
        }
    }
}

#[test]
fn descriptors_round_trip_and_garbage_is_refused() {
    let d = describe("sim:simgpu/vgpu-1g,encoder=on");
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(Descriptor::parse(&json).unwrap(), d);
    for bad in [
        "",
        "{}",
        "[]",
        r#"{"schema":"other"}"#,
        &json.replace("\"oldest\":1", "\"oldest\":9"),
    ] {
        assert_eq!(
            Descriptor::parse(bad).unwrap_err().code,
            mdevmig::Code::BadDescriptor,
            "{bad}"
        );
    }
}
