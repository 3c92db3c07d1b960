//! Delegation: buyer → broker → provider. The broker's purchase (a child session) and the
//! buyer's payment to the broker (the parent session) are paid in one write, or neither is.

use pactum_runtime::session::model::{Phase, SessionState};
use pactum_runtime::session::shell::{AgentRuntime, Approver, Broker, Delegated, NewSession, OfferToApprove, Quiet};
use pactum_runtime::{FailureCode, RailPhase, check_constellation};

mod common;

use common::{STARTING_MINOR, balance, runtime_at};

struct Answer(bool);

impl Approver for Answer {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (self.0, "client")
    }
}

fn request(seed: u64, auto_approve: bool) -> NewSession {
    common::request_for(seed, 40, auto_approve, &[])
}

fn broker() -> Broker {
    Broker { agent_id: "relay".into(), name: "Relay Brokerage".into(), margin_percent: 10 }
}

fn minor(price: &pactum_runtime::session::model::PriceBody) -> i64 {
    i64::try_from(price.amount_minor).expect("small")
}

fn delegate(runtime: &AgentRuntime, seed: u64, approve: bool) -> (SessionState, SessionState) {
    let Delegated { child, parent } =
        runtime.negotiate_delegated(request(seed, approve), &broker(), &mut Answer(approve), &mut Quiet).expect("ok");
    (parent.expect("the broker reached an agreement"), child)
}

#[test]
fn both_hops_are_paid_and_the_sessions_name_each_other() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let (parent, child) = delegate(&runtime, 4, true);
    let db = runtime.constellation().clone();
    assert_eq!((parent.phase, child.phase), (Phase::Completed, Phase::Completed), "{:?}", parent.failure);
    common::assert_sound(&db, &[&parent, &child]);
    let delegation = parent.delegation().expect("delegated_to");
    assert_eq!(delegation.child_session, child.session_id().expect("id"));
    assert_eq!(child.parent_session(), parent.session_id());
    assert_eq!(child.buyer_id(), Some("relay"));
    let cost = child.agreement.as_ref().expect("agreement");
    let sale = parent.agreement.as_ref().expect("agreement");
    assert_eq!(sale.provider, "relay");
    assert_eq!(delegation.cost, cost.price);
    // Cost plus 10 %, rounded up.
    assert_eq!(minor(&sale.price), minor(&cost.price) + (minor(&cost.price) * 10 + 99) / 100);
    assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR - minor(&sale.price));
    assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR - minor(&cost.price));
    assert_eq!(balance(&db, "provider:relay:USD"), minor(&sale.price));
    assert_eq!(balance(&db, &format!("provider:{}:USD", cost.provider)), minor(&cost.price));
}

#[test]
fn delegated_sessions_are_byte_identical_for_the_same_seed_and_clock_and_differ_for_another() {
    let export = |seed: u64| {
        let dir = tempfile::tempdir().expect("dir");
        let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
        let (parent, child) = delegate(&runtime, seed, true);
        let mut out = Vec::new();
        for state in [&parent, &child] {
            let stream = format!("session:{}", state.session_id().expect("id"));
            pactum_runtime::export_stream(runtime.constellation(), &stream, &mut out).expect("export");
        }
        out
    };
    let first = export(21);
    assert_eq!(first, export(21));
    assert_ne!(first, export(22));
}

#[test]
fn a_broker_that_cannot_pay_fails_both_sessions_501_and_nothing_moves() {
    let dir = tempfile::tempdir().expect("dir");
    // Every wallet starts with 0.10 USD: the broker's cost is more than that. The buyer gets
    // 10.00 USD more, so only the broker cannot pay.
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p").with_starting_balance(10);
    let usd = pactum_runtime::Currency::parse("USD").expect("usd");
    runtime.ensure_funded_buyer("buyer", "Buyer", usd).expect("buyer");
    let more = pactum_runtime::Money::from_minor(1_000, usd).expect("money");
    pactum_runtime::fund_wallet(runtime.constellation(), "buyer", more, "test:buyer-more", common::START_MS)
        .expect("fund");
    let (parent, child) = delegate(&runtime, 4, true);
    let db = runtime.constellation().clone();
    assert_eq!((parent.phase, child.phase), (Phase::Failed, Phase::Failed));
    for state in [&parent, &child] {
        let failure = state.failure.as_ref().expect("failure");
        assert_eq!(failure.failure_code(), Some(FailureCode::DependencyFailed), "{failure:#?}");
        assert!(state.prepared.is_none());
    }
    common::assert_sound(&db, &[&parent, &child]);
    assert_eq!(balance(&db, "wallet:buyer:USD"), 1_010);
    assert_eq!(balance(&db, "wallet:relay:USD"), 10);
    assert_eq!(balance(&db, "provider:relay:USD"), 0);
}

#[test]
fn a_buyer_that_cannot_pay_the_broker_leaves_the_brokers_purchase_unpaid_too() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let db = runtime.constellation().clone();
    // The buyer has spent all but one minor unit; the broker has its whole starting balance.
    runtime.ensure_funded_buyer("buyer", "Buyer", pactum_runtime::Currency::parse("USD").expect("usd")).expect("buyer");
    let spent = pactum_memory::TransferRequest {
        idempotency_key: "test:buyer-spends".into(),
        from_account: "wallet:buyer:USD".into(),
        to_account: "external:USD".into(),
        amount_minor: u64::try_from(STARTING_MINOR - 1).expect("positive"),
        currency: "USD".into(),
        memo: "spent elsewhere".into(),
        at_ms: common::START_MS,
    };
    db.transfer(&spent).expect("store").expect("transfer");
    let (parent, child) = delegate(&runtime, 4, true);
    assert_eq!((parent.phase, child.phase), (Phase::Failed, Phase::Failed));
    assert_eq!(parent.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::InsufficientFunds));
    assert_eq!(child.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::DependencyFailed));
    common::assert_sound(&db, &[&parent, &child]);
    // Neither hop moved money.
    assert_eq!(balance(&db, "wallet:buyer:USD"), 1);
    assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "provider:relay:USD"), 0);
    let cost = child.agreement.as_ref().expect("the broker agreed");
    assert_eq!(balance(&db, &format!("provider:{}:USD", cost.provider)), 0);
}

#[test]
fn a_buyer_declining_the_broker_fails_the_brokers_purchase_too_and_nothing_moves() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let (parent, child) = delegate(&runtime, 4, false);
    let db = runtime.constellation().clone();
    assert_eq!(parent.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::AbortedByBuyer));
    assert_eq!(child.failure.as_ref().and_then(|f| f.failure_code()), Some(FailureCode::DependencyFailed));
    common::assert_sound(&db, &[&parent, &child]);
    assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR);
}

#[test]
fn a_crash_in_the_settling_write_leaves_both_hops_paid_once_after_recovery() {
    for phase in [RailPhase::Prepare, RailPhase::Commit] {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.pactum");
        let crashing = runtime_at(&path, "first-process").with_injected_stop_after(phase);
        let error = crashing
            .negotiate_delegated(request(4, true), &broker(), &mut Answer(true), &mut Quiet)
            .expect_err("stops after the settling write");
        assert!(matches!(error, pactum_runtime::RuntimeError::InjectedStop(_)), "{error}");
        let db = crashing.constellation().clone();
        let check = check_constellation(&db).expect("check");
        assert!(check.is_sound(), "{:#?}", check.problems);
        assert_eq!(check.sessions_resumable.len(), 2, "both sessions wait to record their payments");
        drop(crashing);

        let recovering = runtime_at(&path, "second-process");
        let recovered = recovering.recover(&mut Quiet).expect("recover");
        assert_eq!(recovered.len(), 2);
        let states: Vec<SessionState> = recovered.into_iter().map(|r| r.outcome.expect("resumed")).collect();
        assert!(states.iter().all(|s| s.phase == Phase::Completed), "{states:#?}");
        let refs: Vec<&SessionState> = states.iter().collect();
        common::assert_sound(&db, &refs);
        let parent = states.iter().find(|s| s.delegation().is_some()).expect("parent");
        let child = states.iter().find(|s| s.parent_session().is_some()).expect("child");
        let (sale, cost) = (&parent.agreement.as_ref().expect("a").price, &child.agreement.as_ref().expect("a").price);
        assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR - minor(sale), "paid once");
        assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR - minor(cost), "paid once");
        assert!(recovering.recover(&mut Quiet).expect("nothing left").is_empty());
    }
}

/// Stops the process while the buyer is being asked to pay the broker, as a crash would.
struct Crash;

impl Approver for Crash {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        panic!("the process stops while the buyer is asked")
    }
}

/// A delegated negotiation in a process that stops while the buyer is asked to pay (after the
/// broker's purchase is committed); returns the file's store once that process is gone.
fn stop_while_the_buyer_is_asked(path: &std::path::Path) -> std::sync::Arc<pactum_memory::Constellation> {
    let crashing = runtime_at(path, "first-process");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crashing.negotiate_delegated(request(4, false), &broker(), &mut Crash, &mut Quiet)
    }));
    assert!(stopped.is_err(), "the process stopped");
    let db = crashing.constellation().clone();
    drop(crashing);
    db
}

#[test]
fn a_crash_before_the_settling_write_fails_the_brokers_purchase_once_the_buyer_is_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.pactum");
    let db = stop_while_the_buyer_is_asked(&path);
    // The broker's purchase is committed and waits; the buyer's session waits for its answer.
    let check = check_constellation(&db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert_eq!(check.sessions_resumable.len(), 2);

    // Recovery declines the buyer's payment (nobody is there to answer) and, once that session
    // has ended unpaid, fails the broker's purchase: nothing is paid on either hop.
    for owner in ["second-process", "third-process"] {
        runtime_at(&path, owner).recover(&mut Quiet).expect("recover");
    }
    let check = check_constellation(&db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert!(check.sessions_resumable.is_empty(), "{:?}", check.sessions_resumable);
    let states: Vec<SessionState> = db
        .session_streams("session:")
        .expect("rows")
        .iter()
        .map(|row| {
            pactum_runtime::session::shell::read_session_state(&db, &row.stream_id["session:".len()..]).expect("state")
        })
        .collect();
    let code = |linked: fn(&SessionState) -> bool| {
        states.iter().find(|s| linked(s)).and_then(|s| s.failure.as_ref()).and_then(|f| f.failure_code())
    };
    assert_eq!(code(|s| s.delegation().is_some()), Some(FailureCode::AbortedByBuyer));
    assert_eq!(code(|s| s.parent_session().is_some()), Some(FailureCode::DependencyFailed));
    assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR);
}

/// Recovery resumes sessions in id order, so a broker's purchase may be resumed before the
/// buyer's session it waits for. One recovery ends both: the purchase is driven again once its
/// parent has ended (here unpaid, the buyer being gone), not left for the next recovery.
#[test]
fn one_recovery_ends_a_brokers_purchase_resumed_before_its_parent() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.pactum");
    let db = stop_while_the_buyer_is_asked(&path);
    let rows = db.session_streams("session:").expect("rows");
    let ids: Vec<&str> = rows.iter().map(|row| &row.stream_id["session:".len()..]).collect();
    let child = pactum_runtime::session::shell::read_session_state(&db, ids[0]).expect("state");
    assert!(child.parent_session().is_some(), "the broker's purchase comes first in id order");

    let recovered = runtime_at(&path, "second-process").recover(&mut Quiet).expect("recover");
    let states: Vec<SessionState> = recovered.into_iter().map(|r| r.outcome.expect("resumed")).collect();
    assert!(states.iter().all(|s| s.phase.is_terminal()), "{states:#?}");
    let check = check_constellation(&db).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert!(check.sessions_resumable.is_empty(), "{:?}", check.sessions_resumable);
    assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "wallet:relay:USD"), STARTING_MINOR);
}
