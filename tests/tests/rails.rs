//! `pactum rail check`, run as a user or script would, on the rail fixtures of the runtime's
//! tests (runtime/tests/fixtures/rails): valid x402 and Stripe evidence prints the rail-neutral
//! evidence and its PEAC commerce extension; tampered or unexpected evidence fails with exit 1 and
//! `RAIL_EVIDENCE_INVALID` naming the reason; the command creates no constellation.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Home, assert_fails, assert_ok, json, stdout};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SECRET_VARIABLE: &str = "PACTUM_TEST_WEBHOOK_SECRET";
const SECRET: &str = "whsec_0c9e4b7a1d2f3e5c6b8a9d0e";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures/rails").join(name);
    path.to_str().expect("UTF-8 path").to_owned()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).expect("fixture")).expect("JSON")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// HMAC-SHA256 written here, so the test does not lean on the adapter's own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0_u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new().chain_update(block.map(|k| k ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(block.map(|k| k ^ 0x5c)).chain_update(inner).finalize().to_vec()
}

fn stripe_signature(payload: &[u8], timestamp_s: u64, secret: &str) -> String {
    let mut signed = format!("{timestamp_s}.").into_bytes();
    signed.extend_from_slice(payload);
    format!("t={timestamp_s},v1={}", hex::encode(hmac_sha256(secret.as_bytes(), &signed)))
}

fn x402_args(requirements: &str, extra: &[&str]) -> Vec<String> {
    let evidence = fixture("x402-payment-response.txt");
    let args = ["rail", "check", "--rail", "x402", "--requirements", requirements, "--evidence", &evidence];
    args.iter().chain(extra).map(|arg| (*arg).to_owned()).collect()
}

fn run(home: &Home, args: &[String]) -> std::process::Output {
    home.command().env(SECRET_VARIABLE, SECRET).args(args).output().expect("run pactum")
}

#[test]
fn x402_evidence_prints_the_neutral_evidence_and_commerce_extension() {
    let home = Home::new();
    let requirements = fixture("x402-requirements.json");
    let output = run(&home, &x402_args(&requirements, &["--amount", "12.34", "--currency", "USD", "--env", "test"]));
    assert_ok(&output);
    let text = stdout(&output);
    assert!(text.starts_with("VALID        x402 evidence"), "{text}");
    assert!(text.contains("amount       12.34 USD (1234 minor units)"), "{text}");
    assert!(text.contains("checked      amount, currency, env"), "{text}");

    let output = run(&home, &x402_args(&requirements, &["--status", "settled", "--json"]));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["valid"], true);
    assert_eq!(document["checked"], json!(["status"]));
    assert_eq!(
        document["commerce_extension"]["org.peacprotocol/commerce"],
        json!({
            "payment_rail": "x402",
            "amount_minor": "1234",
            "currency": "USD",
            "reference": "0x5e1d1b7b3f2c8a4f9e0d6c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29",
            "asset": "eip155:84532/erc20:0x036cbd53842c5426634e7929541ec2318f3dcf7e",
            "env": "test"
        })
    );
    assert!(!home.default_db().exists(), "checking evidence creates no constellation");
}

#[test]
fn stripe_objects_and_signed_webhooks_are_read() {
    let home = Home::new();
    let args = |evidence: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["rail", "check", "--rail", "stripe", "--evidence", evidence].into_iter().map(str::to_owned).collect();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let intent = fixture("stripe-payment-intent.json");
    let output = run(&home, &args(&intent, &["--amount", "12.34", "--currency", "usd", "--env", "test", "--json"]));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["evidence"]["reference"], "pi_3QkR2vLkdIwHu7ix0Wn8Zr4T");
    assert_eq!(document["evidence"]["status"], "settled");
    assert_eq!(document["signature"], Value::Null);

    // A webhook signed now, verified with the secret from the environment.
    let payload = std::fs::read(fixture("stripe-webhook-charge-refunded.json")).expect("fixture");
    let header = stripe_signature(&payload, now_s(), SECRET);
    let signed = ["--webhook-secret-env", SECRET_VARIABLE, "--signature-header", header.as_str()];
    let mut extra = signed.to_vec();
    extra.extend(["--status", "refunded", "--json"]);
    let output = run(&home, &args(&fixture("stripe-webhook-charge-refunded.json"), &extra));
    assert_ok(&output);
    let document = json(&output);
    assert_eq!(document["signature"], "verified");
    assert_eq!(document["evidence"]["event"], "charge.refunded");
    assert_eq!(document["commerce_extension"]["org.peacprotocol/commerce"]["event"], "charge.refunded");

    // Without the secret the event is read but says its signature was not checked.
    let output = run(&home, &args(&fixture("stripe-webhook-payment-intent-succeeded.json"), &[]));
    assert_ok(&output);
    assert!(stdout(&output).contains("signature    NOT CHECKED"), "{}", stdout(&output));

    // The same header over other bytes does not verify.
    let mut altered = fixture_json("stripe-webhook-charge-refunded.json");
    altered["data"]["object"]["amount_refunded"] = json!(1000);
    altered["data"]["object"]["refunded"] = json!(false);
    let altered = home.write_file("altered.json", altered.to_string().as_bytes());
    let output = run(&home, &args(altered.to_str().expect("path"), &signed));
    let line = assert_fails(&output, 1, "RAIL_EVIDENCE_INVALID");
    assert!(line.contains("(signature_mismatch)"), "{line}");
    assert_eq!(stdout(&output), "", "nothing on stdout without --json");
}

#[test]
fn tampered_or_unexpected_evidence_fails_with_its_reason() {
    let home = Home::new();
    let requirements = fixture_json("x402-requirements.json");
    let write = |name: &str, value: &Value| home.write_file(name, value.to_string().as_bytes());
    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (requirements.clone(), vec!["--amount", "12.35", "--currency", "USD"], "amount_mismatch"),
        (requirements.clone(), vec!["--env", "live"], "env_mismatch"),
        (requirements.clone(), vec!["--status", "refunded"], "status_mismatch"),
        (json!({"scheme": "exact"}), vec![], "field_missing"),
        (
            {
                let mut value = requirements.clone();
                value["maxAmountRequired"] = json!(12_340_000);
                value
            },
            vec![],
            "amount_invalid",
        ),
        (
            {
                let mut value = requirements.clone();
                value["network"] = json!("solana");
                value
            },
            vec![],
            "network_unknown",
        ),
    ];
    for (index, (value, extra, reason)) in cases.into_iter().enumerate() {
        let path = write(&format!("requirements-{index}.json"), &value);
        let output = run(&home, &x402_args(path.to_str().expect("path"), &extra));
        let line = assert_fails(&output, 1, "RAIL_EVIDENCE_INVALID");
        assert!(line.contains(&format!("({reason})")), "case {index}: {line}");
    }
    let mut intent = fixture_json("stripe-payment-intent.json");
    intent.as_object_mut().expect("object").remove("currency");
    let path = write("intent.json", &intent);
    let args: Vec<String> = ["rail", "check", "--rail", "stripe", "--evidence", path.to_str().expect("path"), "--json"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let output = run(&home, &args);
    assert_fails(&output, 1, "RAIL_EVIDENCE_INVALID");
    let document = json(&output);
    assert_eq!((document["valid"].clone(), document["reason"].clone()), (json!(false), json!("field_missing")));
    assert_eq!(document["code"], "RAIL_EVIDENCE_INVALID");

    let no_requirements: Vec<String> =
        ["rail", "check", "--rail", "x402", "--evidence", &fixture("x402-payment-response.txt")]
            .into_iter()
            .map(str::to_owned)
            .collect();
    assert_fails(&run(&home, &no_requirements), 2, "USAGE");
    let missing_file = x402_args("no-such-file.json", &[]);
    assert_fails(&run(&home, &missing_file), 2, "IO_ERROR");
}
