//! Versioned memory benchmarks on one text block with 10,000 versions.
//!
//! `cargo bench -p pactum-memory --bench memory [-- log]`
//!
//! The block holds about 3 KB of text in 40 to 60 lines; each version replaces, inserts or
//! deletes one line (a seeded generator picks which), written by the partner through
//! `write_block`: a Loro commit, the update and frontiers, the rendered content as a keyframe or
//! splice, one SQLite transaction (`synchronous=NORMAL`). Cases:
//!
//! - commit + persist: every one of the 10,000 writes (consolidations included);
//! - load latest: a fresh process's load of the working Loro document (the shallow snapshot of
//!   the last consolidation + the updates after it), a read of the latest content, and a load of
//!   the whole history (full snapshot + updates);
//! - diff: two random versions, unified diff included;
//! - rollback: to a random version (a new version);
//! - plain Loro time travel (`checkout` to a random version on the loaded document), for
//!   comparison;
//! - bytes stored per version, by table.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use pactum_memory::blocks::{Author, BlockKind, Change, NewBlock, Permission, Write};
use pactum_memory::{AgentRecord, AgentRole, Constellation, SecretSeed};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VERSIONS: u64 = 10_000;
const DIFFS: usize = 500;
const ROLLBACKS: usize = 100;
const LOADS: usize = 30;
const CHECKOUTS: usize = 10;
const LOG_APPENDS: u64 = 5_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn line(rng: &mut Rng) -> String {
    const WORDS: &[&str] = &[
        "provider",
        "quote",
        "weather",
        "latency",
        "budget",
        "receipt",
        "accepted",
        "counter",
        "storage",
        "cheaper",
        "prefers",
        "EUR",
        "USD",
        "never",
        "always",
        "before",
        "noon",
        "urgent",
        "banded",
        "concession",
    ];
    (0..9).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
}

/// A new constellation at `path` with the agent `buyer`.
fn with_buyer(path: &std::path::Path) -> Constellation {
    let db = Constellation::open(path).unwrap();
    db.ensure_agent(AgentRecord {
        agent_id: "buyer".into(),
        display_name: "buyer".into(),
        role: AgentRole::Buyer,
        key_id: "agent:buyer#1".into(),
        public_key: [7; 32],
        secret_key: SecretSeed::new([7; 32]),
        created_at_ms: 0,
    })
    .unwrap();
    db
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn report(name: &str, samples: &mut [Duration], target: &str) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!("{name:<34} n={:<6} p50 {:>10}  p99 {:>10}   target {target}", samples.len(), ms(p50), ms(p99));
}

fn main() {
    // `cargo bench -p pactum-memory --bench memory -- log` runs the rolling-log case alone.
    if std::env::args().skip(1).any(|arg| arg == "log") {
        rolling_log();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let db = with_buyer(&path);
    db.create_block(
        NewBlock {
            owner: "buyer".into(),
            label: "notes".into(),
            description: "benchmark".into(),
            kind: BlockKind::Working,
            template: None,
            char_limit: Some(20_000),
            permission: Permission::ReadWrite,
            pinned: false,
            initial: None,
        },
        &Author::Partner,
        0,
    )
    .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut lines: Vec<String> = (0..50).map(|_| line(&mut rng)).collect();
    let mut commits = Vec::with_capacity(VERSIONS as usize);
    let mut at_ms = 1_000;
    // Version 1 is the creation; 2..=VERSIONS are edits.
    for _ in 1..VERSIONS {
        let choice = rng.below(100);
        let index = rng.below(lines.len() as u64) as usize;
        if (choice < 25 && lines.len() < 60) || lines.len() < 40 {
            lines.insert(index, line(&mut rng));
        } else if choice < 40 {
            lines.remove(index);
        } else {
            lines[index] = line(&mut rng);
        }
        let text = lines.join("\n") + "\n";
        at_ms += 1_000;
        let write =
            Write { author: Author::Partner, change: Change::Set(text), base: None, message: None, op: None, at_ms };
        let started = Instant::now();
        db.write_block("buyer", "notes", write).unwrap();
        commits.push(started.elapsed());
    }
    let block = db.block("buyer", "notes", &Author::Partner).unwrap();
    assert_eq!(block.version_count, VERSIONS);
    println!("block with {} versions, {} characters now\n", block.version_count, block.chars);
    let mut last_thousand = commits[commits.len() - 1_000..].to_vec();
    report("commit + persist (all)", &mut commits, "p50 <= 1 ms");
    report("commit + persist (versions 9k-10k)", &mut last_thousand, "p50 <= 1 ms");

    drop(db);
    let mut loads = Vec::new();
    let mut reads = Vec::new();
    let mut histories = Vec::new();
    let mut cold_writes = Vec::new();
    for _ in 0..LOADS {
        let fresh = Constellation::open(&path).unwrap();
        let started = Instant::now();
        let doc = fresh.load_block_doc("buyer", "notes").unwrap();
        loads.push(started.elapsed());
        assert!(doc.len_changes() > 0);
        let started = Instant::now();
        fresh.block_content("buyer", "notes", &Author::Partner, None).unwrap();
        reads.push(started.elapsed());
        drop(fresh);
        let fresh = Constellation::open(&path).unwrap();
        let started = Instant::now();
        fresh.load_block_history("buyer", "notes").unwrap();
        histories.push(started.elapsed());
        drop(fresh);
        // What `pactum memory append` does after opening the file: load, change, commit.
        let fresh = Constellation::open(&path).unwrap();
        at_ms += 1_000;
        let write = Write {
            author: Author::Partner,
            change: Change::Append("one more line".into()),
            base: None,
            message: None,
            op: None,
            at_ms,
        };
        let started = Instant::now();
        fresh.write_block("buyer", "notes", write).unwrap();
        cold_writes.push(started.elapsed());
    }
    report("load latest (Loro document)", &mut loads, "<= 5 ms");
    report("read latest content", &mut reads, "-");
    report("load whole history (Loro document)", &mut histories, "-");
    report("write from a fresh process", &mut cold_writes, "-");

    let db = Constellation::open(&path).unwrap();
    let mut diffs = Vec::new();
    for _ in 0..DIFFS {
        let a = 1 + rng.below(VERSIONS);
        let b = 1 + rng.below(VERSIONS);
        let started = Instant::now();
        let diff = db.diff_block("buyer", "notes", &Author::Partner, a, b).unwrap();
        diffs.push(started.elapsed());
        assert!(a == b || !diff.unified.is_empty() || diff.before == diff.after);
    }
    report("diff two random versions", &mut diffs, "p50 <= 20 ms");

    let doc = db.load_block_history("buyer", "notes").unwrap();
    let mut checkouts = Vec::new();
    for _ in 0..CHECKOUTS {
        let seq = 1 + rng.below(VERSIONS);
        let (_, version, expected) = db.block_content("buyer", "notes", &Author::Partner, Some(seq)).unwrap();
        let frontiers = frontiers_of(&path, seq);
        let started = Instant::now();
        doc.checkout(&frontiers).unwrap();
        let text = doc.get_text("content").to_string();
        checkouts.push(started.elapsed());
        assert_eq!(text, expected, "version {}", version.seq);
        doc.checkout_to_latest();
    }
    report("plain Loro checkout (comparison)", &mut checkouts, "-");

    let mut rollbacks = Vec::new();
    for _ in 0..ROLLBACKS {
        let seq = 1 + rng.below(VERSIONS);
        at_ms += 1_000;
        let write = Write {
            author: Author::Partner,
            change: Change::Rollback(seq),
            base: None,
            message: None,
            op: None,
            at_ms,
        };
        let started = Instant::now();
        db.write_block("buyer", "notes", write).unwrap();
        rollbacks.push(started.elapsed());
    }
    report("rollback to a random version", &mut rollbacks, "<= 50 ms");

    drop(db);
    bytes_per_version(&path);
    rolling_log();
}

/// What every negotiation does: one entry appended to a full outcomes log (20,000 characters,
/// the oldest entries rolling off).
fn rolling_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_buyer(&dir.path().join("log.db"));
    db.ensure_default_blocks("buyer", 0).unwrap();
    let mut appends = Vec::new();
    for n in 0..LOG_APPENDS {
        let entry = serde_json::json!({
            "session": format!("s-{n:016x}"), "intent_type": "compute.inference", "outcome": "completed",
            "provider": "tensor-forge", "price_minor": 30 + n % 7, "currency": "USD", "rounds": 4, "at_ms": 1_700_000_000_000_u64 + n,
        });
        let write = Write {
            author: Author::System,
            change: Change::Log { entry, key: Some(format!("session:{n}")) },
            base: None,
            message: Some(format!("session {n} ended")),
            op: None,
            at_ms: n,
        };
        let started = Instant::now();
        db.write_block("buyer", "outcomes", write).unwrap();
        appends.push(started.elapsed());
    }
    println!();
    let mut last = appends[appends.len() - 1_000..].to_vec();
    report("outcomes log append (last 1,000)", &mut last, "-");
    report("outcomes log append (all)", &mut appends, "-");
}

fn frontiers_of(path: &std::path::Path, seq: u64) -> loro::Frontiers {
    let raw = rusqlite::Connection::open(path).unwrap();
    let bytes: Vec<u8> =
        raw.query_row("SELECT frontiers FROM memory_versions WHERE seq = ?1", [seq as i64], |r| r.get(0)).unwrap();
    loro::Frontiers::decode(&bytes).unwrap()
}

fn bytes_per_version(path: &std::path::Path) {
    let raw = rusqlite::Connection::open(path).unwrap();
    let (versions, updates, frontiers, keyframes, splices, meta): (i64, i64, i64, i64, i64, i64) = raw
        .query_row(
            "SELECT count(*), sum(length(update_blob)), sum(length(frontiers)), sum(coalesce(length(content), 0)),
                    sum(coalesce(length(splice), 0)), sum(length(op) + length(author) + length(message) + 32 + 48)
             FROM memory_versions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    let (snapshot, shallow): (i64, i64) = raw
        .query_row("SELECT sum(length(snapshot)), sum(length(shallow)) FROM memory_snapshots", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    let file = std::fs::metadata(path).unwrap().len();
    let per = |bytes: i64| bytes as f64 / versions as f64;
    println!("\nbytes per version over {versions} versions:");
    println!("  Loro update            {:>8.1}", per(updates));
    println!("  Loro frontiers         {:>8.1}", per(frontiers));
    println!(
        "  content keyframes      {:>8.1}   (the cache that makes reads, diffs and rollbacks fast)",
        per(keyframes)
    );
    println!("  content splices        {:>8.1}", per(splices));
    println!("  metadata (approx.)     {:>8.1}", per(meta));
    println!("  snapshot (latest)      {:>8.1}   ({snapshot} bytes, replaced on consolidation)", per(snapshot));
    println!("  shallow snapshot       {:>8.1}   ({shallow} bytes, replaced on consolidation)", per(shallow));
    println!("  whole file, vacuumed   {:>8.1}   ({file} bytes)", file as f64 / versions as f64);
}
