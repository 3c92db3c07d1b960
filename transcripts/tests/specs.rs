//! specs/transcript-v1.toml is the source of truth for the format's constants and reason codes;
//! this test fails when the code drifts from it.

use pactum_transcripts::{BreakReason, EVENT_HASH_TAG, FORMAT, GENESIS_TAG, STATE_HASH_TAG, canonical, limits};

fn spec() -> toml::Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/transcript-v1.toml");
    std::fs::read_to_string(path).expect("spec file").parse().expect("spec is TOML")
}

#[test]
fn constants_match_the_spec() {
    let spec = spec();
    assert_eq!(spec["format"].as_str(), Some(FORMAT));
    let tag = |name: &str| spec["hash"][name].as_str().expect("tag").as_bytes().to_vec();
    assert_eq!(tag("event_tag"), EVENT_HASH_TAG);
    assert_eq!(tag("genesis_tag"), GENESIS_TAG);
    assert_eq!(tag("state_tag"), STATE_HASH_TAG);
    let limit = |name: &str| spec["limits"][name].as_integer().expect("limit") as u64;
    assert_eq!(limit("stream_id_bytes_max"), limits::STREAM_ID_BYTES_MAX as u64);
    assert_eq!(limit("event_kind_bytes_max"), limits::EVENT_KIND_BYTES_MAX as u64);
    assert_eq!(limit("key_id_bytes_max"), limits::KEY_ID_BYTES_MAX as u64);
    assert_eq!(limit("event_body_bytes_max"), limits::EVENT_BODY_BYTES_MAX as u64);
    assert_eq!(limit("jsonl_line_bytes_max"), limits::JSONL_LINE_BYTES_MAX as u64);
    assert_eq!(limit("header_keys_max"), limits::HEADER_KEYS_MAX as u64);
    assert_eq!(limit("stream_events_max"), limits::STREAM_EVENTS_MAX);
    assert_eq!(limit("safe_integer_max"), canonical::SAFE_INTEGER_MAX);
}

#[test]
fn break_reasons_match_the_spec_in_order() {
    let spec = spec();
    let listed: Vec<(String, String)> = spec["break_reason"]
        .as_array()
        .expect("break_reason list")
        .iter()
        .map(|entry| {
            (
                entry["code"].as_str().expect("code").to_owned(),
                entry["description"].as_str().expect("description").to_owned(),
            )
        })
        .collect();
    let coded: Vec<(String, String)> =
        BreakReason::ALL.iter().map(|r| (r.code().to_owned(), r.describe().to_owned())).collect();
    assert_eq!(coded, listed);
}
