//! Parallel chunk hashing.
//!
//! Each chunk's signature covers SHA-256 of its data alone, so chunks hash
//! independently: a small pool of worker threads takes chunks in stream order,
//! two at a time when it can (a worker hashes a pair interleaved on its core,
//! [`super::sha2x`]), hashes them and signs (writer) or verifies (reader) their
//! records, and hands them back in the same order. The caller keeps reading (or
//! producing) the next chunks meanwhile, so I/O overlaps hashing.
//!
//! Memory is bounded by the number of buffers in flight, which the caller caps
//! (`depth` chunks of at most `chunk_size` bytes each).

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::record::ChunkRecord;
use super::sha2x;
use super::Digest32;
use crate::auth::{SigningKeyPair, SIGNATURE_LEN};

/// What to do with a chunk.
pub(crate) enum Task {
    /// Verify `sig` over the record and the data's digest.
    Verify(Arc<(VerifyingKey, Digest32)>, [u8; SIGNATURE_LEN]),
    /// Sign the record and the data's digest.
    Sign(Arc<(SigningKeyPair, Digest32)>),
}

pub(crate) struct Job {
    pub rec: ChunkRecord,
    pub buf: Vec<u8>,
    pub task: Task,
}

pub(crate) struct Done {
    pub rec: ChunkRecord,
    pub buf: Vec<u8>,
    /// Verify: whether the signature holds. Sign: always true.
    pub ok: bool,
    /// Sign: the signature.
    pub sig: [u8; SIGNATURE_LEN],
}

/// Signs or verifies one chunk whose data hashes to `digest`.
fn finish(job: Job, digest: &Digest32) -> Done {
    match job.task {
        Task::Verify(ctx, sig) => {
            let ok = crate::auth::verify(&ctx.0, &job.rec.signed_message(&ctx.1, digest), &sig);
            Done {
                rec: job.rec,
                buf: job.buf,
                ok,
                sig,
            }
        }
        Task::Sign(ctx) => {
            let sig = ctx.0.sign(&job.rec.signed_message(&ctx.1, digest));
            Done {
                rec: job.rec,
                buf: job.buf,
                ok: true,
                sig,
            }
        }
    }
}

/// One or two chunks, in stream order.
type Batch = (Job, Option<Job>);

/// Hashes a batch (a pair interleaved on this core) and signs or verifies each.
fn run(batch: Batch, mut out: impl FnMut(Done)) {
    match batch {
        (a, Some(b)) => {
            let (da, db) = sha2x::digest2(&a.buf, &b.buf);
            out(finish(a, &da));
            out(finish(b, &db));
        }
        (a, None) => {
            let da: Digest32 = Sha256::digest(&a.buf).into();
            out(finish(a, &da));
        }
    }
}

struct Worker {
    jobs: Option<Sender<Batch>>,
    done: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
}

/// Where the next result comes from, in submission order.
enum Slot {
    /// `n` results of a batch on worker `w`.
    Worker(usize, usize),
    /// A result computed on the caller's thread.
    Ready(Done),
}

/// A fixed set of hashing threads (or none: the caller's thread hashes). Jobs are
/// paired, batches go round-robin, and results come back in submission order.
pub(crate) struct Pool {
    workers: Vec<Worker>,
    next_in: usize,
    /// A job waiting for a partner.
    pending: Option<Job>,
    order: VecDeque<Slot>,
}

impl Pool {
    /// `n` workers (0 runs jobs on the caller's thread).
    pub fn new(n: usize) -> Self {
        let workers = (0..n)
            .filter_map(|i| {
                let (jtx, jrx) = channel::<Batch>();
                let (dtx, drx) = channel::<Done>();
                let handle = std::thread::Builder::new()
                    .name(format!("mdevmig-hash-{i}"))
                    .spawn(move || {
                        while let Ok(batch) = jrx.recv() {
                            run(batch, |d| {
                                let _ = dtx.send(d);
                            });
                        }
                    })
                    .ok()?;
                Some(Worker {
                    jobs: Some(jtx),
                    done: drx,
                    handle: Some(handle),
                })
            })
            .collect();
        Pool {
            workers,
            next_in: 0,
            pending: None,
            order: VecDeque::new(),
        }
    }

    /// Workers for this machine: one per core, none on a single core.
    pub fn for_machine() -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::new(if n > 1 { n } else { 0 })
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// True when jobs run on the caller's thread.
    pub fn inline(&self) -> bool {
        self.workers.is_empty()
    }

    /// Queues a job; it starts when a second job pairs with it, or at the latest
    /// when its result is collected.
    pub fn submit(&mut self, job: Job) {
        match self.pending.take() {
            None => self.pending = Some(job),
            Some(first) => self.dispatch((first, Some(job))),
        }
    }

    /// Starts the unpaired job, if any.
    pub fn flush(&mut self) {
        if let Some(job) = self.pending.take() {
            self.dispatch((job, None));
        }
    }

    fn dispatch(&mut self, batch: Batch) {
        let count = if batch.1.is_some() { 2 } else { 1 };
        let n = self.workers.len();
        let sent = match self.workers.get(self.next_in).and_then(|w| w.jobs.as_ref()) {
            None => Err(batch),
            Some(tx) => tx.send(batch).map(|()| self.next_in).map_err(|e| e.0),
        };
        match sent {
            Ok(w) => {
                self.order.push_back(Slot::Worker(w, count));
                self.next_in = self.next_in.wrapping_add(1).checked_rem(n).unwrap_or(0);
            }
            // No workers, or a dead one: run the batch here rather than lose it.
            Err(batch) => {
                let order = &mut self.order;
                run(batch, |d| order.push_back(Slot::Ready(d)));
            }
        }
    }

    /// The oldest submitted job's result.
    pub fn collect(&mut self) -> Option<Done> {
        if self.order.is_empty() {
            self.flush();
        }
        match self.order.pop_front()? {
            Slot::Ready(d) => Some(d),
            Slot::Worker(w, n) => {
                if n > 1 {
                    self.order.push_front(Slot::Worker(w, n.saturating_sub(1)));
                }
                self.workers.get(w)?.done.recv().ok()
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs.take();
        }
        for w in &mut self.workers {
            while w.done.try_recv().is_ok() {}
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}
