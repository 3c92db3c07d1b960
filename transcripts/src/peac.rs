//! PEAC interaction-record receipts ("Wire 0.2"): issue and verify compact JWS receipts.
//!
//! A receipt is a compact JWS: the protected header `{"typ":"interaction-record+jwt","alg":"EdDSA","kid":..}`,
//! the claims as canonical JSON (RFC 8785), and an Ed25519 signature over `header.payload`, each
//! part unpadded base64url. [`verify`] runs every check in a fixed order and reports the first
//! failure with a stable `E_*` code ([`ErrorCode`]); the constants and codes are kept in
//! `specs/peac-kernel.toml` and a test holds this module to them.
//!
//! Nothing here reads the clock or draws randomness: `now_s` is passed to [`verify`], and
//! [`uuid_v7`] takes its milliseconds and random bytes from the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::canonical::{StrictJsonError, parse_strict, to_canonical_string};
use crate::keys::{Ed25519Signer, SignatureBytes, is_strict_point, strict_public_key};

/// HTTP header that carries one receipt.
pub const HTTP_HEADER: &str = "PEAC-Receipt";
/// The only `typ` this version knows.
pub const TYP: &str = "interaction-record+jwt";
/// The only signature algorithm: Ed25519.
pub const ALG: &str = "EdDSA";
/// The wire version `typ` implies.
pub const PEAC_VERSION: &str = "0.2";
/// Extension group with payment facts.
pub const COMMERCE_EXTENSION: &str = "org.peacprotocol/commerce";
/// The closed list of pillars, sorted.
pub const PILLARS: &[&str] = &[
    "access",
    "attribution",
    "commerce",
    "compliance",
    "consent",
    "identity",
    "privacy",
    "provenance",
    "purpose",
    "safety",
];

/// Largest compact JWS, in bytes; bounds the work before anything is decoded.
pub const JWS_BYTES_MAX: usize = 262_144;
/// Deepest JSON nesting (the top-level object is depth 1); bounds recursion.
pub const JSON_DEPTH_MAX: usize = 32;
/// Longest JSON array.
pub const JSON_ARRAY_LENGTH_MAX: usize = 10_000;
/// Most members in one JSON object.
pub const JSON_OBJECT_KEYS_MAX: usize = 1_000;
/// Longest JSON string (member names included), in UTF-8 bytes.
pub const JSON_STRING_BYTES_MAX: usize = 65_536;
/// Most JSON values in one header or claims set.
pub const JSON_NODES_MAX: usize = 100_000;
/// Longest `kid`, in bytes: a DID URL with fragment or a thumbprint URI fits with room to spare.
pub const KID_BYTES_MAX: usize = 256;
/// How far `iat` may lie in the verifier's future, in seconds (clocks drift).
pub const CLOCK_SKEW_S: u64 = 300;
/// Shortest `jti`, in characters.
pub const JTI_CHARS_MIN: usize = 1;
/// Longest `jti`, in characters.
pub const JTI_CHARS_MAX: usize = 256;
/// Longest `type`, in characters.
pub const TYPE_CHARS_MAX: usize = 256;
/// Largest JWKS document, in bytes.
pub const JWKS_BYTES_MAX: usize = 65_536;
/// Most keys in one JWKS.
pub const JWKS_KEYS_MAX: usize = 20;

/// Header members a receipt may carry; anything else is refused.
const HEADER_MEMBERS: &[&str] = &["typ", "alg", "kid"];
/// Header members that embed or point at a key: the verifier must choose the key, not the receipt.
const EMBEDDED_KEY_MEMBERS: &[&str] = &["jwk", "x5c", "x5u", "jku"];
/// Top-level claims of Wire 0.2.
const CLAIM_NAMES: &[&str] = &[
    "peac_version",
    "kind",
    "type",
    "iss",
    "iat",
    "jti",
    "sub",
    "pillars",
    "policy",
    "occurred_at",
    "purpose_declared",
    "extensions",
];
/// Claims a receipt must not carry: it has no audience and does not expire.
const FORBIDDEN_CLAIMS: &[&str] = &["aud", "exp"];

macro_rules! error_codes {
    ($($variant:ident => $code:literal, $description:literal;)*) => {
        /// Why a receipt was refused; each has a stable `E_*` code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $description] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order verification checks them.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable `E_*` code.
            pub const fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// What the code means.
            pub const fn describe(self) -> &'static str {
                match self { $(ErrorCode::$variant => $description,)* }
            }
        }
    };
}

error_codes! {
    ReceiptTooLarge => "E_RECEIPT_TOO_LARGE", "the compact JWS is longer than jws_bytes_max bytes";
    InvalidFormat => "E_INVALID_FORMAT", "not three segments, not strict unpadded base64url, or header or claims not a JSON object";
    IJsonInvalidString => "E_IJSON_INVALID_STRING", "header or claims are not valid UTF-8 or contain a lone surrogate";
    IJsonDuplicateMemberName => "E_IJSON_DUPLICATE_MEMBER_NAME", "a JSON object names the same member twice";
    IJsonNumberOutOfRange => "E_IJSON_NUMBER_OUT_OF_RANGE", "an integer outside plus or minus (2^53 - 1)";
    IJsonSyntax => "E_IJSON_SYNTAX", "header or claims are not JSON";
    JwsAlgRejected => "E_JWS_ALG_REJECTED", "alg is missing or not EdDSA";
    JwsEmbeddedKey => "E_JWS_EMBEDDED_KEY", "the header embeds or points at a key (jwk, x5c, x5u, jku)";
    JwsCritRejected => "E_JWS_CRIT_REJECTED", "the header has crit";
    JwsB64Rejected => "E_JWS_B64_REJECTED", "the header has b64";
    JwsZipRejected => "E_JWS_ZIP_REJECTED", "the header has zip";
    JwsTypUnknown => "E_JWS_TYP_UNKNOWN", "typ is missing or not a known receipt type";
    JwsMissingKid => "E_JWS_MISSING_KID", "kid is missing, not a string, or empty";
    JwsKidTooLong => "E_JWS_KID_TOO_LONG", "kid is longer than kid_bytes_max bytes";
    JwsUnknownHeader => "E_JWS_UNKNOWN_HEADER", "the header has a member other than typ, alg and kid";
    WireVersionMismatch => "E_WIRE_VERSION_MISMATCH", "peac_version does not match the version typ implies";
    KeyNotFound => "E_KEY_NOT_FOUND", "no key with this kid in the issuer's key set";
    KeyRevoked => "E_KEY_REVOKED", "the key with this kid is revoked";
    InvalidSignature => "E_INVALID_SIGNATURE", "non-canonical or small-order A or R, S not below L, or the signature does not verify";
    JsonLimitExceeded => "E_JSON_LIMIT_EXCEEDED", "header or claims exceed a structural limit (depth, array length, keys, string bytes, nodes)";
    ForbiddenClaim => "E_FORBIDDEN_CLAIM", "a claim receipts must not carry (aud, exp)";
    UnknownClaim => "E_UNKNOWN_CLAIM", "a top-level claim outside the schema";
    InvalidClaims => "E_INVALID_CLAIMS", "a claim is missing or has the wrong type or form";
    IssuerMismatch => "E_ISSUER_MISMATCH", "iss is not the issuer the verifier expected";
    NotYetValid => "E_NOT_YET_VALID", "iat is more than clock_skew_s seconds after the verifier's now";
    InvalidJwks => "E_INVALID_JWKS", "the key set is not a valid JWKS of OKP Ed25519 keys within jwks_bytes_max and jwks_keys_max";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// A refused receipt, claims set or key set: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PeacError {
    pub code: ErrorCode,
    pub message: String,
}

impl PeacError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, PeacError> {
    Err(PeacError::new(code, message))
}

/// Whether a record proves something happened or asks for something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Evidence,
    Challenge,
}

impl RecordKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::Evidence => "evidence",
            RecordKind::Challenge => "challenge",
        }
    }
}

/// The policy a record was made under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `sha256:<64 lowercase hex>`, usually from [`policy_digest`].
    pub digest: String,
    pub uri: Option<String>,
    pub version: Option<String>,
}

/// Payment facts for the [`COMMERCE_EXTENSION`] group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commerce {
    pub payment_rail: String,
    /// Integer minor units (cents for USD); written as a decimal string.
    pub amount_minor: u64,
    /// ISO 4217 code: three uppercase letters.
    pub currency: String,
    pub reference: Option<String>,
    pub asset: Option<String>,
    pub env: Option<String>,
    pub event: Option<String>,
}

impl Commerce {
    /// The extension value, for `claims.extensions[COMMERCE_EXTENSION]`.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("payment_rail".into(), Value::String(self.payment_rail.clone()));
        map.insert("amount_minor".into(), Value::String(self.amount_minor.to_string()));
        map.insert("currency".into(), Value::String(self.currency.clone()));
        for (name, field) in
            [("reference", &self.reference), ("asset", &self.asset), ("env", &self.env), ("event", &self.event)]
        {
            if let Some(text) = field {
                map.insert(name.into(), Value::String(text.clone()));
            }
        }
        Value::Object(map)
    }
}

/// The claims of one interaction record. `peac_version` is always [`PEAC_VERSION`].
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub kind: RecordKind,
    /// Reverse-DNS (`org.peacprotocol/payment`) or an absolute URI; the JSON name is `type`.
    pub record_type: String,
    /// Canonical `https://` origin or a `did:`.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    pub jti: String,
    pub sub: Option<String>,
    /// Sorted, from [`PILLARS`]; empty means absent.
    pub pillars: Vec<String>,
    pub policy: Option<Policy>,
    /// RFC 3339 time of the interaction; evidence only.
    pub occurred_at: Option<String>,
    pub purpose_declared: Option<String>,
    /// `<lowercase dns>/<segment>` to any JSON; empty means absent.
    pub extensions: BTreeMap<String, Value>,
}

impl Claims {
    /// A minimal record; fill the optional fields directly.
    pub fn new(
        kind: RecordKind,
        record_type: impl Into<String>,
        iss: impl Into<String>,
        iat: u64,
        jti: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            record_type: record_type.into(),
            iss: iss.into(),
            iat,
            jti: jti.into(),
            sub: None,
            pillars: Vec::new(),
            policy: None,
            occurred_at: None,
            purpose_declared: None,
            extensions: BTreeMap::new(),
        }
    }

    /// Adds the commerce extension.
    pub fn with_commerce(mut self, commerce: &Commerce) -> Self {
        self.extensions.insert(COMMERCE_EXTENSION.to_owned(), commerce.to_value());
        self
    }

    /// The wire form of the claims.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("peac_version".into(), Value::String(PEAC_VERSION.into()));
        map.insert("kind".into(), Value::String(self.kind.as_str().into()));
        map.insert("type".into(), Value::String(self.record_type.clone()));
        map.insert("iss".into(), Value::String(self.iss.clone()));
        map.insert("iat".into(), Value::from(self.iat));
        map.insert("jti".into(), Value::String(self.jti.clone()));
        if let Some(sub) = &self.sub {
            map.insert("sub".into(), Value::String(sub.clone()));
        }
        if !self.pillars.is_empty() {
            map.insert("pillars".into(), Value::Array(self.pillars.iter().cloned().map(Value::String).collect()));
        }
        if let Some(policy) = &self.policy {
            let mut object = Map::new();
            object.insert("digest".into(), Value::String(policy.digest.clone()));
            if let Some(uri) = &policy.uri {
                object.insert("uri".into(), Value::String(uri.clone()));
            }
            if let Some(version) = &policy.version {
                object.insert("version".into(), Value::String(version.clone()));
            }
            map.insert("policy".into(), Value::Object(object));
        }
        if let Some(occurred_at) = &self.occurred_at {
            map.insert("occurred_at".into(), Value::String(occurred_at.clone()));
        }
        if let Some(purpose) = &self.purpose_declared {
            map.insert("purpose_declared".into(), Value::String(purpose.clone()));
        }
        if !self.extensions.is_empty() {
            let extensions = self.extensions.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
            map.insert("extensions".into(), Value::Object(extensions));
        }
        Value::Object(map)
    }
}

/// Signs `claims` as a compact JWS under `kid`. The claims are checked against the same schema and
/// limits the verifier applies, so an issued receipt only fails verification on key or clock grounds.
pub fn issue(claims: &Claims, signer: &Ed25519Signer, kid: &str) -> Result<String, PeacError> {
    let input = signing_input(claims, kid)?;
    let signature = signer.sign_message(input.as_bytes());
    attach_signature(&input, &signature)
}

/// The JWS signing input (`base64url(header) "." base64url(payload)`) for `claims` under `kid`,
/// after the same checks [`issue`] makes: for a signer that is elsewhere (the session core asks
/// the provider to sign it).
pub fn signing_input(claims: &Claims, kid: &str) -> Result<String, PeacError> {
    check_kid(kid)?;
    let value = claims.to_value();
    check_structure(&value)?;
    check_claims(&value)?;
    let header = header_json(kid);
    let payload =
        to_canonical_string(&value).map_err(|error| PeacError::new(ErrorCode::InvalidClaims, error.to_string()))?;
    Ok(format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload)))
}

/// The compact JWS: `signing_input "." base64url(signature)`.
pub fn attach_signature(signing_input: &str, signature: &SignatureBytes) -> Result<String, PeacError> {
    let jws = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()));
    if jws.len() > JWS_BYTES_MAX {
        return fail(ErrorCode::ReceiptTooLarge, format!("{} bytes, at most {JWS_BYTES_MAX}", jws.len()));
    }
    Ok(jws)
}

/// The protected header, members in the fixed order `typ`, `alg`, `kid`.
fn header_json(kid: &str) -> String {
    let mut out = String::from("{\"typ\":");
    crate::canonical::write_string(TYP, &mut out);
    out.push_str(",\"alg\":");
    crate::canonical::write_string(ALG, &mut out);
    out.push_str(",\"kid\":");
    crate::canonical::write_string(kid, &mut out);
    out.push('}');
    out
}

/// `"sha256:" + hex(SHA-256(jws))`: how other records refer to a receipt.
pub fn receipt_ref(jws: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(jws.as_bytes())))
}

/// The protected header of a compact JWS, decoded but not verified: for choosing a key by `kid`
/// and for showing what a refused receipt claimed. `None` if it is not strict base64url of a
/// strict JSON object within the size limit. Never trust it before [`verify`] succeeds.
pub fn unverified_header(jws: &str) -> Option<Value> {
    if jws.len() > JWS_BYTES_MAX {
        return None;
    }
    let header_text = jws.split('.').next()?;
    let bytes = decode_strict(header_text)?;
    let value = parse_strict(std::str::from_utf8(&bytes).ok()?).ok()?;
    value.is_object().then_some(value)
}

/// `"sha256:" + hex(SHA-256(JCS(policy)))`.
pub fn policy_digest(policy: &Value) -> Result<String, PeacError> {
    let text =
        to_canonical_string(policy).map_err(|error| PeacError::new(ErrorCode::InvalidClaims, error.to_string()))?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes()))))
}

/// A UUIDv7 (RFC 9562) from a millisecond timestamp and 10 random bytes, both from the caller.
/// The low 48 bits of `unix_ms` are used; 74 of the 80 random bits fill `rand_a` and `rand_b`.
pub fn uuid_v7(unix_ms: u64, random: [u8; 10]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (random[0] & 0x0f);
    bytes[7] = random[1];
    bytes[8] = 0x80 | (random[2] & 0x3f);
    bytes[9..].copy_from_slice(&random[3..]);
    let text = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &text[..8], &text[8..12], &text[12..16], &text[16..20], &text[20..])
}

/// `did:key` for an Ed25519 public key: multicodec `0xed01` then the key, base58btc with prefix `z`.
pub fn did_key_for_ed25519(public_key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0xed, 0x01]);
    bytes.extend_from_slice(public_key);
    format!("did:key:z{}", bs58::encode(bytes).into_string())
}

/// The Ed25519 keys of one issuer, by `kid`, and the kids it has revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwks {
    /// Each key with its decoded point, prepared once when the key is added (`None` if it is
    /// not a strict point: then every signature under it fails).
    keys: BTreeMap<String, ([u8; 32], Option<VerifyingKey>)>,
    revoked: BTreeSet<String>,
}

impl Jwks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key. Its point is checked when a signature is verified.
    pub fn insert(&mut self, kid: impl Into<String>, public_key: [u8; 32]) -> Result<(), PeacError> {
        let kid = kid.into();
        check_kid(&kid).map_err(|error| PeacError::new(ErrorCode::InvalidJwks, error.message))?;
        if self.keys.len() >= JWKS_KEYS_MAX && !self.keys.contains_key(&kid) {
            return fail(ErrorCode::InvalidJwks, format!("more than {JWKS_KEYS_MAX} keys"));
        }
        let prepared = strict_public_key(&public_key);
        self.keys.insert(kid, (public_key, prepared));
        Ok(())
    }

    pub fn revoke(&mut self, kid: impl Into<String>) {
        self.revoked.insert(kid.into());
    }

    /// Parses `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":..,"x":..}], "revoked_keys":[..]}`
    /// under I-JSON rules; `revoked_keys` lists kids or objects with a `kid`.
    pub fn parse(text: &str) -> Result<Self, PeacError> {
        let invalid = |message: String| PeacError::new(ErrorCode::InvalidJwks, message);
        if text.len() > JWKS_BYTES_MAX {
            return Err(invalid(format!("{} bytes, at most {JWKS_BYTES_MAX}", text.len())));
        }
        let value = parse_strict(text).map_err(|error| invalid(error.to_string()))?;
        let object = value.as_object().ok_or_else(|| invalid("not a JSON object".into()))?;
        let keys = object.get("keys").and_then(Value::as_array).ok_or_else(|| invalid("no keys array".into()))?;
        if keys.len() > JWKS_KEYS_MAX {
            return Err(invalid(format!("{} keys, at most {JWKS_KEYS_MAX}", keys.len())));
        }
        let mut jwks = Jwks::new();
        for key in keys {
            let field = |name: &str| key.get(name).and_then(Value::as_str);
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                return Err(invalid("a key that is not OKP Ed25519".into()));
            }
            let kid = field("kid").ok_or_else(|| invalid("a key without kid".into()))?;
            let x = field("x").ok_or_else(|| invalid(format!("key {kid:?} has no x")))?;
            let bytes = decode_strict(x).ok_or_else(|| invalid(format!("key {kid:?}: x is not strict base64url")))?;
            let public_key: [u8; 32] =
                bytes.try_into().map_err(|_| invalid(format!("key {kid:?}: x is not 32 bytes")))?;
            if jwks.keys.contains_key(kid) {
                return Err(invalid(format!("kid {kid:?} listed twice")));
            }
            jwks.insert(kid, public_key)?;
        }
        if let Some(revoked) = object.get("revoked_keys") {
            let entries = revoked.as_array().ok_or_else(|| invalid("revoked_keys is not an array".into()))?;
            for entry in entries {
                let kid = entry
                    .as_str()
                    .or_else(|| entry.get("kid").and_then(Value::as_str))
                    .ok_or_else(|| invalid("a revoked_keys entry without kid".into()))?;
                jwks.revoke(kid);
            }
        }
        Ok(jwks)
    }

    /// The key for `kid`, or why there is none.
    fn lookup(&self, kid: &str, also_revoked: &[&str]) -> Result<&([u8; 32], Option<VerifyingKey>), PeacError> {
        if self.revoked.contains(kid) || also_revoked.contains(&kid) {
            return fail(ErrorCode::KeyRevoked, format!("kid {kid:?} is revoked"));
        }
        self.keys.get(kid).ok_or_else(|| PeacError::new(ErrorCode::KeyNotFound, format!("no key with kid {kid:?}")))
    }
}

/// What the verifier supplies besides the receipt and keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// The verifier's time, seconds since the Unix epoch.
    pub now_s: u64,
    /// When given, `iss` must equal it.
    pub issuer: Option<&'a str>,
    /// Kids to refuse in addition to the key set's `revoked_keys`.
    pub revoked_kids: &'a [&'a str],
}

/// A receipt that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedReceipt {
    pub header: Value,
    pub claims: Value,
    pub receipt_ref: String,
}

/// Verifies a compact JWS receipt; the checks run in the order of [`ErrorCode::ALL`].
pub fn verify(jws: &str, keys: &Jwks, options: &VerifyOptions<'_>) -> Result<VerifiedReceipt, PeacError> {
    if jws.len() > JWS_BYTES_MAX {
        return fail(ErrorCode::ReceiptTooLarge, format!("{} bytes, at most {JWS_BYTES_MAX}", jws.len()));
    }
    let segments: Vec<&str> = jws.split('.').collect();
    let [header_text, payload_text, signature_text] = segments[..] else {
        return fail(ErrorCode::InvalidFormat, format!("{} segments, expected 3", segments.len()));
    };
    let not_base64 =
        |part: &str| PeacError::new(ErrorCode::InvalidFormat, format!("{part} is not strict unpadded base64url"));
    let header_bytes = decode_strict(header_text).ok_or_else(|| not_base64("header"))?;
    let payload_bytes = decode_strict(payload_text).ok_or_else(|| not_base64("payload"))?;
    let signature_bytes = decode_strict(signature_text).ok_or_else(|| not_base64("signature"))?;
    let signature: [u8; 64] = signature_bytes
        .try_into()
        .map_err(|_| PeacError::new(ErrorCode::InvalidFormat, "signature is not 64 bytes"))?;

    let header = parse_ijson(&header_bytes, "header")?;
    let claims = parse_ijson(&payload_bytes, "claims")?;
    let (Some(header_map), Some(claims_map)) = (header.as_object(), claims.as_object()) else {
        return fail(ErrorCode::InvalidFormat, "header and claims must be JSON objects");
    };

    let kid = check_header(header_map)?;
    let expected_version = version_for_typ(TYP);
    if claims_map.get("peac_version").and_then(Value::as_str) != Some(expected_version) {
        return fail(
            ErrorCode::WireVersionMismatch,
            format!(
                "typ {TYP} implies peac_version {expected_version:?}, claims have {:?}",
                claims_map.get("peac_version")
            ),
        );
    }

    let (public_key, prepared) = keys.lookup(kid, options.revoked_kids)?;
    let signing_input_bytes = header_text.len() + 1 + payload_text.len();
    verify_ed25519_strict(public_key, prepared.as_ref(), &jws.as_bytes()[..signing_input_bytes], &signature)?;

    check_structure(&header)?;
    check_structure(&claims)?;
    check_claims(&claims)?;

    let iss = claims_map.get("iss").and_then(Value::as_str).unwrap_or_default();
    if let Some(expected) = options.issuer
        && expected != iss
    {
        return fail(ErrorCode::IssuerMismatch, format!("iss {iss:?}, expected {expected:?}"));
    }
    let iat = claims_map.get("iat").and_then(Value::as_u64).unwrap_or_default();
    if iat > options.now_s.saturating_add(CLOCK_SKEW_S) {
        return fail(ErrorCode::NotYetValid, format!("iat {iat} is after now {} + {CLOCK_SKEW_S} s", options.now_s));
    }
    Ok(VerifiedReceipt { header, claims, receipt_ref: receipt_ref(jws) })
}

fn version_for_typ(typ: &str) -> &'static str {
    match typ {
        TYP => PEAC_VERSION,
        _ => "",
    }
}

/// Strict base64url: only the url-safe alphabet, no padding, and the text must be the one
/// encoding of its bytes (canonical trailing bits), so one record has exactly one encoding.
fn decode_strict(text: &str) -> Option<Vec<u8>> {
    if !text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    (URL_SAFE_NO_PAD.encode(&bytes) == text).then_some(bytes)
}

fn parse_ijson(bytes: &[u8], part: &str) -> Result<Value, PeacError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| PeacError::new(ErrorCode::IJsonInvalidString, format!("{part}: invalid UTF-8 ({error})")))?;
    parse_strict(text).map_err(|error| {
        let code = match &error {
            StrictJsonError::DuplicateMember(_) => ErrorCode::IJsonDuplicateMemberName,
            StrictJsonError::IntegerOutOfRange(_) => ErrorCode::IJsonNumberOutOfRange,
            // serde_json reports lone surrogate escapes as one of several syntax errors; look
            // for them directly rather than depend on its wording.
            StrictJsonError::Syntax(_) if has_lone_surrogate_escape(text) => ErrorCode::IJsonInvalidString,
            StrictJsonError::Syntax(_) => ErrorCode::IJsonSyntax,
        };
        PeacError::new(code, format!("{part}: {error}"))
    })
}

/// Whether a JSON string in `text` has a `\uXXXX` escape of a surrogate that is not half of a
/// high-low pair (I-JSON requires strings to be Unicode scalar values).
fn has_lone_surrogate_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let unit_at = |index: usize| -> Option<u16> {
        let digits = text.get(index + 2..index + 6)?;
        (bytes.get(index) == Some(&b'\\') && bytes.get(index + 1) == Some(&b'u'))
            .then(|| u16::from_str_radix(digits, 16).ok())?
    };
    let mut in_string = false;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if let Some(unit) = unit_at(index) {
                    if (0xdc00..=0xdfff).contains(&unit) {
                        return true;
                    }
                    if (0xd800..=0xdbff).contains(&unit) {
                        if !unit_at(index + 6).is_some_and(|low| (0xdc00..=0xdfff).contains(&low)) {
                            return true;
                        }
                        index += 6;
                    }
                    index += 6;
                    continue;
                }
                // Any other escape is two bytes; skipping both keeps `\"` inside the string.
                index += 1;
            }
            _ => {}
        }
        index += 1;
    }
    false
}

/// Header rules; returns the kid.
fn check_header(header: &Map<String, Value>) -> Result<&str, PeacError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALG => {}
        other => return fail(ErrorCode::JwsAlgRejected, format!("alg {other:?}, only {ALG} is accepted")),
    }
    if let Some(member) = EMBEDDED_KEY_MEMBERS.iter().find(|member| header.contains_key(**member)) {
        return fail(ErrorCode::JwsEmbeddedKey, format!("header has {member}"));
    }
    if header.contains_key("crit") {
        return fail(ErrorCode::JwsCritRejected, "header has crit");
    }
    if header.contains_key("b64") {
        return fail(ErrorCode::JwsB64Rejected, "header has b64");
    }
    if header.contains_key("zip") {
        return fail(ErrorCode::JwsZipRejected, "header has zip");
    }
    match header.get("typ") {
        Some(Value::String(typ)) if typ == TYP => {}
        other => return fail(ErrorCode::JwsTypUnknown, format!("typ {other:?}, expected {TYP}")),
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => kid,
        _ => return fail(ErrorCode::JwsMissingKid, "header has no kid string"),
    };
    check_kid(kid)?;
    if let Some(member) = header.keys().find(|name| !HEADER_MEMBERS.contains(&name.as_str())) {
        return fail(ErrorCode::JwsUnknownHeader, format!("header has {member:?}"));
    }
    Ok(kid)
}

fn check_kid(kid: &str) -> Result<(), PeacError> {
    if kid.is_empty() {
        return fail(ErrorCode::JwsMissingKid, "kid is empty");
    }
    if kid.len() > KID_BYTES_MAX {
        return fail(ErrorCode::JwsKidTooLong, format!("kid is {} bytes, at most {KID_BYTES_MAX}", kid.len()));
    }
    Ok(())
}

/// RFC 8032 verification with the extra strictness that makes one message have one valid
/// signature: A and R must be canonical and not of small order, S must be below L.
///
/// `prepared` is A decoded when the key set was built (only for a strict point). ed25519-dalek's
/// `verify_strict` alone already refuses small-order A and R, S ≥ L and (comparing R's encoding
/// with the recomputed one) a non-canonical R, so a signature it accepts passes every rule; the
/// rules are checked one by one only to name the one a refused signature breaks.
fn verify_ed25519_strict(
    public_key: &[u8; 32],
    prepared: Option<&VerifyingKey>,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), PeacError> {
    if let Some(key) = prepared
        && key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    {
        return Ok(());
    }
    let bad = |message: &str| PeacError::new(ErrorCode::InvalidSignature, message);
    if strict_public_key(public_key).is_none() {
        return Err(bad("public key A is not canonically encoded or is of small order"));
    }
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    if !is_strict_point(&r) {
        return Err(bad("R is not canonically encoded or is of small order"));
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
        return Err(bad("S is not below the group order L"));
    }
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad("public key A does not decode"))?;
    key.verify_strict(message, &Signature::from_bytes(signature)).map_err(|_| bad("the signature does not verify"))
}

/// Structural limits over a whole JSON value.
fn check_structure(value: &Value) -> Result<(), PeacError> {
    let mut nodes = 0usize;
    walk(value, 1, &mut nodes)
}

fn walk(value: &Value, depth: usize, nodes: &mut usize) -> Result<(), PeacError> {
    let limit = |message: String| PeacError::new(ErrorCode::JsonLimitExceeded, message);
    *nodes += 1;
    if *nodes > JSON_NODES_MAX {
        return Err(limit(format!("more than {JSON_NODES_MAX} values")));
    }
    if depth > JSON_DEPTH_MAX {
        return Err(limit(format!("nested deeper than {JSON_DEPTH_MAX}")));
    }
    let string_fits = |text: &str| {
        if text.len() > JSON_STRING_BYTES_MAX {
            return Err(limit(format!("a string of {} bytes, at most {JSON_STRING_BYTES_MAX}", text.len())));
        }
        Ok(())
    };
    match value {
        Value::String(text) => string_fits(text),
        Value::Array(items) => {
            if items.len() > JSON_ARRAY_LENGTH_MAX {
                return Err(limit(format!("an array of {} items, at most {JSON_ARRAY_LENGTH_MAX}", items.len())));
            }
            items.iter().try_for_each(|item| walk(item, depth + 1, nodes))
        }
        Value::Object(members) => {
            if members.len() > JSON_OBJECT_KEYS_MAX {
                return Err(limit(format!("an object of {} members, at most {JSON_OBJECT_KEYS_MAX}", members.len())));
            }
            members.iter().try_for_each(|(name, item)| {
                string_fits(name)?;
                walk(item, depth + 1, nodes)
            })
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// The Wire 0.2 claims schema.
fn check_claims(claims: &Value) -> Result<(), PeacError> {
    let Some(map) = claims.as_object() else {
        return fail(ErrorCode::InvalidFormat, "claims must be a JSON object");
    };
    if let Some(name) = FORBIDDEN_CLAIMS.iter().find(|name| map.contains_key(**name)) {
        return fail(ErrorCode::ForbiddenClaim, format!("receipts carry no {name}"));
    }
    if let Some(name) = map.keys().find(|name| !CLAIM_NAMES.contains(&name.as_str())) {
        return fail(ErrorCode::UnknownClaim, format!("unknown claim {name:?}"));
    }
    let invalid = |message: String| PeacError::new(ErrorCode::InvalidClaims, message);
    let required_string =
        |name: &str| map.get(name).and_then(Value::as_str).ok_or_else(|| invalid(format!("{name} must be a string")));
    if required_string("peac_version")? != PEAC_VERSION {
        return Err(invalid(format!("peac_version must be {PEAC_VERSION:?}")));
    }
    let kind = required_string("kind")?;
    if kind != "evidence" && kind != "challenge" {
        return Err(invalid(format!("kind {kind:?} is neither evidence nor challenge")));
    }
    let record_type = required_string("type")?;
    if record_type.chars().count() > TYPE_CHARS_MAX || !(is_extension_key(record_type) || is_absolute_uri(record_type))
    {
        return Err(invalid(format!("type {record_type:?} is neither reverse-DNS nor an absolute URI")));
    }
    let iss = required_string("iss")?;
    if !(is_canonical_https_origin(iss) || is_did(iss)) {
        return Err(invalid(format!("iss {iss:?} is neither a canonical https origin nor a did")));
    }
    if map.get("iat").and_then(Value::as_u64).is_none() {
        return Err(invalid("iat must be a non-negative integer".into()));
    }
    let jti_chars = required_string("jti")?.chars().count();
    if !(JTI_CHARS_MIN..=JTI_CHARS_MAX).contains(&jti_chars) {
        return Err(invalid(format!("jti has {jti_chars} characters, expected {JTI_CHARS_MIN} to {JTI_CHARS_MAX}")));
    }
    for name in ["sub", "purpose_declared"] {
        if map.get(name).is_some_and(|value| !value.is_string()) {
            return Err(invalid(format!("{name} must be a string")));
        }
    }
    if let Some(pillars) = map.get("pillars") {
        let names: Option<Vec<&str>> = pillars.as_array().and_then(|items| items.iter().map(Value::as_str).collect());
        let names = names.ok_or_else(|| invalid("pillars must be an array of strings".into()))?;
        if let Some(unknown) = names.iter().find(|name| !PILLARS.contains(name)) {
            return Err(invalid(format!("unknown pillar {unknown:?}")));
        }
        if !names.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(invalid("pillars must be sorted without repeats".into()));
        }
    }
    if let Some(policy) = map.get("policy") {
        check_policy(policy).map_err(invalid)?;
    }
    if let Some(occurred_at) = map.get("occurred_at") {
        if kind != "evidence" {
            return Err(invalid("occurred_at is for evidence only".into()));
        }
        if !occurred_at.as_str().is_some_and(is_rfc3339) {
            return Err(invalid("occurred_at must be an RFC 3339 time".into()));
        }
    }
    if let Some(extensions) = map.get("extensions") {
        let members = extensions.as_object().ok_or_else(|| invalid("extensions must be an object".into()))?;
        for (key, value) in members {
            if !is_extension_key(key) {
                return Err(invalid(format!("extension key {key:?} is not <lowercase dns>/<segment>")));
            }
            if key == COMMERCE_EXTENSION {
                check_commerce(value).map_err(invalid)?;
            }
        }
    }
    Ok(())
}

fn check_policy(policy: &Value) -> Result<(), String> {
    let members = policy.as_object().ok_or("policy must be an object")?;
    if let Some(name) = members.keys().find(|name| !["digest", "uri", "version"].contains(&name.as_str())) {
        return Err(format!("unknown policy member {name:?}"));
    }
    let digest = members.get("digest").and_then(Value::as_str).ok_or("policy.digest must be a string")?;
    if !is_sha256_digest(digest) {
        return Err("policy.digest must be sha256:<64 lowercase hex>".into());
    }
    for name in ["uri", "version"] {
        if members.get(name).is_some_and(|value| !value.is_string()) {
            return Err(format!("policy.{name} must be a string"));
        }
    }
    Ok(())
}

fn check_commerce(value: &Value) -> Result<(), String> {
    const MEMBERS: &[&str] = &["payment_rail", "amount_minor", "currency", "reference", "asset", "env", "event"];
    let members = value.as_object().ok_or("the commerce extension must be an object")?;
    if let Some(name) = members.keys().find(|name| !MEMBERS.contains(&name.as_str())) {
        return Err(format!("unknown commerce member {name:?}"));
    }
    for (name, value) in members {
        if !value.is_string() {
            return Err(format!("commerce.{name} must be a string"));
        }
    }
    let text = |name: &str| members.get(name).and_then(Value::as_str);
    if text("payment_rail").is_none_or(str::is_empty) {
        return Err("commerce.payment_rail is required".into());
    }
    let amount = text("amount_minor").ok_or("commerce.amount_minor is required")?;
    let digits = !amount.is_empty() && amount.bytes().all(|byte| byte.is_ascii_digit());
    if !digits || (amount.len() > 1 && amount.starts_with('0')) {
        return Err(format!("commerce.amount_minor {amount:?} is not a decimal integer without leading zeros"));
    }
    let currency = text("currency").ok_or("commerce.currency is required")?;
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(format!("commerce.currency {currency:?} is not three uppercase letters"));
    }
    Ok(())
}

fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')))
}

/// A lowercase DNS name: dot-separated labels of `a-z`, `0-9` and inner `-`, at least two labels.
fn is_lowercase_dns(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    text.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `<lowercase dns>/<segment>`, the segment of `a-z`, `0-9`, `-`, `_`, `.`.
fn is_extension_key(text: &str) -> bool {
    text.split_once('/').is_some_and(|(domain, segment)| {
        is_lowercase_dns(domain)
            && !segment.is_empty()
            && segment
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'.'))
    })
}

/// `scheme:rest` with an RFC 3986 scheme and no whitespace or controls.
fn is_absolute_uri(text: &str) -> bool {
    text.split_once(':').is_some_and(|(scheme, rest)| {
        scheme.bytes().next().is_some_and(|byte| byte.is_ascii_alphabetic())
            && scheme.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
            && !rest.is_empty()
            && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// `https://host[:port]`: lowercase host, no path, query, fragment, user info or trailing slash,
/// and no port 443 (the default) or port with a leading zero.
fn is_canonical_https_origin(text: &str) -> bool {
    let Some(authority) = text.strip_prefix("https://") else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty()
            && !port.starts_with('0')
            && port.bytes().all(|byte| byte.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|number| number != 443)
    });
    port_ok && (is_lowercase_dns(host) || host == "localhost")
}

/// `did:<method>:<id>` with a lowercase alphanumeric method.
fn is_did(text: &str) -> bool {
    text.strip_prefix("did:").and_then(|rest| rest.split_once(':')).is_some_and(|(method, id)| {
        !method.is_empty()
            && method.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
            && !id.is_empty()
            && !id.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, fields in range.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes().all(|byte| byte.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let separators = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators {
        return false;
    }
    let fields = (number(0..4), number(5..7), number(8..10), number(11..13), number(14..16), number(17..19));
    let (Some(_), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields else {
        return false;
    };
    if !((1..=12).contains(&month) && (1..=31).contains(&day) && hour <= 23 && minute <= 59 && second <= 60) {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            matches!((number(text.len() - 5..text.len() - 3), number(text.len() - 2..text.len())), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_layout() {
        // RFC 9562 Appendix A.6: unix_ts_ms 0x017F22E279B0, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F.
        let random = [0x0c, 0xc3, 0x18, 0xc4, 0xdc, 0x0c, 0x0c, 0x07, 0x39, 0x8f];
        assert_eq!(uuid_v7(0x017f_22e2_79b0, random), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
        assert_eq!(uuid_v7(0, [0; 10]), "00000000-0000-7000-8000-000000000000");
        assert_eq!(uuid_v7(u64::MAX, [0xff; 10]), "ffffffff-ffff-7fff-bfff-ffffffffffff");
    }

    #[test]
    fn did_key_of_the_rfc_8032_test_1_key() {
        // The did:key test vector for the RFC 8032 section 7.1 TEST 1 public key.
        let public_key = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").expect("hex");
        let public_key: [u8; 32] = public_key.try_into().expect("32 bytes");
        assert_eq!(did_key_for_ed25519(&public_key), "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw");
    }

    #[test]
    fn origin_did_extension_key_and_time_syntax() {
        assert!(is_canonical_https_origin("https://issuer.example"));
        assert!(is_canonical_https_origin("https://issuer.example:8443"));
        for bad in [
            "http://a.example",
            "https://A.example",
            "https://a.example/",
            "https://a.example:443",
            "https://a.example:08",
        ] {
            assert!(!is_canonical_https_origin(bad), "{bad}");
        }
        assert!(is_did("did:key:z6Mk"));
        assert!(is_extension_key("org.peacprotocol/commerce"));
        assert!(!is_extension_key("Org.peacprotocol/commerce"));
        assert!(!is_extension_key("commerce"));
        assert!(is_rfc3339("2026-01-02T03:04:05Z"));
        assert!(is_rfc3339("2026-01-02T03:04:05.123+05:30"));
        assert!(!is_rfc3339("2026-01-02 03:04:05"));
        assert!(!is_rfc3339("2026-13-02T03:04:05Z"));
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(decode_strict("AQ"), Some(vec![1]));
        assert_eq!(decode_strict("AR"), None, "non-canonical trailing bits");
        assert_eq!(decode_strict("AQ=="), None, "padding");
        assert_eq!(decode_strict("+w"), None, "standard alphabet");
    }

    #[test]
    fn lone_surrogates_are_found() {
        assert!(has_lone_surrogate_escape(r#"{"a":"\ud800"}"#));
        assert!(has_lone_surrogate_escape(r#"{"a":"\udc00x"}"#));
        assert!(has_lone_surrogate_escape(r#"{"a":"\ud800\u0041"}"#));
        assert!(!has_lone_surrogate_escape(r#"{"a":"\ud83d\ude00"}"#));
        assert!(!has_lone_surrogate_escape(r#"{"a":"\\ud800"}"#));
        assert!(!has_lone_surrogate_escape(r#"{"a":"\u0041"}"#));
    }
}
