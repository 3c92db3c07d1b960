//! `pactum keys list|jwks|rotate|revoke` and `pactum receipt verify` of PEAC receipts, run as a
//! user or script would: only public material is printed, a rotation keeps old transcripts
//! verifiable and moves new sessions to the new key, a revoked key's receipts fail with
//! `E_KEY_REVOKED`, and a PEAC receipt verifies with `--public-key`, `--jwks` or the
//! constellation's keys. The receipt's signature is also checked with ed25519-zebra, an Ed25519
//! implementation other than the signer's.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Home, assert_fails, assert_ok, json, negotiate_args, stdout};
use pactum_memory::SecretSeed;
use pactum_transcripts::peac::{self, Claims, Commerce, RecordKind};
use pactum_transcripts::{Ed25519Signer, KeyId};
use serde_json::Value;

/// The fixed seed the test issuer signs with.
const ISSUER_SEED: [u8; 32] = [42; 32];
const ISSUER: &str = "https://issuer.example";
const ISSUER_KID: &str = "https://issuer.example/keys#1";

const BASE64URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url, written here so the test does not lean on the code under test.
fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut block = [0u8; 3];
        block[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(block[0]) << 16 | u32::from(block[1]) << 8 | u32::from(block[2]);
        for index in 0..=chunk.len() {
            out.push(char::from(BASE64URL_ALPHABET[((n >> (18 - 6 * index)) & 63) as usize]));
        }
    }
    out
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut bit_count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = BASE64URL_ALPHABET.iter().position(|&c| c == byte).expect("base64url") as u32;
        bits = bits << 6 | value;
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            out.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    out
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A PEAC payment receipt for 12.34 USD, signed by `seed` under `kid`.
fn issue_receipt(seed: &[u8; 32], kid: &str, iss: &str) -> String {
    let signer = Ed25519Signer::from_seed(KeyId::new("test-issuer").expect("key id"), seed);
    let commerce = Commerce {
        payment_rail: "x402".into(),
        amount_minor: 1234,
        currency: "USD".into(),
        reference: Some("pay-1".into()),
        asset: None,
        env: Some("test".into()),
        event: None,
    };
    let iat = now_s() - 60;
    let jti = peac::uuid_v7(iat * 1000, [7; 10]);
    let claims = Claims::new(RecordKind::Evidence, "org.peacprotocol/payment", iss, iat, jti).with_commerce(&commerce);
    peac::issue(&claims, &signer, kid).expect("issue")
}

fn public_key_of(seed: &[u8; 32]) -> [u8; 32] {
    Ed25519Signer::from_seed(KeyId::new("test-issuer").expect("key id"), seed).verifying_key().to_bytes()
}

/// Checks that `text` shows no secret: not the key root, not an agent's seed (as base64url or hex).
#[track_caller]
fn assert_no_secret(text: &str, secrets: &[[u8; 32]]) {
    for secret in secrets {
        assert!(!text.contains(&base64url_encode(secret)), "a secret in the output: {text}");
        assert!(!text.contains(&hex::encode(secret)), "a secret in the output: {text}");
    }
    for word in ["secret", "seed", "\"d\""] {
        assert!(!text.contains(word), "{word} in the output: {text}");
    }
}

/// The constellation's key root, read from the file as an attacker with the file could.
fn key_root(home: &Home) -> SecretSeed {
    let connection = rusqlite::Connection::open(home.default_db()).expect("open");
    let seed: Vec<u8> = connection.query_row("SELECT seed FROM key_root", [], |row| row.get(0)).expect("root");
    SecretSeed::new(seed.try_into().expect("32 bytes"))
}

fn negotiate(home: &Home, seed: &str) -> String {
    let output = home.run(&negotiate_args(seed, &[]));
    assert_ok(&output);
    json(&output)["session_id"].as_str().expect("session id").to_owned()
}

fn keys_of(home: &Home, agent: &str) -> Vec<Value> {
    let output = home.run(&["keys", "list", "--json"]);
    assert_ok(&output);
    json(&output).as_array().expect("array").iter().filter(|key| key["agent_id"] == agent).cloned().collect()
}

/// Signers of a session's events.
fn signers(home: &Home, session_id: &str) -> Vec<String> {
    let output = home.run(&["session", "show", session_id, "--json"]);
    assert_ok(&output);
    json(&output)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["signer"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn reads_create_nothing_and_an_empty_constellation_has_no_keys() {
    let home = Home::new();
    let list = home.run(&["keys", "list", "--json"]);
    assert_ok(&list);
    assert_eq!(json(&list), serde_json::json!([]));
    let jwks = home.run(&["keys", "jwks"]);
    assert_ok(&jwks);
    assert_eq!(json(&jwks), serde_json::json!({"keys": [], "revoked_keys": []}));
    // A PEAC receipt needs a key when there is no constellation to take one from.
    let receipt = issue_receipt(&ISSUER_SEED, ISSUER_KID, ISSUER);
    assert_fails(&home.run(&["receipt", "verify", &receipt]), 2, "RECEIPT_KEY_REQUIRED");
    assert_fails(&home.run(&["keys", "rotate", "buyer"]), 2, "CONSTELLATION_NOT_FOUND");
    assert_fails(&home.run(&["keys", "revoke", "agent:buyer#1"]), 2, "CONSTELLATION_NOT_FOUND");
    assert!(!home.default_db().exists(), "a read created the constellation");
}

#[test]
fn keys_list_and_jwks_show_public_material_only() {
    let home = Home::new();
    negotiate(&home, "1");
    let root = key_root(&home);
    let buyer_seed = pactum_runtime::derive_agent_seed(&root, "buyer", 1);
    let buyer_public = public_key_of(&buyer_seed);

    let list = home.run(&["keys", "list", "--json"]);
    assert_ok(&list);
    assert_no_secret(&stdout(&list), &[*root.expose(), buyer_seed]);
    let buyer = keys_of(&home, "buyer");
    assert_eq!(buyer.len(), 1);
    assert_eq!(buyer[0]["kid"], "agent:buyer#1");
    assert_eq!(buyer[0]["status"], "current");
    assert_eq!(buyer[0]["public_key"], base64url_encode(&buyer_public));
    assert_eq!(buyer[0]["did_key"], peac::did_key_for_ed25519(&buyer_public));
    assert!(json(&list).as_array().expect("array").len() > 1, "the providers' keys are listed too");

    let human = home.run(&["keys", "list"]);
    assert_ok(&human);
    assert!(stdout(&human).contains("agent:buyer#1") && stdout(&human).contains("current"), "{}", stdout(&human));
    assert_no_secret(&stdout(&human), &[*root.expose(), buyer_seed]);

    let jwks = home.run(&["keys", "jwks", "--agent", "buyer"]);
    assert_ok(&jwks);
    assert_no_secret(&stdout(&jwks), &[*root.expose(), buyer_seed]);
    let document = json(&jwks);
    assert_eq!(document["keys"].as_array().expect("keys").len(), 1);
    let key = &document["keys"][0];
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    assert_eq!(key["kid"], "agent:buyer#1");
    assert_eq!(key["x"], base64url_encode(&buyer_public));
    // What the program publishes is a key set the verifier accepts.
    peac::Jwks::parse(&stdout(&jwks)).expect("a valid JWKS");
    assert_fails(&home.run(&["keys", "jwks", "--agent", "nobody"]), 2, "NOT_FOUND");
}

#[test]
fn rotation_retires_the_old_key_keeps_old_sessions_verifiable_and_signs_new_ones_with_the_new_key() {
    let home = Home::new();
    let old_session = negotiate(&home, "1");
    assert!(signers(&home, &old_session).iter().any(|signer| signer == "agent:buyer#1"));

    let rotate = home.run(&["keys", "rotate", "buyer", "--json"]);
    assert_ok(&rotate);
    let rotated = json(&rotate);
    assert_eq!(rotated["kid"], "agent:buyer#2");
    assert_eq!(rotated["previous_kid"], "agent:buyer#1");
    let root = key_root(&home);
    let second_seed = pactum_runtime::derive_agent_seed(&root, "buyer", 2);
    assert_eq!(rotated["public_key"], base64url_encode(&public_key_of(&second_seed)));
    assert_no_secret(&stdout(&rotate), &[*root.expose(), second_seed]);

    let buyer = keys_of(&home, "buyer");
    let status: Vec<(&str, &str)> =
        buyer.iter().map(|key| (key["kid"].as_str().expect("kid"), key["status"].as_str().expect("status"))).collect();
    assert_eq!(status, [("agent:buyer#1", "retired"), ("agent:buyer#2", "current")]);

    // The old session still verifies and replays against the retired key.
    let transcript = format!("session:{old_session}");
    let verify = home.run(&["transcript", "verify", &transcript, "--json"]);
    assert_ok(&verify);
    let replay = home.run(&["session", "replay", &old_session, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);

    // A new session signs with the new key.
    let new_session = negotiate(&home, "2");
    let new_signers = signers(&home, &new_session);
    assert!(new_signers.iter().any(|signer| signer == "agent:buyer#2"), "{new_signers:?}");
    assert!(!new_signers.iter().any(|signer| signer == "agent:buyer#1"), "{new_signers:?}");
    assert_ok(&home.run(&["transcript", "verify", &format!("session:{new_session}")]));
    let check = home.run(&["constellation", "check", "--json"]);
    assert_ok(&check);

    // Rotating again moves on to the third generation.
    let again = home.run(&["keys", "rotate", "buyer", "--json"]);
    assert_ok(&again);
    assert_eq!(json(&again)["kid"], "agent:buyer#3");
    assert_fails(&home.run(&["keys", "rotate", "nobody"]), 2, "NOT_FOUND");
}

#[test]
fn a_receipt_signed_with_a_revoked_key_fails_with_e_key_revoked() {
    let home = Home::new();
    negotiate(&home, "1");
    let root = key_root(&home);
    let buyer_seed = pactum_runtime::derive_agent_seed(&root, "buyer", 1);
    let receipt = issue_receipt(&buyer_seed, "agent:buyer#1", ISSUER);

    // Signed by the buyer's current key: valid against the constellation's own keys.
    let valid = home.run(&["receipt", "verify", &receipt, "--json"]);
    assert_ok(&valid);
    assert_eq!(json(&valid)["valid"], true);
    // A receipt naming the buyer's kid but signed by another key is refused.
    let forged = issue_receipt(&ISSUER_SEED, "agent:buyer#1", ISSUER);
    let forged = home.run(&["receipt", "verify", &forged, "--json"]);
    assert_eq!(forged.status.code(), Some(1));
    assert_eq!(json(&forged)["code"], "E_INVALID_SIGNATURE");

    let revoke = home.run(&["keys", "revoke", "agent:buyer#1", "--reason", "the laptop was lost"]);
    assert_ok(&revoke);
    assert!(stdout(&revoke).contains("pactum keys rotate buyer"), "{}", stdout(&revoke));
    assert_fails(&home.run(&["keys", "revoke", "agent:buyer#1"]), 1, "KEY_ALREADY_REVOKED");
    assert_fails(&home.run(&["keys", "revoke", "agent:nobody#1"]), 2, "KEY_NOT_FOUND");

    let buyer = keys_of(&home, "buyer");
    assert_eq!(buyer[0]["status"], "revoked");
    assert_eq!(buyer[0]["revocation_reason"], "the laptop was lost");

    let refused = home.run(&["receipt", "verify", &receipt, "--json"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let document = json(&refused);
    assert_eq!((document["valid"].as_bool(), document["code"].as_str()), (Some(false), Some("E_KEY_REVOKED")));
    assert_eq!(document["claims"], Value::Null);
    assert_eq!(document["header"]["kid"], "agent:buyer#1");
    let human = home.run(&["receipt", "verify", &receipt]);
    assert_eq!(human.status.code(), Some(1));
    assert!(stdout(&human).starts_with("INVALID") && stdout(&human).contains("E_KEY_REVOKED"), "{}", stdout(&human));

    // The published JWKS carries the revocation: a verifier given the file refuses it too.
    let jwks = home.run(&["keys", "jwks"]);
    assert_ok(&jwks);
    let document = json(&jwks);
    assert!(document["keys"].as_array().expect("keys").iter().all(|key| key["kid"] != "agent:buyer#1"));
    assert_eq!(document["revoked_keys"][0]["kid"], "agent:buyer#1");
    let file = home.write_file("jwks.json", &jwks.stdout);
    let refused = home.run(&["receipt", "verify", &receipt, "--jwks", file.to_str().expect("utf-8"), "--json"]);
    assert_eq!(json(&refused)["code"], "E_KEY_REVOKED");

    // Rotating gives the buyer a usable key again; the revoked one stays revoked.
    assert_ok(&home.run(&["keys", "rotate", "buyer"]));
    let status: Vec<String> =
        keys_of(&home, "buyer").iter().map(|key| key["status"].as_str().expect("status").to_owned()).collect();
    assert_eq!(status, ["revoked", "current"]);
}

#[test]
fn a_peac_receipt_verifies_with_a_public_key_or_a_jwks_file_and_its_signature_with_ed25519_zebra() {
    let home = Home::new();
    let receipt = issue_receipt(&ISSUER_SEED, ISSUER_KID, ISSUER);
    let public_key = base64url_encode(&public_key_of(&ISSUER_SEED));

    // An independent Ed25519 implementation accepts the signature over `header.payload`.
    let (signing_input, signature) = receipt.rsplit_once('.').expect("three segments");
    let signature: [u8; 64] = base64url_decode(signature).try_into().expect("64 bytes");
    let key = ed25519_zebra::VerificationKey::try_from(public_key_of(&ISSUER_SEED)).expect("key");
    key.verify(&ed25519_zebra::Signature::from_bytes(&signature), signing_input.as_bytes())
        .expect("ed25519-zebra verifies the receipt");

    // Inline, with --public-key: VALID, with the facts a person checks.
    let output = home.run(&["receipt", "verify", &receipt, "--public-key", &public_key]);
    assert_ok(&output);
    let text = stdout(&output);
    assert!(text.starts_with("VALID"), "{text}");
    for expected in [ISSUER, "org.peacprotocol/payment", "12.34 USD via x402", &peac::receipt_ref(&receipt)] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }

    // In a file, with --jwks FILE and --json.
    let receipt_file = home.write_file("receipt.jws", format!("{receipt}\n").as_bytes());
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": ISSUER_KID, "x": public_key}]});
    let jwks_file = home.write_file("issuer-jwks.json", jwks.to_string().as_bytes());
    let receipt_path = receipt_file.to_str().expect("utf-8");
    let jwks_path = jwks_file.to_str().expect("utf-8");
    let output = home.run(&["receipt", "verify", receipt_path, "--jwks", jwks_path, "--json"]);
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["valid"], true);
    assert_eq!(document["code"], Value::Null);
    assert_eq!(document["claims"]["iss"], ISSUER);
    assert_eq!(document["claims"]["extensions"]["org.peacprotocol/commerce"]["amount_minor"], "1234");
    assert_eq!(document["receipt_ref"], peac::receipt_ref(&receipt));
    assert_eq!(document["header"]["kid"], ISSUER_KID);
    assert!(!home.default_db().exists(), "verifying with given keys created a constellation");

    // The expected issuer: matching passes, another fails with E_ISSUER_MISMATCH.
    let matching = home.run(&["receipt", "verify", &receipt, "--public-key", &public_key, "--issuer", ISSUER]);
    assert_ok(&matching);
    let other = home.run(&[
        "receipt",
        "verify",
        &receipt,
        "--public-key",
        &public_key,
        "--issuer",
        "https://other.example",
        "--json",
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert_eq!(json(&other)["code"], "E_ISSUER_MISMATCH");

    // A tampered amount (re-encoded claims under the original signature): E_INVALID_SIGNATURE.
    let [header, payload, signature] = receipt.split('.').collect::<Vec<_>>()[..] else { panic!("three segments") };
    let claims = String::from_utf8(base64url_decode(payload)).expect("utf-8");
    let altered = claims.replacen("\"1234\"", "\"1\"", 1);
    assert_ne!(altered, claims);
    let tampered = format!("{header}.{}.{signature}", base64url_encode(altered.as_bytes()));
    let output = home.run(&["receipt", "verify", &tampered, "--public-key", &public_key, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let document = json(&output);
    assert_eq!((document["valid"].as_bool(), document["code"].as_str()), (Some(false), Some("E_INVALID_SIGNATURE")));
    assert_eq!(document["receipt_ref"], Value::Null);

    // The wrong key, and a key set without the receipt's kid.
    let wrong_key = base64url_encode(&public_key_of(&[9; 32]));
    let output = home.run(&["receipt", "verify", &receipt, "--public-key", &wrong_key, "--json"]);
    assert_eq!(json(&output)["code"], "E_INVALID_SIGNATURE");
    let empty = home.write_file("empty-jwks.json", br#"{"keys":[]}"#);
    let output = home.run(&["receipt", "verify", &receipt, "--jwks", empty.to_str().expect("utf-8"), "--json"]);
    assert_eq!(json(&output)["code"], "E_KEY_NOT_FOUND");

    // Bad key inputs are usage errors, not verdicts.
    let broken = home.write_file("broken-jwks.json", b"{\"keys\": 1}");
    assert_fails(
        &home.run(&["receipt", "verify", &receipt, "--jwks", broken.to_str().expect("utf-8")]),
        2,
        "JWKS_INVALID",
    );
    assert_fails(&home.run(&["receipt", "verify", &receipt, "--public-key", "not-a-key"]), 1, "KEY_INVALID");
    assert_fails(&home.run(&["receipt", "verify", "missing.jws", "--public-key", &public_key]), 2, "IO_ERROR");
    assert!(!home.default_db().exists());
}
