//! Tamper evidence: every single edit of a stream built through `TranscriptStream` is reported by
//! `verify_events` at the exact seq and with the exact reason the verifier's check order implies.

mod common;

use common::{
    EventSpec, Fixture, KEYS, KINDS, Who, build, canonical, config, json_object, key_id, kind, nonempty_text,
    signed_count, signed_who, sparse_specs, specs, stream_id, who,
};
use pactum_transcripts::canonical::SAFE_INTEGER_MAX;
use pactum_transcripts::{
    Anchor, BreakReason, Digest, Event, EventSigner, SignatureBytes, StreamId, VerifyReport, verify_events,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// Verifies `events` against `anchor` (the head of the untouched stream) with the ring trusting
/// A and B, and asserts the outcome: valid, or the first break at exactly `(seq, reason)`.
/// Also checks the counters the report derives from the break position.
fn check(anchor: &Anchor, events: &[Event], expected: Option<(u64, BreakReason)>) -> VerifyReport {
    let report = verify_events(&stream_id(), events, &KEYS.trusted, Some(*anchor));
    assert_eq!(report.stream, stream_id());
    match expected {
        None => {
            assert!(
                report.is_valid(),
                "expected a valid stream, found {}",
                report.first_break.as_ref().expect("break")
            );
            assert_eq!(report.events_verified, events.len() as u64);
            assert_eq!(report.signatures_verified, signed_count(events));
            assert_eq!(report.head_hash, events.last().map(|event| event.hash));
        }
        Some((seq, reason)) => {
            let Some(broken) = report.first_break.as_ref() else {
                panic!("expected {reason} at seq {seq}, but the stream verified");
            };
            assert_eq!((broken.seq, broken.reason), (seq, reason), "found {broken}");
            assert_eq!(report.head_hash, None);
            // Events before a break at the end were all fine; otherwise those before `seq` were.
            let passed = match reason {
                BreakReason::Truncated | BreakReason::HeadMismatch => events.len(),
                _ => usize::try_from(seq).expect("small"),
            };
            assert_eq!(report.events_verified, passed as u64, "events_verified for {broken}");
            assert_eq!(report.signatures_verified, signed_count(&events[..passed]), "signatures_verified for {broken}");
        }
    }
    report
}

fn flip_digest(digest: Digest, byte: usize, mask: u8) -> Digest {
    let mut bytes = *digest.as_bytes();
    bytes[byte] ^= mask;
    Digest::from_bytes(bytes)
}

fn flip_sig(sig: SignatureBytes, byte: usize, mask: u8) -> SignatureBytes {
    let mut bytes = *sig.as_bytes();
    bytes[byte] ^= mask;
    SignatureBytes::from_bytes(bytes)
}

fn rehash(event: &mut Event) {
    event.hash = event.compute_hash().expect("canonical body");
}

/// Re-seals `event` as `signer` would: signer id, hash over it, signature over the hash.
fn reseal(event: &mut Event, signer: Option<&dyn EventSigner>) {
    event.signer = signer.map(|s| s.key_id().clone());
    rehash(event);
    event.sig = signer.map(|s| s.sign_digest(&event.hash));
}

fn other_trusted(signer: &pactum_transcripts::KeyId) -> &'static dyn EventSigner {
    if signer == KEYS.a.key_id() { &KEYS.b } else { &KEYS.a }
}

fn seq(i: usize) -> u64 {
    i as u64
}

/// An in-place edit of one field of one event, with the reason it must be reported under.
#[derive(Clone, Debug)]
enum Tamper {
    Stream(StreamId),
    Seq(u64),
    Prev {
        byte: usize,
        mask: u8,
    },
    Kind {
        offset: usize,
    },
    Body(Value),
    AtMs(u64),
    Hash {
        byte: usize,
        mask: u8,
    },
    /// Only for signed events.
    Sig {
        byte: usize,
        mask: u8,
    },
    /// Only for signed events: the other trusted key id, hash and signature kept.
    SignerSwap,
    /// Only for signed events: the signature removed, the signer kept.
    StripSig,
    /// A char of the body's `memo` string changed, hash kept.
    MemoChar {
        memo: String,
        at: Index,
    },
}

impl Tamper {
    fn needs_signature(&self) -> bool {
        matches!(self, Tamper::Sig { .. } | Tamper::SignerSwap | Tamper::StripSig)
    }

    /// Prepares the spec of the event to be tampered with so the edit applies.
    fn prepare(&self, spec: &mut EventSpec, signer: Who) {
        if self.needs_signature() && spec.who == Who::Nobody {
            spec.who = signer;
        }
        if let Tamper::MemoChar { memo, .. } = self {
            spec.body.as_object_mut().expect("object body").insert("memo".into(), Value::String(memo.clone()));
        }
    }

    fn apply(&self, event: &mut Event) -> BreakReason {
        match self {
            Tamper::Stream(other) => {
                event.stream = other.clone();
                BreakReason::StreamMismatch
            }
            Tamper::Seq(new) => {
                event.seq = if *new == event.seq { new.wrapping_add(1) } else { *new };
                BreakReason::SeqMismatch
            }
            Tamper::Prev { byte, mask } => {
                event.prev = flip_digest(event.prev, *byte, *mask);
                BreakReason::PrevMismatch
            }
            Tamper::Kind { offset } => {
                let all = [&KINDS[..], &["tampered.kind"]].concat();
                let current = all.iter().position(|k| *k == event.kind.as_str()).expect("generated kind");
                event.kind = kind(all[(current + offset) % all.len()]);
                BreakReason::HashMismatch
            }
            Tamper::Body(other) => {
                let mut other = other.clone();
                if canonical(&other) == canonical(&event.body) {
                    // Generated names are at most 8 chars, so this member is new.
                    other.as_object_mut().expect("object").insert("__tampered__".into(), Value::Bool(true));
                }
                event.body = other;
                BreakReason::HashMismatch
            }
            Tamper::AtMs(new) => {
                event.at_ms = if *new == event.at_ms { new + 1 } else { *new };
                // The hash is checked before time order, so even a regression is a hash mismatch.
                BreakReason::HashMismatch
            }
            Tamper::Hash { byte, mask } => {
                event.hash = flip_digest(event.hash, *byte, *mask);
                BreakReason::HashMismatch
            }
            Tamper::Sig { byte, mask } => {
                event.sig = Some(flip_sig(event.sig.expect("signed"), *byte, *mask));
                BreakReason::SignatureInvalid
            }
            Tamper::SignerSwap => {
                let current = event.signer.as_ref().expect("signed");
                event.signer = Some(other_trusted(current).key_id().clone());
                BreakReason::HashMismatch
            }
            Tamper::StripSig => {
                event.sig = None;
                BreakReason::SignatureMissing
            }
            Tamper::MemoChar { at, .. } => {
                let Some(Value::String(memo)) = event.body.get_mut("memo") else { panic!("memo prepared") };
                let mut chars: Vec<char> = memo.chars().collect();
                let k = at.index(chars.len());
                // Flipping bit 0 of a scalar value never lands in the surrogate range.
                chars[k] = char::from_u32(u32::from(chars[k]) ^ 1).expect("scalar value");
                *memo = chars.into_iter().collect();
                BreakReason::HashMismatch
            }
        }
    }
}

fn byte_and_mask(len: usize) -> impl Strategy<Value = (usize, u8)> {
    (0..len, 1_u8..=255)
}

fn stream_tamper() -> impl Strategy<Value = Tamper> {
    "[a-z0-9_:.-]{1,16}"
        .prop_filter("another stream", |text| text != stream_id().as_str())
        .prop_map(|text| Tamper::Stream(StreamId::new(text).expect("valid id")))
}
fn seq_tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![0_u64..32, any::<u64>()].prop_map(Tamper::Seq)
}
fn prev_tamper() -> impl Strategy<Value = Tamper> {
    byte_and_mask(32).prop_map(|(byte, mask)| Tamper::Prev { byte, mask })
}
fn kind_tamper() -> impl Strategy<Value = Tamper> {
    (1..=KINDS.len()).prop_map(|offset| Tamper::Kind { offset })
}
fn body_tamper() -> impl Strategy<Value = Tamper> {
    json_object().prop_map(Tamper::Body)
}
fn at_ms_tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![0..=SAFE_INTEGER_MAX, common::START_MS..common::START_MS + 30_000].prop_map(Tamper::AtMs)
}
fn hash_tamper() -> impl Strategy<Value = Tamper> {
    byte_and_mask(32).prop_map(|(byte, mask)| Tamper::Hash { byte, mask })
}
fn sig_tamper() -> impl Strategy<Value = Tamper> {
    byte_and_mask(64).prop_map(|(byte, mask)| Tamper::Sig { byte, mask })
}
fn memo_tamper() -> impl Strategy<Value = Tamper> {
    (nonempty_text(), any::<Index>()).prop_map(|(memo, at)| Tamper::MemoChar { memo, at })
}
fn any_tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        stream_tamper(),
        seq_tamper(),
        prev_tamper(),
        kind_tamper(),
        body_tamper(),
        at_ms_tamper(),
        hash_tamper(),
        sig_tamper(),
        Just(Tamper::SignerSwap),
        Just(Tamper::StripSig),
        memo_tamper(),
    ]
}

/// Streams, a position and a tamper, with the spec at that position prepared for the tamper.
fn tampered_case(tamper: impl Strategy<Value = Tamper>) -> impl Strategy<Value = (Vec<EventSpec>, usize, Tamper)> {
    tampered_case_in(specs(1..=24), tamper)
}

fn tampered_case_in(
    specs: impl Strategy<Value = Vec<EventSpec>>,
    tamper: impl Strategy<Value = Tamper>,
) -> impl Strategy<Value = (Vec<EventSpec>, usize, Tamper)> {
    (specs, any::<Index>(), tamper, signed_who()).prop_map(|(mut specs, at, tamper, signer)| {
        let i = at.index(specs.len());
        tamper.prepare(&mut specs[i], signer);
        (specs, i, tamper)
    })
}

/// Applies `tamper` to event `i` of the stream built from `specs` and checks the expected break.
fn check_field_tamper(specs: &[EventSpec], i: usize, tamper: &Tamper) {
    let fixture = build(specs);
    let mut events = fixture.events.clone();
    let reason = tamper.apply(&mut events[i]);
    assert_ne!(events[i], fixture.events[i], "the tamper changed nothing");
    check(&fixture.anchor, &events, Some((seq(i), reason)));
}

proptest! {
    #![proptest_config(config(64, 0x5eed_7a3e_0001))]

    #[test]
    fn untouched_stream_verifies(specs in specs(1..=24)) {
        let Fixture { events, anchor } = build(&specs);
        check(&anchor, &events, None);
        // Independently of the verifier: the signers, timestamps and chain are what was asked for.
        let mut at_ms = common::START_MS;
        let mut prev = stream_id().genesis();
        for (i, (event, spec)) in events.iter().zip(&specs).enumerate() {
            at_ms += spec.delta_ms;
            prop_assert_eq!(event.seq, seq(i));
            prop_assert_eq!(event.at_ms, at_ms);
            prop_assert_eq!(event.prev, prev);
            prop_assert_eq!(event.signer.as_ref(), spec.who.signer().map(|s| s.key_id()));
            prop_assert_eq!(event.sig.is_some(), spec.who != Who::Nobody);
            prop_assert_eq!(canonical(&event.body), canonical(&spec.body));
            prev = event.hash;
        }
        prop_assert_eq!(anchor, Anchor { event_count: events.len() as u64, head_hash: Some(prev) });
    }

    #[test]
    fn changed_stream_is_stream_mismatch((specs, i, tamper) in tampered_case(stream_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn changed_seq_is_seq_mismatch((specs, i, tamper) in tampered_case(seq_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn changed_prev_is_prev_mismatch((specs, i, tamper) in tampered_case(prev_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn changed_kind_is_hash_mismatch((specs, i, tamper) in tampered_case(kind_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn changed_body_is_hash_mismatch((specs, i, tamper) in tampered_case(body_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn changed_char_in_body_string_is_hash_mismatch((specs, i, tamper) in tampered_case(memo_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    /// Any change of `at_ms`, even one that breaks time order, is caught by the hash first.
    #[test]
    fn changed_at_ms_is_hash_mismatch((specs, i, tamper) in tampered_case(at_ms_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn later_at_ms_on_last_event_is_hash_mismatch(specs in specs(1..=24), delta in 1_u64..1_000_000) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let last = events.len() - 1;
        events[last].at_ms += delta;
        check(&fixture.anchor, &events, Some((seq(last), BreakReason::HashMismatch)));
    }

    #[test]
    fn changed_hash_is_hash_mismatch((specs, i, tamper) in tampered_case(hash_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn other_trusted_signer_is_hash_mismatch((specs, i, tamper) in tampered_case(Just(Tamper::SignerSwap))) {
        check_field_tamper(&specs, i, &tamper);
    }

    #[test]
    fn stripped_signature_is_signature_missing((specs, i, tamper) in tampered_case(Just(Tamper::StripSig))) {
        check_field_tamper(&specs, i, &tamper);
    }

    /// With two edits the earlier one is reported, whatever the kinds; in particular a bad
    /// signature still pending in a batch wins over a later chain break.
    #[test]
    fn earliest_of_two_tampers_is_reported(
        mut specs in specs(2..=24),
        at in any::<(Index, Index)>(),
        first in any_tamper(),
        second in any_tamper(),
        signer in signed_who(),
    ) {
        let i = at.0.index(specs.len() - 1);
        let j = i + 1 + at.1.index(specs.len() - 1 - i);
        first.prepare(&mut specs[i], signer);
        second.prepare(&mut specs[j], signer);
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let reason = first.apply(&mut events[i]);
        second.apply(&mut events[j]);
        check(&fixture.anchor, &events, Some((seq(i), reason)));
    }

    /// Without the hash recomputed, dropping the signer leaves a hash mismatch; with it
    /// recomputed (the signature kept), the signature has no signer.
    #[test]
    fn stripped_signer(mut specs in specs(1..=24), at in any::<Index>(), signer in signed_who(), recompute in any::<bool>()) {
        let i = at.index(specs.len());
        specs[i].who = signer;
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        events[i].signer = None;
        let reason = if recompute {
            rehash(&mut events[i]);
            BreakReason::SignerMissing
        } else {
            BreakReason::HashMismatch
        };
        check(&fixture.anchor, &events, Some((seq(i), reason)));
    }

    #[test]
    fn body_without_canonical_form_is_body_invalid(specs in specs(1..=24), at in any::<Index>()) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let i = at.index(events.len());
        events[i].body = json!({ "amount": u64::MAX });
        check(&fixture.anchor, &events, Some((seq(i), BreakReason::BodyInvalid)));
    }

    /// An insider re-sealing an event with an earlier time (hash recomputed, re-signed by the
    /// event's own key) is caught by the time order check.
    #[test]
    fn earlier_at_ms_with_recomputed_hash_is_time_regression(
        specs in specs(2..=24),
        at in any::<Index>(),
        back in 1_u64..10_000,
    ) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let i = 1 + at.index(events.len() - 1);
        events[i].at_ms = events[i - 1].at_ms - back;
        let signer = specs[i].who.dyn_signer();
        reseal(&mut events[i], signer);
        check(&fixture.anchor, &events, Some((seq(i), BreakReason::TimeRegression)));
    }

    #[test]
    fn swapped_events_are_seq_mismatch(specs in specs(2..=24), at in any::<(Index, Index)>()) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let i = at.0.index(events.len() - 1);
        let j = i + 1 + at.1.index(events.len() - 1 - i);
        events.swap(i, j);
        let report = check(&fixture.anchor, &events, Some((seq(i), BreakReason::SeqMismatch)));
        let broken = report.first_break.expect("broken");
        prop_assert_eq!(broken.expected, i.to_string());
        prop_assert_eq!(broken.found, j.to_string());
    }

    #[test]
    fn deleted_event(specs in specs(1..=24), at in any::<Index>()) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let i = at.index(events.len());
        events.remove(i);
        if i == events.len() {
            // The last one: the rest is consistent, only the anchor shows the loss.
            check(&fixture.anchor, &events, Some((seq(i), BreakReason::Truncated)));
        } else {
            let report = check(&fixture.anchor, &events, Some((seq(i), BreakReason::SeqMismatch)));
            prop_assert_eq!(report.first_break.expect("broken").found, (i + 1).to_string());
        }
    }

    /// A correctly sealed event slipped in at position `i`: it passes, the displaced event
    /// does not. Appended after the last event, only the anchor shows it.
    #[test]
    fn inserted_event(
        specs in specs(1..=24),
        at in any::<Index>(),
        forged in (json_object(), who(), 0_u64..1000),
    ) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let i = at.index(events.len() + 1);
        let (prev, floor_ms) = match i {
            0 => (stream_id().genesis(), common::START_MS),
            _ => (events[i - 1].hash, events[i - 1].at_ms),
        };
        let (body, signer, extra_ms) = forged;
        let event = Event::seal(stream_id(), seq(i), kind("note"), body, floor_ms + extra_ms, prev, signer.dyn_signer())
            .expect("seal");
        events.insert(i, event);
        if i + 1 == events.len() {
            check(&fixture.anchor, &events, Some((seq(i), BreakReason::HeadMismatch)));
        } else {
            let report = check(&fixture.anchor, &events, Some((seq(i + 1), BreakReason::SeqMismatch)));
            prop_assert_eq!(report.first_break.expect("broken").found, i.to_string());
        }
    }

    #[test]
    fn dropped_tail_is_truncated(specs in specs(1..=24), at in any::<Index>()) {
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        let k = 1 + at.index(events.len());
        events.truncate(events.len() - k);
        check(&fixture.anchor, &events, Some((seq(events.len()), BreakReason::Truncated)));
    }

    /// Event `i` re-sealed by the untrusted key C under C's own id: the signer is unknown.
    #[test]
    fn resealed_by_untrusted_key_is_signer_unknown(mut specs in specs(1..=24), at in any::<Index>(), signer in signed_who()) {
        let i = at.index(specs.len());
        specs[i].who = signer;
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        reseal(&mut events[i], Some(&KEYS.c));
        prop_assert_eq!(events[i].signer.clone(), Some(key_id("agent:c#1")));
        check(&fixture.anchor, &events, Some((seq(i), BreakReason::SignerUnknown)));
    }
}

// Breaks found by re-checking pending signatures one by one cost the most in debug builds.
proptest! {
    #![proptest_config(config(40, 0x5eed_7a3e_0004))]

    #[test]
    fn changed_signature_is_signature_invalid((specs, i, tamper) in tampered_case_in(sparse_specs(1..=24), sig_tamper())) {
        check_field_tamper(&specs, i, &tamper);
    }

    /// The attacker edits the last body and recomputes its hash but cannot re-sign: a signed
    /// event fails its signature, an unsigned one only differs from the recorded head.
    #[test]
    fn last_body_edited_with_recomputed_hash(mut specs in sparse_specs(1..=24), last_who in who()) {
        let last = specs.len() - 1;
        specs[last].who = last_who;
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        events[last].body.as_object_mut().expect("object").insert("__tampered__".into(), json!(1));
        rehash(&mut events[last]);
        let reason = match last_who {
            Who::Nobody => BreakReason::HeadMismatch,
            Who::A | Who::B => BreakReason::SignatureInvalid,
        };
        check(&fixture.anchor, &events, Some((seq(last), reason)));
    }

    /// Event `i` signed by C but still naming its trusted signer: the hash holds, the signature
    /// does not.
    #[test]
    fn signed_by_untrusted_key_under_trusted_id_is_signature_invalid(
        mut specs in sparse_specs(1..=24),
        at in any::<Index>(),
        signer in signed_who(),
    ) {
        let i = at.index(specs.len());
        specs[i].who = signer;
        let fixture = build(&specs);
        let mut events = fixture.events.clone();
        events[i].sig = Some(KEYS.c.sign_digest(&events[i].hash));
        check(&fixture.anchor, &events, Some((seq(i), BreakReason::SignatureInvalid)));
    }
}

/// `n` events, all signed, alternating A and B, one millisecond apart.
fn all_signed(n: usize) -> Fixture {
    let specs: Vec<EventSpec> = (0..n)
        .map(|k| EventSpec {
            kind: KINDS[k % KINDS.len()],
            body: json!({ "k": k, "memo": "été" }),
            who: if k % 2 == 0 { Who::A } else { Who::B },
            delta_ms: 1,
        })
        .collect();
    build(&specs)
}

#[test]
fn bad_signature_after_the_first_batch_is_named_exactly() {
    // More than one signature batch (SIGNATURE_BATCH_SIZE = 256).
    let fixture = all_signed(301);
    assert!(fixture.events.len() > pactum_transcripts::limits::SIGNATURE_BATCH_SIZE + 1);
    let mut events = fixture.events.clone();
    events[300].sig = Some(flip_sig(events[300].sig.expect("signed"), 63, 0x01));
    check(&fixture.anchor, &events, Some((300, BreakReason::SignatureInvalid)));

    // Event 257's signature is still pending in the second batch when event 260's chain break
    // is found: the signature failure comes first in stream order.
    let mut events = fixture.events.clone();
    events[257].sig = Some(flip_sig(events[257].sig.expect("signed"), 40, 0x01));
    events[260].prev = flip_digest(events[260].prev, 0, 0x80);
    check(&fixture.anchor, &events, Some((257, BreakReason::SignatureInvalid)));
}

#[test]
fn earlier_signature_failure_wins_over_later_chain_break() {
    let fixture = all_signed(24);
    check(&fixture.anchor, &fixture.events, None);
    let mut events = fixture.events.clone();
    events[10].sig = Some(flip_sig(events[10].sig.expect("signed"), 0, 0xff));
    events[20].prev = flip_digest(events[20].prev, 31, 0x01);
    let report = check(&fixture.anchor, &events, Some((10, BreakReason::SignatureInvalid)));
    assert_eq!(report.signatures_verified, 10);

    // Each alone is reported where it is.
    let mut events = fixture.events.clone();
    events[20].prev = flip_digest(events[20].prev, 31, 0x01);
    check(&fixture.anchor, &events, Some((20, BreakReason::PrevMismatch)));
}
