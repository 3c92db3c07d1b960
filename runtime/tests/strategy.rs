//! Buyer strategies and the simulated provider: the price logic, deterministic and bounded.

use pactum_runtime::{
    Banded, Baseline, Currency, Directory, Money, ProviderAnswer, Strategy, Urgent, provider_ask, simulate_provider,
    strategy_named,
};
use proptest::prelude::*;

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
}

#[test]
fn bid_schedules_are_as_documented() {
    let max = usd(100);
    let bids = |strategy: &dyn Strategy| (1..=6).map(|r| strategy.bid(max, r, 6).amount_minor()).collect::<Vec<_>>();
    assert_eq!(bids(&Baseline), [100; 6]);
    assert_eq!(bids(&Banded), [60, 68, 76, 84, 92, 100]);
    assert_eq!(bids(&Urgent), [90, 100, 100, 100, 100, 100]);
    assert!(Banded.accepts(usd(68), max, 2, 6));
    assert!(!Banded.accepts(usd(69), max, 2, 6));
    let euros = Money::from_minor(1, Currency::parse("EUR").expect("EUR")).expect("amount");
    assert!(!Baseline.accepts(euros, max, 1, 6), "never another currency");
    assert_eq!(strategy_named("banded").map(|s| s.name()), Some("banded"));
    assert!(strategy_named("greedy").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bids_never_exceed_the_maximum_and_never_go_down(max in 1_u64..10_000_000, rounds in 1_u32..32) {
        for strategy in [&Baseline as &dyn Strategy, &Banded, &Urgent] {
            let mut previous = 0;
            for round in 1..=rounds {
                let bid = strategy.bid(usd(max), round, rounds).amount_minor();
                prop_assert!(bid <= max, "{} bid {bid} above {max}", strategy.name());
                prop_assert!(bid >= previous, "{} went down", strategy.name());
                previous = bid;
            }
            prop_assert_eq!(strategy.bid(usd(max), rounds, rounds).amount_minor(), max, "{} ends at the maximum", strategy.name());
        }
    }
}

#[test]
fn provider_asks_concede_toward_the_floor_and_never_below() {
    let directory = Directory::builtin().expect("directory");
    for provider in directory.providers() {
        let floor = provider.floor_price().amount_minor();
        let mut previous = u64::MAX;
        for round in 1..=40 {
            let ask = provider_ask(provider, round).amount_minor();
            assert!(ask >= floor && ask <= previous, "{} round {round}: {ask}", provider.id);
            previous = ask;
        }
        assert_eq!(provider_ask(provider, 1), provider.reference_price);
        assert_eq!(previous, floor, "{} reaches its floor eventually", provider.id);
        assert_eq!(provider_ask(provider, u32::MAX).amount_minor(), floor, "no overflow for absurd rounds");
    }
    // Stubborn providers move only every other round.
    let stratus = &directory.providers()[1];
    assert_eq!(provider_ask(stratus, 2), provider_ask(stratus, 1));
}

#[test]
fn the_simulation_is_deterministic_and_follows_the_failure_rates() {
    let directory = Directory::builtin().expect("directory");
    let stratus = &directory.providers()[1]; // 5 % timeouts, 5 % refusals, 3 % unreachable
    let answer = |seed: u64, session: &str, round: u32| simulate_provider(stratus, seed, session, round, None);
    assert_eq!(answer(7, "ses-1", 1), answer(7, "ses-1", 1));
    let differs = (0..50).any(|seed| answer(seed, "ses-1", 1) != answer(seed + 1, "ses-1", 1));
    assert!(differs, "seeds matter");
    // Over many fixed draws the observed rates match the directory's (these draws are fixed, so
    // the counts are too: the bounds only say what the numbers mean).
    let (mut timeouts, mut refusals, mut unreachable) = (0, 0, 0);
    let draws = 20_000;
    for index in 0..draws {
        match answer(index, "rates", 1) {
            ProviderAnswer::Timeout => timeouts += 1,
            ProviderAnswer::Refuse { .. } => refusals += 1,
            ProviderAnswer::Unreachable => unreachable += 1,
            ProviderAnswer::Ask { latency_ms, price } => {
                assert!((120..=200).contains(&latency_ms), "{latency_ms}");
                assert_eq!(price, stratus.reference_price);
            }
        }
    }
    // Within half a percentage point of the configured rates.
    let near = |count: u64, percent: u64| count.abs_diff(draws * percent / 100) <= draws / 200;
    assert!(near(timeouts, 5) && near(refusals, 5) && near(unreachable, 3), "{timeouts} {refusals} {unreachable}");
    // A latency limit below the provider's base latency makes every answer a timeout.
    assert_eq!(simulate_provider(stratus, 1, "s", 1, Some(100)), ProviderAnswer::Timeout);
}
