//! `VfioFdBackend` without VFIO hardware: what can be checked honestly here is that
//! it refuses whatever is not a VFIO device fd, and a device it cannot identify,
//! with device errors that keep the errno. The kernel path (mtty in a VM) is
//! tests/kernel's.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use mdevmig::device::{MigrationDevice, VfioFdBackend};
use mdevmig::{Code, Error, Group, Registry};

/// A sysfs device directory as an mdev's looks: an `mdev_type` link naming its type.
fn fake_mdev(root: &Path, ty: &str) -> String {
    let types = root.join("mdev_supported_types").join(ty);
    std::fs::create_dir_all(&types).unwrap();
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink(&types, dev.join("mdev_type")).unwrap();
    dev.to_str().unwrap().to_string()
}

fn dev_null() -> OwnedFd {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap()
        .into()
}

fn refused(fd: OwnedFd, sysfs: &str) -> Error {
    match VfioFdBackend::new(fd, sysfs, &Registry::builtin()) {
        Ok(dev) => panic!("accepted: {dev:?}"),
        Err(e) => e,
    }
}

fn assert_not_vfio(e: &Error) {
    assert_eq!(e.code, Code::DeviceOpen, "{e}");
    assert_eq!(e.code.group(), Group::Device);
    assert_eq!(e.code.exit_status(), 5);
    assert_eq!(e.errno(), Some(nix::libc::ENOTTY), "{e}");
    assert!(e.message.contains("VFIO_DEVICE_GET_INFO"), "{e}");
    assert!(e.message.contains("ENOTTY"), "{e}");
    assert!(e.message.contains("not a VFIO device fd"), "{e}");
}

#[test]
fn a_pipe_is_not_a_vfio_device() {
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = fake_mdev(tmp.path(), "mtty-2");
    let (r, w) = std::io::pipe().unwrap();
    assert_not_vfio(&refused(r.into(), &sysfs));
    assert_not_vfio(&refused(w.into(), &sysfs));
}

#[test]
fn dev_null_is_not_a_vfio_device() {
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = fake_mdev(tmp.path(), "mtty-2");
    assert_not_vfio(&refused(dev_null(), &sysfs));
}

#[test]
fn a_regular_file_is_not_a_vfio_device() {
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = fake_mdev(tmp.path(), "mtty-1");
    let f = File::create(tmp.path().join("state.raw")).unwrap();
    assert_not_vfio(&refused(f.into(), &sysfs));
}

#[test]
fn a_missing_sysfs_path_is_refused() {
    let e = refused(dev_null(), "/nonexistent/sys/bus/pci/devices/0000:00:00.0");
    assert_eq!(e.code, Code::DeviceOpen, "{e}");
    assert!(e.message.contains("no such device"), "{e}");
    // An mdev UUID means /sys/bus/mdev/devices/<uuid>.
    let e = refused(dev_null(), "00000000-0000-0000-0000-000000000000");
    assert_eq!(e.code, Code::DeviceOpen, "{e}");
    assert!(
        e.message
            .contains("/sys/bus/mdev/devices/00000000-0000-0000-0000-000000000000"),
        "{e}"
    );
}

#[test]
fn a_device_no_plugin_identifies_is_refused() {
    // Not an mdev (no mdev_type link): nothing names its vendor and type.
    let tmp = tempfile::tempdir().unwrap();
    let e = refused(dev_null(), tmp.path().to_str().unwrap());
    assert_eq!(e.code, Code::NoPlugin, "{e}");
    // An mdev of a type no plugin handles.
    let sysfs = fake_mdev(tmp.path(), "nosuchvendor-1");
    let e = refused(dev_null(), &sysfs);
    assert_eq!(e.code.group(), Group::Compat, "{e}");
}

#[test]
fn the_backend_is_a_sendable_migration_device() {
    fn boxed(d: VfioFdBackend) -> Box<dyn MigrationDevice> {
        Box::new(d)
    }
    fn send<T: Send>() {}
    send::<VfioFdBackend>();
    let _ = boxed;
}
