//! Editor conversations: creation, append-only history in order, listing with a working
//! directory filter and pagination, mode and close, and refusals that write nothing.

use pactum_memory::{CONVERSATION_UPDATE_BYTES_MAX, Constellation, ConversationMode, StoreError};

fn open() -> (tempfile::TempDir, Constellation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Constellation::open(dir.path().join("c.db")).expect("open");
    (dir, db)
}

#[test]
fn updates_come_back_in_order_with_the_first_title_kept() {
    let (_dir, db) = open();
    db.create_conversation("c1", "/work/a", 1_000).expect("create");
    let first = db
        .append_conversation_updates("c1", &["{\"a\":1}".into(), "{\"b\":2}".into()], Some("buy weather"), 2_000)
        .expect("append");
    assert_eq!(first, 0);
    let next = db.append_conversation_updates("c1", &["{\"c\":3}".into()], Some("other title"), 3_000).expect("append");
    assert_eq!(next, 2);
    let updates = db.conversation_updates("c1").expect("updates");
    let bodies: Vec<&str> = updates.iter().map(|u| u.body.as_str()).collect();
    assert_eq!(bodies, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    assert_eq!(updates.iter().map(|u| u.seq).collect::<Vec<_>>(), [0, 1, 2]);
    let row = db.conversation("c1").expect("read").expect("exists");
    assert_eq!(row.title.as_deref(), Some("buy weather"));
    assert_eq!((row.update_count, row.created_at_ms, row.updated_at_ms), (3, 1_000, 3_000));
    assert_eq!(row.mode, ConversationMode::Ask);
}

#[test]
fn listing_is_newest_first_filtered_by_directory_and_paged() {
    let (_dir, db) = open();
    for (index, cwd) in ["/a", "/b", "/a", "/a"].iter().enumerate() {
        let id = format!("c{index}");
        db.create_conversation(&id, cwd, 100 * index as u64).expect("create");
    }
    let all: Vec<String> =
        db.conversations(None, None, 10).expect("list").into_iter().map(|c| c.conversation_id).collect();
    assert_eq!(all, ["c3", "c2", "c1", "c0"]);
    let page1 = db.conversations(Some("/a"), None, 2).expect("list");
    assert_eq!(page1.iter().map(|c| c.conversation_id.as_str()).collect::<Vec<_>>(), ["c3", "c2"]);
    let last = page1.last().expect("last");
    let page2 = db.conversations(Some("/a"), Some((last.updated_at_ms, &last.conversation_id)), 2).expect("list");
    assert_eq!(page2.iter().map(|c| c.conversation_id.as_str()).collect::<Vec<_>>(), ["c0"]);
}

#[test]
fn mode_and_close_are_recorded() {
    let (_dir, db) = open();
    db.create_conversation("c", "/w", 5).expect("create");
    db.set_conversation_mode("c", ConversationMode::ReadOnly, 6).expect("mode");
    db.close_conversation("c", 7).expect("close");
    db.close_conversation("c", 8).expect("closing twice keeps the first time");
    let row = db.conversation("c").expect("read").expect("exists");
    assert_eq!((row.mode, row.closed_at_ms, row.updated_at_ms), (ConversationMode::ReadOnly, Some(7), 6));
}

#[test]
fn refusals_write_nothing() {
    let (_dir, db) = open();
    db.create_conversation("c", "/w", 5).expect("create");
    let again = db.create_conversation("c", "/other", 6).expect_err("exists");
    assert_eq!(again.code(), "STORE_INPUT_INVALID");
    let missing = db.append_conversation_updates("nope", &["{}".into()], None, 6).expect_err("missing");
    assert!(matches!(missing, StoreError::NotFoundId { what: "conversation", .. }), "{missing:?}");
    assert_eq!(missing.code(), "NOT_FOUND");
    let huge = "x".repeat(CONVERSATION_UPDATE_BYTES_MAX + 1);
    let too_big = db.append_conversation_updates("c", &["{}".into(), huge], None, 6).expect_err("too big");
    assert_eq!(too_big.code(), "STORE_INPUT_INVALID");
    assert!(db.conversation_updates("c").expect("updates").is_empty(), "the whole batch was refused");
    assert!(db.set_conversation_mode("nope", ConversationMode::Auto, 1).is_err());
    assert!(db.conversation("nope").expect("read").is_none());
}
