//! PACT v4 verification throughput: rounds per second on a 1,000-round transcript.
//!
//! `cargo bench -p pactum-transcripts --bench pact_v4`
//!
//! A plain `main` (no criterion): each case runs once to warm up, then [`RUNS`] times; the table
//! shows the median rate with the min and max. The transcript is [`synthetic_transcript`] (fixed
//! keys, each round's signed Pactum envelope included), so the whole verdict is measured: the
//! reference checks and Pactum's findings. Cases: `verify text` (strict parse included),
//! `verify parsed` (the document already parsed), `verify bare` (parsed, without the envelopes:
//! the reference checks' share) and `parse` alone.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use pactum_transcripts::canonical::parse_strict;
use pactum_transcripts::pact_v4::{canonical_hash_without, synthetic_transcript, verify_v4, verify_v4_text};

/// Measured runs per case (after one warm-up run).
const RUNS: usize = 9;
/// Rounds in the benchmark transcript.
const ROUNDS: usize = 1_000;

fn measure(name: &str, mut run: impl FnMut()) {
    run();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    let rate = |time: Duration| ROUNDS as f64 / time.as_secs_f64();
    println!(
        "{name:<16} {:>10.0} rounds/s  (min {:.0}, max {:.0}; median {:.2} ms per transcript)",
        rate(times[RUNS / 2]),
        rate(times[RUNS - 1]),
        rate(times[0]),
        times[RUNS / 2].as_secs_f64() * 1e3,
    );
}

fn main() {
    let document = synthetic_transcript(ROUNDS);
    let text = document.to_string();
    assert!(verify_v4_text(&text).is_valid(), "the benchmark transcript verifies");
    println!("PACT v4 verification, {ROUNDS} rounds, {} bytes, one thread", text.len());
    measure("verify text", || assert!(black_box(verify_v4_text(black_box(&text))).is_valid()));
    measure("verify parsed", || assert!(black_box(verify_v4(black_box(&document))).is_valid()));
    // Without envelopes every round is a ROUND_CONTENT_UNSIGNED finding: the reference checks
    // share of the cost.
    let mut bare = document.clone();
    bare["metadata"] = serde_json::json!({});
    let final_hash = canonical_hash_without(bare.as_object().unwrap(), &["final_hash"]).unwrap();
    bare["final_hash"] = serde_json::Value::String(final_hash);
    measure("verify bare", || assert!(black_box(verify_v4(black_box(&bare))).is_valid()));
    measure("parse", || {
        black_box(parse_strict(black_box(&text)).unwrap());
    });
}
