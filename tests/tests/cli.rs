//! The `pactum` command line as a user or script meets it: each test runs the real program in a
//! private data home and checks exit codes, stdout and the one-line errors on stderr.

mod common;

use std::path::Path;

use common::{Home, assert_fails, assert_ok, json, stderr, stdout};
use pactum_tests::{SAMPLE_STREAM, write_sample_transcript};
use serde_json::Value;

/// Replaces the Nth (0-based) event line's body text `from` with `to`, leaving hashes alone.
fn edit_event_line(file: &str, event_index: usize, from: &str, to: &str) -> String {
    let mut lines: Vec<String> = file.lines().map(str::to_owned).collect();
    let line = &mut lines[event_index + 1];
    assert!(line.contains(from), "line {event_index} lacks {from}: {line}");
    *line = line.replacen(from, to, 1);
    lines.join("\n") + "\n"
}

#[test]
fn help_and_version() {
    let home = Home::new();
    let help = home.run(&["--help"]);
    assert_ok(&help);
    for word in ["transcript", "constellation", "--constellation", "Exit codes"] {
        assert!(stdout(&help).contains(word), "{word} missing from help");
    }
    let short = home.run(&["-V"]);
    assert_ok(&short);
    assert_eq!(stdout(&short), format!("pactum {}\n", env!("CARGO_PKG_VERSION")));
    let long = home.run(&["--version"]);
    assert_ok(&long);
    assert_eq!(
        stdout(&long),
        format!(
            "pactum {}\nconstellation schema: {}\ntranscript format: pactum-transcript/1\n",
            env!("CARGO_PKG_VERSION"),
            pactum_memory::SCHEMA_VERSION
        )
    );
    // Neither creates a constellation.
    assert!(!home.path().join("home").exists());
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    let output = home.run(&["transcript", "frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unrecognized subcommand"), "{}", stderr(&output));
    let output = home.run(&["--constellation", "bad name", "transcript", "list"]);
    assert_fails(&output, 2, "BAD_CONSTELLATION_NAME");
}

#[test]
fn the_default_constellation_is_created_on_first_use() {
    let home = Home::new();
    let output = home.run(&["constellation", "info", "--json"]);
    assert_ok(&output);
    let info = json(&output);
    assert_eq!(info["path"], home.default_db().display().to_string());
    assert_eq!(info["schema_version"], pactum_memory::SCHEMA_VERSION);
    assert_eq!(info["synchronous"], "NORMAL");
    assert_eq!(info["counts"]["transcripts"], 0);
    assert!(home.default_db().is_file());
}

#[test]
fn constellation_names_and_paths_resolve() {
    let home = Home::new();
    assert_ok(&home.run(&["--constellation", "team-a", "constellation", "info"]));
    assert!(home.path().join("home/constellations/team-a.db").is_file());

    let explicit = home.path().join("elsewhere/mine.db");
    let arg = explicit.display().to_string();
    assert_ok(&home.run(&["--constellation", &arg, "constellation", "info"]));
    assert!(explicit.is_file());

    // The environment variable works like the flag.
    let output =
        home.command().env("PACTUM_CONSTELLATION", "team-b").args(["constellation", "info"]).output().expect("run");
    assert_ok(&output);
    assert!(home.path().join("home/constellations/team-b.db").is_file());

    // Without PACTUM_HOME: XDG_DATA_HOME, then HOME.
    let xdg = home.path().join("xdg");
    let output = home
        .command()
        .env_remove("PACTUM_HOME")
        .env("XDG_DATA_HOME", &xdg)
        .args(["constellation", "info"])
        .output()
        .expect("run");
    assert_ok(&output);
    assert!(xdg.join("pactum/constellations/default.db").is_file());
    let user_home = home.path().join("user");
    let output = home
        .command()
        .env_remove("PACTUM_HOME")
        .env("HOME", &user_home)
        .args(["constellation", "info"])
        .output()
        .expect("run");
    assert_ok(&output);
    assert!(user_home.join(".local/share/pactum/constellations/default.db").is_file());
}

#[test]
fn import_list_show_verify_export_round_trip() {
    let home = Home::new();
    let sample = home.sample_file();
    let sample_arg = sample.display().to_string();

    let output = home.run(&["transcript", "import", &sample_arg, "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output), serde_json::json!({"status": "imported", "id": SAMPLE_STREAM, "events": 7}));

    let output = home.run(&["transcript", "list", "--json"]);
    assert_ok(&output);
    let list = json(&output);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"], SAMPLE_STREAM);
    assert_eq!(list[0]["origin"], "imported");
    assert_eq!(list[0]["events"], 7);

    let output = home.run(&["transcript", "verify", SAMPLE_STREAM, "--json"]);
    assert_ok(&output);
    let report = json(&output);
    assert_eq!(report["valid"], true);
    assert_eq!(report["events_verified"], 7);
    assert_eq!(report["signatures_verified"], 7);
    assert_eq!(report["break"], Value::Null);

    let output = home.run(&["transcript", "show", SAMPLE_STREAM, "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["event_list"].as_array().map(Vec::len), Some(7));

    // Export to stdout and to a file reproduces the imported bytes exactly.
    let output = home.run(&["transcript", "export", SAMPLE_STREAM]);
    assert_ok(&output);
    let original = std::fs::read(&sample).expect("read sample");
    assert_eq!(output.stdout, original);
    let out_file = home.path().join("out/exported.jsonl");
    std::fs::create_dir_all(out_file.parent().expect("parent")).expect("mkdir");
    let out_arg = out_file.display().to_string();
    assert_ok(&home.run(&["transcript", "export", SAMPLE_STREAM, "--out", &out_arg]));
    assert_eq!(std::fs::read(&out_file).expect("read export"), original);

    // Importing the same transcript again changes nothing.
    let output = home.run(&["transcript", "import", &sample_arg, "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["status"], "already_present");
}

#[test]
fn human_output_of_show_and_verify() {
    let home = Home::new();
    let sample = home.sample_file();
    assert_ok(&home.run(&["transcript", "import", &sample.display().to_string()]));
    let show = home.run(&["transcript", "show", SAMPLE_STREAM]);
    assert_ok(&show);
    insta::assert_snapshot!("show_sample", stdout(&show));
    let verify = home.run(&["transcript", "verify", SAMPLE_STREAM]);
    assert_ok(&verify);
    insta::assert_snapshot!("verify_sample", stdout(&verify));
    let list = home.run(&["transcript", "list"]);
    assert_ok(&list);
    insta::assert_snapshot!("list_sample", stdout(&list));
}

#[test]
fn verify_a_file_without_any_database() {
    let home = Home::new();
    let sample = home.sample_file();
    let output = home.run(&["transcript", "verify", &sample.display().to_string(), "--json"]);
    assert_ok(&output);
    let report = json(&output);
    assert_eq!(report["valid"], true);
    assert_eq!(report["source"], "file");
    assert_eq!(report["key_source"], "embedded");
    assert!(!home.path().join("home").exists(), "verifying a file must not create a constellation");
}

#[test]
fn a_price_edited_in_a_file_is_caught_at_its_seq() {
    let home = Home::new();
    let original = std::fs::read_to_string(home.sample_file()).expect("read");
    // Event 4 is the provider's counter at 5 cents; make it 3.
    let tampered = edit_event_line(&original, 4, "\"amount_minor\":5", "\"amount_minor\":3");
    let path = home.write_file("tampered.jsonl", tampered.as_bytes());
    let output = home.run(&["transcript", "verify", &path.display().to_string(), "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["valid"], false);
    assert_eq!(report["break"]["seq"], 4);
    assert_eq!(report["break"]["reason"], "HASH_MISMATCH");
    assert_eq!(report["events_verified"], 4);

    let human = home.run(&["transcript", "verify", &path.display().to_string()]);
    assert_eq!(human.status.code(), Some(1));
    assert!(stdout(&human).contains("TAMPERED at seq 4: HASH_MISMATCH"), "{}", stdout(&human));

    // Importing it is refused and stores nothing.
    let output = home.run(&["transcript", "import", &path.display().to_string()]);
    let line = assert_fails(&output, 1, "TRANSCRIPT_TAMPERED");
    assert!(line.contains("seq 4"), "{line}");
    let list = home.run(&["transcript", "list", "--json"]);
    assert_eq!(json(&list), serde_json::json!([]));
}

#[test]
fn a_file_cut_at_a_line_boundary_is_truncated() {
    let home = Home::new();
    let original = std::fs::read_to_string(home.sample_file()).expect("read");
    let kept: Vec<&str> = original.lines().take(5).collect();
    let path = home.write_file("cut.jsonl", (kept.join("\n") + "\n").as_bytes());
    let output = home.run(&["transcript", "verify", &path.display().to_string(), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["break"]["reason"], "TRUNCATED");
    assert_eq!(report["break"]["seq"], 4);
}

#[test]
fn malformed_files_get_one_line_errors() {
    let home = Home::new();
    let original = std::fs::read(home.sample_file()).expect("read");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("mid-line.jsonl", original[..original.len() - 40].to_vec(), "FILE_MALFORMED", "line 8"),
        ("garbage.jsonl", b"\x00\x01binary\xff\xfe garbage\n".to_vec(), "FILE_MALFORMED", "line 1"),
        ("empty.jsonl", Vec::new(), "FILE_EMPTY", "line 1"),
        (
            "future.jsonl",
            b"{\"event_count\":0,\"format\":\"pactum-transcript/9\",\"head_hash\":null,\"keys\":{},\"stream\":\"x\"}\n"
                .to_vec(),
            "FORMAT_UNSUPPORTED",
            "pactum-transcript/9",
        ),
        (
            "pretty.jsonl",
            String::from_utf8_lossy(&original).replacen("\"format\":", "\"format\": ", 1).into_bytes(),
            "FILE_MALFORMED",
            "canonical",
        ),
    ];
    for (name, bytes, code, needle) in cases {
        let path = home.write_file(name, &bytes);
        let arg = path.display().to_string();
        let line = assert_fails(&home.run(&["transcript", "verify", &arg]), 1, code);
        assert!(line.contains(needle), "{name}: {line}");
        assert_fails(&home.run(&["transcript", "import", &arg]), 1, code);
        let json_output = home.run(&["transcript", "verify", &arg, "--json"]);
        assert_eq!(json(&json_output)["error"]["code"], code, "{name}");
    }
    let list = home.run(&["transcript", "list", "--json"]);
    assert_eq!(json(&list), serde_json::json!([]), "nothing was imported");
}

#[test]
fn verify_with_trusted_keys() {
    let home = Home::new();
    let sample = home.sample_file();
    let sample_arg = sample.display().to_string();
    // Trusting only the buyer: the provider's signatures come from an unknown signer.
    let header: Value =
        serde_json::from_str(std::fs::read_to_string(&sample).expect("read").lines().next().expect("header"))
            .expect("json");
    let buyer_key = header["keys"]["agent:buyer#1"].as_str().expect("key").to_owned();
    let keys = home.write_file("keys.json", serde_json::json!({ "agent:buyer#1": buyer_key }).to_string().as_bytes());
    let output = home.run(&["transcript", "verify", &sample_arg, "--keys", &keys.display().to_string(), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["key_source"], "trusted");
    assert_eq!(report["break"]["reason"], "SIGNER_UNKNOWN");
    assert_eq!(report["break"]["seq"], 2);

    let all = home.write_file("all.json", header["keys"].to_string().as_bytes());
    assert_ok(&home.run(&["transcript", "verify", &sample_arg, "--keys", &all.display().to_string()]));

    let bad = home.write_file("bad.json", b"{\"agent:x#1\": \"not base64!\"}");
    assert_fails(
        &home.run(&["transcript", "verify", &sample_arg, "--keys", &bad.display().to_string()]),
        2,
        "KEYS_FILE_INVALID",
    );
}

/// The review's forgery: keep events 0-2, replace 3-6 by unsigned events with new prices, and
/// recompute every hash and the header, so the file is self-consistent.
fn forge(original: &str) -> (String, String) {
    use pactum_transcripts::Event;
    let mut lines = original.lines();
    let mut header: Value = serde_json::from_str(lines.next().expect("header")).expect("json");
    let original_head = header["head_hash"].as_str().expect("head").to_owned();
    let mut events: Vec<Event> =
        lines.map(|line| Event::from_json(serde_json::from_str(line).expect("json")).expect("event")).collect();
    for index in 3..events.len() {
        let old = events[index].clone();
        let prev = events[index - 1].hash;
        let mut body = old.body.clone();
        if body.get("price").is_some() {
            body["price"]["amount_minor"] = Value::from(1);
        }
        events[index] = Event::seal(old.stream, old.seq, old.kind, body, old.at_ms, prev, None).expect("seal");
    }
    header["head_hash"] = Value::from(events.last().expect("events").hash.to_hex());
    let mut out = pactum_transcripts::canonical::to_canonical_string(&header).expect("canonical") + "\n";
    for event in &events {
        out += &(pactum_transcripts::canonical::to_canonical_string(&event.to_json()).expect("canonical") + "\n");
    }
    (out, original_head)
}

#[test]
fn require_signed_and_an_independent_head_catch_a_self_consistent_forgery() {
    let home = Home::new();
    let sample = home.sample_file();
    let original = std::fs::read_to_string(&sample).expect("read");
    let header: Value = serde_json::from_str(original.lines().next().expect("header")).expect("json");
    let keys = home.write_file("trusted.json", header["keys"].to_string().as_bytes());
    let keys_arg = keys.display().to_string();
    let (forged, original_head) = forge(&original);
    let forged_path = home.write_file("forged.jsonl", forged.as_bytes()).display().to_string();

    // With trusted keys alone, the forgery is self-consistent: it verifies, but says how many
    // events nobody signed.
    let output = home.run(&["transcript", "verify", &forged_path, "--keys", &keys_arg, "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["unsigned_events"], 4);
    // Requiring signatures catches it at the first unsigned event; the untouched sample passes.
    let output = home.run(&["transcript", "verify", &forged_path, "--keys", &keys_arg, "--require-signed", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["break"]["reason"], "SIGNATURE_MISSING");
    assert_eq!(json(&output)["break"]["seq"], 3);
    let sample_arg = sample.display().to_string();
    assert_ok(&home.run(&["transcript", "verify", &sample_arg, "--keys", &keys_arg, "--require-signed"]));
    // An independently obtained head catches it too, even without keys.
    let output = home.run(&["transcript", "verify", &forged_path, "--head", &original_head, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["break"]["reason"], "HEAD_MISMATCH");
    assert_ok(&home.run(&["transcript", "verify", &sample_arg, "--head", &original_head]));
    assert_fails(&home.run(&["transcript", "verify", &sample_arg, "--head", "nothex"]), 2, "USAGE");
}

#[test]
fn export_does_not_overwrite_without_force_and_never_the_constellation() {
    let home = Home::new();
    let db_path = home.path().join("c.db");
    drop(write_sample_transcript(&db_path));
    let db_arg = db_path.display().to_string();
    let existing = home.write_file("existing.jsonl", b"keep me\n");
    let existing_arg = existing.display().to_string();
    let base = ["--constellation", db_arg.as_str(), "transcript", "export", SAMPLE_STREAM, "--out"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| home.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(&run(with(&[&existing_arg])), 2, "DESTINATION_EXISTS");
    assert_eq!(std::fs::read(&existing).expect("read"), b"keep me\n");
    assert_ok(&run(with(&[&existing_arg, "--force"])));
    assert!(std::fs::read_to_string(&existing).expect("read").starts_with("{\"event_count\":7"));
    assert_fails(&run(with(&[&db_arg, "--force"])), 2, "USAGE");
    assert!(pactum_memory::Constellation::open(&db_path).is_ok(), "the constellation is intact");
}

#[test]
fn control_characters_from_a_file_never_reach_the_terminal() {
    let home = Home::new();
    let original = std::fs::read_to_string(home.sample_file()).expect("read");
    // An unknown field whose name carries an escape sequence.
    let hostile = original.replacen("{\"at_ms\"", "{\"\\u001b[2Kx\":1,\"at_ms\"", 1);
    let path = home.write_file("hostile.jsonl", hostile.as_bytes());
    let output = home.run(&["transcript", "verify", &path.display().to_string()]);
    let line = assert_fails(&output, 1, "FILE_MALFORMED");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

#[test]
fn tampering_inside_the_constellation_is_reported_with_seq_and_reason() {
    let home = Home::new();
    let db_path = home.path().join("c.db");
    drop(write_sample_transcript(&db_path));
    {
        let raw = rusqlite_connection(&db_path);
        raw.execute_batch(
            "DROP TRIGGER transcript_events_no_update;
             UPDATE transcript_events SET body = replace(body, '\"amount_minor\":4', '\"amount_minor\":2') WHERE seq = 3;",
        )
        .expect("tamper");
    }
    let db_arg = db_path.display().to_string();
    let output = home.run(&["--constellation", &db_arg, "transcript", "verify", SAMPLE_STREAM, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["break"]["seq"], 3);
    assert_eq!(report["break"]["reason"], "HASH_MISMATCH");

    // A link broken behind the store's back is named too, not just "corrupt".
    {
        let raw = rusqlite_connection(&db_path);
        raw.execute("UPDATE transcript_events SET prev = zeroblob(32) WHERE seq = 1", []).expect("tamper");
    }
    let output = home.run(&["--constellation", &db_arg, "transcript", "verify", SAMPLE_STREAM, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["break"]["reason"], "PREV_MISMATCH");
    assert_eq!(json(&output)["break"]["seq"], 1);

    // An equivalent rewrite of a stored body (7 -> 7.0) is a change to the record, and a body that
    // no longer parses is named at its seq rather than aborting the audit.
    {
        let raw = rusqlite_connection(&db_path);
        raw.execute(
            "UPDATE transcript_events SET prev = (SELECT hash FROM transcript_events WHERE seq = 0) WHERE seq = 1",
            [],
        )
        .expect("restore link");
        raw.execute(
            "UPDATE transcript_events SET body = replace(body, '\"amount_minor\":7', '\"amount_minor\":7.0') WHERE seq = 2",
            [],
        )
        .expect("tamper");
    }
    let output = home.run(&["--constellation", &db_arg, "transcript", "verify", SAMPLE_STREAM, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["break"]["reason"], "EVENT_MALFORMED", "{}", stdout(&output));
    assert_eq!(json(&output)["break"]["seq"], 2);
    {
        let raw = rusqlite_connection(&db_path);
        raw.execute("UPDATE transcript_events SET body = '{not json' WHERE seq = 2", []).expect("tamper");
    }
    let output = home.run(&["--constellation", &db_arg, "transcript", "verify", SAMPLE_STREAM, "--json"]);
    assert_eq!(json(&output)["break"]["reason"], "EVENT_MALFORMED");
    assert_eq!(json(&output)["break"]["seq"], 2);

    // Export still writes what is there, for the auditor, but says it does not verify.
    let output = home.run(&["--constellation", &db_arg, "transcript", "export", SAMPLE_STREAM]);
    assert_fails(&output, 1, "TRANSCRIPT_TAMPERED");
    // The header and the events before the unreadable one.
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);
}

/// Direct SQLite access, to tamper behind Pactum's back.
fn rusqlite_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("sqlite")
}

#[test]
fn commands_that_only_read_never_create_a_constellation() {
    let home = Home::new();
    let output = home.run(&["transcript", "list", "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output), serde_json::json!([]));
    let line = assert_fails(&home.run(&["transcript", "verify", "no-such-id"]), 2, "TRANSCRIPT_NOT_FOUND");
    assert!(line.contains("no constellation"), "{line}");
    assert_fails(&home.run(&["--constellation", "typo", "transcript", "show", "x"]), 2, "TRANSCRIPT_NOT_FOUND");
    assert_fails(&home.run(&["constellation", "backup", "b.db"]), 2, "CONSTELLATION_NOT_FOUND");
    assert!(!home.path().join("home").exists(), "nothing was created");
}

#[test]
fn unknown_ids_exit_2() {
    let home = Home::new();
    assert_ok(&home.run(&["constellation", "info"]));
    for args in [
        &["transcript", "show", "no-such-id"][..],
        &["transcript", "verify", "no-such-id"],
        &["transcript", "export", "no-such-id"],
    ] {
        let line = assert_fails(&home.run(args), 2, "TRANSCRIPT_NOT_FOUND");
        assert!(line.contains("no-such-id"), "{line}");
    }
    let output = home.run(&["transcript", "import", "missing.jsonl"]);
    assert_fails(&output, 2, "IO_ERROR");
}

#[test]
fn a_file_that_is_not_a_constellation_is_refused_and_untouched() {
    let home = Home::new();
    let path = home.write_file("notes.db", b"my notes\n");
    let arg = path.display().to_string();
    let line = assert_fails(&home.run(&["--constellation", &arg, "transcript", "list"]), 2, "STORE_NOT_CONSTELLATION");
    assert!(line.contains("not an SQLite database"), "{line}");
    assert_eq!(std::fs::read(&path).expect("read"), b"my notes\n");
    let siblings: Vec<_> =
        std::fs::read_dir(home.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert!(!siblings.iter().any(|n| n.to_string_lossy().starts_with("notes.db-")), "{siblings:?}");
}

#[test]
fn a_newer_schema_is_refused_and_untouched() {
    let home = Home::new();
    let path = home.path().join("future.db");
    drop(pactum_memory::Constellation::open(&path).expect("create"));
    rusqlite_connection(&path).pragma_update(None, "user_version", 99).expect("pragma");
    let before = std::fs::read(&path).expect("read");
    let arg = path.display().to_string();
    let line = assert_fails(&home.run(&["--constellation", &arg, "constellation", "info"]), 2, "STORE_SCHEMA_TOO_NEW");
    assert!(line.contains("schema version 99"), "{line}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn an_unwritable_location_is_a_clear_error() {
    let home = Home::new();
    // A regular file where a directory should be: no process, root included, can create under it.
    let blocker = home.write_file("blocker", b"x");
    let arg = blocker.join("sub/c.db").display().to_string();
    let line = assert_fails(&home.run(&["--constellation", &arg, "transcript", "list"]), 2, "IO_ERROR");
    assert!(line.contains("blocker"), "{line}");
    // PACTUM_HOME under a file, too.
    let output =
        home.command().env("PACTUM_HOME", blocker.join("home")).args(["transcript", "list"]).output().expect("run");
    assert_fails(&output, 2, "IO_ERROR");
    assert_eq!(std::fs::read(&blocker).expect("read"), b"x");
}

#[test]
fn backup_from_the_command_line() {
    let home = Home::new();
    let db_path = home.path().join("c.db");
    drop(write_sample_transcript(&db_path));
    let db_arg = db_path.display().to_string();
    let dest = home.path().join("backup.db");
    let dest_arg = dest.display().to_string();
    let output = home.run(&["--constellation", &db_arg, "constellation", "backup", &dest_arg, "--json"]);
    assert_ok(&output);
    assert!(json(&output)["bytes"].as_u64().unwrap_or(0) > 0);
    let output = home.run(&["--constellation", &dest_arg, "transcript", "verify", SAMPLE_STREAM]);
    assert_ok(&output);
    assert_fails(
        &home.run(&["--constellation", &db_arg, "constellation", "backup", &dest_arg]),
        2,
        "DESTINATION_EXISTS",
    );
}

#[test]
fn errors_are_json_too_when_asked() {
    let home = Home::new();
    let output = home.run(&["transcript", "show", "nope", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(json(&output)["error"]["code"], "TRANSCRIPT_NOT_FOUND");
}

#[test]
fn providers_list_shows_the_builtin_directory() {
    let home = Home::new();
    let output = home.run(&["providers", "list"]);
    assert_ok(&output);
    insta::assert_snapshot!("providers_list", stdout(&output));
    let output = home.run(&["providers", "list", "--json"]);
    assert_ok(&output);
    let providers = json(&output);
    assert_eq!(providers.as_array().map(Vec::len), Some(5));
    assert_eq!(providers[0]["id"], "nimbus-weather");
    assert_eq!(providers[0]["reference_price"], serde_json::json!({"amount_minor": 6, "currency": "USD"}));
    assert!(!home.path().join("home").exists(), "listing providers touches no constellation");
}

#[test]
fn a_custom_directory_is_used_and_a_bad_one_refused() {
    let home = Home::new();
    let custom = home.write_file(
        "mine.toml",
        b"format = \"pactum-directory/1\"\n[[provider]]\nid = \"solo\"\nname = \"Solo\"\nintent_types = [\"maps.tiles\"]\n\
          reference_price = { amount = \"500\", currency = \"JPY\" }\nfloor_percent = 90\nconcession = \"eager\"\n\
          concession_percent = 3\nlatency_ms = { base = 5, jitter = 0 }\n\
          failures = { timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }\n",
    );
    let custom_arg = custom.display().to_string();
    let output = home.run(&["--directory", &custom_arg, "providers", "list", "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)[0]["id"], "solo");
    let output =
        home.command().env("PACTUM_DIRECTORY", &custom).args(["providers", "list", "--json"]).output().expect("run");
    assert_eq!(json(&output)[0]["reference_price"]["currency"], "JPY");

    let bad = home.write_file("bad.toml", b"format = \"pactum-directory/1\"\n[[provider]]\nid = \"x\"\n");
    let line = assert_fails(
        &home.run(&["--directory", &bad.display().to_string(), "providers", "list"]),
        2,
        "DIRECTORY_INVALID",
    );
    assert!(line.contains("line 2") && line.contains("missing field `name`"), "{line}");
    let line = assert_fails(&home.run(&["--directory", "no-such.toml", "providers", "list"]), 2, "DIRECTORY_INVALID");
    assert!(line.contains("cannot open"), "{line}");
}

#[test]
fn agents_list_shows_public_identities_only() {
    let home = Home::new();
    let output = home.run(&["agents", "list", "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output), serde_json::json!([]));
    assert!(!home.path().join("home").exists(), "listing agents creates nothing");

    let db_path = home.path().join("c.db");
    let db = std::sync::Arc::new(pactum_memory::Constellation::open(&db_path).expect("open"));
    let buyer = pactum_runtime::ensure_default_buyer(&db, [0x5A; 32], 1).expect("buyer");
    drop(db);
    let db_arg = db_path.display().to_string();
    let output = home.run(&["--constellation", &db_arg, "agents", "list", "--json"]);
    assert_ok(&output);
    let agents = json(&output);
    assert_eq!(agents[0]["id"], "buyer");
    assert_eq!(agents[0]["key_id"], "agent:buyer#1");
    let text = stdout(&output) + &stdout(&home.run(&["--constellation", &db_arg, "agents", "list"]));
    // The secret seed (0x5A repeated) appears in no encoding.
    let secret_b64 = "WlpaWlpa";
    assert!(!text.contains(secret_b64) && !text.to_lowercase().contains("5a5a5a"), "{text}");
    assert!(text.contains(&pactum_transcripts::public_key_to_base64url(
        &pactum_transcripts::VerifyingKey::from_bytes(&buyer.public_key).expect("key")
    )));
}

#[test]
fn balance_lists_accounts_and_zero_totals() {
    let home = Home::new();
    let output = home.run(&["balance", "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["accounts"], serde_json::json!([]));
    assert!(!home.path().join("home").exists(), "balance creates nothing");

    let db_path = home.path().join("c.db");
    let db = std::sync::Arc::new(pactum_memory::Constellation::open(&db_path).expect("open"));
    let usd = pactum_runtime::Currency::parse("USD").expect("USD");
    pactum_runtime::fund_wallet(&db, "buyer", pactum_runtime::Money::from_minor(1_000, usd).expect("amount"), "f", 1)
        .expect("fund");
    let rail = pactum_runtime::LedgerRail::new(std::sync::Arc::clone(&db));
    let payment = pactum_runtime::PaymentRequest {
        payment_id: "ses-1".into(),
        payer: "buyer".into(),
        payee: "nimbus-weather".into(),
        amount: pactum_runtime::Money::from_minor(5, usd).expect("amount"),
    };
    use pactum_runtime::Rail as _;
    rail.prepare(&payment, 2).expect("prepare");
    rail.commit(&payment, 3).expect("commit");
    drop(db);
    let db_arg = db_path.display().to_string();
    let output = home.run(&["--constellation", &db_arg, "balance"]);
    assert_ok(&output);
    insta::assert_snapshot!("balance", stdout(&output));
    let output = home.run(&["--constellation", &db_arg, "balance", "--json"]);
    let document = json(&output);
    assert_eq!(document["sound"], true);
    assert_eq!(document["totals"], serde_json::json!([{"currency": "USD", "sum_minor": 0}]));
}

#[test]
fn constellation_check_names_every_problem() {
    let home = Home::new();
    let db_path = home.path().join("c.db");
    let db = write_sample_transcript(&db_path);
    let usd = pactum_runtime::Currency::parse("USD").expect("USD");
    pactum_runtime::fund_wallet(&db, "buyer", pactum_runtime::Money::from_minor(1_000, usd).expect("amount"), "f", 1)
        .expect("fund");
    drop(db);
    let db_arg = db_path.display().to_string();
    let output = home.run(&["--constellation", &db_arg, "constellation", "check", "--json"]);
    assert_ok(&output);
    let report = json(&output);
    assert_eq!(report["sound"], true);
    assert_eq!((report["transcripts_checked"].as_u64(), report["events_checked"].as_u64()), (Some(1), Some(7)));
    assert_eq!(report["accounts_checked"], 2);

    // Tamper with a transcript and with the ledger behind Pactum's back.
    {
        let raw = rusqlite_connection(&db_path);
        raw.execute_batch(
            "DROP TRIGGER transcript_events_no_update;
             UPDATE transcript_events SET body = replace(body, '\"amount_minor\":4', '\"amount_minor\":3') WHERE seq = 3;
             UPDATE ledger_accounts SET balance_minor = balance_minor + 7 WHERE account_id = 'wallet:buyer:USD';",
        )
        .expect("tamper");
    }
    let output = home.run(&["--constellation", &db_arg, "constellation", "check", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["sound"], false);
    let codes: Vec<&str> =
        report["problems"].as_array().expect("problems").iter().filter_map(|p| p["code"].as_str()).collect();
    assert_eq!(codes, ["HASH_MISMATCH", "LEDGER_UNBALANCED", "LEDGER_BALANCE_MISMATCH"]);
    let human = home.run(&["--constellation", &db_arg, "constellation", "check"]);
    assert_eq!(human.status.code(), Some(1));
    assert!(stdout(&human).contains("3 problems"), "{}", stdout(&human));
    // Checking never creates a constellation.
    assert_fails(&home.run(&["constellation", "check"]), 2, "CONSTELLATION_NOT_FOUND");
}
