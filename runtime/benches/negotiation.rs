//! Negotiation benchmarks: whole negotiations end to end — discovery, rounds with three
//! simulated providers, banded strategy, approval, ledger settlement (prepare and commit), a
//! signed receipt, checkpoints — every event signed and durable in SQLite before the next step.
//!
//! `cargo bench -p pactum-runtime --bench negotiation [-- FILTER...]` (a filter selects the cases
//! whose name contains it; `=NAME` selects the case named exactly NAME)
//!
//! Cases: one session at a time, then 2, 4 and 100 threads driving sessions concurrently on one
//! constellation (one `AgentRuntime` shared), and a coalition of three buyers (every payment
//! held in three parts), each under the default durability
//! (`synchronous=NORMAL`: survives a killed process) and, for one session at a time, under
//! `synchronous=FULL` (survives power loss). Each case runs once to warm up and is then measured
//! [`RUNS`] times; the table gives the median rate and the p50/p99 latency of one negotiation
//! over all measured runs. The clock is a `ManualClock`; seeds are fixed.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pactum_memory::{Constellation, Durability, OpenOptions};
use pactum_runtime::session::model::Phase;
use pactum_runtime::session::shell::{
    AgentRuntime, Approver, KeyEntropy, NewSession, OfferToApprove, OwnerLiveness, Quiet,
};
use pactum_runtime::{
    Currency, Directory, Intent, IntentType, ManualClock, Money, SettlementMode, Urgency, strategy_named,
};
use pactum_transcripts::Digest;

/// The allocator the `pactum` program uses, so the figures are the program's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 5;
const NEGOTIATIONS_PER_RUN: usize = 2_000;
const NEGOTIATIONS_PER_RUN_FULL: usize = 500;
const TARGET_PER_SECOND: f64 = 1_000.0;
const TARGET_P99: Duration = Duration::from_millis(5);

/// Three providers of one intent, conceding at different speeds, none failing: every
/// negotiation takes several rounds and completes, so each measures the whole path.
const DIRECTORY: &str = include_str!("bench-directory.toml");

#[derive(Debug, Default)]
struct FixedEntropy(AtomicU64);

impl KeyEntropy for FixedEntropy {
    fn key_seed(&self) -> [u8; 32] {
        *Digest::tagged(b"bench entropy\0", &self.0.fetch_add(1, Ordering::SeqCst).to_be_bytes()).as_bytes()
    }
}

#[derive(Debug)]
struct NobodyElse;

impl OwnerLiveness for NobodyElse {
    fn is_alive(&self, _owner: &str) -> bool {
        true
    }
}

struct Approve;

impl Approver for Approve {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (true, "client")
    }
}

/// A coalition of three: the buyer leads with alice and bob, weights 1:1:1.
const COALITION: &[(&str, u64)] = &[("alice", 1), ("bob", 1)];

fn request(seed: u64, coalition: bool) -> NewSession {
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
        coalition: if coalition {
            COALITION.iter().map(|(id, w)| ((*id).to_owned(), *w)).collect()
        } else {
            Vec::new()
        },
    }
}

fn runtime(dir: &std::path::Path, durability: Durability) -> Arc<AgentRuntime> {
    let db = Constellation::open_with(dir.join("bench.db"), OpenOptions { durability, create: true }).unwrap();
    Arc::new(
        AgentRuntime::new(
            Arc::new(db),
            Arc::new(ManualClock::new(1_767_225_600_000)),
            Directory::parse(DIRECTORY, "bench directory").unwrap(),
            Arc::new(FixedEntropy::default()),
            Arc::new(NobodyElse),
            "bench".into(),
        )
        // Enough for every negotiation of every run.
        .with_starting_balance(10_000_000_000),
    )
}

/// Runs `count` negotiations on `threads` threads; returns the elapsed time, each negotiation's
/// latency, and the events and rounds recorded.
fn run(
    runtime: &Arc<AgentRuntime>,
    threads: usize,
    count: usize,
    first_seed: u64,
    coalition: bool,
) -> (Duration, Vec<Duration>, u64, u64) {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let runtime = Arc::clone(runtime);
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(count / threads + 1);
                let (mut events, mut rounds) = (0, 0);
                for index in (thread..count).step_by(threads) {
                    let begin = Instant::now();
                    let state = runtime
                        .negotiate(request(first_seed + index as u64, coalition), &mut Approve, &mut Quiet)
                        .unwrap();
                    latencies.push(begin.elapsed());
                    assert_eq!(state.phase, Phase::Completed, "{:?}", state.failure);
                    events += state.next_seq;
                    rounds += u64::from(state.round);
                }
                (latencies, events, rounds)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    let (mut events, mut rounds) = (0, 0);
    for handle in handles {
        let (mut part, part_events, part_rounds) = handle.join().unwrap();
        latencies.append(&mut part);
        events += part_events;
        rounds += part_rounds;
    }
    (started.elapsed(), latencies, events, rounds)
}

/// Bytes this process has caused to be written to storage so far (Linux `/proc/self/io`;
/// 0 elsewhere): the WAL, checkpoints into the file, and anything else.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| io.lines().find_map(|line| line.strip_prefix("write_bytes: ")?.trim().parse().ok()))
        .unwrap_or(0)
}

/// The latency below which `per_mille` thousandths of the sorted latencies fall.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

fn case(name: &str, threads: usize, durability: Durability, count: usize, budget: bool, coalition: bool) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path(), durability);
    if budget {
        // A daily budget and a daily count on the buyer, large enough never to refuse: every
        // payment is judged against the day's spends (which grow through the case) and recorded.
        use pactum_runtime::constraints::{Budget, Constraint, Usage, Window};
        let day = Some(Window { length_ms: 86_400_000, anchor_ms: 0 });
        let limits = Constraint::Combined {
            all: vec![
                Constraint::Budget(Budget { max_amount_minor: 1 << 50, currency: "USD".into(), window: day }),
                Constraint::Usage(Usage { max_uses: 1 << 40, window: day }),
            ],
        };
        runtime.ensure_buyer(Currency::parse("USD").unwrap()).unwrap();
        pactum_runtime::budget::set(runtime.constellation(), "buyer", "daily", &limits, 0).unwrap();
    }
    let mut seed = 1;
    run(&runtime, threads, count / 4, seed, coalition);
    seed += count as u64;
    let written_before = written_bytes();
    let mut rates = Vec::with_capacity(RUNS);
    let mut latencies = Vec::new();
    let (mut events, mut rounds, mut negotiations) = (0, 0, 0);
    for _ in 0..RUNS {
        let (elapsed, mut run_latencies, run_events, run_rounds) = run(&runtime, threads, count, seed, coalition);
        seed += count as u64;
        rates.push(count as f64 / elapsed.as_secs_f64());
        latencies.append(&mut run_latencies);
        events += run_events;
        rounds += run_rounds;
        negotiations += count as u64;
    }
    rates.sort_by(f64::total_cmp);
    latencies.sort();
    let median = rates[rates.len() / 2];
    let (p50, p99, p999) = (percentile(&latencies, 500), percentile(&latencies, 990), percentile(&latencies, 999));
    let written = written_bytes().saturating_sub(written_before);
    let file_size = std::fs::metadata(dir.path().join("bench.db")).map(|m| m.len()).unwrap_or(0);
    let verdict = if median >= TARGET_PER_SECOND && p99 <= TARGET_P99 { "pass" } else { "MISS" };
    println!(
        "{name:<44} {median:>8.0}/s  (runs {:.0}-{:.0})  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  {:.1} events, {:.1} rounds, \
         {:.1} KiB written, {:.1} KiB of file each  {verdict}",
        rates[0],
        rates[rates.len() - 1],
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p999.as_secs_f64() * 1e3,
        events as f64 / negotiations as f64,
        rounds as f64 / negotiations as f64,
        written as f64 / negotiations as f64 / 1024.0,
        file_size as f64 / (negotiations + count as u64 / 4) as f64 / 1024.0,
    );
    // Every session recorded must check out (skipped when profiling the negotiations alone).
    if std::env::var_os("PACTUM_BENCH_SKIP_CHECK").is_none() {
        let check = pactum_runtime::check_constellation(runtime.constellation()).unwrap();
        assert!(check.is_sound(), "{:?}", check.problems.first());
    }
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    // A filter matches the cases whose name contains it; `=NAME` matches only the case NAME.
    let wanted = |name: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f.strip_prefix('=').map_or_else(|| name.contains(f.as_str()), |exact| name == exact))
    };
    println!(
        "negotiations end to end (3 providers, banded, ledger settlement, signed receipt, durable transcript); \
         target >= {TARGET_PER_SECOND:.0}/s and p99 <= {} ms",
        TARGET_P99.as_millis()
    );
    let cases: [(&str, usize, Durability, usize, bool, bool); 7] = [
        ("one session at a time, NORMAL", 1, Durability::Process, NEGOTIATIONS_PER_RUN, false, false),
        ("2 concurrent sessions, NORMAL", 2, Durability::Process, NEGOTIATIONS_PER_RUN, false, false),
        ("4 concurrent sessions, NORMAL", 4, Durability::Process, NEGOTIATIONS_PER_RUN, false, false),
        ("100 concurrent sessions, NORMAL", 100, Durability::Process, NEGOTIATIONS_PER_RUN, false, false),
        (
            "one session at a time, FULL (power-loss safe)",
            1,
            Durability::PowerLoss,
            NEGOTIATIONS_PER_RUN_FULL,
            false,
            false,
        ),
        ("one session at a time, NORMAL, buyer budget", 1, Durability::Process, NEGOTIATIONS_PER_RUN, true, false),
        ("one session at a time, NORMAL, coalition of 3", 1, Durability::Process, NEGOTIATIONS_PER_RUN, false, true),
    ];
    for (name, threads, durability, count, budget, coalition) in cases {
        if wanted(name) {
            case(name, threads, durability, count, budget, coalition);
        }
    }
}
