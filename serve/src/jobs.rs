//! Save and restore as jobs, shaped like QEMU's (`qapi/job.json`).
//!
//! ```text
//!   save/restore ──> created ──> running ──> concluded ──job-dismiss──> null
//!                                   │  job-cancel, or the client went away
//!                                   └──> aborting ──> concluded (error qmp.cancelled)
//! ```
//!
//! Each change is a `JOB_STATUS_CHANGE` event `{"id", "status"}`; while a job
//! runs, `JOB_PROGRESS` events `{"id", "current-progress", "total-progress"}`
//! come at most four times a second; at the end `JOB_FINISHED` carries the
//! result or the error. Cancelling makes the job's reads or writes fail, so the
//! broker's own recovery runs: a source goes back to RUNNING, a touched
//! destination is reset, a partial file is removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use mdevmig::broker::Converge;
use mdevmig::{RestoreOptions, SaveOptions};

use crate::commands::{args, lease, policy_of, take_fd, take_session, Lease};
use crate::conn::{Reply, Session};
use crate::errors::{bad_args, QErr};
use crate::{log, Shared};

/// One job.
pub(crate) struct Job {
    id: String,
    kind: &'static str,
    device: String,
    status: Mutex<&'static str>,
    cancel: AtomicBool,
    current: AtomicU64,
    total: AtomicU64,
    outcome: Mutex<Option<Result<Value, QErr>>>,
    done: Condvar,
    done_flag: Mutex<bool>,
    /// Creation order.
    seq: u64,
}

impl Job {
    /// Created, running or aborting: not yet concluded. The status alone
    /// decides, under its lock, so a command racing the job's end sees one answer.
    fn is_running(&self) -> bool {
        matches!(self.status(), "created" | "running" | "aborting")
    }

    fn status(&self) -> &'static str {
        self.status.lock().map(|s| *s).unwrap_or("concluded")
    }

    fn info(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": self.kind,
            "device": self.device,
            "status": self.status(),
            "current-progress": self.current.load(Ordering::Acquire),
            "total-progress": self.total.load(Ordering::Acquire),
        });
        if let (Ok(o), Some(m)) = (self.outcome.lock(), v.as_object_mut()) {
            match &*o {
                Some(Ok(r)) => {
                    m.insert("result".into(), r.clone());
                }
                Some(Err(e)) => {
                    m.insert("error".into(), json!(format!("error[{}]: {}", e.code, e.message)));
                    m.insert("error-code".into(), json!(e.code));
                }
                None => {}
            }
        }
        v
    }
}

/// Every job the service knows, running or concluded.
#[derive(Default)]
pub(crate) struct Jobs {
    map: Mutex<BTreeMap<String, Arc<Job>>>,
    /// Numbers jobs in the order they were created (automatic ids, pruning).
    seq: AtomicU64,
}

impl Jobs {
    fn all(&self) -> Vec<Arc<Job>> {
        self.map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.map.lock().ok().and_then(|m| m.get(id).cloned())
    }

    pub fn running(&self) -> usize {
        self.all().iter().filter(|j| j.is_running()).count()
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.get(id).is_some_and(|j| j.is_running())
    }

    /// Cancels a running job; false when it is not running.
    pub fn cancel_if_running(&self, shared: &Shared, id: &str) -> bool {
        match self.get(id) {
            Some(j) => request_cancel(shared, &j),
            None => false,
        }
    }

    pub fn cancel_all(&self, shared: &Shared) {
        for j in self.all() {
            request_cancel(shared, &j);
        }
    }

    /// Waits until the job has concluded.
    pub fn wait(&self, id: &str) {
        if let Some(j) = self.get(id) {
            let mut d = j.done_flag.lock().unwrap_or_else(|p| p.into_inner());
            while !*d {
                d = j.done.wait(d).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    pub fn wait_all(&self) {
        for j in self.all() {
            self.wait(&j.id);
        }
    }
}

/// Asks a running job to stop: its next read or write fails, and the broker
/// puts the device back.
/// False when the job is not created or running (concluded already, or
/// aborting).
fn request_cancel(shared: &Shared, job: &Job) -> bool {
    move_status(shared, job, &["created", "running"], "aborting", || {
        job.cancel.store(true, Ordering::Release)
    })
}

/// Sets a job's status and tells the clients.
fn set_status(shared: &Shared, job: &Job, status: &'static str) {
    move_status(shared, job, &[], status, || {});
}

/// Moves a job to `to` if its status is one of `from` (any, when `from` is
/// empty), sending the event and then running `also` under the status lock, so
/// events leave in the order the changes happened. False when it did not move.
fn move_status(shared: &Shared, job: &Job, from: &[&str], to: &'static str, also: impl FnOnce()) -> bool {
    let Ok(mut s) = job.status.lock() else {
        return false;
    };
    if !from.is_empty() && !from.contains(&*s) {
        return false;
    }
    *s = to;
    shared.broadcast("JOB_STATUS_CHANGE", json!({"id": job.id, "status": to}));
    also();
    true
}

/// Counts a job's bytes, sends progress events, and fails the I/O once the job
/// is cancelled (so the broker's recovery runs).
///
/// The stream's fd is non-blocking (as QEMU makes its migration fds): a pipe or
/// socket whose peer stops reading or writing leaves the job waiting in
/// `poll(2)`, which it leaves every 200 ms to see whether it was cancelled. A
/// blocking read or write could wait forever, and nothing could cancel it.
struct Meter {
    inner: File,
    job: Arc<Job>,
    shared: Arc<Shared>,
    last: Instant,
}

impl Meter {
    fn new(inner: File, job: &Arc<Job>, shared: &Arc<Shared>) -> std::io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&inner)?;
        rustix::fs::fcntl_setfl(&inner, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(Meter {
            inner,
            job: Arc::clone(job),
            shared: Arc::clone(shared),
            last: Instant::now(),
        })
    }

    fn step(&mut self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let cur = self.job.current.fetch_add(n, Ordering::AcqRel).saturating_add(n);
        self.job.total.fetch_max(cur, Ordering::AcqRel);
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            progress(&self.shared, &self.job);
        }
    }

    fn cancelled(&self) -> std::io::Result<()> {
        if self.job.cancel.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the job was cancelled"));
        }
        Ok(())
    }

    /// Runs one non-blocking read or write, waiting in poll while the fd is not
    /// ready and the job is not cancelled.
    fn io(
        &mut self,
        ready: rustix::event::PollFlags,
        mut op: impl FnMut(&mut File) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        loop {
            self.cancelled()?;
            match op(&mut self.inner) {
                Ok(n) => {
                    self.step(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fds = [rustix::event::PollFd::new(&self.inner, ready)];
                    let tick = rustix::time::Timespec {
                        tv_sec: 0,
                        tv_nsec: 200_000_000,
                    };
                    match rustix::event::poll(&mut fds, Some(&tick)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn progress(shared: &Shared, job: &Job) {
    shared.broadcast(
        "JOB_PROGRESS",
        json!({"id": job.id, "current-progress": job.current.load(Ordering::Acquire), "total-progress": job.total.load(Ordering::Acquire)}),
    );
}

impl Write for Meter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.io(rustix::event::PollFlags::OUT, |f| f.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.cancelled()?;
        self.inner.flush()
    }
}

impl Read for Meter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io(rustix::event::PollFlags::IN, |f| f.read(buf))
    }
}

/// Where a job's stream goes or comes from: a passed fd, or a file in the state
/// directory.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Target {
    #[serde(default)]
    fdname: Option<String>,
    #[serde(default)]
    file: Option<String>,
}

/// A file name inside the state directory: a plain name, no path, not hidden.
fn state_file(shared: &Shared, name: &str) -> Result<PathBuf, QErr> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(QErr::new(
            "qmp.bad_path",
            format!("{name:?}: a file is a plain name ([A-Za-z0-9._-], not starting with '.') inside the state directory"),
        ));
    }
    Ok(shared.cfg.state_dir.join("files").join(name))
}

fn job_id(s: &Session<'_>, given: Option<String>) -> Result<String, QErr> {
    let id = match given {
        Some(id) => id,
        // The first free `job<N>`: a client may have named a job that way.
        None => loop {
            let n = s.shared.jobs.seq.load(Ordering::Acquire);
            let id = format!("job{n}");
            if s.shared.jobs.get(&id).is_none() {
                break id;
            }
            s.shared.jobs.seq.fetch_add(1, Ordering::AcqRel);
        },
    };
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad_args("job-id must be 1 to 64 characters of [A-Za-z0-9._-]"));
    }
    if s.shared.jobs.get(&id).is_some() {
        return Err(bad_args(format!("a job with id {id:?} exists")));
    }
    Ok(id)
}

/// Checks the limits before a job starts.
fn admit(s: &Session<'_>) -> Result<(), QErr> {
    if s.shared.draining.load(Ordering::Acquire) {
        return Err(QErr::new(
            "qmp.shutting_down",
            "the service is shutting down and starts no new jobs",
        ));
    }
    let limits = &s.shared.cfg.limits;
    if s.shared.jobs.running() >= limits.max_jobs {
        return Err(QErr::new(
            "qmp.too_many",
            format!("{} jobs are running", limits.max_jobs),
        ));
    }
    let mine = s.jobs.iter().filter(|j| s.shared.jobs.is_running(j)).count();
    if mine >= limits.max_jobs_per_client {
        return Err(QErr::new(
            "qmp.too_many",
            format!("this connection has {} jobs running", limits.max_jobs_per_client),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SaveArgs {
    #[serde(default)]
    job_id: Option<String>,
    device: String,
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    precopy: bool,
    #[serde(default)]
    downtime_bytes: Option<u64>,
    #[serde(default)]
    max_rounds: Option<u32>,
    #[serde(default)]
    state_version: Option<u32>,
    #[serde(default)]
    chunk_size: Option<u32>,
}

/// `save`: the device's state, signed, to a passed fd or a state-directory file.
pub(crate) fn save(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: SaveArgs = args(a)?;
    admit(s)?;
    let key = s
        .shared
        .key
        .clone()
        .ok_or_else(|| QErr::new("qmp.no_key", "the service has no signing key (--key)"))?;
    let id = job_id(s, a.job_id.clone())?;
    let session = a
        .session
        .as_deref()
        .map(mdevmig::auth::parse_nonce)
        .transpose()
        .map_err(|e| bad_args(e.message))?;
    let mut opts = SaveOptions {
        precopy: a.precopy,
        version: a.state_version,
        session,
        ..Default::default()
    };
    if let Some(c) = a.chunk_size {
        opts.chunk_size = c;
    }
    if let Some(b) = a.downtime_bytes {
        opts.converge = Converge {
            downtime_bytes: Some(b),
            ..opts.converge
        };
    }
    if let Some(r) = a.max_rounds {
        opts.converge.max_rounds = r;
    }
    let out = open_output(s, &a.target)?;
    let lease = lease(s.shared, &a.device, &s.shared.registry)?;
    // The versions this host's plugin produces for the device, as the CLI's save.
    opts.produce_window = lease.versions();
    let shared = Arc::clone(s.shared);
    let work = move |lease: &mut Lease, job: &Arc<Job>| -> Result<Value, QErr> {
        let dev = lease.dev()?;
        if let Ok(n) = dev.data_size() {
            job.total.store(n, Ordering::Release);
        }
        let (file, atomic) = out;
        let meter = Meter::new(file, job, &shared)
            .map_err(|e| mdevmig::Error::io(mdevmig::Code::IoWrite, "the output", &e))?;
        let r = mdevmig::save(dev, &shared.registry, &key, meter, &opts)?;
        if let Some(a) = atomic {
            a.commit()?;
        }
        Ok(save_result(&r))
    };
    start(s, id, "save", lease, Box::new(work))
}

type Output = (File, Option<mdevmig::fsutil::AtomicFile>);

fn open_output(s: &mut Session<'_>, t: &Target) -> Result<Output, QErr> {
    match (&t.fdname, &t.file) {
        (Some(f), None) => Ok((File::from(take_fd(s, f)?), None)),
        (None, Some(name)) => {
            let path = state_file(s.shared, name)?;
            let mut a = mdevmig::fsutil::AtomicFile::create(&path, mdevmig::fsutil::DEFAULT_MODE, false)?;
            let f = a
                .file()
                .try_clone()
                .map_err(|e| mdevmig::Error::io(mdevmig::Code::IoOpen, path.display(), &e))?;
            Ok((f, Some(a)))
        }
        _ => Err(bad_args(
            "give exactly one of fdname (an fd passed with getfd) and file (a name in the state directory)",
        )),
    }
}

fn save_result(r: &mdevmig::SaveReport) -> Value {
    let h = &r.header;
    json!({
        "vendor": h.vendor, "device_type": h.device_type,
        "state_version": h.state_version, "min_version": h.min_version,
        "stream_id": mdevmig::auth::hex(&h.stream_id),
        "session_bound": h.session_bound(),
        "raw_bytes": r.raw_bytes, "data_bytes": r.data_bytes, "precopy_bytes": r.precopy_bytes,
        "state_digest": r.state_digest.map(|d| mdevmig::auth::hex(&d)),
        "rounds": r.live.rounds.iter().map(|x| x.bytes).collect::<Vec<_>>(),
        "downtime_bytes": r.live.downtime_bytes,
        "stop_reason": r.live.stop_reason.as_str(),
        "converged": r.live.converged,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestoreArgs {
    #[serde(default)]
    job_id: Option<String>,
    device: String,
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    policy: Option<Value>,
    #[serde(default)]
    resume: bool,
}

/// `restore`: a stream from a passed fd or a state-directory file, verified,
/// checked and validated before the device sees it.
pub(crate) fn restore(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: RestoreArgs = args(a)?;
    admit(s)?;
    let trust = s
        .shared
        .trust
        .clone()
        .ok_or_else(|| QErr::new("qmp.no_key", "the service has no trust store (--trust)"))?;
    let id = job_id(s, a.job_id.clone())?;
    let policy = policy_of(a.policy)?;
    let (input, total) = open_input(s, &a.target)?;
    let lease = lease(s.shared, &a.device, &s.shared.registry)?;
    // Last: a restore refused for any other reason leaves the nonce usable.
    let session = a.session.as_deref().map(|n| take_session(s, n)).transpose()?;
    let opts = RestoreOptions {
        session,
        policy,
        // The versions this host's plugin loads for the device, as the CLI's restore.
        load_window: lease.versions(),
        resume: a.resume,
        validation: s.shared.cfg.validation.clone(),
        ..Default::default()
    };
    let shared = Arc::clone(s.shared);
    let work = move |lease: &mut Lease, job: &Arc<Job>| -> Result<Value, QErr> {
        job.total.store(total, Ordering::Release);
        let meter = Meter::new(input, job, &shared)
            .map_err(|e| mdevmig::Error::io(mdevmig::Code::IoRead, "the input", &e))?;
        let r = mdevmig::restore(lease.dev()?, &shared.registry, &trust, meter, &opts)?;
        Ok(json!({
            "vendor": r.header.vendor, "device_type": r.header.device_type,
            "state_version": r.header.state_version,
            "stream_id": mdevmig::auth::hex(&r.header.stream_id),
            "written": r.written,
            "state_digest": r.state_digest.map(|d| mdevmig::auth::hex(&d)),
            "final_state": r.final_state.to_string(),
        }))
    };
    start(s, id, "restore", lease, Box::new(work))
}

fn open_input(s: &mut Session<'_>, t: &Target) -> Result<(File, u64), QErr> {
    let f = match (&t.fdname, &t.file) {
        (Some(f), None) => File::from(take_fd(s, f)?),
        (None, Some(name)) => {
            mdevmig::fsutil::open_regular(&state_file(s.shared, name)?, mdevmig::Code::IoOpen)?
        }
        _ => return Err(bad_args(
            "give exactly one of fdname (an fd passed with getfd) and file (a name in the state directory)",
        )),
    };
    let total = f.metadata().ok().filter(|m| m.is_file()).map_or(0, |m| m.len());
    Ok((f, total))
}

type Work = Box<dyn FnOnce(&mut Lease, &Arc<Job>) -> Result<Value, QErr> + Send>;

/// Registers the job, journals its device, and runs it on its own thread.
fn start(
    s: &mut Session<'_>,
    id: String,
    kind: &'static str,
    mut lease: Lease,
    work: Work,
) -> Result<Reply, QErr> {
    let job = Arc::new(Job {
        id: id.clone(),
        kind,
        device: lease.spec(),
        status: Mutex::new("created"),
        cancel: AtomicBool::new(false),
        current: AtomicU64::new(0),
        total: AtomicU64::new(0),
        outcome: Mutex::new(None),
        done: Condvar::new(),
        done_flag: Mutex::new(false),
        seq: s.shared.jobs.seq.fetch_add(1, Ordering::AcqRel),
    });
    {
        // Checked again under the lock: two connections may race for one id.
        let mut m = s
            .shared
            .jobs
            .map
            .lock()
            .map_err(|_| QErr::new("qmp.too_many", "job table poisoned"))?;
        if m.contains_key(&id) {
            return Err(bad_args(format!("a job with id {id:?} exists")));
        }
        m.insert(id.clone(), Arc::clone(&job));
    }
    s.jobs.retain(|j| s.shared.jobs.is_running(j));
    s.jobs.push(id.clone());
    set_status(s.shared, &job, "created");
    log(&format!("{}: {kind} job {id:?} on {}", s.who(), job.device));
    let shared = Arc::clone(s.shared);
    let entry = crate::journal::begin(&shared.cfg.state_dir, &id, kind, &lease.spec());
    let spawned = std::thread::Builder::new().name(format!("job-{id}")).spawn({
        let job = Arc::clone(&job);
        move || {
            set_status(&shared, &job, "running");
            let r = work(&mut lease, &job);
            drop(lease);
            drop(entry);
            finish(&shared, &job, r);
        }
    });
    if let Err(e) = spawned {
        finish(
            s.shared,
            &job,
            Err(QErr::from(mdevmig::Error::io(
                mdevmig::Code::Internal,
                "job thread",
                &e,
            ))),
        );
    }
    Ok(Reply::of(json!({"job-id": id})))
}

fn finish(shared: &Shared, job: &Job, r: Result<Value, QErr>) {
    let r = match r {
        Err(_) if job.cancel.load(Ordering::Acquire) => Err(QErr::new(
            "qmp.cancelled",
            "the job was cancelled (or its client went away); the device was put back",
        )),
        r => r,
    };
    match &r {
        Ok(_) => log(&format!("job {:?} completed", job.id)),
        Err(e) => log(&format!(
            "job {:?} failed: error[{}]: {}",
            job.id, e.code, e.message
        )),
    }
    progress(shared, job);
    let ev = match &r {
        Ok(v) => json!({"id": job.id, "type": job.kind, "ok": true, "result": v}),
        Err(e) => json!({"id": job.id, "type": job.kind, "ok": false, "error": e.to_json()}),
    };
    if let Ok(mut o) = job.outcome.lock() {
        *o = Some(r);
    }
    move_status(shared, job, &[], "concluded", || {
        shared.broadcast("JOB_FINISHED", ev);
    });
    if let Ok(mut d) = job.done_flag.lock() {
        *d = true;
    }
    job.done.notify_all();
    prune(shared);
}

/// Keeps at most the configured number of concluded jobs, dismissing the oldest.
fn prune(shared: &Shared) {
    let max = shared.cfg.limits.max_concluded;
    if let Ok(mut m) = shared.jobs.map.lock() {
        let mut concluded: Vec<(u64, String)> = m
            .values()
            .filter(|j| !j.is_running())
            .map(|j| (j.seq, j.id.clone()))
            .collect();
        concluded.sort_unstable();
        let excess = concluded.len().saturating_sub(max);
        for (_, id) in concluded.into_iter().take(excess) {
            m.remove(&id);
        }
    }
}

pub(crate) fn query_jobs(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    crate::commands::no_args(a)?;
    Ok(Reply::of(Value::Array(
        s.shared.jobs.all().iter().map(|j| j.info()).collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobArg {
    id: String,
}

pub(crate) fn cancel(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: JobArg = args(a)?;
    let job = s
        .shared
        .jobs
        .get(&a.id)
        .ok_or_else(|| QErr::new("qmp.no_such_job", format!("Job ID '{}' not found", a.id)))?;
    if !request_cancel(s.shared, &job) {
        return Err(QErr::new(
            "qmp.job_state",
            format!(
                "Job '{}' in state '{}' cannot accept command verb 'cancel'",
                a.id,
                job.status()
            ),
        ));
    }
    log(&format!("{}: cancelled job {:?}", s.who(), a.id));
    Ok(Reply::of(json!({})))
}

pub(crate) fn dismiss(s: &mut Session<'_>, a: Map<String, Value>) -> Result<Reply, QErr> {
    let a: JobArg = args(a)?;
    let job = s
        .shared
        .jobs
        .get(&a.id)
        .ok_or_else(|| QErr::new("qmp.no_such_job", format!("Job ID '{}' not found", a.id)))?;
    if !move_status(s.shared, &job, &["concluded"], "null", || {}) {
        return Err(QErr::new(
            "qmp.job_state",
            format!(
                "Job '{}' in state '{}' cannot accept command verb 'dismiss'",
                a.id,
                job.status()
            ),
        ));
    }
    if let Ok(mut m) = s.shared.jobs.map.lock() {
        m.remove(&a.id);
    }
    Ok(Reply::of(json!({})))
}
