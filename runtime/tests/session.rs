//! Negotiation sessions end to end over a real constellation: the core, the shell, the ledger
//! rail and receipts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pactum_memory::Constellation;
use pactum_runtime::session::model::{Phase, SessionState, kind};
use pactum_runtime::session::receipt::verify_receipt_in_session;
use pactum_runtime::session::shell::{
    AgentRuntime, Approver, KeyEntropy, NewSession, OfferToApprove, OwnerLiveness, Quiet,
};
use pactum_runtime::{
    Currency, Directory, Intent, IntentType, ManualClock, Money, SettlementMode, StaticPolicy, Urgency, strategy_named,
};
use pactum_transcripts::Digest;

#[derive(Debug, Default)]
struct CountingEntropy(AtomicU64);

impl KeyEntropy for CountingEntropy {
    fn key_seed(&self) -> [u8; 32] {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        *Digest::tagged(b"test entropy\0", &n.to_be_bytes()).as_bytes()
    }
}

#[derive(Debug)]
struct NobodyAlive;

impl OwnerLiveness for NobodyAlive {
    fn is_alive(&self, _owner: &str) -> bool {
        false
    }
}

struct Always(bool);

impl Approver for Always {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (self.0, "client")
    }
}

const START_MS: u64 = 1_700_000_000_000;

fn runtime(dir: &tempfile::TempDir, directory: Directory) -> AgentRuntime {
    let db = Arc::new(Constellation::open(dir.path().join("c.pactum")).expect("open"));
    AgentRuntime::new(
        db,
        Arc::new(ManualClock::new(START_MS)),
        directory,
        Arc::new(CountingEntropy::default()),
        Arc::new(NobodyAlive),
        "test-process".into(),
    )
}

fn request(intent_type: &str, max_minor: u64, strategy: &str, seed: u64) -> NewSession {
    let intent = Intent::new(
        IntentType::new(intent_type).expect("type"),
        "",
        Money::from_minor(max_minor, Currency::parse("USD").expect("usd")).expect("money"),
        None,
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .expect("intent");
    NewSession {
        intent,
        policy: StaticPolicy::default(),
        strategy: strategy_named(strategy).expect("strategy"),
        seed,
        auto_approve: true,
    }
}

fn kinds(state: &SessionState, runtime: &AgentRuntime) -> Vec<String> {
    let (_, events) =
        pactum_runtime::stream_events(runtime.constellation(), &format!("session:{}", state.session_id().expect("id")))
            .expect("events");
    events.iter().map(|e| e.kind.as_str().to_owned()).collect()
}

#[test]
fn a_negotiation_completes_with_a_verified_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(&dir, Directory::builtin().expect("directory"));
    let state =
        runtime.negotiate(request("weather.data", 10, "banded", 7), &mut Always(false), &mut Quiet).expect("negotiate");
    let kinds = kinds(&state, &runtime);
    assert_eq!(state.phase, Phase::Completed, "{kinds:?} {:?}", state.failure);
    assert_eq!(kinds.last().map(String::as_str), Some(kind::COMPLETED));
    verify_receipt_in_session(&state).expect("receipt verifies");
    let report =
        pactum_runtime::verify_stream(runtime.constellation(), &format!("session:{}", state.session_id().unwrap()))
            .expect("verify");
    assert!(report.is_valid(), "{report:?}");
}

#[test]
fn a_replay_recomputes_every_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(&dir, Directory::builtin().expect("directory"));
    let state = runtime
        .negotiate(request("compute.inference", 40, "banded", 11), &mut Always(false), &mut Quiet)
        .expect("negotiate");
    let report = pactum_runtime::session::replay::replay_session(runtime.constellation(), state.session_id().unwrap())
        .expect("replay");
    assert!(report.is_consistent(), "{:#?}", report.problems);
    assert_eq!(report.state, state);
    assert!(report.checkpoint_seq.is_some());
    eprintln!("{:?}", kinds(&state, &runtime));
}
