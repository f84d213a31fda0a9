//! Device specs on the command line.
//!
//! ```text
//! sim:<plugin>/<type>[,seed=N][,flags=N][,versions=LO..HI][,caps=a+b][,dirty-rate=N[K|M|G]][,key=value...]
//! file:<path>,plugin=<p>,type=<t>[,key=value...]
//! vfio:<mdev uuid or sysfs path>
//! ```
//!
//! For `sim:` devices, `seed` picks the deterministic state, `flags` the VFIO
//! migration flags (default 7: STOP_COPY|P2P|PRE_COPY), `versions` narrows the state
//! versions the plugin produces and loads on this host (standing in for an older or
//! newer plugin), `caps` lists host capabilities (`+`-separated), `dirty-rate` the
//! bytes per second the simulated guest writes while the device runs (a plain
//! integer, or with a binary suffix `K`, `M` or `G`: `dirty-rate=64M` is 64 MiB/s;
//! default 0, an idle guest; see [`super::SimDevice::set_dirty_rate`]); every other
//! `key=value` is a device configuration attribute the plugin checks (or one of
//! its sim options).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mdevmig_plugin_api::{SimOptions, VersionWindow};

use super::fsm;
use super::MigrationDevice;
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

/// A parsed device spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A simulated device.
    Sim {
        /// Vendor plugin.
        vendor: String,
        /// Device type.
        device_type: String,
        /// State seed.
        seed: u64,
        /// VFIO migration flags.
        flags: u64,
        /// Narrowed version window, if any.
        versions: Option<VersionWindow>,
        /// Host capabilities.
        caps: BTreeSet<String>,
        /// Bytes per second the simulated guest writes while the device runs.
        dirty_rate: u64,
        /// Configuration attributes.
        attributes: BTreeMap<String, String>,
    },
    /// Raw state in a file.
    File {
        /// The file.
        path: PathBuf,
        /// Vendor plugin.
        vendor: String,
        /// Device type.
        device_type: String,
        /// Configuration attributes.
        attributes: BTreeMap<String, String>,
        /// A restore may replace an existing image (the CLI's `--force`; never
        /// from the spec string).
        replace: bool,
    },
    /// A real VFIO device.
    Vfio {
        /// A sysfs device path, or an mdev UUID.
        path: String,
    },
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::new(Code::DeviceSpec, format!("device spec {spec:?}: {why}"))
}

/// Parses `LO..HI` (or a single `N`).
pub(crate) fn parse_window(s: &str) -> Option<VersionWindow> {
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (1 <= lo && lo <= hi).then_some(VersionWindow::new(lo, hi))
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let (scheme, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad(spec, "expected sim:, file: or vfio:"))?;
        let mut parts = rest.split(',');
        let head = parts.next().unwrap_or("");
        let mut kv = BTreeMap::new();
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| bad(spec, format!("{p:?} is not key=value")))?;
            if kv.insert(k.to_string(), v.to_string()).is_some() {
                return Err(bad(spec, format!("{k} given twice")));
            }
        }
        match scheme {
            "sim" => {
                let (vendor, device_type) = head
                    .split_once('/')
                    .ok_or_else(|| bad(spec, "expected sim:<plugin>/<type>"))?;
                let seed = match kv.remove("seed") {
                    Some(s) => s.parse().map_err(|_| bad(spec, "seed is not a number"))?,
                    None => 1,
                };
                let flags = match kv.remove("flags") {
                    Some(s) => parse_u64(&s).ok_or_else(|| bad(spec, "flags is not a number"))?,
                    None => fsm::FLAG_STOP_COPY | fsm::FLAG_P2P | fsm::FLAG_PRE_COPY,
                };
                let versions = match kv.remove("versions") {
                    Some(s) => Some(parse_window(&s).ok_or_else(|| bad(spec, "versions must be LO..HI"))?),
                    None => None,
                };
                let caps = kv
                    .remove("caps")
                    .map(|c| c.split('+').filter(|s| !s.is_empty()).map(String::from).collect())
                    .unwrap_or_default();
                let dirty_rate = match kv.remove("dirty-rate") {
                    Some(s) => parse_rate(&s).ok_or_else(|| {
                        bad(
                            spec,
                            format!(
                                "dirty-rate={s:?} is not bytes per second \
                                 (an integer, optionally with a suffix K, M or G)"
                            ),
                        )
                    })?,
                    None => 0,
                };
                Ok(DeviceSpec::Sim {
                    vendor: vendor.into(),
                    device_type: device_type.into(),
                    seed,
                    flags,
                    versions,
                    caps,
                    dirty_rate,
                    attributes: kv,
                })
            }
            "file" => {
                let vendor = kv
                    .remove("plugin")
                    .ok_or_else(|| bad(spec, "file: needs plugin=<p>"))?;
                let device_type = kv
                    .remove("type")
                    .ok_or_else(|| bad(spec, "file: needs type=<t>"))?;
                if head.is_empty() {
                    return Err(bad(spec, "file: needs a path"));
                }
                Ok(DeviceSpec::File {
                    path: head.into(),
                    vendor,
                    device_type,
                    attributes: kv,
                    replace: false,
                })
            }
            "vfio" => {
                if head.is_empty() || !kv.is_empty() {
                    return Err(bad(spec, "expected vfio:<mdev uuid or sysfs path>"));
                }
                Ok(DeviceSpec::Vfio { path: head.into() })
            }
            other => Err(bad(spec, format!("unknown scheme {other:?}"))),
        }
    }
}

/// Bytes per second: decimal digits, optionally followed by a binary suffix `K`
/// (KiB), `M` (MiB) or `G` (GiB); `None` for anything else or on overflow.
fn parse_rate(s: &str) -> Option<u64> {
    let (digits, shift) = [('K', 10), ('M', 20), ('G', 30)]
        .into_iter()
        .find_map(|(suffix, shift)| Some((s.strip_suffix(suffix)?, shift)))
        .unwrap_or((s, 0));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a host offers for a device beyond the plugin's defaults.
#[derive(Debug, Clone, Default)]
pub struct HostOverrides {
    /// The version window this host's plugin is pinned to, if narrowed.
    pub versions: Option<VersionWindow>,
}

/// Opens the device a spec names.
pub fn open(spec: &DeviceSpec, registry: &Registry) -> Result<(Box<dyn MigrationDevice>, HostOverrides)> {
    match spec {
        DeviceSpec::Sim {
            vendor,
            device_type,
            seed,
            flags,
            versions,
            caps,
            dirty_rate,
            attributes,
        } => {
            let sim = registry.sim(vendor).ok_or_else(|| {
                Error::new(
                    Code::DeviceSpec,
                    format!("plugin {vendor} has no simulated device"),
                )
            })?;
            // Simulation options (how busy the guest is) are not configuration.
            let (options, config): (BTreeMap<_, _>, BTreeMap<_, _>) = attributes
                .clone()
                .into_iter()
                .partition(|(k, _)| sim.sim_options().contains(&k.as_str()));
            let info = registry.device_info(vendor, device_type, &config, caps.clone())?;
            // A host pinned to an older plugin window produces that window's newest
            // state version.
            let mut attributes = info.attributes.clone();
            attributes.extend(options);
            if let Some(w) = versions {
                attributes.insert("version".into(), w.newest.to_string());
            }
            let model = sim.sim_model(
                device_type,
                &SimOptions {
                    seed: *seed,
                    attributes,
                },
            )?;
            let mut dev = super::sim::SimDevice::new(info, *flags, model);
            dev.set_dirty_rate(*dirty_rate);
            Ok((Box::new(dev), HostOverrides { versions: *versions }))
        }
        DeviceSpec::File {
            path,
            vendor,
            device_type,
            attributes,
            replace,
        } => {
            let info = registry.device_info(vendor, device_type, attributes, BTreeSet::new())?;
            Ok((
                Box::new(super::file::FileDevice::new(path.clone(), info).replacing(*replace)),
                HostOverrides::default(),
            ))
        }
        DeviceSpec::Vfio { path } => {
            let dev = super::vfio::VfioBackend::open(path, registry)?;
            Ok((Box::new(dev), HostOverrides::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s: DeviceSpec = "sim:simgpu/vgpu-64m,seed=7,versions=1..2,caps=a+b,heads=2"
            .parse()
            .unwrap();
        match s {
            DeviceSpec::Sim {
                seed,
                versions,
                caps,
                attributes,
                ..
            } => {
                assert_eq!(seed, 7);
                assert_eq!(versions, Some(VersionWindow::new(1, 2)));
                assert_eq!(caps.len(), 2);
                assert_eq!(attributes["heads"], "2");
            }
            _ => panic!(),
        }
        assert!(matches!(
            "file:/tmp/x,plugin=mtty,type=mtty-2"
                .parse::<DeviceSpec>()
                .unwrap(),
            DeviceSpec::File { .. }
        ));
        assert!(matches!(
            "vfio:83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
                .parse::<DeviceSpec>()
                .unwrap(),
            DeviceSpec::Vfio { .. }
        ));
        for bad in [
            "nope",
            "sim:mtty",
            "file:,plugin=a,type=b",
            "file:/x,type=b",
            "sim:a/b,seed",
            "sim:a/b,versions=3..1",
            "vfio:",
            "sim:a/b,dirty-rate=",
            "sim:a/b,dirty-rate=M",
            "sim:a/b,dirty-rate=-1",
            "sim:a/b,dirty-rate=+5",
            "sim:a/b,dirty-rate=1.5M",
            "sim:a/b,dirty-rate=64m",
            "sim:a/b,dirty-rate=64MB",
            "sim:a/b,dirty-rate=64 M",
            "sim:a/b,dirty-rate=0x10",
            "sim:a/b,dirty-rate=18446744073709551616",
            "sim:a/b,dirty-rate=17179869184G",
            "sim:a/b,dirty-rate=1,dirty-rate=2",
        ] {
            assert_eq!(
                bad.parse::<DeviceSpec>().unwrap_err().code,
                Code::DeviceSpec,
                "{bad}"
            );
        }
    }

    fn dirty_rate_of(spec: &str) -> u64 {
        match spec.parse::<DeviceSpec>().unwrap() {
            DeviceSpec::Sim {
                dirty_rate,
                attributes,
                ..
            } => {
                assert!(!attributes.contains_key("dirty-rate"), "{spec}");
                dirty_rate
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dirty_rate_parses_with_binary_suffixes_and_is_not_an_attribute() {
        assert_eq!(dirty_rate_of("sim:simgpu/vgpu-64m"), 0);
        assert_eq!(dirty_rate_of("sim:simgpu/vgpu-64m,dirty-rate=0"), 0);
        assert_eq!(dirty_rate_of("sim:simgpu/vgpu-64m,dirty-rate=1000"), 1000);
        assert_eq!(dirty_rate_of("sim:simgpu/vgpu-64m,dirty-rate=4K"), 4 << 10);
        assert_eq!(
            dirty_rate_of("sim:simgpu/vgpu-64m,seed=3,dirty-rate=64M"),
            64 << 20
        );
        assert_eq!(dirty_rate_of("sim:xe/xe-vf-64m,dirty-rate=2G,dirty=5"), 2 << 30);
        assert_eq!(dirty_rate_of("sim:a/b,dirty-rate=18446744073709551615"), u64::MAX);
        assert_eq!(
            dirty_rate_of("sim:a/b,dirty-rate=17179869183G"),
            17_179_869_183 << 30
        );
        // Other options stay attributes; the error names the option.
        match "sim:xe/xe-vf-64m,dirty-rate=1M,dirty=5"
            .parse::<DeviceSpec>()
            .unwrap()
        {
            DeviceSpec::Sim { attributes, .. } => assert_eq!(attributes["dirty"], "5"),
            other => panic!("{other:?}"),
        }
        let e = "sim:a/b,dirty-rate=fast".parse::<DeviceSpec>().unwrap_err();
        assert!(e.message.contains("dirty-rate"), "{}", e.message);
        // Not an option of the other schemes.
        assert!(matches!(
            "file:/x,plugin=p,type=t,dirty-rate=1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::File { attributes, .. } if attributes.contains_key("dirty-rate")
        ));
    }

    #[test]
    fn the_spec_s_dirty_rate_reaches_the_device() {
        let registry = Registry::builtin();
        for (spec, busy) in [
            ("sim:simgpu/vgpu-64m,dirty-rate=1G", true),
            ("sim:xe/xe-vf-64m,dirty-rate=64M", true),
            ("sim:simgpu/vgpu-64m", false),
        ] {
            let (mut dev, _) = open(&spec.parse().unwrap(), &registry).unwrap();
            assert!(!dev.info().attributes.contains_key("dirty-rate"), "{spec}");
            let before = dev.state_digest().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            // A running guest changes the state; an idle one does not.
            assert_eq!(dev.state_digest().unwrap() != before, busy, "{spec}");
        }
    }
}
