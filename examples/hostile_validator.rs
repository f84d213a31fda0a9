//! A validator whose only plugin misbehaves on purpose: the containment tests
//! (`tests/sandbox.rs`) run it as the sandboxed child. Section names choose the
//! misbehaviour: `hostile.panic`, `hostile.loop`, `hostile.alloc`, `hostile.open`
//! (a system call outside the policy), `hostile.read_fd` and `hostile.write_fd`
//! (reading or writing a descriptor other than its pipes), `hostile.exec_map` and
//! `hostile.exec_protect` (executable memory); any other section validates fine.
//! Each misbehaviour that is not stopped validates fine too, so a test sees the
//! difference.
//!
//! Started under a name ending in `-deaf` (a symlink to it), it says it is ready and
//! then never reads its stdin: a request larger than the pipe then blocks the
//! broker's write until the deadline.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionKind, SectionLayout, SectionSpec, VendorError, VendorPlugin, VersionWindow,
};

use nix::libc;

struct Hostile;

/// One anonymous private page with protection `prot`.
///
/// # Safety
///
/// None beyond mmap's own: a null hint and no file map fresh memory, touching
/// nothing that exists; the caller owns the returned page (or MAP_FAILED).
unsafe fn map(prot: libc::c_int) -> *mut libc::c_void {
    // SAFETY: the caller's; mmap with a null hint and no file maps fresh memory.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

impl VendorPlugin for Hostile {
    fn vendor(&self) -> &'static str {
        "hostile"
    }
    fn plugin_version(&self) -> &'static str {
        "0"
    }
    fn device_types(&self) -> &'static [&'static str] {
        &["evil"]
    }
    fn produces(&self, _: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }
    fn loads(&self, _: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }
    fn configure(
        &self,
        _: &str,
        a: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        Ok(a.clone())
    }
    fn sections(&self, _: &DeviceInfo, _: u32) -> Result<Vec<SectionSpec>, VendorError> {
        Ok(Vec::new())
    }
    fn layout(&self, _: &DeviceInfo, _: u32, _: u64) -> Result<Vec<SectionLayout>, VendorError> {
        Ok(Vec::new())
    }
    fn validate_section(&self, _: &DeviceInfo, spec: &SectionSpec, data: &[u8]) -> Result<(), VendorError> {
        let _ = SectionKind::Structured;
        match spec.name.as_str() {
            "hostile.panic" => panic!("parser bug on {} bytes", data.len()),
            "hostile.loop" => loop {
                std::hint::spin_loop();
            },
            "hostile.alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 64 << 20]);
                }
            }
            "hostile.open" => {
                let _ = std::fs::File::open("/etc/hostname");
                Ok(())
            }
            "hostile.read_fd" => {
                let mut b = [0u8; 16];
                // SAFETY: reads into a local buffer of the given length.
                let _ = unsafe { libc::read(3, b.as_mut_ptr().cast(), b.len()) };
                Ok(())
            }
            "hostile.write_fd" => {
                // SAFETY: writes from a static buffer of the given length.
                let _ = unsafe { libc::write(3, b"leak".as_ptr().cast(), 4) };
                Ok(())
            }
            "hostile.exec_map" => {
                // SAFETY: a fresh anonymous mapping; nothing existing is touched.
                let _ = unsafe { map(libc::PROT_READ | libc::PROT_EXEC) };
                Ok(())
            }
            "hostile.exec_protect" => {
                // SAFETY: a fresh anonymous mapping (allowed: not executable), then
                // its own protection changed; nothing else is touched.
                unsafe {
                    let p = map(libc::PROT_READ | libc::PROT_WRITE);
                    if p != libc::MAP_FAILED {
                        let _ = libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.first().is_some_and(|a| a.ends_with("-deaf")) {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(b"MDVREADY").and_then(|()| out.flush());
        // Never read stdin again; wait to be killed.
        loop {
            std::thread::park();
        }
    }
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let registry = mdevmig::plugins::Registry::with(vec![Box::new(Hostile)]);
    std::process::exit(i32::from(mdevmig::sandbox::child_main(
        &registry,
        num(2, 512 << 20),
        num(3, 30),
    )));
}
