//! Passport benchmarks: the score of an agent with 100,000 recorded outcomes, computed from
//! memory and from the constellation (read + score, what `pactum passport show` and the gate do).
//!
//! `cargo bench -p pactum-runtime --bench passport`
//!
//! Outcomes: 100,000 for one agent over a year, across 200 counterparties, 85% successes, the
//! rest failures, policy violations, lost disputes and neutral outcomes. Each case runs once to
//! warm up, then [`RUNS`] times; the table gives p50 and the slowest run. Target: ≤ 50 ms.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use pactum_memory::{Constellation, PassportEventRow, PassportSource};
use pactum_runtime::passport::score::{DAY_MS, Outcome, PassportEvent, score};
use pactum_runtime::passport::{PassportRequirement, check_passport, passport_score};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 100_000;
const ROWS_PER_TRANSCRIPT: u64 = 100;
const RUNS: usize = 20;
const TARGET: Duration = Duration::from_millis(50);
const NOW: u64 = 1_800_000_000_000;

fn outcome(i: u64) -> Outcome {
    match i % 20 {
        0 => Outcome::Failure,
        1 => Outcome::Neutral,
        2 if i % 40 == 2 => Outcome::PolicyViolation,
        3 if i % 100 == 3 => Outcome::DisputeLost,
        _ => Outcome::Success,
    }
}

fn at(i: u64) -> u64 {
    NOW - (i * 7_919 % 365) * DAY_MS - i % DAY_MS
}

fn measure(name: &str, mut work: impl FnMut() -> u32) {
    work();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(work());
            start.elapsed()
        })
        .collect();
    times.sort();
    let p50 = times[RUNS / 2];
    let max = times[RUNS - 1];
    let verdict = if p50 <= TARGET { "meets" } else { "MISSES" };
    println!(
        "{name:<44} p50 {:>8.2} ms  max {:>8.2} ms  ({verdict} ≤ {} ms)",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        TARGET.as_millis()
    );
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));

    let events: Vec<PassportEvent> = (0..EVENTS)
        .map(|i| PassportEvent {
            counterparty: format!("agent-{}", i % 200),
            outcome: outcome(i),
            code: (outcome(i) != Outcome::Success).then(|| "PACT-311".to_owned()),
            fault_domain: (outcome(i) != Outcome::Success).then(|| "provider".to_owned()),
            at_ms: at(i),
            transcript_hash: format!("{:064x}", i / ROWS_PER_TRANSCRIPT),
        })
        .collect();
    println!("passport of one agent with {EVENTS} outcomes ({} counterparties)", 200);
    if wanted("memory") {
        measure("score, outcomes in memory", || score("p", &events, NOW).score_milli);
    }

    let dir = tempfile::tempdir().unwrap();
    let db = Constellation::open(dir.path().join("bench.db")).unwrap();
    for chunk in events.chunks(ROWS_PER_TRANSCRIPT as usize) {
        let hash = chunk[0].transcript_hash.clone();
        let rows: Vec<PassportEventRow> = chunk
            .iter()
            .map(|e| PassportEventRow {
                agent_id: "p".into(),
                counterparty: e.counterparty.clone(),
                outcome: e.outcome.as_str().into(),
                code: e.code.clone(),
                fault_domain: e.fault_domain.clone(),
                at_ms: e.at_ms,
                amount_minor: None,
                currency: None,
                transcript_hash: hash.clone(),
            })
            .collect();
        let source = PassportSource {
            transcript_hash: hash,
            source: format!("bench:{}", rows.len()),
            format: "bench".into(),
            ended_at_ms: NOW,
            ingested_at_ms: NOW,
        };
        db.passport_ingest(&source, &rows).unwrap();
    }
    if wanted("constellation") {
        measure("score, read from the constellation", || passport_score(&db, "p", NOW).unwrap().score_milli);
        let requirement = PassportRequirement { min_score_milli: 60_000, min_confidence_milli: 500 };
        measure("gate (read + score + require_passport)", || {
            check_passport(&db, "p", requirement, NOW).unwrap().score_milli
        });
    }
}
