//! The constellation's spends answer a constraint's questions exactly as the in-memory history
//! does: for any holds (some released), any start and any window, `budget::status` (aggregate
//! queries on the covering index) gives the same tally as `Constraint::tally` over the entries.

use std::sync::Arc;

use pactum_memory::{AccountKind, AgentRecord, AgentRole, Constellation, SecretSeed, TransferRequest};
use pactum_runtime::constraints::{Budget, Constraint, Entry, Ledger, Temporal, Usage, Window};
use proptest::prelude::*;

fn transfer(db: &Constellation, key: &str, from: (&str, AccountKind), to: (&str, AccountKind), minor: u64, at_ms: u64) {
    let request = TransferRequest {
        idempotency_key: key.into(),
        from_account: from.0.into(),
        to_account: to.0.into(),
        amount_minor: minor,
        currency: "USD".into(),
        memo: key.into(),
        at_ms,
    };
    db.transfer_ensuring(&[from, to], &request).expect("store").expect("transfer");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn stored_spends_tally_like_the_history_in_memory(
        holds in proptest::collection::vec((0u64..10_000, 1u64..500, any::<bool>()), 0..40),
        since in 0u64..6_000,
        as_of in 0u64..12_000,
        length in 1u64..4_000,
        anchor in 0u64..5_000,
    ) {
        let dir = tempfile::tempdir().expect("temp");
        let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
        db.ensure_agent(AgentRecord {
            agent_id: "buyer".into(),
            display_name: "Buyer".into(),
            role: AgentRole::Buyer,
            key_id: "agent:buyer#1".into(),
            public_key: [1; 32],
            secret_key: SecretSeed::new([1; 32]),
            created_at_ms: 0,
        })
        .expect("agent");
        let wallet = ("wallet:buyer:USD", AccountKind::Wallet);
        transfer(&db, "fund", ("external:USD", AccountKind::External), wallet, 1_000_000, 0);
        let mut entries = Vec::new();
        for (index, (at, amount, released)) in holds.iter().enumerate() {
            let escrow = format!("escrow:pay-{index}");
            let escrow = (escrow.as_str(), AccountKind::Escrow);
            transfer(&db, &format!("pay-{index}:prepare"), wallet, escrow, *amount, *at);
            if *released {
                transfer(&db, &format!("pay-{index}:abort"), escrow, wallet, *amount, at + 1);
            } else if *at >= since && *at <= as_of {
                entries.push(Entry { at_ms: *at, amount_minor: *amount, currency: Some("USD".into()) });
            }
        }
        entries.sort_by_key(|e| e.at_ms);
        let window = Some(Window { length_ms: length, anchor_ms: anchor });
        let constraint = Constraint::Combined { all: vec![
            Constraint::Budget(Budget { max_amount_minor: 1_000, currency: "USD".into(), window }),
            Constraint::Usage(Usage { max_uses: 5, window }),
            Constraint::Budget(Budget { max_amount_minor: 5_000, currency: "USD".into(), window: None }),
            Constraint::Usage(Usage { max_uses: 10, window: None }),
            Constraint::Temporal(Temporal { valid_from_ms: None, valid_until_ms: None, duration_ms: Some(3_000) }),
        ]};
        pactum_runtime::budget::set(&db, "buyer", "limits", &constraint, since).expect("set");
        let status = pactum_runtime::budget::status(&db, "buyer", as_of).expect("status");
        let expected = constraint.tally(&Ledger { entries }, as_of);
        prop_assert_eq!(&status[0].tally, &expected);
    }
}
