//! Regression tests, each named after what broke.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use pactum_transcripts::{
    BreakReason, Digest, Ed25519Signer, Event, EventKind, EventSigner, KeyId, KeyRing, SealError, SignatureBytes,
    StreamId, verify_events,
};
use serde_json::json;
use sha2::{Digest as _, Sha512};

const SEED: [u8; 32] = [1; 32];

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(KeyId::new("agent:a#1").expect("id"), &SEED)
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(KeyId::new("agent:a#1").expect("id"), signer().verifying_key()).expect("key");
    ring
}

/// A stream of `count` events signed by the test key.
fn stream(count: u64) -> Vec<Event> {
    let id = StreamId::new("s1").expect("id");
    let signer = signer();
    let mut prev = id.genesis();
    (0..count)
        .map(|seq| {
            let event = Event::seal(
                id.clone(),
                seq,
                EventKind::new("note").expect("kind"),
                json!({ "x": seq }),
                5 + seq,
                prev,
                Some(&signer as &dyn EventSigner),
            )
            .expect("seal");
            prev = event.hash;
            event
        })
        .collect()
}

/// Signs `digest` with nonce point `r_point` (any point, possibly with a torsion component) and
/// the secret scalar of the test key: S = r + k·a where k = H(R ‖ A ‖ M). Only a key holder can
/// do this; it models a malicious signer crafting an ambiguous signature.
fn crafted_signature(digest: &Digest, nonce: Scalar, torsion: EdwardsPoint) -> SignatureBytes {
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let secret = signing_key.to_scalar();
    let public = signing_key.verifying_key().to_bytes();
    let r_point = nonce * ED25519_BASEPOINT_POINT + torsion;
    let r_bytes = r_point.compress().to_bytes();
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(public);
    hasher.update(digest.as_bytes());
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    let s = nonce + k * secret;
    let mut bytes = [0_u8; 64];
    bytes[..32].copy_from_slice(&r_bytes);
    bytes[32..].copy_from_slice(&s.to_bytes());
    SignatureBytes::from_bytes(bytes)
}

fn verdict(events: &[Event]) -> Option<(u64, BreakReason)> {
    verify_events(&StreamId::new("s1").expect("id"), events, &ring(), None).first_break.map(|b| (b.seq, b.reason))
}

#[test]
fn a_signature_verdict_depended_on_the_other_signatures_in_its_batch() {
    // A small-order R (the identity) with S = k·a satisfies the cofactorless batch equation but
    // not strict single verification: the verdict used to flip with the batch's contents.
    let mut alone = stream(1);
    let identity = CompressedEdwardsY([
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ])
    .decompress()
    .expect("identity decodes");
    alone[0].sig = Some(crafted_signature(&alone[0].hash, Scalar::ZERO, identity));
    assert_eq!(verdict(&alone), Some((0, BreakReason::SignatureInvalid)));
    let mut with_a_bad_neighbour = stream(2);
    with_a_bad_neighbour[0].sig = alone[0].sig;
    let mut flipped = *with_a_bad_neighbour[1].sig.expect("signed").as_bytes();
    flipped[40] ^= 1;
    with_a_bad_neighbour[1].sig = Some(SignatureBytes::from_bytes(flipped));
    assert_eq!(verdict(&with_a_bad_neighbour), Some((0, BreakReason::SignatureInvalid)));

    // A mixed-order R (an honest nonce point plus a torsion point) passes the cofactored
    // equation. Whatever the verdict is, it must be the same alone, in a batch of valid
    // signatures, and next to an invalid one (which must be the one reported).
    let torsion = EIGHT_TORSION[1];
    let mut alone = stream(1);
    alone[0].sig = Some(crafted_signature(&alone[0].hash, Scalar::from(12_345_u64), torsion));
    let single = verdict(&alone);
    let mut in_batch = stream(300);
    in_batch[7].sig = Some(crafted_signature(&in_batch[7].hash, Scalar::from(12_345_u64), torsion));
    let batched = verdict(&in_batch);
    assert_eq!(single.is_none(), batched.is_none(), "alone: {single:?}, in a batch: {batched:?}");
    let mut flipped = *in_batch[200].sig.expect("signed").as_bytes();
    flipped[50] ^= 1;
    in_batch[200].sig = Some(SignatureBytes::from_bytes(flipped));
    let expected = if single.is_none() { 200 } else { 7 };
    assert_eq!(verdict(&in_batch), Some((expected, BreakReason::SignatureInvalid)));
}

#[test]
fn a_non_canonical_r_encoding_is_refused() {
    // y = p + 1 encodes the same point as y = 1 (the identity) but non-canonically.
    let mut events = stream(1);
    let mut bytes = *events[0].sig.expect("signed").as_bytes();
    let p_plus_one: [u8; 32] = {
        let mut b = [0xff_u8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        b
    };
    bytes[..32].copy_from_slice(&p_plus_one);
    events[0].sig = Some(SignatureBytes::from_bytes(bytes));
    assert_eq!(verdict(&events), Some((0, BreakReason::SignatureInvalid)));
}

#[test]
fn a_small_order_public_key_is_refused_by_the_key_ring() {
    let mut ring = KeyRing::new();
    let identity = [1_u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(ring.insert_bytes(KeyId::new("agent:weak#1").expect("id"), &identity).is_err());
    let torsion = EIGHT_TORSION[1].compress().to_bytes();
    assert!(ring.insert_bytes(KeyId::new("agent:weak#2").expect("id"), &torsion).is_err());
    assert!(ring.is_empty());
}

#[test]
fn events_stamped_at_or_beyond_2_pow_53_ms_verified_but_could_not_be_exported() {
    let id = StreamId::new("s1").expect("id");
    let sealed =
        Event::seal(id.clone(), 0, EventKind::new("note").expect("kind"), json!({}), 1 << 53, id.genesis(), None);
    assert!(matches!(sealed, Err(SealError::Canonical(_))), "{sealed:?}");
    // An event built by hand with such a timestamp is reported, not accepted.
    let mut event = Event::seal(id.clone(), 0, EventKind::new("note").expect("kind"), json!({}), 5, id.genesis(), None)
        .expect("seal");
    event.at_ms = 1 << 53;
    let report = verify_events(&id, [&event], &KeyRing::new(), None);
    assert_eq!(report.first_break.map(|b| b.reason), Some(BreakReason::BodyInvalid));
}
