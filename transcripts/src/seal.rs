//! Seals: a party's signature on one message it sent to another process, carried inside the
//! message (`envelope`) when the receiver records it in its own stream. Pactum's remote
//! providers seal their answers (`pactum-envelope/1`); the digest is defined here so that
//! verifiers of exported transcripts (PACT v4) check it the same way the runtime does.

use serde_json::{Value, json};

use crate::canonical::{CanonicalError, to_canonical_string};
use crate::event::Digest;

/// Name and version of a seal.
pub const SEAL_FORMAT: &str = "pactum-envelope/1";
/// Domain-separation tag hashed before the canonical envelope.
pub const SEAL_HASH_TAG: &[u8] = b"pactum-envelope/1\0";

/// The digest a seal signs: SHA-256(`SEAL_HASH_TAG` ‖ JCS({`format`, `session_id`, `kind`,
/// `message` (the body without `envelope`), `reply_to`, `key_id`, `signed_at_ms`})).
pub fn seal_digest(
    session_id: &str,
    kind: &str,
    message: &Value,
    reply_to: &str,
    key_id: &str,
    signed_at_ms: u64,
) -> Result<Digest, CanonicalError> {
    let mut message = message.clone();
    if let Value::Object(fields) = &mut message {
        fields.remove("envelope");
    }
    let envelope = json!({
        "format": SEAL_FORMAT,
        "session_id": session_id,
        "kind": kind,
        "message": message,
        "reply_to": reply_to,
        "key_id": key_id,
        "signed_at_ms": signed_at_ms,
    });
    Ok(Digest::tagged(SEAL_HASH_TAG, to_canonical_string(&envelope)?.as_bytes()))
}
