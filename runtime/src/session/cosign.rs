//! Signing a write's events on two cores. Ed25519 signing is the largest single cost of a
//! negotiation, and a session's thread signs a whole write's events at once (their hashes are
//! chained first; signatures cover hashes only, so they are independent of each other). A
//! [`CoSigner`] shares such a batch with one helper thread: both take the next unsigned event
//! until none is left, so the session's thread never waits for work the helper has not started,
//! and a helper busy with another session's batch costs the caller nothing but doing it all
//! itself. Signatures are deterministic (RFC 8032), so who signs what changes no byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pactum_transcripts::{Digest, Ed25519Signer, EventSigner as _, SignatureBytes};

/// Batches smaller than this are signed by the caller alone: waking the helper costs about as
/// much as a few signatures.
pub(crate) const COSIGN_BATCH_MIN: usize = 8;

/// How many times the caller checks for the helper's last signature before it sleeps (one
/// signature takes about 9 µs; a check well under a microsecond).
const SPINS_BEFORE_SLEEP: u32 = 4_096;

/// One batch: the jobs, the next job to take, and the signatures made so far.
struct Batch {
    jobs: Vec<(Arc<Ed25519Signer>, Digest)>,
    next: AtomicUsize,
    done: AtomicUsize,
    signatures: Vec<OnceLock<SignatureBytes>>,
    finished: Mutex<()>,
    all_done: Condvar,
}

impl Batch {
    /// Signs jobs until none is left to take.
    fn work(&self) {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((signer, digest)) = self.jobs.get(index) else { return };
            // Each index is taken once, so each slot is set once.
            let _ = self.signatures[index].set(signer.sign_digest(digest));
            if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.jobs.len() {
                let _guard = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
                self.all_done.notify_all();
            }
        }
    }

    /// Waits until every job is signed (the helper may still be on its last one).
    fn wait(&self) {
        let total = self.jobs.len();
        for _ in 0..SPINS_BEFORE_SLEEP {
            if self.done.load(Ordering::Acquire) == total {
                return;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        while self.done.load(Ordering::Acquire) < total {
            guard =
                self.all_done.wait_timeout(guard, Duration::from_millis(1)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// A helper thread that signs alongside whoever hands it a batch. Started on the first batch
/// large enough, and only on a machine with more than one core; the thread ends when the
/// `CoSigner` is dropped. While as many sessions are being driven as there are cores, the
/// cores are busy already and each thread signs its own batches.
#[derive(Default)]
pub(crate) struct CoSigner {
    helper: OnceLock<Option<Helper>>,
    /// Sessions being driven now (see [`CoSigner::driving`]).
    driving: AtomicUsize,
}

/// Counts a session as being driven until dropped.
pub(crate) struct Driving<'c>(&'c AtomicUsize);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

struct Helper {
    sender: Mutex<Option<Sender<Arc<Batch>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CoSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started = matches!(self.helper.get(), Some(Some(_)));
        formatter.debug_struct("CoSigner").field("helper_started", &started).finish()
    }
}

impl CoSigner {
    /// Counts a session as being driven, until the returned guard is dropped.
    pub(crate) fn driving(&self) -> Driving<'_> {
        self.driving.fetch_add(1, Ordering::Relaxed);
        Driving(&self.driving)
    }

    /// How many sessions are being driven now.
    pub(crate) fn sessions_driven(&self) -> usize {
        self.driving.load(Ordering::Relaxed)
    }

    /// The signature of each job's digest by its signer, in order.
    pub(crate) fn sign_all(&self, jobs: Vec<(Arc<Ed25519Signer>, Digest)>) -> Vec<SignatureBytes> {
        if jobs.len() < COSIGN_BATCH_MIN || self.driving.load(Ordering::Relaxed) >= cores() {
            return jobs.iter().map(|(signer, digest)| signer.sign_digest(digest)).collect();
        }
        let Some(sender) = self.sender() else {
            return jobs.iter().map(|(signer, digest)| signer.sign_digest(digest)).collect();
        };
        let batch = Arc::new(Batch {
            signatures: (0..jobs.len()).map(|_| OnceLock::new()).collect(),
            jobs,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            finished: Mutex::new(()),
            all_done: Condvar::new(),
        });
        // A helper that has gone away leaves the whole batch to this thread.
        let _ = sender.send(Arc::clone(&batch));
        batch.work();
        batch.wait();
        batch
            .signatures
            .iter()
            .zip(&batch.jobs)
            .map(|(slot, (signer, digest))| slot.get().copied().unwrap_or_else(|| signer.sign_digest(digest)))
            .collect()
    }

    fn sender(&self) -> Option<Sender<Arc<Batch>>> {
        let helper = self.helper.get_or_init(|| {
            if cores() < 2 {
                return None;
            }
            let (sender, receiver) = channel::<Arc<Batch>>();
            let thread = std::thread::Builder::new().name("pactum-signer".into()).spawn(move || help(&receiver));
            match thread {
                Ok(thread) => Some(Helper { sender: Mutex::new(Some(sender)), thread: Mutex::new(Some(thread)) }),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the signing helper thread; signing on one core");
                    None
                }
            }
        });
        helper.as_ref()?.sender.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn help(receiver: &Receiver<Arc<Batch>>) {
    while let Ok(batch) = receiver.recv() {
        batch.work();
    }
}

impl Drop for CoSigner {
    fn drop(&mut self) {
        if let Some(Some(helper)) = self.helper.get() {
            // Closing the channel ends the helper once it has finished the batch in hand.
            helper.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(thread) = helper.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> Arc<Ed25519Signer> {
        let key_id = pactum_transcripts::KeyId::new(format!("agent:a{seed}#1")).expect("key id");
        Arc::new(Ed25519Signer::from_seed(key_id, &[seed; 32]))
    }

    /// Shared or not, every signature is the one the signer alone would make, in job order.
    #[test]
    fn shared_batches_sign_exactly_what_one_thread_would() {
        let cosigner = CoSigner::default();
        let signers = [signer(1), signer(2), signer(3)];
        for size in [1, COSIGN_BATCH_MIN - 1, COSIGN_BATCH_MIN, 31, 200] {
            let jobs: Vec<(Arc<Ed25519Signer>, Digest)> = (0..size)
                .map(|i| {
                    let digest = Digest::tagged(b"cosign test\0", &(i as u64).to_be_bytes());
                    (Arc::clone(&signers[i % signers.len()]), digest)
                })
                .collect();
            let expected: Vec<SignatureBytes> = jobs.iter().map(|(s, d)| s.sign_digest(d)).collect();
            assert_eq!(cosigner.sign_all(jobs), expected, "batch of {size}");
        }
    }

    /// Several sessions' threads sharing one helper each get their own signatures.
    #[test]
    fn concurrent_batches_do_not_mix() {
        let cosigner = Arc::new(CoSigner::default());
        let threads: Vec<_> = (0..4_u8)
            .map(|t| {
                let cosigner = Arc::clone(&cosigner);
                std::thread::spawn(move || {
                    let signer = signer(10 + t);
                    for round in 0..20_u64 {
                        let jobs: Vec<(Arc<Ed25519Signer>, Digest)> = (0..27_u64)
                            .map(|i| {
                                (
                                    Arc::clone(&signer),
                                    Digest::tagged(b"cosign test\0", &(round * 100 + i).to_be_bytes()),
                                )
                            })
                            .collect();
                        let expected: Vec<SignatureBytes> = jobs.iter().map(|(s, d)| s.sign_digest(d)).collect();
                        assert_eq!(cosigner.sign_all(jobs), expected);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
    }
}
