//! Negotiation sessions end to end over a real constellation: the sans-IO core, the shell, the
//! ledger rail and receipts. Every failure path ends with exactly one FailureEvent whose code,
//! stage and fault domain come from the taxonomy and whose evidence resolves in the transcript.

use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::constraints::{Budget, Constraint, Temporal, Window};
use pactum_runtime::session::model::{Phase, SessionState, kind, parse_event_ref};
use pactum_runtime::session::receipt::verify_receipt_in_session;
use pactum_runtime::session::replay::{outcome_problems, replay_session};
use pactum_runtime::session::shell::{AgentRuntime, Approver, NewSession, OfferToApprove, OwnerLiveness, Quiet};
use pactum_runtime::session::spending::{ConstraintsCheckedBody, NamedConstraint};
use pactum_runtime::{
    Currency, Directory, FailureCode, Intent, IntentType, ManualClock, Money, SettlementMode, StaticPolicy, Urgency,
    check_constellation, strategy_named,
};
use pactum_transcripts::Event;

mod common;
use common::{CountingEntropy, NobodyAlive, START_MS, runtime_at};

/// Approves (or declines) every payment, counting the questions; optionally cancels (asks for
/// an abort) at its `cancel_at`-th check, or while it is being asked to pay.
struct Always {
    approve: bool,
    asked: u32,
    checks: u32,
    cancel_at: Option<u32>,
    cancel_while_asked: bool,
}

impl Always {
    fn new(approve: bool) -> Self {
        Self { approve, asked: 0, checks: 0, cancel_at: None, cancel_while_asked: false }
    }
}

impl Approver for Always {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        self.asked += 1;
        (self.approve, "client")
    }

    fn abort_requested(&mut self) -> Option<String> {
        self.checks += 1;
        let cancelled = self.cancel_at == Some(self.checks) || (self.cancel_while_asked && self.asked > 0);
        cancelled.then(|| "cancelled by the client".to_owned())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: AgentRuntime,
}

fn fixture(directory: Directory) -> Fixture {
    fixture_with_balance(directory, None)
}

fn fixture_with_balance(directory: Directory, starting_balance_minor: Option<u64>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Constellation::open(dir.path().join("c.pactum")).expect("open"));
    let mut runtime = AgentRuntime::new(
        db,
        Arc::new(ManualClock::new(START_MS)),
        directory,
        Arc::new(CountingEntropy::default()),
        Arc::new(NobodyAlive),
        "test-process".into(),
    );
    if let Some(balance) = starting_balance_minor {
        runtime = runtime.with_starting_balance(balance);
    }
    Fixture { _dir: dir, runtime }
}

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("usd")).expect("money")
}

struct Ask<'a> {
    intent_type: &'a str,
    max: Money,
    strategy: &'a str,
    seed: u64,
    latency_ms_max: Option<u32>,
    deadline_ms: Option<u64>,
    policy: StaticPolicy,
    /// A `pactum-policy/2` policy with rules, used instead of `policy` when set.
    rules: Option<pactum_runtime::policy::Policy>,
    auto_approve: bool,
    /// The session's own spending constraints.
    constraints: Vec<NamedConstraint>,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Self {
            intent_type: "weather.data",
            max: usd(10),
            strategy: "banded",
            seed: 7,
            latency_ms_max: None,
            deadline_ms: None,
            policy: StaticPolicy::default(),
            rules: None,
            auto_approve: true,
            constraints: Vec::new(),
        }
    }
}

fn request(ask: Ask<'_>) -> NewSession {
    let intent = Intent::new(
        IntentType::new(ask.intent_type).expect("type"),
        "",
        ask.max,
        ask.latency_ms_max,
        ask.deadline_ms,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .expect("intent");
    NewSession {
        intent,
        policy: ask.rules.unwrap_or_else(|| pactum_runtime::policy::Policy::from_static(ask.policy)),
        strategy: strategy_named(ask.strategy).expect("strategy"),
        seed: ask.seed,
        auto_approve: ask.auto_approve,
        preferences: None,
        constraints: ask.constraints,
        coalition: Vec::new(),
    }
}

fn events(fixture: &Fixture, state: &SessionState) -> Vec<Event> {
    let stream = format!("session:{}", state.session_id().expect("id"));
    pactum_runtime::stream_events(fixture.runtime.constellation(), &stream).expect("events").1
}

/// A directory of one provider, `solo`, selling `test.item` at 1.00 USD.
fn solo(
    floor_percent: u8,
    concession: &str,
    concession_percent: u8,
    failures: (u8, u8, u8),
    latency_ms: u32,
) -> Directory {
    let (timeout, refusal, unreachable) = failures;
    Directory::parse(
        &format!(
            r#"format = "pactum-directory/1"
[[provider]]
id = "solo"
name = "Solo"
intent_types = ["test.item"]
reference_price = {{ amount = "1.00", currency = "USD" }}
floor_percent = {floor_percent}
concession = "{concession}"
concession_percent = {concession_percent}
latency_ms = {{ base = {latency_ms}, jitter = 0 }}
failures = {{ timeout_percent = {timeout}, refusal_percent = {refusal}, unreachable_percent = {unreachable} }}
"#
        ),
        "test directory",
    )
    .expect("directory")
}

/// Runs a session and checks what every session must satisfy: the transcript verifies, the
/// replay recomputes every decision, the constellation check is clean, and a failure is exactly
/// one FailureEvent, last, with evidence that resolves.
fn negotiate(fixture: &Fixture, ask: Ask<'_>, approver: &mut Always) -> (SessionState, Vec<Event>) {
    let state = fixture.runtime.negotiate(request(ask), approver, &mut Quiet).expect("negotiate");
    let events = events(fixture, &state);
    let session_id = state.session_id().expect("id").to_owned();
    let db = fixture.runtime.constellation();
    let report = replay_session(db, &session_id).expect("replay");
    assert!(report.is_consistent(), "{:#?}", report.problems);
    assert_eq!(report.state, state, "the fold of the transcript is the live state");
    let check = check_constellation(db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert!(check.sessions_resumable.is_empty());
    let failures: Vec<&Event> = events.iter().filter(|e| e.kind.as_str() == kind::FAILED).collect();
    match state.phase {
        Phase::Failed => {
            assert_eq!(failures.len(), 1, "exactly one FailureEvent");
            assert_eq!(events.last().map(|e| e.kind.as_str()), Some(kind::FAILED), "and it is the last event");
            assert!(outcome_problems(&state).is_empty());
        }
        Phase::Completed => {
            assert!(failures.is_empty());
            verify_receipt_in_session(&state).expect("receipt verifies");
        }
        other => panic!("session ended {other:?}"),
    }
    (state, events)
}

/// Checks a failed session's code, stage, fault domain and evidence.
#[track_caller]
fn check_failure(state: &SessionState, events: &[Event], code: FailureCode, evidence_kinds: &[&str], rules: &[&str]) {
    let failure = state.failure.as_ref().expect("failed");
    assert_eq!(failure.failure_code(), Some(code), "{failure:#?}");
    assert_eq!(failure.stage, code.stage().as_str());
    assert_eq!(failure.fault_domain, code.fault_domain().as_str());
    assert_eq!(failure.terminality, code.terminality().as_str());
    let mut cited_kinds = Vec::new();
    let mut cited_rules = Vec::new();
    for reference in &failure.evidence_refs {
        if let Some(seq) = parse_event_ref(reference) {
            let event = events.iter().find(|e| e.seq == seq).expect("evidence resolves to an event");
            cited_kinds.push(event.kind.as_str().to_owned());
        } else {
            cited_rules.push(reference.strip_prefix("policy_rule:").expect("a policy rule").to_owned());
        }
    }
    for kind in evidence_kinds {
        assert!(cited_kinds.iter().any(|k| k == kind), "evidence cites a {kind} event: {failure:#?}");
    }
    assert_eq!(cited_rules, rules, "{failure:#?}");
}

fn balance(fixture: &Fixture, account: &str) -> i64 {
    fixture
        .runtime
        .constellation()
        .accounts()
        .expect("accounts")
        .into_iter()
        .find(|a| a.account_id == account)
        .map_or(0, |a| a.balance_minor)
}

#[test]
fn a_negotiation_completes_with_a_verified_receipt_and_moves_the_money_once() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let (state, events) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    assert_eq!(state.phase, Phase::Completed);
    let agreement = state.agreement.as_ref().expect("agreement");
    let paid = i64::try_from(agreement.price.amount_minor).expect("small");
    assert_eq!(balance(&fixture, &format!("provider:{}:USD", agreement.provider)), paid);
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000 - paid);
    // Every negotiation message is signed by its sender, whole.
    for event in &events {
        let signer = event.signer.as_ref().expect("signed").as_str();
        let sender = event.body.get("sender").and_then(|s| s.as_str());
        if let Some(sender) = sender {
            assert_eq!(signer, format!("agent:{sender}#1"), "{} is signed by its sender", event.kind);
        }
        assert!(event.sig.is_some());
    }
}

#[test]
fn a_multi_round_negotiation_concedes_and_selects_the_best_offer() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let ask = Ask { intent_type: "compute.inference", max: usd(30), seed: 4, ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(false));
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    assert!(state.round > 1, "banded bids low first, so agreement takes rounds");
    let counters = events.iter().filter(|e| e.kind.as_str() == kind::COUNTER).count();
    assert_eq!(counters as u32, state.round - 1);
    // The selection is the cheapest acceptable ask of the last round.
    let selection = events.iter().find(|e| e.kind.as_str() == kind::SELECTED).expect("selection");
    let considered = selection.body["considered"].as_array().expect("considered");
    let best = considered
        .iter()
        .filter(|c| c["acceptable"] == true)
        .map(|c| c["price"]["amount_minor"].as_u64().expect("price"))
        .min();
    assert_eq!(best, Some(state.agreement.as_ref().expect("agreement").price.amount_minor));
}

/// Three providers asking the same price: two fast ones and a slow one.
const TIE_DIRECTORY: &str = r#"format = "pactum-directory/1"
[[provider]]
id = "b-slow"
name = "B"
intent_types = ["test.item"]
reference_price = { amount = "1.00", currency = "USD" }
floor_percent = 100
concession = "eager"
concession_percent = 0
latency_ms = { base = 90, jitter = 0 }
failures = { timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }
[[provider]]
id = "c-fast"
name = "C"
intent_types = ["test.item"]
reference_price = { amount = "1.00", currency = "USD" }
floor_percent = 100
concession = "eager"
concession_percent = 0
latency_ms = { base = 10, jitter = 0 }
failures = { timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }
[[provider]]
id = "a-fast"
name = "A"
intent_types = ["test.item"]
reference_price = { amount = "1.00", currency = "USD" }
floor_percent = 100
concession = "eager"
concession_percent = 0
latency_ms = { base = 10, jitter = 0 }
failures = { timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }
"#;

#[test]
fn ties_go_to_the_faster_provider_then_the_smaller_id() {
    let directory = Directory::parse(TIE_DIRECTORY, "tie directory").expect("directory");
    let fixture = fixture(directory);
    let ask = Ask { intent_type: "test.item", max: usd(100), strategy: "baseline", ..Ask::default() };
    let (state, _) = negotiate(&fixture, ask, &mut Always::new(false));
    assert_eq!(state.agreement.as_ref().expect("agreement").provider, "a-fast");
}

#[test]
fn over_budget_by_policy_fails_at_admission_with_the_rule_as_evidence() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let policy = StaticPolicy { max_price: Some(usd(5)), ..StaticPolicy::default() };
    let (state, events) = negotiate(&fixture, Ask { max: usd(10), policy, ..Ask::default() }, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::MaxPriceExceeded, &[kind::CREATED], &["max_price"]);
    assert_eq!(events.len(), 2, "nothing happens after a refused admission");
}

#[test]
fn no_provider_offering_the_intent_in_its_currency_is_309() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let eur = Money::from_minor(10, Currency::parse("EUR").expect("eur")).expect("money");
    let (state, events) = negotiate(&fixture, Ask { max: eur, ..Ask::default() }, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::NoProviders, &[kind::DISCOVERY], &[]);
}

#[test]
fn policy_blocking_every_provider_is_102() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let policy = StaticPolicy {
        blocked_providers: vec!["nimbus-weather".into(), "stratus-weather".into()],
        ..StaticPolicy::default()
    };
    let (state, events) = negotiate(&fixture, Ask { policy, ..Ask::default() }, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::ProviderNotAllowed, &[kind::DISCOVERY], &["blocked_providers"]);
}

#[test]
fn a_rail_the_policy_does_not_allow_is_103() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let policy = StaticPolicy { allowed_rails: vec!["card".into()], ..StaticPolicy::default() };
    let (state, events) = negotiate(&fixture, Ask { policy, ..Ask::default() }, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::RailNotAllowed, &[kind::CREATED], &["allowed_rails"]);
}

#[test]
fn unreachable_providers_are_310() {
    let fixture = fixture(solo(50, "eager", 10, (0, 0, 100), 20));
    let ask = Ask { intent_type: "test.item", max: usd(100), ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::ProviderUnavailable, &[kind::UNREACHABLE], &[]);
}

#[test]
fn providers_slower_than_the_latency_limit_time_out_311() {
    let fixture = fixture(solo(50, "eager", 10, (0, 0, 0), 400));
    let ask = Ask { intent_type: "test.item", max: usd(100), latency_ms_max: Some(100), ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::ProviderTimeout, &[kind::TIMEOUT], &[]);
    let timeout = events.iter().find(|e| e.kind.as_str() == kind::TIMEOUT).expect("timeout");
    assert_eq!(timeout.body["waited_ms"], 100);
    assert_eq!(timeout.at_ms, events[timeout.seq as usize - 1].at_ms + 100, "simulated time passes");
}

#[test]
fn refusing_providers_are_301() {
    let fixture = fixture(solo(50, "eager", 10, (0, 100, 0), 20));
    let ask = Ask { intent_type: "test.item", max: usd(100), ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::ProviderRefused, &[kind::REJECT], &[]);
}

#[test]
fn asks_stuck_above_the_maximum_are_a_deadlock_303() {
    // Floor 90 cents, buyer's maximum 50: the provider reaches its floor and stops moving.
    let fixture = fixture(solo(90, "eager", 5, (0, 0, 0), 20));
    let policy = StaticPolicy { rounds_max: 10, ..StaticPolicy::default() };
    let ask = Ask { intent_type: "test.item", max: usd(50), policy, ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::NegotiationDeadlock, &[kind::ASK], &["max_price"]);
    assert!(state.round < 10, "a deadlock is called before the round limit (round {})", state.round);
}

#[test]
fn the_round_limit_while_still_conceding_is_106() {
    let fixture = fixture(solo(10, "eager", 5, (0, 0, 0), 20));
    let policy = StaticPolicy { rounds_max: 3, ..StaticPolicy::default() };
    let ask = Ask { intent_type: "test.item", max: usd(50), policy, ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::RoundLimitExceeded, &[kind::COUNTER, kind::ASK], &["rounds_max"]);
    assert_eq!(state.round, 3);
}

#[test]
fn a_deadline_passing_in_simulated_time_is_107() {
    // Each round takes 300 simulated ms; the deadline allows one and a half rounds.
    let fixture = fixture(solo(10, "eager", 5, (0, 0, 0), 300));
    let ask = Ask { intent_type: "test.item", max: usd(50), deadline_ms: Some(START_MS + 450), ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::DeadlineExceeded, &[kind::CREATED, kind::ASK], &[]);
    assert_eq!(state.round, 2);
}

#[test]
fn insufficient_funds_fail_at_settlement_404_and_move_nothing() {
    let fixture = fixture_with_balance(solo(50, "eager", 10, (0, 0, 0), 20), Some(30));
    let ask = Ask { intent_type: "test.item", max: usd(100), strategy: "baseline", ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    check_failure(&state, &events, FailureCode::InsufficientFunds, &[kind::COMMITTED, kind::SETTLEMENT_FAILED], &[]);
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 30);
    assert_eq!(balance(&fixture, "provider:solo:USD"), 0);
}

#[test]
fn declining_to_pay_aborts_312_before_any_money_moves() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let mut approver = Always::new(false);
    let (state, events) = negotiate(&fixture, Ask { auto_approve: false, ..Ask::default() }, &mut approver);
    assert_eq!(approver.asked, 1);
    check_failure(&state, &events, FailureCode::AbortedByBuyer, &[kind::SELECTED, kind::APPROVAL], &[]);
    assert!(events.iter().any(|e| e.kind.as_str() == kind::ABORT), "providers are told with an ABORT");
    assert!(state.agreement.is_none());
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000);
}

#[test]
fn a_cancel_while_asked_to_pay_records_an_abort_not_a_declined_payment() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let mut approver = Always { cancel_while_asked: true, ..Always::new(true) };
    let (state, events) = negotiate(&fixture, Ask { auto_approve: false, ..Ask::default() }, &mut approver);
    assert_eq!(approver.asked, 1);
    check_failure(&state, &events, FailureCode::AbortedByBuyer, &[kind::ABORT_REQUESTED], &[]);
    assert!(events.iter().all(|e| e.kind.as_str() != kind::APPROVAL), "no approval is recorded");
    assert!(events.iter().any(|e| e.kind.as_str() == kind::ABORT), "providers are told with an ABORT");
    let request = events.iter().find(|e| e.kind.as_str() == kind::ABORT_REQUESTED).expect("abort request");
    assert_eq!(request.body["reason"], "cancelled by the client");
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000);
}

#[test]
fn a_cancel_before_discovery_ends_the_session_at_once() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let mut approver = Always { cancel_at: Some(1), ..Always::new(true) };
    let (state, events) = negotiate(&fixture, Ask::default(), &mut approver);
    check_failure(&state, &events, FailureCode::AbortedByBuyer, &[kind::ABORT_REQUESTED], &[]);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, [kind::CREATED, kind::ABORT_REQUESTED, kind::FAILED], "no provider was contacted");
}

#[test]
fn a_cancel_mid_negotiation_tells_the_providers() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let ask = Ask { intent_type: "compute.inference", max: usd(30), seed: 3, ..Ask::default() };
    let mut approver = Always { cancel_at: Some(3), ..Always::new(true) };
    let (state, events) = negotiate(&fixture, ask, &mut approver);
    check_failure(&state, &events, FailureCode::AbortedByBuyer, &[kind::ABORT_REQUESTED], &[]);
    assert!(events.iter().any(|e| e.kind.as_str() == kind::ABORT));
    assert!(state.agreement.is_none());
}

#[test]
fn an_interactive_approval_is_asked_once_and_recorded() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let mut approver = Always::new(true);
    let (state, events) = negotiate(&fixture, Ask { auto_approve: false, ..Ask::default() }, &mut approver);
    assert_eq!((approver.asked, state.phase), (1, Phase::Completed));
    let approval = events.iter().find(|e| e.kind.as_str() == kind::APPROVAL).expect("approval");
    assert_eq!(approval.body["by"], "client");
}

#[test]
fn aborting_a_session_mid_negotiation_is_312_and_a_settling_one_cannot_be_aborted() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let ask = Ask { intent_type: "compute.inference", max: usd(30), seed: 3, ..Ask::default() };
    let session_id = fixture.runtime.create_session(request(ask), &mut Quiet).expect("create");
    let state = fixture.runtime.abort_session(&session_id, "changed my mind", &mut Quiet).expect("abort");
    let events = events(&fixture, &state);
    check_failure(&state, &events, FailureCode::AbortedByBuyer, &[kind::ABORT_REQUESTED], &[]);
    assert!(replay_session(fixture.runtime.constellation(), &session_id).expect("replay").is_consistent());
    let again = fixture.runtime.abort_session(&session_id, "again", &mut Quiet).expect_err("ended");
    assert_eq!(again.code(), "SESSION_INPUT_UNEXPECTED");
}

#[test]
fn the_same_seed_and_clock_give_byte_identical_transcripts_and_another_seed_differs() {
    let export = |seed: u64| {
        let fixture = fixture(Directory::builtin().expect("directory"));
        let ask = Ask { intent_type: "compute.inference", max: usd(30), seed, ..Ask::default() };
        let (state, _) = negotiate(&fixture, ask, &mut Always::new(true));
        let mut out = Vec::new();
        pactum_runtime::export_stream(
            fixture.runtime.constellation(),
            &format!("session:{}", state.session_id().expect("id")),
            &mut out,
        )
        .expect("export");
        out
    };
    let first = export(5);
    assert_eq!(first, export(5));
    assert_ne!(first, export(6));
}

#[test]
fn state_from_the_checkpoint_equals_the_full_fold() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let (state, _) = negotiate(&fixture, Ask::default(), &mut Always::new(true));
    let session_id = state.session_id().expect("id");
    assert_eq!(fixture.runtime.get_session_state(session_id).expect("state"), state);
    fixture.runtime.checkpoint(session_id).expect("checkpoint");
    assert_eq!(fixture.runtime.get_session_state(session_id).expect("state"), state);
}

/// A crash after the rail moved money and before the transcript recorded it: recovery by
/// another process records each step once, with the same transfer, and finishes the session.
/// The ledger settles in one transaction (prepare, then commit), so stopping after either
/// phase leaves both applied and neither recorded.
fn crash_after_rail_step_then_recover(phase: pactum_runtime::RailPhase) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.pactum");
    let make = |owner: &str| runtime_at(&path, owner);
    let crashing = make("first-process").with_injected_stop_after(phase);
    let error = crashing.negotiate(request(Ask::default()), &mut Always::new(true), &mut Quiet).expect_err("stops");
    assert!(matches!(error, pactum_runtime::RuntimeError::InjectedStop(_)), "{error}");
    let db = crashing.constellation().clone();
    let rows = db.session_streams("session:").expect("sessions");
    let session_id = rows[0].stream_id["session:".len()..].to_owned();
    let payment_key = |step: &str| format!("pay-{session_id}:{step}");
    let applied = db.transfer_by_key(&payment_key(phase.as_str())).expect("read").expect("the rail applied the step");
    let prepared = db.transfer_by_key(&payment_key("prepare")).expect("read").expect("prepare applied");
    let committed = db.transfer_by_key(&payment_key("commit")).expect("read").expect("commit applied with it");
    let before = pactum_runtime::session::shell::read_session_state(&db, &session_id).expect("state");
    // The money moved in the same transaction that recorded the commitment leading to it.
    assert_eq!(before.phase, Phase::Committed, "the decisions before the rail step are durable");
    let check = check_constellation(&db).expect("check");
    assert!(check.is_sound(), "an applied but unrecorded step is not a problem while resumable: {:#?}", check.problems);
    assert_eq!(check.sessions_resumable, vec![session_id.clone()]);
    drop(crashing);

    let recovering = make("second-process");
    let recovered = recovering.recover(&mut Quiet).expect("recover");
    assert_eq!(recovered.len(), 1);
    let state = recovered.into_iter().next().expect("one").outcome.expect("resumed");
    assert_eq!(state.phase, Phase::Completed);
    let evidence = match phase {
        pactum_runtime::RailPhase::Prepare => state.prepared.as_ref(),
        _ => state.rail_committed.as_ref(),
    };
    assert_eq!(evidence.expect("recorded").evidence.reference, format!("transfer:{}", applied.transfer_id));
    let reference = |record: Option<&_>| {
        record.map(|r: &pactum_runtime::session::model::EvidenceRecord| r.evidence.reference.clone())
    };
    assert_eq!(reference(state.prepared.as_ref()), Some(format!("transfer:{}", prepared.transfer_id)));
    assert_eq!(reference(state.rail_committed.as_ref()), Some(format!("transfer:{}", committed.transfer_id)));
    let price = i64::try_from(state.agreement.as_ref().expect("agreement").price.amount_minor).expect("small");
    let provider = &state.agreement.as_ref().expect("agreement").provider;
    let balance = |account: &str| {
        db.accounts().expect("accounts").into_iter().find(|a| a.account_id == account).map_or(0, |a| a.balance_minor)
    };
    assert_eq!(balance("wallet:buyer:USD"), 100_000 - price, "paid once");
    assert_eq!(balance(&format!("provider:{provider}:USD")), price, "paid once");
    assert!(replay_session(&db, &session_id).expect("replay").is_consistent());
    assert!(check_constellation(&db).expect("check").is_sound());
    assert!(recovering.recover(&mut Quiet).expect("nothing left").is_empty());
}

#[test]
fn a_prepare_applied_before_a_crash_is_recorded_once_on_recovery() {
    crash_after_rail_step_then_recover(pactum_runtime::RailPhase::Prepare);
}

#[test]
fn a_commit_applied_before_a_crash_is_recorded_once_on_recovery() {
    crash_after_rail_step_then_recover(pactum_runtime::RailPhase::Commit);
}

#[test]
fn a_session_driven_by_a_live_process_is_left_alone() {
    #[derive(Debug)]
    struct EveryoneAlive;
    impl OwnerLiveness for EveryoneAlive {
        fn is_alive(&self, _owner: &str) -> bool {
            true
        }
    }
    let fixture = fixture(Directory::builtin().expect("directory"));
    let session_id = fixture.runtime.create_session(request(Ask::default()), &mut Quiet).expect("create");
    let other = AgentRuntime::new(
        fixture.runtime.constellation().clone(),
        Arc::new(ManualClock::new(START_MS)),
        Directory::builtin().expect("directory"),
        Arc::new(CountingEntropy::default()),
        Arc::new(EveryoneAlive),
        "other-process".into(),
    );
    assert!(other.recover(&mut Quiet).expect("recover").is_empty());
    let busy = other.resume_session(&session_id, &mut Always::new(true), &mut Quiet).expect_err("busy");
    assert_eq!(busy.code(), "SESSION_BUSY");
    let state = fixture.runtime.run(&session_id, &mut Always::new(true), &mut Quiet).expect("the owner drives on");
    assert_eq!(state.phase, Phase::Completed);
}

#[test]
fn a_preferred_provider_wins_a_tie_on_price_and_the_rule_is_recorded() {
    let fixture = fixture(Directory::parse(TIE_DIRECTORY, "tie directory").expect("directory"));
    let ask = Ask { intent_type: "test.item", max: usd(100), strategy: "baseline", ..Ask::default() };
    let mut new_session = request(ask);
    new_session.preferences = Some(pactum_runtime::session::model::PreferencesRecord {
        source: "memory:buyer/preferences@2".into(),
        values: serde_json::json!({"preferred_providers": ["b-slow"]}),
        arguments: serde_json::json!({"max_price": "1.00", "currency": "USD", "strategy": "baseline"}),
        preferred_providers: vec!["b-slow".into()],
    });
    let state = fixture.runtime.negotiate(new_session, &mut Always::new(false), &mut Quiet).expect("negotiate");
    assert_eq!(state.agreement.as_ref().expect("agreement").provider, "b-slow");
    let events = events(&fixture, &state);
    let selection = events.iter().find(|e| e.kind.as_str() == kind::SELECTED).expect("selection");
    assert_eq!(selection.body["rule"], pactum_runtime::session::model::SELECTION_RULE_PREFERRED);
    let report = replay_session(fixture.runtime.constellation(), state.session_id().expect("id")).expect("replay");
    assert!(report.is_consistent(), "{:#?}", report.problems);
}

#[test]
fn recovery_closes_an_ended_session_its_stopped_process_left_open_and_logs_it_once() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let (state, _) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    let session_id = state.session_id().expect("id").to_owned();
    let db = fixture.runtime.constellation();
    // As if the process had stopped between the session's last event and its release.
    assert!(db.claim_session(&session_id, "pid:1:1", None, START_MS).expect("claim"));
    let recovered = fixture.runtime.recover(&mut Quiet).expect("recover");
    assert_eq!(recovered.len(), 1);
    assert!(recovered[0].outcome.is_ok(), "{:?}", recovered[0].outcome);
    assert_eq!(db.session_owner(&session_id).expect("owner"), None);
    let (_, entries) = db.block_value("buyer", "outcomes").expect("log").expect("entries");
    let entries = entries.as_array().expect("array");
    assert_eq!(entries.iter().filter(|e| e["session"] == session_id.as_str()).count(), 1, "{entries:?}");
}

/// The write that ends a session appends its outcome to the buyer's log (creating the buyer's
/// memory blocks on its first session), one version per session.
#[test]
fn the_write_that_ends_a_session_logs_its_outcome_once() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let db = fixture.runtime.constellation();
    let mut sessions = Vec::new();
    for seed in 1..=3 {
        let (state, _) = negotiate(&fixture, Ask { seed, ..Ask::default() }, &mut Always::new(false));
        let session_id = state.session_id().expect("id").to_owned();
        assert_eq!(db.session_owner(&session_id).expect("owner"), None, "released");
        sessions.push(session_id);
        let block = db.block("buyer", "outcomes", &pactum_memory::blocks::Author::System).expect("log");
        // The first version is the empty log the defaults start with.
        assert_eq!(block.version_count, 1 + sessions.len() as u64);
    }
    let (_, entries) = db.block_value("buyer", "outcomes").expect("log").expect("entries");
    let logged: Vec<&str> = entries.as_array().expect("array").iter().filter_map(|e| e["session"].as_str()).collect();
    assert_eq!(logged, sessions.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A log that cannot take the entry (here a working block under the log's label) is left as it
/// was, and the session still ends: its events, its payment and its release are all durable.
#[test]
fn an_outcomes_log_that_cannot_take_the_entry_does_not_keep_the_session_from_ending() {
    use pactum_memory::blocks::{Author, BlockKind, NewBlock, Permission};
    let fixture = fixture(Directory::builtin().expect("directory"));
    let db = fixture.runtime.constellation();
    fixture.runtime.ensure_buyer(pactum_runtime::Currency::parse("USD").expect("USD")).expect("buyer");
    let impostor = NewBlock {
        owner: "buyer".into(),
        label: "outcomes".into(),
        description: "not a log".into(),
        kind: BlockKind::Working,
        template: None,
        char_limit: None,
        permission: Permission::ReadWrite,
        pinned: false,
        initial: Some("kept as it is".into()),
    };
    let before = db.create_block(impostor, &Author::System, START_MS).expect("block");
    let (state, _) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    let session_id = state.session_id().expect("id");
    assert_eq!(db.session_owner(session_id).expect("owner"), None, "released");
    let block = db.block("buyer", "outcomes", &Author::System).expect("block");
    assert_eq!((block.version_count, block.updated_at_ms), (1, before.updated_at_ms));
    let (_, content) = db.block_value("buyer", "outcomes").expect("read").expect("content");
    assert_eq!(content, "kept as it is");
    let check = pactum_runtime::check_constellation(db).expect("check");
    assert!(check.is_sound(), "{:?}", check.problems);
}

fn rules_policy(rules: &str) -> pactum_runtime::policy::Policy {
    let text = format!("format = \"pactum-policy/2\"\nname = \"test\"\nversion = 1\n{rules}");
    pactum_runtime::policy::Policy::parse_toml(&text, "test.toml").expect("policy")
}

#[test]
fn a_settlement_rule_refusing_the_selection_is_108_with_the_rule_as_evidence() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let rules = rules_policy(
        "[[rules]]\nname = \"not_nimbus\"\nstage = \"settlement\"\nwhen = \"selection.provider != 'nimbus-weather' && selection.provider != 'stratus-weather'\"\ndescription = \"these providers are not paid\"\n",
    );
    let (state, events) = negotiate(&fixture, Ask { rules: Some(rules), ..Ask::default() }, &mut Always::new(true));
    check_failure(
        &state,
        &events,
        FailureCode::SettlementPolicyViolation,
        &[kind::SELECTED, kind::POLICY_EVALUATED],
        &["not_nimbus"],
    );
    let evaluated: Vec<&Event> = events.iter().filter(|e| e.kind.as_str() == kind::POLICY_EVALUATED).collect();
    assert_eq!(evaluated.len(), 1, "only the settlement stage has rules");
}

#[test]
fn an_admission_rule_excluding_every_provider_is_102_and_rules_allowing_change_no_decision() {
    let first = fixture(Directory::builtin().expect("directory"));
    let deny = rules_policy(
        "[[rules]]\nname = \"nobody\"\nstage = \"admission\"\nwhen = \"provider.id == 'acme'\"\ndescription = \"only acme\"\n",
    );
    let (state, events) = negotiate(&first, Ask { rules: Some(deny), ..Ask::default() }, &mut Always::new(true));
    check_failure(
        &state,
        &events,
        FailureCode::ProviderNotAllowed,
        &[kind::DISCOVERY, kind::POLICY_EVALUATED],
        &["nobody"],
    );

    let plain = fixture(Directory::builtin().expect("directory"));
    let (without, _) = negotiate(&plain, Ask::default(), &mut Always::new(true));
    let allowing = fixture(Directory::builtin().expect("directory"));
    let allow = rules_policy(
        "[[rules]]\nname = \"anyone\"\nstage = \"round\"\nwhen = \"offer.latency_ms >= 0\"\ndescription = \"any offer\"\n",
    );
    let (with, events) = negotiate(&allowing, Ask { rules: Some(allow), ..Ask::default() }, &mut Always::new(true));
    assert!(events.iter().any(|e| e.kind.as_str() == kind::POLICY_EVALUATED));
    assert_eq!(
        with.agreement.as_ref().map(|a| (&a.provider, &a.price)),
        without.agreement.as_ref().map(|a| (&a.provider, &a.price))
    );
}

const DAY_MS: u64 = 86_400_000;

fn daily_budget(max_minor: u64) -> Constraint {
    Constraint::Budget(Budget {
        max_amount_minor: max_minor,
        currency: "USD".into(),
        window: Some(Window { length_ms: DAY_MS, anchor_ms: START_MS - START_MS % DAY_MS }),
    })
}

fn set_buyer_budget(fixture: &Fixture, constraint: &Constraint) {
    fixture.runtime.ensure_buyer(Currency::parse("USD").expect("usd")).expect("buyer");
    pactum_runtime::budget::set(fixture.runtime.constellation(), "buyer", "daily", constraint, START_MS).expect("set");
}

fn checked(events: &[Event]) -> Option<ConstraintsCheckedBody> {
    let event = events.iter().find(|e| e.kind.as_str() == kind::CONSTRAINTS_CHECKED)?;
    Some(serde_json::from_value(event.body.clone()).expect("constraints.checked body"))
}

#[test]
fn a_buyer_budget_refuses_the_payment_that_would_exceed_it_109_and_holds_nothing() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    set_buyer_budget(&fixture, &daily_budget(12));
    let mut paid = 0;
    let mut refused = None;
    for seed in 1..=4 {
        let (state, events) = negotiate(&fixture, Ask { seed, ..Ask::default() }, &mut Always::new(true));
        let record = checked(&events).expect("the buyer's budget is checked before every payment");
        assert_eq!(record.checks.len(), 1);
        assert_eq!(record.checks[0].scope, "agent:buyer");
        match state.phase {
            Phase::Completed => {
                assert!(record.checks[0].allowed);
                paid += state.agreement.as_ref().expect("agreement").price.amount_minor;
            }
            _ => {
                let failure = state.failure.as_ref().expect("failed");
                assert_eq!(failure.failure_code(), Some(FailureCode::ConstraintViolation), "{failure:#?}");
                assert!(failure.evidence_refs.contains(&"constraint:agent:buyer:daily".to_owned()));
                assert!(state.prepared.is_none(), "nothing was held");
                assert!(!events.iter().any(|e| e.kind.as_str() == kind::PREPARED));
                refused.get_or_insert(seed);
            }
        }
    }
    assert!(paid <= 12, "paid {paid} against a budget of 12");
    assert!(paid > 0 && refused.is_some(), "some payments fit the budget and one did not");
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000 - i64::try_from(paid).expect("small"));
    let statuses =
        pactum_runtime::budget::status(fixture.runtime.constellation(), "buyer", START_MS + 60_000).expect("status");
    assert_eq!(statuses[0].tally, pactum_runtime::constraints::Tally::Budget { spent_minor: paid });
}

#[test]
fn the_budget_window_resets_the_next_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Constellation::open(dir.path().join("c.pactum")).expect("open"));
    let clock = Arc::new(ManualClock::new(START_MS));
    let runtime = AgentRuntime::new(
        db.clone(),
        clock.clone(),
        Directory::builtin().expect("directory"),
        Arc::new(CountingEntropy::default()),
        Arc::new(NobodyAlive),
        "test-process".into(),
    );
    runtime.ensure_buyer(Currency::parse("USD").expect("usd")).expect("buyer");
    pactum_runtime::budget::set(&db, "buyer", "daily", &daily_budget(6), START_MS).expect("set");
    let run = |seed| runtime.negotiate(request(Ask { seed, ..Ask::default() }), &mut Always::new(true), &mut Quiet);
    assert_eq!(run(1).expect("first").phase, Phase::Completed);
    let second = run(2).expect("second");
    assert_eq!(second.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::ConstraintViolation));
    clock.advance(DAY_MS);
    assert_eq!(run(3).expect("the next day").phase, Phase::Completed, "a new window");
}

#[test]
fn session_constraints_are_recorded_and_judged_with_the_buyers() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let expired = NamedConstraint {
        name: "1".into(),
        constraint: Constraint::Temporal(Temporal {
            valid_from_ms: None,
            valid_until_ms: Some(START_MS - 1),
            duration_ms: None,
        }),
    };
    let ask = Ask { constraints: vec![expired], ..Ask::default() };
    let (state, events) = negotiate(&fixture, ask, &mut Always::new(true));
    let failure = state.failure.as_ref().expect("failed");
    assert_eq!(failure.failure_code(), Some(FailureCode::ConstraintViolation));
    assert!(failure.evidence_refs.contains(&"constraint:session:1".to_owned()), "{failure:#?}");
    assert_eq!(checked(&events).expect("checked").checks[0].scope, "session");

    set_buyer_budget(&fixture, &daily_budget(1_000));
    let generous = NamedConstraint { name: "1".into(), constraint: daily_budget(500) };
    let (state, events) =
        negotiate(&fixture, Ask { seed: 2, constraints: vec![generous], ..Ask::default() }, &mut Always::new(true));
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    let record = checked(&events).expect("checked");
    let scopes: Vec<&str> = record.checks.iter().map(|c| c.scope.as_str()).collect();
    assert_eq!(scopes, ["session", "agent:buyer"], "the session's own first, then the buyer's");
}

#[test]
fn a_session_constraint_counting_from_first_use_is_refused_at_the_start() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let open = NamedConstraint {
        name: "1".into(),
        constraint: Constraint::Temporal(Temporal { valid_from_ms: None, valid_until_ms: None, duration_ms: Some(10) }),
    };
    let error = fixture
        .runtime
        .negotiate(request(Ask { constraints: vec![open], ..Ask::default() }), &mut Always::new(true), &mut Quiet)
        .expect_err("refused");
    assert_eq!(error.code(), "SESSION_INPUT_INVALID", "{error}");
}

/// A verdict changed after the fact (a refusal turned into an allowance) does not fold: the
/// fold judges every recorded constraint again from its tally.
#[test]
fn a_forged_constraint_verdict_does_not_fold() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    set_buyer_budget(&fixture, &daily_budget(1));
    let (state, events) = negotiate(&fixture, Ask::default(), &mut Always::new(true));
    assert_eq!(state.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::ConstraintViolation));
    let mut forged = events.clone();
    let at = forged.iter().position(|e| e.kind.as_str() == kind::CONSTRAINTS_CHECKED).expect("checked");
    forged[at].body["checks"][0]["allowed"] = serde_json::json!(true);
    forged[at].body["checks"][0].as_object_mut().expect("object").remove("violation");
    let error = SessionState::fold(&forged[..=at]).expect_err("a forged verdict");
    assert_eq!(error.seq, forged[at].seq, "{error}");
    let mut raised = events;
    raised[at].body["checks"][0]["constraint"]["max_amount_minor"] = serde_json::json!(1_000);
    assert!(SessionState::fold(&raised[..=at]).is_err(), "the constraint no longer matches its hash and verdict");
}

/// Payments from several threads at once never exceed a budget together: each check runs in
/// the write transaction that holds the money.
#[test]
fn concurrent_payments_never_exceed_the_buyers_budget() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    set_buyer_budget(&fixture, &daily_budget(15));
    let outcomes: Vec<SessionState> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=6)
            .map(|seed| {
                let runtime = &fixture.runtime;
                scope.spawn(move || {
                    runtime
                        .negotiate(request(Ask { seed, ..Ask::default() }), &mut Always::new(true), &mut Quiet)
                        .expect("negotiate")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let paid: u64 = outcomes
        .iter()
        .filter(|s| s.phase == Phase::Completed)
        .map(|s| s.agreement.as_ref().expect("agreement").price.amount_minor)
        .sum();
    let refused = outcomes
        .iter()
        .filter(|s| s.failure.as_ref().and_then(|f| f.failure_code()) == Some(FailureCode::ConstraintViolation))
        .count();
    assert!(paid <= 15, "paid {paid} against 15");
    assert!(refused >= 1);
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000 - i64::try_from(paid).expect("small"));
    let check = check_constellation(fixture.runtime.constellation()).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
}

/// Injects one fault into every rail step of the phases listed.
#[derive(Debug)]
struct RailFaults(pactum_runtime::faults::RailFault, &'static [pactum_runtime::RailPhase]);

impl pactum_runtime::faults::Faults for RailFaults {
    fn rail_step(
        &self,
        _payment_id: &str,
        phase: pactum_runtime::RailPhase,
    ) -> Option<pactum_runtime::faults::RailFault> {
        self.1.contains(&phase).then_some(self.0)
    }
}

fn fixture_with_faults(faults: RailFaults) -> Fixture {
    let Fixture { _dir, runtime } = fixture(Directory::builtin().expect("directory"));
    Fixture { _dir, runtime: runtime.with_faults(Arc::new(faults)) }
}

#[test]
fn a_rail_step_delivered_twice_moves_the_money_once() {
    use pactum_runtime::RailPhase::{Abort, Commit, Prepare};
    let fixture =
        fixture_with_faults(RailFaults(pactum_runtime::faults::RailFault::Duplicate, &[Prepare, Commit, Abort]));
    let (state, _) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    assert_eq!(state.phase, Phase::Completed);
    let agreement = state.agreement.as_ref().expect("agreement");
    let price = i64::try_from(agreement.price.amount_minor).expect("small");
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000 - price, "paid once");
    assert_eq!(balance(&fixture, &format!("provider:{}:USD", agreement.provider)), price, "paid once");
}

#[test]
fn a_refused_commit_releases_the_hold() {
    use pactum_runtime::RailPhase::Commit;
    let fixture = fixture_with_faults(RailFaults(pactum_runtime::faults::RailFault::Refuse, &[Commit]));
    let (state, events) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    check_failure(&state, &events, FailureCode::SettlementCommitFailed, &[], &[]);
    assert!(state.rail_aborted.is_some(), "the hold was released");
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000, "nothing paid");
}

#[test]
fn a_refused_prepare_fails_the_session_and_moves_nothing() {
    use pactum_runtime::RailPhase::Prepare;
    let fixture = fixture_with_faults(RailFaults(pactum_runtime::faults::RailFault::Refuse, &[Prepare]));
    let (state, events) = negotiate(&fixture, Ask::default(), &mut Always::new(false));
    check_failure(&state, &events, FailureCode::SettlementPrepareFailed, &[], &[]);
    assert_eq!(balance(&fixture, "wallet:buyer:USD"), 100_000, "nothing held");
}

/// A crash right after the write that settled on the ledger; the process that recovers has a
/// rail that refuses every step: the steps already done are answered with their evidence (a
/// rail's steps are idempotent), so the session completes with the money moved once.
#[test]
fn a_settlement_resumed_after_a_crash_is_not_refused_for_steps_already_done() {
    use pactum_runtime::RailPhase::{Abort, Commit, Prepare};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.pactum");
    let make = |owner: &str| runtime_at(&path, owner);
    let crashing = make("first-process").with_injected_stop_after(Commit);
    crashing.negotiate(request(Ask::default()), &mut Always::new(true), &mut Quiet).expect_err("stops");
    drop(crashing);
    let refusing = make("second-process")
        .with_faults(Arc::new(RailFaults(pactum_runtime::faults::RailFault::Refuse, &[Prepare, Commit, Abort])));
    let recovered = refusing.recover(&mut Quiet).expect("recover");
    let state = recovered.into_iter().next().expect("one").outcome.expect("resumed");
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    let db = refusing.constellation();
    assert!(check_constellation(db).expect("check").is_sound());
    let price = i64::try_from(state.agreement.as_ref().expect("agreement").price.amount_minor).expect("small");
    let wallet = db.accounts().expect("accounts").into_iter().find(|a| a.account_id == "wallet:buyer:USD");
    assert_eq!(wallet.map(|a| a.balance_minor), Some(100_000 - price), "paid once");
}

/// A crash after the write that held the money (and recorded the hold as a spend) and before
/// the one recording its evidence: the resumed session judges the buyer's budget again, and
/// must not count its own hold, or a payment already made would be refused (PACT-109) with the
/// provider paid.
#[test]
fn a_crash_between_the_hold_and_its_evidence_does_not_count_the_hold_against_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.pactum");
    let make = |owner: &str| runtime_at(&path, owner);
    let budget_minor = 8;
    let crashing = make("first-process").with_injected_stop_after(pactum_runtime::RailPhase::Commit);
    crashing.ensure_buyer(Currency::parse("USD").expect("usd")).expect("buyer");
    pactum_runtime::budget::set(crashing.constellation(), "buyer", "budget", &daily_budget(budget_minor), START_MS)
        .expect("set");
    crashing.negotiate(request(Ask::default()), &mut Always::new(true), &mut Quiet).expect_err("stops");
    drop(crashing);

    let recovering = make("second-process");
    let recovered = recovering.recover(&mut Quiet).expect("recover");
    let state = recovered.into_iter().next().expect("one").outcome.expect("resumed");
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    let price = state.agreement.as_ref().expect("agreement").price.amount_minor;
    assert!(2 * price > budget_minor, "the hold counted twice would exceed the budget");
    let db = recovering.constellation();
    let check = check_constellation(db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    let statuses = pactum_runtime::budget::status(db, "buyer", START_MS + 60_000).expect("status");
    assert_eq!(statuses[0].tally, pactum_runtime::constraints::Tally::Budget { spent_minor: price });
}

/// An automatic negotiation with local providers settles and ends in one write: the payment,
/// the receipt, the completion and both checkpoints (at commitment and at completion) commit
/// together, and the session, which never outlives that write, is never held by an owner.
#[test]
fn an_automatic_negotiation_settles_and_ends_in_one_write_with_both_checkpoints() {
    let fixture = fixture(Directory::builtin().expect("directory"));
    let db = fixture.runtime.constellation();
    // The first negotiation also creates the buyer, funds its wallet and starts its memory.
    negotiate(&fixture, Ask { seed: 1, ..Ask::default() }, &mut Always::new(false));
    let writes = db.writes_attempted();
    let (state, events) = negotiate(&fixture, Ask { seed: 2, ..Ask::default() }, &mut Always::new(false));
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    assert_eq!(db.writes_attempted() - writes, 1, "one write from the first event to the receipt");
    let session_id = state.session_id().expect("id");
    assert_eq!(db.session_owner(session_id).expect("owner"), None);
    let seq_of = |kind: &str| events.iter().find(|e| e.kind.as_str() == kind).map(|e| e.seq).expect(kind);
    let connection = rusqlite::Connection::open(db.path()).expect("open");
    let mut statement =
        connection.prepare("SELECT seq FROM transcript_checkpoints WHERE stream_id = ?1 ORDER BY seq").expect("query");
    let checkpoints: Vec<u64> = statement
        .query_map([format!("session:{session_id}")], |row| row.get::<_, i64>(0).map(|seq| seq as u64))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("seqs");
    assert_eq!(checkpoints, vec![seq_of("session.committed"), seq_of("session.completed")]);
    // Interactive approval still makes what led to the question durable before asking.
    let writes = db.writes_attempted();
    let (state, _) =
        negotiate(&fixture, Ask { seed: 3, auto_approve: false, ..Ask::default() }, &mut Always::new(true));
    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
    assert_eq!(db.writes_attempted() - writes, 2);
}
