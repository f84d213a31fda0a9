//! Key files on a shared host: created the way `install(1)` creates files, read
//! the way OpenSSH's `StrictModes` reads them.
//!
//! mdevmig runs as root next to directories other users can write, so a path it
//! is given may hold a symlink to a root-only file, a FIFO that hangs a read, a
//! file another user can rewrite, or a 10 GiB file. Every key file goes through
//! here:
//!
//! * **Creating** (`keygen`): both targets are checked first (`io.exists` for any
//!   existing name, a symlink included, even a dangling one; `io.not_regular` for a
//!   directory, FIFO or device even with `--force`). Each file is written to a
//!   temporary name beside it, created `O_CREAT|O_EXCL|O_NOFOLLOW` with its exact
//!   mode (0600 private, 0644 public, whatever the umask), fsynced, and only then
//!   `link(2)`ed to its name (which fails if the name appeared meanwhile) or, with
//!   `--force`, `rename(2)`d over it (a symlink is replaced, never followed).
//! * **Reading**: opened `O_NOFOLLOW|O_NONBLOCK` (a FIFO cannot hang the open),
//!   `fstat`ed on the descriptor (so what is checked is what is read): a regular
//!   file (`io.not_regular`), owned by root or the user running mdevmig, at most
//!   [`MAX_KEY_FILE`] bytes (`limit.input_too_large`). A private key may not be
//!   readable or writable by group or others (`auth.key_permissions`); a trust
//!   store file or directory may not be writable by group or others, except a
//!   root-owned sticky directory (`auth.trust_store_permissions`, which
//!   `--insecure-trust-store` skips).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::{Code, Error, Result};

use super::MAX_KEY_FILE;

/// Flags every key file is opened with for reading.
fn read_flags() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits()
}

/// The user mdevmig runs as: files it trusts are owned by root or by it.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn not_regular(path: &Path, what: &str) -> Error {
    Error::new(
        Code::NotRegular,
        format!(
            "{}: {what}, not a regular file; key files must be regular files",
            path.display()
        ),
    )
}

fn kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink (never followed)"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Maps an open error: a symlink met `O_NOFOLLOW` (ELOOP), a socket cannot be
/// opened (ENXIO).
fn open_error(path: &Path, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(nix::libc::ELOOP) => not_regular(path, "a symlink (never followed)"),
        Some(nix::libc::ENXIO) => not_regular(path, "a socket or device without a reader"),
        _ => Error::io(Code::IoOpen, path.display(), e),
    }
}

/// Opens `path` without following a symlink or blocking on a FIFO, and returns it
/// with the descriptor's own metadata, if it is a regular file.
pub(super) fn open_regular(path: &Path) -> Result<(File, Metadata)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(read_flags())
        .open(path)
        .map_err(|e| open_error(path, &e))?;
    regular(f, path)
}

/// `fstat`s an opened file and refuses anything but a regular file.
fn regular(f: File, path: &Path) -> Result<(File, Metadata)> {
    let meta = f
        .metadata()
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, kind(&meta)));
    }
    Ok((f, meta))
}

/// Reads an opened key file, refusing one above [`MAX_KEY_FILE`] before reading it
/// (and one that grows past it while read).
pub(super) fn read_capped(f: File, meta: &Metadata, path: &Path) -> Result<String> {
    let too_large = format!("key file larger than {MAX_KEY_FILE} bytes");
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::new(
            Code::InputTooLarge,
            format!("{}: {too_large}", path.display()),
        ));
    }
    crate::fsutil::read_capped(f, MAX_KEY_FILE, path.display(), &too_large, Code::BadKeyFile)
}

/// Why a file or directory with this owner and mode must not be trusted, if it
/// must not.
fn owner_problem(meta: &Metadata) -> Option<String> {
    let (uid, me) = (meta.uid(), euid());
    (uid != 0 && uid != me).then(|| format!("owned by uid {uid}, not by root or uid {me}"))
}

/// A private key: owned by root or us, and no access for group or others.
pub(super) fn check_private_key(meta: &Metadata, path: &Path) -> Result<()> {
    let mode = meta.mode() & 0o7777;
    let problem = owner_problem(meta).or_else(|| {
        (mode & 0o077 != 0)
            .then(|| format!("readable or writable by group or others (mode {mode:04o}; chmod 600 it)"))
    });
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::new(
            Code::KeyPermissions,
            format!("{}: private key {p}; refused", path.display()),
        )),
    }
}

/// A trust store file or directory: owned by root or us, and writable by nobody
/// else, except a root-owned sticky directory (where others may add files, each
/// of which must then pass this check itself).
pub(super) fn trust_problem(meta: &Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let sticky_root_dir = meta.is_dir() && meta.uid() == 0 && mode & 0o1000 != 0;
    owner_problem(meta).or_else(|| {
        (mode & 0o022 != 0 && !sticky_root_dir)
            .then(|| format!("writable by group or others (mode {mode:04o})"))
    })
}

/// Opens a trust store directory, following a symlink to it (the operator named
/// it), and returns it with its metadata.
pub(super) fn open_dir(path: &Path) -> Result<(File, Metadata)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    Ok((f, meta))
}

/// Opens the entry `name` of the opened directory `dir` (shown as `path`) if it
/// is a regular file: checked with `lstat` before it is opened (a device is never
/// opened), then opened `O_NOFOLLOW|O_NONBLOCK` and checked again on the
/// descriptor.
pub(super) fn open_entry(dir: &File, name: &std::ffi::OsStr, path: &Path) -> Result<(File, Metadata)> {
    use nix::sys::stat::{fstatat, Mode, SFlag};
    let st = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &std::io::Error::from(e)))?;
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if fmt != SFlag::S_IFREG {
        let what = match fmt {
            SFlag::S_IFLNK => "a symlink (never followed)",
            SFlag::S_IFIFO => "a FIFO",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFDIR => "a directory",
            _ => "a device",
        };
        return Err(not_regular(path, what));
    }
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::from_bits_truncate(read_flags()) | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| open_error(path, &std::io::Error::from(e)))?;
    regular(File::from(fd), path)
}

/// `prefix` with `suffix` appended to its last component.
pub(super) fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Refuses an existing `dest` unless `replace`; refuses a directory, FIFO, socket
/// or device even then. A symlink is looked at, never through.
fn check_target(dest: &Path, replace: bool) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(Code::IoOpen, dest.display(), &e)),
        Ok(m) if !(m.file_type().is_file() || m.file_type().is_symlink()) => Err(Error::new(
            Code::NotRegular,
            format!("{} exists and is {}; not replaced", dest.display(), kind(&m)),
        )),
        Ok(_) if replace => Ok(()),
        Ok(m) => Err(Error::new(
            Code::Exists,
            format!(
                "{} exists{}; not overwritten (pass --force to replace it)",
                dest.display(),
                if m.file_type().is_symlink() {
                    " as a symlink, which is never followed"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// A complete file under a temporary name beside its destination; removed on drop
/// unless it took the destination's name.
struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    /// The temporary name is gone (renamed to `dest`).
    renamed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to a new file beside `dest` with exactly `mode`, and fsyncs it.
fn write_pending(dest: &Path, mode: u32, bytes: &[u8]) -> Result<Pending> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..8 {
        let mut r = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut r);
        let tmp = parent(dest).join(format!(".{name}.{}.mdevmig-tmp", super::hex(&r)));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&tmp);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(Error::io(Code::IoOpen, tmp.display(), &e)),
        };
        let p = Pending {
            tmp,
            dest: dest.to_path_buf(),
            renamed: false,
        };
        // The umask may have narrowed the mode; the file gets exactly `mode`.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| f.write_all(bytes))
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(Code::IoWrite, p.tmp.display(), &e))?;
        return Ok(p);
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no temporary name"));
    Err(Error::io(Code::IoOpen, dest.display(), &e))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Gives the pending file its destination's name: `link(2)` (fails if the name
/// exists) or, with `replace`, `rename(2)` (replaces a symlink, never follows it).
fn commit(p: &mut Pending, replace: bool) -> Result<()> {
    let done = if replace {
        std::fs::rename(&p.tmp, &p.dest).map(|()| p.renamed = true)
    } else {
        std::fs::hard_link(&p.tmp, &p.dest)
    };
    done.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(
                Code::Exists,
                format!(
                    "{} appeared while it was written; not overwritten",
                    p.dest.display()
                ),
            )
        } else {
            Error::io(Code::IoWrite, p.dest.display(), &e)
        }
    })
}

/// Creates the files `(path, mode, bytes)` all or none (unless `replace`, where a
/// failure after the first rename leaves the files renamed so far).
pub(super) fn create_all(files: &[(&Path, u32, &[u8])], replace: bool) -> Result<()> {
    for (dest, _, _) in files {
        check_target(dest, replace)?;
    }
    let mut pending = files
        .iter()
        .map(|(dest, mode, bytes)| write_pending(dest, *mode, bytes))
        .collect::<Result<Vec<_>>>()?;
    let mut linked: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in &mut pending {
        if let Err(e) = commit(p, replace) {
            // Take back what this call linked, and only while the name still
            // refers to our file (the temporary names go when `pending` drops).
            for (tmp, dest) in &linked {
                if same_file(tmp, dest) {
                    let _ = std::fs::remove_file(dest);
                }
            }
            return Err(e);
        }
        if !replace {
            linked.push((p.tmp.clone(), p.dest.clone()));
        }
    }
    // The temporary names go first, so the directory's fsync records their removal.
    drop(pending);
    let mut dirs: Vec<&Path> = files.iter().map(|(d, _, _)| parent(d)).collect();
    dirs.dedup();
    for d in dirs {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(Code::IoWrite, d.display(), &e))?;
    }
    Ok(())
}
