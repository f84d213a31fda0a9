//! Parallel chunk hashing.
//!
//! Each chunk's signature covers SHA-256 of its data alone, so chunks hash
//! independently: a small pool of worker threads takes chunks in stream order,
//! in batches as wide as the core's hashing engine ([`mdevmig_sha2x`]: sixteen
//! in AVX-512 lanes, or a SHA-NI pair), hashes them and signs (writer) or
//! verifies (reader) their records, and hands them back in the same order. The
//! caller keeps reading (or producing) the next chunks meanwhile, so I/O overlaps
//! hashing.
//!
//! Memory is bounded by the number of buffers in flight, which the caller caps
//! (`depth` chunks of at most `chunk_size` bytes each).

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use ed25519_dalek::VerifyingKey;

use super::record::ChunkRecord;
use super::Digest32;
use crate::auth::{SigningKeyPair, SIGNATURE_LEN};
use mdevmig_sha2x as sha2x;

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

/// Chunks in stream order, hashed together on one core.
type Batch = Vec<Job>;

/// Hashes a batch at once on this core and signs or verifies each chunk.
fn run(batch: Batch, mut out: impl FnMut(Done)) {
    let mut digests = vec![[0u8; 32]; batch.len()];
    {
        let msgs: Vec<&[u8]> = batch.iter().map(|j| j.buf.as_slice()).collect();
        sha2x::digest_batch(&msgs, &mut digests);
    }
    for (job, d) in batch.into_iter().zip(&digests) {
        out(finish(job, d));
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
/// batched, batches go round-robin, and results come back in submission order.
pub(crate) struct Pool {
    workers: Vec<Worker>,
    next_in: usize,
    /// Jobs that start when the batch is full.
    pending: Vec<Job>,
    /// Jobs per batch.
    batch: usize,
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
            pending: Vec::new(),
            batch: sha2x::engine().lanes(),
            order: VecDeque::new(),
        }
    }

    /// Workers for this machine: one per core, none on a single core.
    pub fn for_machine() -> Self {
        Self::new(Self::machine_workers())
    }

    /// How many workers [`Pool::for_machine`] starts.
    pub fn machine_workers() -> usize {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if n > 1 {
            n
        } else {
            0
        }
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Messages the hashing engine takes at once on one core.
    pub fn lanes(&self) -> usize {
        sha2x::engine().lanes()
    }

    /// Sets how many jobs make a batch (at least one): the caller keeps at most
    /// so many chunks in flight, and a batch that never fills only starts when
    /// its first result is wanted.
    pub fn set_batch(&mut self, n: usize) {
        self.batch = n.max(1);
    }

    /// Queues a job; it starts when the batch is full, or at the latest when
    /// its result is collected.
    pub fn submit(&mut self, job: Job) {
        self.pending.push(job);
        if self.pending.len() >= self.batch {
            self.flush();
        }
    }

    /// Starts the jobs waiting for a full batch, if any.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
            self.dispatch(batch);
        }
    }

    fn dispatch(&mut self, batch: Batch) {
        let count = batch.len();
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn job(i: u64, key: &Arc<(SigningKeyPair, Digest32)>) -> Job {
        let len = usize::try_from(i.wrapping_mul(331) % 5000)
            .unwrap()
            .wrapping_add(1);
        Job {
            rec: ChunkRecord {
                section_index: 0,
                data_len: u32::try_from(len).unwrap(),
                seq: i,
                offset: 0,
            },
            buf: (0..len)
                .map(|b| (u64::try_from(b).unwrap() ^ i).to_le_bytes()[0])
                .collect(),
            task: Task::Sign(key.clone()),
        }
    }

    #[test]
    fn results_come_back_in_submission_order_for_any_batch_and_worker_count() {
        let key = Arc::new((SigningKeyPair::from_seed(&[9; 32]), [3u8; 32]));
        let vk = key.0.verifying_key();
        for workers in [0usize, 1, 2, 3] {
            for batch in [1usize, 2, 3, 7, 16, 40] {
                for window in [1u64, 5, 33] {
                    let mut pool = Pool::new(workers);
                    pool.set_batch(batch);
                    let (mut next_in, mut next_out, total) = (0u64, 0u64, 101u64);
                    while next_out < total {
                        // Keep up to `window` jobs in flight, like the reader and writer.
                        while next_in < total && next_in - next_out < window {
                            pool.submit(job(next_in, &key));
                            next_in += 1;
                        }
                        if next_in == total {
                            pool.flush();
                        }
                        let d = pool.collect().expect("a result");
                        let want = job(next_out, &key);
                        assert_eq!(d.rec, want.rec, "workers {workers} batch {batch} window {window}");
                        assert_eq!(d.buf, want.buf);
                        let digest: Digest32 = Sha256::digest(&want.buf).into();
                        let msg = want.rec.signed_message(&key.1, &digest);
                        assert!(crate::auth::verify(&vk, &msg, &d.sig), "signature of {next_out}");
                        next_out += 1;
                    }
                    assert!(pool.collect().is_none(), "nothing left");
                }
            }
        }
    }
}
