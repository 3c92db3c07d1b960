//! Remote providers: negotiating with a provider that runs in another process, with its own
//! constellation, keys and transcript (`pactum provider serve`), over HTTP.
//!
//! Every message crosses as a signed envelope and both sides store it whole:
//!
//! - the buyer's messages (`round.intent`, `round.bid`, `round.counter`, `round.accept`, and
//!   the settlement it asks a receipt for) are its session's sealed events — hash-linked in the
//!   buyer's stream and signed by the buyer — sent as they are; the provider checks each hash
//!   and signature and records it in its own stream;
//! - the provider's answers (`round.ask`, `round.reject`) are messages signed by the provider
//!   under [`ENVELOPE_HASH_TAG`]: the signature covers the session, the message kind, every field
//!   of the message (sender, round, price, latency) and the hash of the buyer's event it answers
//!   ([`EnvelopeSeal`]). The buyer records the message with its seal in its session (the event
//!   itself is sealed by the buyer: only the buyer can extend its stream), and the fold checks
//!   the seal against the provider's key from the directory. The provider records the same
//!   message and seal in its stream.
//!
//! So the two transcripts verify on their own and agree on every shared message: the buyer's
//! events appear in the provider's stream with the same hashes, and the provider's messages in
//! the buyer's session with the same seals ([`host::shared_messages`]).
//!
//! [`host`] is the provider side (plain functions from request bytes to response bytes, which
//! the `pactum` program serves over HTTP); [`client`] is the buyer side: a bounded HTTP client
//! whose every fault — refused connection, timeout, an error status, a body over the limit,
//! garbage, a bad signature — becomes an answer the session records (`provider.unreachable`,
//! `provider.timeout`, `provider.invalid_answer`) rather than an error or a hang.

pub mod client;
pub mod host;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use pactum_transcripts::{Digest, EventSigner, SignatureBytes, verify_digest_signature};

/// Name and version of the wire protocol between a buyer and a remote provider.
pub const REMOTE_FORMAT: &str = "pactum-remote/1";
/// Name and version of a provider's envelope seal.
pub const ENVELOPE_FORMAT: &str = pactum_transcripts::seal::SEAL_FORMAT;
/// Domain-separation tag hashed before the canonical envelope.
pub const ENVELOPE_HASH_TAG: &[u8] = pactum_transcripts::seal::SEAL_HASH_TAG;
/// Largest request or response body either side accepts. A quote request carries at most a
/// few sealed events (each at most `EVENT_BODY_BYTES_MAX` in its body, in practice under a
/// kilobyte); an answer is one message.
pub const REMOTE_BODY_BYTES_MAX: usize = 256 * 1024;
/// How long the buyer waits for a TCP connection to a remote provider.
pub const REMOTE_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long the buyer waits for a remote provider to sign a receipt.
pub const REMOTE_RECEIPT_TIMEOUT_MS: u64 = 5_000;
/// How many times the buyer asks a remote provider to sign a receipt before leaving the
/// session for a later resume.
pub const REMOTE_RECEIPT_ATTEMPTS: u32 = 3;
/// Longest a provider spends on one request, from its first byte to its answer (reading a
/// slow body included); then it answers `408`. Above the longest simulated timeout.
pub const REMOTE_REQUEST_TIME_MS: u64 = 35_000;
/// Requests a provider serves at once; more are answered `503` at once.
pub const REMOTE_CONCURRENT_REQUESTS_MAX: usize = 64;
/// Buyer events one request may carry.
pub const REMOTE_EVENTS_PER_REQUEST_MAX: usize = 16;
/// Longest a provider holds a request it simulates as timing out (it answers after the
/// buyer's wait, never later than this).
pub const REMOTE_SIMULATED_TIMEOUT_MS_MAX: u64 = 30_000;

/// HTTP paths of a remote provider.
pub mod path {
    pub const IDENTITY: &str = "/pactum/v1/identity";
    pub const QUOTE: &str = "/pactum/v1/quote";
    pub const RECEIPT: &str = "/pactum/v1/receipt";
}

/// A provider's signature on one of its messages, carried in the message's `envelope` field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSeal {
    pub format: String,
    /// Hash (hex) of the buyer's event the message answers.
    pub reply_to: String,
    pub key_id: String,
    /// The provider's time when it signed.
    pub signed_at_ms: u64,
    /// Ed25519 (base64url) over SHA-256(`ENVELOPE_HASH_TAG` ‖ JCS(envelope)).
    pub signature: String,
}

/// The digest a provider signs: the session, the message kind, the message (its body without
/// `envelope`) and the seal's fields other than the signature
/// ([`pactum_transcripts::seal::seal_digest`]).
pub fn envelope_digest(
    session_id: &str,
    kind: &str,
    message: &Value,
    reply_to: &str,
    key_id: &str,
    signed_at_ms: u64,
) -> Result<Digest, String> {
    pactum_transcripts::seal::seal_digest(session_id, kind, message, reply_to, key_id, signed_at_ms)
        .map_err(|e| e.to_string())
}

/// Signs a message as its sender.
pub fn seal_message(
    signer: &dyn EventSigner,
    session_id: &str,
    kind: &str,
    message: &Value,
    reply_to: &Digest,
    signed_at_ms: u64,
) -> Result<EnvelopeSeal, String> {
    let key_id = signer.key_id().as_str().to_owned();
    let reply_to = reply_to.to_hex();
    let digest = envelope_digest(session_id, kind, message, &reply_to, &key_id, signed_at_ms)?;
    let signature = signer.sign_digest(&digest);
    Ok(EnvelopeSeal {
        format: ENVELOPE_FORMAT.to_owned(),
        reply_to,
        key_id,
        signed_at_ms,
        signature: signature.to_base64url(),
    })
}

/// Checks a seal: its format, the key it names, and the signature under `public_key`
/// (base64url) over this message of this session.
pub fn verify_seal(
    seal: &EnvelopeSeal,
    public_key: &str,
    key_id: &str,
    session_id: &str,
    kind: &str,
    message: &Value,
) -> Result<(), String> {
    if seal.format != ENVELOPE_FORMAT {
        return Err(format!("envelope format {:?} is not {ENVELOPE_FORMAT}", seal.format));
    }
    if seal.key_id != key_id {
        return Err(format!("the envelope is signed by {}, the provider's key is {key_id}", seal.key_id));
    }
    let public_key = pactum_transcripts::public_key_from_base64url(public_key)?;
    let signature = SignatureBytes::from_base64url(&seal.signature).map_err(|e| e.to_string())?;
    let digest = envelope_digest(session_id, kind, message, &seal.reply_to, &seal.key_id, seal.signed_at_ms)?;
    if !verify_digest_signature(&public_key, &digest, &signature) {
        return Err("the envelope's signature does not verify under the provider's key".into());
    }
    Ok(())
}
