//! Pactum transcripts: tamper-evident, hash-linked event streams.
//!
//! - [`canonical`]: RFC 8785 canonical JSON and a strict I-JSON parser.
//! - [`Event`]: one entry of a stream; its `hash` covers a domain tag and the canonical JSON of
//!   every other field, its optional Ed25519 `sig` covers the hash.
//! - [`Verifier`]: finds the first broken link, with its seq and a stable [`BreakReason`].
//! - [`TranscriptStream`]: append, checkpoint, replay and verify over any [`EventStore`]; this
//!   crate knows no database (the constellation store implements the trait elsewhere).
//! - [`jsonl`]: the `pactum-transcript/1` file format, verifiable without a database.
//! - [`pact_v4`]: PACT v4 (`pact-transcript/4.0`) transcripts: the reference verdict and
//!   Pactum's stricter findings.
//! - [`peac`]: PEAC interaction-record receipts ("Wire 0.2" compact JWS): issue and verify.
//!
//! The exact hashing recipe is in docs/TRANSCRIPT-FORMAT.md. Nothing here reads the clock
//! (a [`Clock`] is injected) or prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod canonical;
mod clock;
mod event;
pub mod jsonl;
mod keys;
pub mod limits;
pub mod pact_v4;
pub mod peac;
pub mod seal;
mod stream;
mod verify;

pub use clock::{Clock, ManualClock};
pub use event::{
    Digest, EVENT_HASH_TAG, Event, EventKind, FORMAT, FormatError, GENESIS_TAG, STATE_HASH_TAG, SealError, StreamId,
    UnsealedEvent, state_hash, state_hash_of_canonical,
};
pub use keys::{
    Ed25519Signer, EventSigner, KeyError, KeyId, KeyRing, SignatureBytes, public_key_bytes_to_base64url,
    public_key_from_base64url, public_key_to_base64url,
};
pub use pact_v4::{IntegrityStatus, V4Entry, V4EntryType, V4Report, verify_v4, verify_v4_bytes, verify_v4_text};
pub use stream::{
    Checkpoint, CheckpointId, EventStore, Head, MemoryStore, NewEvent, ReduceError, Reducer, Replay, StoreError,
    TranscriptError, TranscriptStream,
};
pub use verify::{Anchor, Break, BreakReason, Verifier, VerifyReport, verify_digest_signature, verify_events};

pub use ed25519_dalek::{SigningKey, VerifyingKey};
