//! Signing identities: key ids, Ed25519 signers, and the key ring a verifier trusts.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::event::{Digest, FormatError, check_key_id};

/// Names the key that signed an event, such as `agent:buyer#1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId(String);

impl KeyId {
    pub fn new(text: impl Into<String>) -> Result<Self, FormatError> {
        let text = text.into();
        check_key_id(&text)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A 64-byte Ed25519 signature, shown as unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes([u8; 64]);

impl SignatureBytes {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Strict base64url: no padding, no `+` or `/`, canonical trailing bits, exactly 64 bytes.
    pub fn from_base64url(text: &str) -> Result<Self, FormatError> {
        let bytes = decode_base64url(text, "sig")?;
        let array: [u8; 64] = bytes.try_into().map_err(|_| FormatError::new("sig", "must decode to 64 bytes"))?;
        Ok(Self(array))
    }

    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "SignatureBytes({})", self.to_base64url())
    }
}

pub(crate) fn decode_base64url(text: &str, field: &str) -> Result<Vec<u8>, FormatError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|error| FormatError::new(field, format!("not strict unpadded base64url ({error})")))
}

/// Something that signs event digests under a key id. Implemented by [`Ed25519Signer`]; the
/// runtime may implement it over keys held elsewhere.
pub trait EventSigner {
    fn key_id(&self) -> &KeyId;
    fn sign_digest(&self, digest: &Digest) -> SignatureBytes;
}

/// An Ed25519 private key with its key id. `Debug` never shows the private key.
///
/// Signs with AWS-LC (its assembly field arithmetic signs in well under half the time of
/// `ed25519-dalek` on x86-64; signing dominates a negotiation's CPU time). Ed25519 signatures are
/// deterministic (RFC 8032 §5.1.6), so both produce the same bytes; `ed25519-dalek` keeps the
/// public key and signs if AWS-LC ever refuses (it only can on an allocation failure).
pub struct Ed25519Signer {
    key_id: KeyId,
    signing_key: SigningKey,
    fast: Option<Ed25519KeyPair>,
}

impl Ed25519Signer {
    pub fn new(key_id: KeyId, signing_key: SigningKey) -> Self {
        let fast =
            Ed25519KeyPair::from_seed_and_public_key(signing_key.as_bytes(), signing_key.verifying_key().as_bytes())
                .ok();
        Self { key_id, signing_key, fast }
    }

    /// A signer from a 32-byte secret seed.
    pub fn from_seed(key_id: KeyId, seed: &[u8; 32]) -> Self {
        Self::new(key_id, SigningKey::from_bytes(seed))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// Signs arbitrary bytes (a JWS signing input, for example) with plain Ed25519 (RFC 8032).
    pub fn sign_message(&self, message: &[u8]) -> SignatureBytes {
        if let Some(signature) = self.fast.as_ref().and_then(|pair| pair.try_sign(message).ok())
            && let Ok(bytes) = <[u8; 64]>::try_from(signature.as_ref())
        {
            return SignatureBytes(bytes);
        }
        SignatureBytes(self.signing_key.sign(message).to_bytes())
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Ed25519Signer")
            .field("key_id", &self.key_id)
            .field("public_key", &URL_SAFE_NO_PAD.encode(self.verifying_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl EventSigner for Ed25519Signer {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Signs the 32 raw bytes of the event digest (already domain-separated by its tag).
    fn sign_digest(&self, digest: &Digest) -> SignatureBytes {
        if let Some(signature) = self.fast.as_ref().and_then(|pair| pair.try_sign(digest.as_bytes()).ok())
            && let Ok(bytes) = <[u8; 64]>::try_from(signature.as_ref())
        {
            return SignatureBytes(bytes);
        }
        SignatureBytes(self.signing_key.sign(digest.as_bytes()).to_bytes())
    }
}

/// Whether `bytes` is the canonical encoding of a curve point that is not of small order: what
/// Pactum requires of public keys and of the `R` half of signatures, so that one key or
/// signature has exactly one encoding and no low-order component can make verdicts differ.
pub(crate) fn is_strict_point(bytes: &[u8; 32]) -> bool {
    let compressed = curve25519_dalek::edwards::CompressedEdwardsY(*bytes);
    compressed.decompress().is_some_and(|point| point.compress() == compressed && !point.is_small_order())
}

/// How many strict public keys [`strict_public_key`] remembers before it starts again.
const STRICT_KEYS_REMEMBERED: usize = 4_096;

/// The verifying key of `bytes` when they pass [`is_strict_point`], else `None`. The few keys a
/// process verifies again and again (its agents', its providers') are checked once: the check
/// decompresses and recompresses the point, which costs more than verifying a signature's hash.
/// A pure function of `bytes`; only keys that pass are remembered, at most
/// [`STRICT_KEYS_REMEMBERED`].
pub(crate) fn strict_public_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    strict_key(bytes).map(|key| key.dalek)
}

/// A strict public key decoded for both Ed25519 libraries Pactum verifies with.
#[derive(Clone, Copy)]
pub(crate) struct StrictKey {
    /// For RFC 8032 strict verification (PEAC receipts).
    pub(crate) dalek: VerifyingKey,
    /// For the ZIP-215 equation (events and receipts' digest signatures).
    pub(crate) zebra: ed25519_zebra::VerificationKey,
}

/// [`strict_public_key`], with the key decoded for both libraries (each decoding decompresses
/// the point again): remembered together, under the same rule.
pub(crate) fn strict_key(bytes: &[u8; 32]) -> Option<StrictKey> {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, PoisonError};
    static STRICT: LazyLock<Mutex<HashMap<[u8; 32], StrictKey>>> = LazyLock::new(Default::default);
    if let Some(key) = STRICT.lock().unwrap_or_else(PoisonError::into_inner).get(bytes) {
        return Some(*key);
    }
    let dalek = VerifyingKey::from_bytes(bytes).ok().filter(|_| is_strict_point(bytes))?;
    let zebra = ed25519_zebra::VerificationKey::try_from(*bytes).ok()?;
    let key = StrictKey { dalek, zebra };
    let mut strict = STRICT.lock().unwrap_or_else(PoisonError::into_inner);
    if strict.len() >= STRICT_KEYS_REMEMBERED {
        strict.clear();
    }
    strict.insert(*bytes, key);
    Some(key)
}

/// Why a public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key for {0}: {1}")]
    Malformed(KeyId, String),
    #[error("public key for {0} is a small-order (weak) point or not canonically encoded")]
    Weak(KeyId),
    #[error("key id {0} is already bound to a different public key")]
    Conflict(KeyId),
}

/// The public keys a verifier accepts signatures from, by key id.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; refuses weak or non-canonical keys and a second, different key under the same id.
    pub fn insert(&mut self, key_id: KeyId, key: VerifyingKey) -> Result<(), KeyError> {
        if key.is_weak() || strict_public_key(key.as_bytes()).is_none() {
            return Err(KeyError::Weak(key_id));
        }
        match self.keys.get(&key_id) {
            Some(existing) if existing != &key => Err(KeyError::Conflict(key_id)),
            _ => {
                self.keys.insert(key_id, key);
                Ok(())
            }
        }
    }

    /// Adds a key given as 32 raw bytes.
    pub fn insert_bytes(&mut self, key_id: KeyId, bytes: &[u8]) -> Result<(), KeyError> {
        let array: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Malformed(key_id.clone(), format!("expected 32 bytes, got {}", bytes.len())))?;
        let key = VerifyingKey::from_bytes(array)
            .map_err(|_| KeyError::Malformed(key_id.clone(), "not a valid Ed25519 point".into()))?;
        self.insert(key_id, key)
    }

    /// Adds a key given as unpadded base64url (the form used in file headers).
    pub fn insert_base64url(&mut self, key_id: KeyId, text: &str) -> Result<(), KeyError> {
        let bytes =
            decode_base64url(text, "key").map_err(|error| KeyError::Malformed(key_id.clone(), error.problem))?;
        self.insert_bytes(key_id, &bytes)
    }

    pub fn get(&self, key_id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&KeyId, &VerifyingKey)> {
        self.keys.iter()
    }
}

/// Unpadded base64url of a public key, as written in file headers.
pub fn public_key_to_base64url(key: &VerifyingKey) -> String {
    public_key_bytes_to_base64url(key.as_bytes())
}

/// The same text from the key's 32 bytes, for keys already checked when they were stored
/// (decoding a point to check it costs as much as a third of a signature).
pub fn public_key_bytes_to_base64url(bytes: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes an unpadded base64url public key to its 32 bytes, refusing weak or non-canonical keys.
pub fn public_key_from_base64url(text: &str) -> Result<[u8; 32], String> {
    let bytes = decode_base64url(text, "key").map_err(|error| error.problem)?;
    let array: [u8; 32] =
        bytes.try_into().map_err(|bytes: Vec<u8>| format!("expected 32 bytes, got {}", bytes.len()))?;
    if strict_public_key(&array).is_none() {
        return Err("a small-order (weak) point or not canonically encoded".into());
    }
    Ok(array)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
    use proptest::prelude::*;

    use super::{Ed25519Signer, EventSigner as _, KeyId};
    use crate::event::Digest;

    fn signer(seed: &[u8; 32]) -> Ed25519Signer {
        Ed25519Signer::from_seed(KeyId::new("agent:test#1").expect("key id"), seed)
    }

    #[test]
    fn the_fast_backend_is_active_and_derives_the_rfc_8032_public_key() {
        // RFC 8032 §7.1, TEST 1: its secret key and public key. (Its signature is over an empty
        // message; Pactum signs 32-byte digests, which the property below covers.)
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let signer = signer(&seed);
        assert!(signer.fast.is_some(), "AWS-LC refused a valid seed");
        assert_eq!(
            hex::encode(signer.verifying_key().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    proptest! {
        #[test]
        fn fast_signatures_are_the_reference_signatures(seed in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            let signer = signer(&seed);
            let digest = Digest::from_bytes(digest);
            let signature = signer.sign_digest(&digest);
            let reference = SigningKey::from_bytes(&seed).sign(digest.as_bytes());
            prop_assert_eq!(signature.as_bytes(), &reference.to_bytes());
            prop_assert!(signer.verifying_key().verify(digest.as_bytes(), &reference).is_ok());
        }
    }
}
