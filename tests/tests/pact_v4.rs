//! PACT v4 (`pact-transcript/4.0`) export and verification, through the real program.
//!
//! Exported sessions are checked by an independent verifier written here from the published
//! recipe alone: its own RFC 8785 canonical JSON (integers only, which it asserts), SHA-256 from
//! the `sha2` crate, its own base58 decoder and Ed25519 from `ed25519-zebra` (Pactum's v4
//! verifier uses `ed25519-dalek`). No Pactum function is called. Tampered copies must be named
//! with the right error type by `pactum transcript verify`.

mod common;

use std::path::PathBuf;

use common::{Home, assert_ok, json, stdout};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const CLOCK: &str = "1700000000000";

// ---- The independent verifier ------------------------------------------------------------

/// RFC 8785 for the values a Pactum export holds (no floats: asserted).
fn canon(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            assert!(number.is_u64() || number.is_i64(), "the export holds integers only, found {number}");
            out.push_str(&number.to_string());
        }
        Value::String(text) => canon_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canon(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut names: Vec<&String> = members.keys().collect();
            names.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (index, name) in names.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canon_string(name, out);
                out.push(':');
                canon(&members[name], out);
            }
            out.push('}');
        }
    }
}

fn canon_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// H(canon(value without the named top-level members)).
fn hash_without(value: &Value, skip: &[&str]) -> String {
    let mut copy = value.clone();
    for name in skip {
        copy.as_object_mut().expect("object").remove(*name);
    }
    let mut text = String::new();
    canon(&copy, &mut text);
    sha256_hex(&text)
}

fn base58_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut number: Vec<u8> = Vec::new(); // little-endian base 256
    for character in text.chars() {
        let mut carry = ALPHABET.find(character).expect("base58 digit") as u32;
        for byte in number.iter_mut() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            number.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = text.chars().take_while(|c| *c == '1').count();
    let mut bytes = vec![0_u8; zeros];
    bytes.extend(number.iter().rev());
    bytes
}

/// The reference verifier's checks, in its order; panics naming the first failure.
fn independently_verify(transcript: &Value) {
    assert_eq!(transcript["transcript_version"], "pact-transcript/4.0");
    let rounds = transcript["rounds"].as_array().expect("rounds");
    assert!(!rounds.is_empty());
    for (index, round) in rounds.iter().enumerate() {
        assert_eq!(round["round_number"], index, "round_number");
    }
    for pair in rounds.windows(2) {
        assert!(pair[0]["timestamp_ms"].as_u64() <= pair[1]["timestamp_ms"].as_u64(), "timestamps");
    }
    let intent_id = transcript["intent_id"].as_str().expect("intent_id");
    let created_at_ms = transcript["created_at_ms"].as_u64().expect("created_at_ms");
    let mut previous = sha256_hex(&format!("{intent_id}:{created_at_ms}"));
    for (index, round) in rounds.iter().enumerate() {
        assert_eq!(round["previous_round_hash"], previous.as_str(), "round {index} link");
        let recomputed = hash_without(round, &["round_hash"]);
        assert_eq!(round["round_hash"], recomputed.as_str(), "round {index} hash");
        previous = recomputed;
    }
    for (index, round) in rounds.iter().enumerate() {
        let signature = &round["signature"];
        assert!(signature.get("scheme").is_none() || signature["scheme"] == "ed25519");
        assert_eq!(signature["signer_public_key_b58"], round["public_key_b58"], "round {index} signer");
        let key: [u8; 32] = base58_decode(round["public_key_b58"].as_str().expect("key")).try_into().expect("32 bytes");
        let sig: [u8; 64] =
            base58_decode(signature["signature_b58"].as_str().expect("sig")).try_into().expect("64 bytes");
        let message = hex::decode(round["envelope_hash"].as_str().expect("envelope_hash")).expect("hex");
        assert_eq!(message.len(), 32);
        let key = ed25519_zebra::VerificationKey::try_from(key).expect("a key");
        key.verify(&ed25519_zebra::Signature::from_bytes(&sig), &message)
            .unwrap_or_else(|e| panic!("round {index} signature: {e}"));
    }
    if let Some(final_hash) = transcript.get("final_hash") {
        assert_eq!(final_hash, &Value::String(hash_without(transcript, &["final_hash"])), "final_hash");
    }
    if let Some(failure) = transcript.get("failure_event") {
        let expected = hash_without(transcript, &["failure_event", "final_hash"]);
        assert_eq!(failure["transcript_hash"], expected.as_str(), "failure_event.transcript_hash");
        assert!(failure["code"].as_str().is_some_and(|code| code.starts_with("PACT-") && code.len() == 8));
        assert!(!failure["evidence_refs"].as_array().expect("refs").is_empty());
    }
}

/// Each round's content is what its signed Pactum envelope says (checked without Pactum code:
/// the envelope's hash is the round's envelope_hash, and the price and sender agree).
fn contents_match_envelopes(transcript: &Value) {
    let envelopes = transcript["metadata"]["pactum_envelopes"].as_array().expect("envelopes");
    let rounds = transcript["rounds"].as_array().expect("rounds");
    assert_eq!(envelopes.len(), rounds.len());
    for (round, envelope) in rounds.iter().zip(envelopes) {
        assert_eq!(round["envelope_hash"], envelope["hash"]);
        let body = &envelope["body"];
        let summary = &round["content_summary"];
        assert_eq!(summary.get("price"), body.get("price"), "price of round {}", round["round_number"]);
        if envelope["kind"] != "session.created" {
            assert_eq!(round["agent_id"], body["sender"]);
            assert_eq!(round["round_type"], body["round_type"]);
        }
        let mut body_text = String::new();
        canon(body, &mut body_text);
        assert_eq!(round["message_hash"], sha256_hex(&body_text).as_str());
    }
}

// ---- Driving the program -----------------------------------------------------------------

fn negotiate(home: &Home, extra: &[&str]) -> String {
    let mut args = vec!["negotiate", "compute.inference", "--max-price", "0.30", "--currency", "USD"];
    args.extend_from_slice(&["--seed", "4", "--clock", CLOCK, "--yes", "--json"]);
    args.extend_from_slice(extra);
    let output = home.run(&args);
    let document = json(&output);
    document["session_id"].as_str().expect("session id").to_owned()
}

fn export(home: &Home, session_id: &str) -> Vec<u8> {
    let output = home.run(&["transcript", "export", session_id, "--format", "pact-v4"]);
    assert_ok(&output);
    output.stdout
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("a JSON document")
}

/// Runs `pactum transcript verify FILE --json` on `transcript` and returns (exit, report).
fn verify(home: &Home, transcript: &Value, extra: &[&str]) -> (i32, Value) {
    let path: PathBuf = home.write_file("candidate.json", transcript.to_string().as_bytes());
    let mut args = vec!["transcript", "verify", path.to_str().expect("utf-8"), "--json"];
    args.extend_from_slice(extra);
    let output = home.run(&args);
    (output.status.code().expect("exit code"), json(&output))
}

#[track_caller]
fn assert_verdict(home: &Home, transcript: &Value, status: &str, error: Option<&str>) -> Value {
    let (exit, report) = verify(home, transcript, &[]);
    assert_eq!(report["format"], "pact-transcript/4.0");
    assert_eq!(report["integrity_status"], status, "{report:#}");
    let errors: Vec<&str> =
        report["errors"].as_array().expect("errors").iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(errors, error.into_iter().collect::<Vec<_>>(), "{report:#}");
    assert_eq!(exit, if status == "VALID" { 0 } else { 1 });
    report
}

fn finding_types(report: &Value) -> Vec<String> {
    report["pactum_findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["type"].as_str().expect("type").to_owned())
        .collect()
}

/// Recomputes round hashes and links from `from` on, the failure event's hash and the final hash.
fn rehash_from(transcript: &mut Value, from: usize) {
    let count = transcript["rounds"].as_array().expect("rounds").len();
    for index in from..count {
        if index > 0 {
            let previous = transcript["rounds"][index - 1]["round_hash"].clone();
            transcript["rounds"][index]["previous_round_hash"] = previous;
        }
        let hash = hash_without(&transcript["rounds"][index], &["round_hash"]);
        transcript["rounds"][index]["round_hash"] = Value::String(hash);
    }
    if transcript.get("failure_event").is_some() {
        let hash = hash_without(transcript, &["failure_event", "final_hash"]);
        transcript["failure_event"]["transcript_hash"] = Value::String(hash);
    }
    let hash = hash_without(transcript, &["final_hash"]);
    transcript["final_hash"] = Value::String(hash);
}

// ---- Tests ---------------------------------------------------------------------------------

#[test]
fn completed_and_failed_sessions_export_to_v4_that_an_independent_verifier_accepts() {
    let home = Home::new();
    let completed = negotiate(&home, &[]);
    let timed_out = negotiate(&home, &["--latency-ms", "5"]);
    let policy = home.write_file(
        "cap.toml",
        b"format = \"pactum-policy/1\"\nmax_price = { amount = \"0.20\", currency = \"USD\" }\n",
    );
    let capped = negotiate(&home, &["--policy", policy.to_str().expect("utf-8")]);
    let admission = home.write_file("nobody.toml", b"format = \"pactum-policy/1\"\nallowed_providers = [\"nobody\"]\n");
    let refused = negotiate(&home, &["--policy", admission.to_str().expect("utf-8")]);

    for (session_id, failed) in [(&completed, false), (&timed_out, true), (&capped, true), (&refused, true)] {
        let bytes = export(&home, session_id);
        assert_eq!(bytes, export(&home, &format!("session:{session_id}")), "exports are byte-identical");
        assert!(bytes.ends_with(b"\n") && bytes.iter().filter(|b| **b == b'\n').count() == 1, "one canonical line");
        let transcript = parse(&bytes);
        independently_verify(&transcript);
        contents_match_envelopes(&transcript);
        assert_eq!(transcript.get("failure_event").is_some(), failed);
        assert!(transcript.get("final_hash").is_some(), "a terminal session has a final_hash");
        for name in ["policy_hash", "strategy_hash", "identity_snapshot_hash"] {
            let hash = transcript[name].as_str().expect(name);
            assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}: {hash}");
        }
        let report = assert_verdict(&home, &transcript, "VALID", None);
        assert!(finding_types(&report).is_empty(), "{report:#}");
        assert!(report["warnings"].as_array().expect("warnings").is_empty(), "{report:#}");
    }

    let completed_v4 = parse(&export(&home, &completed));
    let last = completed_v4["rounds"].as_array().expect("rounds").last().expect("a round").clone();
    assert_eq!(last["round_type"], "ACCEPT");
    // A session refused at admission has one round: its creation, as the buyer's INTENT.
    let refused_v4 = parse(&export(&home, &refused));
    assert_eq!(refused_v4["rounds"].as_array().expect("rounds").len(), 1);
    assert_eq!(refused_v4["rounds"][0]["round_type"], "INTENT");
    assert_eq!(refused_v4["metadata"]["pactum_envelopes"][0]["kind"], "session.created");
    // Evidence that is a round is also cited as round:<n>:<round_hash>.
    let capped_v4 = parse(&export(&home, &capped));
    let refs: Vec<&str> = capped_v4["failure_event"]["evidence_refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| r.as_str().expect("ref"))
        .collect();
    let round_refs: Vec<&&str> = refs.iter().filter(|r| r.starts_with("round:")).collect();
    assert!(!round_refs.is_empty(), "{refs:?}");
    for reference in round_refs {
        let mut parts = reference.split(':').skip(1);
        let number: usize = parts.next().expect("number").parse().expect("a number");
        assert_eq!(capped_v4["rounds"][number]["round_hash"], parts.next().expect("hash"));
    }

    // The human summary, and --out.
    let out = home.path().join("completed.v4.json");
    assert_ok(&home.run(&[
        "transcript",
        "export",
        &completed,
        "--format",
        "pact-v4",
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert_eq!(std::fs::read(&out).expect("written"), export(&home, &completed));
    let summary = home.run(&["transcript", "verify", out.to_str().expect("utf-8")]);
    assert_ok(&summary);
    assert!(stdout(&summary).contains("pact-transcript/4.0 VALID"), "{}", stdout(&summary));
}

#[test]
fn tampered_v4_transcripts_are_named_with_the_reference_error_types() {
    let home = Home::new();
    let session_id = negotiate(&home, &[]);
    let original = parse(&export(&home, &session_id));
    let priced = original["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .position(|r| r["content_summary"].get("price").is_some())
        .expect("a round with a price");

    // A price edited in place: that round's hash no longer matches its content.
    let mut edited = original.clone();
    edited["rounds"][priced]["content_summary"]["price"]["amount_minor"] = Value::from(1);
    let report = assert_verdict(&home, &edited, "TAMPERED", Some("HASH_CHAIN_BROKEN"));
    assert!(report["errors"][0]["message"].as_str().expect("message").contains("round_hash"), "{report:#}");
    // --allow-compromised: still TAMPERED, but exit 0.
    let (exit, report) = verify(&home, &edited, &["--allow-compromised"]);
    assert_eq!((exit, report["integrity_status"].as_str()), (0, Some("TAMPERED")));

    // Rounds reordered.
    let mut reordered = original.clone();
    reordered["rounds"].as_array_mut().expect("rounds").swap(1, 2);
    assert_verdict(&home, &reordered, "TAMPERED", Some("ROUND_SEQUENCE_INVALID"));

    // A timestamp moved before its predecessor's.
    let mut backdated = original.clone();
    backdated["rounds"][2]["timestamp_ms"] = Value::from(1_600_000_000_000_u64);
    assert_verdict(&home, &backdated, "TAMPERED", Some("TIMESTAMP_NON_MONOTONIC"));

    // A signature swapped in from another round, with every hash recomputed.
    let mut swapped = original.clone();
    let other = swapped["rounds"][1]["signature"]["signature_b58"].clone();
    swapped["rounds"][2]["signature"]["signature_b58"] = other;
    rehash_from(&mut swapped, 2);
    assert_verdict(&home, &swapped, "TAMPERED", Some("SIGNATURE_INVALID"));

    // An edit after the final hash.
    let mut late = original.clone();
    late["intent_type"] = Value::String("weather.data".into());
    assert_verdict(&home, &late, "TAMPERED", Some("FINAL_HASH_MISMATCH"));

    // Not a v4 transcript at all: INVALID, exit 1 even with --allow-compromised.
    let mut foreign = original.clone();
    foreign["transcript_version"] = Value::String("pact-transcript/3.0".into());
    let (exit, report) = verify(&home, &foreign, &["--allow-compromised"]);
    assert_eq!((exit, report["integrity_status"].as_str()), (1, Some("INVALID")));
}

#[test]
fn a_rehashed_price_edit_passes_the_reference_but_pactum_finds_the_round_unsigned() {
    let home = Home::new();
    let session_id = negotiate(&home, &[]);
    let original = parse(&export(&home, &session_id));
    let priced = original["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .position(|r| r["content_summary"].get("price").is_some())
        .expect("a round with a price");
    let mut forged = original.clone();
    forged["rounds"][priced]["content_summary"]["price"]["amount_minor"] = Value::from(1);
    rehash_from(&mut forged, priced);
    independently_verify(&forged);
    let report = assert_verdict(&home, &forged, "VALID", None);
    assert_eq!(finding_types(&report), ["ROUND_CONTENT_UNSIGNED"], "{report:#}");
    let message = report["pactum_findings"][0]["message"].as_str().expect("message");
    assert!(message.starts_with(&format!("round {priced}: content_summary")), "{message}");

    // Without the envelopes nothing binds the content: every round is flagged.
    let mut bare = original.clone();
    bare["metadata"] = serde_json::json!({ "exported_by": "elsewhere" });
    rehash_from(&mut bare, 0);
    let report = assert_verdict(&home, &bare, "VALID", None);
    let rounds = original["rounds"].as_array().expect("rounds").len();
    assert_eq!(finding_types(&report), vec!["ROUND_CONTENT_UNSIGNED".to_owned(); rounds]);
}

#[test]
fn a_terminal_transcript_without_final_hash_is_flagged_by_pactum_only() {
    let home = Home::new();
    let session_id = negotiate(&home, &["--latency-ms", "5"]);
    let mut transcript = parse(&export(&home, &session_id));
    transcript.as_object_mut().expect("object").remove("final_hash");
    let report = assert_verdict(&home, &transcript, "VALID", None);
    assert_eq!(finding_types(&report), ["TERMINAL_WITHOUT_FINAL_HASH"], "{report:#}");
    let human = home.run(&["transcript", "verify", home.path().join("candidate.json").to_str().expect("utf-8")]);
    assert_ok(&human);
    assert!(stdout(&human).contains("pactum TERMINAL_WITHOUT_FINAL_HASH"), "{}", stdout(&human));
}
