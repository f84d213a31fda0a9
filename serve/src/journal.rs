//! The journal of migrations in flight, so a service that died mid-job (kill -9,
//! a crash, power) leaves no device half-loaded.
//!
//! Before a job touches a device whose state outlives the service (a `vfio:`
//! device, a `file:` image), and while a region on one is mid-migration, it writes `<state-dir>/journal/<job>.<pid>.json`:
//! `{"role": "save"|"restore", "device": "<spec>"}`; the entry is removed when
//! the job ends, however it ends. At start, every entry left behind is a job the
//! previous run did not finish:
//!
//! | role    | device      | what start does                                         |
//! |---------|-------------|---------------------------------------------------------|
//! | restore | vfio:       | VFIO_DEVICE_RESET (the device is back in RUNNING, empty) |
//! | save    | vfio:       | back to RUNNING along the kernel's arcs; reset if refused |
//! | any     | file:       | its partial files (`.<name>.*.mdevmig-partial`) and an unheld lock removed |
//!
//! Simulated devices live in the service's memory and die with it; they are not
//! journaled. Partial output files in `<state-dir>/files/` are removed too.

use std::path::{Path, PathBuf};

use mdevmig::device::{self, DeviceSpec, MigState};
use mdevmig::{Code, Error, Registry, Result};
use serde_json::{json, Value};

use crate::log;

/// Creates the state directory and its `journal/` and `files/` (mode 0700).
pub fn prepare(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for d in [dir.to_path_buf(), dir.join("journal"), dir.join("files")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| Error::io(Code::IoOpen, d.display(), &e))?;
        let meta = std::fs::symlink_metadata(&d).map_err(|e| Error::io(Code::IoOpen, d.display(), &e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                Code::NotRegular,
                format!("{} is not a directory", d.display()),
            ));
        }
    }
    Ok(())
}

/// A journal entry; removed when dropped.
pub struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Journals a job on a device whose state outlives the service.
pub fn begin(dir: &Path, job: &str, role: &str, spec: &str) -> Option<Entry> {
    if spec.starts_with("sim:") {
        return None;
    }
    // The pid keeps two services that share a state directory (both on the
    // default one, say) from writing, or removing, each other's entries.
    let path = dir
        .join("journal")
        .join(format!("{job}.{}.json", std::process::id()));
    let body = json!({"role": role, "device": spec, "pid": std::process::id()}).to_string();
    match std::fs::write(&path, body) {
        Ok(()) => Some(Entry(path)),
        Err(e) => {
            log(&format!("cannot journal job {job:?}: {e}"));
            None
        }
    }
}

/// Puts back every device a previous run left mid-migration.
pub fn recover(dir: &Path, registry: &Registry) {
    remove_partials(&dir.join("files"), None);
    let Ok(entries) = std::fs::read_dir(dir.join("journal")) else {
        return;
    };
    for e in entries.flatten().take(4096) {
        let path = e.path();
        let text = std::fs::read(&path)
            .ok()
            .filter(|t| t.len() < 65536)
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let pid = v.get("pid").and_then(Value::as_u64).unwrap_or(0);
        if live_service(pid) {
            // Another service on this state directory is running that job.
            continue;
        }
        let role = v.get("role").and_then(Value::as_str).unwrap_or("restore");
        match v.get("device").and_then(Value::as_str) {
            Some(spec) => match put_back(spec, role, registry) {
                Ok(what) => log(&format!(
                    "recovered {spec} left mid-{role} by a previous run: {what}"
                )),
                Err(err) => log(&format!(
                    "could not recover {spec} left mid-{role}: error[{}]: {}",
                    err.code, err.message
                )),
            },
            None => log(&format!("{}: unreadable journal entry removed", path.display())),
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// True when `pid` is another running `mdevmig serve` (not this process, and not
/// an unrelated process that reused the pid).
fn live_service(pid: u64) -> bool {
    if pid == 0 || pid == u64::from(std::process::id()) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.iter().any(|a| a.ends_with(b"mdevmig")) && args.iter().any(|a| *a == b"serve")
}

fn put_back(spec: &str, role: &str, registry: &Registry) -> Result<String> {
    let parsed: DeviceSpec = spec.parse()?;
    if let DeviceSpec::File { path, .. } = &parsed {
        let n = remove_partials(
            path.parent().unwrap_or(Path::new(".")),
            path.file_name().and_then(|n| n.to_str()),
        );
        return Ok(format!("{n} partial file(s) removed, the image untouched"));
    }
    let (mut dev, _) = device::open(&parsed, registry)?;
    if role == "save" && dev.set_state(MigState::Running).is_ok() {
        return Ok("source back in RUNNING".into());
    }
    dev.reset()?;
    Ok(format!("reset (now {})", dev.state()?))
}

/// Removes `.<name>.*.mdevmig-partial` files (any name when `None`) in `dir`.
fn remove_partials(dir: &Path, name: Option<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n: usize = 0;
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(f) = f.to_str() else { continue };
        let ours =
            f.ends_with(".mdevmig-partial") && name.is_none_or(|name| f.starts_with(&format!(".{name}.")));
        if ours
            && e.file_type().is_ok_and(|t| t.is_file())
            && !writer_alive(dir, f)
            && std::fs::remove_file(e.path()).is_ok()
        {
            n = n.saturating_add(1);
        }
        let lock =
            f.ends_with(".mdevmig-lock") && name.is_none_or(|name| f == format!("{name}.mdevmig-lock"));
        if lock && e.file_type().is_ok_and(|t| t.is_file()) {
            remove_stale_lock(&e.path());
        }
    }
    n
}

/// True when the writer of the partial file `.<name>.XXXXXX.mdevmig-partial`
/// still holds `<name>.mdevmig-lock` (another live service's job).
fn writer_alive(dir: &Path, partial: &str) -> bool {
    let Some(name) = partial
        .strip_prefix('.')
        .and_then(|p| p.strip_suffix(".mdevmig-partial"))
        .and_then(|p| p.rsplit_once('.'))
        .map(|(name, _)| name)
    else {
        return false;
    };
    open_lock(&dir.join(format!("{name}.mdevmig-lock")))
        .is_some_and(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err())
}

/// Removes a writer's lock file that nobody holds (its writer died), the way a
/// finishing writer does (`src/fsutil.rs`): under the lock, so a live writer's
/// lock is never removed.
fn remove_stale_lock(path: &Path) {
    let Some(f) = open_lock(path) else { return };
    if let Ok(held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        let _ = std::fs::remove_file(path);
        drop(held);
    }
}

/// A writer's lock file, opened as `src/fsutil.rs` opens it (never through a
/// symlink, never blocking).
fn open_lock(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()
}
