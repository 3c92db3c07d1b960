//! Several parties from the command line: `negotiate --coalition` (buyers pooling one purchase),
//! `negotiate --broker` (buyer → broker → provider) and `negotiate --parallel` (several sessions
//! at once in one process).

mod common;

use common::{Home, assert_fails, assert_ok, json, stdout};

const CLOCK: &str = "1700000000000";

fn negotiate<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["negotiate", "compute.inference", "--max-price", "0.30", "--currency", "USD"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_coalition_settles_in_parts_and_copies_of_one_constellation_record_identical_bytes() {
    let home = Home::new();
    assert_ok(&home.run(&["constellation", "info"]));
    let copies: Vec<String> = (0..3)
        .map(|i| {
            let path = home.path().join(format!("copy-{i}.db"));
            assert_ok(&home.run(&["constellation", "backup", path.to_str().expect("utf-8")]));
            path.display().to_string()
        })
        .collect();
    let run_and_export = |db: &str, seed: &str| {
        let mut args = vec!["--constellation", db];
        args.extend(negotiate(&[
            "--seed",
            seed,
            "--clock",
            CLOCK,
            "--yes",
            "--json",
            "--coalition",
            "alice=2",
            "--coalition",
            "bob=3",
        ]));
        let output = home.run(&args);
        assert_ok(&output);
        let document = json(&output);
        assert_eq!(document["phase"], "completed");
        assert_eq!(document["receipt"]["coalition"]["lead"], "buyer");
        let transcript = document["transcript_id"].as_str().expect("id").to_owned();
        let session_id = document["session_id"].as_str().expect("id").to_owned();
        let replay = home.run(&["--constellation", db, "session", "replay", &session_id, "--json"]);
        assert_eq!(json(&replay)["consistent"], true);
        let check = home.run(&["--constellation", db, "constellation", "check", "--json"]);
        assert_ok(&check);
        let story = home.run(&["--constellation", db, "transcript", "replay", &transcript]);
        assert_ok(&story);
        assert!(stdout(&story).contains("led a coalition"), "{}", stdout(&story));
        let export = home.run(&["--constellation", db, "transcript", "export", &transcript]);
        assert_ok(&export);
        export.stdout
    };
    let first = run_and_export(&copies[0], "4");
    let second = run_and_export(&copies[1], "4");
    assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second), "byte-identical exports");
    assert_ne!(first, run_and_export(&copies[2], "6"), "another seed gives another transcript");
}

#[test]
fn a_malformed_coalition_member_writes_nothing() {
    let home = Home::new();
    for bad in ["alice", "alice=0", "alice=x", "=2"] {
        let output = home.run(&negotiate(&["--seed", "4", "--yes", "--coalition", bad]));
        assert_fails(&output, 2, "COALITION_INVALID");
    }
    assert!(!home.default_db().exists(), "a constellation was created");
}

#[test]
fn parallel_sessions_each_print_their_outcome_and_the_constellation_checks() {
    let home = Home::new();
    let output = home.run(&negotiate(&["--seed", "4", "--clock", CLOCK, "--yes", "--json", "--parallel", "8"]));
    let document = json(&output);
    let sessions = document.as_array().expect("an array");
    assert_eq!(sessions.len(), 8);
    let mut ids: Vec<&str> = sessions.iter().map(|s| s["session_id"].as_str().expect("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "distinct sessions");
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
    assert_eq!(json(&check)["sessions_checked"], 8);
    assert_fails(&home.run(&negotiate(&["--seed", "4", "--parallel", "2"])), 2, "APPROVAL_REQUIRED");
    assert_fails(&home.run(&negotiate(&["--seed", "4", "--yes", "--parallel", "0"])), 2, "USAGE");
}

#[test]
fn a_purchase_through_a_broker_pays_both_hops_and_each_session_names_the_other() {
    let home = Home::new();
    let output = home.run(&[
        "negotiate",
        "compute.inference",
        "--currency",
        "USD",
        "--max-price",
        "0.40",
        "--seed",
        "4",
        "--clock",
        CLOCK,
        "--yes",
        "--json",
        "--broker",
        "relay",
        "--broker-margin",
        "10",
    ]);
    assert_ok(&output);
    let document = json(&output);
    let sessions = document.as_array().expect("both sessions");
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| s["phase"] == "completed"), "{document:#}");
    assert_eq!(sessions[0]["agreement"]["provider"], "relay");
    let parent = sessions[0]["session_id"].as_str().expect("id");
    let child = sessions[1]["session_id"].as_str().expect("id");
    let story = home.run(&["transcript", "replay", &format!("session:{parent}")]);
    assert!(stdout(&story).contains(&format!("bought through broker relay, whose own purchase (session {child})")));
    let story = home.run(&["transcript", "replay", &format!("session:{child}")]);
    assert!(stdout(&story).contains(&format!("bought as a broker for session {parent}")), "{}", stdout(&story));
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
    assert_eq!(json(&check)["sessions_checked"], 2);
    assert_fails(&home.run(&negotiate(&["--yes", "--broker", "relay", "--parallel", "2"])), 2, "USAGE");
}
