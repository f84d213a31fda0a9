//! The validator's confinement: resource limits and its seccomp policy.
//!
//! The policy is data ([`POLICY`]): every system call the validator may make once
//! confined, the rule its arguments must follow, and why it is there. Anything
//! else, or an allowed call with arguments outside its rule, kills the process
//! (`SECCOMP_RET_KILL_PROCESS`, seccomp(2)): the broker sees a validator killed by
//! `SIGSYS` and refuses the section with `io.sandbox`. The validator opens nothing,
//! creates no process or thread, maps no code and has no network: it reads
//! requests from stdin, computes, and writes answers to stdout. The calls were
//! taken from `strace -f` of the validator serving structured sections, record
//! streams, refusals, a panic and a failed allocation, and from the Rust standard
//! library's `library/std/src/sys/pal/unix/futex.rs` and glibc's `abort()`.
//!
//! | syscall | argument rule | why |
//! | --- | --- | --- |
//! | `read` | fd is 0 | requests arrive on stdin; no other descriptor is read |
//! | `write` | fd is 1 or 2 | answers go to stdout; std's panic and allocation-failure messages to stderr (`/dev/null`) |
//! | `close` | any | dropping a handle; the child holds only its three standard descriptors |
//! | `brk` | any | heap growth (malloc); the heap is never executable |
//! | `mmap` | `prot` without `PROT_EXEC` | large allocations (malloc), counted against `RLIMIT_AS`; bytes a parser bug lets an attacker write never become code |
//! | `munmap` | any | freeing large allocations, and std's signal stack at exit; removing a mapping grants nothing |
//! | `mremap` | `flags` is 0 or `MREMAP_MAYMOVE` | realloc of a large block; a moved mapping keeps its protection (mremap(2)), so no exec, and never `MREMAP_FIXED` over another mapping |
//! | `mprotect` | `prot` without `PROT_EXEC` | malloc changes heap protections; no memory becomes code after the fact |
//! | `madvise` | any | free() hands pages back (`MADV_DONTNEED`); advice changes no protection |
//! | `futex` | `op` is `FUTEX_WAIT`, `FUTEX_WAKE`, their `_PRIVATE` forms or `FUTEX_WAIT_BITSET_PRIVATE` | std's locks, `Once` and thread parking (`FUTEX_WAIT_BITSET_PRIVATE`, `FUTEX_WAKE_PRIVATE` in std's futex.rs) and glibc's internal locks; no requeue, PI or wake-op operation, no `FUTEX_CLOCK_REALTIME` |
//! | `sigaltstack` | any | std's stack-overflow handler stack, removed at exit |
//! | `rt_sigprocmask` | any | abort() unblocks `SIGABRT`; raise() masks signals around its `tgkill` |
//! | `rt_sigaction` | signal is `SIGABRT`, `SIGSEGV` or `SIGBUS` | abort() resets `SIGABRT`; std's fault handler resets `SIGSEGV`/`SIGBUS` for a fault that is not a stack overflow; no other disposition changes (`SIGXCPU` cannot be ignored) |
//! | `rt_sigreturn` | any | returning from std's fault handler |
//! | `getpid` | any | raise() in abort() names its own process |
//! | `gettid` | any | raise() in abort(); std's panic message names the thread |
//! | `tgkill` | the process is this one, the signal `SIGABRT` | raise(`SIGABRT`) in abort(); no signal reaches another process |
//! | `clock_gettime` | any | time queries that miss the vDSO |
//! | `sched_yield` | any | spin loops in locks yield |
//! | `exit` | any | thread exit |
//! | `exit_group` | any | process exit |
//!
//! The limits ([`confine`], setrlimit(2)): `RLIMIT_AS` (the memory limit: an
//! allocation past it fails, and std aborts with `SIGABRT`), `RLIMIT_CPU` (soft at
//! the CPU limit: `SIGXCPU`, whose default action ends the process; hard one
//! second later: `SIGKILL`), `RLIMIT_NOFILE` 4, `RLIMIT_NPROC` 0 and `RLIMIT_CORE`
//! 0, and the process is made non-dumpable (`PR_SET_DUMPABLE`, prctl(2)): a
//! validator that crashes on vendor state leaves no core file holding it.

use std::collections::BTreeMap;

use nix::libc;
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// A condition on one argument of a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgRule {
    /// Argument `arg`, a C `int` or `unsigned int` (the kernel reads its low 32
    /// bits, and so does the check), is one of `values`.
    Int { arg: u8, values: &'static [u64] },
    /// Argument `arg`, a C `unsigned long` (all 64 bits count), is one of `values`.
    Long { arg: u8, values: &'static [u64] },
    /// Argument `arg`, a C `int`, has none of the bits of `mask` set.
    IntWithout { arg: u8, mask: u64 },
    /// Argument `arg`, a C `int`, is the id of the process the filter is built
    /// in (the validator builds its own).
    OwnPid { arg: u8 },
}

/// One system call the confined validator may make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowed {
    /// Its number on this architecture.
    pub nr: i64,
    /// Its name, as in the module documentation's table.
    pub name: &'static str,
    /// Conditions on its arguments, all of which must hold; none: any arguments.
    pub args: &'static [ArgRule],
    /// Why the validator needs it.
    pub why: &'static str,
}

const fn allow(nr: i64, name: &'static str, args: &'static [ArgRule], why: &'static str) -> Allowed {
    Allowed { nr, name, args, why }
}

const NO_EXEC: &[ArgRule] = &[ArgRule::IntWithout {
    arg: 2,
    mask: libc::PROT_EXEC as u64,
}];

/// The futex operations allowed: std uses `FUTEX_WAIT_BITSET_PRIVATE` and
/// `FUTEX_WAKE_PRIVATE` (library/std/src/sys/pal/unix/futex.rs), glibc's locks
/// `FUTEX_WAIT_PRIVATE` and `FUTEX_WAKE_PRIVATE`; the shared `FUTEX_WAIT` and
/// `FUTEX_WAKE`, which on the child's private memory key the futex to this
/// process just the same (futex(2)), cost nothing to allow.
pub(crate) const FUTEX_OPS: &[u64] = &[
    libc::FUTEX_WAIT as u64,
    libc::FUTEX_WAKE as u64,
    (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
    (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
    (libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG) as u64,
];

/// Every system call the confined validator may make, with its argument rule
/// and reason; the module documentation's table says the same.
pub(crate) const POLICY: &[Allowed] = &[
    allow(
        libc::SYS_read,
        "read",
        &[ArgRule::Int { arg: 0, values: &[0] }],
        "requests arrive on stdin",
    ),
    allow(
        libc::SYS_write,
        "write",
        &[ArgRule::Int {
            arg: 0,
            values: &[1, 2],
        }],
        "answers go to stdout, std's panic and allocation-failure messages to stderr",
    ),
    allow(libc::SYS_close, "close", &[], "dropping a handle"),
    allow(libc::SYS_brk, "brk", &[], "heap growth (malloc)"),
    allow(
        libc::SYS_mmap,
        "mmap",
        NO_EXEC,
        "large allocations; never executable",
    ),
    allow(
        libc::SYS_munmap,
        "munmap",
        &[],
        "freeing large allocations and std's signal stack",
    ),
    allow(
        libc::SYS_mremap,
        "mremap",
        &[ArgRule::Long {
            arg: 3,
            values: &[0, libc::MREMAP_MAYMOVE as u64],
        }],
        "realloc of a large block; keeps its protection; never MREMAP_FIXED",
    ),
    allow(
        libc::SYS_mprotect,
        "mprotect",
        NO_EXEC,
        "malloc's heap protections; never executable",
    ),
    allow(libc::SYS_madvise, "madvise", &[], "free() hands pages back"),
    allow(
        libc::SYS_futex,
        "futex",
        &[ArgRule::Int {
            arg: 1,
            values: FUTEX_OPS,
        }],
        "std's and glibc's locks, Once and thread parking",
    ),
    allow(
        libc::SYS_sigaltstack,
        "sigaltstack",
        &[],
        "std's stack-overflow handler stack",
    ),
    allow(
        libc::SYS_rt_sigprocmask,
        "rt_sigprocmask",
        &[],
        "abort() and raise() mask signals",
    ),
    allow(
        libc::SYS_rt_sigaction,
        "rt_sigaction",
        &[ArgRule::Int {
            arg: 0,
            values: &[libc::SIGABRT as u64, libc::SIGSEGV as u64, libc::SIGBUS as u64],
        }],
        "abort() resets SIGABRT; std's fault handler resets SIGSEGV and SIGBUS",
    ),
    allow(
        libc::SYS_rt_sigreturn,
        "rt_sigreturn",
        &[],
        "returning from std's fault handler",
    ),
    allow(libc::SYS_getpid, "getpid", &[], "raise() in abort()"),
    allow(
        libc::SYS_gettid,
        "gettid",
        &[],
        "raise() in abort(); std's panic message",
    ),
    allow(
        libc::SYS_tgkill,
        "tgkill",
        &[
            ArgRule::OwnPid { arg: 0 },
            ArgRule::Int {
                arg: 2,
                values: &[libc::SIGABRT as u64],
            },
        ],
        "raise(SIGABRT) in abort(), at this process only",
    ),
    allow(
        libc::SYS_clock_gettime,
        "clock_gettime",
        &[],
        "time queries that miss the vDSO",
    ),
    allow(libc::SYS_sched_yield, "sched_yield", &[], "spin loops in locks"),
    allow(libc::SYS_exit, "exit", &[], "thread exit"),
    allow(libc::SYS_exit_group, "exit_group", &[], "process exit"),
];

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| format!("seccomp condition: {e}"))
}

/// The conditions `rule` allows, any one of which satisfies it.
fn alternatives(rule: &ArgRule, pid: u64) -> Result<Vec<SeccompCondition>, String> {
    use SeccompCmpArgLen::{Dword, Qword};
    let any_of = |arg: u8, len: SeccompCmpArgLen, values: &[u64]| {
        values
            .iter()
            .map(|v| condition(arg, len.clone(), SeccompCmpOp::Eq, *v))
            .collect::<Result<Vec<_>, _>>()
    };
    let choices = match *rule {
        ArgRule::Int { arg, values } => any_of(arg, Dword, values)?,
        ArgRule::Long { arg, values } => any_of(arg, Qword, values)?,
        ArgRule::IntWithout { arg, mask } => vec![condition(arg, Dword, SeccompCmpOp::MaskedEq(mask), 0)?],
        ArgRule::OwnPid { arg } => vec![condition(arg, Dword, SeccompCmpOp::Eq, pid)?],
    };
    // No alternative would compile to no rule, which seccompiler reads as "any
    // arguments": refuse it instead.
    if choices.is_empty() {
        return Err(format!("seccomp: argument rule {rule:?} allows nothing"));
    }
    Ok(choices)
}

/// The seccomp rules of one allowed call, any one of which lets it through:
/// none (any arguments), or every combination of its rules' alternatives.
fn rules_for(allowed: &Allowed, pid: u64) -> Result<Vec<SeccompRule>, String> {
    if allowed.args.is_empty() {
        return Ok(Vec::new());
    }
    let mut combos: Vec<Vec<SeccompCondition>> = vec![Vec::new()];
    for rule in allowed.args {
        let choices = alternatives(rule, pid)?;
        combos = combos
            .iter()
            .flat_map(|all| {
                choices.iter().map(move |c| {
                    let mut next = all.clone();
                    next.push(c.clone());
                    next
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|c| SeccompRule::new(c).map_err(|e| format!("seccomp rule: {e}")))
        .collect()
}

fn arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// The compiled filter, for the process that calls it (the [`ArgRule::OwnPid`]
/// rules name it).
pub(crate) fn filter() -> Result<BpfProgram, String> {
    let pid = u64::from(std::process::id());
    let mut rules = BTreeMap::new();
    for a in POLICY {
        if a.why.is_empty() {
            return Err(format!("seccomp: {} is allowed without a reason", a.name));
        }
        if rules.insert(a.nr, rules_for(a, pid)?).is_some() {
            return Err(format!("seccomp: {} is listed twice", a.name));
        }
    }
    let f = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch())
        .map_err(|e| format!("seccomp filter: {e}"))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp program: {e}"))
}

/// Makes the process non-dumpable: no core file (or core-dump helper) ever
/// receives the vendor state it holds (prctl(2) `PR_SET_DUMPABLE`, core(5)).
fn no_core_dumps() -> Result<(), String> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("RLIMIT_CORE: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
}

/// Closes every descriptor above stderr that this process inherited, whatever
/// its flags: the broker's own descriptors are close-on-exec, but an embedding
/// program's libraries may have opened some without. Fails (no validator rather
/// than one with inherited descriptors) when `/proc/self/fd` cannot be listed.
fn close_inherited() -> Result<(), String> {
    let listed: Vec<std::os::fd::RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("/proc/self/fd: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in listed {
        // The directory's own descriptor was in the list and is closed by now
        // (EBADF); every other one must close.
        match nix::unistd::close(fd) {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(format!("closing inherited fd {fd}: {e}")),
        }
    }
    Ok(())
}

/// Limits the process, makes it non-dumpable and installs the filter (after
/// `PR_SET_NO_NEW_PRIVS`, which seccompiler sets). Irreversible.
///
/// `RLIMIT_CPU`'s soft limit is `cpu_limit_secs` (0 is taken as 1) and its hard
/// limit one second more, so the CPU limit ends the process with `SIGXCPU`, which
/// the broker names, and `SIGKILL` follows only if `SIGXCPU` is blocked
/// (setrlimit(2)); with equal limits Linux sends `SIGKILL` at once,
/// indistinguishable from the broker's own kill at its deadline.
pub(crate) fn confine(memory_limit: u64, cpu_limit_secs: u64) -> Result<(), String> {
    close_inherited()?;
    setrlimit(Resource::RLIMIT_AS, memory_limit, memory_limit).map_err(|e| format!("RLIMIT_AS: {e}"))?;
    let cpu = cpu_limit_secs.max(1);
    setrlimit(Resource::RLIMIT_CPU, cpu, cpu.saturating_add(1)).map_err(|e| format!("RLIMIT_CPU: {e}"))?;
    setrlimit(Resource::RLIMIT_NOFILE, 4, 4).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    setrlimit(Resource::RLIMIT_NPROC, 0, 0).map_err(|e| format!("RLIMIT_NPROC: {e}"))?;
    no_core_dumps()?;
    let prog = filter()?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    /// Runs the classic-BPF program over a `struct seccomp_data` (seccomp(2)):
    /// the instructions seccompiler emits, nothing more.
    fn run(prog: &BpfProgram, nr: i64, args: [u64; 6]) -> u32 {
        let arch = match arch() {
            TargetArch::aarch64 => 0xC000_00B7u32, // AUDIT_ARCH_AARCH64
            _ => 0xC000_003Eu32,                   // AUDIT_ARCH_X86_64
        };
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as u32).to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                0x20 => acc = u32::from_ne_bytes(data[k as usize..k as usize + 4].try_into().unwrap()),
                0x54 => acc &= k,
                0x06 => return k,
                0x05 => pc += k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let hit = match i.code {
                        0x15 => acc == k,
                        0x25 => acc > k,
                        0x35 => acc >= k,
                        _ => acc & k != 0,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                op => panic!("BPF instruction {op:#x} the interpreter does not know"),
            }
        }
    }

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        run(&filter().unwrap(), nr, args)
    }

    #[test]
    fn the_policy_compiles_and_every_entry_is_justified_once() {
        filter().unwrap();
        for a in POLICY {
            assert!(!a.why.is_empty(), "{} has no reason", a.name);
            assert_eq!(POLICY.iter().filter(|b| b.nr == a.nr).count(), 1, "{}", a.name);
        }
    }

    #[test]
    fn the_documented_table_is_the_policy() {
        let doc: Vec<&str> = include_str!("policy.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let names: Vec<&str> = POLICY.iter().map(|a| a.name).collect();
        assert_eq!(doc, names);
    }

    #[test]
    fn descriptors_are_pinned() {
        assert_eq!(verdict(libc::SYS_read, [0, 0, 8, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_read, [3, 0, 8, 0, 0, 0]), KILL);
        assert_eq!(verdict(libc::SYS_read, [1, 0, 8, 0, 0, 0]), KILL);
        for fd in [1, 2] {
            assert_eq!(verdict(libc::SYS_write, [fd, 0, 8, 0, 0, 0]), ALLOW);
        }
        for fd in [0, 3, 1 << 20] {
            assert_eq!(verdict(libc::SYS_write, [fd, 0, 8, 0, 0, 0]), KILL, "fd {fd}");
        }
    }

    #[test]
    fn no_memory_becomes_executable() {
        let (rw, rx) = (
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
        );
        for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
            assert_eq!(verdict(nr, [0, 4096, rw, 0x22, u64::MAX, 0]), ALLOW);
            assert_eq!(verdict(nr, [0, 4096, rx, 0x22, u64::MAX, 0]), KILL);
            assert_eq!(verdict(nr, [0, 4096, libc::PROT_EXEC as u64, 0, 0, 0]), KILL);
        }
        let (may_move, fixed) = (libc::MREMAP_MAYMOVE as u64, libc::MREMAP_FIXED as u64);
        assert_eq!(verdict(libc::SYS_mremap, [0, 4096, 8192, may_move, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_mremap, [0, 4096, 8192, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict(libc::SYS_mremap, [0, 4096, 8192, may_move | fixed, 0, 0]),
            KILL
        );
        assert_eq!(
            verdict(libc::SYS_mremap, [0, 4096, 8192, may_move | 1 << 32, 0, 0]),
            KILL
        );
        // Calls that map code, reach other descriptors, open, start or signal
        // anything are not allowed at all.
        for nr in [
            libc::SYS_pkey_mprotect,
            libc::SYS_remap_file_pages,
            libc::SYS_pread64,
            libc::SYS_readv,
            libc::SYS_pwrite64,
            libc::SYS_writev,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_ptrace,
            libc::SYS_personality,
            libc::SYS_memfd_create,
            libc::SYS_getcwd,
            libc::SYS_prctl,
        ] {
            assert!(!POLICY.iter().any(|a| a.nr == nr), "syscall {nr} is allowed");
            assert_eq!(verdict(nr, [0; 6]), KILL, "syscall {nr}");
        }
    }

    #[test]
    fn futex_takes_only_the_operations_std_and_glibc_use() {
        for op in FUTEX_OPS {
            assert_eq!(
                verdict(libc::SYS_futex, [0x1000, *op, 1, 0, 0, 0]),
                ALLOW,
                "op {op}"
            );
        }
        let private = libc::FUTEX_PRIVATE_FLAG;
        for op in [
            libc::FUTEX_REQUEUE,
            libc::FUTEX_CMP_REQUEUE | private,
            libc::FUTEX_WAKE_OP | private,
            libc::FUTEX_LOCK_PI | private,
            libc::FUTEX_CMP_REQUEUE_PI | private,
            libc::FUTEX_WAIT_BITSET | private | libc::FUTEX_CLOCK_REALTIME,
            libc::FUTEX_WAKE_BITSET | private,
        ] {
            assert_eq!(
                verdict(libc::SYS_futex, [0x1000, op as u64, 1, 0, 0, 0]),
                KILL,
                "op {op}"
            );
        }
    }

    #[test]
    fn signals_stay_in_this_process() {
        let pid = u64::from(std::process::id());
        let abrt = libc::SIGABRT as u64;
        assert_eq!(verdict(libc::SYS_tgkill, [pid, pid, abrt, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_tgkill, [1, 1, abrt, 0, 0, 0]), KILL);
        assert_eq!(
            verdict(libc::SYS_tgkill, [pid, pid, libc::SIGKILL as u64, 0, 0, 0]),
            KILL
        );
        for sig in [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS] {
            assert_eq!(
                verdict(libc::SYS_rt_sigaction, [sig as u64, 0, 0, 8, 0, 0]),
                ALLOW
            );
        }
        for sig in [libc::SIGXCPU, libc::SIGSYS, libc::SIGTERM] {
            assert_eq!(verdict(libc::SYS_rt_sigaction, [sig as u64, 0, 0, 8, 0, 0]), KILL);
        }
    }

    #[test]
    fn an_argument_rule_that_allows_nothing_is_refused() {
        let empty = Allowed {
            nr: libc::SYS_read,
            name: "read",
            args: &[ArgRule::Int { arg: 0, values: &[] }],
            why: "test",
        };
        assert!(rules_for(&empty, 1).is_err());
    }
}
