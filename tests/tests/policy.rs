//! Policies as code (`pactum-policy/2`, rules in CEL) as a user runs them: `pactum policy check`,
//! `add`, `list`, `show`, `explain`, and `pactum negotiate --policy` with rules that exclude a
//! provider at admission or deny every ask of the last round (PACT-101). Every session replays.

mod common;

use common::{Home, assert_fails, assert_ok, json, stdout};

const ADMISSION: &str = r#"format = "pactum-policy/2"
name = "no-cirrus"
version = 1

[[rules]]
name = "no_cirrus"
stage = "admission"
when = "provider.id != 'cirrus-compute'"
description = "cirrus-compute is not used for inference"
"#;

const ROUND: &str = r#"format = "pactum-policy/2"
name = "fast-only"
version = 1
rounds_max = 4

[[rules]]
name = "max_latency"
stage = "round"
when = "offer.latency_ms <= 200"
description = "answers must come within 200 ms"
"#;

fn negotiate(policy: &str) -> Vec<&str> {
    common::negotiate_args("4", &["--policy", policy])
}

#[track_caller]
fn assert_replays(home: &Home, session_id: &str) {
    let replay = home.run(&["session", "replay", session_id, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true, "{}", stdout(&replay));
}

#[test]
fn an_admission_rule_excludes_a_provider_and_the_session_replays() {
    let home = Home::new();
    let file = home.write_file("admission.toml", ADMISSION.as_bytes());
    let output = home.run(&negotiate(file.to_str().expect("utf-8")));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["phase"], "completed");
    assert_eq!(document["agreement"]["provider"], "tensor-forge");
    let session_id = document["session_id"].as_str().expect("id").to_owned();
    assert_replays(&home, &session_id);

    let show = home.run(&["session", "show", &session_id]);
    assert!(stdout(&show).contains("excluded by policy: cirrus-compute (no_cirrus)"), "{}", stdout(&show));

    let explain = home.run(&["policy", "explain", &session_id]);
    assert_ok(&explain);
    let text = stdout(&explain);
    assert!(
        text.contains(
            "rule no_cirrus denied provider cirrus-compute at admission: cirrus-compute is not used for inference \
             (provider.id is \"cirrus-compute\")"
        ),
        "{text}"
    );
    assert!(text.contains("every admission rule allowed provider tensor-forge at admission"), "{text}");
    assert!(!text.contains("NOT VERIFIED"), "{text}");
}

#[test]
fn a_round_rule_denying_the_last_asks_is_pact_101_with_the_rule_as_evidence() {
    let home = Home::new();
    let file = home.write_file("round.toml", ROUND.as_bytes());
    let output = home.run(&negotiate(file.to_str().expect("utf-8")));
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    let document = json(&output);
    assert_eq!(document["failure"]["code"], "PACT-101");
    let evidence: Vec<&str> =
        document["failure"]["evidence_refs"].as_array().expect("refs").iter().filter_map(|r| r.as_str()).collect();
    assert!(evidence.contains(&"policy_rule:max_latency"), "{evidence:?}");
    let session_id = document["session_id"].as_str().expect("id").to_owned();
    assert_replays(&home, &session_id);

    let explain = home.run(&["policy", "explain", &session_id, "--json"]);
    assert_ok(&explain);
    let report = json(&explain);
    assert_eq!(report["verified"], true);
    assert_eq!(report["failure"]["rule"], "max_latency");
    let evaluations = report["evaluations"].as_array().expect("evaluations");
    assert!(evaluations.iter().all(|e| e["denied_by"] == "max_latency"), "{evaluations:?}");
    let text = stdout(&home.run(&["policy", "explain", &session_id]));
    assert!(
        text.contains("rule max_latency denied provider tensor-forge at round 4: answers must come within 200 ms"),
        "{text}"
    );
    assert!(
        text.contains("the session failed with PACT-101 POLICY_VIOLATION: policy rule max_latency decided it"),
        "{text}"
    );
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);
}

#[test]
fn policy_check_prints_rules_and_hash_and_refuses_bad_policies() {
    let home = Home::new();
    let good = home.write_file("round.toml", ROUND.as_bytes());
    let output = home.run(&["policy", "check", good.to_str().expect("utf-8"), "--json"]);
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["rules"][0]["name"], "max_latency");
    assert_eq!(document["rules"][0]["stage"], "round");
    assert!(document["policy_hash"].as_str().expect("hash").starts_with("sha256:"));
    assert!(!home.default_db().exists(), "checking creates nothing");

    let clock = ROUND.replace("offer.latency_ms <= 200", "offer.latency_ms <= 200 && now() > 0");
    let bad = home.write_file("clock.toml", clock.as_bytes());
    assert_fails(&home.run(&["policy", "check", bad.to_str().expect("utf-8")]), 2, "POLICY_NONDETERMINISTIC");
    let nested = ROUND.replace("offer.latency_ms <= 200", "[1].all(a, [2].all(b, [3].all(c, a < c)))");
    let bad = home.write_file("nested.toml", nested.as_bytes());
    assert_fails(&home.run(&["policy", "check", bad.to_str().expect("utf-8")]), 2, "POLICY_UNBOUNDED");
    let broken = ROUND.replace("offer.latency_ms <= 200", "offer.latency_ms <=");
    let bad = home.write_file("broken.toml", broken.as_bytes());
    let line = assert_fails(&home.run(&["policy", "check", bad.to_str().expect("utf-8")]), 2, "POLICY_INVALID");
    assert!(line.contains("line 1, column"), "{line}");
    let cycle =
        home.write_file("a.toml", b"format = \"pactum-policy/2\"\nname = \"a\"\nversion = 1\nextends = \"a.toml\"\n");
    assert_fails(&home.run(&["policy", "check", cycle.to_str().expect("utf-8")]), 2, "POLICY_UNBOUNDED");
}

#[test]
fn stored_policies_are_listed_shown_and_used_by_name() {
    let home = Home::new();
    assert_fails(&home.run(&["policy", "show", "fast-only"]), 2, "POLICY_NOT_FOUND");
    assert!(!home.default_db().exists(), "reading creates nothing");
    let file = home.write_file("admission.toml", ADMISSION.as_bytes());
    assert_ok(&home.run(&["policy", "add", file.to_str().expect("utf-8")]));
    let again = home.run(&["policy", "add", file.to_str().expect("utf-8"), "--json"]);
    assert_eq!(json(&again)["stored"], false);
    let changed = home.write_file("changed.toml", ADMISSION.replace("cirrus-compute'", "nobody'").as_bytes());
    assert_fails(&home.run(&["policy", "add", changed.to_str().expect("utf-8")]), 1, "POLICY_VERSION_EXISTS");
    let list = home.run(&["policy", "list", "--json"]);
    assert_eq!(json(&list)[0]["name"], "no-cirrus");
    let show = home.run(&["policy", "show", "no-cirrus", "--json"]);
    assert_eq!(json(&show)["source"], ADMISSION);

    let output = home.run(&negotiate("no-cirrus"));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["agreement"]["provider"], "tensor-forge");
    assert_replays(&home, document["session_id"].as_str().expect("id"));
}
