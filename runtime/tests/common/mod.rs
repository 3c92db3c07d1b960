//! Fixtures shared by the runtime's multi-party tests: a runtime on a file with deterministic
//! keys and a fixed clock, requests for `compute.inference`, and the checks every ended session
//! must pass.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pactum_memory::Constellation;
use pactum_runtime::session::model::SessionState;
use pactum_runtime::session::replay::replay_session;
use pactum_runtime::session::shell::{AgentRuntime, KeyEntropy, NewSession, OwnerLiveness};
use pactum_runtime::{
    Currency, Directory, Intent, IntentType, ManualClock, Money, SettlementMode, Urgency, check_constellation,
    strategy_named,
};
use pactum_transcripts::{Digest, Event};

pub const START_MS: u64 = 1_700_000_000_000;
/// What a new buyer's wallet starts with (the runtime's default), in minor units.
pub const STARTING_MINOR: i64 = 100_000;

/// Key seeds from a counter: the same constellation history gives the same keys.
#[derive(Debug, Default)]
pub struct CountingEntropy(AtomicU64);

impl KeyEntropy for CountingEntropy {
    fn key_seed(&self) -> [u8; 32] {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        *Digest::tagged(b"test entropy\0", &n.to_be_bytes()).as_bytes()
    }
}

/// Every other owner has stopped.
#[derive(Debug)]
pub struct NobodyAlive;

impl OwnerLiveness for NobodyAlive {
    fn is_alive(&self, _owner: &str) -> bool {
        false
    }
}

pub fn runtime_at(path: &std::path::Path, owner: &str) -> AgentRuntime {
    AgentRuntime::new(
        Arc::new(Constellation::open(path).expect("open")),
        Arc::new(ManualClock::new(START_MS)),
        Directory::builtin().expect("directory"),
        Arc::new(CountingEntropy::default()),
        Arc::new(NobodyAlive),
        owner.into(),
    )
}

pub fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("usd")).expect("money")
}

/// `compute.inference` for at most `max_minor` US cents, banded, with `members` pooling it.
pub fn request_for(seed: u64, max_minor: u64, auto_approve: bool, members: &[(&str, u64)]) -> NewSession {
    let intent = Intent::new(
        IntentType::new("compute.inference").expect("type"),
        "",
        usd(max_minor),
        None,
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .expect("intent");
    NewSession {
        intent,
        policy: pactum_runtime::policy::Policy::from_static(Default::default()),
        strategy: strategy_named("banded").expect("strategy"),
        seed,
        auto_approve,
        preferences: None,
        constraints: Vec::new(),
        coalition: members.iter().map(|(id, weight)| ((*id).to_owned(), *weight)).collect(),
    }
}

pub fn balance(db: &Constellation, account: &str) -> i64 {
    db.accounts().expect("accounts").into_iter().find(|a| a.account_id == account).map_or(0, |a| a.balance_minor)
}

pub fn events_of(db: &Arc<Constellation>, state: &SessionState) -> Vec<Event> {
    let stream = format!("session:{}", state.session_id().expect("id"));
    pactum_runtime::stream_events(db, &stream).expect("events").1
}

/// What every ended session must satisfy: replay recomputes every decision and the
/// constellation check (transcripts, ledger reconciliation, escrow) is clean.
#[track_caller]
pub fn assert_sound(db: &Arc<Constellation>, states: &[&SessionState]) {
    for state in states {
        let report = replay_session(db, state.session_id().expect("id")).expect("replay");
        assert!(report.is_consistent(), "{:#?}", report.problems);
        assert_eq!(&&report.state, state);
    }
    let check = check_constellation(db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert!(check.sessions_resumable.is_empty(), "{:?}", check.sessions_resumable);
}
