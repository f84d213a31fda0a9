//! Vendor validation in a least-privilege child process: risky parsing belongs in
//! a separate, restartable process (the qemu-devel thread "QEMU: Discussion of
//! separating core functionality vs supportive features", 2011).
//!
//! ```text
//!   broker (parent)                         validator (child: `<program> __validate`)
//!   spawn, stdin/stdout pipes only  ──────► rlimits (memory, CPU, files), no core dumps
//!                                           PR_SET_NO_NEW_PRIVS + seccomp filter
//!                                   ◄────── "MDVREADY"
//!   request: vendor, device, section, data ► plugin.validate_section()
//!                                   ◄────── ok | vendor code + message
//!   ... one request per structured section; one deadline covers writing each
//!   request and reading its answer
//! ```
//!
//! Each limit stops its own misbehaviour, and the refusal (always `io.sandbox`)
//! says which one did, from how the child ended:
//!
//! | misbehaviour | stopped by | the refusal says |
//! | --- | --- | --- |
//! | allocating without bound | `RLIMIT_AS`: the allocation fails, std aborts | `SIGABRT`, `RLIMIT_AS` |
//! | computing without end | `RLIMIT_CPU`: the kernel sends `SIGXCPU` (setrlimit(2)) | `SIGXCPU`, `RLIMIT_CPU` |
//! | a system call or argument outside the policy | seccomp: the kernel kills the process | `SIGSYS`, `seccomp` |
//! | blocking, or not taking its request or answering it | the deadline: the broker kills it | `did not read its request` or `did not answer within` |
//! | panicking | std ends the process with exit status 101 | `panicked` |
//! | answering a code no documentation lists, or a non-vendor one | the broker, which stops it | `undocumented code` |
//!
//! The stream is refused and the broker carries on. The request is written by a
//! thread of its own, so a child that stops reading its stdin blocks that thread,
//! never the broker, which kills the child at the deadline (the thread's write
//! then fails and it ends).
//!
//! The child keeps only its stdin and stdout pipes and stderr (`/dev/null`): before
//! it reads a byte it closes every other descriptor it inherited (those listed in
//! `/proc/self/fd`), whatever flags they were opened with, so a descriptor some
//! library of an embedding VMM opened without close-on-exec cannot reach the
//! parser; and its seccomp filter lets it read only fd 0 and write only fds 1
//! and 2 in any case. Its environment is cleared. Its seccomp
//! policy and limits are the data and table in `src/sandbox/policy.rs` (reads
//! only from stdin, writes only to stdout and stderr, no executable mappings, only
//! the futex operations std uses, signals only to itself). What runs as the
//! validator is the configured program or this executable; no environment
//! variable changes it.
//!
//! Structured sections (the vendor structures whose parsers hold the bug classes
//! QEMU's state loaders shipped, CVE-2013-4148 and after) are validated here, and
//! so are record-structured sections (Xe packets): `records_begin` makes the child
//! hold the plugin's record validator, each verified chunk goes through
//! `records_feed` before the broker writes it to the device, and `records_finish`
//! closes the section. Bulk sections' per-chunk checks (bounds only, in every
//! built-in plugin) stay in the broker so a framebuffer does not cross a pipe
//! twice. In-process validation is available for VMMs that forbid forking, chosen
//! explicitly with [`Validation::InProcess`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use mdevmig_plugin_api::{DeviceInfo, SectionKind, SectionSpec, VendorError};

use crate::error::{Code, Error, Group, Result};
use crate::plugins::Registry;

mod policy;

/// The hidden subcommand the child runs: the first argument [`Sandbox`] starts
/// the validator program with, which [`child_entry`] recognizes.
pub const CHILD_ARG: &str = "__validate";
const READY: &[u8; 8] = b"MDVREADY";
/// Largest request a child accepts (a structured section is at most a few MiB).
const MAX_REQUEST: u64 = 64 << 20;
/// Largest answer the broker reads: a code and a message.
const MAX_ANSWER: u32 = 1 << 16;

/// Where vendor validation runs.
#[derive(Debug, Clone)]
pub enum Validation {
    /// In a sandboxed child process (the default).
    Sandbox(SandboxConfig),
    /// In the broker's own process: for VMMs that forbid forking. A plugin bug
    /// then takes the broker down with it.
    InProcess,
}

impl Default for Validation {
    /// A sandbox with [`SandboxConfig::default`]: the running executable as the
    /// validator.
    fn default() -> Self {
        Validation::Sandbox(SandboxConfig::default())
    }
}

/// How the child is started and limited.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The validator program: `mdevmig` (or a build with the same `__validate`
    /// entry point). `None` means the running executable, which is right for the
    /// `mdevmig` binary; an embedding VMM names the installed `mdevmig`. Only code
    /// sets it: no environment variable does.
    pub program: Option<PathBuf>,
    /// Deadline for each request: writing it to the child and reading its answer
    /// (and for the child's start).
    pub deadline: Duration,
    /// Address-space limit of the child (`RLIMIT_AS`), in bytes.
    pub memory_limit: u64,
    /// CPU-time limit of the child (`RLIMIT_CPU`'s soft limit), in seconds.
    pub cpu_limit_secs: u64,
}

impl Default for SandboxConfig {
    /// The running executable as the validator, a 10 s deadline, 512 MiB of
    /// address space and 30 s of CPU time.
    fn default() -> Self {
        SandboxConfig {
            program: None,
            deadline: Duration::from_secs(10),
            memory_limit: 512 << 20,
            cpu_limit_secs: 30,
        }
    }
}

impl Validation {
    /// A sandbox running `program`.
    pub fn sandbox(program: impl Into<PathBuf>) -> Self {
        Validation::Sandbox(SandboxConfig {
            program: Some(program.into()),
            ..SandboxConfig::default()
        })
    }
}

/// A running validator child.
pub struct Sandbox {
    child: Child,
    /// Requests for the writer thread; dropping it closes the child's stdin.
    requests: Option<Sender<Vec<u8>>>,
    /// The writer thread's result for each request.
    written: Receiver<std::io::Result<()>>,
    answers: Receiver<std::io::Result<Vec<u8>>>,
    deadline: Duration,
}

/// How long a child whose stdout closed gets to finish dying before it is
/// killed: its exit status tells what killed it.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How a child ended, in words naming the limit that most likely ended it;
/// `killed_here` says whether the broker sent the `SIGKILL`.
fn describe(status: ExitStatus, killed_here: bool) -> String {
    use nix::libc::{SIGABRT, SIGBUS, SIGKILL, SIGSEGV, SIGSYS, SIGXCPU};
    use std::os::unix::process::ExitStatusExt;
    let why = match (status.signal(), status.code()) {
        (Some(SIGKILL), _) if killed_here => "killed by the broker",
        (Some(SIGKILL), _) => {
            "killed by the kernel: past its hard CPU-time limit (RLIMIT_CPU), or by the out-of-memory killer"
        }
        (Some(SIGXCPU), _) => "stopped by its CPU-time limit (RLIMIT_CPU)",
        (Some(SIGSYS), _) => "killed by seccomp: a system call or argument outside its policy",
        (Some(SIGABRT), _) => {
            "aborted: an allocation failed under its memory limit (RLIMIT_AS), or its stack overflowed"
        }
        (Some(SIGSEGV | SIGBUS), _) => "crashed",
        // std's exit status for a panic that leaves main.
        (None, Some(101)) => "panicked",
        _ => return status.to_string(),
    };
    format!("{status}: {why}")
}

fn failed(msg: impl std::fmt::Display) -> Error {
    Error::new(Code::SandboxFailed, format!("validation sandbox: {msg}"))
}

/// The refusal for a child whose pipe broke or closed: how it ended.
fn died(status: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => {
            failed(format!("the validator died ({status})"))
        }
        _ => failed(format!("the validator died ({status}; {e})")),
    }
}

fn read_answer(out: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 5];
    out.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_ANSWER {
        return Err(std::io::Error::other("answer too long"));
    }
    let mut body = vec![0u8; len as usize];
    out.read_exact(&mut body)?;
    let mut v = vec![head[0]];
    v.extend_from_slice(&body);
    Ok(v)
}

/// Starts `program` as a validator child with `cfg`'s limits, its stdin and
/// stdout piped, stderr to `/dev/null`, no environment and no other descriptor.
fn spawn(program: &Path, cfg: &SandboxConfig) -> Result<Child> {
    let mut cmd = Command::new(program);
    cmd.arg(CHILD_ARG)
        .arg(cfg.memory_limit.to_string())
        .arg(cfg.cpu_limit_secs.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.spawn()
        .map_err(|e| failed(format!("starting {}: {e}", program.display())))
}

/// The thread that writes requests to the child: it ends when the [`Sandbox`]
/// drops its sender (closing the child's stdin) or a write fails (the child
/// died or was killed).
fn writer(mut stdin: ChildStdin) -> (Sender<Vec<u8>>, Receiver<std::io::Result<()>>) {
    let (req_tx, req_rx) = channel::<Vec<u8>>();
    let (done_tx, done_rx) = channel();
    std::thread::spawn(move || {
        for req in req_rx {
            let r = stdin.write_all(&req).and_then(|()| stdin.flush());
            let stop = r.is_err();
            if done_tx.send(r).is_err() || stop {
                return;
            }
        }
    });
    (req_tx, done_rx)
}

/// The thread that reads the child's ready mark (sent as an empty answer), then
/// its answers, until one fails.
fn reader(mut stdout: ChildStdout) -> Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut ready = [0u8; 8];
        let r = stdout.read_exact(&mut ready).and_then(|()| {
            if &ready == READY {
                Ok(())
            } else {
                Err(std::io::Error::other("not a validator"))
            }
        });
        if tx.send(r.map(|()| Vec::new())).is_err() {
            return;
        }
        loop {
            let a = read_answer(&mut stdout);
            let stop = a.is_err();
            if tx.send(a).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// The code of a validator's refusal: a documented vendor code, the broker's own
/// (`vendor.framing`) or a built-in plugin's (`spec/errors.md` lists both).
/// `None` for anything else: a code no documentation lists, or one outside the
/// vendor group, since a validator judges vendor content, not authenticity,
/// compatibility or the broker's own failures.
fn refusal_code(code: &str) -> Option<Code> {
    if let Some(c) = Code::from_str_code(code) {
        return (c.group() == Group::Vendor).then_some(c);
    }
    crate::plugins::all_error_codes()
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, _)| Code::Vendor(c))
}

/// One request on the wire: the JSON header's length, the header, the data's
/// length and the data.
fn encode_request(request: &Request, data: &[u8]) -> Result<Vec<u8>> {
    let meta = serde_json::to_string(request).map_err(|e| failed(format!("encoding a request: {e}")))?;
    let mut req = Vec::with_capacity(meta.len().saturating_add(data.len()).saturating_add(12));
    req.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    req.extend_from_slice(meta.as_bytes());
    req.extend_from_slice(&(data.len() as u64).to_le_bytes());
    req.extend_from_slice(data);
    Ok(req)
}

impl Sandbox {
    /// Starts a child and waits for it to report that it is sandboxed.
    pub fn start(cfg: &SandboxConfig) -> Result<Self> {
        let program = match &cfg.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| failed(format!("current executable: {e}")))?,
        };
        let mut child = spawn(&program, cfg)?;
        let until = Instant::now() + cfg.deadline;
        let stdin = child.stdin.take().ok_or_else(|| failed("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| failed("no stdout"))?;
        let (requests, written) = writer(stdin);
        let mut s = Sandbox {
            child,
            requests: Some(requests),
            written,
            answers: reader(stdout),
            deadline: cfg.deadline,
        };
        s.answer(until).map_err(|e| {
            let why = e.message.trim_start_matches("validation sandbox: ");
            failed(format!(
                "{} did not start as a validator: {why}",
                program.display()
            ))
        })?;
        Ok(s)
    }

    /// Hands `req` to the writer thread and waits until `until` for it to be
    /// written: a child that stops reading is killed at the deadline.
    fn send(&mut self, req: Vec<u8>, until: Instant) -> Result<()> {
        let queued = self.requests.as_ref().is_some_and(|r| r.send(req).is_ok());
        if !queued {
            return Err(failed("validator already gone"));
        }
        match self
            .written
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let status = self.reap(EXIT_GRACE);
                Err(died(&status, &e))
            }
            Err(_) => {
                let status = self.reap(Duration::ZERO);
                Err(failed(format!(
                    "the validator did not read its request within {:?} and was killed ({status})",
                    self.deadline
                )))
            }
        }
    }

    fn answer(&mut self, until: Instant) -> Result<Vec<u8>> {
        match self
            .answers
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                let status = self.reap(EXIT_GRACE);
                Err(died(&status, &e))
            }
            Err(_) => {
                let status = self.reap(Duration::ZERO);
                Err(failed(format!(
                    "the validator did not answer within {:?} and was killed ({status})",
                    self.deadline
                )))
            }
        }
    }

    /// Closes the child's stdin and says how it ended, killing it if it has not
    /// exited within `grace`.
    fn reap(&mut self, grace: Duration) -> String {
        self.requests.take();
        let end = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return describe(s, false),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    let _ = self.child.kill();
                    return match self.child.wait() {
                        Ok(s) => describe(s, true),
                        Err(e) => e.to_string(),
                    };
                }
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Validates one structured section in the child.
    pub fn validate(&mut self, device: &DeviceInfo, spec: &SectionSpec, data: &[u8]) -> Result<()> {
        self.request(&Request::Section(Target::of(device, spec)), data)
    }

    /// Starts validating a record-structured section in the child: the child
    /// holds the plugin's [`mdevmig_plugin_api::RecordValidator`] across the
    /// requests that follow.
    pub fn records_begin(&mut self, device: &DeviceInfo, spec: &SectionSpec) -> Result<()> {
        self.request(&Request::RecordsBegin(Target::of(device, spec)), &[])
    }

    /// The next bytes of the record stream in progress.
    pub fn records_feed(&mut self, data: &[u8]) -> Result<()> {
        self.request(&Request::RecordsFeed, data)
    }

    /// The record stream in progress ended.
    pub fn records_finish(&mut self) -> Result<()> {
        self.request(&Request::RecordsFinish, &[])
    }

    /// One request and its answer, within one deadline.
    fn request(&mut self, request: &Request, data: &[u8]) -> Result<()> {
        let req = encode_request(request, data)?;
        let until = Instant::now() + self.deadline;
        self.send(req, until)?;
        let a = self.answer(until)?;
        self.judge(&a)
    }

    /// What an answer means: success, or a refusal with a documented vendor
    /// code. Any other answer is the validator misbehaving: it is stopped, and
    /// the section refused with `io.sandbox`.
    fn judge(&mut self, answer: &[u8]) -> Result<()> {
        let refusal = match answer.split_first() {
            Some((0, _)) => return Ok(()),
            Some((1, body)) => {
                serde_json::from_slice::<Refusal>(body).map_err(|e| format!("a malformed refusal: {e}"))
            }
            _ => Err("a malformed answer".to_owned()),
        };
        let why = match refusal {
            Ok(Refusal { code, message }) => match refusal_code(&code) {
                Some(c) => return Err(Error::new(c, message)),
                None if Code::from_str_code(&code).is_some() => {
                    format!("{code:?}, a documented code but not a vendor's ({message})")
                }
                None => format!("an undocumented code {code:?} ({message})"),
            },
            Err(why) => why,
        };
        let status = self.reap(Duration::ZERO);
        Err(failed(format!(
            "the validator answered {why} and was stopped ({status})"
        )))
    }
}

/// What the broker asks the child: the request header, JSON before the data
/// bytes. Every field is required and unknown fields are refused: a request the
/// child does not understand exactly is an error, never a default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(
    tag = "op",
    content = "target",
    rename_all = "snake_case",
    deny_unknown_fields
)]
enum Request {
    /// Validate the data as one whole structured section.
    Section(Target),
    /// Start a record stream: the child holds the plugin's record validator.
    RecordsBegin(Target),
    /// The data is the next bytes of the record stream in progress.
    RecordsFeed,
    /// The record stream in progress ended.
    RecordsFinish,
}

/// The device and the section a request is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    vendor: String,
    device_type: String,
    attributes: std::collections::BTreeMap<String, String>,
    capabilities: std::collections::BTreeSet<String>,
    name: String,
    version: u16,
    required: bool,
    capability: Option<String>,
    max_len: u64,
    kind: TargetKind,
    streamed: bool,
}

/// The kinds of section the child validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetKind {
    Structured,
    Records,
}

/// A refusal the child answers with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Refusal {
    code: String,
    message: String,
}

impl Target {
    fn of(device: &DeviceInfo, spec: &SectionSpec) -> Self {
        Target {
            vendor: device.vendor.clone(),
            device_type: device.device_type.clone(),
            attributes: device.attributes.clone(),
            capabilities: device.capabilities.clone(),
            name: spec.name.clone(),
            version: spec.version,
            required: spec.required,
            capability: spec.capability.clone(),
            max_len: spec.max_len,
            kind: if spec.kind == SectionKind::Records {
                TargetKind::Records
            } else {
                TargetKind::Structured
            },
            streamed: spec.streamed,
        }
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            vendor: self.vendor.clone(),
            device_type: self.device_type.clone(),
            attributes: self.attributes.clone(),
            capabilities: self.capabilities.clone(),
        }
    }

    fn spec(&self) -> SectionSpec {
        SectionSpec {
            name: self.name.clone(),
            version: self.version,
            required: self.required,
            capability: self.capability.clone(),
            max_len: self.max_len,
            kind: match self.kind {
                TargetKind::Structured => SectionKind::Structured,
                TargetKind::Records => SectionKind::Records,
            },
            streamed: self.streamed,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.requests.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The validator child's entry point for a program that serves as its own
/// validator (the `mdevmig` binary, `mdevmig-validator`, an embedding VMM):
/// when this process was started as the child (its first argument is
/// [`CHILD_ARG`], as [`Sandbox`] starts it), runs [`child_main`] with
/// `registry` and the limits that follow on the command line, and returns its
/// exit status; otherwise returns `None` at once.
pub fn child_entry(registry: &Registry) -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != CHILD_ARG {
        return None;
    }
    let mut num = |default: u64| {
        args.next()
            .and_then(|a| a.to_str().and_then(|s| s.parse().ok()))
            .unwrap_or(default)
    };
    let memory_limit = num(SandboxConfig::default().memory_limit);
    let cpu_limit_secs = num(SandboxConfig::default().cpu_limit_secs);
    Some(child_main(registry, memory_limit, cpu_limit_secs))
}

/// The child: limits itself, enters seccomp, then serves requests until EOF.
/// Returns the process exit status.
pub fn child_main(registry: &Registry, memory_limit: u64, cpu_limit_secs: u64) -> u8 {
    if let Err(e) = policy::confine(memory_limit, cpu_limit_secs) {
        eprintln!("validator: {e}");
        return 1;
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(READY).and_then(|()| stdout.flush()).is_err() {
        return 1;
    }
    // The record stream in progress: the plugin's validator lives here, in the
    // child, between requests.
    let mut records: Option<Box<dyn mdevmig_plugin_api::RecordValidator>> = None;
    loop {
        let (meta, data) = match read_request(&mut stdin) {
            Ok(Some(r)) => r,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        let answer = encode_answer(serve(registry, &mut records, meta, &data));
        if stdout.write_all(&answer).and_then(|()| stdout.flush()).is_err() {
            return 1;
        }
    }
}

/// One request, in the child.
fn serve(
    registry: &Registry,
    records: &mut Option<Box<dyn mdevmig_plugin_api::RecordValidator>>,
    request: Request,
    data: &[u8],
) -> std::result::Result<(), VendorError> {
    match request {
        Request::Section(t) => plugin_for(registry, &t)?.validate_section(&t.device(), &t.spec(), data),
        Request::RecordsBegin(t) => {
            *records = Some(plugin_for(registry, &t)?.record_validator(&t.device(), &t.spec())?);
            Ok(())
        }
        Request::RecordsFeed => match records.as_mut() {
            Some(r) => r.feed(data),
            None => Err(no_records()),
        },
        Request::RecordsFinish => match records.take() {
            Some(mut r) => r.finish(),
            None => Err(no_records()),
        },
    }
}

/// An answer on the wire: status 0 (valid) or 1 (refused), the body's length,
/// and the body (a [`Refusal`] in JSON, or nothing).
fn encode_answer(result: std::result::Result<(), VendorError>) -> Vec<u8> {
    let (status, body) = match result {
        Ok(()) => (0u8, Vec::new()),
        Err(e) => (
            1u8,
            serde_json::to_vec(&Refusal {
                code: e.code.to_string(),
                message: e.message,
            })
            .unwrap_or_default(),
        ),
    };
    let mut a = vec![status];
    a.extend_from_slice(&(body.len() as u32).to_le_bytes());
    a.extend_from_slice(&body);
    a
}

fn read_request(r: &mut impl Read) -> std::io::Result<Option<(Request, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u64::from(u32::from_le_bytes(len));
    if n > MAX_REQUEST {
        return Err(std::io::Error::other("request too long"));
    }
    let mut meta = vec![0u8; n as usize];
    r.read_exact(&mut meta)?;
    let mut dl = [0u8; 8];
    r.read_exact(&mut dl)?;
    let dn = u64::from_le_bytes(dl);
    if dn > MAX_REQUEST {
        return Err(std::io::Error::other("section too long"));
    }
    let mut data = vec![0u8; dn as usize];
    r.read_exact(&mut data)?;
    let meta = serde_json::from_slice(&meta).map_err(std::io::Error::other)?;
    Ok(Some((meta, data)))
}

fn no_records() -> VendorError {
    VendorError::new(
        "vendor.no_record_validator",
        "no record stream is in progress in the validator",
    )
}

/// The plugin for a request's vendor and type (the child's registry is the
/// built-in one: state never reaches another vendor's plugin here either).
fn plugin_for<'r>(
    registry: &'r Registry,
    t: &Target,
) -> std::result::Result<&'r dyn mdevmig_plugin_api::VendorPlugin, VendorError> {
    registry
        .for_state(&t.vendor, &t.device_type)
        .map_err(|e| VendorError::new("vendor.no_plugin", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> serde_json::Value {
        serde_json::json!({
            "vendor": "mtty", "device_type": "mtty-2", "attributes": {}, "capabilities": [],
            "name": "mtty.state", "version": 1, "required": true, "capability": null,
            "max_len": 96, "kind": "structured", "streamed": false,
        })
    }

    #[test]
    fn only_documented_vendor_codes_come_back_from_the_child() {
        assert_eq!(
            refusal_code("vendor.mtty.bad_magic"),
            Some(Code::Vendor("vendor.mtty.bad_magic"))
        );
        assert_eq!(refusal_code("vendor.framing"), Some(Code::Framing));
        // The codes the child answers by itself are documented plugin-API codes.
        for own in [no_records().code, "vendor.no_plugin"] {
            assert_eq!(refusal_code(own), Some(Code::Vendor(own)), "{own}");
        }
        for (c, _) in crate::plugins::all_error_codes() {
            assert!(refusal_code(c).is_some(), "{c}");
        }
        // Undocumented, or documented but not the validator's to give.
        for bad in [
            "vendor.mtty.made_up",
            "vendor.",
            "",
            "auth.untrusted_key",
            "compat.version_too_new",
            "io.sandbox",
            "internal.error",
        ] {
            assert_eq!(refusal_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn how_a_child_ended_names_its_limit() {
        use nix::libc;
        use std::os::unix::process::ExitStatusExt;
        let signal = |s: i32, here: bool| describe(ExitStatus::from_raw(s), here);
        assert!(signal(libc::SIGXCPU, false).contains("RLIMIT_CPU"));
        assert!(signal(libc::SIGSYS, false).contains("seccomp"));
        assert!(signal(libc::SIGABRT, false).contains("RLIMIT_AS"));
        assert!(signal(libc::SIGKILL, true).contains("killed by the broker"));
        assert!(signal(libc::SIGKILL, false).contains("by the kernel"));
        assert!(describe(ExitStatus::from_raw(101 << 8), false).contains("panicked"));
        assert_eq!(describe(ExitStatus::from_raw(1 << 8), false), "exit status: 1");
    }

    #[test]
    fn requests_round_trip_and_need_every_field() {
        let spec = mdevmig_mtty::MttyPlugin::section_spec();
        let dev = DeviceInfo {
            vendor: "mtty".into(),
            device_type: "mtty-2".into(),
            ..Default::default()
        };
        for r in [
            Request::Section(Target::of(&dev, &spec)),
            Request::RecordsBegin(Target::of(&dev, &spec)),
            Request::RecordsFeed,
            Request::RecordsFinish,
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r, "{text}");
        }
        let ok = serde_json::json!({"op": "section", "target": target()});
        assert!(serde_json::from_value::<Request>(ok).is_ok());
        // A missing field is an error, not a default (`required` used to become
        // true and `max_len` 0); so is an unknown one, and an unknown op.
        for field in ["required", "max_len", "kind", "streamed", "version"] {
            let mut t = target();
            t.as_object_mut().unwrap().remove(field);
            let r = serde_json::json!({"op": "section", "target": t});
            assert!(serde_json::from_value::<Request>(r).is_err(), "{field}");
        }
        let mut t = target();
        t["extra"] = serde_json::json!(1);
        assert!(
            serde_json::from_value::<Request>(serde_json::json!({"op": "section", "target": t})).is_err()
        );
        assert!(
            serde_json::from_value::<Request>(serde_json::json!({"op": "validate", "target": target()}))
                .is_err()
        );
        assert!(serde_json::from_str::<Refusal>(r#"{"code":"x"}"#).is_err());
    }
}
