//! libmdevmig: the C interface to mdevmig, for VMMs written in C.
//!
//! The calls mirror the kernel's VFIO migration v2 uAPI
//! (include/uapi/linux/vfio.h), so a VMM that already speaks it swaps calls and
//! keeps its migration loop: set a state (a streaming state returns a data fd),
//! read or write the stream, ask for precopy info and the data size. What moves
//! is mdevmig's signed envelope, verified and validated before the destination
//! device sees a byte.
//!
//! # Handles
//!
//! Contexts (`mdevmig_ctx`: plugins, keys, trust, session, policy) and devices
//! (`mdevmig_dev`: a migration region over one device) are 64-bit handles, not
//! pointers: a handle is an index into a table, never reused, so a null (0),
//! freed or made-up handle is [`MDEVMIG_EBADHANDLE`], never a crash.
//!
//! # Errors
//!
//! Every function returns a status: [`MDEVMIG_OK`] or a negative value. The
//! failure of an operation ([`MDEVMIG_ERROR`]) leaves its stable dotted code
//! (`spec/errors.md`) and a message as the handle's last error
//! ([`mdevmig_last_error`]). A call without a usable handle of the kind it
//! wants ([`MDEVMIG_EBADHANDLE`], and failures before any handle is known)
//! leaves it as the calling thread's, never another object's. No Rust panic crosses into C: one is caught and returned
//! as [`MDEVMIG_EPANIC`].
//!
//! # Threads
//!
//! Every function may be called from any thread. Calls on one handle are
//! serialized (a read that blocks in STOP_COPY holds its device handle until it
//! returns); calls on different handles run in parallel. Freeing a handle while
//! another thread uses it waits for that call to end.
//!
//! # Ownership
//!
//! Strings the library returns (`char **` out-parameters) are the caller's, to
//! release with [`mdevmig_string_free`]. A data fd returned by
//! [`mdevmig_dev_set_state`] is the caller's, to close, as the kernel's is.
//! [`mdevmig_version`] returns a static string.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod handles;

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use mdevmig_core::broker::region::{MigrationRegion, RegionConfig};
use mdevmig_core::broker::{RestoreOptions, SaveOptions};
use mdevmig_core::compat::{self, Descriptor};
use mdevmig_core::device::{self, DataRead, DeviceSpec, MigState};
use mdevmig_core::sandbox::{SandboxConfig, Validation};
use mdevmig_core::{Code, Error, SigningKeyPair, TrustStore};

use handles::{Ctx, Dev, Handle, LastError};

/// Success.
pub const MDEVMIG_OK: c_int = 0;
/// The operation failed: the handle's (or thread's) last error says why.
pub const MDEVMIG_ERROR: c_int = -1;
/// The handle is 0, freed, of the wrong kind, or was never issued.
pub const MDEVMIG_EBADHANDLE: c_int = -2;
/// An argument is invalid: a null pointer, a string that is not UTF-8, a state
/// number outside `enum vfio_device_mig_state`.
pub const MDEVMIG_EINVAL: c_int = -3;
/// PRE_COPY: the device has no more data for now (the kernel's ENOMSG).
pub const MDEVMIG_ENOMSG: c_int = -4;
/// A bug inside the library was caught before it reached the caller.
pub const MDEVMIG_EPANIC: c_int = -5;

/// `VFIO_DEVICE_STATE_ERROR` .. `VFIO_DEVICE_STATE_PRE_COPY_P2P`, as the kernel
/// numbers them.
pub const MDEVMIG_STATE_ERROR: u32 = 0;
/// STOP.
pub const MDEVMIG_STATE_STOP: u32 = 1;
/// RUNNING.
pub const MDEVMIG_STATE_RUNNING: u32 = 2;
/// STOP_COPY.
pub const MDEVMIG_STATE_STOP_COPY: u32 = 3;
/// RESUMING.
pub const MDEVMIG_STATE_RESUMING: u32 = 4;
/// RUNNING_P2P.
pub const MDEVMIG_STATE_RUNNING_P2P: u32 = 5;
/// PRE_COPY.
pub const MDEVMIG_STATE_PRE_COPY: u32 = 6;
/// PRE_COPY_P2P.
pub const MDEVMIG_STATE_PRE_COPY_P2P: u32 = 7;

/// `VFIO_MIGRATION_STOP_COPY`.
pub const MDEVMIG_MIGRATION_STOP_COPY: u64 = 1 << 0;
/// `VFIO_MIGRATION_P2P`.
pub const MDEVMIG_MIGRATION_P2P: u64 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`.
pub const MDEVMIG_MIGRATION_PRE_COPY: u64 = 1 << 2;

/// A context handle: plugins, signing key, trust store, session nonce, policy.
#[allow(non_camel_case_types)]
pub type mdevmig_ctx = u64;
/// A device handle: a migration region over one device.
#[allow(non_camel_case_types)]
pub type mdevmig_dev = u64;

/// What a failed call reports.
enum Fail {
    /// An operation failed with this error.
    Op(Error),
    BadHandle,
    Inval(&'static str),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Op(e)
    }
}

type Res<T> = std::result::Result<T, Fail>;

/// Runs `body` for the handle `h` (0 for calls without one), catching panics
/// and recording a failure as `h`'s last error, or the thread's.
fn call(h: Handle, body: impl FnOnce() -> Res<()>) -> c_int {
    let (status, err) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return MDEVMIG_OK,
        Ok(Err(Fail::Op(e))) => (MDEVMIG_ERROR, LastError::of(&e)),
        Ok(Err(Fail::BadHandle)) => {
            // Not a usable handle of the kind the call wanted: the thread's
            // error, never another object's.
            let e = LastError::new(Code::BadHandle.as_str(), format!("no such handle: {h}"));
            handles::set_thread_error(e);
            return MDEVMIG_EBADHANDLE;
        }
        Ok(Err(Fail::Inval(why))) => (MDEVMIG_EINVAL, LastError::new("usage.bad_arguments", why)),
        Err(_) => (
            MDEVMIG_EPANIC,
            LastError::new(Code::Internal.as_str(), "a panic inside libmdevmig was caught"),
        ),
    };
    handles::set_last_error(h, err);
    status
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid for the call.
unsafe fn arg_str<'a>(p: *const c_char, what: &'static str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Fail::Inval(what));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string that
    // outlives this call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Fail::Inval(what))
}

/// Stores `v` through an out-pointer.
///
/// # Safety
/// `p` is null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) -> Res<()> {
    if p.is_null() {
        return Err(Fail::Inval("an out-parameter is null"));
    }
    // SAFETY: non-null, and the caller promises it is valid for a write of T.
    unsafe { p.write(v) };
    Ok(())
}

/// A newly allocated C string for an out-parameter.
///
/// # Safety
/// As [`put`].
unsafe fn put_string(p: *mut *mut c_char, s: String) -> Res<()> {
    if p.is_null() {
        return Err(Fail::Inval("an out-parameter is null"));
    }
    let c = CString::new(s).map_err(|_| Fail::Op(Error::new(Code::Internal, "string with a NUL byte")))?;
    // SAFETY: forwarded.
    unsafe { put(p, c.into_raw()) }
}

/// The library's version, `"MAJOR.MINOR.PATCH"`: a static string, not to be
/// freed. Thread-safe.
#[no_mangle]
pub extern "C" fn mdevmig_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Releases a string the library returned. Null is ignored. Thread-safe; each
/// string is freed once.
///
/// # Safety
/// `s` is null or a string from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the caller promises `s` came from CString::into_raw here.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The last error of `handle` (a context or a device), or with `handle` 0 the
/// calling thread's (failures without a usable handle): its stable dotted code
/// and message, as new strings (free both). Fails with `MDEVMIG_EBADHANDLE` for
/// an unknown non-zero handle; with no error recorded, the code is `""`.
/// Thread-safe.
///
/// # Safety
/// `code` and `message` are valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_last_error(
    handle: u64,
    code: *mut *mut c_char,
    message: *mut *mut c_char,
) -> c_int {
    let Some(e) = handles::last_error(handle) else {
        return MDEVMIG_EBADHANDLE;
    };
    if code.is_null() || message.is_null() {
        return MDEVMIG_EINVAL;
    }
    call(0, || {
        // SAFETY: both checked non-null; the caller promises they are writable.
        unsafe {
            put_string(code, e.code)?;
            put_string(message, e.message)
        }
    })
}

/// A new session nonce (64 hex digits) for a destination to hand its source.
/// Thread-safe.
///
/// # Safety
/// `out` is valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_session_new(out: *mut *mut c_char) -> c_int {
    call(0, || {
        let hex = mdevmig_core::auth::hex(&mdevmig_core::auth::new_session_nonce());
        // SAFETY: forwarded.
        unsafe { put_string(out, hex) }
    })
}

/// A new context: the built-in plugins, no key, no trust, no session, the
/// default policy, validation in a sandboxed `mdevmig-validator` found next to
/// the running program or on `PATH` (see [`mdevmig_ctx_set_validator`]).
/// Thread-safe.
///
/// # Safety
/// `out` is valid for a write of a handle.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_new(out: *mut mdevmig_ctx) -> c_int {
    call(0, || {
        if out.is_null() {
            return Err(Fail::Inval("out is null"));
        }
        let h = handles::insert_ctx(Ctx::new());
        // SAFETY: forwarded.
        unsafe { put(out, h) }
    })
}

/// Frees a context. Devices opened from it keep working (they hold what they
/// need). Thread-safe; a second free is `MDEVMIG_EBADHANDLE`.
#[no_mangle]
pub extern "C" fn mdevmig_ctx_free(ctx: mdevmig_ctx) -> c_int {
    call(ctx, || handles::remove_ctx(ctx).map(drop).ok_or(Fail::BadHandle))
}

fn with_ctx(ctx: mdevmig_ctx, f: impl FnOnce(&mut Ctx) -> Res<()>) -> c_int {
    call(ctx, || {
        let c = handles::ctx(ctx).ok_or(Fail::BadHandle)?;
        let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c)
    })
}

/// Loads the signing key (PKCS#8 PEM) that saves sign with. Thread-safe.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_load_key(ctx: mdevmig_ctx, path: *const c_char) -> c_int {
    with_ctx(ctx, |c| {
        // SAFETY: forwarded.
        let path = unsafe { arg_str(path, "path is null or not UTF-8") }?;
        c.key = Some(Arc::new(SigningKeyPair::load(std::path::Path::new(path))?));
        Ok(())
    })
}

/// Loads the trust store (a `.pub` file or a directory of them) that restores
/// verify against, with the CLI's ownership and permission checks.
/// Thread-safe.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_load_trust(ctx: mdevmig_ctx, path: *const c_char) -> c_int {
    with_ctx(ctx, |c| {
        // SAFETY: forwarded.
        let path = unsafe { arg_str(path, "path is null or not UTF-8") }?;
        c.trust = Some(Arc::new(TrustStore::load(std::path::Path::new(path))?));
        Ok(())
    })
}

/// Binds saves to, and requires of restores, this session nonce (64 hex
/// digits, from the destination's [`mdevmig_session_new`]); null clears it.
/// Thread-safe.
///
/// # Safety
/// `nonce` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_set_session(ctx: mdevmig_ctx, nonce: *const c_char) -> c_int {
    with_ctx(ctx, |c| {
        c.session = if nonce.is_null() {
            None
        } else {
            // SAFETY: forwarded.
            let s = unsafe { arg_str(nonce, "nonce is not UTF-8") }?;
            Some(mdevmig_core::auth::parse_nonce(s)?)
        };
        Ok(())
    })
}

/// Sets the operator policy restores and checks apply, as the JSON of a
/// `--policy` file (`spec/compat.md`); null restores the default. Thread-safe.
///
/// # Safety
/// `json` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_set_policy(ctx: mdevmig_ctx, json: *const c_char) -> c_int {
    with_ctx(ctx, |c| {
        c.policy = if json.is_null() {
            compat::Policy::default()
        } else {
            // SAFETY: forwarded.
            let s = unsafe { arg_str(json, "policy is not UTF-8") }?;
            compat::parse_policy(s)?
        };
        Ok(())
    })
}

/// Chooses where vendor validation runs: the sandboxed validator program at
/// `path` (an installed `mdevmig-validator`), or with `path` null, in this
/// process (for hosts that forbid forking; a plugin bug then hits the VMM).
/// Thread-safe.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_ctx_set_validator(ctx: mdevmig_ctx, path: *const c_char) -> c_int {
    with_ctx(ctx, |c| {
        c.validation = if path.is_null() {
            Validation::InProcess
        } else {
            // SAFETY: forwarded.
            let p = unsafe { arg_str(path, "validator path is not UTF-8") }?;
            Validation::Sandbox(SandboxConfig {
                program: Some(PathBuf::from(p)),
                ..SandboxConfig::default()
            })
        };
        Ok(())
    })
}

fn region_config(c: &Ctx) -> RegionConfig {
    RegionConfig {
        registry: c.registry.clone(),
        key: c.key.clone(),
        trust: c.trust.clone(),
        save: SaveOptions {
            session: c.session,
            ..SaveOptions::default()
        },
        restore: RestoreOptions {
            session: c.session,
            policy: c.policy.clone(),
            validation: c.validation.clone(),
            ..RestoreOptions::default()
        },
    }
}

fn open_with(
    ctx: mdevmig_ctx,
    out: *mut mdevmig_dev,
    open: impl FnOnce(&Ctx) -> Res<Box<dyn device::MigrationDevice>>,
) -> c_int {
    call(ctx, || {
        let c = handles::ctx(ctx).ok_or(Fail::BadHandle)?;
        let (dev, cfg, registry) = {
            let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (open(&c)?, region_config(&c), c.registry.clone())
        };
        let h = handles::insert_dev(Dev {
            region: MigrationRegion::new(dev, cfg),
            registry,
            last: LastError::none(),
        });
        // SAFETY: the caller promises `out` is writable (checked for null).
        unsafe { put(out, h) }.inspect_err(|_| {
            handles::remove_dev(h);
        })
    })
}

/// Opens a device by spec (`sim:...`, `file:...`, `vfio:<uuid or sysfs path>`;
/// the CLI's specs) and puts a migration region over it, in RUNNING.
/// Thread-safe.
///
/// # Safety
/// `spec` is a NUL-terminated string; `out` is valid for a write of a handle.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_open(
    ctx: mdevmig_ctx,
    spec: *const c_char,
    out: *mut mdevmig_dev,
) -> c_int {
    if out.is_null() {
        return call(ctx, || Err(Fail::Inval("out is null")));
    }
    open_with(ctx, out, |c| {
        // SAFETY: forwarded.
        let spec = unsafe { arg_str(spec, "spec is null or not UTF-8") }?;
        Ok(device::open(&spec.parse::<DeviceSpec>()?, &c.registry)?.0)
    })
}

/// Puts a migration region over a VFIO device fd the VMM already owns (the
/// device it passes through, opened through its group or iommufd cdev and
/// bound). The library works on its own duplicate (close-on-exec); the VMM
/// keeps `fd` and must not drive the device's migration itself meanwhile (QEMU:
/// `enable-migration=off` for it). `sysfs` is the device's sysfs path or mdev
/// UUID, used only to identify its vendor plugin. A device found mid-migration
/// is reset, as when mdevmig opens it. Thread-safe.
///
/// # Safety
/// `fd` is an open file descriptor for the duration of the call (any other
/// value is refused); `sysfs` is a NUL-terminated string; `out` is valid for a
/// write of a handle.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_open_vfio_fd(
    ctx: mdevmig_ctx,
    fd: c_int,
    sysfs: *const c_char,
    out: *mut mdevmig_dev,
) -> c_int {
    if out.is_null() {
        return call(ctx, || Err(Fail::Inval("out is null")));
    }
    open_with(ctx, out, |c| {
        // SAFETY: forwarded.
        let sysfs = unsafe { arg_str(sysfs, "sysfs is null or not UTF-8") }?;
        if fd < 0 || !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists() {
            return Err(Fail::Inval("fd is not an open file descriptor"));
        }
        // SAFETY: `fd` was just seen open, and the caller promises it stays open
        // for this call; it is only borrowed to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let own = borrowed
            .try_clone_to_owned()
            .map_err(|e| Fail::Op(Error::io(Code::DeviceOpen, "duplicating the device fd", &e)))?;
        let dev = device::VfioFdBackend::new(own, sysfs, &c.registry)?;
        Ok(Box::new(dev) as Box<dyn device::MigrationDevice>)
    })
}

/// Frees a device handle. A migration in progress is abandoned: a source goes
/// back to RUNNING, a destination that was written to is reset; a device left
/// in ERROR (a refused restore) is reset to RUNNING. Thread-safe;
/// waits for a call on the handle in another thread to end.
#[no_mangle]
pub extern "C" fn mdevmig_dev_free(dev: mdevmig_dev) -> c_int {
    call(dev, || handles::remove_dev(dev).map(drop).ok_or(Fail::BadHandle))
}

fn with_dev(dev: mdevmig_dev, f: impl FnOnce(&mut Dev) -> Res<()>) -> c_int {
    call(dev, || {
        let d = handles::dev(dev).ok_or(Fail::BadHandle)?;
        let mut d = d.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut d)
    })
}

/// `VFIO_DEVICE_RESET`: abandons any migration (a source goes back to RUNNING,
/// a destination that was written to is reset) and returns the device to
/// RUNNING; the way out of ERROR. Thread-safe.
#[no_mangle]
pub extern "C" fn mdevmig_dev_reset(dev: mdevmig_dev) -> c_int {
    with_dev(dev, |d| Ok(d.region.reset()?))
}

/// The migration flags (`MDEVMIG_MIGRATION_*`, the device's own).
/// Thread-safe.
///
/// # Safety
/// `flags` is valid for a write of a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_migration_flags(dev: mdevmig_dev, flags: *mut u64) -> c_int {
    with_dev(dev, |d| {
        // SAFETY: forwarded.
        unsafe { put(flags, d.region.migration_flags()) }
    })
}

/// The current state (`MDEVMIG_STATE_*`). Thread-safe.
///
/// # Safety
/// `state` is valid for a write of a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_get_state(dev: mdevmig_dev, state: *mut u32) -> c_int {
    with_dev(dev, |d| {
        // SAFETY: forwarded.
        unsafe { put(state, d.region.state().as_u32()) }
    })
}

/// Moves the device along the kernel's arcs to `state`
/// (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`, SET). Entering PRE_COPY,
/// PRE_COPY_P2P, STOP_COPY or RESUMING starts a stream: `*data_fd` is then a
/// new fd for it, the caller's to close (reads give the envelope; in PRE_COPY
/// it is non-blocking, EAGAIN meaning no data at this moment); otherwise
/// `*data_fd` is -1, also for a move between streaming states (PRE_COPY to
/// STOP_COPY continues the same stream, as the kernel's does). `data_fd` may be null when the caller reads and writes
/// through [`mdevmig_dev_read`] and [`mdevmig_dev_write`]. A failed arc leaves
/// the device in ERROR; [`mdevmig_dev_reset`] leaves it. Thread-safe.
///
/// # Safety
/// `data_fd` is null or valid for a write of an `int`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_set_state(dev: mdevmig_dev, state: u32, data_fd: *mut c_int) -> c_int {
    with_dev(dev, |d| {
        let target = MigState::from_u32(state)
            .filter(|s| *s != MigState::Error)
            .ok_or(Fail::Inval("state is not a settable vfio_device_mig_state"))?;
        let before = d.region.state();
        d.region.set_state(target)?;
        let fd = match d.region.data_fd() {
            // A stream starts only from a state without one; PRE_COPY to
            // PRE_COPY_P2P or STOP_COPY keeps it, as the kernel's arcs do.
            Some(fd) if target.is_streaming() && !before.is_streaming() => {
                let own: OwnedFd = fd
                    .try_clone_to_owned()
                    .map_err(|e| Fail::Op(Error::io(Code::IoOpen, "data fd", &e)))?;
                own.into_raw_fd()
            }
            _ => -1,
        };
        if data_fd.is_null() {
            if fd >= 0 {
                // SAFETY: fd is the OwnedFd just released above; nobody else has it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            return Ok(());
        }
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { put(data_fd, fd) }
    })
}

/// Reads envelope bytes (PRE_COPY, PRE_COPY_P2P, STOP_COPY) into `buf`:
/// `*got` bytes, 0 at the end of the stream. In PRE_COPY, returns
/// `MDEVMIG_ENOMSG` when the device has no more for now, as the kernel's read
/// fails with ENOMSG. Thread-safe; blocks in STOP_COPY until data or the end.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes; `got` for a write of a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_read(
    dev: mdevmig_dev,
    buf: *mut u8,
    len: usize,
    got: *mut usize,
) -> c_int {
    if buf.is_null() || got.is_null() || len == 0 {
        return call(dev, || Err(Fail::Inval("buf or got is null, or len is 0")));
    }
    let mut no_more = false;
    let status = with_dev(dev, |d| {
        // SAFETY: the caller promises buf is valid for len bytes of writes, and
        // nothing else uses it during the call.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        let n = match d.region.read_data(slice)? {
            DataRead::Data(n) => n,
            DataRead::End => 0,
            DataRead::NotYet => {
                no_more = true;
                0
            }
        };
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { put(got, n) }
    });
    if status == MDEVMIG_OK && no_more {
        MDEVMIG_ENOMSG
    } else {
        status
    }
}

/// Writes envelope bytes (RESUMING). An error means the restore has refused
/// the stream; the reason comes with the move to STOP. Thread-safe.
///
/// # Safety
/// `buf` is valid for reads of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_write(dev: mdevmig_dev, buf: *const u8, len: usize) -> c_int {
    if buf.is_null() && len > 0 {
        return call(dev, || Err(Fail::Inval("buf is null")));
    }
    with_dev(dev, |d| {
        let data: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: non-null, and the caller promises len readable bytes.
            unsafe { std::slice::from_raw_parts(buf, len) }
        };
        Ok(d.region.write_data(data)?)
    })
}

/// `VFIO_MIG_GET_PRECOPY_INFO` (PRE_COPY states only), in envelope bytes;
/// the query also lets the device prepare its next round. Thread-safe.
///
/// # Safety
/// `initial_bytes` and `dirty_bytes` are valid for writes of a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_precopy_info(
    dev: mdevmig_dev,
    initial_bytes: *mut u64,
    dirty_bytes: *mut u64,
) -> c_int {
    if initial_bytes.is_null() || dirty_bytes.is_null() {
        return call(dev, || Err(Fail::Inval("an out-parameter is null")));
    }
    with_dev(dev, |d| {
        let info = d.region.precopy_info()?;
        // SAFETY: both checked non-null; the caller promises they are writable.
        unsafe {
            put(initial_bytes, info.initial_bytes)?;
            put(dirty_bytes, info.dirty_bytes)
        }
    })
}

/// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` in envelope bytes: what STOP_COPY would
/// still move. Thread-safe.
///
/// # Safety
/// `bytes` is valid for a write of a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_data_size(dev: mdevmig_dev, bytes: *mut u64) -> c_int {
    with_dev(dev, |d| {
        let n = d.region.data_size()?;
        // SAFETY: forwarded.
        unsafe { put(bytes, n) }
    })
}

/// The device's descriptor as JSON (the CLI's `describe --json`), for a
/// destination's pre-check. The device must not be migrating. Thread-safe.
///
/// # Safety
/// `json` is valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_describe(dev: mdevmig_dev, json: *mut *mut c_char) -> c_int {
    with_dev(dev, |d| {
        let registry = d.registry.clone();
        let device = d.region.device().ok_or_else(busy)?;
        let desc = compat::describe(&**device, &registry, None)?;
        let text =
            serde_json::to_string(&desc).map_err(|e| Fail::Op(Error::new(Code::Internal, e.to_string())))?;
        // SAFETY: forwarded.
        unsafe { put_string(json, text) }
    })
}

fn busy() -> Fail {
    Fail::Op(Error::new(
        Code::DeviceTransition,
        "the device is migrating; describe and check need it idle",
    ))
}

/// Checks a source's descriptor (JSON from [`mdevmig_dev_describe`] on the
/// source host) against this destination device, with the context's policy:
/// the verdict as JSON (the CLI's `check --json`). Returns `MDEVMIG_OK` with
/// the verdict whether or not it is compatible (its `verdict.compatible`
/// says); a descriptor that does not parse is `MDEVMIG_ERROR`. Thread-safe.
///
/// # Safety
/// `source_json` is a NUL-terminated string; `verdict_json` is valid for a
/// write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_check(
    dev: mdevmig_dev,
    ctx: mdevmig_ctx,
    source_json: *const c_char,
    verdict_json: *mut *mut c_char,
) -> c_int {
    let policy = match handles::ctx(ctx) {
        Some(c) => c
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .policy
            .clone(),
        None => return call(dev, || Err(Fail::BadHandle)),
    };
    with_dev(dev, |d| {
        // SAFETY: forwarded.
        let text = unsafe { arg_str(source_json, "source_json is null or not UTF-8") }?;
        if text.len() as u64 > compat::MAX_DESCRIPTOR {
            return Err(Fail::Op(Error::new(
                Code::InputTooLarge,
                "descriptor larger than 1 MiB",
            )));
        }
        let source = Descriptor::parse(text)?;
        let registry = d.registry.clone();
        let device = d.region.device().ok_or_else(busy)?;
        let load = registry.load_window(device.info(), None);
        let r = compat::check(&source, device.info(), &registry, load, &policy);
        let out =
            serde_json::to_string(&r).map_err(|e| Fail::Op(Error::new(Code::Internal, e.to_string())))?;
        // SAFETY: forwarded.
        unsafe { put_string(verdict_json, out) }
    })
}

/// The SHA-256 state digest of a simulated device (64 hex digits), for tests
/// comparing a source with its destination; `MDEVMIG_ERROR` for devices that
/// cannot compute one (real hardware) or while migrating. Thread-safe.
///
/// # Safety
/// `hex` is valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn mdevmig_dev_state_digest(dev: mdevmig_dev, hex: *mut *mut c_char) -> c_int {
    with_dev(dev, |d| {
        let device = d.region.device().ok_or_else(busy)?;
        let digest = device
            .state_digest()
            .ok_or_else(|| Fail::Op(Error::new(Code::DeviceData, "this backend has no state digest")))?;
        // SAFETY: forwarded.
        unsafe { put_string(hex, mdevmig_core::auth::hex(&digest)) }
    })
}

#[cfg(test)]
mod tests;
