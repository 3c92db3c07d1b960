use super::*;

use pactum_transcripts::{Ed25519Signer, Event, EventKind, KeyId, StreamId};

fn key(byte: u8) -> RedactionKey {
    RedactionKey::derive(&SecretSeed::new([byte; 32]))
}

#[test]
fn hmac_matches_rfc_4231_test_case_2() {
    // Key "Jefe": shorter than a block, so zero-padding it to 32 bytes changes nothing.
    let mut jefe = [0_u8; 32];
    jefe[..4].copy_from_slice(b"Jefe");
    assert_eq!(
        Digest::from_bytes(hmac_sha256(&jefe, b"what do ya want for nothing?")).to_hex(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn salts_are_deterministic_secret_and_distinct_per_field() {
    let stream = StreamId::new("session:s-0000000000000001").expect("stream");
    let other_stream = StreamId::new("session:s-0000000000000002").expect("stream");
    let salt = field_salt(&key(1), &stream, 3, "price");
    assert_eq!(salt, field_salt(&key(1), &stream, 3, "price"), "every view gets the same salt");
    let others = [
        field_salt(&key(2), &stream, 3, "price"),
        field_salt(&key(1), &other_stream, 3, "price"),
        field_salt(&key(1), &stream, 4, "price"),
        field_salt(&key(1), &stream, 3, "prices"),
    ];
    assert!(others.iter().all(|other| *other != salt));
    // The redaction key is not an agent's signing seed derived from the same root.
    let root = SecretSeed::new([1; 32]);
    assert_ne!(RedactionKey::derive(&root).0, crate::identities::derive_agent_seed(&root, "buyer", 1));
    assert_eq!(format!("{:?}", key(1)), "RedactionKey(<redacted>)");
}

#[test]
fn commitments_bind_the_value_and_the_salt() {
    let salt = [7_u8; 32];
    let value = json!({"amount_minor": 24, "currency": "USD"});
    let commitment = field_commitment(&salt, &value).expect("commitment");
    // The canonical form is hashed: member order does not matter, the content does.
    let reordered: Value = serde_json::from_str(r#"{"currency":"USD","amount_minor":24}"#).expect("json");
    assert_eq!(field_commitment(&salt, &reordered).expect("commitment"), commitment);
    assert_ne!(field_commitment(&salt, &json!({"amount_minor": 23, "currency": "USD"})).expect("c"), commitment);
    assert_ne!(field_commitment(&[8; 32], &value).expect("commitment"), commitment);
    let mut expected = Vec::from(COMMITMENT_TAG);
    expected.extend_from_slice(&salt);
    expected.extend_from_slice(br#"{"amount_minor":24,"currency":"USD"}"#);
    assert_eq!(commitment, Digest::tagged(&[], &expected));
}

#[test]
fn profiles_never_hide_what_verification_needs() {
    for view in View::ALL {
        for rule in view.profile() {
            let needed = rule.kind == kind::CREATED && ["buyer", "session_id", "format"].contains(&rule.field);
            assert!(!needed, "{view} hides {}.{}", rule.kind, rule.field);
            assert!(!(rule.kind == kind::RECEIPT && rule.field == "receipt"), "{view} hides the receipt");
        }
    }
    assert!(View::Full.profile().is_empty());
    let auditor: Vec<&str> = View::Auditor.profile().iter().map(|rule| rule.field).collect();
    assert_eq!(auditor, ["seed", "preferences"]);
}

fn signed_event(body: Value) -> Event {
    let stream = StreamId::new("session:s-0000000000000001").expect("stream");
    let signer = Ed25519Signer::from_seed(KeyId::new("agent:buyer#1").expect("key id"), &[3; 32]);
    let prev = stream.genesis();
    Event::seal(stream, 0, EventKind::new("note").expect("kind"), body, 1, prev, Some(&signer)).expect("seal")
}

#[test]
fn a_disclosed_value_that_looks_like_a_marker_is_still_a_disclosed_value() {
    let marker = json!({"redacted": "00".repeat(32)});
    let event = signed_event(json!({"a": marker, "b": 1}));
    let commitments = commit_event(&key(1), &event).expect("commit");
    let salts: Map<String, Value> =
        commitments.fields.iter().map(|(name, f)| (name.clone(), Value::String(hex_of(&f.salt)))).collect();
    let mut wire = event.to_json();
    wire["salts"] = Value::Object(salts);
    wire["fields_root"] = Value::String(commitments.fields_root.to_hex());
    let parsed = RedactedEvent::parse(&wire, &event.stream, 0).expect("parse");
    assert_eq!(parsed.redacted, 0);
    assert_eq!(parsed.disclosed.len(), 2);
    assert_eq!(parsed.fields_root_recomputed, commitments.fields_root);
    assert_eq!(parsed.recompute_hash().expect("hash"), event.hash);

    // Without its salt the same field is a redaction, carrying another commitment than the real one.
    wire["salts"].as_object_mut().expect("salts").remove("a");
    let parsed = RedactedEvent::parse(&wire, &event.stream, 0).expect("parse");
    assert_eq!(parsed.redacted, 1);
    assert_ne!(parsed.fields_root_recomputed, commitments.fields_root);
    // A field neither disclosed nor a marker is refused, and so is a salt for no field.
    wire["body"]["b"] = json!({"not": "a marker"});
    wire["salts"].as_object_mut().expect("salts").remove("b");
    assert!(RedactedEvent::parse(&wire, &event.stream, 0).is_err());
    wire["body"]["b"] = json!(1);
    wire["salts"]["b"] = Value::String("00".repeat(32));
    wire["salts"]["c"] = Value::String("00".repeat(32));
    assert!(RedactedEvent::parse(&wire, &event.stream, 0).expect_err("stray salt").contains("\"c\""));
}

#[test]
fn a_directory_without_a_manifest_is_named() {
    let report = verify_bundle_contents(&BundleContents::default());
    assert!(!report.is_valid());
    assert_eq!(report.problems[0].code, ProblemCode::ManifestInvalid);
    let garbage = BundleContents {
        files: [(MANIFEST_FILE.to_owned(), b"{\"format\":\"pactum-bundle/2\"}".to_vec())].into(),
        names: [MANIFEST_FILE.to_owned()].into(),
        problems: Vec::new(),
    };
    assert_eq!(verify_bundle_contents(&garbage).problems[0].code, ProblemCode::ManifestInvalid);
}

#[test]
fn plain_names_only() {
    for name in ["policy.json", "MANIFEST.json", "transcript.redacted.json"] {
        assert!(is_plain_name(name), "{name}");
    }
    for name in ["", ".", "..", "../policy.json", "a/b", ".hidden", "a\\b", "é.json"] {
        assert!(!is_plain_name(name), "{name}");
    }
}
