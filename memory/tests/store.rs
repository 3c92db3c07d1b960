//! The constellation store as a file on disk: identification, refusal without modification,
//! migrations, append rules, read-back checks and backup.

use std::path::{Path, PathBuf};

use pactum_memory::{
    APPLICATION_ID, Constellation, Durability, EventRow, OpenOptions, SCHEMA_VERSION, StoreError, StreamOrigin,
};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Every file in `dir` with its bytes, to prove a refused open changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn row(seq: u64, prev: [u8; 32]) -> EventRow {
    let mut hash = [0_u8; 32];
    hash[..8].copy_from_slice(&seq.to_be_bytes());
    hash[31] = 0xAA;
    EventRow {
        seq,
        kind: "test.event".into(),
        body: format!("{{\"n\":{seq}}}"),
        at_ms: 1_000 + seq,
        prev,
        hash,
        signer: None,
        sig: None,
    }
}

const GENESIS: [u8; 32] = [7; 32];

/// A stream of `count` linked rows.
fn rows(count: u64) -> Vec<EventRow> {
    let mut prev = GENESIS;
    (0..count)
        .map(|seq| {
            let event = row(seq, prev);
            prev = event.hash;
            event
        })
        .collect()
}

/// Changes the file behind the store's back, as an attacker or a bug elsewhere could.
fn tamper(path: &Path, sql: &str) {
    let raw = rusqlite::Connection::open(path).expect("sqlite");
    raw.execute_batch(sql).expect("tamper");
}

fn open_with_stream(path: &Path, count: u64) -> Constellation {
    let db = Constellation::open(path).expect("open");
    db.ensure_stream("s1", StreamOrigin::Local, GENESIS, 1_000).expect("stream");
    db.append_events("s1", &rows(count)).expect("append");
    db
}

#[test]
fn creates_file_and_directories_on_first_use() {
    let dir = temp();
    let path = dir.path().join("nested/deeper/c.db");
    let db = Constellation::open(&path).expect("open");
    let info = db.info().expect("info");
    assert_eq!(info.schema_version, SCHEMA_VERSION);
    assert_eq!(info.streams, 0);
    assert_eq!(info.durability, Durability::Process);
    assert_eq!(info.constellation_id.len(), 32);
    drop(db);
    // The header identifies the file as Pactum's.
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(&bytes[68..72], &APPLICATION_ID.to_be_bytes());
    // Reopening keeps the identity.
    let again = Constellation::open(&path).expect("reopen");
    assert_eq!(again.info().expect("info").constellation_id, info.constellation_id);
}

#[test]
fn an_empty_file_becomes_a_constellation() {
    let dir = temp();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("write");
    let db = Constellation::open(&path).expect("open");
    assert_eq!(db.info().expect("info").schema_version, SCHEMA_VERSION);
}

#[test]
fn refuses_a_file_that_is_not_sqlite_and_leaves_it_untouched() {
    let dir = temp();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(10)).expect("write");
    let before = snapshot(dir.path());
    let error = Constellation::open(&path).expect_err("must refuse");
    assert!(matches!(error, StoreError::NotSqlite { .. }), "{error:?}");
    assert_eq!(error.code(), "STORE_NOT_CONSTELLATION");
    assert!(error.to_string().contains("not an SQLite database"), "{error}");
    assert_eq!(snapshot(dir.path()), before, "no file may be created or changed");
}

#[test]
fn refuses_a_short_file_and_a_directory() {
    let dir = temp();
    let short = dir.path().join("short.db");
    std::fs::write(&short, b"SQLite format 3\0").expect("write");
    assert!(matches!(Constellation::open(&short), Err(StoreError::NotSqlite { .. })));
    let error = Constellation::open(dir.path()).expect_err("a directory");
    assert_eq!(error.code(), "IO_ERROR");
}

#[test]
fn refuses_another_applications_sqlite_database_and_leaves_it_untouched() {
    let dir = temp();
    let path = dir.path().join("other.db");
    {
        let other = rusqlite::Connection::open(&path).expect("sqlite");
        other.execute_batch("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('ada');").expect("sql");
    }
    let before = snapshot(dir.path());
    let error = Constellation::open(&path).expect_err("must refuse");
    assert!(matches!(error, StoreError::NotConstellation { application_id: 0, .. }), "{error:?}");
    assert!(error.to_string().contains("another application"), "{error}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn refuses_a_newer_schema_and_leaves_it_untouched() {
    let dir = temp();
    let path = dir.path().join("future.db");
    drop(open_with_stream(&path, 3));
    {
        let raw = rusqlite::Connection::open(&path).expect("sqlite");
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 41).expect("pragma");
    }
    let before = snapshot(dir.path());
    let error = Constellation::open(&path).expect_err("must refuse");
    match &error {
        StoreError::SchemaTooNew { found, supported, .. } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 41, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(error.code(), "STORE_SCHEMA_TOO_NEW");
    assert!(error.to_string().contains("upgrade Pactum"), "{error}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn appends_must_extend_the_head_and_nothing_is_half_written() {
    let dir = temp();
    let db = open_with_stream(&dir.path().join("c.db"), 3);
    let head = db.stream("s1").expect("stream").expect("exists");
    assert_eq!(head.event_count, 3);

    // Wrong seq.
    let mut wrong_seq = row(5, head.head_hash.expect("head"));
    wrong_seq.seq = 5;
    assert!(matches!(db.append_events("s1", &[wrong_seq]), Err(StoreError::Conflict { seq: 5, .. })));
    // Wrong prev.
    assert!(matches!(db.append_events("s1", &[row(3, [9; 32])]), Err(StoreError::Conflict { seq: 3, .. })));
    // A batch whose second row breaks the chain writes none of its rows.
    let first = row(3, head.head_hash.expect("head"));
    let broken_second = row(4, [1; 32]);
    assert!(db.append_events("s1", &[first.clone(), broken_second]).is_err());
    assert_eq!(db.stream("s1").expect("stream").expect("exists").event_count, 3);
    assert_eq!(db.read_events("s1", 0, 100).expect("read").len(), 3);
    // The correct continuation is accepted.
    db.append_events("s1", &[first]).expect("append");
    assert_eq!(db.stream("s1").expect("stream").expect("exists").event_count, 4);
}

#[test]
fn appends_to_an_unknown_stream_are_refused() {
    let dir = temp();
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    let error = db.append_events("ghost", &[row(0, GENESIS)]).expect_err("unknown");
    assert_eq!(error.code(), "TRANSCRIPT_NOT_FOUND");
}

#[test]
fn a_second_handle_with_a_stale_head_gets_a_conflict() {
    let dir = temp();
    let path = dir.path().join("c.db");
    let first = open_with_stream(&path, 2);
    let second = Constellation::open(&path).expect("second handle");
    let head = second.stream("s1").expect("stream").expect("exists").head_hash.expect("head");
    first.append_events("s1", &[row(2, head)]).expect("first appends");
    let error = second.append_events("s1", &[row(2, head)]).expect_err("stale");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert_eq!(first.read_events("s1", 0, 10).expect("read").len(), 3);
}

#[test]
fn events_are_append_only() {
    let dir = temp();
    let path = dir.path().join("c.db");
    drop(open_with_stream(&path, 3));
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    let update = raw.execute("UPDATE transcript_events SET body = '{}' WHERE seq = 1", []);
    assert!(update.expect_err("update refused").to_string().contains("append-only"));
    let delete = raw.execute("DELETE FROM transcript_events WHERE seq = 2", []);
    assert!(delete.expect_err("delete refused").to_string().contains("append-only"));
}

/// Tampers with a 5-event stream behind the store's back with `sql`, then reads from
/// `from_seq`: the read must fail as corrupt, naming `expected`.
#[track_caller]
fn check_read_back(sql: &str, from_seq: u64, expected: &str) {
    let dir = temp();
    let path = dir.path().join("c.db");
    drop(open_with_stream(&path, 5));
    tamper(&path, sql);
    let db = Constellation::open(&path).expect("open");
    let error = db.read_events("s1", from_seq, 100).expect_err("corrupt");
    assert_eq!(error.code(), "STORE_CORRUPT");
    assert!(error.to_string().contains(expected), "expected {expected:?} in: {error}");
}

const ALLOW_UPDATE: &str = "DROP TRIGGER transcript_events_no_update;";
const ALLOW_DELETE: &str = "DROP TRIGGER transcript_events_no_delete;";

#[test]
fn read_back_detects_changes_made_behind_the_stores_back() {
    let unlink_3 = format!("{ALLOW_UPDATE} UPDATE transcript_events SET prev = zeroblob(32) WHERE seq = 3;");
    check_read_back(&unlink_3, 0, "stored event 3 does not link to event 2");
    // A page starting at the break is still checked against the row before it.
    check_read_back(&unlink_3, 3, "stored event 3 does not link to event 2");
    check_read_back(
        &format!("{ALLOW_DELETE} DELETE FROM transcript_events WHERE seq = 4;"),
        0,
        "records 5 events but only 4",
    );
    check_read_back(
        &format!("{ALLOW_DELETE} DELETE FROM transcript_events WHERE seq = 2;"),
        3,
        "stored event 2 is missing",
    );
    check_read_back(
        &format!("{ALLOW_DELETE} DELETE FROM transcript_events WHERE seq = 2;"),
        0,
        "stored event 3 does not link",
    );
    check_read_back(
        &format!("{ALLOW_UPDATE} UPDATE transcript_events SET hash = zeroblob(32) WHERE seq = 4;"),
        0,
        "last event does not match the recorded head",
    );
}

#[test]
fn rows_before_a_broken_link_still_read() {
    let dir = temp();
    let path = dir.path().join("c.db");
    drop(open_with_stream(&path, 5));
    tamper(&path, &format!("{ALLOW_UPDATE} UPDATE transcript_events SET prev = zeroblob(32) WHERE seq = 3;"));
    let db = Constellation::open(&path).expect("open");
    assert_eq!(db.read_events("s1", 0, 3).expect("rows 0..3 are intact").len(), 3);
}

#[test]
fn signing_keys_cannot_be_rebound() {
    let dir = temp();
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    db.put_signing_key("agent:a#1", [1; 32], StreamOrigin::Local, 5).expect("bind");
    db.put_signing_key("agent:a#1", [1; 32], StreamOrigin::Local, 6).expect("same key again is fine");
    let error = db.put_signing_key("agent:a#1", [2; 32], StreamOrigin::Local, 7).expect_err("rebind");
    assert_eq!(error.code(), "KEY_CONFLICT");
    assert_eq!(db.signing_keys().expect("keys"), vec![("agent:a#1".to_owned(), [1; 32])]);
}

#[test]
fn import_is_all_or_nothing() {
    let dir = temp();
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    let keys = vec![("agent:x#1".to_owned(), [3; 32])];
    let import = |rows: Vec<EventRow>, fail_after: Option<usize>| {
        let mut rows = rows.into_iter().enumerate();
        db.import_stream("imp", GENESIS, 1, &keys, &mut || match rows.next() {
            Some((index, _)) if Some(index) == fail_after => Err("the source went bad".to_owned()),
            Some((_, row)) => Ok(Some(row)),
            None => Ok(None),
        })
    };
    // A row that does not link, and a source that fails midway (after more than a page of
    // rows), both leave nothing behind: no stream, no event, no key.
    let mut bad = rows(4);
    bad[2].prev = [0; 32];
    assert!(import(bad, None).is_err());
    assert!(import(rows(3000), Some(2500)).is_err());
    assert!(db.stream("imp").expect("query").is_none(), "no stream row left behind");
    assert!(db.stream_keys("imp").expect("keys").is_empty(), "no key left behind");
    assert_eq!(import(rows(3000), None).expect("import"), 3000);
    let record = db.stream("imp").expect("query").expect("exists");
    assert_eq!((record.origin, record.event_count), (StreamOrigin::Imported, 3000));
    // Imported keys belong to the stream, never to the constellation's own trust.
    assert_eq!(db.stream_keys("imp").expect("keys"), keys);
    assert!(db.signing_keys().expect("keys").is_empty());
    assert!(import(rows(4), None).is_err(), "ids are unique");
}

#[test]
fn backup_copies_a_consistent_constellation_and_never_overwrites() {
    let dir = temp();
    let db = open_with_stream(&dir.path().join("c.db"), 50);
    let destination = dir.path().join("backups/b.db");
    std::fs::create_dir_all(destination.parent().expect("parent")).expect("mkdir");
    let report = db.backup(&destination).expect("backup");
    assert!(report.bytes > 0);
    let copy = Constellation::open(&destination).expect("open copy");
    assert_eq!(copy.read_events("s1", 0, 100).expect("read"), db.read_events("s1", 0, 100).expect("read"));
    assert_eq!(copy.info().expect("info").constellation_id, db.info().expect("info").constellation_id);
    // No temporary files remain next to the backup.
    let names: Vec<_> = std::fs::read_dir(destination.parent().expect("parent"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");

    let before = std::fs::read(&destination).expect("read");
    let error = db.backup(&destination).expect_err("exists");
    assert_eq!(error.code(), "DESTINATION_EXISTS");
    assert_eq!(std::fs::read(&destination).expect("read"), before);
    let error = db.backup(dir.path().join("missing-dir/b.db")).expect_err("no dir");
    assert_eq!(error.code(), "IO_ERROR");
}

#[test]
fn durability_levels_map_to_synchronous() {
    let dir = temp();
    let path = dir.path().join("c.db");
    let db =
        Constellation::open_with(&path, OpenOptions { durability: Durability::PowerLoss, ..OpenOptions::default() })
            .expect("open");
    assert_eq!(db.info().expect("info").durability, Durability::PowerLoss);
    assert_eq!(Durability::parse("power-loss"), Some(Durability::PowerLoss));
    assert_eq!(Durability::parse("process"), Some(Durability::Process));
    assert_eq!(Durability::parse("fast"), None);
}

#[test]
fn a_creation_interrupted_after_the_wal_switch_is_completed_on_the_next_open() {
    // Regression (review): a kill between `journal_mode=WAL` (which writes the header page) and
    // the migration's commit left a blank file that was refused as another application's forever.
    let dir = temp();
    let path = dir.path().join("c.db");
    {
        let raw = rusqlite::Connection::open(&path).expect("sqlite");
        let mode: String = raw.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
        assert_eq!(mode, "wal");
    }
    assert!(std::fs::metadata(&path).expect("file").len() > 0);
    let db = Constellation::open(&path).expect("the interrupted creation completes");
    assert_eq!(db.info().expect("info").schema_version, SCHEMA_VERSION);
}

#[test]
fn another_applications_wal_database_with_a_live_log_is_refused_untouched() {
    // Regression (review): the database was opened read-write before being refused, and closing
    // that connection checkpointed the other application's log into its file.
    let dir = temp();
    let path = dir.path().join("app.db");
    let owner = rusqlite::Connection::open(&path).expect("sqlite");
    owner
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('kept in the log');",
        )
        .expect("sql");
    let before = snapshot(dir.path());
    assert!(before.iter().any(|(p, bytes)| p.to_string_lossy().ends_with("-wal") && !bytes.is_empty()));
    let error = Constellation::open(&path).expect_err("must refuse");
    assert_eq!(error.code(), "STORE_NOT_CONSTELLATION", "{error}");
    let after = snapshot(dir.path());
    // The shared-memory index may be rewritten by any reader; the database and its log may not.
    let durable = |files: &[(PathBuf, Vec<u8>)]| -> Vec<(PathBuf, Vec<u8>)> {
        files.iter().filter(|(p, _)| !p.to_string_lossy().ends_with("-shm")).cloned().collect()
    };
    assert_eq!(durable(&after), durable(&before));
    drop(owner);
}

#[test]
fn another_applications_database_with_a_hot_journal_is_refused_untouched() {
    let dir = temp();
    let path = dir.path().join("hot.db");
    {
        let raw = rusqlite::Connection::open(&path).expect("sqlite");
        raw.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").expect("sql");
    }
    // A leftover rollback journal, as after a crash mid-transaction (any content: SQLite would
    // try to roll it back on a read-write open).
    std::fs::write(dir.path().join("hot.db-journal"), vec![0xd9; 512]).expect("journal");
    let before = snapshot(dir.path());
    assert!(Constellation::open(&path).is_err());
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = temp();
    let path = dir.path().join("pipe.db");
    let status = std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(status.success());
    let error = Constellation::open(&path).expect_err("not a regular file");
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

#[test]
fn without_create_a_missing_constellation_is_not_found_and_not_created() {
    let dir = temp();
    let path = dir.path().join("sub/missing.db");
    let options = OpenOptions { create: false, ..OpenOptions::default() };
    let error = Constellation::open_with(&path, options).expect_err("missing");
    assert_eq!(error.code(), "CONSTELLATION_NOT_FOUND");
    assert!(!dir.path().join("sub").exists());
}

#[test]
fn concurrent_first_opens_all_succeed() {
    // Regression (review): processes opening a new constellation at once got
    // STORE_NOT_CONSTELLATION or STORE_BUSY. Threads with their own connections race the same way.
    for round in 0..5 {
        let dir = temp();
        let path = dir.path().join(format!("race-{round}.db"));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Constellation::open(&path).map(|db| db.info().map(|i| i.constellation_id)))
            })
            .collect();
        let ids: Vec<String> =
            handles.into_iter().map(|h| h.join().expect("thread").expect("open").expect("info")).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "one constellation, one id: {ids:?}");
    }
}

#[test]
fn a_version_1_constellation_is_migrated_to_the_current_schema() {
    let dir = temp();
    let path = dir.path().join("v1.db");
    drop(open_with_stream(&path, 3));
    // Make it a version-1 file again: the later migrations' objects removed, the version set back.
    tamper(
        &path,
        "DROP TABLE settlement_graph_owners; DROP TABLE artifact_parents; DROP TABLE artifacts; DROP TABLE execution_state; DROP TABLE execution_log; DROP TABLE executions; DROP TABLE settlement_graph_edges; DROP TABLE settlement_graphs; DROP TABLE spends; DROP TABLE agent_constraints; DROP TABLE key_revocations; DROP TABLE agent_keys;
         DROP TABLE memory_passages_fts; DROP TABLE memory_passages; DROP TABLE memory_shares; DROP TABLE memory_snapshots;
         DROP TABLE memory_versions; DROP TABLE memory_blocks; DROP TABLE memory_peers;
         DROP TABLE agents; DROP TABLE ledger_transfers; DROP TABLE ledger_accounts; DROP TABLE session_owners; DROP TABLE key_root;
         DROP TABLE conversation_updates; DROP TABLE conversations; DROP TABLE policies;
         DROP TABLE passport_events; DROP TABLE passport_sources;
         PRAGMA user_version = 1;",
    );
    let db = Constellation::open(&path).expect("migrates");
    assert_eq!(db.info().expect("info").schema_version, SCHEMA_VERSION);
    assert!(db.agents().expect("the agents table exists again").is_empty());
    assert!(db.accounts().expect("the ledger exists again").is_empty());
    assert!(db.session_streams("session:").expect("the session index works").is_empty());
    assert!(db.conversations(None, None, 10).expect("the conversations exist again").is_empty());
    assert!(db.passport_source_names().expect("the passport exists again").is_empty());
    assert!(db.agent_keys().expect("the key generations exist again").is_empty());
    assert!(db.key_revocations().expect("the revocation list exists again").is_empty());
    assert_eq!(db.read_events("s1", 0, 10).expect("history kept").len(), 3);
}

#[test]
fn a_stopped_write_and_every_later_one_write_nothing_and_a_new_handle_sees_the_earlier_ones() {
    let dir = temp();
    let path = dir.path().join("c.db");
    let db = open_with_stream(&path, 2);
    let head = |db: &Constellation| db.stream("s1").expect("stream").expect("exists");
    // The second write from now stops: the first commits, the second and third do not.
    db.stop_before_write(2);
    let before = db.writes_attempted();
    db.append_events("s1", &[row(2, head(&db).head_hash.expect("head"))]).expect("the first write commits");
    let next = row(3, head(&db).head_hash.expect("head"));
    assert!(matches!(db.append_events("s1", std::slice::from_ref(&next)), Err(StoreError::Stopped { .. })));
    assert!(matches!(db.append_events("s1", std::slice::from_ref(&next)), Err(StoreError::Stopped { .. })));
    assert_eq!(db.writes_attempted(), before + 3);
    assert_eq!(head(&db).event_count, 3);
    drop(db);
    let reopened = Constellation::open(&path).expect("open");
    assert_eq!(head(&reopened).event_count, 3);
    reopened.append_events("s1", &[next]).expect("a new handle writes");
    assert_eq!(head(&reopened).event_count, 4);
}
