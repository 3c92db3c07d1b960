//! Evidence bundles (`pactum-bundle/1`) and their redacted views (docs/BUNDLES.md).
//!
//! A bundle is a directory: a session's transcript, its receipt, its policy and a manifest
//! listing the SHA-256 of every file. Every view of a session — `full`, `partner`, `auditor` —
//! carries the same signed **commitments root**: per event, per top-level body field, a salted
//! commitment `SHA-256("pactum-commitment/1\0" ‖ salt ‖ canon(value))`, the salts derived
//! secretly (HMAC-SHA256 under a redaction key derived from the constellation's key root) so that
//! every view of one session has the same commitments. A redacted view replaces the fields its
//! profile hides by their commitments and keeps the others with their salts, so a disclosed
//! value checks against the root the buyer signed, and a forged one does not.
//!
//! Building and verifying are pure functions of bytes ([`build_bundle`],
//! [`verify_bundle_contents`]); [`bundle_session`], [`write_bundle`] and [`read_bundle_dir`] are
//! the I/O around them. Nothing here prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use pactum_memory::{Constellation, SecretSeed};
use pactum_transcripts::canonical::{CanonicalError, parse_strict, to_canonical_string};
use pactum_transcripts::jsonl::{self, FileHeader};
use pactum_transcripts::{
    Digest, Ed25519Signer, Event, EventKind, EventSigner as _, KeyId, KeyRing, SignatureBytes, StreamId,
    public_key_from_base64url, public_key_to_base64url, verify_digest_signature,
};

use crate::error::RuntimeError;
use crate::identities::signer_for;
use crate::session::model::{CreatedBody, PartyBody, SESSION_STREAM_PREFIX, SessionState, kind};
use crate::session::receipt::{RECEIPT_BYTES_MAX, verify_receipt, verify_receipt_in_session};
use crate::session::shell::{check_session_id, session_stream_id};

/// Name and version of the bundle format, in `MANIFEST.json`.
pub const BUNDLE_FORMAT: &str = "pactum-bundle/1";
/// Format of `commitments.json` (full view).
pub const COMMITMENTS_FORMAT: &str = "pactum-commitments/1";
/// Format of `transcript.redacted.json` (partner and auditor views).
pub const REDACTED_TRANSCRIPT_FORMAT: &str = "pactum-redacted-transcript/1";

/// Hashed before the salt and the canonical value of one field.
pub const COMMITMENT_TAG: &[u8] = b"pactum-commitment/1\0";
/// Hashed (under HMAC) before the stream, seq and field a salt is for.
pub const SALT_TAG: &[u8] = b"pactum-bundle/1 salt\0";
/// Hashed before the canonical `{field: commitment}` object of one event.
pub const FIELDS_ROOT_TAG: &[u8] = b"pactum-bundle/1 fields\0";
/// Hashed before the canonical `[{"fields_root", "hash", "seq"}, ...]` list of a session.
pub const COMMITMENTS_ROOT_TAG: &[u8] = b"pactum-bundle/1 commitments\0";
/// Derives the redaction key from the key root; distinct from agent key derivation's tag, so the
/// redaction key is never a signing seed.
const REDACTION_KEY_TAG: &[u8] = b"pactum-redaction-key/1\0";

pub const MANIFEST_FILE: &str = "MANIFEST.json";
pub const TRANSCRIPT_FILE: &str = "transcript.jsonl";
pub const REDACTED_TRANSCRIPT_FILE: &str = "transcript.redacted.json";
pub const COMMITMENTS_FILE: &str = "commitments.json";
pub const RECEIPT_FILE: &str = "receipt.json";
pub const POLICY_FILE: &str = "policy.json";
/// Every name a bundle file may have besides the manifest.
const KNOWN_FILES: [&str; 5] = [TRANSCRIPT_FILE, REDACTED_TRANSCRIPT_FILE, COMMITMENTS_FILE, RECEIPT_FILE, POLICY_FILE];

/// Largest manifest: it lists at most five files.
pub const MANIFEST_BYTES_MAX: u64 = 64 * 1024;
/// Largest transcript (either form) or commitments file. A session has tens of events; bundles
/// are read whole, so this bounds the memory a hostile bundle can make the verifier use.
pub const BUNDLE_TRANSCRIPT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest `policy.json`: the policy is part of an event body, which is at most 1 MiB.
pub const POLICY_BYTES_MAX: u64 = pactum_transcripts::limits::EVENT_BODY_BYTES_MAX as u64;
/// Most events a bundled session may have (a negotiation has tens); bundles are held in memory.
pub const BUNDLE_EVENTS_MAX: usize = 100_000;
/// Most directory entries read from a bundle; a bundle has at most six files.
pub const BUNDLE_DIR_ENTRIES_MAX: usize = 64;
/// Most problems one verification reports; a broken bundle is named by its first few.
pub const BUNDLE_PROBLEMS_MAX: usize = 100;

/// Which view of a session a bundle is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum View {
    /// Everything: the transcript file, every commitment with its salt.
    Full,
    /// What a provider may see: the buyer's private data is redacted.
    Partner,
    /// What an auditor may see: only the seed and the preferences are redacted.
    Auditor,
}

impl View {
    pub const ALL: [View; 3] = [View::Full, View::Partner, View::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Partner => "partner",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|view| view.as_str() == text)
    }

    /// The fields this view redacts (empty for the full view).
    pub fn profile(self) -> &'static [RedactionRule] {
        match self {
            Self::Full => &[],
            Self::Partner => PARTNER_PROFILE,
            Self::Auditor => AUDITOR_PROFILE,
        }
    }

    /// The files this view must carry (beyond the manifest), and the ones it may carry.
    fn required_files(self) -> &'static [&'static str] {
        match self {
            Self::Full => &[TRANSCRIPT_FILE, COMMITMENTS_FILE, POLICY_FILE],
            Self::Partner => &[REDACTED_TRANSCRIPT_FILE],
            Self::Auditor => &[REDACTED_TRANSCRIPT_FILE, POLICY_FILE],
        }
    }

    fn allowed_files(self) -> &'static [&'static str] {
        match self {
            Self::Full => &[TRANSCRIPT_FILE, COMMITMENTS_FILE, POLICY_FILE, RECEIPT_FILE],
            Self::Partner => &[REDACTED_TRANSCRIPT_FILE, RECEIPT_FILE],
            Self::Auditor => &[REDACTED_TRANSCRIPT_FILE, POLICY_FILE, RECEIPT_FILE],
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Whose events a rule applies to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Every event of the kind.
    Always,
    /// Events of the kind whose `sender` is not the partner (the provider the buyer accepted);
    /// in a session that accepted nobody, every such event.
    UnlessSentByPartner,
}

/// One field a view redacts: the top-level body field `field` of events of kind `kind`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RedactionRule {
    pub kind: &'static str,
    pub field: &'static str,
    pub scope: Scope,
}

const fn hide(kind: &'static str, field: &'static str) -> RedactionRule {
    RedactionRule { kind, field, scope: Scope::Always }
}

/// What a provider may not see: the buyer's intent (its maximum price) and policy, the policy's
/// hash (a short policy could be guessed from it), the preferences and seed, the providers the
/// policy excluded, the other providers' prices, and failure details (they quote the maximum).
pub const PARTNER_PROFILE: &[RedactionRule] = &[
    hide(kind::CREATED, "intent"),
    hide(kind::CREATED, "policy"),
    hide(kind::CREATED, "policy_hash"),
    hide(kind::CREATED, "preferences"),
    hide(kind::CREATED, "seed"),
    hide(kind::DISCOVERY, "excluded"),
    hide(kind::SELECTED, "considered"),
    RedactionRule { kind: kind::ASK, field: "price", scope: Scope::UnlessSentByPartner },
    hide(kind::FAILED, "detail"),
];

/// What an auditor may not see: the simulation seed and the buyer's preferences.
pub const AUDITOR_PROFILE: &[RedactionRule] = &[hide(kind::CREATED, "seed"), hide(kind::CREATED, "preferences")];

/// The provider the buyer accepted, if any: a partner view is for it.
fn partner_of(events: &[Event]) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|event| event.kind.as_str() == kind::ACCEPT)
        .and_then(|event| event.body.get("receiver")?.as_str().map(str::to_owned))
}

fn is_redacted(profile: &[RedactionRule], partner: Option<&str>, event: &Event, field: &str) -> bool {
    profile.iter().any(|rule| {
        rule.kind == event.kind.as_str()
            && rule.field == field
            && match rule.scope {
                Scope::Always => true,
                Scope::UnlessSentByPartner => {
                    partner.is_none() || event.body.get("sender").and_then(Value::as_str) != partner
                }
            }
    })
}

/// The secret salts are derived from: `SHA-256("pactum-redaction-key/1\0" ‖ key root)`. Never
/// written anywhere; `Debug` does not show it.
pub struct RedactionKey([u8; 32]);

impl RedactionKey {
    pub fn derive(root: &SecretSeed) -> Self {
        Self(*Digest::tagged(REDACTION_KEY_TAG, root.expose()).as_bytes())
    }
}

impl fmt::Debug for RedactionKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("RedactionKey(<redacted>)")
    }
}

impl Drop for RedactionKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
    }
}

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    const BLOCK_BYTES: usize = 64;
    let mut inner_pad = [0x36_u8; BLOCK_BYTES];
    let mut outer_pad = [0x5c_u8; BLOCK_BYTES];
    for (index, byte) in key.iter().enumerate() {
        inner_pad[index] ^= byte;
        outer_pad[index] ^= byte;
    }
    let inner = Digest::tagged(&inner_pad, message);
    *Digest::tagged(&outer_pad, inner.as_bytes()).as_bytes()
}

/// The salt of one field: HMAC-SHA256(redaction key, SALT_TAG ‖ u32be(len stream) ‖ stream ‖
/// u64be(seq) ‖ u32be(len field) ‖ field). Deterministic, so every view has the same salts;
/// secret, so a redacted value cannot be guessed and checked against its commitment.
pub fn field_salt(key: &RedactionKey, stream: &StreamId, seq: u64, field: &str) -> [u8; 32] {
    let mut message = Vec::with_capacity(SALT_TAG.len() + 4 + stream.as_str().len() + 8 + 4 + field.len());
    message.extend_from_slice(SALT_TAG);
    push_length_prefixed(&mut message, stream.as_str().as_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    push_length_prefixed(&mut message, field.as_bytes());
    hmac_sha256(&key.0, &message)
}

fn push_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Stream ids are at most 128 bytes and field names are inside a 1 MiB body: they fit.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `SHA-256(COMMITMENT_TAG ‖ salt ‖ canon(value))`.
pub fn field_commitment(salt: &[u8; 32], value: &Value) -> Result<Digest, CanonicalError> {
    let mut payload = Vec::with_capacity(32 + 64);
    payload.extend_from_slice(salt);
    payload.extend_from_slice(to_canonical_string(value)?.as_bytes());
    Ok(Digest::tagged(COMMITMENT_TAG, &payload))
}

/// `SHA-256(FIELDS_ROOT_TAG ‖ canon({field: commitment hex, ...}))`.
pub fn fields_root(commitments: &BTreeMap<String, Digest>) -> Digest {
    let object: Map<String, Value> =
        commitments.iter().map(|(field, commitment)| (field.clone(), Value::String(commitment.to_hex()))).collect();
    // Strings only: the canonical form always exists.
    let canonical = to_canonical_string(&Value::Object(object)).unwrap_or_default();
    Digest::tagged(FIELDS_ROOT_TAG, canonical.as_bytes())
}

/// One event's entry in the commitments root.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RootEntry {
    pub seq: u64,
    /// The event's envelope, which a redacted view shows without the full body its hash covers:
    /// bound here so it cannot be changed in a view.
    pub kind: String,
    pub at_ms: u64,
    pub prev: Digest,
    pub signer: Option<String>,
    pub hash: Digest,
    pub fields_root: Digest,
}

impl RootEntry {
    fn of(event: &Event, fields_root: Digest) -> Self {
        Self {
            seq: event.seq,
            kind: event.kind.as_str().to_owned(),
            at_ms: event.at_ms,
            prev: event.prev,
            signer: event.signer.as_ref().map(|k| k.as_str().to_owned()),
            hash: event.hash,
            fields_root,
        }
    }
}

/// `SHA-256(COMMITMENTS_ROOT_TAG ‖ canon([{"at_ms", "fields_root", "hash", "kind", "prev", "seq",
/// "signer"}, ...]))`, in seq order.
pub fn commitments_root(entries: &[RootEntry]) -> Digest {
    let list: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "seq": entry.seq,
                "kind": entry.kind,
                "at_ms": entry.at_ms,
                "prev": entry.prev.to_hex(),
                "signer": entry.signer,
                "hash": entry.hash.to_hex(),
                "fields_root": entry.fields_root.to_hex(),
            })
        })
        .collect();
    // Seqs are below 2^53 (events refuse larger ones): the canonical form always exists.
    let canonical = to_canonical_string(&Value::Array(list)).unwrap_or_default();
    Digest::tagged(COMMITMENTS_ROOT_TAG, canonical.as_bytes())
}

/// One field's salt and commitment.
#[derive(Clone, PartialEq, Eq, Debug)]
struct FieldCommitment {
    salt: [u8; 32],
    commitment: Digest,
}

/// Every field commitment of one event.
#[derive(Clone, PartialEq, Eq, Debug)]
struct EventCommitments {
    fields: BTreeMap<String, FieldCommitment>,
    fields_root: Digest,
}

fn commit_event(key: &RedactionKey, event: &Event) -> Result<EventCommitments, BundleError> {
    let mut fields = BTreeMap::new();
    if let Value::Object(body) = &event.body {
        for (name, value) in body {
            let salt = field_salt(key, &event.stream, event.seq, name);
            let commitment = field_commitment(&salt, value)
                .map_err(|e| BundleError::SessionInvalid(format!("event {}: {e}", event.seq)))?;
            fields.insert(name.clone(), FieldCommitment { salt, commitment });
        }
    }
    let commitments = fields.iter().map(|(name, field)| (name.clone(), field.commitment)).collect();
    Ok(EventCommitments { fields_root: fields_root(&commitments), fields })
}

/// Why a bundle could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The key that must sign the commitments root (the buyer's, as `session.created` records
    /// it), or the key root salts derive from, is not in this constellation.
    #[error("cannot sign the bundle: {0}")]
    KeyUnavailable(String),
    /// The stored session does not fold (its events break the session protocol).
    #[error("the session cannot be bundled: {0}")]
    SessionInvalid(String),
    /// The destination exists and is not an empty directory.
    #[error("{} exists and is not an empty directory; pass --force to replace it", .0.display())]
    DestinationExists(PathBuf),
    /// The destination has no directory name of its own (`.`, `..`, `/`).
    #[error("{}: not a directory name a bundle can be written to", .0.display())]
    DestinationInvalid(PathBuf),
    /// The directory to verify does not exist or is not a directory.
    #[error("{}: no such bundle directory", .0.display())]
    NotFound(PathBuf),
}

impl BundleError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyUnavailable(_) => "BUNDLE_KEY_UNAVAILABLE",
            Self::SessionInvalid(_) => "BUNDLE_SESSION_INVALID",
            Self::DestinationExists(_) => "DESTINATION_EXISTS",
            Self::DestinationInvalid(_) => "USAGE",
            Self::NotFound(_) => "BUNDLE_NOT_FOUND",
        }
    }
}

/// One file of a bundle.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BundleFile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// A bundle in memory: its files, the manifest last.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Bundle {
    pub session_id: String,
    pub view: View,
    pub commitments_root: Digest,
    pub files: Vec<BundleFile>,
}

/// What a bundle is made from: a session's `pactum-transcript/1` export, already verified.
#[derive(Debug)]
pub struct BundleSource<'a> {
    /// The export's bytes (the full view's `transcript.jsonl`, as they are).
    pub transcript_jsonl: &'a [u8],
    pub header: &'a FileHeader,
    pub events: &'a [Event],
}

fn canonical_bytes(value: &Value) -> Result<Vec<u8>, BundleError> {
    to_canonical_string(value).map(String::into_bytes).map_err(|e| BundleError::SessionInvalid(e.to_string()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Digest::tagged(&[], bytes).to_hex()
}

/// Folds session events; the first refusal is the error.
fn fold(events: &[Event]) -> Result<SessionState, String> {
    SessionState::fold(events).map_err(|e| format!("event {} ({}): {}", e.seq, e.kind, e.reason))
}

/// Builds a bundle of `view` (pure: no I/O). `buyer` must hold the key `session.created`
/// records for the buyer; it signs the commitments root.
pub fn build_bundle(
    source: &BundleSource<'_>,
    key: &RedactionKey,
    buyer: &Ed25519Signer,
    view: View,
) -> Result<Bundle, BundleError> {
    if source.events.len() > BUNDLE_EVENTS_MAX {
        return Err(BundleError::SessionInvalid(format!("more than {BUNDLE_EVENTS_MAX} events")));
    }
    let state = fold(source.events).map_err(BundleError::SessionInvalid)?;
    let created = state.created.as_ref().ok_or_else(|| BundleError::SessionInvalid("no session.created".into()))?;
    let buyer_public_key = public_key_to_base64url(&buyer.verifying_key());
    if buyer.key_id().as_str() != created.buyer.key_id || buyer_public_key != created.buyer.public_key {
        return Err(BundleError::KeyUnavailable(format!(
            "the session's buyer key is {}, this constellation holds {} for it",
            created.buyer.key_id,
            buyer.key_id()
        )));
    }
    let commitments: Vec<EventCommitments> =
        source.events.iter().map(|event| commit_event(key, event)).collect::<Result<_, _>>()?;
    let entries: Vec<RootEntry> =
        source.events.iter().zip(&commitments).map(|(event, c)| RootEntry::of(event, c.fields_root)).collect();
    let root = commitments_root(&entries);
    let signature = buyer.sign_digest(&root);

    let mut files = Vec::new();
    match view {
        View::Full => {
            files.push(BundleFile { name: TRANSCRIPT_FILE, bytes: source.transcript_jsonl.to_vec() });
            files.push(BundleFile {
                name: COMMITMENTS_FILE,
                bytes: canonical_bytes(&commitments_json(source.header, source.events, &commitments, &root))?,
            });
        }
        View::Partner | View::Auditor => {
            let partner = partner_of(source.events);
            let redacted = redacted_json(source.header, source.events, &commitments, view, partner.as_deref());
            files.push(BundleFile { name: REDACTED_TRANSCRIPT_FILE, bytes: canonical_bytes(&redacted)? });
        }
    }
    if let Some(receipt) = &state.receipt {
        files.push(BundleFile { name: RECEIPT_FILE, bytes: canonical_bytes(receipt)? });
    }
    if view.required_files().contains(&POLICY_FILE) {
        files.push(BundleFile { name: POLICY_FILE, bytes: canonical_bytes(&created.policy)? });
    }
    files.sort_by_key(|file| file.name);
    let listed: Vec<Value> = files
        .iter()
        .map(|file| json!({"name": file.name, "sha256": sha256_hex(&file.bytes), "bytes": file.bytes.len()}))
        .collect();
    let manifest = json!({
        "format": BUNDLE_FORMAT,
        "session": created.session_id,
        "stream": source.header.stream.as_str(),
        "view": view.as_str(),
        "files": listed,
        "commitments_root": root.to_hex(),
        "commitments_signature": {
            "key_id": buyer.key_id().as_str(),
            "public_key": buyer_public_key,
            "signature": signature.to_base64url(),
        },
    });
    files.push(BundleFile { name: MANIFEST_FILE, bytes: canonical_bytes(&manifest)? });
    Ok(Bundle { session_id: created.session_id.clone(), view, commitments_root: root, files })
}

fn keys_json(keys: &KeyRing) -> Value {
    Value::Object(
        keys.iter().map(|(id, key)| (id.as_str().to_owned(), Value::String(public_key_to_base64url(key)))).collect(),
    )
}

fn commitments_json(header: &FileHeader, events: &[Event], commitments: &[EventCommitments], root: &Digest) -> Value {
    let entries: Vec<Value> = events
        .iter()
        .zip(commitments)
        .map(|(event, c)| {
            let fields: Map<String, Value> = c
                .fields
                .iter()
                .map(|(name, f)| {
                    (name.clone(), json!({"salt": hex_of(&f.salt), "commitment": f.commitment.to_hex()}))
                })
                .collect();
            json!({"seq": event.seq, "hash": event.hash.to_hex(), "fields_root": c.fields_root.to_hex(), "fields": fields})
        })
        .collect();
    json!({
        "format": COMMITMENTS_FORMAT,
        "stream": header.stream.as_str(),
        "commitments_root": root.to_hex(),
        "events": entries,
    })
}

fn hex_of(bytes: &[u8; 32]) -> String {
    Digest::from_bytes(*bytes).to_hex()
}

fn redacted_json(
    header: &FileHeader,
    events: &[Event],
    commitments: &[EventCommitments],
    view: View,
    partner: Option<&str>,
) -> Value {
    let profile = view.profile();
    let list: Vec<Value> = events
        .iter()
        .zip(commitments)
        .map(|(event, c)| {
            let mut wire = event.to_json();
            let mut salts = Map::new();
            if let Value::Object(body) = &event.body {
                let mut shown = Map::new();
                for (name, value) in body {
                    let Some(field) = c.fields.get(name) else { continue };
                    if is_redacted(profile, partner, event, name) {
                        shown.insert(name.clone(), json!({"redacted": field.commitment.to_hex()}));
                    } else {
                        shown.insert(name.clone(), value.clone());
                        salts.insert(name.clone(), Value::String(hex_of(&field.salt)));
                    }
                }
                wire["body"] = Value::Object(shown);
            }
            wire["salts"] = Value::Object(salts);
            wire["fields_root"] = Value::String(c.fields_root.to_hex());
            wire
        })
        .collect();
    json!({
        "format": REDACTED_TRANSCRIPT_FORMAT,
        "view": view.as_str(),
        "stream": header.stream.as_str(),
        "event_count": header.event_count,
        "head_hash": header.head_hash.map(|h| h.to_hex()),
        "keys": keys_json(&header.keys),
        "events": list,
    })
}

/// Builds a bundle of a stored session: its export (which must verify), salts from the
/// constellation's key root, the root signed with the buyer's key. Reads only.
pub fn bundle_session(db: &Arc<Constellation>, session_id: &str, view: View) -> Result<Bundle, RuntimeError> {
    check_session_id(session_id)?;
    let stream_id = session_stream_id(session_id);
    if db.stream(&stream_id)?.is_none_or(|record| record.event_count == 0) {
        return Err(RuntimeError::SessionNotFound(session_id.to_owned()));
    }
    let mut transcript = Vec::new();
    let exported = crate::transcripts::export_stream(db, &stream_id, &mut transcript)?;
    if let Some(broken) = exported.report.first_break {
        return Err(RuntimeError::Tampered { stream: stream_id, broken });
    }
    if transcript.len() as u64 > BUNDLE_TRANSCRIPT_BYTES_MAX {
        return Err(BundleError::SessionInvalid(format!(
            "its transcript is larger than {BUNDLE_TRANSCRIPT_BYTES_MAX} bytes"
        ))
        .into());
    }
    let (header, events) = jsonl::read_file(transcript.as_slice())?;
    let created: CreatedBody = events
        .first()
        .filter(|event| event.kind.as_str() == kind::CREATED)
        .and_then(|event| serde_json::from_value(event.body.clone()).ok())
        .ok_or_else(|| BundleError::SessionInvalid("its first event is not a valid session.created".into()))?;
    let root =
        db.key_root()?.ok_or_else(|| BundleError::KeyUnavailable("this constellation has no key root".into()))?;
    let agent = db.agent(&created.buyer.agent_id)?.ok_or_else(|| {
        BundleError::KeyUnavailable(format!(
            "the buyer {} is not an agent of this constellation",
            created.buyer.agent_id
        ))
    })?;
    if agent.key_id != created.buyer.key_id {
        return Err(BundleError::KeyUnavailable(format!(
            "the session was signed with {}, the buyer's current key is {}",
            created.buyer.key_id, agent.key_id
        ))
        .into());
    }
    let signer = signer_for(&agent)?;
    let source = BundleSource { transcript_jsonl: &transcript, header: &header, events: &events };
    Ok(build_bundle(&source, &RedactionKey::derive(&root), &signer, view)?)
}

/// Writes a bundle as the directory `dir`: into a temporary directory beside it, each file
/// synced, then renamed into place, so a half-written bundle never appears under `dir`. An
/// existing `dir` must be an empty directory unless `force` (which replaces it).
pub fn write_bundle(dir: &Path, bundle: &Bundle, force: bool) -> Result<(), RuntimeError> {
    let name = dir.file_name().ok_or_else(|| BundleError::DestinationInvalid(dir.to_owned()))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let existing = match std::fs::symlink_metadata(dir) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error.into()),
    };
    let empty_dir = match &existing {
        Some(metadata) if metadata.is_dir() => std::fs::read_dir(dir)?.next().is_none(),
        _ => false,
    };
    if existing.is_some() && !empty_dir && !force {
        return Err(BundleError::DestinationExists(dir.to_owned()).into());
    }
    let name = name.to_string_lossy();
    let temporary = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if temporary.exists() {
        std::fs::remove_dir_all(&temporary)?;
    }
    std::fs::create_dir(&temporary)?;
    let written = (|| -> std::io::Result<()> {
        for file in &bundle.files {
            let mut handle = std::fs::File::create(temporary.join(file.name))?;
            handle.write_all(&file.bytes)?;
            handle.sync_all()?;
        }
        std::fs::File::open(&temporary)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&temporary);
        return Err(error.into());
    }
    // Move the old destination aside first, so a failed rename can put it back.
    let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
    let moved_aside = match &existing {
        None => false,
        Some(_) if empty_dir => {
            std::fs::remove_dir(dir)?;
            false
        }
        Some(_) => {
            std::fs::rename(dir, &aside)?;
            true
        }
    };
    if let Err(error) = std::fs::rename(&temporary, dir) {
        if moved_aside {
            let _ = std::fs::rename(&aside, dir);
        }
        let _ = std::fs::remove_dir_all(&temporary);
        return Err(error.into());
    }
    if moved_aside {
        let metadata = std::fs::symlink_metadata(&aside)?;
        if metadata.is_dir() { std::fs::remove_dir_all(&aside)? } else { std::fs::remove_file(&aside)? }
    }
    // Best effort: make the rename durable (not every platform can sync a directory).
    let _ = std::fs::File::open(&parent).and_then(|handle| handle.sync_all());
    Ok(())
}

/// Stable codes of the problems bundle verification names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProblemCode {
    ManifestInvalid,
    FileMissing,
    FileHashMismatch,
    FileUnlisted,
    FileNameInvalid,
    FileTooLarge,
    ViewInvalid,
    TranscriptInvalid,
    ReceiptInvalid,
    PolicyMismatch,
    CommitmentMismatch,
    CommitmentsRootMismatch,
    SignatureInvalid,
}

impl ProblemCode {
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManifestInvalid => "BUNDLE_MANIFEST_INVALID",
            Self::FileMissing => "BUNDLE_FILE_MISSING",
            Self::FileHashMismatch => "BUNDLE_FILE_HASH_MISMATCH",
            Self::FileUnlisted => "BUNDLE_FILE_UNLISTED",
            Self::FileNameInvalid => "BUNDLE_FILE_NAME_INVALID",
            Self::FileTooLarge => "BUNDLE_FILE_TOO_LARGE",
            Self::ViewInvalid => "BUNDLE_VIEW_INVALID",
            Self::TranscriptInvalid => "BUNDLE_TRANSCRIPT_INVALID",
            Self::ReceiptInvalid => "BUNDLE_RECEIPT_INVALID",
            Self::PolicyMismatch => "BUNDLE_POLICY_MISMATCH",
            Self::CommitmentMismatch => "BUNDLE_COMMITMENT_MISMATCH",
            Self::CommitmentsRootMismatch => "BUNDLE_COMMITMENTS_ROOT_MISMATCH",
            Self::SignatureInvalid => "BUNDLE_SIGNATURE_INVALID",
        }
    }
}

/// One thing wrong with a bundle, and the file it is in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Problem {
    pub code: ProblemCode,
    pub message: String,
    pub file: Option<String>,
}

/// The outcome of verifying a bundle.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BundleReport {
    pub session: Option<String>,
    pub view: Option<View>,
    pub commitments_root: Option<Digest>,
    /// Events checked (in the transcript or the redacted transcript).
    pub events: u64,
    /// Fields redacted in the view.
    pub redacted_fields: u64,
    pub problems: Vec<Problem>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, code: ProblemCode, file: Option<&str>, message: impl Into<String>) {
        if self.problems.len() < BUNDLE_PROBLEMS_MAX {
            self.problems.push(Problem { code, message: message.into(), file: file.map(str::to_owned) });
        }
    }
}

/// A bundle directory as read: the bytes of every file that could be read, and what was wrong
/// with the others.
#[derive(Clone, Debug, Default)]
pub struct BundleContents {
    /// Regular files with known names and within their size limits.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every entry's name (also those not read).
    pub names: BTreeSet<String>,
    /// Problems found while reading (too large, not a regular file, a name that is not UTF-8).
    pub problems: Vec<Problem>,
}

fn size_limit(name: &str) -> Option<u64> {
    match name {
        MANIFEST_FILE => Some(MANIFEST_BYTES_MAX),
        TRANSCRIPT_FILE | REDACTED_TRANSCRIPT_FILE | COMMITMENTS_FILE => Some(BUNDLE_TRANSCRIPT_BYTES_MAX),
        RECEIPT_FILE => Some(RECEIPT_BYTES_MAX as u64),
        POLICY_FILE => Some(POLICY_BYTES_MAX),
        _ => None,
    }
}

/// Reads a bundle directory, each file through its size limit. Only a missing or unreadable
/// directory is an error; anything wrong inside it is a problem for the report.
pub fn read_bundle_dir(dir: &Path) -> Result<BundleContents, RuntimeError> {
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(BundleError::NotFound(dir.to_owned()).into());
    }
    let mut contents = BundleContents::default();
    let problem = |code, name: &str, message: String| Problem { code, message, file: Some(name.to_owned()) };
    for (index, entry) in std::fs::read_dir(dir)?.enumerate() {
        if index >= BUNDLE_DIR_ENTRIES_MAX {
            contents.problems.push(Problem {
                code: ProblemCode::FileUnlisted,
                message: format!("more than {BUNDLE_DIR_ENTRIES_MAX} entries; the rest were not read"),
                file: None,
            });
            break;
        }
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            let lossy = entry.file_name().to_string_lossy().into_owned();
            contents.problems.push(problem(ProblemCode::FileNameInvalid, &lossy, "name is not UTF-8".into()));
            continue;
        };
        contents.names.insert(name.clone());
        let metadata = std::fs::symlink_metadata(entry.path())?;
        if !metadata.is_file() {
            let message = "not a regular file (a directory, link or device)".to_owned();
            contents.problems.push(problem(ProblemCode::FileNameInvalid, &name, message));
            continue;
        }
        // Unknown names are reported as unlisted or invalid; they are never read.
        let Some(limit) = size_limit(&name) else { continue };
        let mut bytes = Vec::new();
        std::fs::File::open(entry.path())?.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            let message = format!("larger than the limit of {limit} bytes");
            contents.problems.push(problem(ProblemCode::FileTooLarge, &name, message));
            continue;
        }
        contents.files.insert(name, bytes);
    }
    Ok(contents)
}

/// Reads and verifies a bundle directory.
pub fn verify_bundle_dir(dir: &Path) -> Result<BundleReport, RuntimeError> {
    Ok(verify_bundle_contents(&read_bundle_dir(dir)?))
}

/// The manifest, as parsed.
struct Manifest {
    session: String,
    stream: StreamId,
    view: View,
    files: Vec<(String, String, u64)>,
    root: Digest,
    key_id: String,
    public_key: String,
    signature: String,
}

type Object = Map<String, Value>;

fn take<'o>(object: &'o Object, name: &str) -> Result<&'o Value, String> {
    object.get(name).ok_or_else(|| format!("{name} is missing"))
}

fn take_str<'o>(object: &'o Object, name: &str) -> Result<&'o str, String> {
    take(object, name)?.as_str().ok_or_else(|| format!("{name} is not a string"))
}

fn take_object<'o>(object: &'o Object, name: &str) -> Result<&'o Object, String> {
    take(object, name)?.as_object().ok_or_else(|| format!("{name} is not an object"))
}

fn take_u64(object: &Object, name: &str) -> Result<u64, String> {
    take(object, name)?.as_u64().ok_or_else(|| format!("{name} is not a non-negative integer"))
}

fn take_digest(object: &Object, name: &str) -> Result<Digest, String> {
    take_str(object, name)?.parse::<Digest>().map_err(|e| format!("{name}: {}", e.problem))
}

fn only_fields(object: &Object, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(unknown) => Err(format!("unknown field {unknown:?}")),
        None => Ok(()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    parse_strict(text).map_err(|e| e.to_string())
}

/// A plain file name: no directory part, nothing hidden, only `[A-Za-z0-9._-]`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let value = parse_json(bytes)?;
    let object = value.as_object().ok_or("not a JSON object")?;
    only_fields(
        object,
        &["format", "session", "stream", "view", "files", "commitments_root", "commitments_signature"],
    )?;
    if take_str(object, "format")? != BUNDLE_FORMAT {
        return Err(format!("format is not {BUNDLE_FORMAT}"));
    }
    let session = take_str(object, "session")?.to_owned();
    check_session_id(&session).map_err(|_| format!("session {session:?} is not a session id"))?;
    let stream = StreamId::new(take_str(object, "stream")?).map_err(|e| e.to_string())?;
    if stream.as_str() != format!("{SESSION_STREAM_PREFIX}{session}") {
        return Err(format!("stream {stream} is not session {session}'s"));
    }
    let view_text = take_str(object, "view")?;
    let view = View::parse(view_text).ok_or_else(|| format!("view {view_text:?} is not full, partner or auditor"))?;
    let listed = take(object, "files")?.as_array().ok_or("files is not a list")?;
    if listed.len() > KNOWN_FILES.len() {
        return Err(format!("files lists {} entries; a bundle has at most {}", listed.len(), KNOWN_FILES.len()));
    }
    let mut files = Vec::new();
    for entry in listed {
        let entry = entry.as_object().ok_or("a files entry is not an object")?;
        only_fields(entry, &["name", "sha256", "bytes"])?;
        let name = take_str(entry, "name")?.to_owned();
        let sha256 = take_digest(entry, "sha256")?.to_hex();
        files.push((name, sha256, take_u64(entry, "bytes")?));
    }
    let root = take_digest(object, "commitments_root")?;
    let signature = take_object(object, "commitments_signature")?;
    only_fields(signature, &["key_id", "public_key", "signature"])?;
    Ok(Manifest {
        session,
        stream,
        view,
        files,
        root,
        key_id: take_str(signature, "key_id")?.to_owned(),
        public_key: take_str(signature, "public_key")?.to_owned(),
        signature: take_str(signature, "signature")?.to_owned(),
    })
}

/// What the content checks learn about the session, for the checks that follow.
struct Checked {
    buyer: PartyBody,
    /// The recorded policy hash, when disclosed.
    policy_hash: Option<String>,
    /// Root entries recomputed from the content.
    entries: Vec<RootEntry>,
}

/// Verifies a bundle read into memory (pure). Every problem found is reported, each with its
/// stable code and file.
pub fn verify_bundle_contents(contents: &BundleContents) -> BundleReport {
    let mut report = BundleReport { problems: contents.problems.clone(), ..BundleReport::default() };
    let Some(manifest_bytes) = contents.files.get(MANIFEST_FILE) else {
        if !report.problems.iter().any(|p| p.file.as_deref() == Some(MANIFEST_FILE)) {
            report.problem(ProblemCode::ManifestInvalid, Some(MANIFEST_FILE), "the bundle has no MANIFEST.json");
        }
        return report;
    };
    let manifest = match parse_manifest(manifest_bytes) {
        Ok(manifest) => manifest,
        Err(message) => {
            report.problem(ProblemCode::ManifestInvalid, Some(MANIFEST_FILE), message);
            return report;
        }
    };
    report.session = Some(manifest.session.clone());
    report.view = Some(manifest.view);
    report.commitments_root = Some(manifest.root);
    check_listing(contents, &manifest, &mut report);

    let checked = match manifest.view {
        View::Full => check_full(contents, &manifest, &mut report),
        View::Partner | View::Auditor => check_redacted(contents, &manifest, &mut report),
    };
    let Some(checked) = checked else { return report };
    let recomputed = commitments_root(&checked.entries);
    if recomputed != manifest.root {
        report.problem(
            ProblemCode::CommitmentsRootMismatch,
            Some(MANIFEST_FILE),
            format!("the manifest's commitments_root is {}, the content gives {recomputed}", manifest.root),
        );
    }
    check_root_signature(&manifest, &checked.buyer, &mut report);
    if let Some(policy) = contents.files.get(POLICY_FILE) {
        check_policy(policy, checked.policy_hash.as_deref(), &mut report);
    }
    report
}

/// Listed files exist and hash as listed; nothing unlisted; names plain and right for the view.
fn check_listing(contents: &BundleContents, manifest: &Manifest, report: &mut BundleReport) {
    let mut listed = BTreeSet::new();
    for (name, sha256, bytes) in &manifest.files {
        if !is_plain_name(name) || !KNOWN_FILES.contains(&name.as_str()) {
            report.problem(
                ProblemCode::FileNameInvalid,
                Some(MANIFEST_FILE),
                format!("lists {name:?}, not a bundle file name"),
            );
            continue;
        }
        if !manifest.view.allowed_files().contains(&name.as_str()) {
            let message = format!("a {} view does not carry {name}", manifest.view);
            report.problem(ProblemCode::ViewInvalid, Some(name), message);
        }
        if !listed.insert(name.clone()) {
            report.problem(ProblemCode::ManifestInvalid, Some(MANIFEST_FILE), format!("lists {name} twice"));
            continue;
        }
        match contents.files.get(name) {
            None if contents.names.contains(name) => {} // reported while reading (too large, not a file)
            None => report.problem(ProblemCode::FileMissing, Some(name), "listed in the manifest but missing"),
            Some(content) => {
                let actual = sha256_hex(content);
                if &actual != sha256 || content.len() as u64 != *bytes {
                    report.problem(
                        ProblemCode::FileHashMismatch,
                        Some(name),
                        format!(
                            "listed as {bytes} bytes with SHA-256 {sha256}, is {} bytes with {actual}",
                            content.len()
                        ),
                    );
                }
            }
        }
    }
    for required in manifest.view.required_files() {
        if !listed.contains(*required) {
            report.problem(
                ProblemCode::ViewInvalid,
                Some(required),
                format!("a {} view must list {required}", manifest.view),
            );
        }
    }
    for name in &contents.names {
        if name != MANIFEST_FILE && !listed.contains(name) {
            report.problem(ProblemCode::FileUnlisted, Some(name), "present but not listed in the manifest");
        }
    }
}

/// The file's bytes when it is listed (an unlisted file is not evidence).
fn listed_file<'c>(contents: &'c BundleContents, manifest: &Manifest, name: &str) -> Option<&'c [u8]> {
    manifest
        .files
        .iter()
        .any(|(listed, _, _)| listed == name)
        .then(|| contents.files.get(name))
        .flatten()
        .map(Vec::as_slice)
}

fn check_full(contents: &BundleContents, manifest: &Manifest, report: &mut BundleReport) -> Option<Checked> {
    let transcript = listed_file(contents, manifest, TRANSCRIPT_FILE)?;
    let invalid = |report: &mut BundleReport, message: String| {
        report.problem(ProblemCode::TranscriptInvalid, Some(TRANSCRIPT_FILE), message);
    };
    let verification = match jsonl::verify_file(transcript, None) {
        Ok(verification) => verification,
        Err(error) => {
            invalid(report, format!("{} {error}", error.code()));
            return None;
        }
    };
    if verification.header.stream != manifest.stream {
        invalid(
            report,
            format!("the transcript is {}, the manifest names {}", verification.header.stream, manifest.stream),
        );
        return None;
    }
    if let Some(broken) = &verification.report.first_break {
        invalid(report, broken.to_string());
        return None;
    }
    let (header, events) = match jsonl::read_file(transcript) {
        Ok(read) => read,
        Err(error) => {
            invalid(report, error.to_string());
            return None;
        }
    };
    if events.len() > BUNDLE_EVENTS_MAX {
        invalid(report, format!("more than {BUNDLE_EVENTS_MAX} events"));
        return None;
    }
    report.events = events.len() as u64;
    let state = match fold(&events) {
        Ok(state) => state,
        Err(message) => {
            invalid(report, format!("the session protocol refuses {message}"));
            return None;
        }
    };
    let created = state.created.clone()?;
    if created.session_id != manifest.session {
        invalid(
            report,
            format!("the transcript is session {}, the manifest names {}", created.session_id, manifest.session),
        );
    }
    check_buyer_key(&header.keys, &created.buyer, TRANSCRIPT_FILE, report);
    let entries = match listed_file(contents, manifest, COMMITMENTS_FILE) {
        Some(bytes) => check_commitments_file(bytes, &events, report),
        None => None,
    };
    check_receipt_full(listed_file(contents, manifest, RECEIPT_FILE), &state, report);
    // Without a usable commitments file the root cannot be recomputed; that is reported already.
    let entries = entries?;
    Some(Checked { buyer: created.buyer, policy_hash: Some(created.policy_hash), entries })
}

/// The buyer's key in the transcript's key list is the one `session.created` records (the one
/// the root is signed with).
fn check_buyer_key(keys: &KeyRing, buyer: &PartyBody, file: &str, report: &mut BundleReport) {
    let listed = KeyId::new(buyer.key_id.clone()).ok().and_then(|id| keys.get(&id).map(public_key_to_base64url));
    if listed.as_deref() != Some(buyer.public_key.as_str()) {
        report.problem(
            ProblemCode::TranscriptInvalid,
            Some(file),
            format!("the key listed for the buyer's {} is not the one session.created records", buyer.key_id),
        );
    }
}

/// `commitments.json` against the transcript's events: same events, same fields, every
/// commitment recomputed from its salt and the value. Returns the recomputed root entries.
fn check_commitments_file(bytes: &[u8], events: &[Event], report: &mut BundleReport) -> Option<Vec<RootEntry>> {
    let file = Some(COMMITMENTS_FILE);
    let parsed = parse_json(bytes).and_then(|value| {
        let object = value.as_object().ok_or("not a JSON object")?.clone();
        only_fields(&object, &["format", "stream", "commitments_root", "events"])?;
        if take_str(&object, "format")? != COMMITMENTS_FORMAT {
            return Err(format!("format is not {COMMITMENTS_FORMAT}"));
        }
        Ok(object)
    });
    let object = match parsed {
        Ok(object) => object,
        Err(message) => {
            report.problem(ProblemCode::CommitmentMismatch, file, message);
            return None;
        }
    };
    let listed = object.get("events").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if listed.len() != events.len() {
        let message = format!("lists {} events, the transcript has {}", listed.len(), events.len());
        report.problem(ProblemCode::CommitmentMismatch, file, message);
        return None;
    }
    let mut entries = Vec::with_capacity(events.len());
    for (event, entry) in events.iter().zip(listed) {
        match check_commitment_entry(event, entry) {
            Ok(fields_root) => entries.push(RootEntry::of(event, fields_root)),
            Err(message) => {
                report.problem(ProblemCode::CommitmentMismatch, file, format!("event {}: {message}", event.seq));
                // Recompute without this entry's claims, so the root check still runs.
                let fields_root = recompute_unsalted(event);
                entries.push(RootEntry::of(event, fields_root));
            }
        }
    }
    let recomputed = commitments_root(&entries);
    if object.get("commitments_root").and_then(Value::as_str) != Some(recomputed.to_hex().as_str()) {
        report.problem(ProblemCode::CommitmentsRootMismatch, file, format!("its commitments_root is not {recomputed}"));
    }
    Some(entries)
}

/// A fields root no salt can produce, for an event whose listed commitments are wrong (so the
/// root check fails rather than trusting them).
fn recompute_unsalted(event: &Event) -> Digest {
    Digest::tagged(b"pactum-bundle/1 unverifiable\0", event.hash.as_bytes())
}

fn check_commitment_entry(event: &Event, entry: &Value) -> Result<Digest, String> {
    let entry = entry.as_object().ok_or("not an object")?;
    only_fields(entry, &["seq", "hash", "fields_root", "fields"])?;
    if take_u64(entry, "seq")? != event.seq || take_digest(entry, "hash")? != event.hash {
        return Err("seq or hash differs from the transcript's".into());
    }
    let fields = take_object(entry, "fields")?;
    let body = event.body.as_object();
    let body_fields = body.map_or(0, Map::len);
    if fields.len() != body_fields {
        return Err(format!("{} fields listed, the body has {body_fields}", fields.len()));
    }
    let mut commitments = BTreeMap::new();
    for (name, field) in fields {
        let value = body.and_then(|b| b.get(name)).ok_or_else(|| format!("field {name:?} is not in the body"))?;
        let field = field.as_object().ok_or_else(|| format!("field {name:?} is not an object"))?;
        only_fields(field, &["salt", "commitment"])?;
        let salt = *take_digest(field, "salt")?.as_bytes();
        let listed = take_digest(field, "commitment")?;
        let recomputed = field_commitment(&salt, value).map_err(|e| e.to_string())?;
        if recomputed != listed {
            return Err(format!("field {name:?}: the commitment does not match its salt and value"));
        }
        commitments.insert(name.clone(), recomputed);
    }
    let root = fields_root(&commitments);
    if take_digest(entry, "fields_root")? != root {
        return Err("fields_root does not match the fields' commitments".into());
    }
    Ok(root)
}

fn check_receipt_full(receipt: Option<&[u8]>, state: &SessionState, report: &mut BundleReport) {
    let file = Some(RECEIPT_FILE);
    match (receipt, &state.receipt) {
        (None, None) => {}
        (Some(_), None) => report.problem(ProblemCode::ReceiptInvalid, file, "the session has no receipt"),
        (None, Some(_)) => {
            report.problem(ProblemCode::ReceiptInvalid, file, "the session issued a receipt; the bundle lists none");
        }
        (Some(bytes), Some(recorded)) => {
            let outcome = parse_json(bytes).and_then(|value| {
                if &value != recorded {
                    return Err("it is not the receipt the transcript records".into());
                }
                verify_receipt_in_session(state).map(|_| ()).map_err(|e| e.to_string())
            });
            if let Err(message) = outcome {
                report.problem(ProblemCode::ReceiptInvalid, file, message);
            }
        }
    }
}

/// The redacted transcript: links, signatures, hashes of unredacted events, every disclosed
/// field's commitment, each event's fields root.
fn check_redacted(contents: &BundleContents, manifest: &Manifest, report: &mut BundleReport) -> Option<Checked> {
    let bytes = listed_file(contents, manifest, REDACTED_TRANSCRIPT_FILE)?;
    let file = Some(REDACTED_TRANSCRIPT_FILE);
    let parsed = parse_json(bytes).and_then(|value| parse_redacted_header(value, manifest));
    let (keys, event_count, head_hash, events) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            report.problem(ProblemCode::TranscriptInvalid, file, message);
            return None;
        }
    };
    let mut entries = Vec::with_capacity(events.len());
    let mut prev = manifest.stream.genesis();
    let mut prev_at_ms = 0;
    let mut created: Option<PartyBody> = None;
    let mut policy_hash = None;
    let mut receipt_event = None;
    for (index, wire) in events.iter().enumerate() {
        let seq = index as u64;
        let event = match RedactedEvent::parse(wire, &manifest.stream, seq) {
            Ok(event) => event,
            Err(message) => {
                report.problem(ProblemCode::TranscriptInvalid, file, format!("event {seq}: {message}"));
                return None;
            }
        };
        let broken = |message: String| format!("event {seq}: {message}");
        if event.prev != prev {
            report.problem(
                ProblemCode::TranscriptInvalid,
                file,
                broken("prev is not the previous event's hash".into()),
            );
            return None;
        }
        if event.at_ms < prev_at_ms {
            report.problem(
                ProblemCode::TranscriptInvalid,
                file,
                broken("at_ms is earlier than the previous event's".into()),
            );
        }
        if let Err(message) = event.check_signature(&keys) {
            report.problem(ProblemCode::TranscriptInvalid, file, broken(message));
        }
        report.redacted_fields += event.redacted as u64;
        if event.redacted == 0 {
            match event.recompute_hash() {
                Ok(hash) if hash == event.hash => {}
                Ok(hash) => report.problem(
                    ProblemCode::TranscriptInvalid,
                    file,
                    broken(format!("nothing is redacted, and the event hashes to {hash}, not {}", event.hash)),
                ),
                Err(message) => report.problem(ProblemCode::TranscriptInvalid, file, broken(message)),
            }
        }
        if event.fields_root_recomputed != event.fields_root_listed {
            report.problem(
                ProblemCode::CommitmentMismatch,
                file,
                broken("the disclosed fields and commitments do not give the event's fields_root".into()),
            );
        }
        if seq == 0 {
            match event.created_parts(&manifest.session) {
                Ok((buyer, hash)) => {
                    check_buyer_key(&keys, &buyer, REDACTED_TRANSCRIPT_FILE, report);
                    if event.signer.as_ref().map(KeyId::as_str) != Some(buyer.key_id.as_str()) {
                        report.problem(ProblemCode::TranscriptInvalid, file, broken("not signed by the buyer".into()));
                    }
                    created = Some(buyer);
                    policy_hash = hash;
                }
                Err(message) => {
                    report.problem(ProblemCode::TranscriptInvalid, file, broken(message));
                    return None;
                }
            }
        }
        if event.kind.as_str() == kind::RECEIPT {
            receipt_event = Some(event.clone());
        }
        entries.push(RootEntry {
            seq,
            kind: event.kind.as_str().to_owned(),
            at_ms: event.at_ms,
            prev: event.prev,
            signer: event.signer.as_ref().map(|k| k.as_str().to_owned()),
            hash: event.hash,
            fields_root: event.fields_root_recomputed,
        });
        prev = event.hash;
        prev_at_ms = event.at_ms;
    }
    report.events = entries.len() as u64;
    if entries.len() as u64 != event_count || entries.last().map(|e| e.hash) != head_hash {
        report.problem(
            ProblemCode::TranscriptInvalid,
            file,
            "the events do not end at the recorded head (event_count, head_hash)",
        );
    }
    check_receipt_redacted(
        listed_file(contents, manifest, RECEIPT_FILE),
        receipt_event.as_ref(),
        &keys,
        &manifest.session,
        report,
    );
    let buyer = created?;
    Some(Checked { buyer, policy_hash, entries })
}

type RedactedParts = (KeyRing, u64, Option<Digest>, Vec<Value>);

fn parse_redacted_header(value: Value, manifest: &Manifest) -> Result<RedactedParts, String> {
    let Value::Object(mut object) = value else { return Err("not a JSON object".into()) };
    only_fields(&object, &["format", "view", "stream", "event_count", "head_hash", "keys", "events"])?;
    if take_str(&object, "format")? != REDACTED_TRANSCRIPT_FORMAT {
        return Err(format!("format is not {REDACTED_TRANSCRIPT_FORMAT}"));
    }
    if take_str(&object, "view")? != manifest.view.as_str() {
        return Err(format!("it is not a {} view", manifest.view));
    }
    if take_str(&object, "stream")? != manifest.stream.as_str() {
        return Err(format!("it is not stream {}", manifest.stream));
    }
    let event_count = take_u64(&object, "event_count")?;
    let head_hash = match take(&object, "head_hash")? {
        Value::Null => None,
        _ => Some(take_digest(&object, "head_hash")?),
    };
    let mut keys = KeyRing::new();
    for (key_id, key) in take_object(&object, "keys")? {
        let key_id = KeyId::new(key_id.clone()).map_err(|e| e.to_string())?;
        let text = key.as_str().ok_or("keys must be base64url strings")?;
        keys.insert_base64url(key_id, text).map_err(|e| e.to_string())?;
    }
    let Some(Value::Array(events)) = object.remove("events") else { return Err("events is not a list".into()) };
    if events.len() > BUNDLE_EVENTS_MAX {
        return Err(format!("more than {BUNDLE_EVENTS_MAX} events"));
    }
    Ok((keys, event_count, head_hash, events))
}

/// One event of a redacted transcript, parsed and with its commitments recomputed.
#[derive(Clone, Debug)]
struct RedactedEvent {
    stream: StreamId,
    kind: EventKind,
    seq: u64,
    at_ms: u64,
    prev: Digest,
    signer: Option<KeyId>,
    hash: Digest,
    sig: Option<SignatureBytes>,
    body: Value,
    /// The disclosed fields (with a salt), by name.
    disclosed: BTreeSet<String>,
    redacted: usize,
    fields_root_listed: Digest,
    fields_root_recomputed: Digest,
}

impl RedactedEvent {
    fn parse(wire: &Value, stream: &StreamId, seq: u64) -> Result<Self, String> {
        let Value::Object(object) = wire else { return Err("not a JSON object".into()) };
        only_fields(
            object,
            &["stream", "seq", "kind", "at_ms", "body", "prev", "signer", "hash", "sig", "salts", "fields_root"],
        )?;
        let mut envelope = object.clone();
        let salts = envelope.remove("salts").ok_or("salts is missing")?;
        let fields_root_listed = take_digest(object, "fields_root")?;
        envelope.remove("fields_root");
        // The envelope is an event's wire form; its body holds markers where fields are redacted.
        let event = Event::from_json(Value::Object(envelope)).map_err(|e| e.to_string())?;
        if &event.stream != stream || event.seq != seq {
            return Err(format!("expected {stream} seq {seq}, found {} seq {}", event.stream, event.seq));
        }
        let salts = salts.as_object().ok_or("salts is not an object")?;
        let body = event.body.as_object();
        if let Some(stray) = salts.keys().find(|name| body.is_none_or(|b| !b.contains_key(*name))) {
            return Err(format!("a salt for {stray:?}, which is not in the body"));
        }
        let mut commitments = BTreeMap::new();
        let mut disclosed = BTreeSet::new();
        let mut redacted = 0;
        for (name, value) in body.into_iter().flatten() {
            // A field with a salt is disclosed, whatever its value looks like; one without must be
            // a `{"redacted": "<commitment>"}` marker. So no disclosed value is mistaken for one.
            let commitment = match salts.get(name) {
                Some(salt) => {
                    let salt = salt
                        .as_str()
                        .and_then(|text| text.parse::<Digest>().ok())
                        .ok_or_else(|| format!("the salt of {name:?} is not 64 lowercase hex digits"))?;
                    disclosed.insert(name.clone());
                    field_commitment(salt.as_bytes(), value).map_err(|e| format!("{name:?}: {e}"))?
                }
                None => {
                    redacted += 1;
                    redacted_marker(value).ok_or_else(|| {
                        format!("{name:?} has no salt and is not a {{\"redacted\": \"<commitment>\"}} marker")
                    })?
                }
            };
            commitments.insert(name.clone(), commitment);
        }
        Ok(Self {
            stream: event.stream,
            kind: event.kind,
            seq: event.seq,
            at_ms: event.at_ms,
            prev: event.prev,
            signer: event.signer,
            hash: event.hash,
            sig: event.sig,
            body: event.body,
            disclosed,
            redacted,
            fields_root_listed,
            fields_root_recomputed: fields_root(&commitments),
        })
    }

    fn check_signature(&self, keys: &KeyRing) -> Result<(), String> {
        let (Some(signer), Some(sig)) = (&self.signer, &self.sig) else {
            return Err("every session event is signed; this one is not".into());
        };
        let key = keys.get(signer).ok_or_else(|| format!("signer {signer} is not in the key list"))?;
        if !verify_digest_signature(key.as_bytes(), &self.hash, sig) {
            return Err(format!("the signature of {signer} over the event hash does not verify"));
        }
        Ok(())
    }

    fn recompute_hash(&self) -> Result<Digest, String> {
        let event = Event {
            stream: self.stream.clone(),
            seq: self.seq,
            kind: self.kind.clone(),
            body: self.body.clone(),
            at_ms: self.at_ms,
            prev: self.prev,
            signer: self.signer.clone(),
            hash: self.hash,
            sig: self.sig,
        };
        event.compute_hash().map_err(|e| e.to_string())
    }

    /// The buyer and the policy hash from `session.created` (the buyer must be disclosed).
    fn created_parts(&self, session: &str) -> Result<(PartyBody, Option<String>), String> {
        if self.kind.as_str() != kind::CREATED {
            return Err("the first event is not session.created".into());
        }
        let disclosed = |name: &str| self.disclosed.contains(name).then(|| self.body.get(name)).flatten();
        let buyer = disclosed("buyer").ok_or("session.created must disclose the buyer")?;
        let buyer: PartyBody = serde_json::from_value(buyer.clone()).map_err(|e| format!("buyer: {e}"))?;
        if disclosed("session_id").and_then(Value::as_str) != Some(session) {
            return Err(format!("session.created must disclose session_id {session}"));
        }
        let policy_hash = disclosed("policy_hash").and_then(Value::as_str).map(str::to_owned);
        Ok((buyer, policy_hash))
    }
}

/// The commitment in `{"redacted": "<64 hex digits>"}`.
fn redacted_marker(value: &Value) -> Option<Digest> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.get("redacted")?.as_str()?.parse().ok()
}

fn check_receipt_redacted(
    receipt: Option<&[u8]>,
    event: Option<&RedactedEvent>,
    keys: &KeyRing,
    session: &str,
    report: &mut BundleReport,
) {
    let file = Some(RECEIPT_FILE);
    let outcome = match (receipt, event) {
        (None, None) => Ok(()),
        (Some(_), None) => Err("the session has no receipt".to_owned()),
        (None, Some(_)) => Err("the session issued a receipt; the bundle lists none".to_owned()),
        (Some(bytes), Some(event)) => parse_json(bytes).and_then(|value| {
            let recorded = event.disclosed.contains("receipt").then(|| event.body.get("receipt")).flatten();
            if recorded != Some(&value) {
                return Err("it is not the receipt the transcript records".into());
            }
            let verified = verify_receipt(&value).map_err(|e| e.to_string())?;
            if verified.session_id != session {
                return Err(format!("it is session {}'s receipt", verified.session_id));
            }
            let issuer_key = KeyId::new(verified.issuer_key_id.clone()).ok().and_then(|id| keys.get(&id).copied());
            let issuer_public = value.pointer("/issuer/public_key").and_then(Value::as_str);
            if event.signer.as_ref().map(KeyId::as_str) != Some(verified.issuer_key_id.as_str())
                || issuer_key.map(|key| public_key_to_base64url(&key)).as_deref() != issuer_public
            {
                return Err("its issuer is not the provider that signed receipt.issued".into());
            }
            Ok(())
        }),
    };
    if let Err(message) = outcome {
        report.problem(ProblemCode::ReceiptInvalid, file, message);
    }
}

fn check_root_signature(manifest: &Manifest, buyer: &PartyBody, report: &mut BundleReport) {
    let file = Some(MANIFEST_FILE);
    if manifest.key_id != buyer.key_id || manifest.public_key != buyer.public_key {
        let message = format!("the root is signed by {}, the session's buyer key is {}", manifest.key_id, buyer.key_id);
        report.problem(ProblemCode::SignatureInvalid, file, message);
        return;
    }
    let valid = public_key_from_base64url(&buyer.public_key)
        .ok()
        .zip(SignatureBytes::from_base64url(&manifest.signature).ok())
        .is_some_and(|(key, signature)| verify_digest_signature(&key, &manifest.root, &signature));
    if !valid {
        report.problem(
            ProblemCode::SignatureInvalid,
            file,
            "the buyer's signature over commitments_root does not verify",
        );
    }
}

/// `policy.json` is canonical JSON whose SHA-256 is the recorded `policy_hash`.
fn check_policy(bytes: &[u8], policy_hash: Option<&str>, report: &mut BundleReport) {
    let file = Some(POLICY_FILE);
    let Some(recorded) = policy_hash else {
        report.problem(
            ProblemCode::PolicyMismatch,
            file,
            "the view does not disclose the policy_hash to check it against",
        );
        return;
    };
    let canonical = parse_json(bytes).and_then(|value| to_canonical_string(&value).map_err(|e| e.to_string()));
    match canonical {
        Ok(text) if text.as_bytes() == bytes => {
            let actual = format!("sha256:{}", sha256_hex(bytes));
            if actual != recorded {
                report.problem(
                    ProblemCode::PolicyMismatch,
                    file,
                    format!("hashes to {actual}; the session recorded {recorded}"),
                );
            }
        }
        Ok(_) => report.problem(ProblemCode::PolicyMismatch, file, "not in canonical JSON form"),
        Err(message) => report.problem(ProblemCode::PolicyMismatch, file, message),
    }
}

#[cfg(test)]
mod tests;
