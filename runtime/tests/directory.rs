//! The provider directory: the built-in one is valid, and every kind of bad file is refused with
//! a message naming the provider and field.

use pactum_runtime::{Concession, DEFAULT_DIRECTORY, Directory, IntentType};

#[test]
fn the_builtin_directory_is_valid_and_covers_three_intent_types() {
    let directory = Directory::builtin().expect("the built-in directory parses");
    assert_eq!(directory.providers().len(), 5);
    let types: Vec<&str> = directory.intent_types().into_iter().map(IntentType::as_str).collect();
    assert_eq!(types, ["compute.inference", "storage.blob", "weather.data"]);
    let weather = IntentType::new("weather.data").expect("valid");
    let ids: Vec<&str> = directory.offering(&weather).map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["nimbus-weather", "stratus-weather"]);
    let nimbus = &directory.providers()[0];
    assert_eq!(nimbus.reference_price.to_string(), "0.06 USD");
    assert_eq!(nimbus.concession, Concession::Steady);
    // 70 % of 6 cents is 4.2 cents: the floor rounds up, never below the provider's minimum.
    assert_eq!(nimbus.floor_price().amount_minor(), 5);
}

/// The built-in directory with `from` replaced by `to` must be refused with `needle` in the message.
#[track_caller]
fn check_refused(from: &str, to: &str, needle: &str) {
    assert!(DEFAULT_DIRECTORY.contains(from), "fixture text {from:?} not found");
    let text = DEFAULT_DIRECTORY.replacen(from, to, 1);
    let error = Directory::parse(&text, "test.toml").expect_err("must be refused");
    assert_eq!(error.code(), "DIRECTORY_INVALID");
    let message = error.to_string();
    assert!(message.starts_with("test.toml: "), "{message}");
    assert!(message.contains(needle), "expected {needle:?} in: {message}");
}

#[test]
fn bad_directories_are_refused_with_a_precise_message() {
    check_refused("format = \"pactum-directory/1\"", "format = \"pactum-directory/2\"", "not supported");
    check_refused("id = \"stratus-weather\"", "id = \"nimbus-weather\"", "listed twice");
    check_refused("id = \"nimbus-weather\"", "id = \"Nimbus Weather\"", "lowercase letters");
    check_refused("currency = \"USD\" }", "currency = \"USX\" }", "not an ISO 4217 currency");
    check_refused("amount = \"0.06\"", "amount = \"-0.06\"", "negative");
    check_refused("amount = \"0.06\"", "amount = \"0.065\"", "more decimals");
    check_refused("amount = \"0.06\"", "amount = \"0\"", "above zero");
    check_refused("floor_percent = 70", "floor_percent = 0", "floor_percent");
    check_refused("floor_percent = 70", "floor_percent = 300", "floor_percent");
    check_refused("concession = \"steady\"", "concession = \"sneaky\"", "not eager, steady or stubborn");
    check_refused("intent_types = [\"weather.data\"]", "intent_types = [\"Weather Data\"]", "not an intent type");
    check_refused("intent_types = [\"weather.data\"]", "intent_types = []", "intent_types");
    check_refused("timeout_percent = 2,", "timeout_percent = 99,", "add up to");
    check_refused("latency_ms = { base = 40,", "latency_ms = { base = 4000000,", "latency_ms");
    check_refused("floor_percent = 70", "floor_percent = 70\nsurcharge = 1", "unknown field");
    check_refused("name = \"Nimbus Weather\"", "name = \"Nimbus", "");
}

#[test]
fn not_toml_and_too_many_providers_are_refused() {
    assert!(Directory::parse("this is not toml [", "x.toml").is_err());
    assert!(Directory::parse("", "x.toml").expect_err("no format").to_string().contains("format"));
    let mut text = String::from("format = \"pactum-directory/1\"\n");
    for index in 0..65 {
        text.push_str(&format!(
            "[[provider]]\nid = \"p{index}\"\nname = \"P\"\nintent_types = [\"a.b\"]\n\
             reference_price = {{ amount = \"1\", currency = \"EUR\" }}\nfloor_percent = 50\n\
             concession = \"eager\"\nconcession_percent = 5\nlatency_ms = {{ base = 1, jitter = 1 }}\n\
             failures = {{ timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }}\n"
        ));
    }
    let error = Directory::parse(&text, "big.toml").expect_err("too many");
    assert!(error.to_string().contains("at most 64"), "{error}");
}
