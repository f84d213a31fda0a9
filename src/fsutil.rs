//! Files on a shared host: created the way `install(1)` and OpenSSH create them.
//!
//! mdevmig runs as root next to directories other users can write. Every file it
//! creates (a saved stream, a restored image) goes through [`AtomicFile`]:
//!
//! ```text
//!   <dest>.mdevmig-lock   flock(LOCK_EX|LOCK_NB), opened O_NOFOLLOW: one writer per
//!                         destination; a second is refused (io.busy)
//!   .<name>.XXXXXX.mdevmig-partial
//!                         O_CREAT|O_EXCL in <dest>'s directory (tempfile), mode 0600
//!                         unless asked otherwise; a planted file or symlink cannot be
//!                         it, and it vanishes if the write fails or is interrupted
//!   commit                fsync, then link(2) to <dest> (fails if <dest> appeared), or
//!                         rename(2) over it with --force; a symlink at <dest> is
//!                         replaced, never followed
//! ```
//!
//! An existing `<dest>` is replaced only when the caller was told to (`--force`):
//! otherwise `io.exists`, before anything is written. Sources are opened with
//! [`open_regular`]: `O_NOFOLLOW`, and the descriptor must be a regular file (a FIFO
//! would hang a read, a device or a symlink to a root-only file would leak it).
//!
//! The lock file is removed when the writer is done. A writer that takes the lock
//! checks afterwards that the path still names the file it locked (a writer that
//! finished may have unlinked it in between) and tries again if not, so removing
//! it cannot let two writers in.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::error::{Code, Error, Result};

/// Mode of files mdevmig creates unless told otherwise: device state holds guest
/// data.
pub const DEFAULT_MODE: u32 = 0o600;

/// A file being written to a temporary name beside its destination; it takes the
/// destination's name only at [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    replace: bool,
    _lock: DestLock,
}

/// The writer's lock on a destination: held while the lock file exists under
/// its name, and removed (then released) when dropped.
#[derive(Debug)]
struct DestLock {
    path: PathBuf,
    _file: Flock<File>,
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // Still holding the lock: the next writer either opened this inode (and
        // will see it unlinked and retry) or will create a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".mdevmig-lock");
    PathBuf::from(s)
}

/// Takes the writer's lock for `dest`.
fn lock(dest: &Path) -> Result<DestLock> {
    let path = lock_path(dest);
    // A lock file unlinked by the writer before us between our open and flock is
    // not the lock: try again with the file now under the name (a bounded number
    // of times; each retry means another writer came and went).
    for _ in 0..16 {
        let held = lock_once(dest, &path)?;
        let same = match (std::fs::symlink_metadata(&path), held.metadata()) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.dev() == b.dev() && a.ino() == b.ino()
            }
            _ => false,
        };
        if same {
            return Ok(DestLock { path, _file: held });
        }
    }
    Err(Error::new(
        Code::Busy,
        format!(
            "{} is being written by other writers, one after another",
            dest.display()
        ),
    ))
}

fn lock_once(dest: &Path, path: &Path) -> Result<Flock<File>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(DEFAULT_MODE)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    if !meta.file_type().is_file() {
        return Err(Error::new(
            Code::NotRegular,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        Error::new(
            Code::Busy,
            format!(
                "another mdevmig is writing {} (lock {} held: {errno})",
                dest.display(),
                path.display()
            ),
        )
    })
}

impl AtomicFile {
    /// Starts writing `dest`: takes its lock, refuses an existing `dest` unless
    /// `replace`, and creates the temporary file with `mode`.
    pub fn create(dest: &Path, mode: u32, replace: bool) -> Result<Self> {
        let lock = lock(dest)?;
        exists_check(dest, replace)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".mdevmig-partial")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(|e| Error::io(Code::IoOpen, dest.display(), &e))?;
        // The umask may have narrowed the mode; what was asked for is what it gets.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(Code::IoOpen, tmp.path().display(), &e))?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            replace,
            _lock: lock,
        })
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The destination's path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes the data to disk and gives it the destination's name.
    pub fn commit(self) -> Result<()> {
        let AtomicFile {
            tmp,
            dest,
            replace,
            _lock,
        } = self;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(Code::IoWrite, dest.display(), &e))?;
        let done = if replace {
            tmp.persist(&dest).map(drop)
        } else {
            tmp.persist_noclobber(&dest).map(drop)
        };
        done.map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::new(
                    Code::Exists,
                    format!("{} appeared while it was written; not replaced", dest.display()),
                )
            } else {
                Error::io(Code::IoWrite, dest.display(), &e.error)
            }
        })
    }
}

/// Refuses an existing `dest` (a symlink included, even a dangling one) unless
/// `replace`; refuses anything but a regular file or a symlink even then.
pub fn exists_check(dest: &Path, replace: bool) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(Code::IoOpen, dest.display(), &e)),
        Ok(m) if !(m.file_type().is_file() || m.file_type().is_symlink()) => Err(Error::new(
            Code::NotRegular,
            format!("{} exists and is not a regular file", dest.display()),
        )),
        Ok(_) if replace => Ok(()),
        Ok(m) => Err(Error::new(
            Code::Exists,
            format!(
                "{} exists{}; pass --force to replace it",
                dest.display(),
                if m.file_type().is_symlink() {
                    " (a symlink, which is never followed)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// Opens `path` for reading without following a symlink, and only if it is a
/// regular file.
pub fn open_regular(path: &Path, code: Code) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::new(
                    Code::NotRegular,
                    format!("{} is a symlink, which is never followed", path.display()),
                )
            } else {
                Error::io(code, path.display(), &e)
            }
        })?;
    let meta = f.metadata().map_err(|e| Error::io(code, path.display(), &e))?;
    if !meta.file_type().is_file() {
        return Err(Error::new(
            Code::NotRegular,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// Reads `src` as UTF-8 text of at most `cap` bytes: the one capped read of the
/// files mdevmig parses whole (descriptors, policies, key files). It stops one byte
/// past the cap, so a huge or endless input costs no more than the cap:
/// `limit.input_too_large` ("`name`: `too_large`") past it, `read_error` when
/// reading fails or the text is not UTF-8.
pub(crate) fn read_capped(
    src: impl Read,
    cap: u64,
    name: impl std::fmt::Display,
    too_large: &str,
    read_error: Code,
) -> Result<String> {
    let mut text = String::new();
    let n = src
        .take(cap.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| Error::io(read_error, &name, &e))?;
    if u64::try_from(n).map_or(true, |n| n > cap) {
        return Err(Error::new(Code::InputTooLarge, format!("{name}: {too_large}")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_committed_file_has_the_mode_and_only_then_the_name() {
        let d = dir();
        let dest = d.path().join("out");
        let mut f = AtomicFile::create(&dest, 0o600, false).unwrap();
        std::io::Write::write_all(f.file(), b"data").unwrap();
        assert!(!dest.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let d = dir();
        let dest = d.path().join("out");
        let mut f = AtomicFile::create(&dest, 0o600, false).unwrap();
        std::io::Write::write_all(f.file(), b"data").unwrap();
        drop(f);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn existing_files_and_symlinks_are_not_replaced_or_followed() {
        let d = dir();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let link = d.path().join("out");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert_eq!(
            AtomicFile::create(&link, 0o600, false).unwrap_err().code,
            Code::Exists
        );
        let mut f = AtomicFile::create(&link, 0o600, true).unwrap();
        std::io::Write::write_all(f.file(), b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(
            open_regular(&d.path().join("nope"), Code::IoOpen)
                .unwrap_err()
                .code,
            Code::IoOpen
        );
        std::os::unix::fs::symlink(&victim, d.path().join("l2")).unwrap();
        assert_eq!(
            open_regular(&d.path().join("l2"), Code::IoOpen).unwrap_err().code,
            Code::NotRegular
        );
    }

    #[test]
    fn a_second_writer_is_refused() {
        let d = dir();
        let dest = d.path().join("out");
        let _first = AtomicFile::create(&dest, 0o600, false).unwrap();
        assert_eq!(
            AtomicFile::create(&dest, 0o600, false).unwrap_err().code,
            Code::Busy
        );
    }
}
