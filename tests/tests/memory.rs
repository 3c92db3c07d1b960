//! `pactum memory` as a person or script runs it: the default blocks, every verb, the
//! preferences the negotiation takes its defaults from, the outcomes log it appends to, a merge
//! of two processes' edits, export and import, and bad input that changes nothing.

mod common;

use common::{Home, assert_fails, assert_ok, json, stdout};
use serde_json::Value;

const CLOCK: &str = "1800000000000";

fn versions(home: &Home, label: &str) -> Vec<Value> {
    let output = home.run(&["memory", "log", label, "--json"]);
    assert_ok(&output);
    json(&output)["versions"].as_array().expect("versions").clone()
}

fn content(home: &Home, spec: &str) -> String {
    let output = home.run(&["memory", "show", spec, "--json"]);
    assert_ok(&output);
    json(&output)["content"].as_str().expect("content").to_owned()
}

/// Changes a stored version of the scratchpad behind Pactum's back (`assignment` is SQL).
fn tamper_scratchpad(home: &Home, assignment: &str, seq: u64) {
    let raw = rusqlite::Connection::open(home.default_db()).expect("open");
    raw.execute_batch(&format!(
        "DROP TRIGGER memory_versions_no_update;
         UPDATE memory_versions SET {assignment}
         WHERE seq = {seq} AND block_id = (SELECT block_id FROM memory_blocks WHERE label = 'scratchpad');"
    ))
    .expect("tamper");
}

#[test]
fn reading_creates_nothing_and_the_first_change_creates_the_default_blocks() {
    let home = Home::new();
    for args in [&["memory", "list"][..], &["memory", "list", "--json"]] {
        assert_ok(&home.run(args));
    }
    assert_fails(&home.run(&["memory", "show", "persona"]), 2, "CONSTELLATION_NOT_FOUND");
    assert!(!home.default_db().exists(), "reading created a constellation");
    assert_ok(&home.run(&["memory", "append", "scratchpad", "first note"]));
    let output = home.run(&["memory", "list", "--json"]);
    assert_ok(&output);
    let labels: Vec<String> = json(&output)
        .as_array()
        .expect("list")
        .iter()
        .map(|b| b["label"].as_str().expect("label").to_owned())
        .collect();
    assert_eq!(labels, ["outcomes", "partner", "persona", "preferences", "scratchpad", "tasks"]);
    let text = stdout(&home.run(&["memory", "list"]));
    assert!(text.contains("preferences              core      preferences"), "{text}");
}

#[test]
fn negotiate_takes_its_defaults_from_preferences_and_logs_the_outcome() {
    let home = Home::new();
    let preferences = r#"{"default_max_price_minor": 10, "default_currency": "USD", "default_strategy": "urgent",
                          "blocked_providers": ["nimbus-weather"], "preferred_providers": ["stratus-weather"]}"#;
    assert_ok(&home.run(&["memory", "set", "preferences", preferences, "-m", "weather budget"]));
    let output = home.run(&["negotiate", "weather.data", "--yes", "--seed", "7", "--clock", CLOCK, "--json"]);
    assert_ok(&output);
    let result = json(&output);
    let transcript = result["transcript_id"].as_str().expect("transcript").to_owned();
    let export = home.run(&["transcript", "export", &transcript]);
    assert_ok(&export);
    let created: Value = serde_json::from_str(stdout(&export).lines().nth(1).expect("first event")).expect("json");
    let body = &created["body"];
    assert_eq!(body["strategy"], "urgent");
    assert_eq!(body["intent"]["max_price"]["amount_minor"], 10);
    assert_eq!(body["policy"]["blocked_providers"], serde_json::json!(["nimbus-weather"]));
    assert_eq!(body["preferences"]["source"], "memory:buyer/preferences@2");
    assert_eq!(
        body["preferences"]["arguments"],
        serde_json::json!({"max_price": null, "currency": null, "strategy": null})
    );
    assert_eq!(body["preferences"]["preferred_providers"], serde_json::json!(["stratus-weather"]));

    // Explicit arguments win, and are recorded next to the preferences.
    let output = home.run(&[
        "negotiate",
        "weather.data",
        "--yes",
        "--seed",
        "8",
        "--clock",
        CLOCK,
        "--strategy",
        "baseline",
        "--max-price",
        "0.07",
        "--currency",
        "USD",
        "--json",
    ]);
    assert_ok(&output);
    let transcript = json(&output)["transcript_id"].as_str().expect("transcript").to_owned();
    let export = stdout(&home.run(&["transcript", "export", &transcript]));
    let created: Value = serde_json::from_str(export.lines().nth(1).expect("first event")).expect("json");
    assert_eq!(created["body"]["strategy"], "baseline");
    assert_eq!(created["body"]["intent"]["max_price"]["amount_minor"], 7);
    assert_eq!(created["body"]["preferences"]["arguments"]["strategy"], "baseline");

    // Each finished negotiation is one entry in the outcomes log, appended by the system.
    let log = home.run(&["memory", "show", "outcomes", "--json"]);
    assert_ok(&log);
    let entries = json(&log)["value"].as_array().expect("entries").clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["session"], result["session_id"]);
    assert!(versions(&home, "outcomes").iter().take(2).all(|v| v["author"] == "system" && v["op"] == "log"));
    // The replay of a session that took preferences agrees with the recording.
    let replay = home.run(&["session", "replay", result["session_id"].as_str().expect("id"), "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);
}

#[test]
fn without_a_price_or_preferences_negotiate_says_how_to_give_one() {
    let home = Home::new();
    let line = assert_fails(&home.run(&["negotiate", "weather.data", "--yes"]), 2, "USAGE");
    assert!(line.contains("pactum memory set preferences"), "{line}");
    assert!(!home.default_db().exists(), "nothing written");
}

#[test]
fn set_append_show_log_diff_and_rollback_a_text_block() {
    let home = Home::new();
    assert_ok(&home.run(&["memory", "set", "scratchpad", "first line"]));
    assert_ok(&home.run(&["memory", "append", "scratchpad", "second line", "-m", "more"]));
    let bad = home.run(&["memory", "set", "scratchpad", "oops, everything replaced"]);
    assert_ok(&bad);
    assert!(stdout(&bad).contains("-first line"), "the change is shown as a diff: {}", stdout(&bad));
    assert_eq!(content(&home, "scratchpad@3"), "first line\nsecond line");
    let diff = home.run(&["memory", "diff", "scratchpad", "3", "4"]);
    assert_ok(&diff);
    assert_eq!(
        stdout(&diff),
        "--- scratchpad@3\n+++ scratchpad@4\n@@ -1,2 +1 @@\n-first line\n-second line\n\\ No newline at end of file\n+oops, everything replaced\n\\ No newline at end of file\n"
    );
    let rollback = home.run(&["memory", "rollback", "scratchpad", "3", "--json"]);
    assert_ok(&rollback);
    assert_eq!(json(&rollback)["version"]["version"], 5);
    assert_eq!(content(&home, "scratchpad"), "first line\nsecond line");
    let log = versions(&home, "scratchpad");
    let ops: Vec<&str> = log.iter().map(|v| v["op"].as_str().expect("op")).collect();
    assert_eq!(ops, ["rollback", "set", "append", "set", "create"]);
    assert_eq!(log[2]["message"], "more");
    assert_eq!(content(&home, "scratchpad@4"), "oops, everything replaced", "history is kept");
}

#[test]
fn permissions_limits_and_templates_refuse_with_their_codes_and_change_nothing() {
    let home = Home::new();
    // The persona is read_only to the agent itself; the outcomes log takes no one's writes.
    let line = assert_fails(
        &home.run(&["memory", "set", "persona", r#"{"name":"Zed"}"#, "--as-agent"]),
        2,
        "MEMORY_PERMISSION_DENIED",
    );
    assert_eq!(
        line,
        "error[MEMORY_PERMISSION_DENIED]: agent:buyer has read_only permission on block \"persona\"; set needs read_write"
    );
    let line = assert_fails(&home.run(&["memory", "append", "outcomes", "{}"]), 2, "MEMORY_PERMISSION_DENIED");
    assert!(line.contains("rolling log: only the system appends to it"), "{line}");
    assert_ok(&home.run(&["memory", "create", "motto", "--limit", "10", "--permission", "append"]));
    let line = assert_fails(&home.run(&["memory", "set", "motto", "eleven char"]), 2, "MEMORY_LIMIT_EXCEEDED");
    assert_eq!(
        line,
        "error[MEMORY_LIMIT_EXCEEDED]: block \"motto\" holds at most 10 characters; this write would make it 11"
    );
    assert_ok(&home.run(&["memory", "append", "motto", "ok", "--as-agent"]));
    let line =
        assert_fails(&home.run(&["memory", "rollback", "motto", "1", "--as-agent"]), 2, "MEMORY_PERMISSION_DENIED");
    assert!(line.ends_with("rollback needs read_write"), "{line}");
    let line = assert_fails(
        &home.run(&["memory", "set", "preferences", r#"{"default_strategy": "greedy"}"#]),
        2,
        "MEMORY_TEMPLATE_INVALID",
    );
    assert!(line.contains("must be one of baseline, banded, urgent"), "{line}");
    assert_fails(&home.run(&["memory", "show", "nope"]), 2, "MEMORY_BLOCK_NOT_FOUND");
    let line = assert_fails(&home.run(&["memory", "show", "motto@9"]), 2, "MEMORY_VERSION_NOT_FOUND");
    assert!(line.ends_with("its versions are 1 to 2"), "{line}");
    assert_fails(&home.run(&["memory", "diff", "motto", "1", "3"]), 2, "MEMORY_VERSION_NOT_FOUND");
    assert_fails(&home.run(&["memory", "list", "--agent", "nobody"]), 2, "NOT_FOUND");
    assert_eq!(versions(&home, "motto").len(), 2);
    assert_eq!(versions(&home, "persona").len(), 1);
}

#[test]
fn edit_opens_the_editor_and_merges_what_another_process_wrote_meanwhile() {
    let home = Home::new();
    assert_ok(&home.run(&["memory", "set", "scratchpad", "one\ntwo\nthree\n"]));
    // The "editor" changes line one, and while it is open another process (the agent itself)
    // changes line three.
    let editor = format!(
        "sh -c '\"{}\" memory set scratchpad \"one\ntwo\nTHREE\n\" --as-agent >/dev/null && sed -i s/one/ONE/ \"$1\"' sh",
        env!("CARGO_BIN_EXE_pactum-under-test")
    );
    let output = home
        .command()
        .args(["memory", "edit", "scratchpad"])
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .output()
        .expect("run");
    assert_ok(&output);
    assert!(stdout(&output).contains("made on version 2 and merged"), "{}", stdout(&output));
    assert_eq!(content(&home, "scratchpad"), "ONE\ntwo\nTHREE\n");
    let log = versions(&home, "scratchpad");
    assert_eq!(
        log.iter()
            .take(2)
            .map(|v| (v["author"].as_str().expect("a"), v["op"].as_str().expect("o")))
            .collect::<Vec<_>>(),
        [("partner", "edit"), ("agent:buyer", "set")]
    );
    assert_eq!(log[0]["merged_from"], 2);
    // A failing editor changes nothing.
    let output = home
        .command()
        .args(["memory", "edit", "scratchpad"])
        .env("EDITOR", "false")
        .env_remove("VISUAL")
        .output()
        .expect("run");
    assert_fails(&output, 2, "EDITOR_FAILED");
    assert_eq!(versions(&home, "scratchpad").len(), 4);
}

#[test]
fn export_and_import_keep_every_version_and_its_metadata() {
    let home = Home::new();
    assert_ok(&home.run(&["memory", "set", "partner", r#"{"name": "Sam", "timezone": "Europe/Paris"}"#]));
    assert_ok(&home.run(&[
        "memory",
        "set",
        "partner",
        r#"{"name": "Sam", "timezone": "Europe/Paris", "notes": "prefers EUR"}"#,
        "-m",
        "learnt",
    ]));
    assert_ok(&home.run(&["memory", "rollback", "partner", "2"]));
    let file = home.path().join("partner.json");
    let file_text = file.to_str().expect("utf-8");
    assert_ok(&home.run(&["memory", "export", "partner", "--out", file_text]));
    assert_fails(&home.run(&["memory", "export", "partner", "--out", file_text]), 2, "DESTINATION_EXISTS");

    // Into the constellation it came from: the same block, nothing new.
    let output = home.run(&["memory", "import", file_text, "--json"]);
    assert_ok(&output);
    assert_eq!(
        (json(&output)["created"].clone(), json(&output)["added"].clone()),
        (Value::Bool(false), Value::from(0))
    );

    // Another constellation has its own partner block: the import needs another label there.
    let other = Home::new();
    let line = assert_fails(&other.run(&["memory", "import", file_text]), 2, "MEMORY_LABEL_TAKEN");
    assert!(line.contains("--label"), "{line}");
    let output = other.run(&["memory", "import", file_text, "--label", "partner-copy", "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["created"], true);
    assert_eq!(json(&output)["added"], 4);
    let theirs = versions(&home, "partner");
    let ours = versions(&other, "partner-copy");
    assert_eq!(theirs, ours, "every version with its author, op, message, time and content hash");
    let bad = other.write_file("bad.json", b"{\"format\": \"pactum-memory-block/1\"}");
    assert_fails(&other.run(&["memory", "import", bad.to_str().expect("utf-8")]), 1, "MEMORY_IMPORT_INVALID");
}

#[test]
fn archival_passages_are_searched_by_relevance() {
    let home = Home::new();
    for text in [
        "stratus-weather was slow on Mondays",
        "vault-blob storage is cheap",
        "stratus-weather weather data is accurate",
    ] {
        assert_ok(&home.run(&["memory", "archive", text]));
    }
    let output = home.run(&["memory", "search", "stratus weather", "--json"]);
    assert_ok(&output);
    let found = json(&output);
    assert_eq!(found.as_array().expect("list").len(), 2);
    assert!(found[0]["text"].as_str().expect("text").contains("weather data"), "{found}");
    assert_fails(&home.run(&["memory", "search", "--", "---"]), 2, "MEMORY_INPUT_INVALID");
}

#[test]
fn a_corrupt_update_is_reported_and_every_version_still_reads() {
    let home = Home::new();
    assert_ok(&home.run(&["memory", "set", "scratchpad", "kept"]));
    assert_ok(&home.run(&["memory", "set", "scratchpad", "kept too"]));
    tamper_scratchpad(&home, "update_blob = x'deadbeef'", 3);
    let line = assert_fails(&home.run(&["memory", "set", "scratchpad", "new"]), 1, "MEMORY_CORRUPT");
    assert!(line.contains("the update of version 3 does not load"), "{line}");
    assert_eq!(content(&home, "scratchpad@2"), "kept");
    assert_eq!(content(&home, "scratchpad"), "kept too");
    assert_eq!(versions(&home, "scratchpad").len(), 3);
    // The constellation check names the block.
    let check = home.run(&["constellation", "check", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    let report = json(&check);
    assert_eq!(report["problems"][0]["area"], "memory");
    assert_eq!(report["problems"][0]["subject"], "buyer/scratchpad");
    assert_eq!(report["problems"][0]["code"], "MEMORY_CORRUPT");
}

#[test]
fn the_constellation_check_replays_every_version_of_every_block() {
    let home = Home::new();
    assert_ok(&home.run(&["memory", "set", "scratchpad", "a"]));
    assert_ok(&home.run(&["memory", "append", "tasks", "pay the bill"]));
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
    let report = json(&check);
    assert_eq!(
        (report["memory_blocks_checked"].clone(), report["memory_versions_checked"].clone()),
        (Value::from(6), Value::from(8))
    );
    // Stored content that no longer matches its hash is found too.
    tamper_scratchpad(&home, "splice = x'000062'", 2);
    let check = home.run(&["constellation", "check", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        json(&check)["problems"][0]["detail"].as_str().expect("detail").contains("version 2"),
        "{}",
        stdout(&check)
    );
}
