//! Verification: finds the first broken link of a stream and says which and why.
//!
//! Checks, in this order for each event at position `i` (the first failure wins):
//! 1. `STREAM_MISMATCH`: the event names another stream.
//! 2. `SEQ_MISMATCH`: `seq != i` (reordered, deleted or inserted events).
//! 3. `PREV_MISMATCH`: `prev` is not the previous event's hash (the genesis value for `i = 0`).
//! 4. `BODY_INVALID`: the event has no canonical form (an integer beyond 2^53 - 1 in the body,
//!    `at_ms` or `seq`), so no hash can be computed.
//!    `EVENT_MALFORMED` (auditing a store): a stored row whose fields do not parse, or whose body
//!    is not stored in canonical form.
//! 5. `HASH_MISMATCH`: `hash` differs from the recomputed digest.
//! 6. `TIME_REGRESSION`: `at_ms` is earlier than the previous event's.
//! 7. `SIGNATURE_MISSING` / `SIGNER_MISSING`: a signer without signature or the reverse.
//! 8. `SIGNER_UNKNOWN`: the key id is not in the trusted key ring.
//! 9. `SIGNATURE_INVALID`: Ed25519 verification of the digest fails.
//!
//! After the last event, against an anchor (the head recorded by the store or the file header):
//! `TRUNCATED` if fewer events arrived than the anchor counts, `HEAD_MISMATCH` if more arrived or the
//! last hash differs.
//!
//! Signature validity is one predicate, whether checked alone or in a batch: the key and `R` are
//! canonical encodings of points that are not of small order, `S < L`, and the cofactored
//! equation `[8][S]B = [8]R + [8][k]A` holds (ZIP-215, implemented by `ed25519-zebra`). The
//! cofactored equation is what makes batch and single verification agree, so a verdict never
//! depends on which other events share a batch (it would with the cofactorless equation, for
//! signatures crafted with torsion components). Signatures are checked in batches; a failed batch
//! is re-checked one by one so the first bad event is named exactly.

use std::fmt;

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};
use rand_core::SeedableRng as _;
use sha2::{Digest as _, Sha256};

use crate::event::{Digest, Event, StreamId};
use crate::keys::{KeyRing, SignatureBytes, is_strict_point, strict_key};
use crate::limits::{EVENT_BODY_BYTES_MAX, SIGNATURE_BATCH_SIZE};

/// Stable reason codes of a broken link (listed in specs/transcript-v1.toml).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BreakReason {
    StreamMismatch,
    SeqMismatch,
    PrevMismatch,
    BodyInvalid,
    EventMalformed,
    HashMismatch,
    TimeRegression,
    SignatureMissing,
    SignerMissing,
    SignerUnknown,
    SignatureInvalid,
    Truncated,
    HeadMismatch,
}

impl BreakReason {
    pub const ALL: [BreakReason; 13] = [
        Self::StreamMismatch,
        Self::SeqMismatch,
        Self::PrevMismatch,
        Self::BodyInvalid,
        Self::EventMalformed,
        Self::HashMismatch,
        Self::TimeRegression,
        Self::SignatureMissing,
        Self::SignerMissing,
        Self::SignerUnknown,
        Self::SignatureInvalid,
        Self::Truncated,
        Self::HeadMismatch,
    ];

    /// The stable code printed by `pactum transcript verify` and used in JSON output.
    pub const fn code(self) -> &'static str {
        match self {
            Self::StreamMismatch => "STREAM_MISMATCH",
            Self::SeqMismatch => "SEQ_MISMATCH",
            Self::PrevMismatch => "PREV_MISMATCH",
            Self::BodyInvalid => "BODY_INVALID",
            Self::EventMalformed => "EVENT_MALFORMED",
            Self::HashMismatch => "HASH_MISMATCH",
            Self::TimeRegression => "TIME_REGRESSION",
            Self::SignatureMissing => "SIGNATURE_MISSING",
            Self::SignerMissing => "SIGNER_MISSING",
            Self::SignerUnknown => "SIGNER_UNKNOWN",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::Truncated => "TRUNCATED",
            Self::HeadMismatch => "HEAD_MISMATCH",
        }
    }

    /// A short plain-words explanation.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::StreamMismatch => "event belongs to another stream",
            Self::SeqMismatch => "event is out of sequence (reordered, deleted or inserted)",
            Self::PrevMismatch => "prev does not match the hash of the previous event",
            Self::BodyInvalid => "event has no canonical JSON form",
            Self::EventMalformed => "stored event fields are malformed or not in canonical form",
            Self::HashMismatch => "hash does not match the event's content",
            Self::TimeRegression => "timestamp is earlier than the previous event's",
            Self::SignatureMissing => "event names a signer but carries no signature",
            Self::SignerMissing => "event carries a signature but names no signer",
            Self::SignerUnknown => "signer's key is not trusted",
            Self::SignatureInvalid => "signature does not verify",
            Self::Truncated => "stream ends before its recorded head",
            Self::HeadMismatch => "stream does not end at its recorded head",
        }
    }
}

impl fmt::Display for BreakReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// The first broken link: where, why, and what was expected against what was found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Break {
    pub seq: u64,
    pub reason: BreakReason,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Break {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "seq {}: {} ({}): expected {}, found {}",
            self.seq,
            self.reason.code(),
            self.reason.describe(),
            self.expected,
            self.found
        )
    }
}

/// What the verifier compares the end of the stream against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Anchor {
    pub event_count: u64,
    /// Hash of the last event; `None` for an empty stream.
    pub head_hash: Option<Digest>,
}

/// The outcome of verifying one stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifyReport {
    pub stream: StreamId,
    /// Events that passed every check before the first break (all of them when valid).
    pub events_verified: u64,
    pub signatures_verified: u64,
    /// Verified events that carry no signature.
    pub unsigned_events: u64,
    /// Hash of the last verified event.
    pub head_hash: Option<Digest>,
    pub first_break: Option<Break>,
}

impl VerifyReport {
    pub fn is_valid(&self) -> bool {
        self.first_break.is_none()
    }
}

struct PendingSignature {
    seq: u64,
    digest: Digest,
    signature: Signature,
    key: VerificationKeyBytes,
}

/// Single verification under the same predicate as the batch.
fn verify_one(key: VerificationKeyBytes, signature: &Signature, digest: &Digest) -> bool {
    VerificationKey::try_from(key).and_then(|key| key.verify(signature, digest.as_bytes())).is_ok()
}

/// Verifies a detached Ed25519 signature over a digest (a receipt's, say) under exactly the
/// predicate event signatures are held to: a strict, large-order public key and `R`, and the
/// ZIP-215 equation.
pub fn verify_digest_signature(public_key: &[u8; 32], digest: &Digest, signature: &SignatureBytes) -> bool {
    let mut r_bytes = [0_u8; 32];
    r_bytes.copy_from_slice(&signature.as_bytes()[..32]);
    strict_key(public_key).is_some_and(|key| {
        is_strict_point(&r_bytes)
            && key.zebra.verify(&Signature::from_bytes(signature.as_bytes()), digest.as_bytes()).is_ok()
    })
}

/// Verifies a stream event by event with bounded memory; feed it with [`Verifier::push`] and
/// finish with [`Verifier::finish`].
pub struct Verifier<'k> {
    stream: StreamId,
    keys: &'k KeyRing,
    next_seq: u64,
    prev_hash: Digest,
    prev_at_ms: u64,
    pending: Vec<PendingSignature>,
    start_seq: u64,
    signatures_verified: u64,
    unsigned_events: u64,
    require_signed: bool,
    head_hash: Option<Digest>,
    first_break: Option<Break>,
}

impl fmt::Debug for Verifier<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Verifier")
            .field("stream", &self.stream)
            .field("next_seq", &self.next_seq)
            .field("first_break", &self.first_break)
            .finish_non_exhaustive()
    }
}

impl<'k> Verifier<'k> {
    /// A verifier for a whole stream, starting at event 0.
    pub fn new(stream: StreamId, keys: &'k KeyRing) -> Self {
        let genesis = stream.genesis();
        Self {
            stream,
            keys,
            next_seq: 0,
            prev_hash: genesis,
            prev_at_ms: 0,
            pending: Vec::with_capacity(SIGNATURE_BATCH_SIZE),
            start_seq: 0,
            signatures_verified: 0,
            unsigned_events: 0,
            require_signed: false,
            head_hash: None,
            first_break: None,
        }
    }

    /// Requires every event to be signed (by a key in the ring): an unsigned event is then
    /// `SIGNATURE_MISSING`. With trusted keys, this is what proves authorship of every event; without
    /// it, an attacker can replace signed events by unsigned ones and recompute the hashes.
    pub fn require_signed(mut self) -> Self {
        self.require_signed = true;
        self
    }

    /// A verifier that continues after an already trusted event (for replay from a checkpoint).
    pub fn resume_after(stream: StreamId, keys: &'k KeyRing, trusted: &Event) -> Self {
        let mut verifier = Self::new(stream, keys);
        verifier.next_seq = trusted.seq + 1;
        verifier.start_seq = trusted.seq + 1;
        verifier.prev_hash = trusted.hash;
        verifier.prev_at_ms = trusted.at_ms;
        verifier.head_hash = Some(trusted.hash);
        verifier
    }

    /// The first break found so far.
    pub fn first_break(&self) -> Option<&Break> {
        self.first_break.as_ref()
    }

    /// Checks one event. Returns `false` once the stream is known to be broken; later events
    /// are then ignored. A signature failure may only surface at the next batch boundary, so
    /// call [`Verifier::flush`] before trusting an event's signature individually.
    pub fn push(&mut self, event: &Event) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        let index = self.next_seq;
        if let Err(broken) = self.check_links(index, event) {
            // Signatures of earlier events come first in stream order.
            self.flush();
            if self.first_break.is_none() {
                self.first_break = Some(broken);
            }
            return false;
        }
        self.next_seq += 1;
        self.prev_hash = event.hash;
        self.prev_at_ms = event.at_ms;
        self.head_hash = Some(event.hash);
        if self.pending.len() >= SIGNATURE_BATCH_SIZE {
            self.flush();
        }
        self.first_break.is_none()
    }

    fn check_links(&mut self, index: u64, event: &Event) -> Result<(), Break> {
        let broken = |reason, expected: String, found: String| Break { seq: index, reason, expected, found };
        if event.stream != self.stream {
            return Err(broken(BreakReason::StreamMismatch, self.stream.to_string(), event.stream.to_string()));
        }
        if event.seq != index {
            return Err(broken(BreakReason::SeqMismatch, index.to_string(), event.seq.to_string()));
        }
        if event.prev != self.prev_hash {
            return Err(broken(BreakReason::PrevMismatch, self.prev_hash.to_hex(), event.prev.to_hex()));
        }
        let (computed, body_bytes) = event
            .hash_and_body_len()
            .map_err(|error| broken(BreakReason::BodyInvalid, "a canonical JSON event".into(), error.to_string()))?;
        if body_bytes > EVENT_BODY_BYTES_MAX {
            return Err(broken(
                BreakReason::BodyInvalid,
                format!("a body of at most {EVENT_BODY_BYTES_MAX} bytes"),
                format!("{body_bytes} bytes"),
            ));
        }
        if computed != event.hash {
            return Err(broken(BreakReason::HashMismatch, computed.to_hex(), event.hash.to_hex()));
        }
        if event.at_ms < self.prev_at_ms {
            return Err(broken(
                BreakReason::TimeRegression,
                format!("at_ms >= {}", self.prev_at_ms),
                event.at_ms.to_string(),
            ));
        }
        match (&event.signer, &event.sig) {
            (None, None) if self.require_signed => Err(broken(
                BreakReason::SignatureMissing,
                "a signature (signatures are required)".into(),
                "none".into(),
            )),
            (None, None) => {
                self.unsigned_events += 1;
                Ok(())
            }
            (Some(signer), None) => {
                Err(broken(BreakReason::SignatureMissing, format!("a signature by {signer}"), "none".into()))
            }
            (None, Some(_)) => Err(broken(BreakReason::SignerMissing, "a signer key id".into(), "none".into())),
            (Some(signer), Some(sig)) => {
                let key = self
                    .keys
                    .get(signer)
                    .ok_or_else(|| broken(BreakReason::SignerUnknown, "a trusted key id".into(), signer.to_string()))?;
                let mut r_bytes = [0_u8; 32];
                r_bytes.copy_from_slice(&sig.as_bytes()[..32]);
                if !is_strict_point(&r_bytes) {
                    return Err(broken(
                        BreakReason::SignatureInvalid,
                        "a signature whose R is a canonical point of large order".into(),
                        "a non-canonical or small-order R".into(),
                    ));
                }
                self.pending.push(PendingSignature {
                    seq: index,
                    digest: event.hash,
                    signature: Signature::from_bytes(sig.as_bytes()),
                    key: VerificationKeyBytes::from(key.to_bytes()),
                });
                Ok(())
            }
        }
    }

    /// Records a break found outside the verifier (a stored row that cannot be read as an event)
    /// at the next position, after checking the signatures that come before it.
    pub fn fail_next(&mut self, reason: BreakReason, expected: String, found: String) {
        self.flush();
        if self.first_break.is_none() {
            self.first_break = Some(Break { seq: self.next_seq, reason, expected, found });
        }
    }

    /// Verifies the signatures collected so far; records the first invalid one as the break.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut batch = ed25519_zebra::batch::Verifier::new();
        // The batch's random weights come from its own contents, so verification is
        // deterministic (and the cofactored equation makes the verdict independent of them).
        let mut seed_hasher = Sha256::new();
        for item in &pending {
            batch.queue((item.key, item.signature, item.digest.as_bytes()));
            seed_hasher.update(item.key.as_ref());
            seed_hasher.update(item.digest.as_bytes());
            seed_hasher.update(item.signature.to_bytes());
        }
        let rng = rand_chacha::ChaCha20Rng::from_seed(seed_hasher.finalize().into());
        let batch_ok = batch.verify(rng).is_ok();
        let first_bad =
            if batch_ok { None } else { pending.iter().find(|p| !verify_one(p.key, &p.signature, &p.digest)) };
        match first_bad {
            None => self.signatures_verified += pending.len() as u64,
            Some(bad) => {
                self.signatures_verified += pending.iter().take_while(|p| p.seq < bad.seq).count() as u64;
                self.first_break = Some(Break {
                    seq: bad.seq,
                    reason: BreakReason::SignatureInvalid,
                    expected: "a valid Ed25519 signature over the event hash".into(),
                    found: "an invalid signature".into(),
                });
            }
        }
    }

    /// Ends verification, comparing the end of the stream with `anchor` when one is given.
    pub fn finish(mut self, anchor: Option<Anchor>) -> VerifyReport {
        self.flush();
        if let (None, Some(anchor)) = (&self.first_break, anchor) {
            let count = self.next_seq;
            if count < anchor.event_count {
                self.first_break = Some(Break {
                    seq: count,
                    reason: BreakReason::Truncated,
                    expected: format!("{} events ending at {}", anchor.event_count, hash_text(anchor.head_hash)),
                    found: format!("{count} events ending at {}", hash_text(self.head_hash)),
                });
            } else if count > anchor.event_count {
                // Reported at the first event beyond the recorded head.
                self.first_break = Some(Break {
                    seq: anchor.event_count,
                    reason: BreakReason::HeadMismatch,
                    expected: format!("{} events ending at {}", anchor.event_count, hash_text(anchor.head_hash)),
                    found: format!("{count} events ending at {}", hash_text(self.head_hash)),
                });
            } else if self.head_hash != anchor.head_hash {
                self.first_break = Some(Break {
                    seq: count.saturating_sub(1),
                    reason: BreakReason::HeadMismatch,
                    expected: format!("{} events ending at {}", anchor.event_count, hash_text(anchor.head_hash)),
                    found: format!("{count} events ending at {}", hash_text(self.head_hash)),
                });
            }
        }
        // Events that passed every check of their own: those before the break, or all of them
        // when the break is at the anchor (the stream ends elsewhere than recorded).
        let events_verified = match &self.first_break {
            Some(broken) if !matches!(broken.reason, BreakReason::Truncated | BreakReason::HeadMismatch) => {
                broken.seq.saturating_sub(self.start_seq)
            }
            _ => self.next_seq - self.start_seq,
        };
        VerifyReport {
            stream: self.stream,
            events_verified,
            signatures_verified: self.signatures_verified,
            unsigned_events: self.unsigned_events,
            head_hash: if self.first_break.is_none() { self.head_hash } else { None },
            first_break: self.first_break,
        }
    }
}

fn hash_text(hash: Option<Digest>) -> String {
    hash.map_or_else(|| "(no event)".to_owned(), |h| h.to_hex())
}

/// Verifies a complete list of events of `stream`.
pub fn verify_events<'e>(
    stream: &StreamId,
    events: impl IntoIterator<Item = &'e Event>,
    keys: &KeyRing,
    anchor: Option<Anchor>,
) -> VerifyReport {
    let mut verifier = Verifier::new(stream.clone(), keys);
    for event in events {
        if !verifier.push(event) {
            break;
        }
    }
    verifier.finish(anchor)
}
