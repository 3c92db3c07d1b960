//! Pactum's runtime. For now it joins the two storage-level crates: transcripts (how events are
//! hashed, signed and verified) and the constellation store (where they live), and offers the
//! transcript operations the CLI and, later, negotiation sessions use.
//!
//! The runtime core never reads the OS clock or randomness: a [`Clock`] is passed in.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod budget;
pub mod bundle;
mod check;
pub mod coalition;
pub mod constraints;
pub mod contracts;
mod directory;
mod error;
mod event_store;
mod failure;
pub mod faults;
pub mod graph;
mod identities;
mod intent;
mod money;
mod pact_v4;
pub mod passport;
pub mod policy;
pub mod preferences;
mod rail;
pub mod rails;
pub mod remote;
pub mod session;
mod strategy;
mod transcripts;

pub use check::{CheckReport, Problem, check_constellation};
pub use directory::{
    Concession, DEFAULT_DIRECTORY, DIRECTORY_FORMAT, Directory, DirectoryError, FailureRates, IntentType,
    PROVIDERS_MAX, ProviderSpec, RemoteSpec, check_endpoint,
};
pub use error::RuntimeError;
pub use event_store::ConstellationEventStore;
pub use failure::{FailureCode, FaultDomain, Stage, Terminality};
pub use identities::{
    DEFAULT_BUYER_ID, check_agent_id, derive_agent_seed, ensure_agent, ensure_default_buyer, key_id_for,
    rotate_agent_key, signer_for,
};
pub use intent::{
    Intent, IntentError, POLICY_FORMAT, PolicyError, PolicyRule, ROUNDS_DEFAULT, ROUNDS_MAX, SettlementMode,
    StaticPolicy, Urgency,
};
pub use money::{AMOUNT_MINOR_MAX, Currency, Money, MoneyError};
pub use pact_v4::{V4_EXPORTER, V4Export, build_v4_transcript, export_session_v4};
pub use pactum_transcripts::{Clock, ManualClock};
pub use rail::{
    LedgerRail, PaymentRequest, Rail, RailError, RailEvidence, RailPhase, escrow_account, external_account,
    fund_wallet, provider_account, wallet_account,
};
pub use strategy::{
    Banded, Baseline, ProviderAnswer, Strategy, Urgent, provider_ask, simulate_provider, strategy_named,
};
pub use transcripts::{
    ExportSummary, ImportOutcome, KeySource, StoredVerification, StreamSummary, VerifyOptions, export_stream,
    import_file, key_ring, list_streams, stream_events, stream_key_ring, verify_stream, verify_stream_with,
};
