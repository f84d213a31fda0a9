//! Device discovery for `query-devices`: mediated devices
//! (`/sys/bus/mdev/devices/<uuid>`, `Documentation/driver-api/vfio-mediated-device.rst`)
//! and PCI functions bound to vfio-pci or one of its variant drivers
//! (`mlx5_vfio_pci`, `hisi_acc_vfio_pci`, `xe_vfio_pci`, ...).

use std::path::Path;

use serde_json::{json, Value};

/// At most this many devices of each kind are listed.
const MAX: usize = 4096;

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_string)
}

fn read_trim(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    Some(s.trim().chars().take(64).collect())
}

/// Every mdev and VFIO PCI device under `root` (normally `/sys`).
pub fn discover(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mdev = root.join("bus/mdev/devices");
    if let Ok(rd) = std::fs::read_dir(&mdev) {
        let mut names: Vec<_> = rd.flatten().take(MAX).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let Some(uuid) = n.to_str() else { continue };
            let dir = mdev.join(uuid);
            let parent = std::fs::canonicalize(&dir).ok().and_then(|p| {
                p.parent()
                    .and_then(|q| q.file_name())
                    .and_then(|f| f.to_str())
                    .map(str::to_string)
            });
            out.push(json!({
                "kind": "mdev",
                "spec": format!("vfio:{uuid}"),
                "sysfs": dir.display().to_string(),
                "uuid": uuid,
                "mdev_type": link_name(&dir.join("mdev_type")),
                "parent": parent,
                "driver": link_name(&dir.join("driver")),
                "iommu_group": link_name(&dir.join("iommu_group")),
            }));
        }
    }
    let pci = root.join("bus/pci/devices");
    if let Ok(rd) = std::fs::read_dir(&pci) {
        let mut names: Vec<_> = rd.flatten().take(MAX).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let Some(bdf) = n.to_str() else { continue };
            let dir = pci.join(bdf);
            let Some(driver) = link_name(&dir.join("driver")) else {
                continue;
            };
            if !driver.contains("vfio") {
                continue;
            }
            out.push(json!({
                "kind": "vfio-pci",
                "spec": format!("vfio:{}", dir.display()),
                "sysfs": dir.display().to_string(),
                "bdf": bdf,
                "driver": driver,
                "vendor_id": read_trim(&dir.join("vendor")),
                "device_id": read_trim(&dir.join("device")),
                "iommu_group": link_name(&dir.join("iommu_group")),
            }));
        }
    }
    out
}
