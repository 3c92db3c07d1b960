//! Crash test of settlement graphs: a child process (`graph-workload`) commits graphs of 20 or 21
//! edges one after another (every fifth one fails by design after holding its other edges) and
//! is killed with SIGKILL at random moments — while preparing, at the commit point, while
//! committing. Each new child first finishes the graphs its predecessor left. After at least 30
//! kills and 40 graphs, a last child recovers everything, and then:
//! - every graph is `committed` or `failed`;
//! - no escrow holds money, the ledger balances;
//! - the payee holds exactly what the committed graphs pay (210 minor units each): every edge of
//!   a committed graph paid once, no edge of a failed one paid at all.
//!
//! Kill delays come from a seeded RNG; `PACTUM_CRASH_SEED=<n>` replays them.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pactum_memory::Constellation;
use pactum_runtime::graph::{GraphState, get_graph_state};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

const KILLS_MIN: usize = 30;
const GRAPHS_MIN: u64 = 40;
const BATCH: u64 = 6;
const DELAY_MAX_US: u64 = 40_000;
const CYCLES_MAX: usize = 300;
const SIGKILL: i32 = 9;
/// What one committed graph pays the hub: 1 + 2 + ... + 20.
const GRAPH_TOTAL: i64 = 210;

fn spawn(db_path: &Path, first: u64, count: u64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_graph-workload"))
        .arg(db_path)
        .arg(first.to_string())
        .arg(count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graph-workload")
}

/// Waits for the child; returns whether SIGKILL ended it, and the rest of its stdout.
fn reap(mut child: std::process::Child, mut stdout: BufReader<std::process::ChildStdout>) -> (bool, String) {
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("stdout");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    let killed = status.signal() == Some(SIGKILL);
    assert!(killed || status.success(), "the workload failed ({status}):\n{stderr}");
    (killed, rest)
}

#[test]
fn killed_graph_commits_leave_every_edge_paid_or_none() {
    let seed = std::env::var("PACTUM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    eprintln!("graph crash test seed: {seed} (PACTUM_CRASH_SEED={seed} replays the kill delays)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("graphs.db");
    let (mut kills, mut cycles, mut next) = (0, 0, 1);
    let mut recovered = Vec::new();
    while kills < KILLS_MIN || next <= GRAPHS_MIN {
        cycles += 1;
        assert!(cycles <= CYCLES_MAX, "seed {seed}: {kills} kills in {CYCLES_MAX} cycles");
        let mut child = spawn(&db_path, next, BATCH);
        next += BATCH;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).expect("read") == 0 || line.trim() == "ready" {
                break;
            }
            recovered.push(line.trim().to_owned());
        }
        // The deliberate random kill moment.
        std::thread::sleep(Duration::from_micros(rng.next_u64() % DELAY_MAX_US));
        let _ = child.kill();
        let (killed, _) = reap(child, stdout);
        kills += usize::from(killed);
    }
    let mut last = spawn(&db_path, next, 0);
    let stdout = BufReader::new(last.stdout.take().expect("piped"));
    let (_, rest) = reap(last, stdout);
    recovered.extend(rest.lines().filter(|l| l.starts_with("recovered ")).map(str::to_owned));
    eprintln!("{kills} kills over {cycles} cycles; recovered: {recovered:?}");

    let db = Constellation::open(&db_path).expect("open");
    assert!(db.unfinished_graphs().expect("unfinished").is_empty(), "seed {seed}");
    let mut committed = 0;
    for number in 1..next {
        let Some(status) = get_graph_state(&db, &format!("g-{number}")).expect("state") else { continue };
        match status.state {
            GraphState::Committed => {
                assert_ne!(number % 5, 0, "seed {seed}: g-{number} cannot be paid");
                committed += 1;
            }
            GraphState::Failed => {}
            other => panic!("seed {seed}: g-{number} is {}", other.as_str()),
        }
    }
    assert!(committed > 0, "seed {seed}: no graph committed");
    let ledger = db.check_ledger().expect("check");
    assert!(ledger.is_sound(), "seed {seed}: {ledger:?}");
    let accounts = db.accounts().expect("accounts");
    for account in &accounts {
        if account.account_id.starts_with("escrow:") {
            assert_eq!(account.balance_minor, 0, "seed {seed}: {} holds money", account.account_id);
        }
    }
    let hub = accounts.iter().find(|a| a.account_id == "provider:hub:USD").map_or(0, |a| a.balance_minor);
    assert_eq!(hub, committed * GRAPH_TOTAL, "seed {seed}: every committed edge paid once, no other");
}
