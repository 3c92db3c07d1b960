//! Events, their identifiers, and the hashing and signing recipe (docs/TRANSCRIPT-FORMAT.md).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::canonical::{self, CanonicalError};
use crate::keys::{EventSigner, KeyId, SignatureBytes};
use crate::limits::{EVENT_BODY_BYTES_MAX, EVENT_KIND_BYTES_MAX, STREAM_ID_BYTES_MAX};

/// Name and version of the transcript format; also the prefix of every domain-separation tag.
pub const FORMAT: &str = "pactum-transcript/1";
/// Prefix hashed before the canonical event content.
pub const EVENT_HASH_TAG: &[u8] = b"pactum-transcript/1 event\0";
/// Prefix hashed before the stream id to derive the `prev` of event 0.
pub const GENESIS_TAG: &[u8] = b"pactum-transcript/1 genesis\0";
/// Prefix hashed before the canonical checkpoint state.
pub const STATE_HASH_TAG: &[u8] = b"pactum-transcript/1 state\0";

/// A SHA-256 output, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// SHA-256 over `tag` followed by `payload`.
    pub fn tagged(tag: &[u8], payload: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(tag);
        hasher.update(payload);
        Self(hasher.finalize().into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = FormatError;

    /// Accepts exactly 64 lowercase hex digits, so one digest has exactly one text form.
    fn from_str(text: &str) -> Result<Self, FormatError> {
        let lowercase_hex = text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lowercase_hex {
            return Err(FormatError::new("digest", "expected 64 lowercase hex digits"));
        }
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| FormatError::new("digest", "invalid hex"))?;
        Ok(Self(bytes))
    }
}

/// A field of an event or file that does not have the required shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FormatError {
    pub field: String,
    pub problem: String,
}

impl FormatError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':')
}

fn check_identifier(field: &str, text: &str, bytes_max: usize) -> Result<(), FormatError> {
    check_identifier_with(field, text, bytes_max, is_identifier_byte, "- _ . :")
}

fn check_identifier_with(
    field: &str,
    text: &str,
    bytes_max: usize,
    allowed: impl Fn(u8) -> bool,
    punctuation: &str,
) -> Result<(), FormatError> {
    if text.is_empty() || text.len() > bytes_max {
        return Err(FormatError::new(field, format!("must be 1 to {bytes_max} bytes long")));
    }
    if !text.bytes().all(allowed) {
        return Err(FormatError::new(field, format!("may contain only ASCII letters, digits and {punctuation}")));
    }
    Ok(())
}

/// Identifies one transcript stream within a constellation (and within an exported file).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(text: impl Into<String>) -> Result<Self, FormatError> {
        let text = text.into();
        check_identifier("stream", &text, STREAM_ID_BYTES_MAX)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `prev` value of event 0: SHA-256(GENESIS_TAG ‖ stream id).
    pub fn genesis(&self) -> Digest {
        Digest::tagged(GENESIS_TAG, self.0.as_bytes())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What an event records, such as `session.created` or `round.bid`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventKind(String);

impl EventKind {
    pub fn new(text: impl Into<String>) -> Result<Self, FormatError> {
        let text = text.into();
        check_identifier("kind", &text, EVENT_KIND_BYTES_MAX)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Key ids additionally allow `#`, which separates an agent from its key number (`agent:buyer#2`).
pub(crate) fn check_key_id(text: &str) -> Result<(), FormatError> {
    let allowed = |byte: u8| is_identifier_byte(byte) || byte == b'#';
    check_identifier_with("signer", text, crate::limits::KEY_ID_BYTES_MAX, allowed, "- _ . : #")
}

/// One entry of a transcript stream, exactly as stored or read from a file.
///
/// The fields are public because an `Event` may come from untrusted input: its integrity is
/// established by [`crate::Verifier`], not by construction. [`Event::seal`] builds a correct one.
#[derive(Clone, PartialEq, Debug)]
pub struct Event {
    pub stream: StreamId,
    pub seq: u64,
    pub kind: EventKind,
    pub body: Value,
    pub at_ms: u64,
    pub prev: Digest,
    pub signer: Option<KeyId>,
    pub hash: Digest,
    pub sig: Option<SignatureBytes>,
}

/// The fields of an event before it is hashed.
#[derive(Clone, Debug)]
pub struct UnsealedEvent<'a> {
    pub stream: &'a StreamId,
    pub seq: u64,
    pub kind: &'a EventKind,
    pub body: &'a Value,
    pub at_ms: u64,
    pub prev: Digest,
    pub signer: Option<&'a KeyId>,
}

impl UnsealedEvent<'_> {
    /// Canonical JSON of every hashed field: `at_ms, body, kind, prev, seq, signer?, stream`
    /// (the names are ASCII, so this is also their UTF-16 order).
    pub fn canonical_content(&self) -> Result<String, CanonicalError> {
        Ok(self.content_with_body(None)?.0)
    }

    /// The canonical content, with the body's canonical text supplied when the caller already
    /// has it (sealing canonicalizes the body once, for its size check and its hash).
    /// Returns the content and the length of the body's canonical form within it.
    fn content_with_body(&self, canonical_body: Option<&str>) -> Result<(String, usize), CanonicalError> {
        // Integers beyond 2^53 - 1 have no exact JSON form: refuse them here as in bodies, so a
        // stream never holds an event that verifies but cannot be written to a file.
        for integer in [self.at_ms, self.seq] {
            if integer > canonical::SAFE_INTEGER_MAX {
                return Err(CanonicalError::IntegerOutOfRange(integer.to_string()));
            }
        }
        let mut out = String::with_capacity(256 + canonical_body.map_or(256, str::len));
        out.push_str("{\"at_ms\":");
        canonical::write_integer(self.at_ms, &mut out);
        out.push_str(",\"body\":");
        let body_start = out.len();
        match canonical_body {
            Some(text) => out.push_str(text),
            None => canonical::write_canonical(self.body, &mut out)?,
        }
        let body_len = out.len() - body_start;
        out.push_str(",\"kind\":");
        canonical::write_string(self.kind.as_str(), &mut out);
        out.push_str(",\"prev\":\"");
        write_hex(self.prev.as_bytes(), &mut out);
        out.push_str("\",\"seq\":");
        canonical::write_integer(self.seq, &mut out);
        if let Some(signer) = self.signer {
            out.push_str(",\"signer\":");
            canonical::write_string(signer.as_str(), &mut out);
        }
        out.push_str(",\"stream\":");
        canonical::write_string(self.stream.as_str(), &mut out);
        out.push('}');
        Ok((out, body_len))
    }

    /// `hash` = SHA-256(EVENT_HASH_TAG ‖ canonical content).
    pub fn digest(&self) -> Result<Digest, CanonicalError> {
        Ok(self.digest_and_body_len()?.0)
    }

    /// The hash, given the body's canonical text (a caller that already canonicalized the body
    /// for another purpose does not pay for it twice).
    pub(crate) fn digest_with_canonical_body(&self, canonical_body: &str) -> Result<Digest, CanonicalError> {
        let (content, _) = self.content_with_body(Some(canonical_body))?;
        Ok(Digest::tagged(EVENT_HASH_TAG, content.as_bytes()))
    }

    /// The hash and the size of the body's canonical form (one pass, for the verifier's limit).
    pub fn digest_and_body_len(&self) -> Result<(Digest, usize), CanonicalError> {
        let (content, body_len) = self.content_with_body(None)?;
        Ok((Digest::tagged(EVENT_HASH_TAG, content.as_bytes()), body_len))
    }
}

/// Appends lowercase hex without allocating.
fn write_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0F)]));
    }
}

/// Why an event could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SealError {
    #[error("event has no canonical form: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("event body is {size} bytes in canonical form; the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
}

impl Event {
    /// Builds an event with its hash and, when a signer is given, its signature.
    pub fn seal(
        stream: StreamId,
        seq: u64,
        kind: EventKind,
        body: Value,
        at_ms: u64,
        prev: Digest,
        signer: Option<&dyn EventSigner>,
    ) -> Result<Self, SealError> {
        let mut event = Self::hashed(stream, seq, kind, body, at_ms, prev, signer.map(|s| s.key_id().clone()))?;
        event.sig = signer.map(|s| s.sign_digest(&event.hash));
        Ok(event)
    }

    /// An event with its hash, naming `signer` but not signed yet (`sig` is `None`): the
    /// caller signs the hash and sets `sig` before the event goes anywhere.
    pub(crate) fn hashed(
        stream: StreamId,
        seq: u64,
        kind: EventKind,
        body: Value,
        at_ms: u64,
        prev: Digest,
        signer: Option<KeyId>,
    ) -> Result<Self, SealError> {
        let canonical_body = canonical::to_canonical_string(&body)?;
        if canonical_body.len() > EVENT_BODY_BYTES_MAX {
            return Err(SealError::BodyTooLarge { size: canonical_body.len(), limit: EVENT_BODY_BYTES_MAX });
        }
        let unsealed =
            UnsealedEvent { stream: &stream, seq, kind: &kind, body: &body, at_ms, prev, signer: signer.as_ref() };
        let (content, _) = unsealed.content_with_body(Some(&canonical_body))?;
        let hash = Digest::tagged(EVENT_HASH_TAG, content.as_bytes());
        Ok(Self { stream, seq, kind, body, at_ms, prev, signer, hash, sig: None })
    }

    /// The hashed fields of this event.
    pub fn unsealed(&self) -> UnsealedEvent<'_> {
        UnsealedEvent {
            stream: &self.stream,
            seq: self.seq,
            kind: &self.kind,
            body: &self.body,
            at_ms: self.at_ms,
            prev: self.prev,
            signer: self.signer.as_ref(),
        }
    }

    /// Recomputes the hash from the fields (what the event *should* carry as `hash`).
    pub fn compute_hash(&self) -> Result<Digest, CanonicalError> {
        self.unsealed().digest()
    }

    /// The recomputed hash and the size of the body's canonical form.
    pub fn hash_and_body_len(&self) -> Result<(Digest, usize), CanonicalError> {
        self.unsealed().digest_and_body_len()
    }

    /// The wire form: a JSON object with `hash` and, when signed, `signer` and `sig`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("stream".into(), Value::String(self.stream.as_str().to_owned()));
        object.insert("seq".into(), Value::from(self.seq));
        object.insert("kind".into(), Value::String(self.kind.as_str().to_owned()));
        object.insert("at_ms".into(), Value::from(self.at_ms));
        object.insert("body".into(), self.body.clone());
        object.insert("prev".into(), Value::String(self.prev.to_hex()));
        if let Some(signer) = &self.signer {
            object.insert("signer".into(), Value::String(signer.as_str().to_owned()));
        }
        object.insert("hash".into(), Value::String(self.hash.to_hex()));
        if let Some(sig) = &self.sig {
            object.insert("sig".into(), Value::String(URL_SAFE_NO_PAD.encode(sig.as_bytes())));
        }
        Value::Object(object)
    }

    /// Reads the wire form, checking the shape of every field and rejecting unknown ones.
    /// Whether the hashes and signatures are right is the verifier's job.
    pub fn from_json(value: Value) -> Result<Self, FormatError> {
        let Value::Object(mut object) = value else {
            return Err(FormatError::new("event", "must be a JSON object"));
        };
        let mut take = |name: &str| object.remove(name);
        let stream = StreamId::new(take_string(take("stream"), "stream")?)?;
        let seq = take_u64(take("seq"), "seq")?;
        let kind = EventKind::new(take_string(take("kind"), "kind")?)?;
        let at_ms = take_u64(take("at_ms"), "at_ms")?;
        let body = take("body").ok_or_else(|| FormatError::new("body", "missing"))?;
        let prev: Digest =
            take_string(take("prev"), "prev")?.parse().map_err(|e: FormatError| FormatError::new("prev", e.problem))?;
        let hash: Digest =
            take_string(take("hash"), "hash")?.parse().map_err(|e: FormatError| FormatError::new("hash", e.problem))?;
        let signer = match take("signer") {
            None => None,
            Some(value) => Some(KeyId::new(take_string(Some(value), "signer")?)?),
        };
        let sig = match take("sig") {
            None => None,
            Some(value) => Some(SignatureBytes::from_base64url(&take_string(Some(value), "sig")?)?),
        };
        if let Some(unknown) = object.keys().next() {
            return Err(FormatError::new(unknown.clone(), "unknown event field"));
        }
        Ok(Self { stream, seq, kind, body, at_ms, prev, signer, hash, sig })
    }
}

fn take_string(value: Option<Value>, field: &str) -> Result<String, FormatError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(FormatError::new(field, "must be a string")),
        None => Err(FormatError::new(field, "missing")),
    }
}

fn take_u64(value: Option<Value>, field: &str) -> Result<u64, FormatError> {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .filter(|n| *n <= canonical::SAFE_INTEGER_MAX)
            .ok_or_else(|| FormatError::new(field, "must be a non-negative integer below 2^53")),
        Some(_) => Err(FormatError::new(field, "must be a non-negative integer")),
        None => Err(FormatError::new(field, "missing")),
    }
}

/// Hash binding a checkpoint's serialized state: SHA-256(STATE_HASH_TAG ‖ canonical state).
pub fn state_hash(state: &Value) -> Result<Digest, CanonicalError> {
    Ok(state_hash_of_canonical(&canonical::to_canonical_string(state)?))
}

/// [`state_hash`] of a state already in canonical form (`canonical` must be
/// [`canonical::to_canonical_string`] of the state).
pub fn state_hash_of_canonical(canonical: &str) -> Digest {
    Digest::tagged(STATE_HASH_TAG, canonical.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(StreamId::new("ses_01J:abc-1.2").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("a/b").is_err());
        assert!(StreamId::new("x".repeat(STREAM_ID_BYTES_MAX + 1)).is_err());
        assert!(EventKind::new("round.bid").is_ok());
        assert!(EventKind::new("round bid").is_err());
    }

    #[test]
    fn digest_text_form_is_unique() {
        let digest = Digest::tagged(b"t", b"x");
        assert_eq!(digest.to_hex().parse::<Digest>(), Ok(digest));
        assert!(digest.to_hex().to_uppercase().parse::<Digest>().is_err());
        assert!("abc".parse::<Digest>().is_err());
    }

    #[test]
    fn content_matches_generic_canonicalization() {
        // The hand-assembled content must equal JCS of the equivalent object.
        let stream = StreamId::new("s1").expect("valid");
        let kind = EventKind::new("note").expect("valid");
        let body = serde_json::json!({"z": 1, "a": [true, null, "é"], "m": {"b": 0.5}});
        let signer = KeyId::new("agent:buyer#1").expect("valid");
        let unsealed = UnsealedEvent {
            stream: &stream,
            seq: 7,
            kind: &kind,
            body: &body,
            at_ms: 1_700_000_000_000,
            prev: stream.genesis(),
            signer: Some(&signer),
        };
        let generic = serde_json::json!({
            "stream": "s1", "seq": 7, "kind": "note", "body": body.clone(), "at_ms": 1_700_000_000_000_u64,
            "prev": stream.genesis().to_hex(), "signer": "agent:buyer#1",
        });
        assert_eq!(
            unsealed.canonical_content().expect("canonical"),
            canonical::to_canonical_string(&generic).expect("canonical")
        );
    }
}
