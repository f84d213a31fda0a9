//! The validator's confinement: resource limits and its seccomp policy.
//!
//! The policy is data: the list below is every system call the validator may make
//! once confined, each with the reason it is there. Anything else kills the process
//! (`SECCOMP_RET_KILL_PROCESS`), which the broker sees as a dead validator and
//! reports as `io.sandbox`. The validator opens nothing, creates no process or
//! thread and has no network: it reads requests from stdin, computes, and writes
//! answers to stdout.
//!
//! Some calls are allowed only with certain arguments ([`ARG_RULES`]): `read` only
//! from stdin and `write` only to stdout and stderr (the child holds no other
//! descriptor, and could not use one it found), and `mmap`/`mprotect` never with
//! `PROT_EXEC`, so bytes a parser bug lets an attacker write can never be made
//! code.

use std::collections::BTreeMap;

use nix::libc;
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// System calls the confined validator may make, and why.
pub const ALLOWED: &[(i64, &str)] = &[
    (libc::SYS_read, "read requests from stdin (only fd 0: ARG_RULES)"),
    (
        libc::SYS_write,
        "write answers to stdout; a panic message to stderr (only fds 1 and 2: ARG_RULES)",
    ),
    (libc::SYS_close, "drop of a handle during unwinding or exit"),
    (libc::SYS_brk, "heap growth (malloc)"),
    (
        libc::SYS_mmap,
        "large allocations (malloc); bounded by RLIMIT_AS; never executable (ARG_RULES)",
    ),
    (libc::SYS_munmap, "freeing large allocations"),
    (libc::SYS_mremap, "Vec growth of large buffers (realloc)"),
    (
        libc::SYS_mprotect,
        "malloc arenas set page protections; never executable (ARG_RULES)",
    ),
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

/// A condition on a system call's arguments: the call is allowed only while it
/// holds, and kills the process otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRule {
    /// The first argument, a file descriptor, is one of these.
    Fd(&'static [u64]),
    /// The third argument, `prot`, has no `PROT_EXEC` bit.
    NoExec,
}

/// The argument conditions on calls in [`ALLOWED`], and why.
pub const ARG_RULES: &[(i64, ArgRule, &str)] = &[
    (
        libc::SYS_read,
        ArgRule::Fd(&[0]),
        "requests arrive on stdin; no other descriptor is read",
    ),
    (
        libc::SYS_write,
        ArgRule::Fd(&[1, 2]),
        "answers go to stdout, a panic message to stderr (/dev/null); nothing else is written",
    ),
    (
        libc::SYS_mmap,
        ArgRule::NoExec,
        "no executable mapping: memory a parser bug lets an attacker fill never becomes code",
    ),
    (
        libc::SYS_mprotect,
        ArgRule::NoExec,
        "no memory is made executable after the fact",
    ),
];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    // The arguments checked are C ints: the kernel reads only their low 32 bits.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| format!("seccomp condition: {e}"))
}

/// The seccomp rules of one allowed call: none (any arguments), or one per
/// alternative its [`ArgRule`] allows.
fn rules_for(nr: i64) -> Result<Vec<SeccompRule>, String> {
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(|e| format!("seccomp rule: {e}"));
    let mut rules = Vec::new();
    for (_, r, _) in ARG_RULES.iter().filter(|(n, _, _)| *n == nr) {
        match r {
            ArgRule::Fd(fds) => {
                for fd in *fds {
                    rules.push(rule(vec![condition(0, SeccompCmpOp::Eq, *fd)?])?);
                }
            }
            ArgRule::NoExec => {
                let exec = libc::PROT_EXEC as u64;
                rules.push(rule(vec![condition(2, SeccompCmpOp::MaskedEq(exec), 0)?])?);
            }
        }
    }
    Ok(rules)
}

fn arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// The compiled filter.
pub fn filter() -> Result<BpfProgram, String> {
    if let Some((n, _, _)) = ARG_RULES
        .iter()
        .find(|(n, _, _)| !ALLOWED.iter().any(|(a, _)| a == n))
    {
        return Err(format!(
            "seccomp: argument rule for syscall {n}, which is not allowed"
        ));
    }
    let rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .map(|(n, _)| rules_for(*n).map(|r| (*n, r)))
        .collect::<Result<_, _>>()?;
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
