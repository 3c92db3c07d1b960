//! Runtime contracts seen from the command line: a command that does work is an execution
//! (`pactum execution show`), and what it makes is an artifact (`pactum artifact list|show`)
//! produced by that execution, with its parents — the receipt and transcript of a negotiation,
//! a transcript export, an evidence bundle. Reads record nothing and create nothing; bad ids
//! are refused with stable codes; an execution left running by a killed process is marked
//! interrupted by the next command.

mod common;

use common::{Home, assert_fails, assert_ok, json, negotiate_args};
use serde_json::Value;
use sha2::Digest as _;

/// Negotiates (seed 1 completes), returning the session id.
fn negotiated(home: &Home) -> String {
    let output = home.run(&negotiate_args("1", &[]));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["phase"], "completed", "{document}");
    document["session_id"].as_str().expect("session id").to_owned()
}

fn artifacts(home: &Home, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["artifact", "list", "--json"];
    args.extend_from_slice(filters);
    let output = home.run(&args);
    assert_ok(&output);
    json(&output)["artifacts"].as_array().expect("artifacts").clone()
}

fn only(mut list: Vec<Value>, what: &str) -> Value {
    assert_eq!(list.len(), 1, "one {what}: {list:#?}");
    list.remove(0)
}

fn execution(home: &Home, execution_id: &str) -> Value {
    let output = home.run(&["execution", "show", execution_id, "--json"]);
    assert_ok(&output);
    json(&output)
}

fn executions(home: &Home) -> Vec<Value> {
    let output = home.run(&["execution", "list", "--limit", "100", "--json"]);
    assert_ok(&output);
    json(&output)["executions"].as_array().expect("executions").clone()
}

fn transitions(execution: &Value) -> Vec<String> {
    execution["log"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|entry| entry["kind"] == "transition")
        .map(|entry| entry["detail"]["to"].as_str().expect("to").to_owned())
        .collect()
}

#[test]
fn a_negotiation_registers_its_receipt_produced_by_the_negotiate_execution() {
    let home = Home::new();
    let session = negotiated(&home);
    let receipt = only(artifacts(&home, &["--type", "receipt"]), "receipt");
    assert_eq!(receipt["produced_by"]["intent_type"], "negotiate");
    assert_eq!(receipt["lifecycle_state"], "READY");
    assert_eq!(receipt["semantic_descriptor"]["session_id"], session.as_str());
    assert_eq!(receipt["semantic_descriptor"]["receipt_id"], format!("rcpt-{session}"));
    assert_eq!(receipt["materializations"][0]["uri"], format!("session:{session}"));
    let transcript = only(artifacts(&home, &["--type", "transcript"]), "transcript");
    assert_eq!(receipt["parent_artifacts"], serde_json::json!([transcript["artifact_id"]]));
    assert_eq!(transcript["materializations"][0]["uri"], format!("stream:session:{session}"));

    let execution_id = receipt["produced_by"]["execution_id"].as_str().expect("execution id");
    let shown = execution(&home, execution_id);
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["intent"]["intent_type"], "negotiate");
    assert_eq!(shown["session_id"], session.as_str());
    assert_eq!(shown["solution_id"], "cli");
    assert_eq!(shown["intent"]["parameters"]["argv"][0], "negotiate");
    assert_eq!(shown["result"]["exit_code"], 0);
    assert_eq!(transitions(&shown), ["created", "running", "completed"]);
    let made: Vec<_> = shown["artifacts"].as_array().expect("artifacts").to_vec();
    assert_eq!(made, [transcript["artifact_id"].clone(), receipt["artifact_id"].clone()]);
    assert_eq!(only(artifacts(&home, &["--execution", execution_id, "--type", "receipt"]), "receipt"), receipt);

    // `artifact show` resolves the same document; the human forms name the same things.
    let id = receipt["artifact_id"].as_str().expect("id");
    let resolved = home.run(&["artifact", "show", id, "--json"]);
    assert_ok(&resolved);
    assert_eq!(json(&resolved), receipt);
    let human = home.run(&["artifact", "list"]);
    assert_ok(&human);
    assert!(common::stdout(&human).contains(&format!("{id} receipt READY by negotiate {execution_id}")));
    let human = home.run(&["execution", "show", execution_id]);
    assert_ok(&human);
    assert!(common::stdout(&human).contains("(negotiate): completed"), "{}", common::stdout(&human));
}

#[test]
fn exports_and_bundles_are_artifacts_with_their_parents_and_digests() {
    let home = Home::new();
    let session = negotiated(&home);
    let transcript = only(artifacts(&home, &["--type", "transcript"]), "transcript");
    let receipt = only(artifacts(&home, &["--type", "receipt"]), "receipt");

    let out = home.path().join("export.jsonl");
    let exported =
        home.run(&["transcript", "export", &format!("session:{session}"), "--out", out.to_str().expect("path")]);
    assert_ok(&exported);
    let export = only(artifacts(&home, &["--type", "transcript_export"]), "export");
    assert_eq!(export["produced_by"]["intent_type"], "transcript.export");
    assert_eq!(export["parent_artifacts"], serde_json::json!([transcript["artifact_id"]]));
    let bytes = std::fs::read(&out).expect("export");
    let materialization = &export["materializations"][0];
    assert_eq!(materialization["uri"], format!("file:{}", out.display()));
    assert_eq!(materialization["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(materialization["size_bytes"], bytes.len());
    let execution_id = export["produced_by"]["execution_id"].as_str().expect("id");
    let shown = execution(&home, execution_id);
    assert_eq!((shown["status"].as_str(), shown["session_id"].as_str()), (Some("completed"), Some(session.as_str())));

    let dir = home.path().join("bundle");
    let bundled = home.run(&["transcript", "bundle", &session, dir.to_str().expect("path"), "--view", "auditor"]);
    assert_ok(&bundled);
    let bundle = only(artifacts(&home, &["--type", "evidence_bundle"]), "bundle");
    assert_eq!(bundle["produced_by"]["intent_type"], "transcript.bundle");
    let mut parents: Vec<Value> = bundle["parent_artifacts"].as_array().expect("parents").clone();
    parents.sort_by_key(Value::to_string);
    let mut expected = vec![transcript["artifact_id"].clone(), receipt["artifact_id"].clone()];
    expected.sort_by_key(Value::to_string);
    assert_eq!(parents, expected);
    assert_eq!(bundle["semantic_descriptor"]["view"], "auditor");
    let manifest = std::fs::read(dir.join("MANIFEST.json")).expect("manifest");
    assert_eq!(bundle["materializations"][0]["sha256"], hex::encode(sha2::Sha256::digest(&manifest)));

    // Exporting to stdout is a read: no execution, no artifact.
    let before = executions(&home).len();
    assert_ok(&home.run(&["transcript", "export", &format!("session:{session}")]));
    assert_ok(&home.run(&["session", "list"]));
    assert_eq!(executions(&home).len(), before, "reads record nothing");
    assert_eq!(artifacts(&home, &[]).len(), 4);
}

#[test]
fn reads_create_nothing_and_refused_input_records_nothing() {
    let home = Home::new();
    assert!(artifacts(&home, &[]).is_empty());
    assert!(executions(&home).is_empty());
    assert_fails(&home.run(&["execution", "show", "exec-0000000000000000"]), 2, "CONSTELLATION_NOT_FOUND");
    assert_fails(&home.run(&["artifact", "show", "art-0000000000000000"]), 2, "CONSTELLATION_NOT_FOUND");
    // A negotiation refused for its arguments creates no constellation to record it in.
    let refused = home.run(&["negotiate", "weather.data", "--max-price", "-1", "--currency", "USD", "--yes"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(!home.default_db().exists(), "nothing was created");
}

#[test]
fn bad_ids_and_filters_are_refused_with_stable_codes() {
    let home = Home::new();
    negotiated(&home);
    assert_fails(&home.run(&["artifact", "show", "nope"]), 2, "ARTIFACT_ID_INVALID");
    assert_fails(&home.run(&["artifact", "show", "art-0000000000000000"]), 2, "ARTIFACT_NOT_FOUND");
    assert_fails(&home.run(&["artifact", "list", "--state", "gone"]), 2, "ARTIFACT_INVALID");
    assert_fails(&home.run(&["artifact", "list", "--execution", "exec-1"]), 2, "EXECUTION_ID_INVALID");
    assert_fails(&home.run(&["execution", "show", "exec-zz"]), 2, "EXECUTION_ID_INVALID");
    assert_fails(&home.run(&["execution", "show", "exec-0000000000000000"]), 2, "EXECUTION_NOT_FOUND");
    let as_json = home.run(&["execution", "show", "x", "--json"]);
    assert_eq!(as_json.status.code(), Some(2));
    assert_eq!(json(&as_json)["error"]["code"], "EXECUTION_ID_INVALID");
    assert!(artifacts(&home, &["--state", "deleted"]).is_empty(), "states are read in any case");
}

#[test]
fn a_failing_command_is_a_failed_execution_with_its_error() {
    let home = Home::new();
    negotiated(&home);
    assert_fails(&home.run(&["session", "abort", "s-0000000000000000"]), 2, "SESSION_NOT_FOUND");
    let last = executions(&home).pop().expect("an execution");
    assert_eq!(last["intent"]["intent_type"], "session.abort");
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error"]["code"], "SESSION_NOT_FOUND");
    assert_eq!(last["session_id"], "s-0000000000000000");
    let shown = execution(&home, last["execution_id"].as_str().expect("id"));
    assert_eq!(transitions(&shown), ["created", "running", "failed"]);
    assert!(shown["artifacts"].as_array().expect("artifacts").is_empty());
}

#[test]
fn an_execution_left_running_by_a_killed_process_is_marked_interrupted_by_the_next_command() {
    let home = Home::new();
    negotiated(&home);
    let db = home.default_db();
    {
        // What a process killed while running leaves: a running record owned by a dead pid.
        let raw = rusqlite::Connection::open(&db).expect("open");
        raw.execute_batch(
            "INSERT INTO executions (execution_id, intent_type, handler_name, parameters, metadata, tenant,
             solution_id, owner, status, created_at_ms, updated_at_ms)
             VALUES ('exec-00000000000000aa', 'memory.set', 'pactum', '{}', '{}', 't', 'cli',
                     'pid:4194303:1', 'created', 1, 1);
             UPDATE executions SET status = 'running' WHERE execution_id = 'exec-00000000000000aa';",
        )
        .expect("insert");
    }
    let shown = execution(&home, "exec-00000000000000aa");
    assert_eq!((shown["status"].as_str(), shown["interrupted"].as_bool()), (Some("running"), Some(true)));
    // A read leaves it alone; the next command that does work marks it.
    assert_ok(&home.run(&["memory", "set", "scratchpad", "notes"]));
    let shown = execution(&home, "exec-00000000000000aa");
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["error"]["code"], "EXECUTION_INTERRUPTED");
    assert!(shown.get("interrupted").is_none());
}
