//! `pactum negotiate`, `session` and `receipt` as a user or script runs them: the README's main
//! command, reproducibility from `--seed` and `--clock`, approval rules, failures with their PACT
//! codes, and bad input that writes nothing.

mod common;

use common::{Home, assert_fails, assert_ok, json, stderr, stdout};

const CLOCK: &str = "1700000000000";

fn negotiate<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["negotiate", "compute.inference", "--max-price", "0.30", "--currency", "USD"];
    args.extend_from_slice(extra);
    args
}

/// Nothing was written: no constellation file exists.
#[track_caller]
fn assert_nothing_written(home: &Home) {
    assert!(!home.default_db().exists(), "a constellation was created");
}

#[test]
fn the_main_command_negotiates_settles_and_prints_the_receipt() {
    let home = Home::new();
    let output = home.run(&negotiate(&["--seed", "4", "--clock", CLOCK, "--yes"]));
    assert_ok(&output);
    let text = stdout(&output);
    insta::assert_snapshot!("negotiate_compute_seed_4", text);
    let session_id = text.split_whitespace().nth(1).expect("session id").to_owned();
    assert!(text.contains(&format!("transcript session:{session_id}")));

    let receipt = home.run(&["receipt", "show", &session_id]);
    assert_ok(&receipt);
    assert!(stdout(&receipt).contains("verdict     signature valid"), "{}", stdout(&receipt));
    let replay = home.run(&["session", "replay", &session_id, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
    assert_eq!(json(&check)["sessions_checked"], 1);
    let list = home.run(&["session", "list", "--json"]);
    assert_eq!(json(&list)[0]["phase"], "completed");
    let show = home.run(&["session", "show", &session_id]);
    assert_ok(&show);
    assert!(stdout(&show).contains("ACCEPT"));

    // The receipt verifies on its own, and an altered copy does not.
    let receipt_json = home.run(&["receipt", "show", &session_id, "--json"]);
    let file = home.write_file("receipt.json", &receipt_json.stdout);
    assert_ok(&home.run(&["receipt", "verify", file.to_str().expect("utf-8")]));
    let altered = stdout(&receipt_json).replacen("\"amount_minor\": 24", "\"amount_minor\": 2", 1);
    assert_ne!(altered, stdout(&receipt_json), "the price is in the receipt");
    let file = home.write_file("altered.json", altered.as_bytes());
    assert_fails(&home.run(&["receipt", "verify", file.to_str().expect("utf-8")]), 1, "RECEIPT_INVALID");
}

#[test]
fn json_output_is_one_document_with_the_receipt() {
    let home = Home::new();
    let output = home.run(&negotiate(&["--seed", "4", "--clock", CLOCK, "--yes", "--json"]));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["phase"], "completed");
    assert_eq!(document["receipt"]["format"], "pactum-receipt/1");
    assert_eq!(document["transcript_id"], format!("session:{}", document["session_id"].as_str().expect("id")));
}

#[test]
fn copies_of_one_constellation_given_the_same_command_export_identical_transcripts() {
    let home = Home::new();
    // A fresh constellation: it holds only its key root (from the OS). Agents are created in
    // each copy separately, and derive the same keys from the root they share.
    assert_ok(&home.run(&["constellation", "info"]));
    let copies: Vec<String> = (0..3)
        .map(|i| {
            let path = home.path().join(format!("copy-{i}.db"));
            let backup = home.run(&["constellation", "backup", path.to_str().expect("utf-8")]);
            assert_ok(&backup);
            path.display().to_string()
        })
        .collect();
    let run_and_export = |db: &str, seed: &str| {
        let output = home.run(&[
            "--constellation",
            db,
            "negotiate",
            "weather.data",
            "--max-price",
            "0.10",
            "--currency",
            "USD",
            "--seed",
            seed,
            "--clock",
            "1700000100000",
            "--yes",
            "--json",
        ]);
        assert_ok(&output);
        let transcript = json(&output)["transcript_id"].as_str().expect("id").to_owned();
        let export = home.run(&["--constellation", db, "transcript", "export", &transcript]);
        assert_ok(&export);
        export.stdout
    };
    let first = run_and_export(&copies[0], "42");
    let second = run_and_export(&copies[1], "42");
    assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second), "byte-identical exports");
    assert_ne!(first, run_and_export(&copies[2], "43"), "another seed gives another transcript");
}

#[test]
fn without_yes_and_without_a_terminal_nothing_is_paid_or_written() {
    let home = Home::new();
    let output = home.run(&negotiate(&["--seed", "4"]));
    let line = assert_fails(&output, 2, "APPROVAL_REQUIRED");
    assert!(line.contains("--yes"), "{line}");
    assert_nothing_written(&home);
}

#[test]
fn a_failed_negotiation_exits_3_naming_its_pact_code() {
    let home = Home::new();
    let output = home.run(&negotiate(&["--seed", "4", "--clock", CLOCK, "--yes", "--latency-ms", "5"]));
    let line = assert_fails(&output, 3, "NEGOTIATION_FAILED");
    assert!(line.contains("PACT-311 PROVIDER_TIMEOUT"), "{line}");
    assert!(
        stdout(&output).contains("failed: PACT-311 PROVIDER_TIMEOUT (negotiation, provider, non_terminal)"),
        "{}",
        stdout(&output)
    );
    let check = home.run(&["constellation", "check"]);
    assert_ok(&check);
}

#[test]
fn a_policy_file_caps_the_price() {
    let home = Home::new();
    let policy = home.write_file(
        "policy.toml",
        b"format = \"pactum-policy/1\"\nmax_price = { amount = \"0.20\", currency = \"USD\" }\n",
    );
    let output = home.run(&negotiate(&["--yes", "--policy", policy.to_str().expect("utf-8")]));
    let line = assert_fails(&output, 3, "NEGOTIATION_FAILED");
    assert!(line.contains("PACT-105 MAX_PRICE_EXCEEDED"), "{line}");
    let bad = home.write_file("bad.toml", b"format = \"pactum-policy/1\"\nrounds_max = 0\n");
    let fresh = Home::new();
    assert_fails(&fresh.run(&negotiate(&["--yes", "--policy", bad.to_str().expect("utf-8")])), 2, "POLICY_INVALID");
    assert_nothing_written(&fresh);
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    let cases: &[(&[&str], &str)] = &[
        (&["negotiate", "pizza.delivery", "--max-price", "1", "--currency", "USD", "--yes"], "INTENT_TYPE_UNKNOWN"),
        (&["negotiate", "Weather", "--max-price", "1", "--currency", "USD", "--yes"], "INTENT_INVALID"),
        (&["negotiate", "weather.data", "--max-price", "-1", "--currency", "USD", "--yes"], "AMOUNT_INVALID"),
        (
            &["negotiate", "weather.data", "--max-price", "99999999999999999999", "--currency", "USD", "--yes"],
            "AMOUNT_INVALID",
        ),
        (&["negotiate", "weather.data", "--max-price", "0.001", "--currency", "USD", "--yes"], "AMOUNT_INVALID"),
        (&["negotiate", "weather.data", "--max-price", "0", "--currency", "USD", "--yes"], "INTENT_INVALID"),
        (&["negotiate", "weather.data", "--max-price", "1", "--currency", "XYZ", "--yes"], "CURRENCY_UNKNOWN"),
        (
            &["negotiate", "weather.data", "--max-price", "1", "--currency", "USD", "--yes", "--latency-ms", "0"],
            "INTENT_INVALID",
        ),
        (&["receipt", "show", "s-0000000000000000"], "CONSTELLATION_NOT_FOUND"),
        (&["session", "replay", "not-a-session"], "CONSTELLATION_NOT_FOUND"),
    ];
    for (args, code) in cases {
        let home = Home::new();
        let output = home.run(args);
        assert_fails(&output, 2, code);
        assert_nothing_written(&home);
    }
    let home = Home::new();
    let directory = home.write_file("directory.toml", b"format = \"pactum-directory/1\"\n[[provider]]\nid = \"x\"\n");
    let output = home.run(&[
        "--directory",
        directory.to_str().expect("utf-8"),
        "negotiate",
        "weather.data",
        "--max-price",
        "1",
        "--currency",
        "USD",
        "--yes",
    ]);
    let line = assert_fails(&output, 2, "DIRECTORY_INVALID");
    assert!(line.contains("directory.toml"), "{line}");
    assert_nothing_written(&home);
    // Unknown ids in an existing constellation.
    let home = Home::new();
    assert_ok(&home.run(&negotiate(&["--seed", "4", "--clock", CLOCK, "--yes"])));
    assert_fails(&home.run(&["session", "show", "s-0000000000000000"]), 2, "SESSION_NOT_FOUND");
    assert_fails(&home.run(&["session", "show", "nonsense"]), 2, "SESSION_NOT_FOUND");
    assert_fails(&home.run(&["receipt", "show", "s-0000000000000000"]), 2, "SESSION_NOT_FOUND");
    let _ = stderr;
}
