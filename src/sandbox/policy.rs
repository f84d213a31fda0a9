//! The validator's confinement: resource limits and its seccomp policy.
//!
//! The policy is data: the list below is every system call the validator may make
//! once confined, each with the reason it is there. Anything else kills the process
//! (`SECCOMP_RET_KILL_PROCESS`), which the broker sees as a dead validator and
//! reports as `io.sandbox`. The validator opens nothing, creates no process or
//! thread and has no network: it reads requests from stdin, computes, and writes
//! answers to stdout.

use std::collections::BTreeMap;

use nix::libc;
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// System calls the confined validator may make, and why.
pub const ALLOWED: &[(i64, &str)] = &[
    (libc::SYS_read, "read requests from stdin"),
    (
        libc::SYS_write,
        "write answers to stdout; a panic message to stderr",
    ),
    (libc::SYS_close, "drop of a handle during unwinding or exit"),
    (libc::SYS_brk, "heap growth (malloc)"),
    (libc::SYS_mmap, "large allocations (malloc); bounded by RLIMIT_AS"),
    (libc::SYS_munmap, "freeing large allocations"),
    (libc::SYS_mremap, "Vec growth of large buffers (realloc)"),
    (libc::SYS_mprotect, "malloc arenas set page protections"),
    (libc::SYS_madvise, "malloc returns memory to the kernel"),
    (libc::SYS_futex, "std's locks on stdin/stdout"),
    (
        libc::SYS_sigaltstack,
        "std's stack-overflow guard, at thread exit",
    ),
    (
        libc::SYS_rt_sigprocmask,
        "abort() on a failed allocation or panic=abort",
    ),
    (libc::SYS_rt_sigaction, "abort() resets SIGABRT to its default"),
    (libc::SYS_rt_sigreturn, "returning from a signal handler"),
    (libc::SYS_getpid, "abort() raises SIGABRT at itself"),
    (libc::SYS_gettid, "abort() raises SIGABRT at itself"),
    (libc::SYS_tgkill, "abort() raises SIGABRT at itself"),
    (libc::SYS_clock_gettime, "time queries that miss the vDSO"),
    (libc::SYS_sched_yield, "spin locks in the allocator"),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_exit_group, "process exit"),
];

fn arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// The compiled filter.
pub fn filter() -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|(n, _)| (*n, Vec::new())).collect();
    let f = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch())
        .map_err(|e| format!("seccomp filter: {e}"))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp program: {e}"))
}

/// Limits the process and installs the filter (after `PR_SET_NO_NEW_PRIVS`,
/// which seccompiler sets). Irreversible.
pub fn confine(memory_limit: u64, cpu_limit_secs: u64) -> Result<(), String> {
    setrlimit(Resource::RLIMIT_AS, memory_limit, memory_limit).map_err(|e| format!("RLIMIT_AS: {e}"))?;
    setrlimit(Resource::RLIMIT_CPU, cpu_limit_secs, cpu_limit_secs)
        .map_err(|e| format!("RLIMIT_CPU: {e}"))?;
    setrlimit(Resource::RLIMIT_NOFILE, 4, 4).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    setrlimit(Resource::RLIMIT_NPROC, 0, 0).map_err(|e| format!("RLIMIT_NPROC: {e}"))?;
    let prog = filter()?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp: {e}"))
}
