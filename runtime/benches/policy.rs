//! Policy engine benchmarks: evaluating CEL rules, per rule.
//!
//! `cargo bench -p pactum-runtime --bench policy [-- FILTER...]`
//!
//! A plain `main` (no criterion): each case is run once to warm up, then measured [`RUNS`] times;
//! the table shows the median time per rule evaluation with the min and max of the measured
//! runs. A FILTER is a substring of a case name. Arguments starting with `-` are ignored.
//! Target: at most [`TARGET_PER_RULE_US`] µs per rule. Policies are compiled once, outside the
//! measured loop, as the session core does (the compiled programs live in the `Policy`).
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::time::Instant;

use pactum_runtime::policy::{Context, OfferFacts, Policy, evaluate};
use pactum_runtime::{Currency, Intent, IntentType, Money, SettlementMode, Urgency};

/// Measured runs per case (after one warm-up run).
const RUNS: usize = 7;
/// Evaluations per run.
const EVALUATIONS: usize = 20_000;
const TARGET_PER_RULE_US: f64 = 20.0;

fn policy(rules: &[(&str, &str)]) -> Policy {
    let mut text = String::from("format = \"pactum-policy/2\"\nname = \"bench\"\nversion = 1\n");
    for (name, when) in rules {
        text.push_str(&format!(
            "[[rules]]\nname = \"{name}\"\nstage = \"round\"\nwhen = '''{when}'''\ndescription = \"{name}\"\n"
        ));
    }
    Policy::parse_toml(&text, "bench.toml").unwrap()
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let usd = Currency::parse("USD").unwrap();
    let intent = Intent::new(
        IntentType::new("compute.inference").unwrap(),
        "",
        Money::from_minor(30, usd).unwrap(),
        Some(800),
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .unwrap();
    let offer = OfferFacts { provider: "tensor-forge", price: Money::from_minor(24, usd).unwrap(), latency_ms: 275 };
    let context = Context::round(&intent, "Tensor Forge", "ledger", 3, 6, offer);
    let cases: Vec<(&str, Policy)> = vec![
        ("one comparison", policy(&[("fast", "offer.latency_ms <= 500")])),
        (
            "one compound rule",
            policy(&[(
                "sane",
                "offer.price.amount_minor * 100 <= intent.max_price.amount_minor * 90 \
                 && offer.price.currency == intent.max_price.currency && round <= rounds_max",
            )]),
        ),
        (
            "one list comprehension",
            policy(&[("known", "['acme', 'globex', 'tensor-forge'].exists(p, p == offer.provider)")]),
        ),
        (
            "eight rules",
            policy(&[
                ("r1", "offer.latency_ms <= 500"),
                ("r2", "offer.price.amount_minor <= 30"),
                ("r3", "offer.provider != 'cirrus-compute'"),
                ("r4", "round <= rounds_max"),
                ("r5", "intent.urgency in ['low', 'normal', 'high']"),
                ("r6", "provider.name.startsWith('Tensor')"),
                ("r7", "rail == 'ledger'"),
                ("r8", "intent.latency_ms_max == null || offer.latency_ms <= intent.latency_ms_max"),
            ]),
        ),
    ];
    println!("{:<26} {:>6} {:>14} {:>14} {:>14}", "case", "rules", "µs/rule", "min", "max");
    for (name, policy) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let rules = policy.rules().len();
        let mut per_rule_us = Vec::new();
        for run in 0..=RUNS {
            let start = Instant::now();
            for _ in 0..EVALUATIONS {
                let evaluation = evaluate(black_box(&policy), black_box(&context));
                assert!(evaluation.allowed(), "{evaluation:?}");
                black_box(evaluation);
            }
            let elapsed = start.elapsed().as_secs_f64();
            if run > 0 {
                per_rule_us.push(elapsed * 1e6 / (EVALUATIONS * rules) as f64);
            }
        }
        per_rule_us.sort_by(f64::total_cmp);
        let median = per_rule_us[per_rule_us.len() / 2];
        let verdict = if median <= TARGET_PER_RULE_US { "" } else { "  ABOVE TARGET" };
        println!(
            "{name:<26} {rules:>6} {median:>14.2} {:>14.2} {:>14.2}{verdict}",
            per_rule_us[0],
            per_rule_us[per_rule_us.len() - 1]
        );
    }
    println!(
        "target: at most {TARGET_PER_RULE_US} µs per rule (the whole evaluation, context included, divided by the rules)"
    );
}
