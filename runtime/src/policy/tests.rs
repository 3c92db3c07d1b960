use super::*;
use crate::directory::IntentType;
use crate::intent::{Intent, SettlementMode, Urgency};
use crate::money::{Currency, Money};

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
}

fn intent() -> Intent {
    Intent::new(
        IntentType::new("compute.inference").expect("type"),
        "",
        usd(30),
        Some(800),
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .expect("intent")
}

fn policy(rules: &str) -> Result<Policy, PolicyError> {
    Policy::parse_toml(&format!("format = \"pactum-policy/2\"\nname = \"test\"\nversion = 1\n{rules}"), "test.toml")
}

fn round_context(provider: &str, price: u64, latency_ms: u32) -> Context {
    Context::round(&intent(), "Acme", "ledger", 2, 6, OfferFacts { provider, price: usd(price), latency_ms })
}

const LATENCY: &str = r#"
[[rules]]
name = "max_latency"
stage = "round"
when = "offer.latency_ms <= 500"
description = "offers must answer within 500 ms"
"#;

#[test]
fn a_rule_allows_and_denies_with_its_values_in_the_explanation() {
    let policy = policy(LATENCY).expect("policy");
    let allowed = evaluate(&policy, &round_context("acme", 20, 300));
    assert!(allowed.allowed());
    let denied = evaluate(&policy, &round_context("acme", 20, 900));
    assert_eq!(denied.denied_by.as_deref(), Some("max_latency"));
    let text = explain(&denied);
    assert!(
        text.starts_with("rule max_latency denied provider acme at round 2: offers must answer within 500 ms (offer.latency_ms is 900)"),
        "{text}"
    );
}

#[test]
fn v1_files_keep_their_hash() {
    let text = "format = \"pactum-policy/1\"\nrounds_max = 4\nblocked_providers = [\"x\"]\n";
    let v1 = crate::intent::StaticPolicy::parse_toml(text, "p.toml").expect("v1");
    let read = Policy::parse_toml(text, "p.toml").expect("read as v2");
    assert_eq!(read.policy_hash(), v1.policy_hash());
    assert_eq!(read.to_json(), v1.to_json());
    assert!(!read.has_rules());
    assert_eq!(Policy::from_json(&read.to_json()).expect("recorded").policy_hash(), v1.policy_hash());
}

#[test]
fn the_recorded_json_reads_back_to_the_same_policy() {
    let policy = policy(&format!("[passport]\nmin_score = 72.5\nmin_confidence = \"0.8\"\n{LATENCY}")).expect("policy");
    assert_eq!(
        policy.passport_requirement(),
        Some(PassportRequirement { min_score_milli: 72_500, min_confidence_milli: 800 })
    );
    let again = Policy::from_json(&policy.to_json()).expect("from json");
    assert_eq!(again.policy_hash(), policy.policy_hash());
    assert!(policy.policy_hash().starts_with("sha256:"));
    let mut altered = policy.to_json();
    altered["rules"][0]["when"] = serde_json::json!("offer.latency_ms <= 5000");
    let altered = Policy::from_json(&altered).expect("another policy");
    assert_ne!(altered.policy_hash(), policy.policy_hash());
}

#[test]
fn groups_all_any_not() {
    let rules = r#"
[[rules]]
name = "cheap"
stage = "round"
when = "offer.price.amount_minor <= 20"
description = "cheap"
enforce = false

[[rules]]
name = "fast"
stage = "round"
when = "offer.latency_ms <= 500"
description = "fast"
enforce = false

[[rules]]
name = "blessed"
stage = "round"
when = "offer.provider in ['acme', 'globex']"
description = "a known provider"
enforce = false

[[rules]]
name = "cheap_or_fast"
stage = "round"
any = ["cheap", "fast"]
description = "cheap or fast"

[[rules]]
name = "not_blessed"
stage = "round"
not = "blessed"
description = "not a provider we already use"
enforce = false

[[rules]]
name = "both"
stage = "round"
all = ["cheap", "fast"]
description = "cheap and fast"
enforce = false
"#;
    let policy = policy(rules).expect("policy");
    assert!(evaluate(&policy, &round_context("acme", 25, 300)).allowed());
    assert!(evaluate(&policy, &round_context("acme", 10, 900)).allowed());
    let denied = evaluate(&policy, &round_context("acme", 25, 900));
    assert_eq!(denied.denied_by.as_deref(), Some("cheap_or_fast"));
    assert_eq!(denied.trace.len(), 1, "helpers are not traced on their own");
    assert!(denied.trace[0].message.contains("cheap denied, fast denied"), "{}", denied.trace[0].message);

    let negated = negate(&policy).expect("negate");
    assert!(!evaluate(&negated, &round_context("acme", 25, 300)).allowed());
    assert!(evaluate(&negated, &round_context("acme", 25, 900)).allowed());
}

#[test]
fn compose_and_override() {
    let a = policy(LATENCY).expect("a");
    let b = Policy::parse_toml(
        r#"format = "pactum-policy/2"
name = "b"
version = 2
rounds_max = 3
[[rules]]
name = "cheap"
stage = "round"
when = "offer.price.amount_minor <= 20"
description = "cheap"
"#,
        "b.toml",
    )
    .expect("b");
    let all = compose(&[a.clone(), b.clone()], Mode::All).expect("all");
    assert_eq!(all.static_part().rounds_max, 3);
    assert_eq!(evaluate(&all, &round_context("acme", 25, 300)).denied_by.as_deref(), Some("cheap"));
    assert_eq!(evaluate(&all, &round_context("acme", 10, 900)).denied_by.as_deref(), Some("max_latency"));
    let any = compose(&[a, b.clone()], Mode::Any).expect("any");
    assert_eq!(any.static_part().rounds_max, 6);
    assert!(evaluate(&any, &round_context("acme", 25, 300)).allowed());
    assert!(evaluate(&any, &round_context("acme", 10, 900)).allowed());
    assert_eq!(evaluate(&any, &round_context("acme", 25, 900)).denied_by.as_deref(), Some("any_round"));

    let child = PolicyLayer::parse_toml(
        r#"format = "pactum-policy/2"
name = "child"
version = 1
extends = "b.toml"
[[rules]]
name = "cheap"
stage = "round"
when = "offer.price.amount_minor <= 30"
description = "cheap enough"
"#,
        "child.toml",
    )
    .expect("layer");
    let merged = override_with(&b, &child).expect("override");
    assert_eq!(merged.static_part().rounds_max, 3, "the base's static field is kept");
    assert_eq!(merged.rules().len(), 1, "the child's rule replaces the base's");
    assert!(evaluate(&merged, &round_context("acme", 25, 300)).allowed());
}

#[test]
fn extends_resolves_files_and_refuses_cycles() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write(
        "base.toml",
        &format!("format = \"pactum-policy/2\"\nname = \"base\"\nversion = 1\nrounds_max = 4\n{LATENCY}"),
    );
    write("child.toml", "format = \"pactum-policy/2\"\nname = \"child\"\nversion = 1\nextends = \"base.toml\"\n");
    let child = Policy::load(&dir.path().join("child.toml")).expect("child");
    assert_eq!(child.static_part().rounds_max, 4);
    assert!(child.rule("max_latency").is_some());

    write("a.toml", "format = \"pactum-policy/2\"\nname = \"a\"\nversion = 1\nextends = \"b.toml\"\n");
    write("b.toml", "format = \"pactum-policy/2\"\nname = \"b\"\nversion = 1\nextends = \"a.toml\"\n");
    let error = Policy::load(&dir.path().join("a.toml")).expect_err("cycle");
    assert_eq!(error.code(), "POLICY_UNBOUNDED", "{error}");
    assert!(error.to_string().contains("cycle"), "{error}");
}

fn rejected(when: &str, stage: &str) -> PolicyError {
    policy(&format!("[[rules]]\nname = \"r\"\nstage = \"{stage}\"\nwhen = '''{when}'''\ndescription = \"r\"\n"))
        .expect_err(when)
}

#[test]
fn clock_and_randomness_are_refused() {
    for when in ["now < 5", "timestamp('2024-01-01T00:00:00Z') < now()", "now() > 0", "rand() > 1"] {
        assert_eq!(rejected(when, "admission").code(), "POLICY_NONDETERMINISTIC", "{when}");
    }
    assert_eq!(rejected("intent.exists(k, k == 'type')", "admission").code(), "POLICY_NONDETERMINISTIC");
}

/// A comprehension variable may hold a map; iterating it would follow the hash map's order,
/// which changes from run to run.
#[test]
fn iterating_a_bound_variable_that_may_be_a_map_is_refused() {
    assert_eq!(rejected("[provider].all(m, m.map(k, k)[0] == 'id')", "admission").code(), "POLICY_NONDETERMINISTIC");
    assert_eq!(rejected("[[1, 2]].all(l, l.all(x, x > 0))", "admission").code(), "POLICY_NONDETERMINISTIC");
    assert!(policy("[[rules]]\nname = \"r\"\nstage = \"admission\"\nwhen = \"[1, 2].map(x, x * 2).all(y, y > 0)\"\ndescription = \"r\"\n").is_ok());
}

/// Loops over long lists written in the rule are bounded before they run.
#[test]
fn rules_that_would_run_too_long_are_refused() {
    // 70 × 70 nested iterations (plus the outer 70) is over the bound of one rule; 60 × 60 is not.
    let nested = |n: usize| {
        let list = format!("[{}]", vec!["0"; n].join(", "));
        format!("{list}.all(x, {list}.all(y, x == y))")
    };
    let error = rejected(&nested(70), "admission");
    assert_eq!(error.code(), "POLICY_UNBOUNDED");
    assert!(error.to_string().contains("4970 iterations"), "{error}");
    assert!(
        policy(&format!(
            "[[rules]]\nname = \"r\"\nstage = \"admission\"\nwhen = \"{}\"\ndescription = \"r\"\n",
            nested(60)
        ))
        .is_ok()
    );
    // 20 rules of 1,024 iterations each: every rule is within its bound, the policy is not.
    let list = format!("[{}]", vec!["0"; 1024].join(", "));
    let rules: String = (0..20)
        .map(|i| format!("[[rules]]\nname = \"r{i}\"\nstage = \"admission\"\nwhen = \"{list}.all(x, x == 0)\"\ndescription = \"r\"\n"))
        .collect();
    assert_eq!(policy(&rules).expect_err("too slow together").code(), "POLICY_UNBOUNDED");
}

#[test]
fn unbounded_policies_are_refused() {
    let deep = "[1].all(a, [2].all(b, [3].all(c, a < b)))";
    assert_eq!(rejected(deep, "admission").code(), "POLICY_UNBOUNDED");
    assert!(
        policy(&format!(
            "[[rules]]\nname = \"r\"\nstage = \"admission\"\nwhen = '''{}'''\ndescription = \"r\"\n",
            "[1].all(a, [2].exists(b, a < b))"
        ))
        .is_ok()
    );
    let long = format!("provider.id != '{}'", "x".repeat(WHEN_BYTES_MAX));
    assert_eq!(rejected(&long, "admission").code(), "POLICY_UNBOUNDED");
    let many: String = (0..=RULES_MAX)
        .map(|i| format!("[[rules]]\nname = \"r{i}\"\nstage = \"admission\"\nwhen = \"true\"\ndescription = \"r\"\n"))
        .collect();
    assert_eq!(policy(&many).expect_err("too many").code(), "POLICY_UNBOUNDED");
}

#[test]
fn invalid_expressions_are_refused_with_where() {
    let error = rejected("offer.latency_ms <=", "round");
    assert_eq!(error.code(), "POLICY_INVALID");
    assert!(error.to_string().contains("line 1, column"), "{error}");
    assert_eq!(
        rejected("offer.latency_ms", "admission").code(),
        "POLICY_INVALID",
        "offer is not an admission variable"
    );
    assert_eq!(rejected("offer.speed > 1", "round").code(), "POLICY_INVALID");
    assert_eq!(rejected("offer.latency_ms + 1", "round").code(), "POLICY_INVALID", "not bool");
    assert_eq!(rejected("offer.latency_ms < 1.5", "round").code(), "POLICY_INVALID", "no floats");
    assert_eq!(rejected("matches(provider.id, 'a')", "admission").code(), "POLICY_INVALID");
    let clash = policy("[[rules]]\nname = \"max_price\"\nstage = \"round\"\nwhen = \"true\"\ndescription = \"d\"\n");
    assert_eq!(clash.expect_err("clash").code(), "POLICY_INVALID");
}

#[test]
fn evaluation_errors_deny_deterministically() {
    let policy = policy(
        "[[rules]]\nname = \"latency_set\"\nstage = \"round\"\nwhen = \"intent.deadline_ms > 5\"\ndescription = \"d\"\n",
    )
    .expect("policy");
    let first = evaluate(&policy, &round_context("acme", 20, 300));
    assert_eq!(first.trace[0].outcome, Outcome::Error);
    assert_eq!(first.denied_by.as_deref(), Some("latency_set"));
    for _ in 0..20 {
        assert_eq!(evaluate(&policy, &round_context("acme", 20, 300)), first);
    }
    assert!(explain(&first).contains("could not be evaluated"));
}

#[test]
fn verify_detects_a_tampered_evaluation() {
    let policy = policy(LATENCY).expect("policy");
    let recorded = evaluate(&policy, &round_context("acme", 20, 900));
    assert_eq!(verify(&policy, &recorded), Ok(()));
    let mut tampered = recorded.clone();
    tampered.denied_by = None;
    tampered.trace[0].outcome = Outcome::Allow;
    assert!(verify(&policy, &tampered).is_err());
    let mut context_changed = recorded;
    context_changed.context["offer"]["latency_ms"] = serde_json::json!(100);
    assert!(verify(&policy, &context_changed).is_err());
}

#[test]
fn policies_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}
