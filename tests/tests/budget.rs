//! `pactum budget set|show|remove` and `negotiate --constraint`, run as a user or script would:
//! a budget on the buyer holds across negotiations (the payment that would exceed it fails with
//! PACT-109 and nothing is held), resets with its period, is shown with what is spent and left,
//! keeps its history; a session's own constraint is judged with the buyer's; bad input is
//! refused with a stable code before anything is written.

mod common;

use common::{Home, assert_fails, assert_ok, json, negotiate_args};
use serde_json::Value;

const T0: &str = "1700000000000";
const DAY_MS: u64 = 86_400_000;

fn failure_code(document: &Value) -> Option<&str> {
    document.pointer("/failure/code").and_then(Value::as_str)
}

fn paid_minor(document: &Value) -> u64 {
    document.pointer("/agreement/price/amount_minor").and_then(Value::as_u64).expect("agreement")
}

#[test]
fn a_buyer_budget_holds_across_negotiations_and_resets_with_its_period() {
    let home = Home::new();
    let shown = home.run(&["budget", "show", "--json"]);
    assert_ok(&shown);
    assert_eq!(json(&shown)["constraints"], serde_json::json!([]));
    assert!(!home.default_db().exists(), "showing writes nothing");

    let set =
        home.run(&["budget", "set", "--amount", "0.50", "--currency", "USD", "--per", "day", "--since", T0, "--json"]);
    assert_ok(&set);
    let set = json(&set);
    assert_eq!(set["set"]["version"], 1);
    assert_eq!(set["set"]["constraint"]["max_amount_minor"], 50);
    assert_eq!(set["set"]["constraint"]["window"]["length_ms"], DAY_MS);

    let mut spent = 0;
    let mut refused = None;
    for seed in ["1", "2", "3", "4", "5", "6", "7", "8"] {
        let output = home.run(&negotiate_args(seed, &[]));
        let document = json(&output);
        match failure_code(&document) {
            None => {
                assert_ok(&output);
                spent += paid_minor(&document);
            }
            // Some seeds end without agreement (round limit); no payment, nothing to count.
            Some(code) if code != "PACT-109" => assert!(document["agreement"].is_null() || code.starts_with("PACT-1")),
            Some(_) => {
                assert_eq!(output.status.code(), Some(3));
                let evidence = document.pointer("/failure/evidence_refs").expect("evidence").to_string();
                assert!(evidence.contains("constraint:agent:buyer:budget"), "{evidence}");
                assert!(document["receipt"].is_null());
                refused = Some(document["session_id"].as_str().expect("id").to_owned());
                break;
            }
        }
    }
    let refused = refused.expect("the budget of 0.50 refuses a third payment of about 0.24");
    assert!(spent > 0 && spent <= 50);

    let shown = home.run(&["budget", "show", "--as-of", "1700000100000", "--json"]);
    assert_ok(&shown);
    let standing = &json(&shown)["constraints"][0]["standing"];
    assert_eq!(standing["spent_minor"], spent);
    assert_eq!(standing["remaining_minor"], 50 - spent);
    let resets = standing.pointer("/window/resets_at_ms").and_then(Value::as_u64).expect("resets");
    assert_eq!(resets, 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS + DAY_MS);

    // The refused session replays, its evidence resolves, and the constellation is sound.
    assert_ok(&home.run(&["session", "replay", &refused]));
    assert_ok(&home.run(&["constellation", "check"]));
    let story = home.run(&["transcript", "replay", &refused, "--json"]);
    assert_ok(&story);
    assert!(json(&story).to_string().contains("refused"), "the story tells the refusal");

    // The next day is a new period.
    let next_day = (1_700_000_000_000 + DAY_MS).to_string();
    let mut args = negotiate_args("9", &[]);
    let clock = args.iter().position(|arg| *arg == "--clock").expect("--clock") + 1;
    args[clock] = &next_day;
    let output = home.run(&args);
    assert_ok(&output);
    assert_eq!(failure_code(&json(&output)), None);
}

#[test]
fn a_removed_budget_stops_refusing_and_its_history_is_kept() {
    let home = Home::new();
    assert_ok(&home.run(&["budget", "set", "--name", "tiny", "--amount", "0.01", "--currency", "USD", "--since", T0]));
    let output = home.run(&negotiate_args("1", &[]));
    assert_eq!(failure_code(&json(&output)), Some("PACT-109"));

    // Raising the limit keeps counting from the first version's start.
    let raised = home.run(&["budget", "set", "--name", "tiny", "--amount", "0.02", "--currency", "USD", "--json"]);
    assert_ok(&raised);
    assert_eq!(json(&raised)["set"]["since_ms"], 1_700_000_000_000_u64);
    assert_eq!(json(&raised)["set"]["version"], 2);

    let removed = home.run(&["budget", "remove", "tiny", "--json"]);
    assert_ok(&removed);
    assert_eq!(json(&removed)["removed"]["version"], 3);
    let output = home.run(&negotiate_args("2", &[]));
    assert_ok(&output);

    let history = home.run(&["budget", "show", "--history", "--json"]);
    assert_ok(&history);
    let history = json(&history);
    assert_eq!(history["constraints"], serde_json::json!([]));
    let versions: Vec<Option<u64>> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|row| row.pointer("/constraint/max_amount_minor").and_then(Value::as_u64))
        .collect();
    assert_eq!(versions, [Some(1), Some(2), None]);
}

#[test]
fn a_session_constraint_is_judged_before_paying() {
    let home = Home::new();
    let expired = home.write_file(
        "expired.json",
        br#"{"type": "temporal", "valid_from_ms": null, "valid_until_ms": 1699999999999, "duration_ms": null}"#,
    );
    let expired = expired.to_str().expect("path");
    let output = home.run(&negotiate_args("1", &["--constraint", expired]));
    let document = json(&output);
    assert_eq!(failure_code(&document), Some("PACT-109"), "{document:#}");
    assert!(document.pointer("/failure/evidence_refs").expect("evidence").to_string().contains("constraint:session:1"));

    let combined = home.write_file(
        "combined.json",
        br#"{"type": "combined", "all": [
            {"type": "budget", "max_amount_minor": 100, "currency": "USD", "window": null},
            {"type": "custom", "id": "example.com/tier", "payload": {"tier": 2}}
        ]}"#,
    );
    let output = home.run(&negotiate_args("2", &["--constraint", combined.to_str().expect("path")]));
    assert_ok(&output);
    let session = json(&output)["session_id"].as_str().expect("id").to_owned();
    let shown = home.run(&["session", "show", &session]);
    assert_ok(&shown);
    let text = String::from_utf8(shown.stdout).expect("utf-8");
    assert!(text.contains("constraints before paying") && text.contains("session:1 allowed"), "{text}");
}

#[test]
fn bad_constraints_are_refused_with_a_code_before_anything_is_written() {
    let home = Home::new();
    assert_fails(&home.run(&["budget", "set"]), 2, "USAGE");
    assert_fails(&home.run(&["budget", "set", "--max-uses", "3", "--per", "0d"]), 2, "USAGE");
    assert_fails(&home.run(&["budget", "set", "--amount", "-1", "--currency", "USD"]), 2, "AMOUNT_INVALID");
    let not_json =
        home.write_file("bad.json", b"{\"type\": \"budget\", \"max_amount_minor\": 1, \"max_amount_minor\": 2}");
    let bad = not_json.to_str().expect("path");
    assert_fails(&home.run(&["budget", "set", "--file", bad]), 2, "CONSTRAINT_INVALID");
    let no_window = home
        .write_file("window.json", br#"{"type": "usage", "max_uses": 1, "window": {"length_ms": 0, "anchor_ms": 0}}"#);
    assert_fails(&home.run(&["budget", "set", "--file", no_window.to_str().expect("path")]), 2, "CONSTRAINT_INVALID");
    assert_fails(&home.run(&negotiate_args("1", &["--constraint", bad])), 2, "CONSTRAINT_INVALID");
    assert!(!home.default_db().exists(), "nothing was written");
    assert_fails(&home.run(&["budget", "remove", "nothing"]), 1, "CONSTRAINT_NOT_FOUND");
    assert_ok(&home.run(&["budget", "set", "--max-uses", "3"]));
    assert_fails(&home.run(&["budget", "remove", "nothing"]), 1, "CONSTRAINT_NOT_FOUND");
    assert_fails(&home.run(&["budget", "show", "--agent", "nobody"]), 2, "AGENT_NOT_FOUND");
    assert_fails(&home.run(&["budget", "set", "--agent", "nobody", "--max-uses", "3"]), 2, "AGENT_NOT_FOUND");
}

/// A spend released behind the transcript's back is named by the constellation check.
#[test]
fn the_check_reconciles_spends_with_transcripts() {
    let home = Home::new();
    assert_ok(&home.run(&["budget", "set", "--max-uses", "100", "--since", T0]));
    let output = home.run(&negotiate_args("1", &[]));
    assert_ok(&output);
    let payment = json(&output).pointer("/agreement/payment_id").and_then(Value::as_str).expect("payment").to_owned();
    assert_ok(&home.run(&["constellation", "check"]));
    let raw = rusqlite::Connection::open(home.default_db()).expect("sqlite");
    raw.execute("UPDATE spends SET released_at_ms = 1 WHERE payment_id = ?1", [&payment]).expect("release");
    drop(raw);
    let check = home.run(&["constellation", "check", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("SPEND_MISMATCH"));
}
