//! Intents and static policies: checked when built, canonical, hashed, and each refusal names its rule.

use pactum_runtime::{Currency, Intent, IntentType, Money, PolicyRule, SettlementMode, StaticPolicy, Urgency};

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
}

fn intent(max_minor: u64) -> Intent {
    Intent::new(
        IntentType::new("weather.data").expect("type"),
        "Zürich, hourly",
        usd(max_minor),
        Some(200),
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .expect("valid intent")
}

#[test]
fn intents_are_checked_when_built() {
    let weather = IntentType::new("weather.data").expect("type");
    let build = |scope: &str, max: u64, latency: Option<u32>| {
        Intent::new(weather.clone(), scope, usd(max), latency, None, Urgency::Low, SettlementMode::Escrow)
    };
    assert!(build("ok", 5, Some(200)).is_ok());
    assert_eq!(build("ok", 0, None).map_err(|e| e.code()), Err("INTENT_INVALID"));
    assert!(build("ok", 5, Some(0)).is_err());
    assert!(build("bad\u{1b}[2K", 5, None).is_err());
    assert!(build(&"x".repeat(257), 5, None).is_err());
    assert!(Urgency::parse("asap").is_err());
    assert!(SettlementMode::parse("stream").is_err());
    assert_eq!(intent(5).to_json()["max_price"], serde_json::json!({"amount_minor": 5, "currency": "USD"}));
}

#[test]
fn equal_policies_hash_alike_and_any_change_changes_the_hash() {
    let base = StaticPolicy { blocked_providers: vec!["b".into(), "a".into()], ..StaticPolicy::default() };
    let reordered =
        StaticPolicy { blocked_providers: vec!["a".into(), "b".into(), "a".into()], ..StaticPolicy::default() };
    assert_eq!(base.policy_hash(), reordered.policy_hash(), "order and duplicates do not matter");
    assert!(base.policy_hash().starts_with("sha256:") && base.policy_hash().len() == 71);
    let capped = StaticPolicy { max_price: Some(usd(4)), ..base.clone() };
    let fewer_rounds = StaticPolicy { rounds_max: 3, ..base.clone() };
    let hashes = [base.policy_hash(), capped.policy_hash(), fewer_rounds.policy_hash()];
    assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2]);
    // The recipe: SHA-256 of the canonical JSON, computed independently here.
    let canonical = pactum_transcripts::canonical::to_canonical_string(&base.to_json()).expect("canonical");
    let expected = pactum_transcripts::Digest::tagged(b"", canonical.as_bytes()).to_hex();
    assert_eq!(base.policy_hash(), format!("sha256:{expected}"));
}

#[test]
fn each_refusal_names_its_rule() {
    let policy = StaticPolicy {
        max_price: Some(usd(4)),
        allowed_providers: Some(vec!["nimbus-weather".into(), "stratus-weather".into()]),
        blocked_providers: vec!["stratus-weather".into()],
        ..StaticPolicy::default()
    };
    assert!(policy.check().is_ok());
    assert_eq!(policy.admits_provider("nimbus-weather"), Ok(()));
    assert_eq!(policy.admits_provider("stratus-weather"), Err(PolicyRule::BlockedProviders));
    assert_eq!(policy.admits_provider("tensor-forge"), Err(PolicyRule::AllowedProviders));
    let wants = intent(5);
    assert_eq!(policy.admits_price(&wants, usd(4)), Ok(()));
    assert_eq!(policy.admits_price(&wants, usd(5)), Err(PolicyRule::MaxPrice), "the policy cap is lower");
    assert_eq!(StaticPolicy::default().admits_price(&wants, usd(6)), Err(PolicyRule::MaxPrice), "the intent cap");
    let euros = Money::from_minor(1, Currency::parse("EUR").expect("EUR")).expect("amount");
    assert_eq!(StaticPolicy::default().admits_price(&wants, euros), Err(PolicyRule::MaxPrice), "another currency");
    assert_eq!(policy.admits_settlement("ledger", SettlementMode::Escrow), Ok(()));
    assert_eq!(policy.admits_settlement("x402", SettlementMode::Escrow), Err(PolicyRule::AllowedRails));
    assert_eq!(PolicyRule::AllowedRails.name(), "allowed_rails");
    assert!(StaticPolicy { rounds_max: 0, ..StaticPolicy::default() }.check().is_err());
    assert!(StaticPolicy { rounds_max: 33, ..StaticPolicy::default() }.check().is_err());
    assert!(StaticPolicy { allowed_rails: vec![], ..StaticPolicy::default() }.check().is_err());
}
