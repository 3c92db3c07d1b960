//! Receipts: what a provider signs when it has been paid (`pactum-receipt/1`, a JSON object).
//!
//! The signature is Ed25519 over SHA-256(`"pactum-receipt/1\0"` ‖ JCS(receipt without
//! `signature`)), so a receipt verifies on its own, with no transcript or database: the issuer's
//! public key is inside it, and it names the transcript and the hash of the agreement event that
//! it settles. (A PEAC interaction-record form joins it later.)

use serde_json::{Map, Value, json};

use pactum_transcripts::canonical::to_canonical_string;
use pactum_transcripts::{Digest, SignatureBytes, verify_digest_signature};

use crate::session::model::{PriceBody, SESSION_STREAM_PREFIX, SessionState};

/// Name and version of the receipt format.
pub const RECEIPT_FORMAT: &str = "pactum-receipt/1";
/// Domain-separation tag hashed before the canonical receipt.
pub const RECEIPT_HASH_TAG: &[u8] = b"pactum-receipt/1\0";
/// The one signature algorithm.
const SIGNATURE_ALGORITHM: &str = "Ed25519";
/// Largest receipt accepted for verification: a receipt is well under a kilobyte.
pub const RECEIPT_BYTES_MAX: usize = 16 * 1024;

/// The fields of a receipt besides its `signature` (a coalition's receipt adds `coalition`).
pub const RECEIPT_FIELDS: &[&str] = &[
    "format",
    "receipt_id",
    "session_id",
    "transcript_id",
    "intent_type",
    "issuer",
    "payer",
    "payee",
    "amount",
    "rail",
    "payment_id",
    "rail_reference",
    "agreement",
    "policy_hash",
    "issued_at_ms",
    "coalition",
];

/// Why a receipt does not verify (stable code `RECEIPT_INVALID`).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("receipt is invalid: {0}")]
pub struct ReceiptError(pub String);

impl ReceiptError {
    pub fn code(&self) -> &'static str {
        "RECEIPT_INVALID"
    }
}

/// The receipt a committed session's provider must sign, and the digest it signs.
pub(crate) fn unsigned_receipt(state: &SessionState) -> Option<(Value, Digest)> {
    let created = state.created.as_ref()?;
    let agreement = state.agreement.as_ref()?;
    let committed = state.rail_committed.as_ref()?;
    let provider = state.provider(&agreement.provider)?;
    let mut receipt = json!({
        "format": RECEIPT_FORMAT,
        "receipt_id": format!("rcpt-{}", created.session_id),
        "session_id": created.session_id,
        "transcript_id": format!("{SESSION_STREAM_PREFIX}{}", created.session_id),
        "intent_type": created.intent.get("intent_type").cloned().unwrap_or(Value::Null),
        "issuer": { "agent_id": provider.agent_id, "key_id": provider.key_id, "public_key": provider.public_key },
        "payer": created.buyer.agent_id,
        "payee": agreement.provider,
        "amount": PriceBody::clone(&agreement.price),
        "rail": created.rail,
        "payment_id": agreement.payment_id,
        "rail_reference": committed.evidence.reference,
        "agreement": { "event": format!("event:{}", agreement.accept_seq), "hash": agreement.accept_hash.clone()? },
        "policy_hash": created.policy_hash,
        "issued_at_ms": committed.at_ms,
    });
    // A coalition's receipt names the lead as payer and lists every member's part.
    if let (Some(coalition), Some(parts), Some(object)) =
        (state.coalition(), state.coalition_parts(), receipt.as_object_mut())
    {
        let members: Vec<Value> = parts
            .iter()
            .map(|(agent_id, amount_minor)| json!({ "agent_id": agent_id, "amount_minor": amount_minor }))
            .collect();
        object.insert("coalition".into(), json!({ "lead": coalition.lead, "members": members }));
    }
    let digest = receipt_digest(&receipt).ok()?;
    Some((receipt, digest))
}

/// The PEAC record type of a payment receipt.
pub const PEAC_PAYMENT_TYPE: &str = "org.peacprotocol/payment";

/// The PEAC interaction record (Wire 0.2) a committed session's provider must sign, as its JWS
/// signing input: `iss` the provider's `did:key`, `iat` and `occurred_at` the commitment's time,
/// `jti` a UUIDv7 of that time and 10 bytes derived from the session's seed, the commerce
/// extension (rail, amount in minor units, currency, the rail's reference) and the policy
/// digest. Derived from the state alone, so a replay recomputes it exactly.
pub(crate) fn peac_signing_input(state: &SessionState) -> Option<String> {
    use pactum_transcripts::peac;
    let created = state.created.as_ref()?;
    let agreement = state.agreement.as_ref()?;
    let committed = state.rail_committed.as_ref()?;
    let provider = state.provider(&agreement.provider)?;
    let public_key = pactum_transcripts::public_key_from_base64url(&provider.public_key).ok()?;
    let entropy =
        Digest::tagged(b"pactum-receipt/1 jti\0", format!("{}:{}", created.session_id, created.seed).as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&entropy.as_bytes()[..10]);
    let occurred_at = i64::try_from(committed.at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|ts| format!("{ts:.3}"))?;
    let mut claims = peac::Claims::new(
        peac::RecordKind::Evidence,
        PEAC_PAYMENT_TYPE,
        peac::did_key_for_ed25519(&public_key),
        committed.at_ms / 1000,
        peac::uuid_v7(committed.at_ms, random),
    );
    claims.occurred_at = Some(occurred_at);
    claims.policy = Some(peac::Policy { digest: peac::policy_digest(&created.policy).ok()?, uri: None, version: None });
    let claims = claims.with_commerce(&peac::Commerce {
        payment_rail: created.rail.clone(),
        amount_minor: agreement.price.amount_minor,
        currency: agreement.price.currency.clone(),
        reference: Some(committed.evidence.reference.clone()),
        asset: None,
        env: None,
        event: None,
    });
    peac::signing_input(&claims, &provider.key_id).ok()
}

/// Verifies a session's PEAC receipt: it verifies under the provider's recorded key (every
/// check of the PEAC verifier) and its signing input is exactly the one the session calls for.
pub fn verify_peac_in_session(
    state: &SessionState,
    jws: &str,
) -> Result<pactum_transcripts::peac::VerifiedReceipt, ReceiptError> {
    let expected = peac_signing_input(state).ok_or_else(|| ReceiptError("the session was not paid".into()))?;
    verify_peac_for_input(state, jws, &expected)
}

/// [`verify_peac_in_session`] given the signing input the session calls for (worked out by
/// the caller already).
pub(crate) fn verify_peac_for_input(
    state: &SessionState,
    jws: &str,
    expected: &str,
) -> Result<pactum_transcripts::peac::VerifiedReceipt, ReceiptError> {
    use pactum_transcripts::peac;
    if jws.rsplit_once('.').map(|(input, _)| input) != Some(expected) {
        return Err(ReceiptError("the PEAC receipt is not the record of this session's payment".into()));
    }
    let agreement = state.agreement.as_ref().ok_or_else(|| ReceiptError("no agreement".into()))?;
    let provider = state.provider(&agreement.provider).ok_or_else(|| ReceiptError("unknown provider".into()))?;
    let public_key = pactum_transcripts::public_key_from_base64url(&provider.public_key)
        .map_err(|e| ReceiptError(format!("provider key: {e}")))?;
    let mut keys = peac::Jwks::new();
    keys.insert(provider.key_id.clone(), public_key).map_err(|e| ReceiptError(e.to_string()))?;
    let now_s = state.rail_committed.as_ref().map_or(0, |c| c.at_ms / 1000);
    peac::verify(jws, &keys, &peac::VerifyOptions { now_s, issuer: None, revoked_kids: &[] })
        .map_err(|e| ReceiptError(format!("the PEAC receipt does not verify: {} {}", e.code.code(), e.message)))
}

/// The digest a receipt's signature covers: everything but `signature`.
pub fn receipt_digest(receipt: &Value) -> Result<Digest, ReceiptError> {
    let mut content = receipt.as_object().ok_or_else(|| ReceiptError("not a JSON object".into()))?.clone();
    content.remove("signature");
    let canonical = to_canonical_string(&Value::Object(content)).map_err(|e| ReceiptError(e.to_string()))?;
    Ok(Digest::tagged(RECEIPT_HASH_TAG, canonical.as_bytes()))
}

/// The receipt with its signature attached.
pub(crate) fn attach_signature(receipt: &Value, key_id: &str, signature: &SignatureBytes) -> Value {
    let mut signed = receipt.as_object().cloned().unwrap_or_default();
    signed.insert(
        "signature".into(),
        json!({ "alg": SIGNATURE_ALGORITHM, "key_id": key_id, "value": signature.to_base64url() }),
    );
    Value::Object(signed)
}

/// What a verified receipt says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedReceipt {
    pub receipt_id: String,
    pub session_id: String,
    pub transcript_id: String,
    pub issuer: String,
    pub issuer_key_id: String,
    pub payer: String,
    pub payee: String,
    pub amount: PriceBody,
    pub digest: Digest,
}

fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Result<&'v Value, ReceiptError> {
    object.get(name).ok_or_else(|| ReceiptError(format!("{name} is missing")))
}

fn text<'v>(object: &'v Map<String, Value>, name: &str) -> Result<&'v str, ReceiptError> {
    field(object, name)?.as_str().ok_or_else(|| ReceiptError(format!("{name} is not text")))
}

/// Verifies a receipt on its own: format, every field, and the issuer's signature with the key
/// the receipt names. Whether that key is the provider's is for the caller to check against a
/// transcript or a directory ([`verify_receipt_in_session`]).
pub fn verify_receipt(receipt: &Value) -> Result<VerifiedReceipt, ReceiptError> {
    let object = receipt.as_object().ok_or_else(|| ReceiptError("not a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|k| !RECEIPT_FIELDS.contains(&k.as_str()) && k.as_str() != "signature") {
        return Err(ReceiptError(format!("unknown field {unknown:?}")));
    }
    if text(object, "format")? != RECEIPT_FORMAT {
        return Err(ReceiptError(format!("format is not {RECEIPT_FORMAT}")));
    }
    let issuer = field(object, "issuer")?.as_object().ok_or_else(|| ReceiptError("issuer is not an object".into()))?;
    let signature =
        field(object, "signature")?.as_object().ok_or_else(|| ReceiptError("signature is not an object".into()))?;
    if text(signature, "alg")? != SIGNATURE_ALGORITHM {
        return Err(ReceiptError(format!("signature alg is not {SIGNATURE_ALGORITHM}")));
    }
    if text(signature, "key_id")? != text(issuer, "key_id")? {
        return Err(ReceiptError("signed with a key other than the issuer's".into()));
    }
    let public_key = pactum_transcripts::public_key_from_base64url(text(issuer, "public_key")?)
        .map_err(|e| ReceiptError(format!("issuer public_key: {e}")))?;
    let sig = SignatureBytes::from_base64url(text(signature, "value")?)
        .map_err(|e| ReceiptError(format!("signature value: {e}")))?;
    let amount: PriceBody =
        serde_json::from_value(field(object, "amount")?.clone()).map_err(|e| ReceiptError(format!("amount: {e}")))?;
    amount.money().map_err(|e| ReceiptError(format!("amount: {e}")))?;
    let digest = receipt_digest(receipt)?;
    if !verify_digest_signature(&public_key, &digest, &sig) {
        return Err(ReceiptError(
            "the signature does not verify: the receipt was altered or not signed by its issuer".into(),
        ));
    }
    let session_id = text(object, "session_id")?.to_owned();
    let transcript_id = text(object, "transcript_id")?.to_owned();
    if transcript_id != format!("{SESSION_STREAM_PREFIX}{session_id}") {
        return Err(ReceiptError("transcript_id does not name the session's transcript".into()));
    }
    Ok(VerifiedReceipt {
        receipt_id: text(object, "receipt_id")?.to_owned(),
        session_id,
        transcript_id,
        issuer: text(issuer, "agent_id")?.to_owned(),
        issuer_key_id: text(issuer, "key_id")?.to_owned(),
        payer: text(object, "payer")?.to_owned(),
        payee: text(object, "payee")?.to_owned(),
        amount,
        digest,
    })
}

/// Verifies a session's receipt and checks it against the session: it must be exactly the
/// receipt the session's state calls for, signed by the provider the session recorded.
pub fn verify_receipt_in_session(state: &SessionState) -> Result<VerifiedReceipt, ReceiptError> {
    let receipt = state.receipt.as_ref().ok_or_else(|| ReceiptError("the session has no receipt".into()))?;
    let verified = verify_receipt(receipt)?;
    let (expected, _) = unsigned_receipt(state).ok_or_else(|| ReceiptError("the session was not paid".into()))?;
    let mut content = receipt.as_object().cloned().unwrap_or_default();
    content.remove("signature");
    if Value::Object(content) != expected {
        return Err(ReceiptError("the receipt differs from the session's agreement and payment".into()));
    }
    if let Some(jws) = &state.receipt_peac {
        verify_peac_in_session(state, jws)?;
    }
    Ok(verified)
}
