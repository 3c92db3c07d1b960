//! `TranscriptStream` over `MemoryStore`: append rules, timestamps, atomic batches, checkpoints
//! and replay (including replay over tampered data).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{EventSpec, KEYS, START_MS, Who, config, event_spec, key_id, kind, signed_count, specs, stream_id, who};
use pactum_transcripts::canonical::CanonicalError;
use pactum_transcripts::limits::EVENT_BODY_BYTES_MAX;
use pactum_transcripts::{
    BreakReason, Checkpoint, CheckpointId, Digest, Ed25519Signer, Event, EventStore, MemoryStore, NewEvent,
    ReduceError, Reducer, SealError, StoreError, StreamId, TranscriptError, TranscriptStream, state_hash,
};
use pactum_transcripts::{EventSigner, ManualClock};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Counts events per kind and sums the integer `amount` of the bodies.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
struct Tally {
    per_kind: BTreeMap<String, u64>,
    total: i64,
    events: u64,
    last_seq: Option<u64>,
}

#[derive(Debug)]
struct TallyReducer;

impl Reducer for TallyReducer {
    type State = Tally;

    fn initial_state(&self) -> Tally {
        Tally::default()
    }

    fn apply(&self, state: &mut Tally, event: &Event) -> Result<(), ReduceError> {
        if event.seq != state.last_seq.map_or(0, |seq| seq + 1) {
            return Err(ReduceError::new(event, "folded out of order"));
        }
        if event.kind.as_str() == "poison" {
            return Err(ReduceError::new(event, "refused"));
        }
        let amount = match event.body.get("amount") {
            None => 0,
            Some(value) => value.as_i64().ok_or_else(|| ReduceError::new(event, "amount must be an integer"))?,
        };
        *state.per_kind.entry(event.kind.to_string()).or_default() += 1;
        state.total += amount;
        state.events += 1;
        state.last_seq = Some(event.seq);
        Ok(())
    }
}

/// The tally computed directly from the specs, without the stream.
fn model(specs: &[EventSpec]) -> Tally {
    let mut tally = Tally::default();
    for (seq, spec) in specs.iter().enumerate() {
        *tally.per_kind.entry(spec.kind.to_owned()).or_default() += 1;
        tally.total += spec.body.get("amount").map_or(0, |amount| amount.as_i64().expect("integer amount"));
        tally.events += 1;
        tally.last_seq = Some(seq as u64);
    }
    tally
}

/// Event specs whose bodies may carry an integer `amount` (and never a non-integer one).
fn tally_specs(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<EventSpec>> {
    let spec = (event_spec(who()), prop::option::of(-1_000_000_000_000_i64..1_000_000_000_000)).prop_map(
        |(mut spec, amount)| {
            let body = spec.body.as_object_mut().expect("object body");
            body.remove("amount");
            if let Some(amount) = amount {
                body.insert("amount".into(), json!(amount));
            }
            spec
        },
    );
    prop::collection::vec(spec, len)
}

struct Setup {
    clock: Arc<ManualClock>,
    stream: TranscriptStream<MemoryStore>,
}

fn open() -> Setup {
    let clock = Arc::new(ManualClock::new(START_MS));
    let stream = TranscriptStream::open(MemoryStore::new(), stream_id(), clock.clone()).expect("open");
    Setup { clock, stream }
}

impl Setup {
    fn append_all(&self, specs: &[EventSpec]) {
        for spec in specs {
            self.clock.advance(spec.delta_ms);
            self.stream.append(kind(spec.kind), spec.body.clone(), spec.who.dyn_signer()).expect("append");
        }
    }

    fn replay(&self, from: Option<CheckpointId>) -> Result<pactum_transcripts::Replay<Tally>, TranscriptError> {
        self.stream.replay(from, &TallyReducer, &KEYS.trusted)
    }

    fn checkpoint(&self) -> CheckpointId {
        self.stream.create_checkpoint(&TallyReducer, &KEYS.trusted).expect("checkpoint").expect("non-empty stream")
    }

    fn stored_checkpoint(&self, id: CheckpointId) -> Checkpoint {
        self.stream.store().checkpoint(&stream_id(), id).expect("read").expect("stored")
    }

    fn events(&self) -> Vec<Event> {
        self.stream.events(0).expect("events")
    }
}

fn assert_broken(result: Result<impl std::fmt::Debug, TranscriptError>, seq: u64, reason: BreakReason) {
    match result {
        Err(TranscriptError::Broken { stream, broken }) => {
            assert_eq!(stream, stream_id());
            assert_eq!((broken.seq, broken.reason), (seq, reason), "found {broken}");
        }
        other => panic!("expected {reason} at {seq}, got {other:?}"),
    }
}

fn assert_checkpoint_invalid<T: std::fmt::Debug>(result: Result<T, TranscriptError>, expected_id: CheckpointId) {
    match result {
        Err(TranscriptError::CheckpointInvalid { id, .. }) => assert_eq!(id, expected_id),
        other => panic!("expected CheckpointInvalid({expected_id}), got {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(64, 0x5eed_5743_0002))]

    /// Replaying from a checkpoint taken midway gives the state of a replay from the start, and
    /// the checkpoint keeps the state as of its event.
    #[test]
    fn replay_from_checkpoint_equals_replay_from_start(first in tally_specs(1..=12), second in tally_specs(0..=12)) {
        let setup = open();
        setup.append_all(&first);
        let at_first = model(&first);
        let cp = setup.checkpoint();
        let stored = setup.stored_checkpoint(cp);
        let events = setup.events();
        prop_assert_eq!(stored.seq, first.len() as u64 - 1);
        prop_assert_eq!(stored.event_hash, events[first.len() - 1].hash);
        prop_assert_eq!(stored.state_hash, state_hash(&stored.state).expect("canonical"));
        prop_assert_eq!(setup.stream.get_state_at_checkpoint::<Tally>(cp).expect("state"), at_first.clone());

        setup.append_all(&second);
        let all: Vec<EventSpec> = first.iter().chain(&second).cloned().collect();
        let full = setup.replay(None).expect("replay from start");
        prop_assert_eq!(&full.state, &model(&all));
        prop_assert_eq!(full.events_applied, all.len() as u64);
        prop_assert_eq!(full.head_seq, Some(all.len() as u64 - 1));

        let resumed = setup.replay(Some(cp)).expect("replay from checkpoint");
        prop_assert_eq!(&resumed.state, &full.state);
        prop_assert_eq!(resumed.events_applied, second.len() as u64);
        prop_assert_eq!(resumed.head_seq, full.head_seq);
        prop_assert_eq!(setup.stream.get_state_at_checkpoint::<Tally>(cp).expect("state"), at_first);

        // A second checkpoint folds on from the first and records the state at the new head.
        let cp2 = setup.checkpoint();
        prop_assert_ne!(cp2, cp);
        prop_assert_eq!(setup.stream.get_state_at_checkpoint::<Tally>(cp2).expect("state"), full.state.clone());
        let from_head = setup.replay(Some(cp2)).expect("replay from the head checkpoint");
        prop_assert_eq!(from_head.events_applied, 0);
        prop_assert_eq!(from_head.state, full.state);

        let report = setup.stream.verify(&KEYS.trusted).expect("verify");
        prop_assert!(report.is_valid());
        prop_assert_eq!(report.signatures_verified, all.iter().filter(|s| s.who != Who::Nobody).count() as u64);
    }

    /// A checkpoint whose state no longer matches its hash is refused wherever it is used.
    #[test]
    fn altered_checkpoint_state_is_invalid(specs in tally_specs(1..=24), bump in 1_i64..1000) {
        let setup = open();
        setup.append_all(&specs);
        let cp = setup.checkpoint();
        let mut altered = setup.stored_checkpoint(cp);
        let total = altered.state["total"].as_i64().expect("total");
        altered.state["total"] = json!(total + bump);
        let bad = setup.stream.store().put_checkpoint(&altered).expect("store");

        assert_checkpoint_invalid(setup.replay(Some(bad)), bad);
        assert_checkpoint_invalid(setup.stream.get_state_at_checkpoint::<Tally>(bad), bad);
        // Checkpointing starts from the latest checkpoint, which is the altered one.
        assert_checkpoint_invalid(setup.stream.create_checkpoint(&TallyReducer, &KEYS.trusted), bad);
        // The untouched one still works.
        prop_assert_eq!(setup.replay(Some(cp)).expect("replay").state, model(&specs));
    }

    /// Replay verifies before it folds: an edited body stops it at that event with a broken link
    /// (not with the reducer's refusal of the edited body), from the start or from an earlier
    /// checkpoint, and `verify` reports the same break.
    #[test]
    fn replay_over_tampered_stream_is_broken(specs in tally_specs(2..=24), at in any::<(Index, Index)>()) {
        let setup = open();
        let c = at.0.index(specs.len() - 1);
        let i = c + 1 + at.1.index(specs.len() - 1 - c);
        setup.append_all(&specs[..=c]);
        let cp = setup.checkpoint();
        setup.append_all(&specs[c + 1..]);
        setup.stream.store().with_events_mut(&stream_id(), |events| {
            // An amount the reducer refuses: only a replay that verifies before folding
            // reports the broken link rather than a reduce error.
            events[i].body.as_object_mut().expect("object").insert("amount".into(), json!("tampered"));
        });
        assert_broken(setup.replay(None), i as u64, BreakReason::HashMismatch);
        assert_broken(setup.replay(Some(cp)), i as u64, BreakReason::HashMismatch);
        let report = setup.stream.verify(&KEYS.trusted).expect("verify");
        let broken = report.first_break.expect("broken");
        prop_assert_eq!((broken.seq, broken.reason), (i as u64, BreakReason::HashMismatch));
    }

    /// Events that do not extend the head are refused and leave the stream as it was.
    #[test]
    fn store_refuses_events_that_do_not_extend_the_head(specs in specs(1..=24), at in any::<Index>()) {
        let setup = open();
        setup.append_all(&specs);
        let before = setup.events();
        let head = setup.stream.head().expect("head").expect("non-empty");
        let next = before.len() as u64;
        let k = at.index(before.len());
        let seal = |seq: u64, prev: Digest| {
            Event::seal(stream_id(), seq, kind("note"), json!({"late": true}), head.at_ms, prev, None).expect("seal")
        };
        let stale_prev = if k + 1 == before.len() { stream_id().genesis() } else { before[k].hash };
        let good = seal(next, head.hash);
        let refused: Vec<(u64, Vec<Event>)> = vec![
            (next, vec![seal(next, stale_prev)]),          // a writer that missed the latest events
            (next, vec![seal(next, Digest::tagged(b"x", b"y"))]),
            (next + 1, vec![seal(next + 1, head.hash)]),   // a gap
            (k as u64, vec![seal(k as u64, before[k].prev)]), // rewriting history
            (next + 1, vec![good.clone(), seal(next + 1, head.hash)]), // a bad second event of a batch
        ];
        for (seq, batch) in refused {
            match setup.stream.store().append(&stream_id(), &batch) {
                Err(StoreError::Conflict { stream, seq: found, .. }) => {
                    prop_assert_eq!(stream, stream_id());
                    prop_assert_eq!(found, seq);
                }
                other => prop_assert!(false, "expected a conflict at {}, got {:?}", seq, other),
            }
            prop_assert_eq!(&setup.events(), &before);
            prop_assert_eq!(setup.stream.head().expect("head"), Some(head));
        }
        let mut other_stream = good.clone();
        other_stream.stream = StreamId::new("elsewhere").expect("valid");
        let result = setup.stream.store().append(&stream_id(), &[other_stream]);
        prop_assert!(matches!(result, Err(StoreError::Conflict { seq: found, .. }) if found == next), "{:?}", result);
        // The right event is still accepted afterwards.
        setup.stream.store().append(&stream_id(), std::slice::from_ref(&good)).expect("extends the head");
        prop_assert_eq!(setup.events().len(), before.len() + 1);
        prop_assert!(setup.stream.verify(&KEYS.trusted).expect("verify").is_valid());
    }

    /// Timestamps follow the clock but never go backwards, even when the clock does.
    #[test]
    fn at_ms_never_decreases(moves in prop::collection::vec((any::<bool>(), 0_u64..5_000, 1_usize..=3), 1..=12)) {
        let setup = open();
        let mut floor = 0;
        let mut seq = 0_u64;
        for (backwards, delta, batch_len) in moves {
            if backwards {
                setup.clock.set(setup.clock_now().saturating_sub(delta));
            } else {
                setup.clock.advance(delta);
            }
            let expected = setup.clock_now().max(floor);
            let batch = (0..batch_len)
                .map(|n| NewEvent { kind: kind("note"), body: json!({ "n": n }), signer: None, at_ms: None })
                .collect();
            let appended = setup.stream.append_batch(batch).expect("append");
            for event in &appended {
                prop_assert_eq!(event.seq, seq);
                prop_assert_eq!(event.at_ms, expected);
                seq += 1;
            }
            floor = expected;
        }
        prop_assert!(setup.stream.verify(&KEYS.trusted).expect("verify").is_valid());
    }
}

impl Setup {
    fn clock_now(&self) -> u64 {
        use pactum_transcripts::Clock as _;
        self.clock.now_ms()
    }
}

type ErrorCheck = fn(&TranscriptError) -> bool;

/// A batch fails as a whole when one of its events cannot be sealed; nothing is written.
#[test]
fn append_batch_is_atomic() {
    let setup = open();
    setup.append_all(&[EventSpec { kind: "note", body: json!({"amount": 1}), who: Who::A, delta_ms: 5 }]);
    let before = setup.events();
    let head = setup.stream.head().expect("head");

    let too_large = "x".repeat(EVENT_BODY_BYTES_MAX);
    let failing: Vec<(Value, ErrorCheck)> = vec![
        (
            json!(u64::MAX),
            |error| matches!(error, TranscriptError::Seal(SealError::Canonical(CanonicalError::IntegerOutOfRange(text))) if text == "18446744073709551615"),
        ),
        (
            json!({ "big": too_large }),
            |error| matches!(error, TranscriptError::Seal(SealError::BodyTooLarge { limit, .. }) if *limit == EVENT_BODY_BYTES_MAX),
        ),
    ];
    for (bad_body, is_expected) in failing {
        setup.clock.advance(10);
        let batch = vec![
            NewEvent { kind: kind("round.bid"), body: json!({"amount": 2}), signer: Some(&KEYS.a), at_ms: None },
            NewEvent { kind: kind("round.bid"), body: bad_body, signer: Some(&KEYS.b), at_ms: None },
            NewEvent { kind: kind("note"), body: json!({}), signer: None, at_ms: None },
        ];
        let error = setup.stream.append_batch(batch).expect_err("unsealable body");
        assert!(is_expected(&error), "unexpected error {error:?}");
        assert_eq!(setup.events(), before);
        assert_eq!(setup.stream.head().expect("head"), head);
    }

    // A good batch afterwards continues right after the old head, all at one timestamp.
    setup.clock.advance(10);
    let batch = vec![
        NewEvent { kind: kind("round.bid"), body: json!({"amount": 2}), signer: Some(&KEYS.a), at_ms: None },
        NewEvent { kind: kind("round.bid"), body: json!({"amount": 3}), signer: Some(&KEYS.b), at_ms: None },
    ];
    let appended = setup.stream.append_batch(batch).expect("append");
    assert_eq!(appended.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(appended[0].prev, before[0].hash);
    assert_eq!(appended[1].prev, appended[0].hash);
    assert!(appended.iter().all(|e| e.at_ms == START_MS + 5 + 30));
    assert_eq!(setup.events()[1..], appended[..]);
    let replay = setup.replay(None).expect("replay");
    assert_eq!(replay.state.total, 6);
    assert_eq!(replay.events_applied, 3);
    // An empty batch writes nothing.
    assert!(setup.stream.append_batch(Vec::new()).expect("empty batch").is_empty());
    assert_eq!(setup.events().len(), 3);
}

#[test]
fn checkpoints_that_do_not_fit_the_stream_are_refused() {
    let setup = open();
    let specs: Vec<EventSpec> = (0..4)
        .map(|n| EventSpec { kind: "note", body: json!({ "amount": n }), who: Who::Nobody, delta_ms: 1 })
        .collect();
    setup.append_all(&specs);
    let cp = setup.checkpoint();
    let good = setup.stored_checkpoint(cp);

    // Consistent state and hash, but bound to an event hash the stream does not have.
    let mut other_history = good.clone();
    other_history.event_hash = Digest::tagged(b"other", b"history");
    let id = setup.stream.store().put_checkpoint(&other_history).expect("store");
    assert_checkpoint_invalid(setup.replay(Some(id)), id);

    // Taken at an event the stream does not (yet) have.
    let mut ahead = good.clone();
    ahead.seq = 10;
    let id = setup.stream.store().put_checkpoint(&ahead).expect("store");
    assert_checkpoint_invalid(setup.replay(Some(id)), id);

    // A state of another shape does not deserialize.
    let mut wrong_shape = good.clone();
    wrong_shape.state = json!({"unexpected": true});
    wrong_shape.state_hash = state_hash(&wrong_shape.state).expect("canonical");
    let id = setup.stream.store().put_checkpoint(&wrong_shape).expect("store");
    assert_checkpoint_invalid(setup.stream.get_state_at_checkpoint::<Tally>(id), id);
    assert_checkpoint_invalid(setup.replay(Some(id)), id);

    // Unknown ids, and ids of another stream's checkpoints, are not found.
    let mut foreign = good.clone();
    foreign.stream = StreamId::new("another-stream").expect("valid");
    let foreign_id = setup.stream.store().put_checkpoint(&foreign).expect("store");
    for id in [CheckpointId(0), CheckpointId(999), foreign_id] {
        assert!(
            matches!(setup.replay(Some(id)), Err(TranscriptError::CheckpointNotFound(found)) if found == id),
            "checkpoint {id}"
        );
    }
    assert_eq!(setup.replay(Some(cp)).expect("replay").state, model(&specs));
}

#[test]
fn replay_stops_at_events_it_cannot_trust_or_fold() {
    // Signed by a key the ring does not trust.
    let setup = open();
    setup.append_all(&[EventSpec { kind: "note", body: json!({}), who: Who::A, delta_ms: 1 }]);
    setup.stream.append(kind("note"), json!({}), Some(&KEYS.c)).expect("append");
    assert_broken(setup.replay(None), 1, BreakReason::SignerUnknown);

    // A signature that does not verify, after a checkpoint.
    let setup = open();
    setup.append_all(&[EventSpec { kind: "note", body: json!({"amount": 1}), who: Who::B, delta_ms: 1 }]);
    let cp = setup.checkpoint();
    setup.append_all(&[EventSpec { kind: "note", body: json!({"amount": 2}), who: Who::A, delta_ms: 1 }]);
    let impostor = Ed25519Signer::from_seed(key_id("agent:a#1"), &[9; 32]);
    setup.stream.append(kind("note"), json!({"amount": 3}), Some(&impostor)).expect("append");
    assert_broken(setup.replay(None), 2, BreakReason::SignatureInvalid);
    assert_broken(setup.replay(Some(cp)), 2, BreakReason::SignatureInvalid);

    // The reducer's refusal is reported with the event it refused.
    let setup = open();
    setup.append_all(&[EventSpec { kind: "note", body: json!({}), who: Who::Nobody, delta_ms: 1 }]);
    setup.stream.append(kind("poison"), json!({}), None).expect("append");
    match setup.replay(None) {
        Err(TranscriptError::Reduce(error)) => assert_eq!((error.seq, error.kind.as_str()), (1, "poison")),
        other => panic!("expected a reduce error, got {other:?}"),
    }
    assert!(matches!(
        setup.stream.create_checkpoint(&TallyReducer, &KEYS.trusted),
        Err(TranscriptError::Reduce(ReduceError { seq: 1, .. }))
    ));
}

#[test]
fn empty_stream_replays_to_the_initial_state_and_has_no_checkpoint() {
    let setup = open();
    let replay = setup.replay(None).expect("replay");
    assert_eq!(replay.state, Tally::default());
    assert_eq!((replay.head_seq, replay.events_applied), (None, 0));
    assert_eq!(setup.stream.create_checkpoint(&TallyReducer, &KEYS.trusted).expect("checkpoint"), None);
    let report = setup.stream.verify(&KEYS.trusted).expect("verify");
    assert!(report.is_valid());
    assert_eq!((report.events_verified, report.head_hash), (0, None));
}

/// Two handles on one store see one stream; each append extends whatever the head is now.
#[test]
fn two_writers_on_one_store_interleave() {
    let store = MemoryStore::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let first = TranscriptStream::open(store.clone(), stream_id(), clock.clone()).expect("open");
    let second = TranscriptStream::open(&store, stream_id(), clock.clone()).expect("open");
    for n in 0..6_u64 {
        clock.advance(3);
        let body = json!({ "amount": n });
        let event = if n % 2 == 0 {
            first.append(kind("note"), body, Some(&KEYS.a as &dyn EventSigner))
        } else {
            second.append(kind("note"), body, None)
        };
        assert_eq!(event.expect("append").seq, n);
    }
    let events = first.events(0).expect("events");
    assert_eq!(events, second.events(0).expect("events"));
    assert_eq!(signed_count(&events), 3);
    assert_eq!(second.replay(None, &TallyReducer, &KEYS.trusted).expect("replay").state.total, 15);
}
