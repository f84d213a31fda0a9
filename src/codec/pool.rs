//! Parallel chunk hashing.
//!
//! Each chunk's signature covers SHA-256 of its data alone, so chunks hash
//! independently: a small pool of worker threads takes chunk buffers in stream
//! order, round-robin, hashes them and signs (writer) or verifies (reader) their
//! record, and hands them back in the same order. The caller keeps reading (or
//! producing) the next chunks meanwhile, so I/O overlaps hashing.
//!
//! Memory is bounded by the number of buffers in flight, which the caller caps
//! (`depth` chunks of at most `chunk_size` bytes each).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::record::ChunkRecord;
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

/// Hashes and signs or verifies one chunk (the worker's job, also run inline).
pub(crate) fn run(job: Job) -> Done {
    let digest: Digest32 = Sha256::digest(&job.buf).into();
    match job.task {
        Task::Verify(ctx, sig) => {
            let ok = crate::auth::verify(&ctx.0, &job.rec.signed_message(&ctx.1, &digest), &sig);
            Done {
                rec: job.rec,
                buf: job.buf,
                ok,
                sig,
            }
        }
        Task::Sign(ctx) => {
            let sig = ctx.0.sign(&job.rec.signed_message(&ctx.1, &digest));
            Done {
                rec: job.rec,
                buf: job.buf,
                ok: true,
                sig,
            }
        }
    }
}

struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
}

/// A fixed set of hashing threads; jobs go round-robin and come back in order.
pub(crate) struct Pool {
    workers: Vec<Worker>,
    next_in: usize,
    next_out: usize,
}

impl Pool {
    /// `n` workers (0 runs jobs inline on the caller's thread).
    pub fn new(n: usize) -> Self {
        let workers = (0..n)
            .filter_map(|i| {
                let (jtx, jrx) = channel::<Job>();
                let (dtx, drx) = channel::<Done>();
                let handle = std::thread::Builder::new()
                    .name(format!("mdevmig-hash-{i}"))
                    .spawn(move || {
                        while let Ok(job) = jrx.recv() {
                            if dtx.send(run(job)).is_err() {
                                break;
                            }
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
            next_out: 0,
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

    /// True when jobs run inline.
    pub fn inline(&self) -> bool {
        self.workers.is_empty()
    }

    /// Submits a job; returns it back (run inline) when there are no workers.
    pub fn submit(&mut self, job: Job) -> Option<Done> {
        let n = self.workers.len();
        let Some(w) = self.workers.get(self.next_in) else {
            return Some(run(job));
        };
        self.next_in = self.next_in.wrapping_add(1).checked_rem(n).unwrap_or(0);
        match w.jobs.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => None,
            // A dead worker: run the job here rather than lose it.
            Some(Err(e)) => Some(run(e.0)),
            None => None,
        }
    }

    /// The oldest submitted job's result.
    pub fn collect(&mut self) -> Option<Done> {
        let n = self.workers.len();
        let w = self.workers.get(self.next_out)?;
        self.next_out = self.next_out.wrapping_add(1).checked_rem(n).unwrap_or(0);
        w.done.recv().ok()
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
