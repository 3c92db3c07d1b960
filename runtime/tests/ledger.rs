//! The ledger rail: money is held, paid, released or refunded exactly once, balances never go
//! negative, and every currency sums to zero, whatever the order of calls and retries.

use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::{
    Currency, FailureCode, LedgerRail, Money, PaymentRequest, Rail, RailError, RailPhase, fund_wallet, wallet_account,
};
use proptest::prelude::*;

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
}

fn setup(funding_minor: u64) -> (tempfile::TempDir, Arc<Constellation>, LedgerRail) {
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
    fund_wallet(&db, "buyer", usd(funding_minor), "funding:buyer:initial", 1).expect("fund");
    let rail = LedgerRail::new(Arc::clone(&db));
    (dir, db, rail)
}

fn payment(id: &str, minor: u64) -> PaymentRequest {
    PaymentRequest { payment_id: id.into(), payer: "buyer".into(), payee: "nimbus-weather".into(), amount: usd(minor) }
}

fn balances(db: &Constellation) -> Vec<(String, i64)> {
    db.accounts().expect("accounts").into_iter().map(|a| (a.account_id, a.balance_minor)).collect()
}

#[test]
fn prepare_then_commit_pays_the_provider_once() {
    let (_dir, db, rail) = setup(1_000);
    let pay = payment("ses-1", 5);
    let prepared = rail.prepare(&pay, 2).expect("prepare");
    assert!(prepared.applied_now);
    assert_eq!(prepared.phase, RailPhase::Prepare);
    // A retry (after a crash, say) returns the same evidence and moves nothing.
    let again = rail.prepare(&pay, 3).expect("retry");
    assert!(!again.applied_now);
    assert_eq!(again.reference, prepared.reference);
    rail.commit(&pay, 4).expect("commit");
    rail.commit(&pay, 5).expect("commit retry");
    assert_eq!(
        balances(&db),
        [
            ("escrow:ses-1".to_owned(), 0),
            ("external:USD".to_owned(), -1_000),
            ("provider:nimbus-weather:USD".to_owned(), 5),
            ("wallet:buyer:USD".to_owned(), 995),
        ]
    );
    assert!(db.check_ledger().expect("check").is_sound());
}

#[test]
fn abort_releases_the_hold_and_refund_reverses_a_payment() {
    let (_dir, db, rail) = setup(1_000);
    let held = payment("ses-a", 300);
    rail.prepare(&held, 2).expect("prepare");
    assert_eq!(
        db.accounts().expect("accounts").iter().find(|a| a.account_id == "wallet:buyer:USD").map(|a| a.balance_minor),
        Some(700)
    );
    rail.abort(&held, 3).expect("abort");
    assert!(matches!(rail.commit(&held, 4), Err(RailError::Refused(_))), "no commit after abort");
    let paid = payment("ses-b", 200);
    rail.prepare(&paid, 5).expect("prepare");
    rail.commit(&paid, 6).expect("commit");
    assert!(matches!(rail.abort(&paid, 7), Err(RailError::Refused(_))), "no abort after commit");
    rail.refund(&paid, 8).expect("refund");
    rail.refund(&paid, 9).expect("refund retry");
    let wallet = db.accounts().expect("accounts").into_iter().find(|a| a.account_id == wallet_account("buyer", "USD"));
    assert_eq!(wallet.map(|a| a.balance_minor), Some(1_000));
    assert!(matches!(rail.refund(&payment("never", 1), 10), Err(RailError::Refused(_))));
    assert!(db.check_ledger().expect("check").is_sound());
}

#[test]
fn insufficient_funds_moves_nothing() {
    let (_dir, db, rail) = setup(100);
    let before = balances(&db);
    let error = rail.prepare(&payment("big", 101), 2).expect_err("too much");
    assert!(matches!(error, RailError::InsufficientFunds(_)), "{error}");
    assert_eq!(error.failure_code(RailPhase::Prepare), FailureCode::InsufficientFunds);
    // Only the (empty) escrow account appeared.
    let after: Vec<_> = balances(&db).into_iter().filter(|(id, _)| !id.starts_with("escrow:")).collect();
    assert_eq!(after, before);
}

#[test]
fn the_database_itself_refuses_a_negative_wallet() {
    let (dir, _db, _rail) = setup(100);
    let raw = rusqlite::Connection::open(dir.path().join("c.db")).expect("sqlite");
    let error = raw
        .execute("UPDATE ledger_accounts SET balance_minor = -1 WHERE account_id = 'wallet:buyer:USD'", [])
        .expect_err("CHECK constraint");
    assert!(error.to_string().contains("CHECK"), "{error}");
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Prepare,
    Commit,
    Abort,
    Refund,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of steps and retries over a few payments keeps the ledger sound, and the
    /// money of the buyer, the escrows and the provider always adds up to what was funded.
    #[test]
    fn any_order_of_calls_and_retries_keeps_the_ledger_sound(
        steps in prop::collection::vec((0_usize..4, prop_oneof![Just(Op::Prepare), Just(Op::Commit), Just(Op::Abort), Just(Op::Refund)]), 1..40),
        amounts in prop::collection::vec(1_u64..400, 4),
    ) {
        let (_dir, db, rail) = setup(1_000);
        for (at, (index, op)) in steps.into_iter().enumerate() {
            let pay = payment(&format!("p{index}"), amounts[index]);
            let at_ms = at as u64 + 10;
            let _ = match op {
                Op::Prepare => rail.prepare(&pay, at_ms),
                Op::Commit => rail.commit(&pay, at_ms),
                Op::Abort => rail.abort(&pay, at_ms),
                Op::Refund => rail.refund(&pay, at_ms),
            };
            let check = db.check_ledger().expect("check");
            prop_assert!(check.is_sound(), "{check:?}");
            let held: i64 = db.accounts().expect("accounts").iter()
                .filter(|a| a.kind != pactum_memory::AccountKind::External)
                .map(|a| a.balance_minor)
                .sum();
            prop_assert_eq!(held, 1_000);
        }
    }
}
