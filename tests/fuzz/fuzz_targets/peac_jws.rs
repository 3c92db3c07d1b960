//! PEAC receipts, compact JWS (`transcripts::peac::verify`) and key sets (`Jwks::parse`): any
//! text is refused with a code or verifies, and verifying is deterministic. Each input is also
//! checked once re-signed by a key the harness holds under the input's `kid`, so the checks
//! after the signature (structure, claims, issuer, time) are reached too.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use pactum_transcripts::peac::{Jwks, VerifyOptions, receipt_ref, unverified_header, verify};
use pactum_transcripts::{Ed25519Signer, KeyId};

/// A time after every receipt the seeds hold (2030-01-01), so valid seeds verify.
const NOW_S: u64 = 1_893_456_000;

fn check(jws: &str, keys: &Jwks) {
    let options = VerifyOptions { now_s: NOW_S, issuer: None, revoked_kids: &[] };
    match verify(jws, keys, &options) {
        Ok(verified) => {
            assert_eq!(verify(jws, keys, &options), Ok(verified.clone()), "verifying is not deterministic");
            assert_eq!(verified.receipt_ref, receipt_ref(jws));
            assert_eq!(Some(verified.header), unverified_header(jws));
        }
        Err(error) => assert!(!error.message.is_empty()),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(jwks) = Jwks::parse(text) {
        assert_eq!(Jwks::parse(text), Ok(jwks), "parsing a key set is not deterministic");
    }
    let signer = Ed25519Signer::from_seed(KeyId::new("fuzz").expect("a valid key id"), &[9; 32]);
    let kid = unverified_header(text)
        .and_then(|header| header.get("kid").and_then(|kid| kid.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "fuzz".to_owned());
    let mut keys = Jwks::new();
    if keys.insert(kid, signer.verifying_key().to_bytes()).is_err() {
        check(text, &keys);
        return;
    }
    check(text, &keys);
    // The same header and payload, signed with the key the set holds for its kid.
    let mut segments = text.splitn(3, '.');
    let (Some(header), Some(payload)) = (segments.next(), segments.next()) else { return };
    let signing_input = format!("{header}.{payload}");
    let signature = signer.sign_message(signing_input.as_bytes());
    let resigned = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()));
    check(&resigned, &keys);
});
