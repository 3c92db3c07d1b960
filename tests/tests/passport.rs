//! `pactum passport`: outcomes ingested only from sessions that verify (once each), scores that
//! are the same bit for bit for the same history and `--as-of`, and the gate's exit codes.

mod common;

use common::{Home, assert_fails, assert_ok, json, stderr};
use serde_json::Value;

/// Long after every session of these tests ended (their clocks start at 1700000000000).
const AS_OF: &str = "1700000600000";

/// `negotiate compute.inference` (`common::negotiate_args`) with `seed` and `extra`: the exit code and the JSON.
fn negotiate_json(home: &Home, seed: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let args = common::negotiate_args(seed, extra);
    let output = home.run(&args);
    // Some seeds fail (exit 3, with their PACT code): those outcomes count too.
    assert!(matches!(output.status.code(), Some(0 | 3)), "{}", stderr(&output));
    (output.status.code(), json(&output))
}

fn negotiate(home: &Home, seed: u32) {
    negotiate_json(home, &seed.to_string(), &[]);
}

fn show(home: &Home, agent: &str) -> Value {
    let output = home.run(&["passport", "show", agent, "--as-of", AS_OF, "--json"]);
    assert_ok(&output);
    let mut document = json(&output);
    document.as_object_mut().expect("object").remove("ingested");
    document
}

#[test]
fn scores_are_deterministic_and_ingestion_happens_once() {
    let home = Home::new();
    for seed in 11..=26 {
        negotiate(&home, seed);
    }
    let first = home.run(&["passport", "show", "tensor-forge", "--as-of", AS_OF, "--json"]);
    assert_ok(&first);
    assert_eq!(json(&first)["ingested"]["sessions_added"], 16, "every ended session is ingested first");
    let again = home.run(&["passport", "ingest", "--json"]);
    assert_ok(&again);
    assert_eq!(json(&again)["sessions_added"], 0, "ingestion is idempotent");

    let tensor = show(&home, "tensor-forge");
    assert_eq!(tensor, show(&home, "tensor-forge"), "same history and as-of, same document");
    assert_eq!(tensor["formula"], "pactum-passport/1");
    assert_eq!(tensor["as_of_ms"], 1_700_000_600_000u64);
    let breakdown = &tensor["breakdown"];
    assert!(breakdown["successes"]["count"].as_u64().unwrap_or(0) > 5, "{tensor}");
    assert_eq!(breakdown["counterparties"], 1, "the buyer is its only counterparty");
    assert_eq!(breakdown["concentration_penalty_milli"], 15_000);

    // A second constellation given the same commands scores identically, bit for bit (its
    // transcripts hash differently only because its agents have their own keys).
    let other = Home::new();
    for seed in 11..=26 {
        negotiate(&other, seed);
    }
    let without_hashes = |mut document: Value| {
        for latest in ["latest_failure", "latest_policy_violation", "latest_dispute_lost"] {
            if let Some(object) = document["breakdown"][latest].as_object_mut() {
                object.remove("transcript_hash");
            }
        }
        document
    };
    assert_eq!(without_hashes(show(&other, "tensor-forge")), without_hashes(tensor.clone()));
    assert_eq!(without_hashes(show(&other, "buyer")), without_hashes(show(&home, "buyer")));

    // As of a time before any session, nothing counts.
    let before = home.run(&["passport", "show", "tensor-forge", "--as-of", "2020-01-01T00:00:00Z", "--json"]);
    assert_ok(&before);
    assert_eq!(json(&before)["breakdown"]["events"], 0);
    assert_eq!(json(&before)["score_milli"], 50_000);
}

#[test]
fn the_gate_exits_one_with_a_stable_reason() {
    let home = Home::new();
    for seed in 11..=16 {
        negotiate(&home, seed);
    }
    let pass = home.run(&["passport", "check", "tensor-forge", "--min-score", "50", "--as-of", AS_OF, "--json"]);
    assert_ok(&pass);
    assert_eq!(json(&pass)["pass"], true);

    let low = home.run(&["passport", "check", "tensor-forge", "--min-score", "99.5", "--as-of", AS_OF, "--json"]);
    assert_eq!(low.status.code(), Some(1), "{}", stderr(&low));
    let low = json(&low);
    assert_eq!(low["reason"], "LOW_SCORE");
    assert_eq!(low["thresholds"]["min_score_milli"], 99_500);
    let narrative = low["narrative"].as_str().unwrap_or_default();
    assert!(narrative.starts_with("Passport policy gate denied tensor-forge (LOW_SCORE): score "), "{narrative}");
    assert!(narrative.contains("Triggering factor: "), "{narrative}");

    let newcomer = home.run(&["passport", "check", "nobody-yet", "--min-score", "10", "--json"]);
    assert_eq!(newcomer.status.code(), Some(1));
    assert_eq!(json(&newcomer)["reason"], "INSUFFICIENT_HISTORY");

    let human = home.run(&["passport", "check", "nobody-yet", "--min-score", "10"]);
    assert!(common::stdout(&human).contains("(INSUFFICIENT_HISTORY)"));

    let bad = home.run(&["passport", "check", "tensor-forge", "--min-score", "101"]);
    assert_fails(&bad, 2, "USAGE");
    let bad = home.run(&["passport", "check", "tensor-forge", "--min-score", "50", "--min-confidence", "0.1234"]);
    assert_fails(&bad, 2, "USAGE");
}

#[test]
fn a_tampered_session_is_left_out() {
    let home = Home::new();
    for seed in 11..=13 {
        negotiate(&home, seed);
    }
    {
        let raw = rusqlite::Connection::open(home.default_db()).expect("sqlite");
        raw.execute_batch(
            "DROP TRIGGER transcript_events_no_update;
             UPDATE transcript_events SET body = replace(body, '\"amount_minor\":24', '\"amount_minor\":1')
             WHERE stream_id = (SELECT stream_id FROM transcript_streams WHERE stream_id LIKE 'session:%'
                                ORDER BY created_at_ms, stream_id LIMIT 1)
               AND kind = 'round.ask';",
        )
        .expect("tamper");
    }
    let output = home.run(&["passport", "ingest", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["sessions_added"], 2);
    let refused = report["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{report}");
    assert!(refused[0]["reason"].as_str().unwrap_or_default().contains("does not verify"), "{report}");
    // Asked again, it is still left out, and the others are not counted twice.
    let output = home.run(&["passport", "ingest", "--json"]);
    assert_eq!(json(&output)["sessions_added"], 0);
    assert_eq!(show(&home, "buyer")["breakdown"]["events"], 2);
}

#[test]
fn reading_a_passport_creates_nothing() {
    let home = Home::new();
    let output = home.run(&["passport", "show", "buyer"]);
    assert_fails(&output, 2, "AGENT_NOT_FOUND");
    assert!(!home.default_db().exists());
}

#[test]
fn an_upheld_dispute_flags_the_provider_and_a_ruling_is_never_replaced() {
    let home = Home::new();
    for seed in 11..=16 {
        negotiate(&home, seed);
    }
    let list = home.run(&["session", "list", "--json"]);
    let sessions = json(&list);
    let session = sessions
        .as_array()
        .and_then(|all| all.iter().find(|s| s["phase"] == "completed"))
        .and_then(|s| s["session_id"].as_str())
        .expect("a completed session")
        .to_owned();
    let provider = "tensor-forge";
    let ruling = home.run(&[
        "passport",
        "dispute",
        &session,
        "--against",
        provider,
        "--upheld",
        "--reason",
        "results never arrived",
        "--json",
    ]);
    assert_ok(&ruling);
    let ruling = json(&ruling);
    assert_eq!(ruling["outcome"], "upheld");
    assert_eq!(ruling["transcript"], format!("dispute:{session}:{provider}"));
    // The ruling is a signed transcript of its own, and it verifies.
    let verify = home.run(&["transcript", "verify", &format!("dispute:{session}:{provider}"), "--json"]);
    assert_ok(&verify);

    let check = home.run(&["passport", "check", provider, "--min-score", "10", "--json"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let check = json(&check);
    assert_eq!(check["reason"], "DISPUTE_FLAGGED");
    assert!(check["triggering_factor"].as_str().unwrap_or_default().starts_with("dispute lost with buyer"), "{check}");

    let again = home.run(&[
        "passport",
        "dispute",
        &session,
        "--against",
        provider,
        "--dismissed",
        "--reason",
        "second thoughts",
    ]);
    assert_fails(&again, 1, "DISPUTE_EXISTS");
    let not_a_party = home.run(&["passport", "dispute", &session, "--against", "buyer", "--upheld", "--reason", "x"]);
    assert_fails(&not_a_party, 2, "DISPUTE_INVALID");
}

fn write_policy(home: &Home, name: &str, min_score: &str) -> String {
    let text = format!(
        "format = \"pactum-policy/2\"\nname = \"{name}\"\nversion = 1\n\n[passport]\nmin_score = \"{min_score}\"\nmin_confidence = \"0.2\"\n"
    );
    home.write_file(&format!("{name}.toml"), text.as_bytes()).display().to_string()
}

fn gated(home: &Home, policy: &str, seed: &str) -> (Option<i32>, Value) {
    negotiate_json(home, seed, &["--policy", policy])
}

#[test]
fn the_passport_gate_admits_and_denies_providers_and_replay_shows_it() {
    let home = Home::new();
    for seed in 11..=26 {
        negotiate(&home, seed);
    }
    // Passable: tensor-forge has a long record; cirrus-compute is at fault too often.
    let policy = write_policy(&home, "gated", "60");
    let (code, result) = gated(&home, &policy, "101");
    // Admitted providers negotiate as usual (the simulation may still time out or refuse).
    assert!(matches!(code, Some(0 | 3)), "{result}");
    assert_ne!(result["failure"]["code"], "PACT-203", "{result}");
    let session = result["session_id"].as_str().expect("id").to_owned();
    let replay = home.run(&["session", "replay", &session, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);
    let story = home.run(&["transcript", "replay", &session, "--json"]);
    assert_ok(&story);
    let story = json(&story)["story"].clone();
    let decisions = story["decisions"].as_array().expect("decisions");
    let passport: Vec<&Value> = decisions.iter().filter(|d| d.get("passport").is_some()).collect();
    assert_eq!(passport.len(), 2, "one passport check per provider offering: {story}");
    let tensor = passport.iter().find(|d| d["subject"] == "tensor-forge").expect("tensor-forge");
    assert_eq!(tensor["passport"]["pass"], true, "{tensor}");
    let cirrus = passport.iter().find(|d| d["subject"] == "cirrus-compute").expect("cirrus-compute");
    assert_eq!(cirrus["passport"]["pass"], false, "{cirrus}");
    assert!(cirrus["passport"]["reason"].is_string());
    let narrative = story["narrative"].as_array().expect("narrative");
    assert!(
        narrative
            .iter()
            .any(|s| s.as_str().unwrap_or_default().starts_with("Passport policy gate admitted tensor-forge"))
    );

    // Unpassable: every provider denied → PACT-203 with passport evidence that resolves.
    let strict = write_policy(&home, "strict", "99.9");
    let (code, result) = gated(&home, &strict, "102");
    assert_eq!(code, Some(3), "{result}");
    assert_eq!(result["failure"]["code"], "PACT-203");
    assert_eq!(result["failure"]["fault_domain"], "identity");
    let evidence: Vec<&str> =
        result["failure"]["evidence_refs"].as_array().expect("refs").iter().filter_map(Value::as_str).collect();
    assert!(evidence.contains(&"passport:tensor-forge:LOW_SCORE"), "{evidence:?}");
    assert!(evidence.iter().any(|r| r.starts_with("passport:cirrus-compute:")), "{evidence:?}");
    let session = result["session_id"].as_str().expect("id").to_owned();
    let replay = home.run(&["session", "replay", &session, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);
    let story = json(&home.run(&["transcript", "replay", &session, "--json"]))["story"].clone();
    for evidence in story["failure"]["evidence"].as_array().expect("evidence") {
        assert!(evidence["resolves_to"].is_string(), "{evidence}");
    }
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
}

#[test]
fn a_pact_v4_transcript_counts_only_when_it_verifies_and_its_keys_are_known() {
    // A and its copy B share keys; the session negotiated in A after the copy is new to B.
    let a = Home::new();
    negotiate(&a, 11);
    let copy = a.path().join("copy.db");
    assert_ok(&a.run(&["constellation", "backup", copy.to_str().expect("utf-8")]));
    let (_, result) = negotiate_json(&a, "12", &[]);
    let session = result["session_id"].as_str().expect("id").to_owned();
    let file = a.path().join("t.json");
    let file_arg = file.to_str().expect("utf-8");
    assert_ok(&a.run(&["transcript", "export", &session, "--format", "pact-v4", "--out", file_arg]));

    // In A itself the export is the session it came from: counted once.
    let own = a.run(&["passport", "ingest", file_arg, "--json"]);
    assert_ok(&own);
    assert_eq!(json(&own)["rows_added"], 0);

    let b = copy.to_str().expect("utf-8");
    let before = json(&a.run(&["--constellation", b, "passport", "show", "buyer", "--as-of", AS_OF, "--json"]));
    let added = a.run(&["--constellation", b, "passport", "ingest", file_arg, "--json"]);
    assert_ok(&added);
    assert!(json(&added)["rows_added"].as_u64().unwrap_or(0) >= 2, "{}", common::stdout(&added));
    let again = a.run(&["--constellation", b, "passport", "ingest", file_arg, "--json"]);
    assert_eq!(json(&again)["rows_added"], 0, "idempotent on the transcript hash");
    let after = json(&a.run(&["--constellation", b, "passport", "show", "buyer", "--as-of", AS_OF, "--json"]));
    assert_eq!(
        after["breakdown"]["events"].as_u64().unwrap_or(0),
        before["breakdown"]["events"].as_u64().unwrap_or(0) + 1
    );

    // A transcript with an edited price does not verify and is refused.
    let text = std::fs::read_to_string(&file).expect("read");
    let mut document: Value = serde_json::from_str(&text).expect("json");
    let rounds = document["rounds"].as_array_mut().expect("rounds");
    let ask = rounds.iter_mut().find(|r| r["round_type"] == "ASK").expect("an ask");
    ask["content_summary"]["price"]["amount_minor"] = 1.into();
    let edited = a.write_file("edited.json", document.to_string().as_bytes());
    let refused = a.run(&["--constellation", b, "passport", "ingest", edited.to_str().expect("utf-8")]);
    assert_fails(&refused, 1, "PASSPORT_SOURCE_INVALID");

    // A transcript signed by keys this constellation does not know for its agents is refused.
    let stranger = Home::new();
    let (_, result) = negotiate_json(&stranger, "13", &[]);
    let foreign_session = result["session_id"].as_str().expect("id").to_owned();
    let foreign = stranger.path().join("foreign.json");
    let foreign_arg = foreign.to_str().expect("utf-8");
    assert_ok(&stranger.run(&["transcript", "export", &foreign_session, "--format", "pact-v4", "--out", foreign_arg]));
    let refused = a.run(&["--constellation", b, "passport", "ingest", foreign_arg]);
    let line = assert_fails(&refused, 1, "PASSPORT_SOURCE_INVALID");
    assert!(line.contains("does not know"), "{line}");
}

#[test]
fn imported_sessions_and_providers_not_paid_are_refused() {
    // A session made elsewhere verifies against the keys its file carries: it does not count.
    let elsewhere = Home::new();
    let (_, result) = negotiate_json(&elsewhere, "5", &[]);
    let foreign = result["session_id"].as_str().expect("id").to_owned();
    let file = elsewhere.path().join("foreign.jsonl");
    let file_arg = file.to_str().expect("utf-8");
    assert_ok(&elsewhere.run(&["transcript", "export", &format!("session:{foreign}"), "--out", file_arg]));

    let home = Home::new();
    negotiate(&home, 11);
    assert_ok(&home.run(&["transcript", "import", file_arg]));
    let refused = home.run(&["passport", "ingest", &foreign]);
    assert_fails(&refused, 1, "PASSPORT_SOURCE_INVALID");
    let bulk = home.run(&["passport", "ingest", "--json"]);
    assert_ok(&bulk);
    let before = show(&home, "tensor-forge")["breakdown"]["events"].clone();
    let disputed =
        home.run(&["passport", "dispute", &foreign, "--against", "tensor-forge", "--upheld", "--reason", "x"]);
    assert_fails(&disputed, 2, "DISPUTE_INVALID");
    assert_eq!(show(&home, "tensor-forge")["breakdown"]["events"], before);

    // In a completed session, only the provider paid is the buyer's counterparty.
    let sessions = json(&home.run(&["session", "list", "--json"]));
    let completed = sessions
        .as_array()
        .and_then(|all| all.iter().find(|s| s["phase"] == "completed" && s["origin"] != "imported"))
        .cloned()
        .expect("a completed session");
    let session = completed["session_id"].as_str().expect("id");
    let paid = completed["provider"].as_str().unwrap_or("tensor-forge");
    let other = if paid == "tensor-forge" { "cirrus-compute" } else { "tensor-forge" };
    let output = home.run(&["passport", "dispute", session, "--against", other, "--upheld", "--reason", "x"]);
    assert_fails(&output, 2, "DISPUTE_INVALID");
}
