//! The real backend: a Linux mdev or VFIO PCI device through the VFIO migration v2
//! uAPI, via rust-vmm's vfio-ioctls (legacy container API, no KVM).
//!
//! Opening a device:
//! 1. `vfio:<uuid>` means `/sys/bus/mdev/devices/<uuid>`; any other value is taken
//!    as a sysfs device path.
//! 2. The vendor and type come from sysfs: an mdev's `mdev_type` link names its
//!    type (`mtty-2`), and the registry finds the plugin for it.
//! 3. The container is opened with type1v2; mdevs need no hardware IOMMU.
//! 4. The current migration state is read. A device found mid-migration
//!    (RESUMING, a saving state, or ERROR), as a process that died leaves it, is
//!    reset first: mtty keeps its migration state across close and reopen, and a
//!    device reopened in RESUMING oopses the kernel on the next SET STOP. RUNNING and
//!    STOP are used as they are.
//!
//! Any error on the data fd is fatal: the kernel keeps bytes from a failed write (a
//! corrupted mtty header written in one call fails with EFAULT but a following
//! RESUMING → STOP still loads it), so the broker never continues after one.
//!
//! This is the only module with `unsafe`: the raw `VFIO_DEVICE_RESET` ioctl, which
//! vfio-ioctls skips for devices that do not advertise reset support (mtty does
//! not, yet implements it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mdevmig_plugin_api::DeviceInfo;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioError};

use super::fsm::MigState;
use super::{DataRead, MigrationDevice, PrecopyInfo};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

// `VFIO_DEVICE_RESET` (`_IO(VFIO_TYPE, VFIO_BASE + 11)`, include/uapi/linux/vfio.h).
nix::ioctl_none!(vfio_device_reset, b';', 111);

/// A real device.
pub struct VfioBackend {
    dev: VfioDevice,
    _container: Arc<VfioContainer>,
    info: DeviceInfo,
    flags: u64,
    path: PathBuf,
}

/// Resolves a `vfio:` argument to a sysfs device path.
pub(crate) fn sysfs_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        Path::new("/sys/bus/mdev/devices").join(arg)
    }
}

/// Identifies vendor and device type from sysfs.
pub(crate) fn identify(path: &Path) -> Result<(String, String)> {
    let ty = std::fs::read_link(path.join("mdev_type"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Some(ty) = ty {
        // mdev types are "<parent driver>-<name>", e.g. mtty-2.
        let vendor = ty.split('-').next().unwrap_or("").to_string();
        return Ok((vendor, ty));
    }
    Err(Error::new(
        Code::NoPlugin,
        format!(
            "{}: not an mdev with a known type; no plugin can identify it",
            path.display()
        ),
    ))
}

/// A VFIO failure as an [`Error`] with `code`, keeping the vfio-ioctls error (and
/// the errno inside it) as its source.
fn vfio_err(code: Code, context: impl std::fmt::Display, e: VfioError) -> Error {
    Error::new(code, format!("{context}: {e}")).with_source(e)
}

impl VfioBackend {
    /// Opens the device `arg` names and brings it to a usable state.
    pub fn open(arg: &str, registry: &Registry) -> Result<Self> {
        let path = sysfs_path(arg);
        if !path.exists() {
            return Err(Error::new(
                Code::DeviceOpen,
                format!("{}: no such device", path.display()),
            ));
        }
        let (vendor, device_type) = identify(&path)?;
        let info = registry.device_info(&vendor, &device_type, &Default::default(), Default::default())?;
        let container = Arc::new(
            VfioContainer::new(None).map_err(|e| vfio_err(Code::DeviceOpen, "opening /dev/vfio/vfio", e))?,
        );
        let dev = VfioDevice::new(&path, container.clone(), false)
            .map_err(|e| vfio_err(Code::DeviceOpen, path.display(), e))?;
        let flags = dev
            .query_migration_support()
            .map_err(|e| vfio_err(Code::DeviceOpen, "querying migration support", e))?
            .ok_or_else(|| {
                Error::new(
                    Code::DeviceNoMigration,
                    format!("{} has no VFIO migration v2 support", path.display()),
                )
            })?;
        if flags & super::fsm::FLAG_STOP_COPY == 0 {
            return Err(Error::new(
                Code::DeviceNoMigration,
                format!("{}: migration flags {flags:#x} lack STOP_COPY", path.display()),
            ));
        }
        let mut b = VfioBackend {
            dev,
            _container: container,
            info,
            flags,
            path,
        };
        let state = b.state()?;
        if !matches!(state, MigState::Running | MigState::Stop) {
            b.reset()?;
        }
        Ok(b)
    }

    /// The sysfs path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `buf.len()` bytes of region `index` at `offset` (e.g. mtty's UART
    /// registers in BAR0/BAR1), one access per byte as mtty requires.
    pub fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let mut one = [0u8; 1];
            self.dev
                .region_read(index, &mut one, offset.saturating_add(i as u64));
            *b = one[0];
        }
    }

    /// Writes bytes to region `index` at `offset`, one access per byte.
    pub fn region_write(&self, index: u32, offset: u64, buf: &[u8]) {
        for (i, b) in buf.iter().enumerate() {
            self.dev
                .region_write(index, &[*b], offset.saturating_add(i as u64));
        }
    }
}

impl MigrationDevice for VfioBackend {
    fn backend(&self) -> &'static str {
        "vfio"
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn migration_flags(&self) -> u64 {
        self.flags
    }

    fn state(&mut self) -> Result<MigState> {
        let raw = self
            .dev
            .get_migration_state()
            .map_err(|e| vfio_err(Code::DeviceTransition, "reading device state", e))?;
        MigState::from_u32(raw).ok_or_else(|| {
            Error::new(
                Code::DeviceTransition,
                format!("device reports unknown state {raw}"),
            )
        })
    }

    fn set_state(&mut self, target: MigState) -> Result<()> {
        // One SET with the final target: the kernel walks the arcs itself.
        self.dev
            .set_migration_state(target.as_u32())
            .map_err(|e| vfio_err(Code::DeviceTransition, format_args!("setting state {target}"), e))
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        match self.dev.read_migration_data(buf) {
            // The uAPI says a driver returns ENOMSG at PRE_COPY's temporary end of
            // data, but mtty (6.12 and mainline) returns 0 there. In a PRE_COPY
            // state the stream cannot have ended (the rest follows STOP_COPY), so a
            // 0 there is "no data now", as ENOMSG would have said.
            Ok(0) => match self.state()? {
                MigState::PreCopy | MigState::PreCopyP2p => Ok(DataRead::NotYet),
                _ => Ok(DataRead::End),
            },
            Ok(n) => Ok(DataRead::Data(n)),
            Err(VfioError::VfioMigrationDataIo(e)) if e.raw_os_error() == Some(nix::libc::ENOMSG) => {
                Ok(DataRead::NotYet)
            }
            Err(e) => Err(vfio_err(Code::DeviceData, "reading the data fd", e)),
        }
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        self.dev
            .write_migration_data(buf)
            .map_err(|e| vfio_err(Code::DeviceData, "writing the data fd", e))
    }

    fn data_size(&mut self) -> Result<u64> {
        self.dev
            .get_mig_data_size()
            .map_err(|e| vfio_err(Code::DeviceData, "MIG_DATA_SIZE", e))
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        let p = self
            .dev
            .mig_get_precopy_info()
            .map_err(|e| vfio_err(Code::DeviceData, "PRECOPY_INFO", e))?;
        Ok(PrecopyInfo {
            initial_bytes: p.initial_bytes,
            dirty_bytes: p.dirty_bytes,
        })
    }

    fn reset(&mut self) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the fd is the open device
        // fd owned by `self.dev` for the duration of the call.
        #[allow(unsafe_code)]
        let r = unsafe { vfio_device_reset(self.dev.as_raw_fd()) };
        r.map_err(|e| Error::new(Code::DeviceReset, format!("VFIO_DEVICE_RESET: {e}")).with_source(e))?;
        // vfio-ioctls still holds the data fd the reset disabled; a SET to the
        // state the device is already in (RUNNING) drops it without touching it.
        self.dev
            .set_migration_state(MigState::Running.as_u32())
            .map_err(|e| vfio_err(Code::DeviceReset, "after reset", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_bindings::bindings::vfio as b;

    #[test]
    fn state_numbers_match_the_kernel_bindings() {
        let pairs = [
            (MigState::Error, b::vfio_device_mig_state_VFIO_DEVICE_STATE_ERROR),
            (MigState::Stop, b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP),
            (
                MigState::Running,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING,
            ),
            (
                MigState::StopCopy,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP_COPY,
            ),
            (
                MigState::Resuming,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_RESUMING,
            ),
            (
                MigState::RunningP2p,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING_P2P,
            ),
            (
                MigState::PreCopy,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY,
            ),
            (
                MigState::PreCopyP2p,
                b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY_P2P,
            ),
        ];
        for (s, k) in pairs {
            assert_eq!(s.as_u32(), k, "{s}");
        }
        assert_eq!(
            super::super::fsm::FLAG_STOP_COPY,
            u64::from(b::VFIO_MIGRATION_STOP_COPY)
        );
        assert_eq!(super::super::fsm::FLAG_P2P, u64::from(b::VFIO_MIGRATION_P2P));
        assert_eq!(
            super::super::fsm::FLAG_PRE_COPY,
            u64::from(b::VFIO_MIGRATION_PRE_COPY)
        );
    }

    #[test]
    fn uuids_map_to_the_mdev_bus() {
        assert_eq!(sysfs_path("abc"), PathBuf::from("/sys/bus/mdev/devices/abc"));
        assert_eq!(
            sysfs_path("/sys/bus/pci/devices/0000:01:00.1"),
            PathBuf::from("/sys/bus/pci/devices/0000:01:00.1")
        );
    }

    #[test]
    fn opening_a_missing_device_is_a_device_error() {
        let r = VfioBackend::open("00000000-0000-0000-0000-000000000000", &Registry::builtin());
        assert_eq!(r.err().unwrap().code, Code::DeviceOpen);
    }

    #[test]
    fn identify_reads_the_mdev_type_link() {
        let d = std::env::temp_dir().join(format!("mdevmig-vfio-id-{}", std::process::id()));
        let types = d.join("mdev_supported_types/mtty-2");
        std::fs::create_dir_all(&types).unwrap();
        let dev = d.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let _ = std::fs::remove_file(dev.join("mdev_type"));
        std::os::unix::fs::symlink(&types, dev.join("mdev_type")).unwrap();
        assert_eq!(
            identify(&dev).unwrap(),
            ("mtty".to_string(), "mtty-2".to_string())
        );
        assert_eq!(identify(&d).unwrap_err().code, Code::NoPlugin);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
