//! TranscriptStream over the constellation: durable appends, checkpoints that survive a reopen,
//! replay from a checkpoint equal to replay from the start, and import's refusals.

use std::sync::Arc;

use pactum_memory::{Constellation, StreamOrigin};
use pactum_runtime::{ConstellationEventStore, ImportOutcome, RuntimeError};
use pactum_transcripts::{
    Ed25519Signer, Event, EventKind, EventSigner, KeyId, KeyRing, ManualClock, NewEvent, ReduceError, Reducer,
    StreamId, TranscriptError, TranscriptStream,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Sums `amount` over `deposit` events and counts events: a fold with a checkable result.
struct Balance;

#[derive(Serialize, Deserialize, Debug, PartialEq, Default, Clone)]
struct BalanceState {
    events: u64,
    total: u64,
}

impl Reducer for Balance {
    type State = BalanceState;

    fn initial_state(&self) -> BalanceState {
        BalanceState::default()
    }

    fn apply(&self, state: &mut BalanceState, event: &Event) -> Result<(), ReduceError> {
        state.events += 1;
        if event.kind.as_str() == "deposit" {
            let amount = event.body["amount"].as_u64().ok_or_else(|| ReduceError::new(event, "amount missing"))?;
            state.total += amount;
        }
        Ok(())
    }
}

fn open(path: &std::path::Path, clock: Arc<ManualClock>) -> TranscriptStream<ConstellationEventStore> {
    let db = Arc::new(Constellation::open(path).expect("open"));
    TranscriptStream::open(ConstellationEventStore::new(db), StreamId::new("ledger-1").expect("id"), clock)
        .expect("stream")
}

fn deposit(amount: u64) -> (EventKind, serde_json::Value) {
    (EventKind::new("deposit").expect("kind"), json!({ "amount": amount, "memo": "x".repeat(200) }))
}

#[test]
fn checkpoints_survive_reopen_and_replay_agrees() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.db");
    let clock = Arc::new(ManualClock::new(1_000));
    let keys = KeyRing::new();
    let checkpoint = {
        let stream = open(&path, clock.clone());
        for amount in 1..=10 {
            let (kind, body) = deposit(amount);
            stream.append(kind, body, None).expect("append");
            clock.advance(5);
        }
        stream.create_checkpoint(&Balance, &keys).expect("checkpoint").expect("non-empty")
    };
    // A new process: everything comes back from the file.
    let stream = open(&path, clock.clone());
    let at_checkpoint: BalanceState = stream.get_state_at_checkpoint(checkpoint).expect("state");
    assert_eq!(at_checkpoint, BalanceState { events: 10, total: 55 });
    let batch: Vec<NewEvent<'_>> = (11..=20)
        .map(|amount| {
            let (kind, body) = deposit(amount);
            NewEvent { kind, body, signer: None, at_ms: None }
        })
        .collect();
    stream.append_batch(batch).expect("batch");
    let from_start = stream.replay(None, &Balance, &keys).expect("replay");
    let from_checkpoint = stream.replay(Some(checkpoint), &Balance, &keys).expect("replay");
    assert_eq!(from_start.state, BalanceState { events: 20, total: 210 });
    assert_eq!(from_checkpoint.state, from_start.state);
    assert_eq!(from_checkpoint.events_applied, 10);
    assert_eq!(from_start.head_seq, Some(19));
    // A second checkpoint starts from the first one.
    let second = stream.create_checkpoint(&Balance, &keys).expect("checkpoint").expect("non-empty");
    assert!(second > checkpoint);
    let state: BalanceState = stream.get_state_at_checkpoint(second).expect("state");
    assert_eq!(state, from_start.state);
    assert!(stream.verify(&keys).expect("verify").is_valid());
}

#[test]
fn a_tampered_checkpoint_state_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.db");
    let clock = Arc::new(ManualClock::new(1_000));
    let stream = open(&path, clock);
    let (kind, body) = deposit(7);
    stream.append(kind, body, None).expect("append");
    let id = stream.create_checkpoint(&Balance, &KeyRing::new()).expect("checkpoint").expect("non-empty");
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    raw.execute_batch(
        "DROP TRIGGER transcript_checkpoints_no_update;
         UPDATE transcript_checkpoints SET state = '{\"events\":1,\"total\":7000}';",
    )
    .expect("tamper");
    let error = stream.get_state_at_checkpoint::<BalanceState>(id).expect_err("tampered");
    assert!(matches!(error, TranscriptError::CheckpointInvalid { .. }), "{error:?}");
    let error = stream.replay(Some(id), &Balance, &KeyRing::new()).expect_err("tampered");
    assert!(matches!(error, TranscriptError::CheckpointInvalid { .. }), "{error:?}");
}

#[test]
fn signed_events_verify_against_registered_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.db");
    let signer = Ed25519Signer::from_seed(KeyId::new("agent:a#1").expect("id"), &[5; 32]);
    let db = Arc::new(Constellation::open(&path).expect("open"));
    db.put_signing_key("agent:a#1", signer.verifying_key().to_bytes(), StreamOrigin::Local, 1).expect("key");
    let stream = TranscriptStream::open(
        ConstellationEventStore::new(Arc::clone(&db)),
        StreamId::new("signed").expect("id"),
        Arc::new(ManualClock::new(1)),
    )
    .expect("stream");
    for amount in 0..5 {
        let (kind, body) = deposit(amount);
        stream.append(kind, body, Some(&signer as &dyn EventSigner)).expect("append");
    }
    let report = pactum_runtime::verify_stream(&db, "signed").expect("verify");
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.signatures_verified, 5);
}

fn exported_sample(dir: &std::path::Path) -> std::path::PathBuf {
    let clock = Arc::new(ManualClock::new(1_000));
    let stream = open(&dir.join("source.db"), clock);
    for amount in 1..=3 {
        let (kind, body) = deposit(amount);
        stream.append(kind, body, None).expect("append");
    }
    let db = Arc::new(Constellation::open(dir.join("source.db")).expect("open"));
    let file = dir.join("ledger.jsonl");
    let mut out = std::fs::File::create(&file).expect("create");
    pactum_runtime::export_stream(&db, "ledger-1", &mut out).expect("export");
    file
}

#[test]
fn import_refuses_a_different_stream_under_a_taken_id() {
    let dir = tempfile::tempdir().expect("dir");
    let file = exported_sample(dir.path());
    let target = Arc::new(Constellation::open(dir.path().join("target.db")).expect("open"));
    let clock = ManualClock::new(5);
    let outcome = pactum_runtime::import_file(&target, &file, &clock).expect("import");
    assert!(matches!(outcome, ImportOutcome::Imported { events: 3, .. }), "{outcome:?}");
    let outcome = pactum_runtime::import_file(&target, &file, &clock).expect("again");
    assert!(matches!(outcome, ImportOutcome::AlreadyPresent { events: 3, .. }), "{outcome:?}");

    // Another constellation's stream with the same id but other content.
    let other_dir = tempfile::tempdir().expect("dir");
    let clock2 = Arc::new(ManualClock::new(9_000));
    let stream = open(&other_dir.path().join("source.db"), clock2);
    let (kind, body) = deposit(99);
    stream.append(kind, body, None).expect("append");
    let other_db = Arc::new(Constellation::open(other_dir.path().join("source.db")).expect("open"));
    let other_file = other_dir.path().join("other.jsonl");
    pactum_runtime::export_stream(&other_db, "ledger-1", &mut std::fs::File::create(&other_file).expect("create"))
        .expect("export");
    let error = pactum_runtime::import_file(&target, &other_file, &clock).expect_err("conflict");
    assert!(matches!(error, RuntimeError::ImportConflict(_)), "{error:?}");
    assert_eq!(error.code(), "IMPORT_CONFLICT");
}

#[test]
fn imported_keys_verify_only_their_own_transcript() {
    // Regression (review): imported header keys became trusted for the whole constellation (a file
    // signed by an impostor under a local key id verified as if locally signed), and a file listing
    // many unused key ids could squat them and block local ones.
    let dir = tempfile::tempdir().expect("dir");
    let source = Arc::new(Constellation::open(dir.path().join("source.db")).expect("open"));
    let impostor = Ed25519Signer::from_seed(KeyId::new("agent:buyer#1").expect("id"), &[66; 32]);
    source.put_signing_key("agent:buyer#1", impostor.verifying_key().to_bytes(), StreamOrigin::Local, 1).expect("key");
    // An unused key in the header too.
    let unused = Ed25519Signer::from_seed(KeyId::new("agent:squat#1").expect("id"), &[67; 32]);
    source.put_signing_key("agent:squat#1", unused.verifying_key().to_bytes(), StreamOrigin::Local, 1).expect("key");
    let stream = TranscriptStream::open(
        ConstellationEventStore::new(Arc::clone(&source)),
        StreamId::new("impostor").expect("id"),
        Arc::new(ManualClock::new(1)),
    )
    .expect("stream");
    let (kind, body) = deposit(1);
    stream.append(kind, body, Some(&impostor as &dyn EventSigner)).expect("append");
    let file = dir.path().join("impostor.jsonl");
    pactum_runtime::export_stream(&source, "impostor", &mut std::fs::File::create(&file).expect("create"))
        .expect("export");

    // The target has its own agent:buyer#1.
    let target = Arc::new(Constellation::open(dir.path().join("target.db")).expect("open"));
    let real = Ed25519Signer::from_seed(KeyId::new("agent:buyer#1").expect("id"), &[11; 32]);
    target.put_signing_key("agent:buyer#1", real.verifying_key().to_bytes(), StreamOrigin::Local, 1).expect("key");
    pactum_runtime::import_file(&target, &file, &ManualClock::new(5)).expect("import");

    // The import verifies against the keys it came with, and says so.
    let verification = pactum_runtime::verify_stream_with(&target, "impostor", Default::default()).expect("verify");
    assert!(verification.report.is_valid());
    assert_eq!(verification.key_source, pactum_runtime::KeySource::Imported);
    // The constellation's own trust is unchanged: one key, the real one; the unused header key
    // was not stored at all.
    assert_eq!(pactum_runtime::key_ring(&target).expect("ring").len(), 1);
    assert_eq!(target.stream_keys("impostor").expect("keys").len(), 1);
    let local = Ed25519Signer::from_seed(KeyId::new("agent:squat#1").expect("id"), &[68; 32]);
    target
        .put_signing_key("agent:squat#1", local.verifying_key().to_bytes(), StreamOrigin::Local, 2)
        .expect("the id was not squatted");
}

/// Appends to the stream in `path` from another connection until `stop` is set (at most
/// `BACKGROUND_APPENDS_MAX` events, so the readers' work stays bounded).
const BACKGROUND_APPENDS_MAX: u64 = 3_000;

fn background_appender(
    path: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let stream = open(&path, Arc::new(ManualClock::new(1_000)));
        let mut appended = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && appended < BACKGROUND_APPENDS_MAX {
            let (kind, body) = deposit(appended);
            stream.append(kind, body, None).expect("append");
            appended += 1;
        }
        appended
    })
}

#[test]
fn verifying_while_another_writer_appends_never_reports_a_false_head_mismatch() {
    // Regression (review): the summary and the pages were read in separate transactions, so an
    // append in between looked like HEAD_MISMATCH.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.db");
    drop(open(&path, Arc::new(ManualClock::new(1_000))));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = background_appender(path.clone(), Arc::clone(&stop));
    let db = Arc::new(Constellation::open(&path).expect("open"));
    let reader = open(&path, Arc::new(ManualClock::new(1_000)));
    let mut checks_during_writes = 0;
    while !writer.is_finished() {
        if db.stream("ledger-1").expect("stream").is_some_and(|s| s.event_count > 0) {
            let report = pactum_runtime::verify_stream(&db, "ledger-1").expect("verify");
            assert!(report.is_valid(), "{report:?}");
            assert!(reader.verify(&KeyRing::new()).expect("verify").is_valid());
            reader.replay(None, &Balance, &KeyRing::new()).expect("replay");
            let mut exported = Vec::new();
            let summary = pactum_runtime::export_stream(&db, "ledger-1", &mut exported).expect("export");
            assert!(summary.report.is_valid(), "{:?}", summary.report);
            checks_during_writes += 1;
        }
    }
    assert!(checks_during_writes > 0, "no check overlapped the writes");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(writer.join().expect("writer") > 0);
}

#[test]
fn a_backup_finishes_while_another_writer_keeps_appending() {
    // Regression (review): small backup steps restarted whenever another connection committed.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.db");
    {
        let stream = open(&path, Arc::new(ManualClock::new(1_000)));
        let batch: Vec<NewEvent<'_>> = (0..5_000)
            .map(|amount| {
                let (kind, body) = deposit(amount);
                NewEvent { kind, body, signer: None, at_ms: None }
            })
            .collect();
        stream.append_batch(batch).expect("seed the file");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = background_appender(path.clone(), Arc::clone(&stop));
    let db = Constellation::open(&path).expect("open");
    let backup = dir.path().join("backup.db");
    db.backup(&backup).expect("backup completes under concurrent writes");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let copy = Arc::new(Constellation::open(&backup).expect("open copy"));
    assert!(pactum_runtime::verify_stream(&copy, "ledger-1").expect("verify").is_valid());
}
