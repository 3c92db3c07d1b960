//! PACT v4 transcripts (`pact-transcript/4.0`): the reference verdict, and Pactum's stricter
//! findings beside it.
//!
//! [`verify_v4_text`] decides exactly as the public reference verifier does (docs/TRANSCRIPT-FORMAT.md,
//! "PACT v4"): `canon` is RFC 8785 ([`to_canonical_string`]) and `H(s)` lowercase hex SHA-256.
//! The checks run in this order, each over every round, and the first failure is the answer:
//!
//! 1. the document parses (strict I-JSON, at most [`V4_DOCUMENT_BYTES_MAX`]), is an object whose
//!    `transcript_version` is `pact-transcript/4.0`, and `rounds` is a non-empty array of objects
//!    (at most [`V4_ROUNDS_MAX`]): otherwise `INVALID`;
//! 2. `ROUND_SEQUENCE_INVALID`: `round_number == i`;
//! 3. `TIMESTAMP_NON_MONOTONIC`: `timestamp_ms` never decreases;
//! 4. `HASH_CHAIN_BROKEN`: round 0's `previous_round_hash` is `H(intent_id + ":" + created_at_ms)`,
//!    round i's is round i − 1's `round_hash`, and `round_hash == H(canon(round without round_hash))`;
//! 5. `SIGNATURE_INVALID`: `scheme` absent or `ed25519`, `signer_public_key_b58 == public_key_b58`,
//!    and an Ed25519 signature (base58) by that key (base58) over the 32 raw bytes of the hex
//!    `envelope_hash`;
//! 6. `FINAL_HASH_MISMATCH`: when `final_hash` is present, it equals
//!    `H(canon(transcript without final_hash))`.
//!
//! `failure_event.transcript_hash` differing from `H(canon(transcript without failure_event and
//! final_hash))` is a warning only, as in the reference.
//!
//! Verdicts: `INVALID` when the document is not a v4 transcript at all (step 1: nothing can be
//! checked); `TAMPERED` when a well-formed document fails an integrity check (steps 2–6, including
//! a field a check needs being absent or of the wrong type: removing a signature or a hash is a
//! way of tampering); `VALID` otherwise.
//!
//! Pactum's own findings ([`V4Report::pactum_findings`]) never change that verdict:
//! - `ROUND_CONTENT_UNSIGNED`: the reference signatures cover an opaque `envelope_hash` only, so a
//!   round's type, sender and price are unsigned unless the envelope itself is included. Pactum's
//!   exports carry each round's signed Pactum event in `metadata.pactum_envelopes`; a round is
//!   signed content only if its envelope is there, rehashes (Pactum's recipe) to `envelope_hash`,
//!   its signature verified, and the round's `round_type`, `agent_id`, `message_hash` and
//!   `content_summary` are what the envelope says.
//! - `TERMINAL_WITHOUT_FINAL_HASH`: a terminal transcript (a `failure_event`, or a last round
//!   ACCEPT, REJECT or ABORT) without `final_hash`, which the reference accepts.
//!
//! Signatures are checked with `ed25519-dalek`'s RFC 8032 verification (cofactorless, `S < L`);
//! every signature an honest signer makes passes it and any other implementation.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::canonical::{self, CanonicalError, compare_utf16, parse_strict, to_canonical_string};
use crate::event::{Digest, Event, EventKind, StreamId, UnsealedEvent};
use crate::keys::KeyId;
use crate::limits::SIGNATURE_BATCH_SIZE;

/// The version string of a PACT v4 transcript.
pub const PACT_V4_FORMAT: &str = "pact-transcript/4.0";
/// Largest v4 document read. A 1,000-round transcript with its Pactum envelopes is about 2 MiB;
/// this leaves room for long ones and keeps a hostile file from exhausting memory.
pub const V4_DOCUMENT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most rounds verified in one transcript: bounds verification time (about 50 µs per round).
pub const V4_ROUNDS_MAX: usize = 1_000_000;
/// Pactum findings listed before the rest are counted in one summary finding, so a foreign
/// transcript of many rounds does not produce a report larger than itself.
pub const V4_FINDINGS_MAX: usize = 64;

/// The reference verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IntegrityStatus {
    Valid,
    Tampered,
    Invalid,
}

impl IntegrityStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::Tampered => "TAMPERED",
            Self::Invalid => "INVALID",
        }
    }
}

/// The type of an error, a warning or a finding, as the report names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum V4EntryType {
    /// Not JSON, not an object, or larger than [`V4_DOCUMENT_BYTES_MAX`] (INVALID).
    JsonInvalid,
    /// `transcript_version` is not `pact-transcript/4.0` (INVALID).
    VersionUnsupported,
    /// `rounds` is missing, empty, not an array of objects or longer than [`V4_ROUNDS_MAX`] (INVALID).
    RoundsInvalid,
    RoundSequenceInvalid,
    TimestampNonMonotonic,
    HashChainBroken,
    SignatureInvalid,
    FinalHashMismatch,
    /// Warning: `failure_event.transcript_hash` does not match the transcript.
    FailureEventHashMismatch,
    /// Pactum finding: a round's content is not bound by a signature.
    RoundContentUnsigned,
    /// Pactum finding: a terminal transcript without `final_hash`.
    TerminalWithoutFinalHash,
}

impl V4EntryType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::JsonInvalid => "JSON_INVALID",
            Self::VersionUnsupported => "VERSION_UNSUPPORTED",
            Self::RoundsInvalid => "ROUNDS_INVALID",
            Self::RoundSequenceInvalid => "ROUND_SEQUENCE_INVALID",
            Self::TimestampNonMonotonic => "TIMESTAMP_NON_MONOTONIC",
            Self::HashChainBroken => "HASH_CHAIN_BROKEN",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::FinalHashMismatch => "FINAL_HASH_MISMATCH",
            Self::FailureEventHashMismatch => "FAILURE_EVENT_HASH_MISMATCH",
            Self::RoundContentUnsigned => "ROUND_CONTENT_UNSIGNED",
            Self::TerminalWithoutFinalHash => "TERMINAL_WITHOUT_FINAL_HASH",
        }
    }
}

/// One error, warning or finding: its type and a sentence naming the round and the values.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct V4Entry {
    pub entry_type: V4EntryType,
    pub message: String,
}

impl V4Entry {
    fn new(entry_type: V4EntryType, message: impl Into<String>) -> Self {
        Self { entry_type, message: message.into() }
    }

    /// `{"type": ..., "message": ...}`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("type".into(), Value::String(self.entry_type.as_str().to_owned()));
        object.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(object)
    }
}

/// What verification found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct V4Report {
    /// Always [`PACT_V4_FORMAT`].
    pub format: &'static str,
    pub integrity_status: IntegrityStatus,
    /// The reference verifier stops at the first error, so this holds at most one.
    pub errors: Vec<V4Entry>,
    pub warnings: Vec<V4Entry>,
    /// Pactum's stricter findings; they never change `integrity_status`.
    pub pactum_findings: Vec<V4Entry>,
    /// Rounds in the document (0 when it is not a v4 transcript).
    pub rounds: usize,
    /// Round signatures checked and valid.
    pub signatures_verified: usize,
}

impl V4Report {
    fn new() -> Self {
        Self {
            format: PACT_V4_FORMAT,
            integrity_status: IntegrityStatus::Valid,
            errors: Vec::new(),
            warnings: Vec::new(),
            pactum_findings: Vec::new(),
            rounds: 0,
            signatures_verified: 0,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.integrity_status == IntegrityStatus::Valid
    }

    fn fail(&mut self, status: IntegrityStatus, entry_type: V4EntryType, message: impl Into<String>) {
        self.integrity_status = status;
        self.errors.push(V4Entry::new(entry_type, message));
    }

    /// The report as JSON: `format`, `integrity_status`, `errors`, `warnings`, `pactum_findings`
    /// (each a list of `{type, message}`), `rounds` and `signatures_verified`.
    pub fn to_json(&self) -> Value {
        let list = |entries: &[V4Entry]| Value::Array(entries.iter().map(V4Entry::to_json).collect());
        let mut object = Map::new();
        object.insert("format".into(), Value::String(self.format.to_owned()));
        object.insert("integrity_status".into(), Value::String(self.integrity_status.as_str().to_owned()));
        object.insert("errors".into(), list(&self.errors));
        object.insert("warnings".into(), list(&self.warnings));
        object.insert("pactum_findings".into(), list(&self.pactum_findings));
        object.insert("rounds".into(), Value::from(self.rounds));
        object.insert("signatures_verified".into(), Value::from(self.signatures_verified));
        Value::Object(object)
    }
}

/// `H(s)`: lowercase hex SHA-256 of the UTF-8 bytes of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `H(canon(value))`.
pub fn canonical_hash(value: &Value) -> Result<String, CanonicalError> {
    Ok(sha256_hex(&to_canonical_string(value)?))
}

/// `H(canon(object without the members named in skip))`, without copying the object.
pub fn canonical_hash_without(object: &Map<String, Value>, skip: &[&str]) -> Result<String, CanonicalError> {
    let mut members: Vec<(&String, &Value)> =
        object.iter().filter(|(name, _)| !skip.contains(&name.as_str())).collect();
    members.sort_by(|a, b| compare_utf16(a.0, b.0));
    let mut out = String::with_capacity(1024);
    out.push('{');
    for (index, (name, value)) in members.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        canonical::write_string(name, &mut out);
        out.push(':');
        canonical::write_canonical(value, &mut out)?;
    }
    out.push('}');
    Ok(sha256_hex(&out))
}

/// `previous_round_hash` of round 0: `H(intent_id + ":" + created_at_ms)`, the number printed as
/// ECMAScript prints it.
pub fn genesis_round_hash(intent_id: &str, created_at_ms: u64) -> String {
    sha256_hex(&format!("{intent_id}:{created_at_ms}"))
}

/// Base58 (Bitcoin alphabet) text of `bytes`, as PACT v4 writes keys and signatures.
pub fn base58_encode(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

/// Bytes of base58 text; `None` when it is not base58 or not `N` bytes long.
pub fn base58_decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0_u8; N];
    match bs58::decode(text).onto(&mut out[..]) {
        Ok(written) if written == N => Some(out),
        _ => None,
    }
}

/// The PACT v4 round type of a Pactum session event kind (`round.bid` → `BID`). `session.created`
/// maps to `INTENT`: a session that failed at admission has no round event, and its creation
/// (signed by the buyer) is its one round.
pub fn pactum_round_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "round.intent" | "session.created" => "INTENT",
        "round.bid" => "BID",
        "round.counter" => "COUNTER",
        "round.ask" => "ASK",
        "round.reject" => "REJECT",
        "round.accept" => "ACCEPT",
        "round.abort" => "ABORT",
        _ => return None,
    })
}

/// A Pactum envelope's sender: `sender` of a negotiation message, the buyer of `session.created`.
fn envelope_sender(kind: &str, body: &Value) -> Option<String> {
    let sender = if kind == "session.created" { body.get("buyer")?.get("agent_id")? } else { body.get("sender")? };
    sender.as_str().map(str::to_owned)
}

/// The `content_summary` of a round made from a Pactum event: its round type, sender, receivers
/// (or receiver), price and round number, as the event's body records them. `None` for an event
/// that is not a round.
pub fn pactum_content_summary(kind: &str, body: &Value) -> Option<Value> {
    let round_type = pactum_round_type(kind)?;
    let mut summary = Map::new();
    summary.insert("round_type".into(), Value::String(round_type.to_owned()));
    summary.insert("sender".into(), Value::String(envelope_sender(kind, body)?));
    for name in ["receivers", "receiver"] {
        if let Some(value) = body.get(name) {
            summary.insert(name.into(), value.clone());
        }
    }
    if let Some(price) = body.get("price") {
        let mut money = Map::new();
        money.insert("amount_minor".into(), price.get("amount_minor")?.clone());
        money.insert("currency".into(), price.get("currency")?.clone());
        summary.insert("price".into(), Value::Object(money));
    }
    let round = if kind == "session.created" { Value::from(0) } else { body.get("round")?.clone() };
    summary.insert("round".into(), round);
    Some(Value::Object(summary))
}

/// A PACT v4 round made from a signed Pactum event: `envelope_hash` is the event's hash, the
/// signature is the event's own (over those 32 bytes) in base58, `message_hash` is
/// `H(canon(body))`, `content_summary` is [`pactum_content_summary`], and `round_hash` closes it.
/// `public_key` is the signer's. `Err` says why the event cannot be a round.
pub fn round_from_event(
    round_number: usize,
    event: &Event,
    public_key: &[u8; 32],
    previous_round_hash: &str,
) -> Result<Value, String> {
    let signature = event.sig.as_ref().ok_or_else(|| format!("event {} ({}) is not signed", event.seq, event.kind))?;
    round_with_signature(round_number, event, public_key, &event.hash, signature, event.at_ms, previous_round_hash)
}

/// A PACT v4 round made from a Pactum event recording a remote party's sealed message
/// ([`crate::seal`]): `envelope_hash` is the seal's digest and the signature the seal's, so the
/// round is signed by its sender; the rest as in [`round_from_event`].
pub fn sealed_round_from_event(
    round_number: usize,
    event: &Event,
    public_key: &[u8; 32],
    seal_digest: &Digest,
    seal_signature: &crate::keys::SignatureBytes,
    signed_at_ms: u64,
    previous_round_hash: &str,
) -> Result<Value, String> {
    round_with_signature(
        round_number,
        event,
        public_key,
        seal_digest,
        seal_signature,
        signed_at_ms,
        previous_round_hash,
    )
}

fn round_with_signature(
    round_number: usize,
    event: &Event,
    public_key: &[u8; 32],
    signed_hash: &Digest,
    signature: &crate::keys::SignatureBytes,
    signed_at_ms: u64,
    previous_round_hash: &str,
) -> Result<Value, String> {
    let what = || format!("event {} ({})", event.seq, event.kind);
    let summary = pactum_content_summary(event.kind.as_str(), &event.body)
        .ok_or_else(|| format!("{} does not have the fields of a round", what()))?;
    let public_key_b58 = base58_encode(public_key);
    let mut signature_object = Map::new();
    signature_object.insert("signer_public_key_b58".into(), Value::String(public_key_b58.clone()));
    signature_object.insert("signature_b58".into(), Value::String(base58_encode(signature.as_bytes())));
    signature_object.insert("signed_at_ms".into(), Value::from(signed_at_ms));
    signature_object.insert("scheme".into(), Value::String("ed25519".into()));
    let mut round = Map::new();
    round.insert("round_number".into(), Value::from(round_number));
    round.insert("round_type".into(), summary["round_type"].clone());
    round.insert("message_hash".into(), Value::String(canonical_hash(&event.body).map_err(|e| e.to_string())?));
    round.insert("envelope_hash".into(), Value::String(signed_hash.to_hex()));
    round.insert("signature".into(), Value::Object(signature_object));
    round.insert("timestamp_ms".into(), Value::from(event.at_ms));
    round.insert("previous_round_hash".into(), Value::String(previous_round_hash.to_owned()));
    round.insert("agent_id".into(), summary["sender"].clone());
    round.insert("public_key_b58".into(), Value::String(public_key_b58));
    round.insert("content_summary".into(), summary);
    let round_hash = canonical_hash_without(&round, &["round_hash"]).map_err(|e| e.to_string())?;
    round.insert("round_hash".into(), Value::String(round_hash));
    Ok(Value::Object(round))
}

/// [`verify_v4_text`] for bytes read from a file: more than [`V4_DOCUMENT_BYTES_MAX`] bytes, or
/// bytes that are not UTF-8, are an INVALID document.
pub fn verify_v4_bytes(bytes: &[u8]) -> V4Report {
    if bytes.len() > V4_DOCUMENT_BYTES_MAX {
        let mut report = V4Report::new();
        let message = format!("the document is larger than the limit of {V4_DOCUMENT_BYTES_MAX} bytes");
        report.fail(IntegrityStatus::Invalid, V4EntryType::JsonInvalid, message);
        return report;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => verify_v4_text(text),
        Err(error) => {
            let mut report = V4Report::new();
            report.fail(IntegrityStatus::Invalid, V4EntryType::JsonInvalid, format!("invalid UTF-8: {error}"));
            report
        }
    }
}

/// Parses `text` strictly (I-JSON) and verifies it; see the module documentation.
pub fn verify_v4_text(text: &str) -> V4Report {
    if text.len() > V4_DOCUMENT_BYTES_MAX {
        let mut report = V4Report::new();
        report.fail(
            IntegrityStatus::Invalid,
            V4EntryType::JsonInvalid,
            format!("the document is {} bytes; the limit is {V4_DOCUMENT_BYTES_MAX}", text.len()),
        );
        return report;
    }
    match parse_strict(text) {
        Ok(document) => verify_v4(&document),
        Err(error) => {
            let mut report = V4Report::new();
            report.fail(IntegrityStatus::Invalid, V4EntryType::JsonInvalid, error.to_string());
            report
        }
    }
}

/// Verifies a parsed document; see the module documentation.
pub fn verify_v4(document: &Value) -> V4Report {
    let mut report = V4Report::new();
    let Some(transcript) = document.as_object() else {
        report.fail(IntegrityStatus::Invalid, V4EntryType::JsonInvalid, "the document is not a JSON object");
        return report;
    };
    let version = transcript.get("transcript_version");
    if version.and_then(Value::as_str) != Some(PACT_V4_FORMAT) {
        report.fail(
            IntegrityStatus::Invalid,
            V4EntryType::VersionUnsupported,
            format!("transcript_version is {}, not {PACT_V4_FORMAT:?}", describe(version)),
        );
        return report;
    }
    let rounds = match rounds_of(transcript) {
        Ok(rounds) => rounds,
        Err(message) => {
            report.fail(IntegrityStatus::Invalid, V4EntryType::RoundsInvalid, message);
            return report;
        }
    };
    report.rounds = rounds.len();
    let signatures = reference_checks(transcript, &rounds, &mut report);
    if report.errors.is_empty() {
        failure_event_warning(transcript, &mut report);
    }
    pactum_checks(transcript, &rounds, &signatures, &mut report);
    report
}

fn rounds_of(transcript: &Map<String, Value>) -> Result<Vec<&Map<String, Value>>, String> {
    let Some(Value::Array(items)) = transcript.get("rounds") else {
        return Err("rounds is missing or not an array".into());
    };
    if items.is_empty() {
        return Err("rounds is empty".into());
    }
    if items.len() > V4_ROUNDS_MAX {
        return Err(format!("{} rounds; the limit is {V4_ROUNDS_MAX}", items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| item.as_object().ok_or_else(|| format!("round {index} is not an object")))
        .collect()
}

/// A value as a message shows it (bounded: values come from untrusted files).
fn describe(value: Option<&Value>) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    match value {
        None => "absent".into(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > SHOWN_CHARS_MAX {
                format!("{}…", text.chars().take(SHOWN_CHARS_MAX).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// A non-negative integer within JSON's exact range.
/// A non-negative whole number within 2^53 − 1. `1.0` counts as `1`, as in the reference: its
/// JSON parser gives the same number for both, and canonical JSON writes both as `1`.
fn exact_integer(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    if let Some(n) = value.as_u64() {
        return (n <= canonical::SAFE_INTEGER_MAX).then_some(n);
    }
    let float = value.as_f64()?;
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole =
        (float.fract() == 0.0 && float >= 0.0 && float <= canonical::SAFE_INTEGER_MAX as f64).then_some(float as u64);
    whole
}

/// Whether each round's signature verified (in round order, up to the first that did not).
type SignatureResults = Vec<bool>;

/// Steps 2 to 6; the first failure is recorded in `report`. Returns the signature results.
fn reference_checks(
    transcript: &Map<String, Value>,
    rounds: &[&Map<String, Value>],
    report: &mut V4Report,
) -> SignatureResults {
    let tampered = IntegrityStatus::Tampered;
    for (index, round) in rounds.iter().enumerate() {
        if exact_integer(round.get("round_number")) != Some(index as u64) {
            let found = describe(round.get("round_number"));
            report.fail(
                tampered,
                V4EntryType::RoundSequenceInvalid,
                format!("round {index}: round_number is {found}, expected {index}"),
            );
            return Vec::new();
        }
    }
    let mut previous_ms = 0;
    for (index, round) in rounds.iter().enumerate() {
        let Some(timestamp_ms) = exact_integer(round.get("timestamp_ms")) else {
            let found = describe(round.get("timestamp_ms"));
            let message = format!("round {index}: timestamp_ms is {found}, not a non-negative integer");
            report.fail(tampered, V4EntryType::TimestampNonMonotonic, message);
            return Vec::new();
        };
        if timestamp_ms < previous_ms {
            let message =
                format!("round {index}: timestamp_ms {timestamp_ms} is before round {}'s {previous_ms}", index - 1);
            report.fail(tampered, V4EntryType::TimestampNonMonotonic, message);
            return Vec::new();
        }
        previous_ms = timestamp_ms;
    }
    if let Err(message) = check_hash_chain(transcript, rounds) {
        report.fail(tampered, V4EntryType::HashChainBroken, message);
        return Vec::new();
    }
    let signatures = check_signatures(rounds);
    if let Some(index) = signatures.iter().position(|result| result.is_err()) {
        let message = signatures[index].clone().err().unwrap_or_default();
        report.fail(tampered, V4EntryType::SignatureInvalid, format!("round {index}: {message}"));
    } else {
        report.signatures_verified = signatures.len();
    }
    let signatures: SignatureResults = signatures.iter().map(Result::is_ok).collect();
    if !report.errors.is_empty() {
        return signatures;
    }
    if let Some(final_hash) = transcript.get("final_hash") {
        match canonical_hash_without(transcript, &["final_hash"]) {
            Ok(expected) if final_hash.as_str() == Some(expected.as_str()) => {}
            Ok(expected) => report.fail(
                tampered,
                V4EntryType::FinalHashMismatch,
                format!("final_hash is {}, the transcript hashes to {expected}", describe(Some(final_hash))),
            ),
            Err(error) => report.fail(tampered, V4EntryType::FinalHashMismatch, error.to_string()),
        }
    }
    signatures
}

fn check_hash_chain(transcript: &Map<String, Value>, rounds: &[&Map<String, Value>]) -> Result<(), String> {
    let intent_id = transcript.get("intent_id").and_then(Value::as_str);
    let created_at_ms = exact_integer(transcript.get("created_at_ms"));
    let (Some(intent_id), Some(created_at_ms)) = (intent_id, created_at_ms) else {
        return Err("intent_id (a string) and created_at_ms (an integer) are needed for round 0's link".into());
    };
    let mut expected_previous = genesis_round_hash(intent_id, created_at_ms);
    for (index, round) in rounds.iter().enumerate() {
        let previous = round.get("previous_round_hash");
        if previous.and_then(Value::as_str) != Some(expected_previous.as_str()) {
            return Err(format!(
                "round {index}: previous_round_hash is {}, expected {expected_previous}",
                describe(previous)
            ));
        }
        let recorded = round.get("round_hash");
        let computed = canonical_hash_without(round, &["round_hash"]).map_err(|e| format!("round {index}: {e}"))?;
        if recorded.and_then(Value::as_str) != Some(computed.as_str()) {
            return Err(format!("round {index}: round_hash is {}, the round hashes to {computed}", describe(recorded)));
        }
        expected_previous = computed;
    }
    Ok(())
}

/// A round's signature, decoded and ready to verify.
struct DecodedSignature {
    key: ed25519_dalek::VerifyingKey,
    signature: ed25519_dalek::Signature,
    message: [u8; 32],
}

/// Checks every round's signature; `Err` says why one is not valid. Signatures are verified in
/// batches of [`SIGNATURE_BATCH_SIZE`]; a batch that fails is checked one by one, so the result
/// of each round is its single verification.
fn check_signatures(rounds: &[&Map<String, Value>]) -> Vec<Result<(), String>> {
    let decoded: Vec<Result<DecodedSignature, String>> = rounds.iter().map(|round| decode_signature(round)).collect();
    let mut results: Vec<Result<(), String>> = Vec::with_capacity(decoded.len());
    for chunk in decoded.chunks(SIGNATURE_BATCH_SIZE) {
        let ready: Vec<&DecodedSignature> = chunk.iter().filter_map(|item| item.as_ref().ok()).collect();
        let messages: Vec<&[u8]> = ready.iter().map(|item| &item.message[..]).collect();
        let signatures: Vec<ed25519_dalek::Signature> = ready.iter().map(|item| item.signature).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = ready.iter().map(|item| item.key).collect();
        let batch_ok = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        for item in chunk {
            results.push(match item {
                Err(message) => Err(message.clone()),
                Ok(_) if batch_ok => Ok(()),
                Ok(item) => verify_one(item),
            });
        }
    }
    results
}

fn verify_one(item: &DecodedSignature) -> Result<(), String> {
    use ed25519_dalek::Verifier as _;
    item.key
        .verify(&item.message, &item.signature)
        .map_err(|_| "the Ed25519 signature over envelope_hash does not verify".into())
}

fn decode_signature(round: &Map<String, Value>) -> Result<DecodedSignature, String> {
    let signature = round.get("signature").and_then(Value::as_object).ok_or("signature is not an object")?;
    match signature.get("scheme") {
        None => {}
        Some(Value::String(scheme)) if scheme == "ed25519" => {}
        Some(other) => return Err(format!("scheme is {}, not \"ed25519\"", describe(Some(other)))),
    }
    let signer = signature.get("signer_public_key_b58").and_then(Value::as_str);
    let public_key = round.get("public_key_b58").and_then(Value::as_str);
    let (Some(signer), Some(public_key)) = (signer, public_key) else {
        return Err("signer_public_key_b58 or public_key_b58 is missing".into());
    };
    if signer != public_key {
        return Err(format!("signer_public_key_b58 {signer:?} is not public_key_b58 {public_key:?}"));
    }
    let key_bytes = base58_decode::<32>(public_key).ok_or("public_key_b58 is not 32 bytes of base58")?;
    let signature_bytes = signature
        .get("signature_b58")
        .and_then(Value::as_str)
        .and_then(base58_decode::<64>)
        .ok_or("signature_b58 is not 64 bytes of base58")?;
    let message = round
        .get("envelope_hash")
        .and_then(Value::as_str)
        .and_then(hex_32)
        .ok_or("envelope_hash is not 64 hex digits")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).map_err(|_| "public_key_b58 is not a curve point")?;
    Ok(DecodedSignature { key, signature: ed25519_dalek::Signature::from_bytes(&signature_bytes), message })
}

/// 32 bytes from 64 hex digits (either case, as JavaScript's hex decoders accept).
fn hex_32(text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0_u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

fn failure_event_warning(transcript: &Map<String, Value>, report: &mut V4Report) {
    let Some(failure_event) = transcript.get("failure_event") else { return };
    let recorded = failure_event.get("transcript_hash");
    match canonical_hash_without(transcript, &["failure_event", "final_hash"]) {
        Ok(expected) if recorded.and_then(Value::as_str) == Some(expected.as_str()) => {}
        Ok(expected) => report.warnings.push(V4Entry::new(
            V4EntryType::FailureEventHashMismatch,
            format!(
                "failure_event.transcript_hash is {}, the transcript before it hashes to {expected}",
                describe(recorded)
            ),
        )),
        Err(error) => report.warnings.push(V4Entry::new(V4EntryType::FailureEventHashMismatch, error.to_string())),
    }
}

/// Pactum's stricter findings (module documentation).
fn pactum_checks(
    transcript: &Map<String, Value>,
    rounds: &[&Map<String, Value>],
    signatures: &SignatureResults,
    report: &mut V4Report,
) {
    let envelopes =
        transcript.get("metadata").and_then(|metadata| metadata.get("pactum_envelopes")).and_then(Value::as_array);
    let mut unsigned = Vec::new();
    for (index, round) in rounds.iter().enumerate() {
        let envelope = envelopes.and_then(|list| list.get(index));
        let signature_ok = signatures.get(index).copied().unwrap_or(false);
        if let Err(reason) = check_round_content(round, envelope, signature_ok) {
            unsigned.push(V4Entry::new(V4EntryType::RoundContentUnsigned, format!("round {index}: {reason}")));
        }
    }
    // Each round is signed on its own; together they must be one negotiation: envelopes from
    // one stream (the one the metadata names), in the stream's order, and one key per agent.
    // Otherwise signed rounds of other sessions could be spliced in with recomputed hashes.
    let stream_named = transcript.get("metadata").and_then(|m| m.get("pactum_stream")).and_then(Value::as_str);
    let mut first_stream: Option<&str> = stream_named;
    let mut previous_seq: Option<u64> = None;
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for (index, round) in rounds.iter().enumerate() {
        let Some(envelope) = envelopes.and_then(|list| list.get(index)) else { continue };
        let stream = envelope.get("stream").and_then(Value::as_str);
        match (first_stream, stream) {
            (None, Some(stream)) => first_stream = Some(stream),
            (Some(expected), Some(stream)) if expected != stream => unsigned.push(V4Entry::new(
                V4EntryType::RoundContentUnsigned,
                format!("round {index}: its envelope is from stream {stream:?}, not {expected:?}"),
            )),
            _ => {}
        }
        let seq = exact_integer(envelope.get("seq"));
        if let (Some(previous), Some(seq)) = (previous_seq, seq)
            && seq <= previous
        {
            unsigned.push(V4Entry::new(
                V4EntryType::RoundContentUnsigned,
                format!("round {index}: its envelope is event {seq}, not after event {previous}"),
            ));
        }
        previous_seq = seq.or(previous_seq);
        let agent = round.get("agent_id").and_then(Value::as_str).unwrap_or_default();
        let key = round.get("public_key_b58").and_then(Value::as_str).unwrap_or_default();
        match keys.iter().find(|(known, _)| *known == agent) {
            Some((_, known_key)) if *known_key != key => unsigned.push(V4Entry::new(
                V4EntryType::RoundContentUnsigned,
                format!("round {index}: {agent} signs with another key than in its earlier rounds"),
            )),
            Some(_) => {}
            None => keys.push((agent, key)),
        }
    }
    if unsigned.len() > V4_FINDINGS_MAX {
        let more = unsigned.len() - V4_FINDINGS_MAX;
        unsigned.truncate(V4_FINDINGS_MAX);
        unsigned.push(V4Entry::new(V4EntryType::RoundContentUnsigned, format!("and {more} more rounds")));
    }
    report.pactum_findings.extend(unsigned);

    let last_type = rounds.last().and_then(|round| round.get("round_type")).and_then(Value::as_str);
    let terminal = transcript.contains_key("failure_event") || matches!(last_type, Some("ACCEPT" | "REJECT" | "ABORT"));
    if terminal && !transcript.contains_key("final_hash") {
        let why = if transcript.contains_key("failure_event") {
            "it has a failure_event".to_owned()
        } else {
            format!("its last round is {}", last_type.unwrap_or_default())
        };
        report.pactum_findings.push(V4Entry::new(
            V4EntryType::TerminalWithoutFinalHash,
            format!("the transcript is terminal ({why}) but has no final_hash: rounds could be cut or appended unseen"),
        ));
    }
}

/// A Pactum event read from an envelope without copying its body.
struct Envelope<'a> {
    stream: StreamId,
    kind: EventKind,
    body: &'a Value,
    signer: KeyId,
    hash: Digest,
    /// The hash recomputed from the fields.
    recomputed: Digest,
    /// `H(canon(body))`.
    message_hash: String,
}

fn read_envelope(envelope: &Value) -> Result<Envelope<'_>, String> {
    let object = envelope.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| {
        object.get(name).and_then(Value::as_str).ok_or_else(|| format!("{name} is missing or not a string"))
    };
    let integer = |name: &str| exact_integer(object.get(name)).ok_or_else(|| format!("{name} is not an integer"));
    let digest = |name: &str| text(name)?.parse::<Digest>().map_err(|e| format!("{name}: {}", e.problem));
    let stream = StreamId::new(text("stream")?).map_err(|e| e.to_string())?;
    let kind = EventKind::new(text("kind")?).map_err(|e| e.to_string())?;
    let signer = KeyId::new(text("signer")?).map_err(|e| e.to_string())?;
    let body = object.get("body").ok_or("body is missing")?;
    let (seq, at_ms, prev, hash) = (integer("seq")?, integer("at_ms")?, digest("prev")?, digest("hash")?);
    let canonical_body = to_canonical_string(body).map_err(|e| e.to_string())?;
    let unsealed = UnsealedEvent { stream: &stream, seq, kind: &kind, body, at_ms, prev, signer: Some(&signer) };
    let recomputed = unsealed.digest_with_canonical_body(&canonical_body).map_err(|e| e.to_string())?;
    Ok(Envelope { stream, kind, body, signer, hash, recomputed, message_hash: sha256_hex(&canonical_body) })
}

/// Whether a round's content is bound by its signature through its Pactum envelope.
fn check_round_content(round: &Map<String, Value>, envelope: Option<&Value>, signature_ok: bool) -> Result<(), String> {
    let envelope = envelope.ok_or("no signed envelope is included, so its type, sender and price are unsigned")?;
    let event = read_envelope(envelope).map_err(|e| format!("the included envelope is malformed: {e}"))?;
    if event.recomputed != event.hash {
        return Err(format!(
            "the included envelope's content hashes to {}, not its hash {}",
            event.recomputed, event.hash
        ));
    }
    // A remote party's message is recorded (and its event signed) by the receiver; the sender's
    // signature is its seal, over the message itself: then the round is signed by the seal.
    let (signed_hash, signing_key) = match event.body.get("envelope") {
        None => (event.hash.to_hex(), event.signer.as_str().to_owned()),
        Some(seal) => {
            let field = |name: &str| seal.get(name).and_then(Value::as_str).ok_or(format!("its seal has no {name}"));
            let (reply_to, key_id) = (field("reply_to")?, field("key_id")?);
            let signed_at_ms = exact_integer(seal.get("signed_at_ms")).ok_or("its seal has no signed_at_ms")?;
            let session_id = event.stream.as_str().strip_prefix("session:").unwrap_or(event.stream.as_str());
            let digest =
                crate::seal::seal_digest(session_id, event.kind.as_str(), event.body, reply_to, key_id, signed_at_ms)
                    .map_err(|e| format!("its seal cannot be hashed: {e}"))?;
            (digest.to_hex(), key_id.to_owned())
        }
    };
    if round.get("envelope_hash").and_then(Value::as_str) != Some(signed_hash.as_str()) {
        return Err(format!("envelope_hash is not the included envelope's signed hash {signed_hash}"));
    }
    if !signature_ok {
        return Err("the signature over envelope_hash does not verify".into());
    }
    let kind = event.kind.as_str();
    let expected_summary = pactum_content_summary(kind, event.body)
        .ok_or_else(|| format!("the included envelope ({kind}) is not a negotiation round"))?;
    let expected_type = expected_summary.get("round_type");
    if round.get("round_type") != expected_type {
        return Err(format!(
            "round_type is {}, the signed envelope says {}",
            describe(round.get("round_type")),
            describe(expected_type)
        ));
    }
    let sender = expected_summary.get("sender").and_then(Value::as_str).unwrap_or_default();
    if round.get("agent_id").and_then(Value::as_str) != Some(sender) {
        return Err(format!(
            "agent_id is {}, the signed envelope's sender is {sender:?}",
            describe(round.get("agent_id"))
        ));
    }
    let signer_agent = signing_key.split_once('#').map(|(agent, _)| agent);
    if signer_agent.and_then(|agent| agent.strip_prefix("agent:")) != Some(sender) {
        return Err(format!("the envelope is not signed by a key of its sender {sender:?}"));
    }
    if round.get("content_summary") != Some(&expected_summary) {
        return Err(format!(
            "content_summary is {}, the signed envelope says {}",
            describe(round.get("content_summary")),
            describe(Some(&expected_summary))
        ));
    }
    if round.get("message_hash").and_then(Value::as_str) != Some(event.message_hash.as_str()) {
        return Err(format!("message_hash is not the hash {} of the signed envelope's body", event.message_hash));
    }
    Ok(())
}

/// A synthetic, valid, signed v4 transcript of `round_count` rounds (a buyer and one provider
/// alternating BID/COUNTER and ASK, ending in ACCEPT), built the way Pactum exports sessions:
/// for benchmarks and tests. Keys come from fixed seeds, so the bytes never change.
pub fn synthetic_transcript(round_count: usize) -> Value {
    use crate::keys::Ed25519Signer;

    let party = |agent: &str, seed: u8| {
        let key_id = KeyId::new(format!("agent:{agent}#1")).unwrap_or_else(|_| unreachable!("a valid key id"));
        Ed25519Signer::from_seed(key_id, &[seed; 32])
    };
    let (buyer, provider) = (party("buyer", 7), party("provider-a", 9));
    let stream = StreamId::new("session:s-synthetic").unwrap_or_else(|_| unreachable!("a valid stream id"));
    let (intent_id, created_at_ms) = ("intent:s-synthetic", 1_700_000_000_000_u64);
    let mut previous_event = stream.genesis();
    let mut previous_round = genesis_round_hash(intent_id, created_at_ms);
    let (mut rounds, mut envelopes) = (Vec::with_capacity(round_count), Vec::with_capacity(round_count));
    for index in 0..round_count.max(1) {
        let price = serde_json::json!({ "amount_minor": 1_000 + index as u64, "currency": "USD" });
        let negotiation_round = index.div_ceil(2);
        let (kind, signer, body) = if index == 0 {
            (
                "round.intent",
                &buyer,
                serde_json::json!({ "round": 0, "round_type": "INTENT", "sender": "buyer", "receivers": ["provider-a"] }),
            )
        } else if index + 1 == round_count {
            (
                "round.accept",
                &buyer,
                serde_json::json!({ "round": negotiation_round, "round_type": "ACCEPT", "sender": "buyer", "receiver": "provider-a", "price": price }),
            )
        } else if index % 2 == 0 {
            (
                "round.ask",
                &provider,
                serde_json::json!({ "round": negotiation_round, "round_type": "ASK", "sender": "provider-a", "receiver": "buyer", "price": price }),
            )
        } else {
            let (kind, round_type) = if index == 1 { ("round.bid", "BID") } else { ("round.counter", "COUNTER") };
            (
                kind,
                &buyer,
                serde_json::json!({ "round": negotiation_round, "round_type": round_type, "sender": "buyer", "receivers": ["provider-a"], "price": price }),
            )
        };
        let kind = EventKind::new(kind).unwrap_or_else(|_| unreachable!("a valid kind"));
        let at_ms = created_at_ms + index as u64;
        let event = Event::seal(stream.clone(), index as u64, kind, body, at_ms, previous_event, Some(signer))
            .unwrap_or_else(|_| unreachable!("small bodies seal"));
        let public_key = signer.verifying_key().to_bytes();
        let round = round_from_event(index, &event, &public_key, &previous_round)
            .unwrap_or_else(|_| unreachable!("a signed round event"));
        previous_round = round["round_hash"].as_str().unwrap_or_default().to_owned();
        previous_event = event.hash;
        envelopes.push(event.to_json());
        rounds.push(round);
    }
    let mut transcript = Map::new();
    transcript.insert("transcript_version".into(), Value::String(PACT_V4_FORMAT.into()));
    transcript.insert("transcript_id".into(), Value::String(stream.as_str().into()));
    transcript.insert("intent_id".into(), Value::String(intent_id.into()));
    transcript.insert("intent_type".into(), Value::String("compute.inference".into()));
    transcript.insert("created_at_ms".into(), Value::from(created_at_ms));
    for name in ["policy_hash", "strategy_hash", "identity_snapshot_hash"] {
        transcript.insert(name.into(), Value::String(sha256_hex(name)));
    }
    transcript.insert("rounds".into(), Value::Array(rounds));
    let mut metadata = Map::new();
    metadata.insert("exported_by".into(), Value::String("pactum".into()));
    metadata.insert("pactum_envelopes".into(), Value::Array(envelopes));
    transcript.insert("metadata".into(), Value::Object(metadata));
    let final_hash = canonical_hash_without(&transcript, &["final_hash"]).unwrap_or_default();
    transcript.insert("final_hash".into(), Value::String(final_hash));
    Value::Object(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rehash_round(transcript: &mut Value, index: usize) {
        let round = transcript["rounds"][index].as_object_mut().expect("round");
        let hash = canonical_hash_without(round, &["round_hash"]).expect("canonical");
        round.insert("round_hash".into(), Value::String(hash));
    }

    /// Recomputes every round hash and link from `from` on, and the final hash.
    fn rehash_from(transcript: &mut Value, from: usize) {
        let count = transcript["rounds"].as_array().expect("rounds").len();
        for index in from..count {
            if index > 0 {
                let previous = transcript["rounds"][index - 1]["round_hash"].clone();
                transcript["rounds"][index]["previous_round_hash"] = previous;
            }
            rehash_round(transcript, index);
        }
        refinalize(transcript);
    }

    fn refinalize(transcript: &mut Value) {
        let object = transcript.as_object_mut().expect("object");
        let hash = canonical_hash_without(object, &["final_hash"]).expect("canonical");
        object.insert("final_hash".into(), Value::String(hash));
    }

    fn types(entries: &[V4Entry]) -> Vec<&'static str> {
        entries.iter().map(|entry| entry.entry_type.as_str()).collect()
    }

    #[track_caller]
    fn check(transcript: &Value, status: IntegrityStatus, error: Option<&str>) -> V4Report {
        let report = verify_v4_text(&transcript.to_string());
        assert_eq!(report.integrity_status, status, "{report:#?}");
        assert_eq!(types(&report.errors), error.into_iter().collect::<Vec<_>>(), "{report:#?}");
        report
    }

    #[test]
    fn a_synthetic_transcript_is_valid_with_no_findings() {
        let report = check(&synthetic_transcript(7), IntegrityStatus::Valid, None);
        assert_eq!((report.rounds, report.signatures_verified), (7, 7));
        assert!(report.warnings.is_empty() && report.pactum_findings.is_empty(), "{report:#?}");
        assert_eq!(report.to_json()["integrity_status"], "VALID");
    }

    #[test]
    fn documents_that_are_not_v4_transcripts_are_invalid() {
        for (text, error) in [
            ("not json", "JSON_INVALID"),
            ("[1]", "JSON_INVALID"),
            (r#"{"a":1,"a":2}"#, "JSON_INVALID"),
            (r#"{"transcript_version":"pact-transcript/3.0","rounds":[{}]}"#, "VERSION_UNSUPPORTED"),
            (r#"{"transcript_version":"pact-transcript/4.0","rounds":[]}"#, "ROUNDS_INVALID"),
            (r#"{"transcript_version":"pact-transcript/4.0"}"#, "ROUNDS_INVALID"),
            (r#"{"transcript_version":"pact-transcript/4.0","rounds":[7]}"#, "ROUNDS_INVALID"),
        ] {
            let report = verify_v4_text(text);
            assert_eq!(report.integrity_status, IntegrityStatus::Invalid, "{text}");
            assert_eq!(types(&report.errors), [error], "{text}");
        }
    }

    #[test]
    fn reordered_rounds_break_the_sequence() {
        let mut transcript = synthetic_transcript(5);
        transcript["rounds"].as_array_mut().expect("rounds").swap(1, 2);
        check(&transcript, IntegrityStatus::Tampered, Some("ROUND_SEQUENCE_INVALID"));
    }

    #[test]
    fn an_earlier_timestamp_is_non_monotonic() {
        let mut transcript = synthetic_transcript(5);
        transcript["rounds"][3]["timestamp_ms"] = Value::from(1_600_000_000_000_u64);
        check(&transcript, IntegrityStatus::Tampered, Some("TIMESTAMP_NON_MONOTONIC"));
    }

    #[test]
    fn an_edited_price_breaks_the_round_hash_and_a_rehashed_one_the_next_link() {
        let mut transcript = synthetic_transcript(5);
        transcript["rounds"][2]["content_summary"]["price"]["amount_minor"] = Value::from(1);
        let report = check(&transcript, IntegrityStatus::Tampered, Some("HASH_CHAIN_BROKEN"));
        assert!(report.errors[0].message.starts_with("round 2: round_hash"), "{report:#?}");
        rehash_round(&mut transcript, 2);
        let report = check(&transcript, IntegrityStatus::Tampered, Some("HASH_CHAIN_BROKEN"));
        assert!(report.errors[0].message.starts_with("round 3: previous_round_hash"), "{report:#?}");
        transcript["intent_id"] = Value::String("intent:other".into());
        let report = check(&transcript, IntegrityStatus::Tampered, Some("HASH_CHAIN_BROKEN"));
        assert!(report.errors[0].message.starts_with("round 0: previous_round_hash"), "{report:#?}");
    }

    #[test]
    fn a_price_edit_with_every_hash_recomputed_is_valid_for_the_reference_but_unsigned_for_pactum() {
        let mut transcript = synthetic_transcript(5);
        transcript["rounds"][2]["content_summary"]["price"]["amount_minor"] = Value::from(1);
        rehash_from(&mut transcript, 2);
        let report = check(&transcript, IntegrityStatus::Valid, None);
        assert_eq!(types(&report.pactum_findings), ["ROUND_CONTENT_UNSIGNED"], "{report:#?}");
        assert!(report.pactum_findings[0].message.starts_with("round 2: content_summary"), "{report:#?}");
    }

    #[test]
    fn rounds_without_envelopes_are_unsigned_content() {
        let mut transcript = synthetic_transcript(3);
        transcript["metadata"] = serde_json::json!({});
        refinalize(&mut transcript);
        let report = check(&transcript, IntegrityStatus::Valid, None);
        assert_eq!(types(&report.pactum_findings), ["ROUND_CONTENT_UNSIGNED"; 3], "{report:#?}");
    }

    #[test]
    fn swapped_or_mismatched_signatures_are_invalid() {
        let mut transcript = synthetic_transcript(5);
        let other = transcript["rounds"][1]["signature"]["signature_b58"].clone();
        transcript["rounds"][3]["signature"]["signature_b58"] = other;
        rehash_from(&mut transcript, 3);
        let report = check(&transcript, IntegrityStatus::Tampered, Some("SIGNATURE_INVALID"));
        assert!(report.errors[0].message.starts_with("round 3:"), "{report:#?}");

        let mut transcript = synthetic_transcript(5);
        let provider_key = transcript["rounds"][2]["public_key_b58"].clone();
        transcript["rounds"][1]["signature"]["signer_public_key_b58"] = provider_key;
        rehash_from(&mut transcript, 1);
        check(&transcript, IntegrityStatus::Tampered, Some("SIGNATURE_INVALID"));

        let mut transcript = synthetic_transcript(5);
        transcript["rounds"][0]["signature"]["scheme"] = Value::String("secp256k1".into());
        rehash_from(&mut transcript, 0);
        check(&transcript, IntegrityStatus::Tampered, Some("SIGNATURE_INVALID"));
    }

    #[test]
    fn an_edit_after_the_final_hash_is_a_mismatch() {
        let mut transcript = synthetic_transcript(3);
        transcript["intent_type"] = Value::String("weather.data".into());
        check(&transcript, IntegrityStatus::Tampered, Some("FINAL_HASH_MISMATCH"));
    }

    #[test]
    fn a_wrong_failure_event_hash_is_only_a_warning() {
        let mut transcript = synthetic_transcript(3);
        transcript["failure_event"] = serde_json::json!({
            "code": "PACT-303", "stage": "negotiation", "fault_domain": "negotiation", "terminality": "terminal",
            "evidence_refs": ["event:1"], "timestamp": 1_700_000_000_005_u64, "transcript_hash": "00",
        });
        refinalize(&mut transcript);
        let report = check(&transcript, IntegrityStatus::Valid, None);
        assert_eq!(types(&report.warnings), ["FAILURE_EVENT_HASH_MISMATCH"]);
        let object = transcript.as_object().expect("object");
        let right = canonical_hash_without(object, &["failure_event", "final_hash"]).expect("canonical");
        transcript["failure_event"]["transcript_hash"] = Value::String(right);
        refinalize(&mut transcript);
        assert!(check(&transcript, IntegrityStatus::Valid, None).warnings.is_empty());
    }

    #[test]
    fn a_terminal_transcript_without_final_hash_is_a_pactum_finding_only() {
        let mut transcript = synthetic_transcript(3);
        transcript.as_object_mut().expect("object").remove("final_hash");
        let report = check(&transcript, IntegrityStatus::Valid, None);
        assert_eq!(types(&report.pactum_findings), ["TERMINAL_WITHOUT_FINAL_HASH"]);
    }

    #[test]
    fn canonical_hash_without_equals_hashing_a_copy() {
        let transcript = synthetic_transcript(2);
        let object = transcript.as_object().expect("object");
        let mut copy = object.clone();
        copy.remove("final_hash");
        assert_eq!(
            canonical_hash_without(object, &["final_hash"]).expect("canonical"),
            canonical_hash(&Value::Object(copy)).expect("canonical")
        );
    }

    /// A signed round of the same negotiation moved to a later place, every hash recomputed:
    /// the reference accepts it; Pactum sees its envelope out of the stream's order.
    #[test]
    fn a_round_spliced_out_of_order_is_a_pactum_finding() {
        let mut transcript = synthetic_transcript(6);
        let moved = transcript["rounds"][1].clone();
        let original = transcript["rounds"][3].clone();
        let mut spliced = moved.clone();
        spliced["round_number"] = original["round_number"].clone();
        spliced["timestamp_ms"] = original["timestamp_ms"].clone();
        transcript["rounds"][3] = spliced;
        let envelope = transcript["metadata"]["pactum_envelopes"][1].clone();
        transcript["metadata"]["pactum_envelopes"][3] = envelope;
        rehash_from(&mut transcript, 3);
        let report = verify_v4_text(&serde_json::to_string(&transcript).expect("json"));
        assert!(report.is_valid(), "the reference verdict: {:?}", report.errors);
        assert!(
            report.pactum_findings.iter().any(|f| f.message.contains("not after event")),
            "{:?}",
            report.pactum_findings
        );
    }

    #[test]
    fn whole_numbers_written_as_floats_are_the_same_numbers() {
        let mut transcript = synthetic_transcript(3);
        let text = serde_json::to_string(&transcript).expect("json");
        assert!(verify_v4_text(&text).is_valid());
        // `1` written `1.0`: the same number, the same canonical form, the same hashes.
        transcript["rounds"][1]["round_number"] = serde_json::json!(1.0);
        let edited = serde_json::to_string(&transcript).expect("json");
        assert!(edited.contains("\"round_number\":1.0"), "{edited}");
        let report = verify_v4_text(&edited);
        assert!(report.is_valid(), "{:?}", report.errors);
        transcript["rounds"][1]["round_number"] = serde_json::json!(1.5);
        assert!(!verify_v4_text(&serde_json::to_string(&transcript).expect("json")).is_valid());
    }

    #[test]
    fn base58_round_trips_and_refuses_wrong_lengths() {
        // 0x0102ff = 66303 = 19·58² + 41·58 + 9 → "L", "i", "A"; each leading zero byte is a "1".
        let bytes = [0_u8, 0, 1, 2, 255];
        assert_eq!(base58_encode(&bytes), "11LiA");
        assert_eq!(base58_decode::<5>("11LiA"), Some(bytes));
        assert_eq!(base58_decode::<4>("11LiA"), None);
        assert_eq!(base58_decode::<6>("11LiA"), None);
        assert_eq!(base58_decode::<5>("0OIl"), None);
    }
}
