//! Crash test of negotiation sessions: a child process (`negotiation-workload`) runs negotiations
//! one after another on one constellation — discovery, rounds, approval, ledger settlement,
//! receipt — and is killed with SIGKILL at random moments. Each new child first recovers the
//! sessions its killed predecessor left. The test goes on until at least 50 kills have landed
//! and at least 100 negotiations have started, then lets a last child recover everything.
//!
//! Kill moments: one cycle in four kills the child 0 to 10 ms after spawning it (start-up,
//! opening the file, recovery); the others wait for its `ready` line and kill it 0 to 60 ms
//! later, while negotiations run (a debug-build negotiation takes several milliseconds, so kills
//! land in every phase). Delays come from a seeded RNG; `PACTUM_CRASH_SEED=<n>` replays them.
//!
//! Afterwards:
//! - every session is terminal (completed or failed) — recovery finished every one;
//! - `constellation check` is sound: every transcript verifies, every session replays with
//!   every decision recomputed, each session's recorded rail steps are exactly the ledger's
//!   transfers, no ended session holds money in escrow, the ledger balances;
//! - no payment was applied twice: providers hold exactly the sum of the completed sessions'
//!   prices, the buyer's wallet the funding minus that sum, and the sum of all balances is zero.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pactum_memory::{AccountKind, Constellation};
use pactum_runtime::check_constellation;
use pactum_runtime::session::model::Phase;
use pactum_runtime::session::shell::read_session_state;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Kills that must land; the requirement is at least 50.
const KILLS_MIN: usize = 55;
/// Negotiations that must be started; the requirement is at least 100.
const NEGOTIATIONS_MIN: usize = 110;
/// Negotiations each child is given (it is usually killed before it finishes them).
const BATCH: u64 = 8;
const EARLY_KILL_EVERY: usize = 4;
const EARLY_DELAY_MAX_US: u64 = 10_000;
const DELAY_MAX_US: u64 = 60_000;
/// A bound on cycles, so that a child that keeps finishing before the kill cannot loop forever.
const CYCLES_MAX: usize = 400;
const SIGKILL: i32 = 9;

fn spawn(db_path: &Path, first_seed: u64, count: u64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_negotiation-workload"))
        .arg(db_path)
        .arg(first_seed.to_string())
        .arg(count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn negotiation-workload")
}

/// Waits for the child and returns (killed, stdout, stderr).
fn reap(
    mut child: std::process::Child,
    mut reader: Option<BufReader<std::process::ChildStdout>>,
) -> (bool, String, String) {
    let status = child.wait().expect("wait");
    let mut stdout = String::new();
    match reader.as_mut() {
        Some(reader) => {
            reader.read_to_string(&mut stdout).expect("stdout");
        }
        None => {
            if let Some(mut pipe) = child.stdout.take() {
                pipe.read_to_string(&mut stdout).expect("stdout");
            }
        }
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    let killed = status.signal() == Some(SIGKILL);
    assert!(killed || status.success(), "the workload failed ({status}):\n{stderr}");
    (killed, stdout, stderr)
}

#[test]
fn killed_negotiations_are_recovered_and_no_payment_is_applied_twice() {
    let seed = std::env::var("PACTUM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    eprintln!("session crash test seed: {seed} (PACTUM_CRASH_SEED={seed} replays the kill delays)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("crash.db");

    let mut kills = 0;
    let mut next_seed = 1;
    let mut recovered_phases: Vec<String> = Vec::new();
    let mut cycles = 0;
    loop {
        let started = Constellation::open(&db_path).expect("open").session_streams("session:").expect("sessions").len();
        if kills >= KILLS_MIN && started >= NEGOTIATIONS_MIN {
            break;
        }
        cycles += 1;
        assert!(cycles <= CYCLES_MAX, "seed {seed}: {kills} kills in {CYCLES_MAX} cycles");
        let mut child = spawn(&db_path, next_seed, BATCH);
        next_seed += BATCH;
        let mut reader = None;
        let delay_us = if cycles % EARLY_KILL_EVERY == 0 {
            rng.next_u64() % EARLY_DELAY_MAX_US
        } else {
            let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
            let mut line = String::new();
            loop {
                line.clear();
                if stdout.read_line(&mut line).expect("read") == 0 || line.trim() == "ready" {
                    break;
                }
                recovered_phases.push(line.split_whitespace().nth(2).unwrap_or_default().to_owned());
            }
            reader = Some(stdout);
            rng.next_u64() % DELAY_MAX_US
        };
        // The deliberate random kill moment: the only sleep in this test.
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill();
        let (killed, stdout, _) = reap(child, reader);
        kills += usize::from(killed);
        recovered_phases.extend(
            stdout
                .lines()
                .filter(|l| l.starts_with("recovered "))
                .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned()),
        );
    }
    // A last child, not killed, recovers whatever the last kill left.
    let (_, stdout, _) = reap(spawn(&db_path, next_seed, 0), None);
    recovered_phases.extend(
        stdout
            .lines()
            .filter(|l| l.starts_with("recovered "))
            .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned()),
    );
    eprintln!(
        "{kills} kills over {cycles} cycles; {} sessions recovered ({recovered_phases:?})",
        recovered_phases.len()
    );

    let db = Arc::new(Constellation::open(&db_path).expect("open"));
    let sessions = db.session_streams("session:").expect("sessions");
    assert!(sessions.len() >= NEGOTIATIONS_MIN, "seed {seed}: {} negotiations", sessions.len());
    assert!(kills >= KILLS_MIN);

    let report = check_constellation(&db).expect("check");
    assert!(report.is_sound(), "seed {seed}: {:#?}", report.problems);
    assert!(report.sessions_resumable.is_empty(), "seed {seed}: unfinished {:?}", report.sessions_resumable);
    assert_eq!(report.sessions_checked as usize, sessions.len());

    let mut paid_by_provider = std::collections::BTreeMap::<String, i64>::new();
    for row in &sessions {
        let session_id = &row.stream_id["session:".len()..];
        let state = read_session_state(&db, session_id).expect("state");
        assert!(state.phase.is_terminal(), "seed {seed}: {session_id} is {}", state.phase.as_str());
        if state.phase == Phase::Completed {
            let agreement = state.agreement.expect("agreement");
            *paid_by_provider.entry(agreement.provider).or_default() +=
                i64::try_from(agreement.price.amount_minor).expect("small");
        }
    }
    let accounts = db.accounts().expect("accounts");
    let balance = |kind: AccountKind| accounts.iter().filter(|a| a.kind == kind).map(|a| a.balance_minor).sum::<i64>();
    let paid: i64 = paid_by_provider.values().sum();
    for (provider, amount) in &paid_by_provider {
        let account = accounts.iter().find(|a| a.account_id == format!("provider:{provider}:USD")).expect("account");
        assert_eq!(
            account.balance_minor, *amount,
            "seed {seed}: {provider} was paid exactly once per completed session"
        );
    }
    assert_eq!(balance(AccountKind::Provider), paid, "seed {seed}: nothing paid without a completed session");
    assert_eq!(balance(AccountKind::Escrow), 0, "seed {seed}: no money left held");
    let funded = -balance(AccountKind::External);
    assert_eq!(
        balance(AccountKind::Wallet),
        funded - paid,
        "seed {seed}: the wallet paid exactly once per completed session"
    );
    assert_eq!(
        accounts.iter().map(|a| a.balance_minor).sum::<i64>(),
        0,
        "seed {seed}: the sum of all balances is unchanged"
    );
}
