//! Coalitions: several buyers pooling one purchase. The lead negotiates; every member's part is
//! held from its own wallet in the write that records the commitment, all or none; the session
//! replays, checks and tells its story with the members; a crash during settlement leaves every
//! part applied once or none.

use std::sync::Arc;

use pactum_memory::{Constellation, TransferRequest};
use pactum_runtime::session::model::{Phase, SessionState, kind};
use pactum_runtime::session::receipt::verify_receipt_in_session;
use pactum_runtime::session::shell::{Approver, NewSession, OfferToApprove, Quiet};
use pactum_runtime::{Currency, FailureCode, RailPhase, check_constellation};

mod common;

use common::{START_MS, STARTING_MINOR, balance, events_of, runtime_at};

struct Yes;

impl Approver for Yes {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (true, "client")
    }
}

fn request(seed: u64, members: &[(&str, u64)]) -> NewSession {
    common::request_for(seed, 30, true, members)
}

#[track_caller]
fn assert_sound(db: &Arc<Constellation>, state: &SessionState) {
    common::assert_sound(db, &[state]);
}

#[test]
fn a_coalition_pays_the_agreed_price_in_parts_by_weight() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let state = runtime.negotiate(request(4, &[("alice", 2), ("bob", 3)]), &mut Yes, &mut Quiet).expect("negotiate");
    assert_eq!(state.phase, Phase::Completed);
    let db = runtime.constellation().clone();
    assert_sound(&db, &state);
    let agreement = state.agreement.clone().expect("agreement");
    let price = agreement.price.amount_minor;
    let parts = state.coalition_parts().expect("parts");
    assert_eq!(parts.iter().map(|(_, part)| part).sum::<u64>(), price);
    // Weights buyer 1, alice 2, bob 3.
    let expected = pactum_runtime::coalition::split_price(price, &[("alice", 2), ("bob", 3), ("buyer", 1)]);
    assert_eq!(parts, expected);
    for (member, part) in &parts {
        assert_eq!(
            balance(&db, &format!("wallet:{member}:USD")),
            STARTING_MINOR - i64::try_from(*part).expect("small"),
            "{member} paid its part once"
        );
    }
    assert_eq!(balance(&db, &format!("provider:{}:USD", agreement.provider)), i64::try_from(price).expect("small"));
    assert_eq!(balance(&db, &format!("escrow:{}", agreement.payment_id)), 0);

    // Each member other than the lead signed its share, right after the start.
    let events = events_of(&db, &state);
    let joined: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter(|e| e.kind.as_str() == kind::COALITION_JOINED)
        .map(|e| (e.body["member"].as_str().unwrap_or_default(), e.signer.as_ref().map(|k| k.as_str())))
        .collect();
    assert_eq!(joined, vec![("alice", Some("agent:alice#1")), ("bob", Some("agent:bob#1"))]);
    assert_eq!(events[1].kind.as_str(), kind::COALITION_JOINED);

    // The receipt names the lead as payer and lists every part; it verifies.
    verify_receipt_in_session(&state).expect("receipt verifies");
    let receipt = state.receipt.as_ref().expect("receipt");
    assert_eq!(receipt["payer"], "buyer");
    assert_eq!(receipt["coalition"]["members"].as_array().map(Vec::len), Some(3));

    // The story tells who pooled and who paid what.
    let story = pactum_runtime::session::story::tell(&events).expect("story");
    assert!(story.narrative.iter().any(|s| s.contains("led a coalition")), "{:#?}", story.narrative);
    assert!(story.narrative.iter().any(|s| s.starts_with("The coalition's parts:")), "{:#?}", story.narrative);
}

#[test]
fn coalition_sessions_are_byte_identical_for_the_same_seed_and_clock_and_differ_for_another_seed() {
    let export = |seed: u64| {
        let dir = tempfile::tempdir().expect("dir");
        let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
        let state =
            runtime.negotiate(request(seed, &[("alice", 1), ("carol", 5)]), &mut Yes, &mut Quiet).expect("negotiate");
        let mut out = Vec::new();
        pactum_runtime::export_stream(
            runtime.constellation(),
            &format!("session:{}", state.session_id().expect("id")),
            &mut out,
        )
        .expect("export");
        out
    };
    let first = export(11);
    assert_eq!(first, export(11));
    assert_ne!(first, export(12));
}

#[test]
fn a_member_without_funds_fails_the_whole_session_404_naming_it_and_nothing_is_held() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let db = runtime.constellation().clone();
    // bob exists and has spent all but one minor unit.
    runtime.ensure_funded_buyer("bob", "bob", Currency::parse("USD").expect("usd")).expect("bob");
    let spent = TransferRequest {
        idempotency_key: "test:bob-spends".into(),
        from_account: "wallet:bob:USD".into(),
        to_account: "external:USD".into(),
        amount_minor: 99_999,
        currency: "USD".into(),
        memo: "spent elsewhere".into(),
        at_ms: START_MS,
    };
    db.transfer(&spent).expect("store").expect("transfer");

    let state = runtime.negotiate(request(4, &[("alice", 1), ("bob", 1)]), &mut Yes, &mut Quiet).expect("negotiate");
    assert_eq!(state.phase, Phase::Failed);
    assert_sound(&db, &state);
    let failure = state.failure.as_ref().expect("failure");
    assert_eq!(failure.failure_code(), Some(FailureCode::InsufficientFunds));
    assert!(failure.evidence_refs.contains(&"coalition:bob".to_owned()), "{failure:#?}");
    assert!(failure.detail.contains("bob"), "{}", failure.detail);
    assert!(state.prepared.is_none());
    // Nothing held from anyone.
    assert_eq!(balance(&db, "wallet:buyer:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "wallet:alice:USD"), STARTING_MINOR);
    assert_eq!(balance(&db, "wallet:bob:USD"), 1);
    let payment_id = state.agreement.as_ref().expect("agreement").payment_id.clone();
    assert_eq!(balance(&db, &format!("escrow:{payment_id}")), 0);
    for member in ["alice", "bob", "buyer"] {
        assert!(db.transfer_by_key(&format!("{payment_id}:{member}:prepare")).expect("read").is_none());
    }

    // The passport holds the failure against bob, not the lead.
    let events = events_of(&db, &state);
    let (rows, _) = pactum_runtime::passport::session_outcomes(&events, "head").expect("outcomes");
    let outcome = |agent: &str| rows.iter().find(|r| r.agent_id == agent).map(|r| r.outcome.clone());
    assert_eq!(outcome("bob").as_deref(), Some("failure"));
    assert_eq!(outcome("buyer").as_deref(), Some("neutral"));
}

#[test]
fn a_crash_during_coalition_settlement_leaves_every_part_paid_once_after_recovery() {
    for phase in [RailPhase::Prepare, RailPhase::Commit] {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.pactum");
        let crashing = runtime_at(&path, "first-process").with_injected_stop_after(phase);
        let error = crashing
            .negotiate(request(4, &[("alice", 2), ("bob", 3)]), &mut Yes, &mut Quiet)
            .expect_err("stops after the rail step");
        assert!(matches!(error, pactum_runtime::RuntimeError::InjectedStop(_)), "{error}");
        let db = crashing.constellation().clone();
        let session_id = db.session_streams("session:").expect("sessions")[0].stream_id["session:".len()..].to_owned();
        // Every part was held and paid in the one write, none of it recorded yet.
        for member in ["alice", "bob", "buyer"] {
            let key = format!("pay-{session_id}:{member}:prepare");
            assert!(db.transfer_by_key(&key).expect("read").is_some(), "{key}");
        }
        let check = check_constellation(&db).expect("check");
        assert!(check.is_sound(), "{:#?}", check.problems);
        assert_eq!(check.sessions_resumable, vec![session_id.clone()]);
        drop(crashing);

        let recovering = runtime_at(&path, "second-process");
        let recovered = recovering.recover(&mut Quiet).expect("recover");
        let state = recovered.into_iter().next().expect("one").outcome.expect("resumed");
        assert_eq!(state.phase, Phase::Completed);
        assert_sound(&db, &state);
        let price = state.agreement.as_ref().expect("agreement").price.amount_minor;
        let mut paid = 0;
        for (member, part) in state.coalition_parts().expect("parts") {
            let spent = STARTING_MINOR - balance(&db, &format!("wallet:{member}:USD"));
            assert_eq!(spent, i64::try_from(part).expect("small"), "{member} paid once");
            paid += spent;
        }
        assert_eq!(paid, i64::try_from(price).expect("small"));
        assert!(recovering.recover(&mut Quiet).expect("nothing left").is_empty());
    }
}

#[test]
fn a_coalition_naming_a_member_twice_or_a_provider_is_refused_before_anything_is_recorded() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    assert!(runtime.negotiate(request(4, &[("alice", 1), ("alice", 2)]), &mut Yes, &mut Quiet).is_err());
    // The directory's providers are agents of another role.
    runtime.negotiate(request(4, &[]), &mut Yes, &mut Quiet).expect("a plain session creates the providers");
    assert!(runtime.negotiate(request(5, &[("tensor-forge", 1)]), &mut Yes, &mut Quiet).is_err());
    assert_eq!(runtime.constellation().session_streams("session:").expect("sessions").len(), 1);
}

#[test]
fn a_member_with_spending_constraints_of_its_own_is_refused_before_anything_is_recorded() {
    use pactum_runtime::constraints::{Budget, Constraint};
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    // A first coalition creates alice; then she gets a budget of her own.
    runtime.negotiate(request(4, &[("alice", 1)]), &mut Yes, &mut Quiet).expect("a coalition with alice");
    let budget = Constraint::Budget(Budget { max_amount_minor: 1, currency: "USD".into(), window: None });
    pactum_runtime::budget::set(runtime.constellation(), "alice", "tiny", &budget, 0).expect("a budget on alice");
    let error = runtime.negotiate(request(5, &[("alice", 1)]), &mut Yes, &mut Quiet).expect_err("refused");
    assert!(error.to_string().contains("alice has spending constraints"), "{error}");
    assert_eq!(runtime.constellation().session_streams("session:").expect("sessions").len(), 1);
}
