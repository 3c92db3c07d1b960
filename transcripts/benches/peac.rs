//! PEAC receipt throughput on one core: issue (claims checked, canonical payload, Ed25519 sign)
//! and verify (every check of `peac::verify`, strict Ed25519 included).
//!
//! `cargo bench -p pactum-transcripts --bench peac`
//!
//! A plain `main`: each case runs a warm-up batch, then [`RUNS`] batches of [`BATCH`] receipts;
//! the table shows the median rate with the min and max. Targets: issue ≥ 40,000/s, verify ≥
//! 20,000/s per core.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::Instant;

use pactum_transcripts::peac::{self, Claims, Commerce, Jwks, RecordKind, VerifyOptions};
use pactum_transcripts::{Ed25519Signer, KeyId};

const RUNS: usize = 9;
const BATCH: usize = 5_000;

fn measure(name: &str, target: f64, mut run: impl FnMut(usize)) {
    run(usize::MAX);
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for index in 0..BATCH {
                run(index);
            }
            BATCH as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[RUNS / 2];
    let verdict = if median >= target { "meets" } else { "MISSES" };
    println!(
        "{name:<8} {median:>9.0}/s  (min {:.0}, max {:.0}; {:.1} µs each)  {verdict} ≥ {target:.0}/s",
        rates[0],
        rates[RUNS - 1],
        1e6 / median
    );
}

fn claims(index: usize, iss: &str) -> Claims {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&(index as u64).to_be_bytes());
    let mut claims = Claims::new(
        RecordKind::Evidence,
        "org.peacprotocol/payment",
        iss,
        1_800_000_000,
        peac::uuid_v7(1_800_000_000_000, random),
    );
    claims.occurred_at = Some("2027-01-15T08:00:00.000Z".into());
    claims.with_commerce(&Commerce {
        payment_rail: "ledger".into(),
        amount_minor: 2_400 + index as u64 % 100,
        currency: "USD".into(),
        reference: Some(format!("transfer:{index}")),
        asset: None,
        env: None,
        event: None,
    })
}

fn main() {
    let kid = "agent:provider#1";
    let signer = Ed25519Signer::from_seed(KeyId::new(kid).unwrap(), &[7; 32]);
    let public_key = signer.verifying_key().to_bytes();
    let iss = peac::did_key_for_ed25519(&public_key);
    let mut keys = Jwks::new();
    keys.insert(kid, public_key).unwrap();
    let samples: Vec<Claims> = (0..BATCH).map(|i| claims(i, &iss)).collect();
    let issued: Vec<String> = samples.iter().map(|c| peac::issue(c, &signer, kid).unwrap()).collect();
    println!("PEAC receipts (Wire 0.2), one thread, {} bytes each", issued[0].len());
    measure("issue", 40_000.0, |i| {
        black_box(peac::issue(&samples[i.min(BATCH - 1)], &signer, kid).unwrap());
    });
    let options = VerifyOptions { now_s: 1_800_000_000, issuer: None, revoked_kids: &[] };
    measure("verify", 20_000.0, |i| {
        black_box(peac::verify(&issued[i.min(BATCH - 1)], &keys, &options).unwrap());
    });
}
