//! A validator whose only plugin misbehaves on purpose: the containment tests
//! (`tests/sandbox.rs`) run it as the sandboxed child. Section names choose the
//! misbehaviour; any other section validates fine. Each misbehaviour that is not
//! stopped validates fine too (a forbidden call fails harmlessly or does nothing
//! lasting), so a test sees the difference.
//!
//! | section | misbehaviour | stopped by |
//! | --- | --- | --- |
//! | `hostile.panic` | panics | std: exit status 101 |
//! | `hostile.segv` | writes to a page mapped without access | the kernel: `SIGSEGV` (std's handler resets itself: an allowed `rt_sigaction`) |
//! | `hostile.alloc` | allocates without bound, and never touches the memory | `RLIMIT_AS` |
//! | `hostile.alloc_mib` | allocates as many MiB as its data says (decimal), then validates | `RLIMIT_AS`, when the limit is lower |
//! | `hostile.loop` | computes without end | `RLIMIT_CPU` or the deadline, the lower |
//! | `hostile.block` | waits without end, using no CPU | the deadline |
//! | `hostile.open`, `hostile.socket`, `hostile.execve` | opens a file, a socket, execs a missing program | seccomp |
//! | `hostile.read_fd`, `hostile.write_fd` | reads or writes a descriptor other than its pipes | seccomp (argument rule) |
//! | `hostile.exec_map`, `hostile.exec_protect`, `hostile.exec_pkey` | maps memory executable, or makes it so | seccomp (argument rule; `pkey_mprotect` at all) |
//! | `hostile.remap_fixed` | moves a mapping onto another address (`MREMAP_FIXED`) | seccomp (argument rule) |
//! | `hostile.futex_requeue` | a futex operation std does not use | seccomp (argument rule) |
//! | `hostile.signal_other` | signals another process (signal 0 at pid 1) | seccomp (argument rule) |
//! | `hostile.ignore_xcpu` | ignores `SIGXCPU` | seccomp (argument rule) |
//! | `hostile.code_undocumented` | refuses with a code no documentation lists | the broker |
//! | `hostile.code_auth` | refuses with a documented code that is not a vendor's (`auth.untrusted_key`) | the broker |
//! | `hostile.code_framing` | refuses with the broker's documented `vendor.framing` | nothing: a valid refusal |
//!
//! Started under a name ending in `-deaf` (a symlink to it), it says it is ready and
//! then never reads its stdin: a request larger than the pipe then blocks the
//! broker's write until the deadline.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, SectionLayout, SectionSpec, VendorError, VendorPlugin, VersionWindow};

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

/// Memory misbehaviour: zeroed allocations (address space, not RAM: the pages
/// are never touched), kept alive.
fn allocate(name: &str, data: &[u8]) -> Result<(), VendorError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    match name {
        "hostile.alloc" => loop {
            hoard.push(std::hint::black_box(vec![0u8; 64 << 20]));
        },
        _ => {
            let mib: usize = std::str::from_utf8(data)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("hostile.alloc_mib: its data is a decimal number of MiB");
            hoard.push(std::hint::black_box(vec![0u8; mib << 20]));
            std::hint::black_box(&hoard);
            Ok(())
        }
    }
}

/// System calls outside the policy, or with arguments outside its rules; each
/// is harmless where it is allowed. Every call passes valid pointers to local
/// buffers, static strings of the given lengths or fresh anonymous pages it owns.
fn forbidden_call(name: &str) {
    match name {
        "hostile.open" => drop(std::fs::File::open("/etc/hostname")),
        // SAFETY: writes to a fresh page this code owns and mapped without
        // access: the fault is the point, and std's handler lets it kill.
        "hostile.segv" => unsafe {
            let p = map(libc::PROT_NONE);
            if p != libc::MAP_FAILED {
                p.cast::<u8>().write_volatile(1);
            }
        },
        // SAFETY: integer arguments; the descriptor made is closed.
        "hostile.socket" => unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd >= 0 {
                libc::close(fd);
            }
        },
        // SAFETY: a NUL-terminated static path and NULL-terminated arrays; the
        // program does not exist, so where allowed the call fails and returns.
        "hostile.execve" => unsafe {
            let path = c"/nonexistent/mdevmig-hostile".as_ptr();
            let argv = [path, std::ptr::null()];
            let envp = [std::ptr::null()];
            libc::execve(path, argv.as_ptr(), envp.as_ptr());
        },
        // SAFETY: reads into a local buffer of the given length.
        "hostile.read_fd" => unsafe {
            let mut b = [0u8; 16];
            libc::read(3, b.as_mut_ptr().cast(), b.len());
        },
        // SAFETY: writes from a static buffer of the given length.
        "hostile.write_fd" => unsafe {
            libc::write(3, b"leak".as_ptr().cast(), 4);
        },
        // SAFETY: a fresh anonymous mapping; nothing existing is touched.
        "hostile.exec_map" => unsafe {
            map(libc::PROT_READ | libc::PROT_EXEC);
        },
        // SAFETY: a fresh anonymous mapping (allowed: not executable), then its
        // own protection changed; nothing else is touched.
        "hostile.exec_protect" => unsafe {
            let p = map(libc::PROT_READ | libc::PROT_WRITE);
            if p != libc::MAP_FAILED {
                libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
            }
        },
        // SAFETY: as above, through pkey_mprotect with the default key (-1).
        "hostile.exec_pkey" => unsafe {
            let p = map(libc::PROT_READ | libc::PROT_WRITE);
            if p != libc::MAP_FAILED {
                libc::syscall(
                    libc::SYS_pkey_mprotect,
                    p,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    -1,
                );
            }
        },
        // SAFETY: two fresh anonymous pages this code owns; the first replaces
        // the second, and neither is used afterwards.
        "hostile.remap_fixed" => unsafe {
            let (a, b) = (map(libc::PROT_READ), map(libc::PROT_READ));
            if a != libc::MAP_FAILED && b != libc::MAP_FAILED {
                libc::mremap(a, 4096, 4096, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, b);
            }
        },
        // SAFETY: a local futex word; requeueing zero waiters changes nothing.
        "hostile.futex_requeue" => unsafe {
            let word = std::sync::atomic::AtomicU32::new(0);
            let op = libc::FUTEX_REQUEUE | libc::FUTEX_PRIVATE_FLAG;
            libc::syscall(libc::SYS_futex, word.as_ptr(), op, 0, 0, word.as_ptr(), 0);
        },
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        "hostile.signal_other" => unsafe {
            libc::syscall(libc::SYS_tgkill, 1, 1, 0);
        },
        // SAFETY: SIG_IGN for a signal this program does not otherwise handle.
        "hostile.ignore_xcpu" => unsafe {
            libc::signal(libc::SIGXCPU, libc::SIG_IGN);
        },
        _ => {}
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
        match spec.name.as_str() {
            "hostile.panic" => panic!("parser bug on {} bytes", data.len()),
            "hostile.loop" => loop {
                std::hint::spin_loop();
            },
            // Parking waits on a futex (an allowed operation): no CPU is used.
            "hostile.block" => loop {
                std::thread::park();
            },
            "hostile.alloc" | "hostile.alloc_mib" => allocate(&spec.name, data),
            "hostile.code_undocumented" => Err(VendorError::new("vendor.hostile.made_up", "no such code")),
            "hostile.code_auth" => Err(VendorError::new(
                "auth.untrusted_key",
                "not the validator's to say",
            )),
            "hostile.code_framing" => Err(VendorError::new("vendor.framing", "framing, says the plugin")),
            name => {
                forbidden_call(name);
                Ok(())
            }
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
