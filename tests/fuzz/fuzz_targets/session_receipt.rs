//! `pactum-receipt/1` receipts (`runtime::session::receipt::verify_receipt`, read as
//! `pactum receipt verify` reads a file): any text is refused with a message or verifies, and
//! verifying is deterministic. Each input is also checked once signed by a key the harness
//! holds, so the checks after the signature are reached too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pactum_runtime::session::receipt::{RECEIPT_BYTES_MAX, receipt_digest, verify_receipt};
use pactum_transcripts::canonical::parse_strict;
use pactum_transcripts::{Ed25519Signer, EventSigner as _, KeyId, public_key_bytes_to_base64url};
use serde_json::{Value, json};

fn check(receipt: &Value) {
    let _ = receipt_digest(receipt);
    match verify_receipt(receipt) {
        Ok(verified) => {
            let again = verify_receipt(receipt).expect("a receipt that verified verifies again");
            assert_eq!(verified, again);
            assert_eq!(receipt_digest(receipt).ok(), Some(verified.digest));
        }
        Err(error) => assert!(!error.0.is_empty()),
    }
}

/// The receipt with the harness's key as its issuer key and a correct signature under it.
fn signed(receipt: &Value) -> Option<Value> {
    let mut object = receipt.as_object()?.clone();
    let key_id = KeyId::new("fuzz-key").ok()?;
    let signer = Ed25519Signer::from_seed(key_id, &[7; 32]);
    let issuer = object.get_mut("issuer")?.as_object_mut()?;
    issuer.insert("public_key".into(), json!(public_key_bytes_to_base64url(signer.verifying_key().as_bytes())));
    let key_id = issuer.get("key_id").cloned().unwrap_or(Value::Null);
    object.remove("signature");
    let digest = receipt_digest(&Value::Object(object.clone())).ok()?;
    let signature = signer.sign_digest(&digest);
    object.insert("signature".into(), json!({ "alg": "Ed25519", "key_id": key_id, "value": signature.to_base64url() }));
    Some(Value::Object(object))
}

fuzz_target!(|bytes: &[u8]| {
    if bytes.len() > RECEIPT_BYTES_MAX {
        return;
    }
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(receipt) = parse_strict(text) else { return };
    check(&receipt);
    if let Some(resigned) = signed(&receipt) {
        check(&resigned);
    }
});
