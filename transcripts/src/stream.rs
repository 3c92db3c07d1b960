//! `TranscriptStream`: append, checkpoint, replay and verify one stream over any [`EventStore`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::canonical::CanonicalError;
use crate::clock::Clock;
use crate::event::{Digest, Event, EventKind, SealError, StreamId, state_hash};
use crate::keys::{EventSigner, KeyRing, SignatureBytes};
use crate::limits::{READ_PAGE_EVENTS, STREAM_EVENTS_MAX};
use crate::verify::{Anchor, Break, Verifier, VerifyReport};

/// The last event of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Head {
    pub seq: u64,
    pub hash: Digest,
    pub at_ms: u64,
}

impl Head {
    /// The anchor a verifier compares the stream's end with.
    pub fn anchor(head: Option<Head>) -> Anchor {
        match head {
            None => Anchor { event_count: 0, head_hash: None },
            Some(head) => Anchor { event_count: head.seq + 1, head_hash: Some(head.hash) },
        }
    }
}

/// Identifies a checkpoint within its store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A fold's state at a point of the stream, bound to the event it was computed up to.
#[derive(Clone, PartialEq, Debug)]
pub struct Checkpoint {
    pub stream: StreamId,
    /// State after applying events `0..=seq`.
    pub seq: u64,
    /// Hash of event `seq`: a checkpoint cannot be applied to a different history.
    pub event_hash: Digest,
    pub state_hash: Digest,
    pub state: Value,
    pub created_at_ms: u64,
}

/// Errors a storage backend reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The event does not extend the current head (another writer got there first, or the
    /// caller is confused). Nothing was written.
    #[error("stream {stream}: event {seq} does not extend the head ({detail})")]
    Conflict { stream: StreamId, seq: u64, detail: String },
    /// Stored data fails its own invariants when read back.
    #[error("stream {stream}: stored data is corrupt: {detail}")]
    Corrupt { stream: StreamId, detail: String },
    /// The backend itself failed (disk, SQLite, lock).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// Durable storage of streams and checkpoints. Implementations must make [`EventStore::append`]
/// atomic (all events or none) and must refuse events that do not extend the head.
pub trait EventStore {
    /// Creates the stream if it does not exist; does nothing if it does.
    fn ensure_stream(&self, stream: &StreamId, created_at_ms: u64) -> Result<(), StoreError>;
    fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError>;
    /// Appends consecutive events atomically. `events[0].prev` must equal the head's hash
    /// (or the genesis value for an empty stream) and `events[0].seq` the next seq.
    fn append(&self, stream: &StreamId, events: &[Event]) -> Result<(), StoreError>;
    /// Up to `limit` events with `seq >= from_seq`, in order.
    fn read(&self, stream: &StreamId, from_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<CheckpointId, StoreError>;
    fn checkpoint(&self, stream: &StreamId, id: CheckpointId) -> Result<Option<Checkpoint>, StoreError>;
    fn latest_checkpoint(&self, stream: &StreamId) -> Result<Option<(CheckpointId, Checkpoint)>, StoreError>;
    /// Appends events and stores a checkpoint at the last of them. A store that can should do
    /// both in one atomic write (the default does one after the other: a crash between them
    /// loses only the checkpoint, which a replay recomputes).
    fn append_with_checkpoint(
        &self,
        stream: &StreamId,
        events: &[Event],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Option<CheckpointId>, StoreError> {
        self.append(stream, events)?;
        checkpoint.map(|checkpoint| self.put_checkpoint(checkpoint)).transpose()
    }
}

/// A caller-supplied fold from events to state.
pub trait Reducer {
    type State: Serialize + DeserializeOwned;
    fn initial_state(&self) -> Self::State;
    fn apply(&self, state: &mut Self::State, event: &Event) -> Result<(), ReduceError>;
}

/// A reducer refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} ({kind}): {reason}")]
pub struct ReduceError {
    pub seq: u64,
    pub kind: String,
    pub reason: String,
}

impl ReduceError {
    pub fn new(event: &Event, reason: impl Into<String>) -> Self {
        Self { seq: event.seq, kind: event.kind.to_string(), reason: reason.into() }
    }
}

/// Everything that can go wrong with a stream operation.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("stream {stream} is broken at {broken}")]
    Broken { stream: StreamId, broken: Break },
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    #[error("checkpoint {0} not found")]
    CheckpointNotFound(CheckpointId),
    #[error("checkpoint {id}: {detail}")]
    CheckpointInvalid { id: CheckpointId, detail: String },
    #[error("state cannot be serialized: {0}")]
    State(String),
    #[error("stream {stream} holds {limit} events, the most a stream may hold")]
    StreamFull { stream: StreamId, limit: u64 },
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
}

/// A new event before it gets its place in the stream.
#[derive(Debug)]
pub struct NewEvent<'s> {
    pub kind: EventKind,
    pub body: Value,
    pub signer: Option<&'s dyn EventSigner>,
    /// When the event happened; `None` takes the stream's clock. Either way an event is never
    /// stamped earlier than the event before it.
    pub at_ms: Option<u64>,
}

impl fmt::Debug for dyn EventSigner + '_ {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "EventSigner({})", self.key_id())
    }
}

/// The result of a replay: the folded state and where it stands.
#[derive(Debug)]
pub struct Replay<S> {
    pub state: S,
    /// Seq of the last event applied, `None` if the stream is empty.
    pub head_seq: Option<u64>,
    /// Events folded in this replay (after the checkpoint, if any).
    pub events_applied: u64,
}

/// One stream of a store, with the clock that stamps its events.
pub struct TranscriptStream<S> {
    store: S,
    stream: StreamId,
    clock: Arc<dyn Clock>,
}

impl<S> fmt::Debug for TranscriptStream<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("TranscriptStream").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl<S: EventStore> TranscriptStream<S> {
    /// Opens (creating if needed) `stream` in `store`.
    pub fn open(store: S, stream: StreamId, clock: Arc<dyn Clock>) -> Result<Self, TranscriptError> {
        store.ensure_stream(&stream, clock.now_ms())?;
        Ok(Self { store, stream, clock })
    }

    pub fn id(&self) -> &StreamId {
        &self.stream
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn head(&self) -> Result<Option<Head>, TranscriptError> {
        Ok(self.store.head(&self.stream)?)
    }

    /// Appends one event and returns it once it is durable.
    pub fn append(
        &self,
        kind: EventKind,
        body: Value,
        signer: Option<&dyn EventSigner>,
    ) -> Result<Event, TranscriptError> {
        let mut events = self.append_batch(vec![NewEvent { kind, body, signer, at_ms: None }])?;
        Ok(events.remove(0))
    }

    /// Appends several events in one atomic write: all become durable or none do.
    pub fn append_batch(&self, new_events: Vec<NewEvent<'_>>) -> Result<Vec<Event>, TranscriptError> {
        let head = self.store.head(&self.stream)?;
        let sealed = self.seal_batch(head, new_events)?;
        self.store.append(&self.stream, &sealed)?;
        Ok(sealed)
    }

    /// Writes events sealed by [`TranscriptStream::seal_batch`] and, if `checkpoint_state` is
    /// given, a checkpoint of that state at the last of them, in one atomic write (when the
    /// store supports it). The store refuses events that no longer extend its head.
    pub fn append_sealed(
        &self,
        events: &[Event],
        checkpoint_state: Option<Value>,
    ) -> Result<Option<CheckpointId>, TranscriptError> {
        let checkpoint = match (checkpoint_state, events.last()) {
            (Some(state), Some(last)) => Some(Checkpoint {
                stream: self.stream.clone(),
                seq: last.seq,
                event_hash: last.hash,
                state_hash: state_hash(&state)?,
                state,
                created_at_ms: last.at_ms,
            }),
            _ => None,
        };
        Ok(self.store.append_with_checkpoint(&self.stream, events, checkpoint.as_ref())?)
    }

    /// Seals new events after `head` (the caller's knowledge of the stream's end) without
    /// writing anything, so the caller can fold them before making them durable.
    pub fn seal_batch(&self, head: Option<Head>, new_events: Vec<NewEvent<'_>>) -> Result<Vec<Event>, TranscriptError> {
        self.seal_batch_with(head, new_events, |jobs| {
            jobs.iter().map(|(signer, digest)| signer.sign_digest(digest)).collect()
        })
    }

    /// [`Self::seal_batch`], with the batch's signatures made by `sign`: it is given the signer
    /// and hash of every event that has a signer, in order, and returns their signatures in
    /// that order (it may spread the work over threads). A signature it does not return is
    /// made here.
    pub fn seal_batch_with(
        &self,
        head: Option<Head>,
        new_events: Vec<NewEvent<'_>>,
        sign: impl FnOnce(&[(&dyn EventSigner, Digest)]) -> Vec<SignatureBytes>,
    ) -> Result<Vec<Event>, TranscriptError> {
        let (mut seq, mut prev, floor_ms) = match head {
            None => (0, self.stream.genesis(), 0),
            Some(head) => (head.seq + 1, head.hash, head.at_ms),
        };
        if seq + new_events.len() as u64 > STREAM_EVENTS_MAX {
            return Err(TranscriptError::StreamFull { stream: self.stream.clone(), limit: STREAM_EVENTS_MAX });
        }
        // Timestamps never go backwards within a stream, even if the clock does.
        let clock_ms = self.clock.now_ms();
        let mut floor_ms = floor_ms;
        let mut sealed = Vec::with_capacity(new_events.len());
        let mut jobs = Vec::with_capacity(new_events.len());
        for new_event in new_events {
            let at_ms = new_event.at_ms.unwrap_or(clock_ms).max(floor_ms);
            floor_ms = at_ms;
            let signer_id = new_event.signer.map(|signer| signer.key_id().clone());
            let event =
                Event::hashed(self.stream.clone(), seq, new_event.kind, new_event.body, at_ms, prev, signer_id)?;
            if let Some(signer) = new_event.signer {
                jobs.push((signer, event.hash));
            }
            prev = event.hash;
            seq += 1;
            sealed.push(event);
        }
        // Signatures cover hashes only, so the whole chain is hashed first and signed after.
        let mut signatures = sign(&jobs).into_iter();
        for (event, (signer, digest)) in sealed.iter_mut().filter(|event| event.signer.is_some()).zip(jobs) {
            event.sig = Some(signatures.next().unwrap_or_else(|| signer.sign_digest(&digest)));
        }
        Ok(sealed)
    }

    /// Visits every event from `from_seq` on, page by page, so memory stays bounded.
    pub fn for_each_event(
        &self,
        from_seq: u64,
        visit: impl FnMut(Event) -> Result<(), TranscriptError>,
    ) -> Result<(), TranscriptError> {
        self.for_each_until(from_seq, u64::MAX, visit)
    }

    /// Visits events `from_seq..end_seq`, page by page. Reads are bounded by a head read first,
    /// so events appended meanwhile by another writer are not mistaken for a mismatched head.
    fn for_each_until(
        &self,
        from_seq: u64,
        end_seq: u64,
        mut visit: impl FnMut(Event) -> Result<(), TranscriptError>,
    ) -> Result<(), TranscriptError> {
        let mut next = from_seq;
        while next < end_seq {
            let want = usize::try_from(end_seq - next).map_or(READ_PAGE_EVENTS, |n| n.min(READ_PAGE_EVENTS));
            let page = self.store.read(&self.stream, next, want)?;
            let page_len = page.len();
            for event in page {
                next = event.seq + 1;
                visit(event)?;
            }
            if page_len < want {
                break;
            }
        }
        Ok(())
    }

    /// All events from `from_seq` on.
    pub fn events(&self, from_seq: u64) -> Result<Vec<Event>, TranscriptError> {
        let mut events = Vec::new();
        self.for_each_event(from_seq, |event| {
            events.push(event);
            Ok(())
        })?;
        Ok(events)
    }

    /// Verifies the whole stream against the head the store recorded.
    pub fn verify(&self, keys: &KeyRing) -> Result<VerifyReport, TranscriptError> {
        let anchor = Head::anchor(self.store.head(&self.stream)?);
        let mut verifier = Verifier::new(self.stream.clone(), keys);
        self.for_each_until(0, anchor.event_count, |event| {
            verifier.push(&event);
            Ok(())
        })?;
        Ok(verifier.finish(Some(anchor)))
    }

    /// Folds the stream from the start, or from checkpoint `from` (whose state is checked
    /// against its hash and whose event must still be in the stream). Every event folded is
    /// verified first; a broken link stops the replay with [`TranscriptError::Broken`].
    pub fn replay<R: Reducer>(
        &self,
        from: Option<CheckpointId>,
        reducer: &R,
        keys: &KeyRing,
    ) -> Result<Replay<R::State>, TranscriptError> {
        let (mut state, mut verifier, start_seq, mut head_seq) = match from {
            None => (reducer.initial_state(), Verifier::new(self.stream.clone(), keys), 0, None),
            Some(id) => {
                let checkpoint = self.load_checkpoint(id)?;
                let anchor_event = self.event_at(checkpoint.seq)?.ok_or_else(|| {
                    TranscriptError::CheckpointInvalid { id, detail: format!("event {} is missing", checkpoint.seq) }
                })?;
                if anchor_event.hash != checkpoint.event_hash {
                    return Err(TranscriptError::CheckpointInvalid {
                        id,
                        detail: format!("event {} no longer has the hash it was taken at", checkpoint.seq),
                    });
                }
                let state = deserialize_state::<R::State>(id, checkpoint.state)?;
                (
                    state,
                    Verifier::resume_after(self.stream.clone(), keys, &anchor_event),
                    checkpoint.seq + 1,
                    Some(checkpoint.seq),
                )
            }
        };
        let mut events_applied = 0;
        // The head is read first and the replay stops there: events appended meanwhile by another
        // writer belong to a later replay.
        let anchor = Head::anchor(self.store.head(&self.stream)?);
        // Verification of signatures is batched, so events are folded a page at a time after
        // the page has been verified completely.
        let mut next = start_seq;
        while next < anchor.event_count {
            let want = usize::try_from(anchor.event_count - next).map_or(READ_PAGE_EVENTS, |n| n.min(READ_PAGE_EVENTS));
            let page = self.store.read(&self.stream, next, want)?;
            for event in &page {
                verifier.push(event);
            }
            verifier.flush();
            if let Some(broken) = verifier.first_break() {
                return Err(TranscriptError::Broken { stream: self.stream.clone(), broken: broken.clone() });
            }
            for event in &page {
                reducer.apply(&mut state, event)?;
                head_seq = Some(event.seq);
                events_applied += 1;
                next = event.seq + 1;
            }
            if page.len() < want {
                break;
            }
        }
        let report = verifier.finish(Some(anchor));
        if let Some(broken) = report.first_break {
            return Err(TranscriptError::Broken { stream: self.stream.clone(), broken });
        }
        Ok(Replay { state, head_seq, events_applied })
    }

    /// Folds the stream up to its head (starting from the latest checkpoint) and stores the
    /// state as a new checkpoint. Returns `None` for an empty stream.
    pub fn create_checkpoint<R: Reducer>(
        &self,
        reducer: &R,
        keys: &KeyRing,
    ) -> Result<Option<CheckpointId>, TranscriptError> {
        let latest = self.store.latest_checkpoint(&self.stream)?.map(|(id, _)| id);
        let replay = self.replay(latest, reducer, keys)?;
        let Some(seq) = replay.head_seq else { return Ok(None) };
        let event = self.event_at(seq)?.ok_or_else(|| StoreError::Corrupt {
            stream: self.stream.clone(),
            detail: format!("event {seq} vanished during checkpoint"),
        })?;
        let state = serde_json::to_value(&replay.state).map_err(|error| TranscriptError::State(error.to_string()))?;
        let checkpoint = Checkpoint {
            stream: self.stream.clone(),
            seq,
            event_hash: event.hash,
            state_hash: state_hash(&state)?,
            state,
            created_at_ms: self.clock.now_ms(),
        };
        Ok(Some(self.store.put_checkpoint(&checkpoint)?))
    }

    /// Stores `state` as the fold of events `0..=seq`, when the caller already holds that fold
    /// (a session's live state) and a replay to recompute it would be wasted work. The event at
    /// `seq` must exist; the checkpoint is bound to its hash. A wrong state is caught later: a
    /// replay from this checkpoint is compared with a full replay by `session replay`.
    pub fn put_checkpoint_state(&self, seq: u64, state: Value) -> Result<CheckpointId, TranscriptError> {
        let event = self.event_at(seq)?.ok_or_else(|| StoreError::Corrupt {
            stream: self.stream.clone(),
            detail: format!("no event {seq} to checkpoint at"),
        })?;
        let checkpoint = Checkpoint {
            stream: self.stream.clone(),
            seq,
            event_hash: event.hash,
            state_hash: state_hash(&state)?,
            state,
            created_at_ms: self.clock.now_ms().max(event.at_ms),
        };
        Ok(self.store.put_checkpoint(&checkpoint)?)
    }

    /// The state stored in checkpoint `id`, after checking it against its hash.
    pub fn get_state_at_checkpoint<T: DeserializeOwned>(&self, id: CheckpointId) -> Result<T, TranscriptError> {
        let checkpoint = self.load_checkpoint(id)?;
        deserialize_state(id, checkpoint.state)
    }

    fn load_checkpoint(&self, id: CheckpointId) -> Result<Checkpoint, TranscriptError> {
        let checkpoint = self.store.checkpoint(&self.stream, id)?.ok_or(TranscriptError::CheckpointNotFound(id))?;
        if state_hash(&checkpoint.state)? != checkpoint.state_hash {
            return Err(TranscriptError::CheckpointInvalid { id, detail: "state does not match its hash".into() });
        }
        Ok(checkpoint)
    }

    fn event_at(&self, seq: u64) -> Result<Option<Event>, TranscriptError> {
        Ok(self.store.read(&self.stream, seq, 1)?.into_iter().next().filter(|event| event.seq == seq))
    }
}

fn deserialize_state<T: DeserializeOwned>(id: CheckpointId, state: Value) -> Result<T, TranscriptError> {
    serde_json::from_value(state).map_err(|error| TranscriptError::CheckpointInvalid {
        id,
        detail: format!("state does not deserialize: {error}"),
    })
}

/// An in-memory [`EventStore`] for tests, simulations and file verification. It enforces the
/// same append rules as the durable store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryStoreInner>>,
}

#[derive(Debug, Default)]
struct MemoryStoreInner {
    streams: BTreeMap<StreamId, Vec<Event>>,
    checkpoints: Vec<Checkpoint>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryStoreInner> {
        // A panic while holding the lock cannot leave a half-appended stream: appends are
        // validated before any mutation, so the data behind a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Direct access to stored events, for tests that simulate tampering.
    pub fn with_events_mut<T>(&self, stream: &StreamId, edit: impl FnOnce(&mut Vec<Event>) -> T) -> T {
        let mut inner = self.lock();
        edit(inner.streams.entry(stream.clone()).or_default())
    }
}

impl EventStore for MemoryStore {
    fn ensure_stream(&self, stream: &StreamId, _created_at_ms: u64) -> Result<(), StoreError> {
        self.lock().streams.entry(stream.clone()).or_default();
        Ok(())
    }

    fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
        Ok(self.lock().streams.get(stream).and_then(|events| events.last()).map(|event| Head {
            seq: event.seq,
            hash: event.hash,
            at_ms: event.at_ms,
        }))
    }

    fn append(&self, stream: &StreamId, events: &[Event]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let stored = inner.streams.entry(stream.clone()).or_default();
        let (mut expected_seq, mut expected_prev) = match stored.last() {
            None => (0, stream.genesis()),
            Some(last) => (last.seq + 1, last.hash),
        };
        for event in events {
            if event.stream != *stream || event.seq != expected_seq || event.prev != expected_prev {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    seq: event.seq,
                    detail: format!("expected seq {expected_seq} with prev {expected_prev}"),
                });
            }
            expected_seq += 1;
            expected_prev = event.hash;
        }
        stored.extend_from_slice(events);
        Ok(())
    }

    fn read(&self, stream: &StreamId, from_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.streams.get(stream) else { return Ok(Vec::new()) };
        Ok(events.iter().filter(|event| event.seq >= from_seq).take(limit).cloned().collect())
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<CheckpointId, StoreError> {
        let mut inner = self.lock();
        inner.checkpoints.push(checkpoint.clone());
        Ok(CheckpointId(inner.checkpoints.len() as u64))
    }

    fn checkpoint(&self, stream: &StreamId, id: CheckpointId) -> Result<Option<Checkpoint>, StoreError> {
        let inner = self.lock();
        let index = usize::try_from(id.0).ok().and_then(|n| n.checked_sub(1));
        Ok(index.and_then(|i| inner.checkpoints.get(i)).filter(|cp| cp.stream == *stream).cloned())
    }

    fn latest_checkpoint(&self, stream: &StreamId) -> Result<Option<(CheckpointId, Checkpoint)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .checkpoints
            .iter()
            .enumerate()
            .rev()
            .find(|(_, cp)| cp.stream == *stream)
            .map(|(index, cp)| (CheckpointId(index as u64 + 1), cp.clone())))
    }
}

impl<T: EventStore + ?Sized> EventStore for &T {
    fn ensure_stream(&self, stream: &StreamId, created_at_ms: u64) -> Result<(), StoreError> {
        (**self).ensure_stream(stream, created_at_ms)
    }
    fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
        (**self).head(stream)
    }
    fn append(&self, stream: &StreamId, events: &[Event]) -> Result<(), StoreError> {
        (**self).append(stream, events)
    }
    fn read(&self, stream: &StreamId, from_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        (**self).read(stream, from_seq, limit)
    }
    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<CheckpointId, StoreError> {
        (**self).put_checkpoint(checkpoint)
    }
    fn checkpoint(&self, stream: &StreamId, id: CheckpointId) -> Result<Option<Checkpoint>, StoreError> {
        (**self).checkpoint(stream, id)
    }
    fn latest_checkpoint(&self, stream: &StreamId) -> Result<Option<(CheckpointId, Checkpoint)>, StoreError> {
        (**self).latest_checkpoint(stream)
    }
}
