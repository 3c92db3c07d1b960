//! Crash test of the constellation store: a child process (`crash-appender`) appends to one
//! transcript stream in a loop and is killed with SIGKILL at random moments, 60 times, on the
//! same database file. After each kill the store must open, verify, and hold every event whose
//! append had returned `Ok` (the child writes `<seq> <hash>` to an ack file only after commit).
//!
//! Kill moments: one cycle in four kills the child 0 to 15 ms after spawning it, without waiting
//! for anything, so the kill lands in process start-up, in `Constellation::open` (creation and
//! migration of the file on the first cycle) or in the first appends. The other cycles wait for
//! the child's `ready` line (the stream is open) and kill it 1 to 40 ms later, in the appending
//! loop. The delays come from a seeded RNG; the seed is printed, and `PACTUM_CRASH_SEED=<n>`
//! replays the same delays (where each kill lands still depends on timing).
//!
//! Verification after each kill:
//! - the whole stream is verified from scratch with `pactum_runtime::verify_stream` (links,
//!   hashes, signatures against the constellation's keys, the recorded head);
//! - every event seen after an earlier kill is still there, unchanged;
//! - `TranscriptStream::create_checkpoint` replays from the previous checkpoint and stores a new
//!   one, and a replay from it must count every event (checkpoints survive crashes too);
//! - every acknowledged event is present with the acknowledged hash.
//!
//! After the last kill the whole stream is also folded from scratch.
#![cfg(unix)]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pactum_memory::Constellation;
use pactum_runtime::{ConstellationEventStore, ManualClock, key_ring, verify_stream};
use pactum_transcripts::{Event, ReduceError, Reducer, StreamId, TranscriptStream};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::Value;

/// Kill cycles; the goal asks for at least 50.
const CYCLES: usize = 60;
/// One cycle in this many kills the child without waiting for it to be ready.
const EARLY_KILL_EVERY: usize = 4;
/// Longest delay of an early kill, counted from the spawn.
const EARLY_DELAY_MAX_US: u64 = 15_000;
/// Delay range of the other kills, counted from the child's `ready` line.
const DELAY_MIN_US: u64 = 1_000;
const DELAY_MAX_US: u64 = 40_000;
const STREAM: &str = "crash.stream";
const SIGKILL: i32 = 9;

/// Folds the stream into (events, signed events), refusing any event whose body does not carry
/// its own seq or whose signing does not follow the child's pattern (every third event).
struct Tally;

impl Reducer for Tally {
    type State = (u64, u64);

    fn initial_state(&self) -> (u64, u64) {
        (0, 0)
    }

    fn apply(&self, state: &mut (u64, u64), event: &Event) -> Result<(), ReduceError> {
        if event.kind.as_str() != "crash.tick" {
            return Err(ReduceError::new(event, "unexpected kind"));
        }
        if event.body.get("n").and_then(Value::as_u64) != Some(event.seq) {
            return Err(ReduceError::new(event, format!("body n is not the seq: {}", event.body)));
        }
        if event.signer.is_some() != event.seq.is_multiple_of(3) {
            return Err(ReduceError::new(event, "every third event, and only those, must be signed"));
        }
        state.0 += 1;
        state.1 += u64::from(event.signer.is_some());
        Ok(())
    }
}

/// One acknowledged event: its seq and hash (hex) as the child saw them after commit.
struct Ack {
    seq: u64,
    hash: String,
}

/// Reads the ack file. A last line without its newline (the child was killed while writing it)
/// is ignored and cut off, so that the next child's lines do not run into it. Returns the acks
/// and whether a partial line was cut.
fn read_acks(path: &Path) -> (Vec<Ack>, bool) {
    let mut text = String::new();
    match fs::File::open(path) {
        Ok(mut file) => {
            file.read_to_string(&mut text).expect("ack file is UTF-8");
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), false),
        Err(error) => panic!("cannot open ack file: {error}"),
    }
    let complete_len = text.rfind('\n').map_or(0, |i| i + 1);
    let partial = complete_len < text.len();
    if partial {
        let file = OpenOptions::new().write(true).open(path).expect("open ack file to cut a partial line");
        file.set_len(complete_len as u64).expect("cut partial ack line");
    }
    let acks = text[..complete_len]
        .lines()
        .map(|line| {
            let (seq, hash) = line.split_once(' ').unwrap_or_else(|| panic!("malformed ack line {line:?}"));
            Ack { seq: seq.parse().unwrap_or_else(|_| panic!("malformed ack seq in {line:?}")), hash: hash.to_owned() }
        })
        .collect();
    (acks, partial)
}

/// How a cycle kills the child.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after the spawn, without waiting for anything.
    Early { delay_us: u64 },
    /// This long after the child said it is ready (the stream is open).
    AfterReady { delay_us: u64 },
}

/// Spawns the appender, kills it as told and returns once it is reaped. Fails the test if the
/// child ended by itself (it never does unless something failed).
fn run_and_kill(db_path: &Path, ack_path: &Path, kill: Kill, context: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-appender"))
        .arg(db_path)
        .arg(ack_path)
        .arg(STREAM)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crash-appender");
    let delay_us = match kill {
        Kill::Early { delay_us } => delay_us,
        Kill::AfterReady { delay_us } => {
            // Blocks until the child prints `ready`, or closes stdout by exiting.
            let mut line = String::new();
            let stdout = child.stdout.as_mut().expect("child stdout is piped");
            BufReader::new(stdout).read_line(&mut line).expect("read child stdout");
            delay_us
        }
    };
    // The deliberate random kill moment: the only sleep in this test.
    std::thread::sleep(Duration::from_micros(delay_us));
    child.kill().unwrap_or_else(|e| panic!("{context}: cannot kill the child: {e}"));
    let status = child.wait().expect("wait for the child");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read child stderr");
    }
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "{context}: the child was not killed but ended by itself ({status}); stderr:\n{stderr}"
    );
}

/// What the test knows about the stream from earlier kills: every event it has verified.
#[derive(Default)]
struct Verified {
    events: Vec<Event>,
}

/// Opens the store after a kill and checks it (see the module documentation). Returns the
/// number of new events verified.
fn check_store(db_path: &Path, acks: &[Ack], verified: &mut Verified, context: &str) -> u64 {
    let db = Arc::new(Constellation::open(db_path).unwrap_or_else(|e| panic!("{context}: store does not open: {e}")));
    let Some(record) = db.stream(STREAM).unwrap_or_else(|e| panic!("{context}: cannot read stream record: {e}")) else {
        // Killed before the stream was created: nothing can have been acknowledged.
        assert!(acks.is_empty(), "{context}: {} events acknowledged but the stream does not exist", acks.len());
        assert!(verified.events.is_empty(), "{context}: the stream disappeared");
        return 0;
    };
    let count = record.event_count;
    let before = verified.events.len() as u64;
    assert!(count >= before, "{context}: the stream shrank from {before} to {count} events");
    if let Some(last_ack) = acks.last() {
        assert!(
            last_ack.seq < count,
            "{context}: event {} was acknowledged but the stream holds only {count} events",
            last_ack.seq
        );
    }

    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let stream_id = StreamId::new(STREAM).expect("stream id");
    let stream = TranscriptStream::open(ConstellationEventStore::new(Arc::clone(&db)), stream_id, clock)
        .unwrap_or_else(|e| panic!("{context}: cannot open stream: {e}"));
    let keys = key_ring(&db).unwrap_or_else(|e| panic!("{context}: cannot read the key ring: {e}"));
    assert_eq!(keys.len(), 1, "{context}: the child binds exactly one key");

    // Everything verified after earlier kills is still there, unchanged.
    let events = stream.events(0).unwrap_or_else(|e| panic!("{context}: cannot read events: {e}"));
    assert_eq!(events.len() as u64, count, "{context}: events read");
    if let Some(index) = verified.events.iter().zip(&events).position(|(old, new)| old != new) {
        panic!("{context}: event {index}, verified after an earlier kill, has changed");
    }

    // The new events and the recorded head verify (links, hashes, signatures), replayed from
    // the checkpoint taken after the previous kill; a new checkpoint marks the verified head.
    let checkpoint = stream
        .create_checkpoint(&Tally, &keys)
        .unwrap_or_else(|e| panic!("{context}: events {before}..{count} do not verify: {e}"));
    let replay = stream.replay(checkpoint, &Tally, &keys).unwrap_or_else(|e| panic!("{context}: replay failed: {e}"));
    assert_eq!(replay.head_seq, count.checked_sub(1), "{context}: replay head");
    assert_eq!(replay.state, (count, count.div_ceil(3)), "{context}: folded (events, signed events)");

    // Every acknowledged event is there, with the hash the child saw.
    for ack in acks {
        let stored = &events[ack.seq as usize];
        assert_eq!(stored.hash.to_hex(), ack.hash, "{context}: acknowledged event {} differs", ack.seq);
    }

    let report = verify_stream(&db, STREAM).unwrap_or_else(|e| panic!("{context}: verify_stream failed: {e}"));
    assert!(report.first_break.is_none(), "{context}: stream does not verify: {:?}", report.first_break);
    assert_eq!(report.events_verified, count, "{context}: events verified");
    assert_eq!(report.signatures_verified, count.div_ceil(3), "{context}: signatures verified");
    assert_eq!(report.head_hash.map(|h| h.to_hex()), events.last().map(|e| e.hash.to_hex()));

    verified.events = events;
    count - before
}

#[test]
fn killed_appender_loses_no_acknowledged_event() {
    let seed = match std::env::var("PACTUM_CRASH_SEED") {
        Ok(text) => text.parse::<u64>().expect("PACTUM_CRASH_SEED must be an unsigned integer"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64,
    };
    println!("crash test seed: {seed} (replay the kill delays with PACTUM_CRASH_SEED={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("constellation.db");
    let ack_path = dir.path().join("acks.txt");
    let started = Instant::now();

    let mut verified = Verified::default();
    let mut acked = 0;
    let mut kills_after_ack = 0;
    let mut kills_before_ack = 0;
    let mut partial_lines = 0;
    for cycle in 0..CYCLES {
        let kill = if cycle.is_multiple_of(EARLY_KILL_EVERY) {
            // Half of the early kills are immediate.
            let delay_us = if rng.next_u32().is_multiple_of(2) { 0 } else { rng.next_u64() % (EARLY_DELAY_MAX_US + 1) };
            Kill::Early { delay_us }
        } else {
            Kill::AfterReady { delay_us: DELAY_MIN_US + rng.next_u64() % (DELAY_MAX_US - DELAY_MIN_US + 1) }
        };
        let context = format!("seed {seed}, cycle {cycle}, {kill:?}");
        run_and_kill(&db_path, &ack_path, kill, &context);

        let (acks, partial) = read_acks(&ack_path);
        partial_lines += usize::from(partial);
        for pair in acks.windows(2) {
            // Each run resumes after the head, beyond everything acknowledged before.
            assert!(pair[0].seq < pair[1].seq, "{context}: acks out of order: {} then {}", pair[0].seq, pair[1].seq);
        }
        if acks.len() > acked {
            kills_after_ack += 1;
        } else {
            kills_before_ack += 1;
        }
        acked = acks.len();
        check_store(&db_path, &acks, &mut verified, &context);
    }

    // The whole stream folds from scratch.
    let db = Arc::new(Constellation::open(&db_path).expect("open after the last kill"));
    let keys = key_ring(&db).expect("key ring");
    let stream_id = StreamId::new(STREAM).expect("stream id");
    let stream =
        TranscriptStream::open(ConstellationEventStore::new(Arc::clone(&db)), stream_id, Arc::new(ManualClock::new(0)))
            .expect("open stream");
    let replay = stream.replay(None, &Tally, &keys).unwrap_or_else(|e| panic!("seed {seed}: full replay failed: {e}"));
    let count = verified.events.len() as u64;
    assert_eq!((replay.events_applied, replay.state), (count, (count, count.div_ceil(3))), "seed {seed}: full replay");

    println!(
        "crash test: {CYCLES} kills in {:.1?}: {count} events stored, {acked} acknowledged; {kills_after_ack} kills \
         after the run had acknowledged appends, {kills_before_ack} before; {partial_lines} partial ack lines cut",
        started.elapsed()
    );
    // Not vacuous: the child made real progress, and kills landed in the appending loop (every
    // kill hit a running child: a child that ended by itself fails its cycle).
    assert!(count > 500, "seed {seed}: only {count} events stored in {CYCLES} cycles");
    assert!(
        kills_after_ack >= CYCLES / 2,
        "seed {seed}: only {kills_after_ack} of {CYCLES} kills landed after the child had acknowledged an append"
    );
}

#[test]
fn partial_last_ack_line_is_ignored_and_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("acks.txt");
    assert!(read_acks(&path).0.is_empty(), "a missing ack file holds no acks");
    fs::write(&path, "0 aa\n1 bb\n2 c").expect("write ack file");
    let (acks, partial) = read_acks(&path);
    assert!(partial);
    assert_eq!(acks.iter().map(|a| (a.seq, a.hash.as_str())).collect::<Vec<_>>(), [(0, "aa"), (1, "bb")]);
    assert_eq!(fs::read_to_string(&path).expect("read ack file"), "0 aa\n1 bb\n");
    let (acks, partial) = read_acks(&path);
    assert!(!partial);
    assert_eq!(acks.len(), 2);
}
