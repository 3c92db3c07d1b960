//! Test tool for `tests/tests/crash.rs`: appends to one transcript stream of a constellation in
//! an endless loop until it is killed.
//!
//! Usage: `crash-appender <db path> <ack file> <stream id>`
//!
//! After each append (a single event or a batch of 2 to 5) has returned `Ok`, and only then, it
//! writes one line `<seq> <hash hex>` per acknowledged event to the ack file. The crash test kills
//! this process with SIGKILL at random moments and checks that every acknowledged event is still
//! in the store. Data written to the ack file survives the kill (it is in the page cache), so no
//! fsync is needed; a kill in the middle of a write may leave a partial last line.
//!
//! Once the stream is open it prints `ready` on stdout, then starts appending. The process is
//! restarted on the same database after each kill, so it resumes the stream from its head. Any
//! error is printed to stderr and ends the process with exit code 3.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pactum_memory::{Constellation, StreamOrigin};
use pactum_runtime::ConstellationEventStore;
use pactum_transcripts::{Clock, Ed25519Signer, EventKind, EventSigner, KeyId, NewEvent, StreamId, TranscriptStream};
use serde_json::json;

/// Key id of the signer; its seed is fixed so every run of the tool binds the same public key.
const KEY_ID: &str = "crash:appender#1";
const KEY_SEED: [u8; 32] = [7; 32];

/// The OS clock. The runtime core never reads it; a test tool may.
#[derive(Debug)]
struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crash-appender: {error}");
            ExitCode::from(3)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db_path, ack_path, stream_id] = args.as_slice() else {
        return Err("usage: crash-appender <db path> <ack file> <stream id>".into());
    };
    let db_path = PathBuf::from(db_path);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let db = Arc::new(Constellation::open(&db_path).map_err(|e| format!("open {}: {e}", db_path.display()))?);
    let signer = Ed25519Signer::from_seed(KeyId::new(KEY_ID).map_err(|e| e.to_string())?, &KEY_SEED);
    db.put_signing_key(KEY_ID, signer.verifying_key().to_bytes(), StreamOrigin::Local, clock.now_ms())
        .map_err(|e| format!("put_signing_key: {e}"))?;
    let stream_id = StreamId::new(stream_id.as_str()).map_err(|e| format!("stream id: {e}"))?;
    let stream = TranscriptStream::open(ConstellationEventStore::new(Arc::clone(&db)), stream_id, Arc::clone(&clock))
        .map_err(|e| format!("open stream: {e}"))?;
    let mut acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_path)
        .map_err(|e| format!("open ack file {ack_path}: {e}"))?;

    // Tells a test that waits for it that start-up (open, migration, key, stream) is over.
    let mut stdout = std::io::stdout();
    stdout.write_all(b"ready\n").and_then(|()| stdout.flush()).map_err(|e| format!("write stdout: {e}"))?;

    let kind = EventKind::new("crash.tick").map_err(|e| e.to_string())?;
    let pid = std::process::id();
    let padding = "p".repeat(220);
    let mut round: u64 = 0;
    loop {
        // The next seq is the head's successor: the stream may have been written by an earlier
        // run that was killed, possibly after a commit it never acknowledged.
        let next_seq = stream.head().map_err(|e| format!("head: {e}"))?.map_or(0, |head| head.seq + 1);
        let count = if round.is_multiple_of(2) { 1 } else { 2 + (round / 2) % 4 };
        let new_events: Vec<NewEvent<'_>> = (next_seq..next_seq + count)
            .map(|seq| NewEvent {
                kind: kind.clone(),
                body: json!({ "n": seq, "pid": pid, "round": round, "batch": count, "pad": padding }),
                signer: seq.is_multiple_of(3).then_some(&signer as &dyn EventSigner),
                at_ms: None,
            })
            .collect();
        let events = if count == 1 {
            let new_event = new_events.into_iter().next().ok_or("no event")?;
            vec![stream.append(new_event.kind, new_event.body, new_event.signer).map_err(|e| format!("append: {e}"))?]
        } else {
            stream.append_batch(new_events).map_err(|e| format!("append_batch: {e}"))?
        };
        // Acknowledged only now that the append has returned Ok; one write for the whole batch.
        let mut lines = String::new();
        for event in &events {
            if event.seq < next_seq || event.seq >= next_seq + count {
                return Err(format!("append returned seq {} outside {next_seq}..{}", event.seq, next_seq + count));
            }
            lines.push_str(&format!("{} {}\n", event.seq, event.hash.to_hex()));
        }
        acks.write_all(lines.as_bytes()).map_err(|e| format!("write ack file: {e}"))?;
        round += 1;
    }
}
