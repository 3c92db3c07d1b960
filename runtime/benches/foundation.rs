//! Foundation benchmarks: append, verify, canonicalize and parse throughput.
//!
//! `cargo bench -p pactum-runtime --bench foundation [-- FILTER...]`
//!
//! A plain `main` (no criterion): each case is run once to warm up, then measured [`RUNS`] times;
//! the table shows the median rate with the min and max of the measured runs. A FILTER is a
//! substring of a case name (`append`, `verify`, `canon`, `parse`, `breakdown`, `one-per-txn`,
//! ...); with several, a case runs if it matches any. Arguments starting with `-` (cargo passes
//! `--bench`) are ignored.
//!
//! Everything is deterministic: a [`ManualClock`], fixed signing-key seeds and a fixed-seed PRNG
//! for bodies and the JSON corpus. Only elapsed wall time varies.
#![allow(
    clippy::float_arithmetic,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::print_literal
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pactum_memory::{Constellation, Durability, OpenOptions, StreamOrigin};
use pactum_runtime::{ConstellationEventStore, ManualClock, verify_stream};
use pactum_transcripts::canonical::{parse_strict, to_canonical_string};
use pactum_transcripts::{
    Anchor, Digest, EVENT_HASH_TAG, Ed25519Signer, Event, EventKind, EventSigner, KeyId, KeyRing, NewEvent, StreamId,
    TranscriptStream, verify_events,
};
use serde_json::{Map, Number, Value, json};

/// Measured runs per case (after one warm-up run).
const RUNS: usize = 7;
/// A fixed, plausible epoch for the manual clock (2026-01-01T00:00:00Z).
const START_MS: u64 = 1_767_225_600_000;
const BODY_SEED: u64 = 0x5eed_0001;
const CORPUS_SEED: u64 = 0x5eed_0002;

// Targets (events/s unless noted).
const TARGET_VERIFY_HASH_ONLY: f64 = 500_000.0;
const TARGET_VERIFY_SIGNED_PER_CORE: f64 = 20_000.0;
const TARGET_APPEND_ONE_PER_TXN: f64 = 5_000.0;
const TARGET_APPEND_BATCHED: f64 = 100_000.0;

// Sizes.
const APPEND_ONE_PER_TXN_NORMAL: usize = 5_000;
/// Upper bound for FULL one-per-transaction; the count actually used is calibrated so one run
/// takes about [`FULL_RUN_SECONDS`], since fsync latency differs wildly between disks.
const APPEND_ONE_PER_TXN_FULL_MAX: usize = 5_000;
const APPEND_ONE_PER_TXN_FULL_MIN: usize = 200;
const FULL_RUN_SECONDS: f64 = 1.5;
const APPEND_BATCH: usize = 100;
const APPEND_BATCHED_NORMAL: usize = 50_000;
const APPEND_BATCHED_FULL: usize = 50_000;
const VERIFY_HASH_ONLY_EVENTS: usize = 100_000;
const VERIFY_SIGNED_EVENTS: usize = 20_000;
const STORED_HASH_ONLY_EVENTS: usize = 50_000;
const STORED_SIGNED_EVENTS: usize = 20_000;
const CORPUS_BYTES: usize = 4_000_000;

// ---------------------------------------------------------------------------------------------
// Deterministic inputs

/// SplitMix64: tiny, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

const NOTES: &[&str] = &[
    "Angebot gültig bis Freitag — bitte bestätigen",
    "Livraison à Genève, palette EUR 120×80",
    "Доставка до склада, оплата по факту",
    "納期は来週の水曜日でお願いします",
    "price firm for 48h; \"as is\" terms apply",
    "Counter accepted 👍 pending QA sign-off",
];
const PLACES: &[&str] = &["Zürich", "Malmö", "São Paulo", "Łódź", "Kraków", "Rotterdam", "Reykjavík"];
const CURRENCIES: &[&str] = &["EUR", "CHF", "USD", "SEK", "PLN"];
const INCOTERMS: &[&str] = &["DAP", "DDP", "FCA", "EXW", "CPT"];
const KINDS: &[&str] = &["round.bid", "round.counter", "round.accept", "session.note"];

/// A negotiation-message-like body of roughly 300 bytes in canonical form.
fn event_body(rng: &mut Rng, index: usize) -> Value {
    json!({
        "session": format!("ses_{:016x}", rng.next_u64()),
        "round": index,
        "party": if index.is_multiple_of(2) { "agent:buyer" } else { "agent:seller" },
        "offer": {
            "item": format!("sku-{:05}", rng.below(100_000)),
            "quantity": 1 + rng.below(500),
            "unit_price": { "amount_minor": 100 + rng.below(1_000_000), "currency": rng.pick(CURRENCIES) },
            "delivery": {
                "by_ms": START_MS + rng.below(90 * 86_400_000),
                "incoterm": rng.pick(INCOTERMS),
                "place": rng.pick(PLACES),
            },
        },
        "discount_pct": (rng.below(200) as f64) / 8.0,
        "note": rng.pick(NOTES),
    })
}

fn bodies(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng(seed);
    (0..count).map(|index| event_body(&mut rng, index)).collect()
}

fn kinds() -> Vec<EventKind> {
    KINDS.iter().map(|kind| EventKind::new(*kind).unwrap()).collect()
}

/// The two parties of a negotiation, with fixed key seeds.
fn signers() -> Vec<Ed25519Signer> {
    vec![
        Ed25519Signer::from_seed(KeyId::new("agent:buyer#1").unwrap(), &[0x11; 32]),
        Ed25519Signer::from_seed(KeyId::new("agent:seller#1").unwrap(), &[0x22; 32]),
    ]
}

fn key_ring(signers: &[Ed25519Signer]) -> KeyRing {
    let mut ring = KeyRing::new();
    for signer in signers {
        ring.insert(signer.key_id().clone(), signer.verifying_key()).unwrap();
    }
    ring
}

/// A valid chain of `count` events, signed alternately by `signers` when any are given.
fn build_chain(stream: &StreamId, count: usize, signers: &[Ed25519Signer]) -> Vec<Event> {
    let kinds = kinds();
    let mut prev = stream.genesis();
    let mut events = Vec::with_capacity(count);
    for (index, body) in bodies(count, BODY_SEED).into_iter().enumerate() {
        let signer = (!signers.is_empty()).then(|| &signers[index % signers.len()] as &dyn EventSigner);
        let at_ms = START_MS + index as u64;
        let kind = kinds[index % kinds.len()].clone();
        let event = Event::seal(stream.clone(), index as u64, kind, body, at_ms, prev, signer).unwrap();
        prev = event.hash;
        events.push(event);
    }
    events
}

fn anchor(events: &[Event]) -> Anchor {
    Anchor { event_count: events.len() as u64, head_hash: events.last().map(|e| e.hash) }
}

const KEY_NAMES: &[&str] = &[
    "id",
    "name",
    "amount_minor",
    "currency",
    "items",
    "meta",
    "tags",
    "price",
    "qty",
    "note",
    "created_at_ms",
    "ratio",
    "nested",
    "flags",
    "Größe",
    "名前",
    "цена",
    "emoji_😀",
    "\u{e000}private",
    "a",
    "b",
    "z",
];
const WORDS: &[&str] = &[
    "offer",
    "counter",
    "accept",
    "reject",
    "delivery",
    "quote",
    "Zürich",
    "naïve",
    "façade",
    "Ελλάδα",
    "москва",
    "東京",
    "서울",
    "مرحبا",
    "שלום",
    "😀",
    "🚚📦",
    "tab\there",
    "line\nbreak",
    "quote\"d",
    "back\\slash",
    "ctl\u{1}",
];

/// A random JSON value: nested objects and arrays, unicode strings with escapes, integers
/// across the safe range and doubles of widely varying magnitude.
fn corpus_value(rng: &mut Rng, depth: u32) -> Value {
    let choices = if depth >= 5 { 5 } else { 8 };
    match rng.below(choices) {
        0 => match rng.below(3) {
            0 => Value::Null,
            1 => Value::Bool(true),
            _ => Value::Bool(false),
        },
        1 => {
            let magnitude = [10_u64, 1_000, 1_000_000, 1 << 40, (1 << 53) - 1][rng.below(5) as usize];
            let value = rng.below(magnitude + 1) as i64;
            Value::from(if rng.below(4) == 0 { -value } else { value })
        }
        2 => {
            let exponent = [-30, -8, -3, 0, 0, 2, 5, 15, 25][rng.below(9) as usize];
            let sign = if rng.below(3) == 0 { -1.0 } else { 1.0 };
            let value = sign * rng.unit() * 10_f64.powi(exponent);
            Value::Number(Number::from_f64(value).unwrap())
        }
        3 | 4 => {
            let words = 1 + rng.below(6);
            let text: Vec<&str> = (0..words).map(|_| *rng.pick(WORDS)).collect();
            Value::String(text.join(" "))
        }
        5 => Value::Array((0..rng.below(7)).map(|_| corpus_value(rng, depth + 1)).collect()),
        _ => {
            let mut members = Map::new();
            for _ in 0..1 + rng.below(8) {
                let name = format!("{}{}", rng.pick(KEY_NAMES), rng.below(4));
                members.insert(name, corpus_value(rng, depth + 1));
            }
            Value::Object(members)
        }
    }
}

/// Documents (top-level objects) until their canonical text adds up to `bytes`.
fn corpus(bytes: usize) -> Vec<Value> {
    let mut rng = Rng(CORPUS_SEED);
    let mut documents = Vec::new();
    let mut total = 0;
    while total < bytes {
        let mut members = Map::new();
        for index in 0..8 + rng.below(9) {
            members.insert(format!("{}_{index}", rng.pick(KEY_NAMES)), corpus_value(&mut rng, 1));
        }
        let document = Value::Object(members);
        total += to_canonical_string(&document).unwrap().len();
        documents.push(document);
    }
    documents
}

// ---------------------------------------------------------------------------------------------
// Measurement and reporting

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    /// Where the timed wall time went (over the measured runs); `None` where /proc lacks it.
    /// This thread on a CPU.
    on_cpu: Option<f64>,
    /// This thread runnable but waiting for a CPU (other processes competing for the cores).
    runqueue_wait: Option<f64>,
    /// CPUs kept busy by everything else on the machine, on average (0 = idle, 1 = one core).
    background: Option<f64>,
    /// Share of all CPUs' time the hypervisor gave to other guests.
    steal: Option<f64>,
}

/// Nanoseconds per /proc/stat tick (USER_HZ is 100 on Linux).
const TICK_NS: u64 = 10_000_000;

/// Cumulative counters read around every timed region.
#[derive(Clone, Copy)]
struct Probe {
    /// This thread's on-CPU and runqueue-wait ns (/proc/thread-self/schedstat).
    thread: Option<(u64, u64)>,
    /// All CPUs' busy and steal ticks (/proc/stat).
    system: Option<(u64, u64)>,
}

impl Probe {
    fn read() -> Self {
        Self { thread: read_schedstat(), system: read_proc_stat() }
    }
}

fn read_schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|field| field.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = fields.first()? + fields.get(1)? + fields.get(2)? + fields.get(5)? + fields.get(6)?;
    Some((busy, *fields.get(7)?))
}

/// Sums over the timed regions since the last reset.
#[derive(Clone, Copy)]
struct Accounting {
    wall_ns: u64,
    on_cpu_ns: Option<u64>,
    wait_ns: Option<u64>,
    busy_ticks: Option<u64>,
    steal_ticks: Option<u64>,
}

impl Accounting {
    const ZERO: Self =
        Self { wall_ns: 0, on_cpu_ns: Some(0), wait_ns: Some(0), busy_ticks: Some(0), steal_ticks: Some(0) };

    fn between(before: Probe, after: Probe, elapsed: Duration) -> Self {
        let thread = before.thread.zip(after.thread).map(|((c0, w0), (c1, w1))| (c1 - c0, w1 - w0));
        let system = before.system.zip(after.system).map(|((b0, s0), (b1, s1))| (b1 - b0, s1 - s0));
        Self {
            wall_ns: elapsed.as_nanos() as u64,
            on_cpu_ns: thread.map(|(cpu, _)| cpu),
            wait_ns: thread.map(|(_, wait)| wait),
            busy_ticks: system.map(|(busy, _)| busy),
            steal_ticks: system.map(|(_, steal)| steal),
        }
    }

    fn plus(self, other: Self) -> Self {
        let add = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a + b);
        Self {
            wall_ns: self.wall_ns + other.wall_ns,
            on_cpu_ns: add(self.on_cpu_ns, other.on_cpu_ns),
            wait_ns: add(self.wait_ns, other.wait_ns),
            busy_ticks: add(self.busy_ticks, other.busy_ticks),
            steal_ticks: add(self.steal_ticks, other.steal_ticks),
        }
    }

    fn finish(self, mut rates: Vec<f64>) -> Stats {
        rates.sort_by(f64::total_cmp);
        let middle = rates.len() / 2;
        let median = if rates.len() % 2 == 1 { rates[middle] } else { (rates[middle - 1] + rates[middle]) / 2.0 };
        let wall = self.wall_ns.max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // schedstat advances at scheduler events and /proc/stat in 10 ms ticks: both are
        // approximate for short regions, hence the clamps.
        let share = |ns: Option<u64>| ns.map(|ns| (ns as f64 / wall).min(1.0));
        let background = self
            .busy_ticks
            .zip(self.on_cpu_ns)
            .map(|(busy, mine)| ((busy * TICK_NS) as f64 - mine as f64).max(0.0) / wall);
        Stats {
            median,
            min: rates[0],
            max: rates[rates.len() - 1],
            on_cpu: share(self.on_cpu_ns),
            runqueue_wait: share(self.wait_ns),
            background: background.map(|b| b.min(cores)),
            steal: self.steal_ticks.map(|ticks| ((ticks * TICK_NS) as f64 / (wall * cores)).min(1.0)),
        }
    }
}

thread_local! {
    static ACCOUNTING: std::cell::Cell<Accounting> = const { std::cell::Cell::new(Accounting::ZERO) };
}

/// A benchmark case: one call does one run and returns the work done (events, bytes or
/// operations) and the time it took, measured with [`time`] around the work only.
type Case<'a> = Box<dyn FnMut() -> (f64, Duration) + 'a>;

fn measure(run: impl FnMut() -> (f64, Duration)) -> Stats {
    measure_interleaved(vec![Box::new(run)]).remove(0)
}

/// Warms every case up once, then runs them round-robin [`RUNS`] times (A B C A B C ...), so
/// cases that are compared with each other see the same background load.
fn measure_interleaved(mut cases: Vec<Case<'_>>) -> Vec<Stats> {
    for case in &mut cases {
        black_box(case());
    }
    let mut rates = vec![Vec::with_capacity(RUNS); cases.len()];
    let mut accounting = vec![Accounting::ZERO; cases.len()];
    for _ in 0..RUNS {
        for (index, case) in cases.iter_mut().enumerate() {
            ACCOUNTING.set(Accounting::ZERO);
            let (work, elapsed) = case();
            rates[index].push(work / elapsed.as_secs_f64());
            accounting[index] = accounting[index].plus(ACCOUNTING.get());
        }
    }
    rates.into_iter().zip(accounting).map(|(rates, accounting)| accounting.finish(rates)).collect()
}

/// Times `work`, adding its wall time and what the machine did meanwhile to [`ACCOUNTING`].
fn time<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let before = Probe::read();
    let start = Instant::now();
    let value = black_box(work());
    let elapsed = start.elapsed();
    let after = Probe::read();
    ACCOUNTING.set(ACCOUNTING.get().plus(Accounting::between(before, after, elapsed)));
    (value, elapsed)
}

struct Row {
    name: String,
    size: String,
    unit: &'static str,
    stats: Stats,
    target: Option<f64>,
}

struct Report {
    filters: Vec<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|filter| name.contains(filter.as_str()))
    }

    fn wants_any(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.wants(name))
    }

    fn add(&mut self, name: &str, size: String, unit: &'static str, stats: Stats, target: Option<f64>) {
        let row = Row { name: name.to_owned(), size, unit, stats, target };
        eprintln!("  done: {:<46} {}", row.name, format_rate(row.stats.median, row.unit));
        self.rows.push(row);
    }

    fn print(&self) {
        let rule = "-".repeat(158);
        println!("{rule}");
        println!(
            "{:<46} {:>9} {:>13} {:>13} {:>13} {:>7} {:>5} {:>5} {:>5} {:>5}  {:<17} {}",
            "case", "work/run", "median", "min", "max", "spread", "cpu", "rq", "bg", "steal", "target", "verdict"
        );
        println!("{rule}");
        for row in &self.rows {
            let spread = (row.stats.max - row.stats.min) / row.stats.median * 100.0;
            let (target, verdict) = match row.target {
                None => (String::from("-"), ""),
                Some(target) => {
                    let verdict = if row.stats.median >= target { "PASS" } else { "BELOW" };
                    (format!(">= {}", format_rate(target, row.unit)), verdict)
                }
            };
            let percent = |share: Option<f64>| share.map_or_else(|| "?".to_owned(), |s| format!("{:.0}%", s * 100.0));
            println!(
                "{:<46} {:>9} {:>13} {:>13} {:>13} {:>6.1}% {:>5} {:>5} {:>5} {:>5}  {:<17} {}",
                row.name,
                row.size,
                format_rate(row.stats.median, row.unit),
                format_rate(row.stats.min, row.unit),
                format_rate(row.stats.max, row.unit),
                spread,
                percent(row.stats.on_cpu),
                percent(row.stats.runqueue_wait),
                row.stats.background.map_or_else(|| "?".to_owned(), |b| format!("{b:.2}")),
                percent(row.stats.steal),
                target,
                verdict
            );
        }
        println!("{rule}");
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

fn format_rate(rate: f64, unit: &str) -> String {
    match unit {
        "MB/s" => format!("{:.1} MB/s", rate / 1e6),
        _ if rate >= 1e6 => format!("{:.2}M {unit}", rate / 1e6),
        _ if rate >= 1e4 => format!("{:.1}k {unit}", rate / 1e3),
        _ => format!("{rate:.0} {unit}"),
    }
}

fn format_count(count: usize) -> String {
    if count >= 1000 && count.is_multiple_of(1000) { format!("{}k ev", count / 1000) } else { format!("{count} ev") }
}

// ---------------------------------------------------------------------------------------------
// Environment header

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Filesystem type and device of the mount holding `path` (from /proc/mounts).
fn filesystem_of(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return "unknown".into() };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 3 && path.starts_with(fields[1]))
                .then(|| (fields[1].len(), format!("{} on {}", fields[2], fields[0])))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| "unknown".into(), |(_, description)| description)
}

fn print_header() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) { "DEBUG (numbers are meaningless)" } else { "release" };
    let tempdir = std::env::temp_dir();
    println!("Pactum foundation benchmarks");
    println!("  cpu:      {} ({cores} cores available; every case is single-threaded)", cpu_model());
    println!("  sqlite:   {} (bundled, WAL)", rusqlite::version());
    println!("  profile:  {profile}");
    println!("  tempdir:  {} ({})", tempdir.display(), filesystem_of(&tempdir));
    println!("  method:   1 warm-up run + {RUNS} measured runs per case; rate = work / wall time of the run");
    println!("  spread:   (max - min) / median of the measured runs");
    println!("  noise:    over the timed runs: cpu = this thread on a CPU, rq = runnable but waiting for a CPU,");
    println!("            bg = CPUs kept busy by other processes (0-2), steal = hypervisor steal; a high rq or bg");
    println!("            means the numbers are depressed by other load on this shared 2-core machine, not the code");
}

// ---------------------------------------------------------------------------------------------
// 1. Append

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    }
}

/// Appends `count` events (`batch` per transaction) to a fresh constellation in a tempdir.
/// Only the appends are timed: not opening the file, not generating the bodies.
fn append_run(durability: Durability, count: usize, batch: usize) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Constellation::open_with(dir.path().join("bench.pactum"), OpenOptions { durability, ..OpenOptions::default() })
            .unwrap(),
    );
    assert_eq!(db.durability(), durability);
    let clock = Arc::new(ManualClock::new(START_MS));
    let stream_id = StreamId::new("bench-append").unwrap();
    let stream =
        TranscriptStream::open(ConstellationEventStore::new(Arc::clone(&db)), stream_id, clock.clone()).unwrap();
    let kinds = kinds();
    let mut bodies = bodies(count, BODY_SEED).into_iter();
    let (_, elapsed) = time(|| {
        let mut appended = 0;
        while appended < count {
            clock.advance(1);
            if batch == 1 {
                let body = bodies.next().unwrap();
                stream.append(kinds[appended % kinds.len()].clone(), body, None).unwrap();
                appended += 1;
            } else {
                let events: Vec<NewEvent<'_>> = bodies
                    .by_ref()
                    .take(batch)
                    .enumerate()
                    .map(|(offset, body)| NewEvent {
                        kind: kinds[(appended + offset) % kinds.len()].clone(),
                        body,
                        signer: None,
                        at_ms: None,
                    })
                    .collect();
                appended += events.len();
                stream.append_batch(events).unwrap();
            }
        }
    });
    let head = stream.head().unwrap().unwrap();
    assert_eq!(head.seq + 1, count as u64);
    (count as f64, elapsed)
}

/// The disk's floor for a durable commit: `ops` writes of `size` bytes, each followed by
/// `fsync` (what the bundled SQLite calls on a commit under FULL) or `fdatasync`, overwriting
/// a preallocated file in the tempdir (as SQLite rewrites its WAL after a checkpoint).
fn sync_run(size: usize, ops: usize, metadata: bool) -> (f64, Duration) {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("floor.bin")).unwrap();
    let block = vec![0x5a_u8; size];
    for _ in 0..ops {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let ((), elapsed) = time(|| {
        file.seek(SeekFrom::Start(0)).unwrap();
        for _ in 0..ops {
            file.write_all(&block).unwrap();
            if metadata { file.sync_all().unwrap() } else { file.sync_data().unwrap() }
        }
    });
    (ops as f64, elapsed)
}

fn bench_append(report: &mut Report) {
    for durability in [Durability::Process, Durability::PowerLoss] {
        let level = durability_name(durability);
        let name = format!("append/one-per-txn/{level}");
        if report.wants(&name) {
            let count = match durability {
                Durability::Process => APPEND_ONE_PER_TXN_NORMAL,
                Durability::PowerLoss => {
                    // Calibrate on a short run so slow fsyncs cannot blow the time budget.
                    let (work, elapsed) = append_run(durability, 100, 1);
                    let rate = work / elapsed.as_secs_f64();
                    ((rate * FULL_RUN_SECONDS) as usize).clamp(APPEND_ONE_PER_TXN_FULL_MIN, APPEND_ONE_PER_TXN_FULL_MAX)
                        / 100
                        * 100
                }
            };
            let stats = measure(|| append_run(durability, count, 1));
            report.add(&name, format_count(count), "ev/s", stats, Some(TARGET_APPEND_ONE_PER_TXN));
        }
        let name = format!("append/batch-{APPEND_BATCH}/{level}");
        if report.wants(&name) {
            let count = match durability {
                Durability::Process => APPEND_BATCHED_NORMAL,
                Durability::PowerLoss => APPEND_BATCHED_FULL,
            };
            let stats = measure(|| append_run(durability, count, APPEND_BATCH));
            report.add(&name, format_count(count), "ev/s", stats, Some(TARGET_APPEND_BATCHED));
        }
    }
    for (name, size, ops, metadata) in [
        ("append/disk-floor: 4 KiB write + fdatasync", 4096, 300, false),
        ("append/disk-floor: 4 KiB write + fsync", 4096, 300, true),
        ("append/disk-floor: 64 KiB write + fsync", 65536, 100, true),
    ] {
        if report.wants(name) {
            let stats = measure(|| sync_run(size, ops, metadata));
            report.add(name, format!("{ops} op"), "op/s", stats, None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Verify

fn bench_verify(report: &mut Report) {
    let stream = StreamId::new("bench-verify").unwrap();
    let signers = signers();

    // The 100k-event stream is the target case. A 1k-event stream verified 100 times does the same
    // work with every body in cache; the two run interleaved so their difference is the cost of
    // walking 100k scattered body trees, not background noise.
    const HOT_EVENTS: usize = 1_000;
    const HOT_PASSES: usize = VERIFY_HASH_ONLY_EVENTS / HOT_EVENTS;
    const BIG: &str = "verify/hash-only/in-memory";
    const HOT: &str = "verify/hash-only/in-memory, 1k-ev stream x100";
    if report.wants_any(&[BIG, HOT]) {
        let keys = &KeyRing::new();
        let stream = &stream;
        let verify = move |events: &[Event], passes: usize| {
            let (reports, elapsed) = time(|| {
                (0..passes).map(|_| verify_events(stream, events, keys, Some(anchor(events)))).collect::<Vec<_>>()
            });
            for verified in reports {
                assert!(verified.is_valid(), "{:?}", verified.first_break);
                assert_eq!(verified.events_verified, events.len() as u64);
            }
            ((events.len() * passes) as f64, elapsed)
        };
        let big = if report.wants(BIG) { build_chain(stream, VERIFY_HASH_ONLY_EVENTS, &[]) } else { Vec::new() };
        let hot = if report.wants(HOT) { build_chain(stream, HOT_EVENTS, &[]) } else { Vec::new() };
        let (big, hot) = (&big, &hot);
        let mut cases: Vec<(&str, Option<f64>, Case<'_>)> = Vec::new();
        if !big.is_empty() {
            cases.push((BIG, Some(TARGET_VERIFY_HASH_ONLY), Box::new(move || verify(big, 1))));
        }
        if !hot.is_empty() {
            cases.push((HOT, None, Box::new(move || verify(hot, HOT_PASSES))));
        }
        let (labels, cases): (Vec<_>, Vec<_>) =
            cases.into_iter().map(|(name, target, case)| ((name, target), case)).unzip();
        for ((name, target), stats) in labels.into_iter().zip(measure_interleaved(cases)) {
            report.add(name, format_count(VERIFY_HASH_ONLY_EVENTS), "ev/s", stats, target);
        }
    }

    let name = "verify/signed-ed25519-batch/in-memory (1 core)";
    if report.wants(name) {
        let events = build_chain(&stream, VERIFY_SIGNED_EVENTS, &signers);
        let keys = key_ring(&signers);
        let stats = measure(|| {
            let (verified, elapsed) = time(|| verify_events(&stream, &events, &keys, Some(anchor(&events))));
            assert!(verified.is_valid(), "{:?}", verified.first_break);
            assert_eq!(verified.signatures_verified, events.len() as u64);
            (events.len() as f64, elapsed)
        });
        report.add(name, format_count(events.len()), "ev/s", stats, Some(TARGET_VERIFY_SIGNED_PER_CORE));
    }

    for (name, count, signed) in [
        ("verify/stored/hash-only (sqlite, verify_stream)", STORED_HASH_ONLY_EVENTS, false),
        ("verify/stored/signed (sqlite, verify_stream)", STORED_SIGNED_EVENTS, true),
    ] {
        if !report.wants(name) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = stored_stream(dir.path(), count, if signed { &signers } else { &[] });
        let stats = measure(|| {
            let (verified, elapsed) = time(|| verify_stream(&db, "bench-stored").unwrap());
            assert!(verified.is_valid(), "{:?}", verified.first_break);
            assert_eq!(verified.events_verified, count as u64);
            (count as f64, elapsed)
        });
        let target = if signed { TARGET_VERIFY_SIGNED_PER_CORE } else { TARGET_VERIFY_HASH_ONLY };
        report.add(name, format_count(count), "ev/s", stats, Some(target));
    }
}

/// A constellation holding stream `bench-stored` of `count` events (signed alternately by
/// `signers`, whose public keys are registered).
fn stored_stream(dir: &Path, count: usize, signers: &[Ed25519Signer]) -> Arc<Constellation> {
    let db = Arc::new(Constellation::open(dir.join("stored.pactum")).unwrap());
    for signer in signers {
        db.put_signing_key(signer.key_id().as_str(), signer.verifying_key().to_bytes(), StreamOrigin::Local, START_MS)
            .unwrap();
    }
    let clock = Arc::new(ManualClock::new(START_MS));
    let stream_id = StreamId::new("bench-stored").unwrap();
    let stream =
        TranscriptStream::open(ConstellationEventStore::new(Arc::clone(&db)), stream_id, clock.clone()).unwrap();
    let kinds = kinds();
    let mut bodies = bodies(count, BODY_SEED).into_iter().enumerate().peekable();
    while bodies.peek().is_some() {
        clock.advance(1);
        let batch: Vec<NewEvent<'_>> = bodies
            .by_ref()
            .take(1000)
            .map(|(index, body)| NewEvent {
                kind: kinds[index % kinds.len()].clone(),
                body,
                signer: (!signers.is_empty()).then(|| &signers[index % signers.len()] as &dyn EventSigner),
                at_ms: None,
            })
            .collect();
        stream.append_batch(batch).unwrap();
    }
    db
}

// ---------------------------------------------------------------------------------------------
// 3. Canonicalization and strict parsing

fn bench_canonical(report: &mut Report) {
    const TO_CANONICAL: &str = "canon/to_canonical_string";
    const TO_STRING: &str = "canon/serde_json::to_string (reference)";
    const PARSE_STRICT: &str = "parse/parse_strict";
    const FROM_STR: &str = "parse/serde_json::from_str::<Value> (reference)";
    if !report.wants_any(&[TO_CANONICAL, TO_STRING, PARSE_STRICT, FROM_STR]) {
        return;
    }
    let documents = corpus(CORPUS_BYTES);
    let canonical: Vec<String> = documents.iter().map(|d| to_canonical_string(d).unwrap()).collect();
    let bytes: usize = canonical.iter().map(String::len).sum();
    let size = format!("{:.1} MB", bytes as f64 / 1e6);
    report.notes.push(format!(
        "JSON corpus: {} documents, {bytes} B canonical ({:.0} B/doc avg), {:.0}% of members non-ASCII-named; \
         MB/s = 10^6 B of canonical text per s (written, or read by the parsers); each pair is run interleaved",
        documents.len(),
        bytes as f64 / documents.len() as f64,
        non_ascii_member_share(&documents) * 100.0,
    ));

    let documents = &documents;
    let canonical = &canonical;
    let serializers: Vec<(&str, Case<'_>)> = vec![
        (
            TO_CANONICAL,
            Box::new(move || {
                let (written, elapsed) =
                    time(|| documents.iter().map(|d| black_box(to_canonical_string(d).unwrap()).len()).sum::<usize>());
                assert_eq!(written, bytes);
                (written as f64, elapsed)
            }),
        ),
        (
            TO_STRING,
            Box::new(move || {
                let (_, elapsed) = time(|| {
                    documents.iter().map(|d| black_box(serde_json::to_string(d).unwrap()).len()).sum::<usize>()
                });
                (bytes as f64, elapsed)
            }),
        ),
    ];
    let parsers: Vec<(&str, Case<'_>)> = vec![
        (
            PARSE_STRICT,
            Box::new(move || {
                let ((), elapsed) =
                    time(|| canonical.iter().for_each(|text| drop(black_box(parse_strict(text).unwrap()))));
                (bytes as f64, elapsed)
            }),
        ),
        (
            FROM_STR,
            Box::new(move || {
                let ((), elapsed) = time(|| {
                    canonical.iter().for_each(|text| drop(black_box(serde_json::from_str::<Value>(text).unwrap())))
                });
                (bytes as f64, elapsed)
            }),
        ),
    ];
    for group in [serializers, parsers] {
        run_group(report, group, &size, "MB/s");
    }
}

/// Share of object members (anywhere in the corpus) whose name is not pure ASCII.
fn non_ascii_member_share(documents: &[Value]) -> f64 {
    fn walk(value: &Value, counts: &mut (usize, usize)) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| walk(item, counts)),
            Value::Object(members) => {
                for (name, member) in members {
                    counts.0 += 1;
                    counts.1 += usize::from(!name.is_ascii());
                    walk(member, counts);
                }
            }
            _ => {}
        }
    }
    let mut counts = (0, 0);
    documents.iter().for_each(|document| walk(document, &mut counts));
    counts.1 as f64 / counts.0.max(1) as f64
}

/// Measures the wanted cases of `group` interleaved and adds them to the report (no targets).
fn run_group(report: &mut Report, group: Vec<(&str, Case<'_>)>, size: &str, unit: &'static str) {
    let (names, cases): (Vec<&str>, Vec<Case<'_>>) = group.into_iter().filter(|(name, _)| report.wants(name)).unzip();
    if cases.is_empty() {
        return;
    }
    for (name, stats) in names.into_iter().zip(measure_interleaved(cases)) {
        report.add(name, size.to_owned(), unit, stats, None);
    }
}

// ---------------------------------------------------------------------------------------------
// Breakdown: where the CPU time of one event goes (in memory, no I/O)

fn bench_breakdown(report: &mut Report) {
    /// Distinct events (their bodies stay in the 2 MiB L2 cache) and passes over them.
    const DISTINCT: usize = 1_000;
    const PASSES: usize = 20;
    const COUNT: usize = DISTINCT * PASSES;
    const NAMES: [&str; 7] = [
        "breakdown/to_canonical_string(body)",
        "breakdown/canonical_content (hash input)",
        "breakdown/sha256(tag + content)",
        "breakdown/compute_hash (content + sha256)",
        "breakdown/Event::seal unsigned",
        "breakdown/parse_strict(stored body)",
        "breakdown/ed25519 sign",
    ];
    fn per_event<'a>(work: impl Fn() + 'a) -> Case<'a> {
        Box::new(move || {
            let ((), elapsed) = time(|| (0..PASSES).for_each(|_| work()));
            (COUNT as f64, elapsed)
        })
    }
    if !report.wants_any(&NAMES) {
        return;
    }
    let stream = StreamId::new("bench-breakdown").unwrap();
    let signer = &signers()[0];
    let events = &build_chain(&stream, DISTINCT, &[]);
    let contents: &Vec<String> = &events.iter().map(|e| e.unsealed().canonical_content().unwrap()).collect();
    let bodies: &Vec<String> = &events.iter().map(|e| to_canonical_string(&e.body).unwrap()).collect();
    let cases: [Case<'_>; 7] = [
        per_event(|| events.iter().for_each(|e| drop(black_box(to_canonical_string(&e.body).unwrap())))),
        per_event(|| events.iter().for_each(|e| drop(black_box(e.unsealed().canonical_content().unwrap())))),
        per_event(|| {
            contents.iter().for_each(|c| {
                black_box(Digest::tagged(EVENT_HASH_TAG, c.as_bytes()));
            })
        }),
        per_event(|| {
            events.iter().for_each(|e| {
                black_box(e.compute_hash().unwrap());
            })
        }),
        per_event(|| {
            for e in events {
                let body = e.body.clone();
                let sealed = Event::seal(e.stream.clone(), e.seq, e.kind.clone(), body, e.at_ms, e.prev, None);
                drop(black_box(sealed.unwrap()));
            }
        }),
        per_event(|| bodies.iter().for_each(|b| drop(black_box(parse_strict(b).unwrap())))),
        per_event(|| {
            events.iter().for_each(|e| {
                black_box(signer.sign_digest(&e.hash));
            })
        }),
    ];
    let group: Vec<(&str, Case<'_>)> = NAMES.into_iter().zip(cases).collect();
    if group.iter().any(|(name, _)| report.wants(name)) {
        let average = contents.iter().map(String::len).sum::<usize>() / contents.len();
        report.notes.push(format!(
            "breakdown: {DISTINCT} distinct events x {PASSES} passes (cache-hot), {average} B of canonical \
             content hashed per event (avg); cases run interleaved; Event::seal includes one body clone"
        ));
    }
    run_group(report, group, &format_count(COUNT), "ev/s");
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let mut report = Report { filters, rows: Vec::new(), notes: Vec::new() };
    print_header();
    if !report.filters.is_empty() {
        println!("  filter:   {}", report.filters.join(" | "));
    }
    let sample = bodies(1000, BODY_SEED);
    let body_bytes = sample.iter().map(|body| to_canonical_string(body).unwrap().len()).sum::<usize>() / sample.len();
    println!("  bodies:   ~{body_bytes} B canonical JSON per event body (avg; nested objects, unicode, a float)");
    let started = Instant::now();
    eprintln!("running (progress on stderr, table on stdout)...");
    bench_append(&mut report);
    bench_verify(&mut report);
    bench_canonical(&mut report);
    bench_breakdown(&mut report);
    report.notes.push(format!("total bench time {:.1} s", started.elapsed().as_secs_f64()));
    report.print();
}
