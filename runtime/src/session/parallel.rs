//! Several sessions at once in one process, and the order the runtime gives events across
//! streams.
//!
//! A buyer already negotiates with every provider in parallel inside a session (each round asks
//! all of them; answers are recorded by simulated arrival time, then provider id).
//! [`AgentRuntime::negotiate_many`] also drives several *sessions* concurrently, on a bounded
//! pool of threads sharing one [`AgentRuntime`] and so one constellation.
//!
//! Why concurrent sessions never interleave inside one stream: each session is its own stream
//! (`session:<id>`), driven by the one thread that created it (the first write claims the
//! session for the process in `session_owners`, compare-and-swap), and every append is
//! head-checked (the row's `prev` must be the stream's head, in the write's transaction), so
//! even a second writer could only be refused, never interleaved. Writes of different sessions
//! are serialised by the constellation's one connection (and SQLite's lock across processes);
//! each is one transaction holding that session's events and its rail steps.
//!
//! **Total order.** Within a stream, events are ordered by `seq` (the hash chain). Across streams
//! the runtime orders events by [`TotalOrderKey`]: (event time `at_ms`, stream id, `seq`). It is a
//! total order (stream id and seq identify an event) that every copy of a constellation computes
//! alike from the transcripts alone, and it extends each stream's own order because times never
//! decrease along a stream (`step` clamps a step's time to the session's last). It is not the
//! order of commits: two concurrent sessions' writes commit in whichever order the connection
//! takes them, which shows only in the ledger's transfer ids (and so in rail references).
//! Under a fixed clock each session's decisions are still a function of its seed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::RuntimeError;
use crate::session::model::SessionState;
use crate::session::shell::{AgentRuntime, DeclineAll, NewSession, Quiet};

/// Most threads [`AgentRuntime::negotiate_many`] runs: each holds a session's state; writes are
/// serialised by the constellation anyway, so more threads only add contention.
pub const PARALLEL_SESSIONS_MAX: usize = 256;

/// The position of an event in the runtime's order across streams: (time, stream id, seq).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct TotalOrderKey {
    pub at_ms: u64,
    pub stream: String,
    pub seq: u64,
}

impl TotalOrderKey {
    pub fn of(event: &pactum_transcripts::Event) -> Self {
        Self { at_ms: event.at_ms, stream: event.stream.as_str().to_owned(), seq: event.seq }
    }
}

impl AgentRuntime {
    /// Negotiates every request, at most `threads` at a time (1 to [`PARALLEL_SESSIONS_MAX`]),
    /// and returns each outcome in the order of `requests`. Sessions that need approval must
    /// be approved in advance (`auto_approve`): one that is not is declined (PACT-312), as
    /// nobody is there to ask. Give each request its own seed: session ids derive from it.
    pub fn negotiate_many(&self, requests: Vec<NewSession>, threads: usize) -> Vec<Result<SessionState, RuntimeError>> {
        let count = requests.len();
        let threads = threads.clamp(1, PARALLEL_SESSIONS_MAX).min(count.max(1));
        let queue: Vec<Mutex<Option<NewSession>>> = requests.into_iter().map(|r| Mutex::new(Some(r))).collect();
        let outcomes: Vec<Mutex<Option<Result<SessionState, RuntimeError>>>> =
            (0..count).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        let request = queue[index].lock().unwrap_or_else(PoisonError::into_inner).take();
                        let Some(request) = request else { continue };
                        let outcome = self.negotiate(request, &mut DeclineAll, &mut Quiet);
                        *outcomes[index].lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                    }
                });
            }
        });
        outcomes
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unwrap_or_else(|| Err(RuntimeError::Io(std::io::Error::other("a session thread stopped"))))
            })
            .collect()
    }
}

#[cfg(test)]
mod thread_safety {
    /// `negotiate_many` shares one runtime across threads.
    #[test]
    fn the_runtime_is_sync() {
        fn assert_sync<T: Sync>() {}
        assert_sync::<super::AgentRuntime>();
    }
}
