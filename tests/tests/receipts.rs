//! PEAC receipts issued by Pactum's settlements, checked independently of Pactum's code: the
//! JWS is split and decoded here, the issuer's `did:key` is rebuilt here (multicodec 0xed01 +
//! a base58btc encoder written here), and the Ed25519 signature is verified with
//! `ed25519-zebra`, another implementation than the one that signed it.

mod common;

use common::{Home, assert_ok, json};
use serde_json::Value;

/// Unpadded base64url, decoded by hand (RFC 4648 §5).
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        other => panic!("not base64url: {other}"),
    };
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        buffer = (buffer << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn base58(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u8> = Vec::new();
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in &mut digits {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    std::iter::repeat_n('1', zeros).chain(digits.iter().rev().map(|d| ALPHABET[*d as usize] as char)).collect()
}

#[test]
fn a_settlement_issues_a_peac_receipt_that_verifies_independently() {
    let home = Home::new();
    let negotiated = home.run(&common::negotiate_args("4", &[]));
    assert_ok(&negotiated);
    let session = json(&negotiated)["session_id"].as_str().expect("id").to_owned();
    let shown = home.run(&["receipt", "show", &session, "--peac", "--json"]);
    assert_ok(&shown);
    let shown = json(&shown);
    let jws = shown["jws"].as_str().expect("jws");

    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&base64url(parts[0])).expect("header");
    let claims: Value = serde_json::from_slice(&base64url(parts[1])).expect("claims");
    assert_eq!(header["typ"], "interaction-record+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims, shown["claims"]);
    assert_eq!(claims["peac_version"], "0.2");
    assert_eq!(claims["kind"], "evidence");
    assert_eq!(claims["type"], "org.peacprotocol/payment");
    let commerce = &claims["extensions"]["org.peacprotocol/commerce"];
    assert_eq!(commerce["payment_rail"], "ledger");
    assert_eq!(commerce["amount_minor"], "24");
    assert_eq!(commerce["currency"], "USD");
    assert!(claims["jti"].as_str().expect("jti").chars().nth(14) == Some('7'), "a UUIDv7: {claims}");

    // The issuer is the provider paid: its key from `agents list`, its did:key rebuilt here.
    let provider = json(&negotiated)["agreement"]["provider"].as_str().expect("provider").to_owned();
    let agents = json(&home.run(&["agents", "list", "--json"]));
    let agent = agents.as_array().expect("agents").iter().find(|a| a["id"] == provider.as_str()).expect("agent");
    assert_eq!(header["kid"], agent["key_id"]);
    let key: [u8; 32] = base64url(agent["public_key"].as_str().expect("key")).try_into().expect("32 bytes");
    let mut multicodec = vec![0xed, 0x01];
    multicodec.extend_from_slice(&key);
    assert_eq!(claims["iss"], format!("did:key:z{}", base58(&multicodec)));

    let signature: [u8; 64] = base64url(parts[2]).try_into().expect("64 bytes");
    let message = format!("{}.{}", parts[0], parts[1]);
    let verifier = ed25519_zebra::VerificationKey::try_from(key).expect("a key");
    verifier
        .verify(&ed25519_zebra::Signature::from_bytes(&signature), message.as_bytes())
        .expect("the signature verifies");
    let mut forged = message.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(verifier.verify(&ed25519_zebra::Signature::from_bytes(&signature), &forged).is_err());

    // The receipt_ref is SHA-256 of the compact JWS.
    use sha2::Digest as _;
    assert_eq!(shown["receipt_ref"], format!("sha256:{}", hex::encode(sha2::Sha256::digest(jws.as_bytes()))));
}
