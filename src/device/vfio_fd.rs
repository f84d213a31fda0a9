//! A real device over a VFIO device fd that someone else opened: a VMM (QEMU or
//! another C program) owns the passthrough device, having set up the container and
//! group or bound the iommufd cdev itself, and hands mdevmig a duplicate of its
//! device fd. mdevmig drives the migration over that fd and never opens the device.
//!
//! The behaviour is [`super::VfioBackend`]'s, ioctl for ioctl, done here with nix
//! instead of vfio-ioctls (which only drives devices it opened itself):
//!
//! 1. The sysfs path (or mdev UUID, as `vfio:` takes it) only identifies the vendor
//!    and type; every ioctl goes to the fd.
//! 2. `VFIO_DEVICE_GET_INFO` proves the fd is an open VFIO device: a pipe, a file or
//!    `/dev/null` fails it with ENOTTY. (The migration feature alone cannot tell: a
//!    VFIO device without migration also answers ENOTTY there.) An iommufd cdev fd
//!    not yet bound with `VFIO_DEVICE_BIND_IOMMUFD` answers EINVAL to everything.
//! 3. `VFIO_DEVICE_FEATURE` GET `MIGRATION` reads the flags; ENOTTY or EINVAL there
//!    means no migration v2, and STOP_COPY is required.
//! 4. A device found mid-migration (RESUMING, a saving state, or ERROR) is reset;
//!    RUNNING and STOP are used as they are.
//!
//! `SET MIG_DEVICE_STATE` hands out a data fd on entering a streaming state; this
//! backend owns it until a SET to a non-streaming state, a failed SET, or a reset.
//! Any error on the data fd is fatal, as for [`super::VfioBackend`].
//!
//! The fd is a duplicate of the VMM's: both name one open file, so the device's
//! migration state is shared and the VMM must not drive migration itself meanwhile.
//! Closing this backend closes only the duplicate (and the data fd); the device stays
//! open for the VMM, in whatever state the migration left it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use mdevmig_plugin_api::DeviceInfo;
use nix::errno::Errno;
use vfio_bindings::bindings::vfio as b;

use super::fsm::{MigState, FLAG_STOP_COPY};
use super::vfio::{identify, sysfs_path};
use super::{DataRead, MigrationDevice, PrecopyInfo};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

type Request = nix::sys::ioctl::ioctl_num_type;

// The request numbers of include/uapi/linux/vfio.h. VFIO defines every ioctl with
// `_IO()` (no size or direction bits): the structures carry their own `argsz`.
/// `VFIO_DEVICE_GET_INFO`: `_IO(VFIO_TYPE, VFIO_BASE + 7)`, on the device fd.
const VFIO_DEVICE_GET_INFO: Request = nix::request_code_none!(b::VFIO_TYPE, b::VFIO_BASE + 7);
/// `VFIO_DEVICE_RESET`: `_IO(VFIO_TYPE, VFIO_BASE + 11)`, on the device fd.
const VFIO_DEVICE_RESET: Request = nix::request_code_none!(b::VFIO_TYPE, b::VFIO_BASE + 11);
/// `VFIO_DEVICE_FEATURE`: `_IO(VFIO_TYPE, VFIO_BASE + 17)`, on the device fd.
const VFIO_DEVICE_FEATURE: Request = nix::request_code_none!(b::VFIO_TYPE, b::VFIO_BASE + 17);
/// `VFIO_MIG_GET_PRECOPY_INFO`: `_IO(VFIO_TYPE, VFIO_BASE + 21)`, on the data fd.
const VFIO_MIG_GET_PRECOPY_INFO: Request = nix::request_code_none!(b::VFIO_TYPE, b::VFIO_BASE + 21);

nix::ioctl_readwrite_bad!(ioctl_device_get_info, VFIO_DEVICE_GET_INFO, b::vfio_device_info);
nix::ioctl_none_bad!(ioctl_device_reset, VFIO_DEVICE_RESET);
nix::ioctl_readwrite_bad!(ioctl_device_feature, VFIO_DEVICE_FEATURE, b::vfio_device_feature);
nix::ioctl_readwrite_bad!(
    ioctl_mig_get_precopy_info,
    VFIO_MIG_GET_PRECOPY_INFO,
    b::vfio_precopy_info
);

/// `struct vfio_device_feature` with its flexible `data[]` filled by one payload:
/// the header's 8 bytes, then the payload at offset 8, where the kernel reads it.
#[repr(C)]
struct Feature<P> {
    hdr: b::vfio_device_feature,
    payload: P,
}

/// A `VFIO_DEVICE_FEATURE` payload this module sends. Implemented only for the
/// bindings' payload structures, which are `repr(C)`, made of integers alone (any
/// bit pattern the kernel writes is a valid value) and at most 8-byte aligned (so
/// the payload follows the 8-byte header without padding).
trait FeaturePayload: Default {
    /// The feature number (`VFIO_DEVICE_FEATURE_*`).
    const ID: u32;
}

impl FeaturePayload for b::vfio_device_feature_migration {
    const ID: u32 = b::VFIO_DEVICE_FEATURE_MIGRATION;
}

impl FeaturePayload for b::vfio_device_feature_mig_state {
    const ID: u32 = b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
}

impl FeaturePayload for b::vfio_device_feature_mig_data_size {
    const ID: u32 = b::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE;
}

/// `VFIO_DEVICE_FEATURE` with `op` (`VFIO_DEVICE_FEATURE_GET` or `_SET`) on feature
/// `P`: sends `payload`, returns it as the kernel left it.
fn device_feature<P: FeaturePayload>(fd: BorrowedFd<'_>, op: u32, payload: P) -> nix::Result<P> {
    let argsz = u32::try_from(std::mem::size_of::<Feature<P>>()).map_err(|_| Errno::EOVERFLOW)?;
    let mut buf = Feature {
        hdr: b::vfio_device_feature {
            argsz,
            flags: op | P::ID,
            ..Default::default()
        },
        payload,
    };
    let ptr = std::ptr::addr_of_mut!(buf).cast::<b::vfio_device_feature>();
    // SAFETY: `ptr` points at `buf`, a live local of exactly `argsz` bytes that
    // nothing else references during the call: the 8-byte header and then the
    // payload at offset 8, where the kernel's `arg->data` is (the layout is checked
    // against vfio-bindings in the tests). The kernel bounds every access by `argsz`
    // (it refuses EINVAL when `argsz - 8` is smaller than the payload it expects)
    // and writes only integer fields, so `buf` stays a valid value. `fd` is borrowed
    // for the whole call.
    #[allow(unsafe_code)]
    let r = unsafe { ioctl_device_feature(fd.as_raw_fd(), ptr) };
    r.map(|_| buf.payload)
}

/// `VFIO_DEVICE_GET_INFO`: fails unless `fd` is an open, usable VFIO device.
fn device_info(fd: BorrowedFd<'_>) -> nix::Result<b::vfio_device_info> {
    let mut info = b::vfio_device_info {
        argsz: u32::try_from(std::mem::size_of::<b::vfio_device_info>()).map_err(|_| Errno::EOVERFLOW)?,
        ..Default::default()
    };
    // SAFETY: `info` is a live, exclusively borrowed `struct vfio_device_info` of
    // `argsz` bytes, all integer fields. Drivers copy at most `min(argsz,
    // sizeof(info))` bytes back, and capability chains only when `argsz` leaves room
    // for them (it does not: `argsz` is the bare structure). `fd` is borrowed for
    // the call.
    #[allow(unsafe_code)]
    let r = unsafe { ioctl_device_get_info(fd.as_raw_fd(), &mut info) };
    r.map(|_| info)
}

/// `VFIO_DEVICE_RESET` on the device fd.
fn device_reset(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: VFIO_DEVICE_RESET takes no argument; `fd` is borrowed for the call.
    #[allow(unsafe_code)]
    let r = unsafe { ioctl_device_reset(fd.as_raw_fd()) };
    r.map(|_| ())
}

/// `VFIO_MIG_GET_PRECOPY_INFO` on a data fd.
fn precopy_info(data: BorrowedFd<'_>) -> nix::Result<b::vfio_precopy_info> {
    let mut info = b::vfio_precopy_info {
        argsz: u32::try_from(std::mem::size_of::<b::vfio_precopy_info>()).map_err(|_| Errno::EOVERFLOW)?,
        ..Default::default()
    };
    // SAFETY: `info` is a live, exclusively borrowed `struct vfio_precopy_info` of
    // `argsz` bytes, all integer fields; drivers copy back at most
    // `offsetofend(dirty_bytes)`, its whole size. `data` is borrowed for the call.
    #[allow(unsafe_code)]
    let r = unsafe { ioctl_mig_get_precopy_info(data.as_raw_fd(), &mut info) };
    r.map(|_| info)
}

/// An ioctl's errno as an [`Error`] with `code`, the errno kept as its source.
fn ioctl_err(code: Code, context: impl std::fmt::Display, e: Errno) -> Error {
    Error::new(code, format!("{context}: {e}")).with_source(e)
}

/// What a successful `SET MIG_DEVICE_STATE` does to the data fd held so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFdAfterSet {
    /// The kernel returned a new data fd: it replaces the old one.
    Replace,
    /// A streaming state reached without a new fd (PRE_COPY → STOP_COPY) keeps it.
    Keep,
    /// A non-streaming state closes it.
    Drop,
}

/// vfio-ioctls' rule for the data fd after a successful SET.
fn data_fd_after_set(returned_fd: i32, target: MigState) -> DataFdAfterSet {
    if returned_fd >= 0 {
        DataFdAfterSet::Replace
    } else if target.is_streaming() {
        DataFdAfterSet::Keep
    } else {
        DataFdAfterSet::Drop
    }
}

/// A real device driven over a VFIO device fd its caller opened: a VMM owns the
/// passthrough device (its container and group, or its bound iommufd cdev) and hands
/// mdevmig a duplicate of the device fd, over which this backend drives the VFIO
/// migration v2 uAPI exactly as [`super::VfioBackend`] does, without opening the
/// device again.
///
/// The duplicate names the VMM's open file: the device's migration state is shared,
/// so the VMM must not drive migration itself meanwhile. Dropping the backend closes
/// the duplicate and any data fd; the device stays open for the VMM, in whatever
/// state the migration left it.
pub struct VfioFdBackend {
    dev: OwnedFd,
    data: Option<File>,
    info: DeviceInfo,
    flags: u64,
    path: PathBuf,
}

impl std::fmt::Debug for VfioFdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioFdBackend")
            .field("fd", &self.dev.as_raw_fd())
            .field("data_fd", &self.data.as_ref().map(|d| d.as_raw_fd()))
            .field("flags", &self.flags)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl VfioFdBackend {
    /// Takes `fd`, an open VFIO device fd (from `VFIO_GROUP_GET_DEVICE_FD`, or an
    /// iommufd cdev already bound with `VFIO_DEVICE_BIND_IOMMUFD`), usually a
    /// duplicate of a VMM's; `sysfs` is the device's sysfs path or mdev UUID, read
    /// only to identify its vendor and type. Checks that `fd` is a VFIO device with
    /// migration v2 (STOP_COPY), and resets it if it is found mid-migration, as
    /// [`super::VfioBackend::open`] does. On an error `fd` is closed.
    pub fn new(fd: OwnedFd, sysfs: &str, registry: &Registry) -> Result<Self> {
        let path = sysfs_path(sysfs);
        if !path.exists() {
            return Err(Error::new(
                Code::DeviceOpen,
                format!("{}: no such device", path.display()),
            ));
        }
        let (vendor, device_type) = identify(&path)?;
        let info = registry.device_info(&vendor, &device_type, &Default::default(), Default::default())?;
        device_info(fd.as_fd()).map_err(|e| {
            let why = match e {
                Errno::ENOTTY => " (not a VFIO device fd)",
                Errno::EINVAL => " (an iommufd cdev fd not bound with VFIO_DEVICE_BIND_IOMMUFD?)",
                _ => "",
            };
            ioctl_err(
                Code::DeviceOpen,
                format_args!("VFIO_DEVICE_GET_INFO on fd {}{why}", fd.as_raw_fd()),
                e,
            )
        })?;
        let flags = migration_flags(fd.as_fd(), &path)?;
        let mut b = VfioFdBackend {
            dev: fd,
            data: None,
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

    /// The sysfs path the device was identified by.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `VFIO_DEVICE_FEATURE` GET `MIGRATION`, requiring STOP_COPY.
fn migration_flags(fd: BorrowedFd<'_>, path: &Path) -> Result<u64> {
    let flags = match device_feature(
        fd,
        b::VFIO_DEVICE_FEATURE_GET,
        b::vfio_device_feature_migration::default(),
    ) {
        Ok(m) => m.flags,
        // ENOTTY: no migration driver (or a kernel before migration v2); EINVAL:
        // the device does not offer the feature. vfio-ioctls reads both as "none".
        Err(e @ (Errno::ENOTTY | Errno::EINVAL)) => {
            return Err(ioctl_err(
                Code::DeviceNoMigration,
                format_args!(
                    "{} has no VFIO migration v2 support (VFIO_DEVICE_FEATURE GET MIGRATION)",
                    path.display()
                ),
                e,
            ))
        }
        Err(e) => {
            return Err(ioctl_err(
                Code::DeviceOpen,
                "querying migration support: VFIO_DEVICE_FEATURE GET MIGRATION",
                e,
            ))
        }
    };
    if flags & FLAG_STOP_COPY == 0 {
        return Err(Error::new(
            Code::DeviceNoMigration,
            format!("{}: migration flags {flags:#x} lack STOP_COPY", path.display()),
        ));
    }
    Ok(flags)
}

/// The error for a data-fd operation outside a streaming state (vfio-ioctls'
/// `NoMigrationDataFd`).
fn no_data_fd(context: &str) -> Error {
    Error::new(
        Code::DeviceData,
        format!("{context}: no migration data fd (the device is not in a saving or resuming state)"),
    )
}

impl MigrationDevice for VfioFdBackend {
    fn backend(&self) -> &'static str {
        // The same kernel device and interface as `VfioBackend`: descriptors and
        // labels must not depend on who opened it.
        "vfio"
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn migration_flags(&self) -> u64 {
        self.flags
    }

    fn state(&mut self) -> Result<MigState> {
        let mig = device_feature(
            self.dev.as_fd(),
            b::VFIO_DEVICE_FEATURE_GET,
            b::vfio_device_feature_mig_state::default(),
        )
        .map_err(|e| {
            ioctl_err(
                Code::DeviceTransition,
                "reading device state: VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE",
                e,
            )
        })?;
        let raw = mig.device_state;
        MigState::from_u32(raw).ok_or_else(|| {
            Error::new(
                Code::DeviceTransition,
                format!("device reports unknown state {raw}"),
            )
        })
    }

    fn set_state(&mut self, target: MigState) -> Result<()> {
        // One SET with the final target: the kernel walks the arcs itself.
        let req = b::vfio_device_feature_mig_state {
            device_state: target.as_u32(),
            data_fd: -1,
        };
        let mig = match device_feature(self.dev.as_fd(), b::VFIO_DEVICE_FEATURE_SET, req) {
            Ok(mig) => mig,
            Err(e) => {
                // A failed walk may have closed the stream on the kernel side.
                self.data = None;
                return Err(ioctl_err(
                    Code::DeviceTransition,
                    format_args!("setting state {target}: VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE"),
                    e,
                ));
            }
        };
        match data_fd_after_set(mig.data_fd, target) {
            DataFdAfterSet::Replace => {
                // SAFETY: on success the kernel stores in `data_fd` either -1 or
                // a descriptor it has just installed in this process for the
                // data stream (`vfio_ioct_mig_return_fd`); nothing else owns it,
                // so this is its only owner and closes it once.
                #[allow(unsafe_code)]
                let fd = unsafe { OwnedFd::from_raw_fd(mig.data_fd) };
                self.data = Some(File::from(fd));
            }
            DataFdAfterSet::Keep => {}
            DataFdAfterSet::Drop => self.data = None,
        }
        Ok(())
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        let data = self
            .data
            .as_mut()
            .ok_or_else(|| no_data_fd("reading the data fd"))?;
        match data.read(buf) {
            // The uAPI says a driver returns ENOMSG at PRE_COPY's temporary end of
            // data, but mtty (6.12 and mainline) returns 0 there. In a PRE_COPY
            // state the stream cannot have ended (the rest follows STOP_COPY), so a
            // 0 there is "no data now", as ENOMSG would have said.
            Ok(0) => match self.state()? {
                MigState::PreCopy | MigState::PreCopyP2p => Ok(DataRead::NotYet),
                _ => Ok(DataRead::End),
            },
            Ok(n) => Ok(DataRead::Data(n)),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOMSG) => Ok(DataRead::NotYet),
            Err(e) => Err(Error::io(Code::DeviceData, "reading the data fd", &e)),
        }
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        let data = self
            .data
            .as_mut()
            .ok_or_else(|| no_data_fd("writing the data fd"))?;
        data.write_all(buf)
            .map_err(|e| Error::io(Code::DeviceData, "writing the data fd", &e))
    }

    fn data_size(&mut self) -> Result<u64> {
        device_feature(
            self.dev.as_fd(),
            b::VFIO_DEVICE_FEATURE_GET,
            b::vfio_device_feature_mig_data_size::default(),
        )
        .map(|d| d.stop_copy_length)
        .map_err(|e| ioctl_err(Code::DeviceData, "MIG_DATA_SIZE: VFIO_DEVICE_FEATURE GET", e))
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        let data = self.data.as_ref().ok_or_else(|| no_data_fd("PRECOPY_INFO"))?;
        let p = precopy_info(data.as_fd())
            .map_err(|e| ioctl_err(Code::DeviceData, "PRECOPY_INFO: VFIO_MIG_GET_PRECOPY_INFO", e))?;
        Ok(PrecopyInfo {
            initial_bytes: p.initial_bytes,
            dirty_bytes: p.dirty_bytes,
        })
    }

    fn reset(&mut self) -> Result<()> {
        device_reset(self.dev.as_fd()).map_err(|e| ioctl_err(Code::DeviceReset, "VFIO_DEVICE_RESET", e))?;
        // The reset disabled the stream; `VfioBackend` then SETs the state the
        // device is already in (RUNNING), which drops the fd and checks the device
        // is back in RUNNING. The same here.
        self.data = None;
        self.set_state(MigState::Running)
            .map_err(|e| Error::new(Code::DeviceReset, format!("after reset: {e}")).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    // The differential check of the unsafe code's inputs: every structure this
    // module hands the kernel, and every request number, against vfio-bindings'
    // generated definitions and the numbers of include/uapi/linux/vfio.h.

    fn feature_layout<P: FeaturePayload>(payload_size: usize) {
        let name = std::any::type_name::<P>();
        let hdr = size_of::<b::vfio_device_feature>();
        assert_eq!(hdr, 8, "struct vfio_device_feature is argsz, flags, data[]");
        assert_eq!(offset_of!(b::vfio_device_feature, argsz), 0);
        assert_eq!(offset_of!(b::vfio_device_feature, flags), 4);
        assert_eq!(offset_of!(b::vfio_device_feature, data), hdr);
        assert_eq!(offset_of!(Feature<P>, hdr), 0, "{name}");
        assert_eq!(offset_of!(Feature<P>, payload), hdr, "{name}: data[] starts at 8");
        assert_eq!(size_of::<P>(), payload_size, "{name}");
        assert_eq!(size_of::<Feature<P>>(), hdr + payload_size, "{name}: argsz");
        assert!(align_of::<P>() <= 8, "{name}");
    }

    #[test]
    fn feature_buffers_match_the_kernel_layout() {
        feature_layout::<b::vfio_device_feature_migration>(8);
        feature_layout::<b::vfio_device_feature_mig_state>(8);
        feature_layout::<b::vfio_device_feature_mig_data_size>(8);
        assert_eq!(offset_of!(b::vfio_device_feature_migration, flags), 0);
        assert_eq!(offset_of!(b::vfio_device_feature_mig_state, device_state), 0);
        assert_eq!(offset_of!(b::vfio_device_feature_mig_state, data_fd), 4);
        assert_eq!(
            offset_of!(b::vfio_device_feature_mig_data_size, stop_copy_length),
            0
        );
    }

    #[test]
    fn other_structures_match_the_kernel_layout() {
        assert_eq!(size_of::<b::vfio_precopy_info>(), 24);
        assert_eq!(offset_of!(b::vfio_precopy_info, argsz), 0);
        assert_eq!(offset_of!(b::vfio_precopy_info, flags), 4);
        assert_eq!(offset_of!(b::vfio_precopy_info, initial_bytes), 8);
        assert_eq!(offset_of!(b::vfio_precopy_info, dirty_bytes), 16);
        assert_eq!(size_of::<b::vfio_device_info>(), 24);
        assert_eq!(offset_of!(b::vfio_device_info, argsz), 0);
        assert_eq!(offset_of!(b::vfio_device_info, num_irqs), 12);
    }

    #[test]
    fn feature_numbers_and_flags_match_the_kernel() {
        // include/uapi/linux/vfio.h
        assert_eq!(<b::vfio_device_feature_migration as FeaturePayload>::ID, 1);
        assert_eq!(<b::vfio_device_feature_mig_state as FeaturePayload>::ID, 2);
        assert_eq!(<b::vfio_device_feature_mig_data_size as FeaturePayload>::ID, 9);
        assert_eq!(b::VFIO_DEVICE_FEATURE_MASK, 0xffff);
        assert_eq!(b::VFIO_DEVICE_FEATURE_GET, 1 << 16);
        assert_eq!(b::VFIO_DEVICE_FEATURE_SET, 1 << 17);
        assert_eq!(b::VFIO_DEVICE_FEATURE_PROBE, 1 << 18);
    }

    #[test]
    fn request_numbers_match_the_kernel() {
        // `_IO(type, nr)`, written out from include/uapi/asm-generic/ioctl.h:
        // dir NONE, size 0, type in bits 8..16, nr in bits 0..8.
        fn io(ty: u8, nr: u32) -> Request {
            nix::request_code_none!(ty, nr)
        }
        assert_eq!(b::VFIO_TYPE, b';');
        assert_eq!(b::VFIO_BASE, 100);
        assert_eq!(VFIO_DEVICE_GET_INFO, io(b';', 107));
        assert_eq!(VFIO_DEVICE_RESET, io(b';', 111));
        assert_eq!(VFIO_DEVICE_FEATURE, io(b';', 117));
        assert_eq!(VFIO_MIG_GET_PRECOPY_INFO, io(b';', 121));
        // Where `_IOC_NONE` is 0, as strace prints them.
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
        {
            assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
            assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
            assert_eq!(VFIO_DEVICE_FEATURE, 0x3b75);
            assert_eq!(VFIO_MIG_GET_PRECOPY_INFO, 0x3b79);
        }
    }

    #[test]
    fn the_data_fd_follows_vfio_ioctls_rule() {
        use DataFdAfterSet::*;
        for s in MigState::ALL {
            let expected = if s.is_streaming() { Keep } else { Drop };
            assert_eq!(data_fd_after_set(-1, s), expected, "{s}");
            assert_eq!(data_fd_after_set(7, s), Replace, "{s}");
        }
    }

    #[test]
    fn the_ioctls_on_a_non_vfio_fd_fail_with_enotty() {
        let null = File::open("/dev/null").unwrap();
        let fd = null.as_fd();
        assert_eq!(device_info(fd).unwrap_err(), Errno::ENOTTY);
        assert_eq!(device_reset(fd).unwrap_err(), Errno::ENOTTY);
        assert_eq!(precopy_info(fd).unwrap_err(), Errno::ENOTTY);
        assert_eq!(
            device_feature(
                fd,
                b::VFIO_DEVICE_FEATURE_GET,
                b::vfio_device_feature_mig_state::default()
            )
            .unwrap_err(),
            Errno::ENOTTY
        );
        let (r, _w) = std::io::pipe().unwrap();
        assert_eq!(device_info(r.as_fd()).unwrap_err(), Errno::ENOTTY);
        assert_eq!(precopy_info(r.as_fd()).unwrap_err(), Errno::ENOTTY);
    }
}
