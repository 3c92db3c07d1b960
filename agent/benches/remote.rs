//! Remote negotiations over loopback: a buyer whose directory lists three remote providers
//! (the negotiation benchmark's three, each served from its own constellation by the HTTP
//! server of `pactum provider serve`, in this process), negotiating end to end — every quote
//! request and answer a sealed message over HTTP, both sides durable in SQLite, the receipt
//! signed by the provider over HTTP.
//!
//! `cargo bench -p pactum --bench remote`
//!
//! Cases: one session at a time, and 4 threads driving sessions concurrently. Each runs once to
//! warm up and then [`RUNS`] times; the table gives the median rate and p50/p99 latency of one
//! negotiation over all measured runs. Server and buyer share the machine's two cores.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pactum_memory::{Constellation, Durability, OpenOptions};
use pactum_runtime::remote::host::ProviderHost;
use pactum_runtime::session::model::Phase;
use pactum_runtime::session::shell::{AgentRuntime, KeyEntropy, NewSession, OwnerLiveness, Quiet};
use pactum_runtime::{
    Currency, Directory, Intent, IntentType, ManualClock, Money, SettlementMode, Urgency, strategy_named,
};
use pactum_transcripts::Digest;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 5;
const NEGOTIATIONS_PER_RUN: usize = 200;
const DIRECTORY: &str = include_str!("../../runtime/benches/bench-directory.toml");

#[derive(Debug, Default)]
struct FixedEntropy(AtomicU64);

impl KeyEntropy for FixedEntropy {
    fn key_seed(&self) -> [u8; 32] {
        *Digest::tagged(b"remote bench entropy\0", &self.0.fetch_add(1, Ordering::SeqCst).to_be_bytes()).as_bytes()
    }
}

#[derive(Debug)]
struct NobodyElse;

impl OwnerLiveness for NobodyElse {
    fn is_alive(&self, _owner: &str) -> bool {
        true
    }
}

fn request(seed: u64) -> NewSession {
    let usd = Currency::parse("USD").unwrap();
    let intent = Intent::new(
        IntentType::new("bench.item").unwrap(),
        "benchmark",
        Money::from_minor(85, usd).unwrap(),
        None,
        None,
        Urgency::Normal,
        SettlementMode::Escrow,
    )
    .unwrap();
    NewSession {
        intent,
        policy: pactum_runtime::policy::Policy::default(),
        strategy: strategy_named("banded").unwrap(),
        seed,
        auto_approve: true,
        preferences: None,
        constraints: Vec::new(),
        coalition: Vec::new(),
    }
}

fn open(path: std::path::PathBuf) -> Arc<Constellation> {
    Arc::new(Constellation::open_with(path, OpenOptions { durability: Durability::Process, create: true }).unwrap())
}

/// Serves every provider of the bench directory from its own constellation, on a runtime of
/// its own; returns the buyer's directory listing them as remote providers.
fn start_providers(dir: &std::path::Path) -> (tokio::runtime::Runtime, Directory) {
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let simulated = Directory::parse(DIRECTORY, "bench directory").unwrap();
    let mut text = String::from("format = \"pactum-directory/1\"\n");
    for (index, spec) in simulated.providers().iter().enumerate() {
        let db = open(dir.join(format!("seller-{index}.db")));
        let clock = Arc::new(start_clock());
        let host = ProviderHost::open(db, spec.clone(), 7, [index as u8 + 1; 32], clock).unwrap();
        let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        text.push('\n');
        text.push_str(&host.directory_entry(&endpoint));
        server.spawn(pactum_agent::provider_cmd::serve(Arc::new(host), listener, std::future::pending()));
    }
    (server, Directory::parse(&text, "remote bench directory").unwrap())
}

fn start_clock() -> ManualClock {
    ManualClock::new(1_767_225_600_000)
}

fn run(runtime: &Arc<AgentRuntime>, threads: usize, count: usize, first_seed: u64) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let runtime = Arc::clone(runtime);
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(count / threads + 1);
                for index in (thread..count).step_by(threads) {
                    let begin = Instant::now();
                    let state = runtime
                        .negotiate(
                            request(first_seed + index as u64),
                            &mut pactum_runtime::session::shell::DeclineAll,
                            &mut Quiet,
                        )
                        .unwrap();
                    latencies.push(begin.elapsed());
                    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for handle in handles {
        latencies.append(&mut handle.join().unwrap());
    }
    (started.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

fn case(name: &str, threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (server, directory) = start_providers(dir.path());
    let runtime = Arc::new(
        AgentRuntime::new(
            open(dir.path().join("buyer.db")),
            Arc::new(start_clock()),
            directory,
            Arc::new(FixedEntropy::default()),
            Arc::new(NobodyElse),
            "bench".into(),
        )
        .with_starting_balance(10_000_000_000),
    );
    let mut seed = 1;
    run(&runtime, threads, NEGOTIATIONS_PER_RUN / 4, seed);
    seed += NEGOTIATIONS_PER_RUN as u64;
    let mut rates = Vec::with_capacity(RUNS);
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        let (elapsed, mut run_latencies) = run(&runtime, threads, NEGOTIATIONS_PER_RUN, seed);
        seed += NEGOTIATIONS_PER_RUN as u64;
        rates.push(NEGOTIATIONS_PER_RUN as f64 / elapsed.as_secs_f64());
        latencies.append(&mut run_latencies);
    }
    rates.sort_by(f64::total_cmp);
    latencies.sort();
    let median = rates[rates.len() / 2];
    println!(
        "{name:<40} {median:>7.0}/s  (runs {:.0}-{:.0})  p50 {:>6.2} ms  p99 {:>6.2} ms",
        rates[0],
        rates[rates.len() - 1],
        percentile(&latencies, 500).as_secs_f64() * 1e3,
        percentile(&latencies, 990).as_secs_f64() * 1e3,
    );
    let check = pactum_runtime::check_constellation(runtime.constellation()).unwrap();
    assert!(check.is_sound(), "{:?}", check.problems.first());
    drop(server);
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    println!(
        "remote negotiations over loopback HTTP (3 remote providers, banded, ledger settlement, receipt signed remotely)"
    );
    for (name, threads) in [("one session at a time", 1), ("4 concurrent sessions", 4)] {
        if wanted(name) {
            case(name, threads);
        }
    }
}
