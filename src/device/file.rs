//! The file backend: raw vendor state in a file.
//!
//! Saving reads the file as if it were a device's STOP_COPY stream; restoring writes
//! a new file. It is the way to import state captured elsewhere (a kernel's data fd
//! dumped to disk) and to export validated state for offline analysis.
//!
//! It behaves as a device that supports only STOP_COPY. A restore writes a new
//! file beside `<path>` ([`crate::fsutil::AtomicFile`]: created `O_EXCL`, mode
//! 0600, one writer per path) and gives it `<path>`'s name only at RESUMING → STOP,
//! so a failed, reset or interrupted restore never leaves a half-written file
//! under the real name, and never writes through a planted symlink. An existing
//! image is replaced only when the device was opened [`FileDevice::replacing`].
//! A save reads `<path>` only if it is a regular file, never through a symlink.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use mdevmig_plugin_api::DeviceInfo;

use super::fsm::{self, MigState};
use super::{DataRead, MigrationDevice, PrecopyInfo};
use crate::error::{Code, Error, Result};

enum Stream {
    None,
    Reading(File),
    Writing(crate::fsutil::AtomicFile),
}

/// A file standing in for a device.
pub struct FileDevice {
    path: PathBuf,
    info: DeviceInfo,
    state: MigState,
    stream: Stream,
    replace: bool,
}

impl FileDevice {
    /// A device backed by `path` (which need not exist until a save reads it).
    pub fn new(path: PathBuf, info: DeviceInfo) -> Self {
        FileDevice {
            path,
            info,
            state: MigState::Running,
            stream: Stream::None,
            replace: false,
        }
    }

    /// Lets a restore replace an existing image at the path.
    pub fn replacing(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    fn arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        match (from, to) {
            (MigState::Stop, MigState::StopCopy) => {
                let f = crate::fsutil::open_regular(&self.path, Code::DeviceData)?;
                self.stream = Stream::Reading(f);
            }
            (MigState::Stop, MigState::Resuming) => {
                let f =
                    crate::fsutil::AtomicFile::create(&self.path, crate::fsutil::DEFAULT_MODE, self.replace)?;
                self.stream = Stream::Writing(f);
            }
            (MigState::Resuming, MigState::Stop) => {
                if let Stream::Writing(f) = std::mem::replace(&mut self.stream, Stream::None) {
                    f.commit()?;
                }
            }
            _ => self.stream = Stream::None,
        }
        Ok(())
    }
}

impl fsm::Arcs for FileDevice {
    fn arc_flags(&self) -> u64 {
        fsm::FLAG_STOP_COPY
    }
    fn current(&self) -> MigState {
        self.state
    }
    fn enter(&mut self, state: MigState) {
        self.state = state;
    }
    fn take_arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        self.arc(from, to)
    }
    fn arc_failed(&mut self, _from: MigState) {
        // Dropping an uncommitted image removes it.
        self.stream = Stream::None;
    }
}

impl MigrationDevice for FileDevice {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn migration_flags(&self) -> u64 {
        fsm::FLAG_STOP_COPY
    }

    fn state(&mut self) -> Result<MigState> {
        Ok(self.state)
    }

    fn set_state(&mut self, target: MigState) -> Result<()> {
        fsm::walk(self, target)
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        let Stream::Reading(f) = &mut self.stream else {
            return Err(Error::new(
                Code::DeviceData,
                format!("no saving stream in {}", self.state),
            ));
        };
        match f.read(buf) {
            Ok(0) => Ok(DataRead::End),
            Ok(n) => Ok(DataRead::Data(n)),
            Err(e) => Err(Error::io(Code::DeviceData, self.path.display(), &e)),
        }
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        let Stream::Writing(f) = &mut self.stream else {
            return Err(Error::new(
                Code::DeviceData,
                format!("no resuming stream in {}", self.state),
            ));
        };
        f.file()
            .write_all(buf)
            .map_err(|e| Error::io(Code::DeviceData, self.path.display(), &e))
    }

    fn data_size(&mut self) -> Result<u64> {
        crate::fsutil::open_regular(&self.path, Code::DeviceData)?
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(Code::DeviceData, self.path.display(), &e))
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        Err(Error::new(Code::DeviceData, "file devices have no PRE_COPY"))
    }

    fn reset(&mut self) -> Result<()> {
        // Dropping an uncommitted image removes it.
        self.stream = Stream::None;
        self.state = MigState::Running;
        Ok(())
    }
}
