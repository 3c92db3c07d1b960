use serde_json::json;

use super::*;
use crate::{AgentRecord, AgentRole, SecretSeed};

fn open(dir: &tempfile::TempDir) -> Constellation {
    Constellation::open(dir.path().join("c.db")).expect("open")
}

fn with_agents(db: &Constellation, ids: &[&str]) {
    for (n, id) in ids.iter().enumerate() {
        db.ensure_agent(AgentRecord {
            agent_id: (*id).to_owned(),
            display_name: (*id).to_owned(),
            role: AgentRole::Buyer,
            key_id: format!("agent:{id}#1"),
            public_key: [n as u8 + 1; 32],
            secret_key: SecretSeed::new([n as u8 + 1; 32]),
            created_at_ms: 1,
        })
        .expect("agent");
    }
}

fn setup() -> (tempfile::TempDir, Constellation) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(&dir);
    with_agents(&db, &["alice", "bob"]);
    (dir, db)
}

fn text_block(owner: &str, label: &str, permission: Permission, limit: Option<u32>) -> NewBlock {
    NewBlock {
        owner: owner.into(),
        label: label.into(),
        description: format!("{label} notes"),
        kind: BlockKind::Working,
        template: None,
        char_limit: limit,
        permission,
        pinned: false,
        initial: None,
    }
}

fn write(author: Author, change: Change, at_ms: u64) -> Write {
    Write { author, change, base: None, message: None, op: None, at_ms }
}

fn set(db: &Constellation, owner: &str, label: &str, author: Author, text: &str, at_ms: u64) -> Written {
    db.write_block(owner, label, write(author, Change::Set(text.into()), at_ms)).expect("set")
}

fn content(db: &Constellation, owner: &str, label: &str, version: Option<u64>) -> String {
    db.block_content(owner, label, &Author::Partner, version).expect("content").2
}

#[test]
fn every_write_is_a_version_and_any_version_reads_back() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "notes", Permission::ReadWrite, None), &Author::Partner, 10).expect("create");
    for n in 1..=200_u64 {
        set(&db, "alice", "notes", Author::Agent("alice".into()), &format!("line {n}\n").repeat(3), 10 + n);
    }
    let block = db.block("alice", "notes", &Author::Partner).expect("block");
    assert_eq!(block.version_count, 201);
    assert_eq!(content(&db, "alice", "notes", Some(1)), "");
    assert_eq!(content(&db, "alice", "notes", Some(77)), "line 76\n".repeat(3));
    assert_eq!(content(&db, "alice", "notes", None), "line 200\n".repeat(3));
    let (_, versions) = db.block_versions("alice", "notes", &Author::Partner, None, 3).expect("versions");
    assert_eq!(versions.iter().map(|v| v.seq).collect::<Vec<_>>(), [201, 200, 199]);
    assert_eq!(versions[0].author, "agent:alice");
    assert_eq!(versions[0].op, "set");
    // Setting the same content again makes no version.
    let same = set(&db, "alice", "notes", Author::Partner, &"line 200\n".repeat(3), 999);
    assert!(same.version.is_none());
}

#[test]
fn the_character_limit_holds_on_every_write_and_says_what_was_tried() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "short", Permission::ReadWrite, Some(10)), &Author::Partner, 1)
        .expect("create");
    set(&db, "alice", "short", Author::Partner, "0123456789", 2);
    let error = db
        .write_block("alice", "short", write(Author::Partner, Change::Append("more".into()), 3))
        .expect_err("too long");
    assert_eq!(error.code(), "MEMORY_LIMIT_EXCEEDED");
    assert_eq!(error.to_string(), "block \"short\" holds at most 10 characters; this write would make it 15");
    // Characters, not bytes.
    set(&db, "alice", "short", Author::Partner, "ééééééééé€", 4);
    assert_eq!(content(&db, "alice", "short", None), "ééééééééé€");
    // The refused write left nothing behind: the next write starts from the latest content.
    let written = db.write_block("alice", "short", write(Author::Partner, Change::Set("ok".into()), 5)).expect("set");
    assert_eq!(written.previous, "ééééééééé€");
    assert_eq!(db.block("alice", "short", &Author::Partner).expect("block").version_count, 4);
}

#[test]
fn each_permission_denial_names_who_what_and_what_it_needs() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "ro", Permission::ReadOnly, None), &Author::Partner, 1).expect("create");
    db.create_block(text_block("alice", "ap", Permission::Append, None), &Author::Partner, 1).expect("create");
    db.create_block(text_block("alice", "rw", Permission::ReadWrite, None), &Author::Partner, 1).expect("create");
    let alice = Author::Agent("alice".into());
    let denied = |label: &str, change: Change| {
        let error = db.write_block("alice", label, write(alice.clone(), change, 2)).expect_err("denied");
        assert_eq!(error.code(), "MEMORY_PERMISSION_DENIED");
        error.to_string()
    };
    assert_eq!(
        denied("ro", Change::Append("x".into())),
        "agent:alice has read_only permission on block \"ro\"; append needs append"
    );
    assert_eq!(
        denied("ro", Change::Set("x".into())),
        "agent:alice has read_only permission on block \"ro\"; set needs read_write"
    );
    assert_eq!(
        denied("ap", Change::Set("x".into())),
        "agent:alice has append permission on block \"ap\"; set needs read_write"
    );
    assert_eq!(
        denied("ap", Change::Rollback(1)),
        "agent:alice has append permission on block \"ap\"; rollback needs read_write"
    );
    db.write_block("alice", "ap", write(alice.clone(), Change::Append("allowed".into()), 3)).expect("append");
    let error = db
        .configure_block("alice", "rw", &alice, &Configure { pinned: Some(true), ..Default::default() }, 4)
        .expect_err("not admin");
    assert_eq!(error.to_string(), "agent:alice has read_write permission on block \"rw\"; configure needs admin");
    // The partner is not held to block permissions.
    set(&db, "alice", "ro", Author::Partner, "written by the person", 5);
    // Another agent reaches nothing that is not shared with it.
    let error = db.block_content("alice", "rw", &Author::Agent("bob".into()), None).expect_err("not shared");
    assert_eq!(error.to_string(), "agent bob has no access to block \"rw\" of agent alice: it is not shared with it");
}

#[test]
fn rolling_logs_are_written_by_the_system_alone_and_roll() {
    let (_dir, db) = setup();
    db.ensure_default_blocks("alice", 1).expect("defaults");
    let entry = |n: u64| Change::Log { entry: json!({ "n": n, "text": "x".repeat(100) }), key: Some(format!("s{n}")) };
    for author in [Author::Agent("alice".into()), Author::Partner] {
        let error = db.write_block("alice", "outcomes", write(author.clone(), entry(0), 2)).expect_err("denied");
        assert_eq!(
            error.to_string(),
            format!("block \"outcomes\" is a rolling log: only the system appends to it; {author} may read it")
        );
    }
    db.configure_block(
        "alice",
        "outcomes",
        &Author::Partner,
        &Configure { char_limit: Some(1_000), ..Default::default() },
        3,
    )
    .expect("limit");
    for n in 1..=20 {
        db.write_block("alice", "outcomes", write(Author::System, entry(n), 10 + n)).expect("log");
    }
    // The same key again is a no-op (re-appending after a crash).
    let again = db.write_block("alice", "outcomes", write(Author::System, entry(20), 99)).expect("again");
    assert!(again.version.is_none());
    let (block, _, latest) = db.block_content("alice", "outcomes", &Author::Partner, None).expect("content");
    assert_eq!(block.version_count, 21);
    let entries: Vec<Value> = latest.lines().map(|line| serde_json::from_str(line).expect("json")).collect();
    assert!(entries.len() < 20 && entries.len() > 3, "{} entries kept", entries.len());
    assert_eq!(entries.last().expect("last")["n"], 20);
    assert!(latest.chars().count() <= 1_000);
    // Rolled-off entries are still in history.
    assert!(content(&db, "alice", "outcomes", Some(2)).contains("{\"n\":1,"));
    // What was stored is what the Loro document renders, version by version.
    assert_eq!(db.verify_block("alice", "outcomes").expect("verifies"), 21);
}

#[test]
fn consolidations_made_from_a_working_document_keep_the_whole_history() {
    let (dir, first) = setup();
    first.ensure_default_blocks("alice", 1).expect("defaults");
    let entry = |n: u64| Change::Log { entry: json!({ "n": n, "text": "y".repeat(1_500) }), key: None };
    for n in 0..CONSOLIDATE_AFTER_VERSIONS + 2 {
        first.write_block("alice", "outcomes", write(Author::System, entry(n), 10 + n)).expect("log");
    }
    drop(first);
    // A new process starts from the working snapshot (no early history) and writes on, through
    // more consolidations, including history snapshots that need the early history.
    let second = open(&dir);
    assert!(second.block_doc("alice", "outcomes").expect("doc").is_shallow());
    for n in 200..600 {
        second.write_block("alice", "outcomes", write(Author::System, entry(n), 10 + n)).expect("log");
    }
    let history: i64 = second
        .read_as(|tx| tx.query_row("SELECT seq FROM memory_snapshots", [], |r| r.get(0)).map_err(sql))
        .expect("snapshot");
    assert!(history > CONSOLIDATE_AFTER_VERSIONS as i64, "the history snapshot was rewritten (at {history})");
    assert_eq!(second.verify_block("alice", "outcomes").expect("verifies"), 1 + 130 + 400);
    let third = open(&dir);
    let full = third.load_block_history("alice", "outcomes").expect("history");
    assert_eq!(
        full.get_list("items").len(),
        third.load_block_doc("alice", "outcomes").expect("doc").get_list("items").len()
    );
}

#[test]
fn templates_validate_writes_and_diffs_are_structured() {
    let (_dir, db) = setup();
    db.ensure_default_blocks("alice", 1).expect("defaults");
    let error = db
        .write_block(
            "alice",
            "preferences",
            write(Author::Partner, Change::Set(r#"{"default_strategy": "greedy"}"#.into()), 2),
        )
        .expect_err("invalid");
    assert_eq!(error.code(), "MEMORY_TEMPLATE_INVALID");
    assert!(
        error.to_string().contains("field \"default_strategy\": must be one of baseline, banded, urgent"),
        "{error}"
    );
    let error = db
        .write_block("alice", "preferences", write(Author::Partner, Change::Set("not json".into()), 2))
        .expect_err("invalid");
    assert_eq!(error.code(), "MEMORY_INPUT_INVALID");
    set(
        &db,
        "alice",
        "preferences",
        Author::Partner,
        r#"{"default_max_price_minor": 500, "default_currency": "USD"}"#,
        3,
    );
    set(
        &db,
        "alice",
        "preferences",
        Author::Partner,
        r#"{"default_max_price_minor": 400, "default_currency": "USD", "default_strategy": "banded"}"#,
        4,
    );
    let diff = db.diff_block("alice", "preferences", &Author::Partner, 2, 3).expect("diff");
    assert_eq!(
        diff.changes,
        vec![
            FieldChange::Changed { field: "default_max_price_minor".into(), before: json!(500), after: json!(400) },
            FieldChange::Added { field: "default_strategy".into(), value: json!("banded") },
        ]
    );
    assert!(diff.unified.contains("-  \"default_max_price_minor\": 500\n"), "{}", diff.unified);
    assert!(diff.unified.contains("+  \"default_max_price_minor\": 400,"), "{}", diff.unified);
    assert_eq!(db.block_value("alice", "preferences").expect("value").expect("some").1["default_strategy"], "banded");
    // Tasks take titles.
    db.write_block(
        "alice",
        "tasks",
        write(Author::Agent("alice".into()), Change::Append("buy weather data".into()), 5),
    )
    .expect("task");
    assert_eq!(
        db.block_value("alice", "tasks").expect("value").expect("some").1,
        json!([{"title": "buy weather data", "done": false}])
    );
}

#[test]
fn rollback_makes_a_new_version_equal_to_the_old_one_and_keeps_history() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "notes", Permission::ReadWrite, None), &Author::Partner, 1).expect("create");
    set(&db, "alice", "notes", Author::Partner, "good\n", 2);
    set(&db, "alice", "notes", Author::Agent("alice".into()), "bad\n", 3);
    let rolled = db.write_block("alice", "notes", write(Author::Partner, Change::Rollback(2), 4)).expect("rollback");
    let version = rolled.version.expect("a new version");
    assert_eq!((version.seq, version.op.as_str(), version.message.as_str()), (4, "rollback", "roll back to version 2"));
    assert_eq!(content(&db, "alice", "notes", None), "good\n");
    assert_eq!(content(&db, "alice", "notes", Some(3)), "bad\n");
    // Structured blocks too.
    db.ensure_default_blocks("alice", 5).expect("defaults");
    set(&db, "alice", "persona", Author::Partner, r#"{"name": "Ada", "style": "terse"}"#, 6);
    set(&db, "alice", "persona", Author::Partner, r#"{"name": "Bea"}"#, 7);
    db.write_block("alice", "persona", write(Author::Partner, Change::Rollback(2), 8)).expect("rollback");
    assert_eq!(content(&db, "alice", "persona", None), content(&db, "alice", "persona", Some(2)));
    let error = db.write_block("alice", "notes", write(Author::Partner, Change::Rollback(40), 9)).expect_err("no such");
    assert_eq!(error.to_string(), "block \"notes\" has no version 40; its versions are 1 to 4");
}

#[test]
fn two_processes_editing_from_the_same_version_merge_with_both_authors() {
    let (dir, first) = setup();
    first
        .create_block(text_block("alice", "shared", Permission::ReadWrite, None), &Author::Partner, 1)
        .expect("create");
    first.share_block("alice", "shared", &Author::Partner, "bob", Permission::ReadWrite, 1).expect("share");
    set(&first, "alice", "shared", Author::Partner, "one\ntwo\nthree\n", 2);
    let second = open(&dir);
    // Both read version 2, then each edits a different line.
    let alice_edit = Write {
        base: Some(2),
        op: Some("edit"),
        ..write(Author::Agent("alice".into()), Change::Set("ONE\ntwo\nthree\n".into()), 3)
    };
    let bob_edit = Write {
        base: Some(2),
        op: Some("edit"),
        ..write(Author::Agent("bob".into()), Change::Set("one\ntwo\nTHREE\n".into()), 4)
    };
    first.write_block("alice", "shared", alice_edit).expect("alice");
    let merged = second.write_block("alice", "shared", bob_edit).expect("bob");
    assert_eq!(merged.content, "ONE\ntwo\nTHREE\n");
    let version = merged.version.expect("version");
    assert_eq!((version.author.as_str(), version.base), ("agent:bob", Some(2)));
    // Each process sees the merge; history has both authors.
    assert_eq!(content(&first, "alice", "shared", None), "ONE\ntwo\nTHREE\n");
    let (_, versions) = first.block_versions("alice", "shared", &Author::Partner, None, 2).expect("versions");
    assert_eq!(versions.iter().map(|v| v.author.as_str()).collect::<Vec<_>>(), ["agent:bob", "agent:alice"]);
    // The same author writing from an old version in two places gets a fresh peer id, so the
    // operations never collide.
    let again = Write {
        base: Some(3),
        ..write(Author::Agent("alice".into()), Change::Set("ONE\ntwo\nthree\nfour\n".into()), 5)
    };
    let merged = second.write_block("alice", "shared", again).expect("merge");
    assert_eq!(merged.content, "ONE\ntwo\nTHREE\nfour\n");
    let fresh = open(&dir);
    assert_eq!(fresh.load_block_doc("alice", "shared").expect("doc").get_text("content").to_string(), merged.content);
}

#[test]
fn shares_never_exceed_the_owners_permission() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "team", Permission::Append, None), &Author::Partner, 1).expect("create");
    let error =
        db.share_block("alice", "team", &Author::Partner, "bob", Permission::ReadWrite, 2).expect_err("above owner");
    assert_eq!(
        error.to_string(),
        "block \"team\" cannot be shared with read_write permission: its owner alice has append"
    );
    db.share_block("alice", "team", &Author::Partner, "bob", Permission::Append, 2).expect("share");
    let bob = Author::Agent("bob".into());
    db.write_block("alice", "team", write(bob.clone(), Change::Append("from bob".into()), 3)).expect("append");
    // Lowering the owner's permission lowers the share.
    db.configure_block(
        "alice",
        "team",
        &Author::Partner,
        &Configure { permission: Some(Permission::ReadOnly), ..Default::default() },
        4,
    )
    .expect("lower");
    let error = db.write_block("alice", "team", write(bob.clone(), Change::Append("again".into()), 5)).expect_err("ro");
    assert_eq!(error.to_string(), "agent:bob has read_only permission on block \"team\"; append needs append");
    let listed = db.blocks("bob", &bob).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].shared_by.as_deref(), Some("alice"));
    assert_eq!(listed[0].access, Some(Permission::ReadOnly));
}

#[test]
fn consolidation_then_reload_equals_the_state_before() {
    let (dir, db) = setup();
    db.create_block(text_block("alice", "big", Permission::ReadWrite, Some(100_000)), &Author::Partner, 1)
        .expect("create");
    let mut text = String::new();
    for n in 0..CONSOLIDATE_AFTER_VERSIONS + 10 {
        text.push_str(&format!("entry {n}\n"));
        set(&db, "alice", "big", Author::Partner, &text, 2 + n);
    }
    let block = db.block("alice", "big", &Author::Partner).expect("block");
    let before_reload = db.block_doc("alice", "big").expect("doc");
    let snapshot_seq: i64 = db
        .read_as(|tx| {
            tx.query_row("SELECT seq FROM memory_snapshots WHERE block_id = ?1", [&block.block_id], |r| r.get(0))
                .map_err(sql)
        })
        .expect("snapshot");
    assert_eq!(snapshot_seq as u64, CONSOLIDATE_AFTER_VERSIONS);
    drop(db);
    let reopened = open(&dir);
    let reloaded = reopened.load_block_history("alice", "big").expect("reload");
    let working = reopened.load_block_doc("alice", "big").expect("working");
    assert!(working.is_shallow());
    assert_eq!(working.get_deep_value(), before_reload.get_deep_value());
    assert_eq!(working.oplog_vv(), before_reload.oplog_vv());
    assert_eq!(reloaded.get_deep_value(), before_reload.get_deep_value());
    assert_eq!(reloaded.oplog_vv(), before_reload.oplog_vv());
    assert_eq!(reloaded.get_text("content").to_string(), text);
    // Every version row survived consolidation.
    let (_, versions) = reopened.block_versions("alice", "big", &Author::Partner, None, 1_000).expect("versions");
    assert_eq!(versions.len() as u64, block.version_count);
    assert_eq!(content(&reopened, "alice", "big", Some(5)), "entry 0\nentry 1\nentry 2\nentry 3\n");
}

#[test]
fn export_then_import_keeps_every_version_and_its_metadata() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "journal", Permission::ReadWrite, None), &Author::Partner, 100)
        .expect("create");
    set(&db, "alice", "journal", Author::Partner, "first\n", 200);
    db.write_block(
        "alice",
        "journal",
        Write {
            message: Some("add a line".into()),
            ..write(Author::Agent("alice".into()), Change::Append("second".into()), 300)
        },
    )
    .expect("append");
    db.write_block("alice", "journal", write(Author::Partner, Change::Rollback(2), 400)).expect("rollback");
    let exported = db.export_block("alice", "journal", &Author::Partner).expect("export");

    let other_dir = tempfile::tempdir().expect("dir");
    let other = open(&other_dir);
    with_agents(&other, &["alice"]);
    let report = other.import_block(&exported, None, None, &Author::Partner, 500).expect("import");
    assert!(report.created);
    assert_eq!((report.added, report.skipped), (4, 0));
    let (_, theirs) = db.block_versions("alice", "journal", &Author::Partner, None, 10).expect("versions");
    let (_, ours) = other.block_versions("alice", "journal", &Author::Partner, None, 10).expect("versions");
    assert_eq!(theirs, ours);
    for seq in 1..=4 {
        assert_eq!(content(&db, "alice", "journal", Some(seq)), content(&other, "alice", "journal", Some(seq)));
    }
    assert_eq!(other.export_block("alice", "journal", &Author::Partner).expect("export"), exported);
    // Importing again adds nothing.
    let again = other.import_block(&exported, None, None, &Author::Partner, 600).expect("again");
    assert_eq!((again.created, again.added, again.skipped), (false, 0, 4));

    // An edit made elsewhere merges back in with its author.
    set(&other, "alice", "journal", Author::Agent("alice".into()), "first\nfrom elsewhere\n", 700);
    set(&db, "alice", "journal", Author::Partner, "FIRST\n", 800);
    let back = other.export_block("alice", "journal", &Author::Partner).expect("export");
    let merged = db.import_block(&back, None, None, &Author::Partner, 900).expect("merge");
    assert_eq!((merged.added, merged.skipped), (1, 4));
    let (_, versions) = db.block_versions("alice", "journal", &Author::Partner, None, 1).expect("versions");
    assert_eq!((versions[0].op.as_str(), versions[0].author.as_str()), ("import", "agent:alice"));
    assert_eq!(content(&db, "alice", "journal", None), "FIRST\nfrom elsewhere\n");
}

#[test]
fn bad_imports_are_refused_before_anything_is_written() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "journal", Permission::ReadWrite, None), &Author::Partner, 1).expect("create");
    set(&db, "alice", "journal", Author::Partner, "text\n", 2);
    let exported = db.export_block("alice", "journal", &Author::Partner).expect("export");
    let mut file: Value = serde_json::from_slice(&exported).expect("json");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"format": "other"}), "missing field"),
        (
            {
                let mut f = file.clone();
                f["format"] = json!("x/9");
                f
            },
            "format \"x/9\"",
        ),
        (
            {
                let mut f = file.clone();
                f["versions"][1]["content_sha256"] = json!("00".repeat(32));
                f
            },
            "version 2: its content does not match",
        ),
        (
            {
                let mut f = file.clone();
                f["versions"][1]["update"] = json!("AAAA");
                f
            },
            "version 2: its update does not load",
        ),
        (
            {
                let mut f = file.clone();
                f["versions"][0]["seq"] = json!(5);
                f
            },
            "numbered 1, 2, 3",
        ),
        (
            {
                let mut f = file.clone();
                f["block"]["kind"] = json!("weird");
                f
            },
            "unknown kind",
        ),
    ];
    for (bad, needle) in cases {
        let error = db
            .import_block(&serde_json::to_vec(&bad).expect("bytes"), None, None, &Author::Partner, 3)
            .expect_err("bad");
        assert_eq!(error.code(), "MEMORY_IMPORT_INVALID", "{error}");
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }
    file["block"]["block_id"] = json!("ab".repeat(16));
    let error = db
        .import_block(&serde_json::to_vec(&file).expect("bytes"), None, None, &Author::Partner, 3)
        .expect_err("taken");
    assert_eq!(error.code(), "MEMORY_LABEL_TAKEN");
    assert_eq!(db.block("alice", "journal", &Author::Partner).expect("block").version_count, 2);
}

#[test]
fn a_corrupt_blob_is_reported_and_no_version_is_lost() {
    let (dir, db) = setup();
    db.create_block(text_block("alice", "notes", Permission::ReadWrite, None), &Author::Partner, 1).expect("create");
    set(&db, "alice", "notes", Author::Partner, "one\n", 2);
    set(&db, "alice", "notes", Author::Partner, "two\n", 3);
    drop(db);
    let raw = rusqlite::Connection::open(dir.path().join("c.db")).expect("raw");
    raw.execute_batch(
        "DROP TRIGGER memory_versions_no_update;
         UPDATE memory_versions SET update_blob = x'00010203' WHERE seq = 3;",
    )
    .expect("corrupt");
    drop(raw);
    let db = open(&dir);
    let error = db
        .write_block("alice", "notes", write(Author::Partner, Change::Set("three\n".into()), 4))
        .expect_err("corrupt");
    assert_eq!(error.code(), "MEMORY_CORRUPT");
    assert!(error.to_string().contains("the update of version 3 does not load"), "{error}");
    // Every version still reads (the content rows do not depend on the Loro blobs).
    assert_eq!(content(&db, "alice", "notes", Some(2)), "one\n");
    assert_eq!(content(&db, "alice", "notes", Some(3)), "two\n");
    assert_eq!(db.block("alice", "notes", &Author::Partner).expect("block").version_count, 3);
    // Corrupt stored content is caught by its hash.
    drop(db);
    let raw = rusqlite::Connection::open(dir.path().join("c.db")).expect("raw");
    raw.execute_batch(
        "UPDATE memory_versions SET content = CAST('tampered' AS BLOB) WHERE seq = 1 AND content IS NOT NULL;",
    )
    .expect("tamper");
    drop(raw);
    let db = open(&dir);
    let error = db.block_content("alice", "notes", &Author::Partner, Some(1)).expect_err("hash");
    assert_eq!(
        error.to_string(),
        "memory block \"notes\" is corrupt: the content of version 1 does not match its SHA-256; no version was changed"
    );
}

#[test]
fn unknown_blocks_and_labels_are_clear_errors() {
    let (_dir, db) = setup();
    let error = db.block("alice", "nope", &Author::Partner).expect_err("missing");
    assert_eq!(
        (error.code(), error.to_string()),
        ("MEMORY_BLOCK_NOT_FOUND", "agent alice has no memory block \"nope\"".into())
    );
    let error = db
        .create_block(text_block("alice", "bad label", Permission::ReadWrite, None), &Author::Partner, 1)
        .expect_err("label");
    assert_eq!(error.code(), "MEMORY_INPUT_INVALID");
    db.create_block(text_block("alice", "dup", Permission::ReadWrite, None), &Author::Partner, 1).expect("create");
    let error =
        db.create_block(text_block("alice", "dup", Permission::ReadWrite, None), &Author::Partner, 1).expect_err("dup");
    assert_eq!(error.code(), "MEMORY_LABEL_TAKEN");
    let error =
        db.create_block(text_block("carol", "x", Permission::ReadWrite, None), &Author::Partner, 1).expect_err("agent");
    assert_eq!(error.code(), "NOT_FOUND");
}

#[test]
fn archival_passages_are_found_by_bm25() {
    let (_dir, db) = setup();
    for (n, text) in [
        "Weather data from Acme was late twice in March",
        "Storage blobs are cheapest at Nimbus on weekends",
        "Acme weather weather forecasts are accurate; Acme bills in USD",
    ]
    .iter()
    .enumerate()
    {
        db.insert_passage("alice", text, &Author::Agent("alice".into()), n as u64).expect("insert");
    }
    db.insert_passage("bob", "weather weather weather", &Author::Partner, 9).expect("bob");
    let found = db.search_passages("alice", "acme weather", 10).expect("search");
    assert_eq!(found.len(), 2);
    assert!(found[0].text.starts_with("Acme weather weather"), "{found:?}");
    assert!(found.iter().all(|p| p.agent_id == "alice"));
    assert!(db.search_passages("alice", "\"unbalanced OR (", 10).expect("quoted").is_empty());
    let error = db.insert_passage("alice", "x", &Author::Agent("bob".into()), 1).expect_err("not bob's");
    assert_eq!(error.code(), "MEMORY_PERMISSION_DENIED");
}

#[test]
fn a_merge_based_on_a_version_before_the_last_consolidation_loads_the_history() {
    let (dir, first) = setup();
    first
        .create_block(text_block("alice", "long", Permission::ReadWrite, Some(100_000)), &Author::Partner, 1)
        .expect("create");
    let mut lines: Vec<String> = (0..10).map(|n| format!("line {n}")).collect();
    for n in 0..CONSOLIDATE_AFTER_VERSIONS + 2 {
        lines[(n % 10) as usize] = format!("line {} v{n}", n % 10);
        set(&first, "alice", "long", Author::Partner, &(lines.join("\n") + "\n"), 2 + n);
    }
    let second = open(&dir);
    // The second process holds a working document that starts at the consolidation.
    assert!(second.block_doc("alice", "long").expect("doc").is_shallow());
    let base_content = content(&first, "alice", "long", Some(5));
    let stale = Write {
        base: Some(5),
        ..write(
            Author::Agent("alice".into()),
            Change::Set(base_content.replace("line 9\n", "line 9 edited at v5\n")),
            500,
        )
    };
    let merged = first.write_block("alice", "long", stale).expect("merge over 125 versions");
    assert!(merged.content.contains("edited at v5"), "{}", merged.content);
    // The second process catches up (its working document cannot take that update) and writes.
    let next = second
        .write_block("alice", "long", write(Author::Partner, Change::Append("tail".into()), 600))
        .expect("write after the merge");
    assert!(next.content.contains("edited at v5") && next.content.ends_with("tail"));
    // A fresh process loads it too.
    let third = open(&dir);
    assert_eq!(third.load_block_doc("alice", "long").expect("load").get_text("content").to_string(), next.content);
}

#[derive(Clone, Debug)]
enum Op {
    Set(String),
    Append(String),
    Rollback(u64),
    /// A set made on an older version (a merge).
    SetOn(u64, String),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let text = "[abc\n]{0,24}";
    prop_oneof![
        text.prop_map(Op::Set),
        "[xyz]{1,6}".prop_map(Op::Append),
        (1_u64..40).prop_map(Op::Rollback),
        ((1_u64..40), text).prop_map(|(base, text)| Op::SetOn(base, text)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// The stored content of every version (what show, diff and rollback read) is what Loro's own
    /// time travel gives at that version's frontiers: the cache is derived from the history.
    #[test]
    fn every_version_reads_as_loro_time_travel_shows_it(ops in proptest::collection::vec(op(), 1..30)) {
        let (_dir, db) = setup();
        db.create_block(text_block("alice", "p", Permission::ReadWrite, Some(100_000)), &Author::Partner, 1).expect("create");
        for (n, op) in ops.into_iter().enumerate() {
            let head = db.block("alice", "p", &Author::Partner).expect("block").version_count;
            let at = 10 + n as u64;
            let author = if n % 2 == 0 { Author::Partner } else { Author::Agent("alice".into()) };
            let result = match op {
                Op::Set(text) => db.write_block("alice", "p", write(author, Change::Set(text), at)),
                Op::Append(text) => db.write_block("alice", "p", write(author, Change::Append(text), at)),
                Op::Rollback(seq) => db.write_block("alice", "p", write(author, Change::Rollback(1 + seq % head), at)),
                Op::SetOn(base, text) => db.write_block(
                    "alice",
                    "p",
                    Write { base: Some(1 + base % head), ..write(author, Change::Set(text), at) },
                ),
            };
            result.expect("write");
        }
        let block = db.block("alice", "p", &Author::Partner).expect("block");
        let doc = db.load_block_history("alice", "p").expect("history");
        let frontiers: Vec<Vec<u8>> = db
            .read_as(|tx| {
                let mut statement = tx
                    .prepare("SELECT frontiers FROM memory_versions WHERE block_id = ?1 ORDER BY seq")
                    .map_err(sql)?;
                let rows = statement.query_map([&block.block_id], |r| r.get(0)).map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .expect("frontiers");
        for (index, bytes) in frontiers.iter().enumerate() {
            let seq = index as u64 + 1;
            doc.checkout(&Frontiers::decode(bytes).expect("decode")).expect("checkout");
            proptest::prop_assert_eq!(doc.get_text("content").to_string(), content(&db, "alice", "p", Some(seq)), "version {}", seq);
        }
        db.verify_block("alice", "p").expect("verifies");
    }
}

#[test]
fn an_import_from_a_copy_that_wrote_separately_is_refused_not_half_merged() {
    let (dir, original) = setup();
    original
        .create_block(text_block("alice", "notes", Permission::ReadWrite, None), &Author::Partner, 1)
        .expect("create");
    set(&original, "alice", "notes", Author::Partner, "shared start\n", 2);
    let copy_path = dir.path().join("copy.db");
    original.backup(&copy_path).expect("backup");
    let copy = Constellation::open(&copy_path).expect("copy");
    // Both write as the partner: same peer id, same operation ids, different content.
    set(&original, "alice", "notes", Author::Partner, "shared start\nfrom the original\n", 3);
    set(&copy, "alice", "notes", Author::Partner, "shared start\nfrom the copy\n", 4);
    let exported = copy.export_block("alice", "notes", &Author::Partner).expect("export");
    let error = original.import_block(&exported, None, None, &Author::Partner, 5).expect_err("refused");
    assert_eq!(error.code(), "MEMORY_IMPORT_INVALID");
    assert!(error.to_string().contains("reuse operation ids"), "{error}");
    assert_eq!(original.block("alice", "notes", &Author::Partner).expect("block").version_count, 3);
    // Under another label it is kept as a separate block.
    let report = original.import_block(&exported, None, Some("notes-copy"), &Author::Partner, 6).expect("copy");
    assert!(report.created);
    assert_eq!(content(&original, "alice", "notes-copy", None), "shared start\nfrom the copy\n");
    assert_eq!(content(&original, "alice", "notes", None), "shared start\nfrom the original\n");
}

#[test]
fn an_old_export_edited_elsewhere_merges_into_a_block_consolidated_since() {
    let (_dir, db) = setup();
    db.create_block(text_block("alice", "long", Permission::ReadWrite, Some(100_000)), &Author::Partner, 1)
        .expect("create");
    set(&db, "alice", "long", Author::Partner, "a\nb\nc\n", 2);
    let early = db.export_block("alice", "long", &Author::Partner).expect("export");
    let other_dir = tempfile::tempdir().expect("dir");
    let other = open(&other_dir);
    with_agents(&other, &["alice"]);
    other.import_block(&early, None, None, &Author::Partner, 3).expect("import");
    set(&other, "alice", "long", Author::Agent("alice".into()), "a\nb\nc\nfrom elsewhere\n", 4);
    for n in 0..CONSOLIDATE_AFTER_VERSIONS + 5 {
        set(&db, "alice", "long", Author::Partner, &format!("a{n}\nb\nc\n"), 10 + n);
    }
    let back = other.export_block("alice", "long", &Author::Partner).expect("export");
    let merged = db.import_block(&back, None, None, &Author::Partner, 500).expect("merge");
    assert_eq!(merged.added, 1);
    let latest = content(&db, "alice", "long", None);
    assert!(
        latest.starts_with(&format!("a{}\n", CONSOLIDATE_AFTER_VERSIONS + 4)) && latest.ends_with("from elsewhere\n"),
        "{latest}"
    );
    // Imported for another agent, it is a copy of its own.
    with_agents(&db, &["alice", "bob"]);
    let copy = db.import_block(&back, Some("bob"), None, &Author::Partner, 501).expect("other owner");
    assert!(copy.created && copy.block.block_id != merged.block.block_id);
    assert_eq!(content(&db, "bob", "long", None), "a\nb\nc\nfrom elsewhere\n");
}
