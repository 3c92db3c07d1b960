//! Seeded deterministic simulation of the runtime with injected faults (docs/HARDENING.md,
//! "Seeded simulation").
//!
//! Each seed runs a random sequence of sessions on one constellation file — intent types,
//! strategies, prices, deadlines, latency limits, automatic and interactive approval, cancels,
//! aborts, coalitions, purchases through a broker, a buyer's budget — under a `ManualClock` the simulation advances, with faults drawn from
//! the seed: providers timing out, refusing, unreachable (the simulated directory's failure
//! rates) or answering garbage (a loopback provider whose answers never check out), rail steps
//! refused or delivered twice (`pactum_runtime::faults`), and the process dying between two
//! durable writes (`Constellation::stop_before_write`). After a crash the runtime and its
//! connection are dropped, a new process (a new owner; the old one reported dead) opens the
//! file and recovers, and the workload goes on.
//!
//! Invariants are checked after every durable write (the ledger), after every operation (no
//! acknowledged event lost, no payment both paid and released, money conserved, the budget
//! kept, every session ended or resumable) and, in full (`check_constellation`: every transcript verifies and
//! replays, the ledger reconciles with the transcripts), after every recovery and at the end
//! of each seed, when a last process without faults recovers and every session must have ended.
//!
//! `PACTUM_SIM_SEEDS=<n>` runs seeds 0..n (default [`SEEDS_DEFAULT`]), `PACTUM_SIM_SEEDS=<a>..<b>`
//! seeds a..b; `PACTUM_SIM_SEED=<n>` replays one seed. A failure names its seed, its step and the command that replays it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pactum_memory::Constellation;
use pactum_runtime::faults::{Faults, RailFault};
use pactum_runtime::session::model::SessionState;
use pactum_runtime::session::shell::{AgentRuntime, Approver, KeyEntropy, NewSession, OfferToApprove, OwnerLiveness};
use pactum_runtime::{
    Clock as _, Currency, DEFAULT_DIRECTORY, Directory, Intent, IntentType, ManualClock, Money, RailPhase,
    SettlementMode, StaticPolicy, Urgency, check_constellation, strategy_named,
};
use pactum_transcripts::{Digest, Event};

/// Seeds run by `cargo test` (the suite's budget: about a minute on two cores, debug build).
const SEEDS_DEFAULT: u64 = 300;
/// Operations per seed, at most (each a session or an abort; crashes and recoveries come on top).
const OPERATIONS_PER_SEED_MAX: u64 = 8;
/// How far ahead a crash is armed, in writes (a session makes one to five).
const CRASH_WRITES_AHEAD_MAX: u64 = 12;
/// Crashes per seed, at most, so a seed always ends.
const CRASHES_PER_SEED_MAX: u32 = 6;
const START_MS: u64 = 1_767_225_600_000;
const REPLAY: &str = "cargo test -p pactum-runtime --test simulation";

fn count(what: impl Into<String>) {
    COVERAGE.with(|coverage| *coverage.borrow_mut().entry(what.into()).or_default() += 1);
}

thread_local! {
    /// What the seeds exercised, printed at the end (`--nocapture`) to show the faults were hit.
    static COVERAGE: std::cell::RefCell<BTreeMap<String, u64>> = const { std::cell::RefCell::new(BTreeMap::new()) };
    /// The step being run, for the failure message of a panic anywhere below.
    static STEP: Cell<u64> = const { Cell::new(0) };
}

#[test]
fn seeded_simulation_keeps_every_invariant() {
    for seed in seeds() {
        let outcome = std::panic::catch_unwind(|| Sim::new(seed).run());
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let step = STEP.with(Cell::get);
            panic!("simulation seed {seed} failed at step {step}: {message}\nreplay: PACTUM_SIM_SEED={seed} {REPLAY}");
        }
    }
    let lines: Vec<String> =
        COVERAGE.with(|coverage| coverage.borrow().iter().map(|(what, n)| format!("{n:>8}  {what}")).collect());
    eprintln!("simulation of seeds {:?}:\n{}", seeds(), lines.join("\n"));
}

/// A seed runs the same steps and writes the same events every time: a failure replays.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 92, 203] {
        let first = Sim::new(seed).run();
        let second = Sim::new(seed).run();
        assert_eq!(first.0, second.0, "seed {seed}: the steps differ");
        assert_eq!(first.1, second.1, "seed {seed}: the events differ");
    }
}

/// The seeds to run: one (`PACTUM_SIM_SEED=n`), `0..n` or `a..b` (`PACTUM_SIM_SEEDS`), or
/// `0..SEEDS_DEFAULT`.
fn seeds() -> std::ops::Range<u64> {
    let number = |name: &str, text: &str| text.trim().parse::<u64>().unwrap_or_else(|_| panic!("{name}={text}"));
    if let Ok(seed) = std::env::var("PACTUM_SIM_SEED") {
        let seed = number("PACTUM_SIM_SEED", &seed);
        return seed..seed + 1;
    }
    match std::env::var("PACTUM_SIM_SEEDS") {
        Ok(text) => match text.split_once("..") {
            Some((from, to)) => number("PACTUM_SIM_SEEDS", from)..number("PACTUM_SIM_SEEDS", to),
            None => 0..number("PACTUM_SIM_SEEDS", &text),
        },
        Err(_) => 0..SEEDS_DEFAULT,
    }
}

/// SplitMix64: the simulation's one source of randomness, from the seed.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, stream: &[u8]) -> Self {
        let digest = Digest::tagged(b"pactum simulation\0", &[&seed.to_be_bytes()[..], stream].concat());
        let mut first = [0_u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        Self(u64::from_be_bytes(first))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Key seeds from the seed and a counter.
#[derive(Debug)]
struct SimEntropy {
    seed: u64,
    drawn: AtomicU64,
}

impl KeyEntropy for SimEntropy {
    fn key_seed(&self) -> [u8; 32] {
        let n = self.drawn.fetch_add(1, Ordering::SeqCst);
        *Digest::tagged(b"simulation entropy\0", &[self.seed.to_be_bytes(), n.to_be_bytes()].concat()).as_bytes()
    }
}

/// Only the current process is alive: every earlier one has crashed.
#[derive(Debug, Default)]
struct SimLiveness(Mutex<String>);

impl OwnerLiveness for SimLiveness {
    fn is_alive(&self, owner: &str) -> bool {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) == owner
    }
}

/// Rail faults drawn from the seed, in the order the steps happen.
#[derive(Debug)]
struct SimFaults {
    rng: Mutex<SplitMix>,
    refuse_percent: u64,
    duplicate_percent: u64,
    enabled: AtomicBool,
}

impl Faults for SimFaults {
    fn rail_step(&self, _payment_id: &str, phase: RailPhase) -> Option<RailFault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let draw = rng.below(100);
        let fault = if draw < self.refuse_percent {
            Some(RailFault::Refuse)
        } else if draw < self.refuse_percent + self.duplicate_percent {
            Some(RailFault::Duplicate)
        } else {
            None
        };
        if let Some(fault) = fault {
            count(format!("rail fault {fault:?} at {}", phase.as_str()));
        }
        fault
    }
}

/// Records every event the runtime reports durable, and checks the ledger after each write.
struct Acknowledge<'a> {
    db: &'a Constellation,
    acknowledged: &'a mut Vec<(String, u64, Digest)>,
    ledger_problem: &'a mut Option<String>,
    starting_minor: u64,
}

impl pactum_runtime::session::shell::SessionObserver for Acknowledge<'_> {
    fn on_event(&mut self, state: &SessionState, event: &Event) {
        self.acknowledged.push((event.stream.as_str().to_owned(), event.seq, event.hash));
        count(format!("event {}", event.kind.as_str()));
        // The last event of a write: the state is the durable one after it.
        if event.seq + 1 == state.next_seq && self.ledger_problem.is_none() {
            *self.ledger_problem = ledger_problem(self.db, self.starting_minor);
        }
    }
}

/// An interactive buyer: approves or declines, and may cancel at its `cancel_at`-th look.
struct SimApprover {
    approve: bool,
    cancel_at: Option<u32>,
    looked: u32,
}

impl Approver for SimApprover {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (self.approve, "client")
    }

    fn abort_requested(&mut self) -> Option<String> {
        self.looked += 1;
        (Some(self.looked) == self.cancel_at).then(|| "cancelled in the simulation".to_owned())
    }
}

/// The cheap ledger invariants: balanced per currency, nothing negative but the outside world,
/// every balance the sum of its transfers, money conserved (what came in from outside is what
/// the wallets were funded with), and no payment both paid to its provider and released.
fn ledger_problem(db: &Constellation, starting_minor: u64) -> Option<String> {
    let check = match db.check_ledger() {
        Ok(check) => check,
        Err(error) => return Some(format!("the ledger cannot be checked: {error}")),
    };
    if !check.is_sound() {
        return Some(format!("ledger unsound: {check:?}"));
    }
    let accounts = match db.accounts() {
        Ok(accounts) => accounts,
        Err(error) => return Some(format!("accounts unreadable: {error}")),
    };
    let mut external: BTreeMap<&str, i64> = BTreeMap::new();
    let mut wallets: BTreeMap<&str, i64> = BTreeMap::new();
    for account in &accounts {
        if account.account_id.starts_with("external:") {
            *external.entry(&account.currency).or_default() += account.balance_minor;
        } else if account.account_id.starts_with("wallet:") {
            *wallets.entry(&account.currency).or_default() += 1;
        }
    }
    for (currency, count) in &wallets {
        let funded = count * i64::try_from(starting_minor).unwrap_or(i64::MAX);
        let came_in = -external.get(currency).copied().unwrap_or(0);
        if came_in != funded {
            return Some(format!("{came_in} {currency} came in from outside, but {count} wallets were funded"));
        }
    }
    None
}

/// Payments both paid and released, read straight from the ledger's table.
fn paid_and_released(path: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("read-only connection");
    let mut statement = connection
        .prepare(
            "SELECT c.from_account FROM ledger_transfers c JOIN ledger_transfers a ON a.from_account = c.from_account
             WHERE c.from_account LIKE 'escrow:%' AND c.idempotency_key LIKE '%:commit'
               AND a.idempotency_key LIKE '%:abort'",
        )
        .expect("query");
    let rows = statement.query_map([], |row| row.get::<_, String>(0)).expect("rows");
    rows.collect::<Result<Vec<_>, _>>().expect("rows")
}

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("usd")).expect("money")
}

/// One simulated constellation and the processes that work on it, one after the other.
struct Sim {
    seed: u64,
    rng: SplitMix,
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
    entropy: Arc<SimEntropy>,
    liveness: Arc<SimLiveness>,
    faults: Arc<SimFaults>,
    directory: String,
    starting_minor: u64,
    crash_percent: u64,
    /// The write count of the current process at which it crashes, when a crash is armed.
    crash_at: Option<u64>,
    /// The buyer's budget (no window), set before the first operation in some seeds.
    budget_minor: Option<u64>,
    generation: u32,
    crashes: u32,
    db: Arc<Constellation>,
    runtime: AgentRuntime,
    /// Every event the runtime reported durable.
    acknowledged: Vec<(String, u64, Digest)>,
    /// How many of `acknowledged` the last check found stored.
    acknowledged_checked: usize,
    ledger_problem: Option<String>,
    /// What each step did, for the failure message.
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        STEP.with(|step| step.set(0));
        let mut rng = SplitMix::new(seed, b"workload");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simulation.db");
        let faults = Arc::new(SimFaults {
            rng: Mutex::new(SplitMix::new(seed, b"rail faults")),
            refuse_percent: rng.pick(&[0, 0, 5, 15, 40]),
            duplicate_percent: rng.pick(&[0, 10, 30]),
            enabled: AtomicBool::new(true),
        });
        let directory = simulated_directory(&mut rng);
        let starting_minor = rng.pick(&[100_000, 100_000, 150, 60]);
        let crash_percent = rng.pick(&[0, 30, 60, 90]);
        let clock = Arc::new(ManualClock::new(START_MS));
        let entropy = Arc::new(SimEntropy { seed, drawn: AtomicU64::new(0) });
        let liveness = Arc::new(SimLiveness::default());
        let (db, runtime) =
            open_process(&path, &clock, &entropy, &liveness, &faults, &directory, starting_minor, "sim-1");
        let budget_minor = rng.chance(30).then(|| rng.pick(&[5, 50, 200]));
        if let Some(max_amount_minor) = budget_minor {
            runtime.ensure_buyer(Currency::parse("USD").expect("usd")).expect("buyer");
            let budget = pactum_runtime::constraints::Constraint::Budget(pactum_runtime::constraints::Budget {
                max_amount_minor,
                currency: "USD".into(),
                window: None,
            });
            pactum_runtime::budget::set(&db, "buyer", "budget", &budget, START_MS).expect("budget");
        }
        Self {
            seed,
            rng,
            _dir: dir,
            path,
            clock,
            entropy,
            liveness,
            faults,
            directory,
            starting_minor,
            crash_percent,
            crash_at: None,
            budget_minor,
            generation: 1,
            crashes: 0,
            db,
            runtime,
            acknowledged: Vec::new(),
            acknowledged_checked: 0,
            ledger_problem: None,
            trace: Vec::new(),
        }
    }

    /// Runs the seed; returns what each step did and every event acknowledged, in order.
    fn run(mut self) -> (Vec<String>, Vec<(String, u64, Digest)>) {
        let operations = 1 + self.rng.below(OPERATIONS_PER_SEED_MAX);
        for _ in 0..operations {
            self.operate();
        }
        self.finish()
    }

    #[track_caller]
    fn fail(&self, detail: impl std::fmt::Display) -> ! {
        panic!("{detail}\n  seed {} ({} crashes); steps:\n    {}", self.seed, self.crashes, self.trace.join("\n    "))
    }

    fn next_step(&mut self, what: String) {
        let step = STEP.with(|step| {
            step.set(step.get() + 1);
            step.get()
        });
        self.trace.push(format!("{step}: {what}"));
    }

    /// With the given chance, arms a crash at the process's `n`-th write from now, for a random
    /// `n`; the crash stays armed across operations until a write reaches it. Otherwise (or once
    /// the seed has crashed enough) no crash is armed.
    fn arm_crash(&mut self, percent: u64) {
        if self.crashes >= CRASHES_PER_SEED_MAX || !self.rng.chance(percent) {
            self.disarm_crash();
            return;
        }
        let nth = 1 + self.rng.below(CRASH_WRITES_AHEAD_MAX);
        self.db.stop_before_write(nth);
        self.crash_at = Some(self.db.writes_attempted() + nth);
    }

    fn disarm_crash(&mut self) {
        self.db.stop_before_write(0);
        self.crash_at = None;
    }

    /// Whether a write reached the armed crash (the process is dead from that write on).
    fn crashed(&self) -> bool {
        self.crash_at.is_some_and(|at| self.db.writes_attempted() >= at)
    }

    fn request(&mut self) -> (NewSession, String) {
        let intent_type = self.rng.pick(&[
            "compute.inference",
            "compute.inference",
            "weather.data",
            "weather.data",
            "storage.blob",
            "storage.blob",
            "compute.inference",
            "nothing.sold",
        ]);
        let max_minor = self.rng.pick(&[1, 3, 5, 10, 30, 40, 60, 100, 500]);
        // The loopback provider answers in real time: its sessions wait the default two seconds,
        // so its answers arrive in time however loaded the machine is, and a seed replays.
        let latency = if self.directory.contains(GARBAGE_PROVIDER) {
            None
        } else {
            self.rng.pick(&[None, None, Some(50), Some(150), Some(1_000)])
        };
        let deadline = self.rng.pick(&[None, None, None, Some(100), Some(5_000)]).map(|ms| self.clock.now_ms() + ms);
        let urgency = self.rng.pick(&[Urgency::Low, Urgency::Normal, Urgency::High]);
        let strategy = self.rng.pick(&["baseline", "banded", "urgent"]);
        let rounds_max = self.rng.pick(&[1, 2, 3, 5]);
        let coalition: Vec<(String, u64)> = match self.rng.below(5) {
            0 => vec![("alice".into(), 1), ("bob".into(), 2)],
            1 => vec![("alice".into(), 3)],
            _ => Vec::new(),
        };
        let intent = Intent::new(
            IntentType::new(intent_type).expect("type"),
            "simulated",
            usd(max_minor),
            latency,
            deadline,
            urgency,
            SettlementMode::Escrow,
        )
        .expect("intent");
        let policy = pactum_runtime::policy::Policy::from_static(StaticPolicy { rounds_max, ..Default::default() });
        let seed = self.rng.next() % 1_000_000;
        let what = format!(
            "{intent_type} max {max_minor} latency {latency:?} deadline {deadline:?} {urgency:?} {strategy} \
             rounds {rounds_max} coalition {coalition:?} seed {seed}"
        );
        let request = NewSession {
            intent,
            policy,
            strategy: strategy_named(strategy).expect("strategy"),
            seed,
            auto_approve: true,
            preferences: None,
            constraints: Vec::new(),
            coalition,
        };
        (request, what)
    }

    /// One operation of the workload, with the chance of a crash somewhere in it.
    fn operate(&mut self) {
        self.clock.advance(self.rng.below(10_000));
        if self.crash_at.is_none() {
            self.arm_crash(self.crash_percent);
        }
        let (mut request, what) = self.request();
        let kind = self.rng.below(13);
        // A broker's purchase, when the operation delegates: checked like the session itself.
        let mut child = None;
        let mut observer = Acknowledge {
            db: &self.db,
            acknowledged: &mut self.acknowledged,
            ledger_problem: &mut self.ledger_problem,
            starting_minor: self.starting_minor,
        };
        let (label, outcome) = match kind {
            0..=4 => (
                "negotiate (auto)",
                self.runtime.negotiate(request, &mut pactum_runtime::session::shell::DeclineAll, &mut observer),
            ),
            5..=7 => {
                request.auto_approve = false;
                let mut approver = SimApprover {
                    approve: self.rng.chance(70),
                    cancel_at: self.rng.chance(30).then(|| 1 + self.rng.below(6) as u32),
                    looked: 0,
                };
                ("negotiate (interactive)", self.runtime.negotiate(request, &mut approver, &mut observer))
            }
            8..=9 => {
                // Created (one write of its own), then driven and closed.
                let outcome = self.runtime.create_session(request, &mut observer).and_then(|id| {
                    let state =
                        self.runtime.run(&id, &mut pactum_runtime::session::shell::DeclineAll, &mut observer)?;
                    if state.phase.is_terminal() { self.runtime.close_session(&id) } else { Ok(state) }
                });
                ("create then run", outcome)
            }
            12 => {
                request.coalition = Vec::new();
                let broker = pactum_runtime::session::shell::Broker {
                    agent_id: "broker".into(),
                    name: "Broker".into(),
                    margin_percent: self.rng.pick(&[0, 5, 20]),
                };
                let outcome = self
                    .runtime
                    .negotiate_delegated(
                        request,
                        &broker,
                        &mut pactum_runtime::session::shell::DeclineAll,
                        &mut observer,
                    )
                    .map(|delegated| {
                        let parent = delegated.parent.unwrap_or_else(|| delegated.child.clone());
                        child = Some(delegated.child);
                        parent
                    });
                ("negotiate through a broker", outcome)
            }
            _ => {
                let created = self.runtime.create_session(request, &mut observer);
                let outcome =
                    created.and_then(|id| self.runtime.abort_session(&id, "aborted in the simulation", &mut observer));
                ("create then abort", outcome)
            }
        };
        let crashed = self.crashed();
        let summary = match &outcome {
            Ok(state) => format!("{} {}", state.session_id().unwrap_or("-"), state.phase.as_str()),
            Err(error) => format!("error {}: {error}", error.code()),
        };
        self.next_step(format!("{label} {what} -> {summary}{}", if crashed { " (crashed)" } else { "" }));
        count(format!("operation {label}"));
        if crashed {
            count("crash in an operation");
            self.crash_and_recover();
        } else {
            match outcome {
                Ok(state) => {
                    self.check_ended_or_resumable(&state);
                    if let Some(child) = &child {
                        self.check_ended_or_resumable(child);
                    }
                }
                // A request the runtime refuses as given (a broker left no margin to buy with).
                Err(error) if error.code() == "INTENT_INVALID" => count("refused as invalid"),
                Err(error) => self.fail(format!("an operation failed without a crash: {error}")),
            }
        }
        self.check_cheap();
    }

    /// A session a run returned has ended, or waits for a release the rail keeps refusing.
    fn check_ended_or_resumable(&self, state: &SessionState) {
        match &state.failure {
            Some(failure) => count(format!("ended failed {}", failure.code)),
            None if state.phase.is_terminal() => count(format!("ended {}", state.phase.as_str())),
            None => count(format!("left in {} for recovery", state.phase.as_str())),
        }
        if !state.phase.is_terminal() && (state.aborting.is_none() || state.effects().is_empty()) {
            self.fail(format!(
                "session {:?} stopped in {} with nothing to resume",
                state.session_id(),
                state.phase.as_str()
            ));
        }
    }

    /// The process died: its runtime and connection go, a new process opens the file and
    /// recovers (and may crash in turn).
    fn crash_and_recover(&mut self) {
        self.crashes += 1;
        self.restart();
        self.arm_crash(self.crash_percent / 2);
        let recovered = self.recover_observed();
        let crashed = self.crashed();
        self.disarm_crash();
        self.next_step(format!(
            "recover as sim-{}: {}{}",
            self.generation,
            match &recovered {
                Ok(list) => list.iter().map(describe).collect::<Vec<_>>().join(", "),
                Err(error) => format!("error {error}"),
            },
            if crashed { " (crashed)" } else { "" }
        ));
        if crashed {
            count("crash in a recovery");
            return self.crash_and_recover();
        }
        let recovered = recovered.unwrap_or_else(|error| self.fail(format!("recovery failed: {error}")));
        for session in &recovered {
            count("session recovered after a crash");
            match &session.outcome {
                Ok(state) => self.check_ended_or_resumable(state),
                Err(error) => self.fail(format!("recovery of {} failed: {error}", session.session_id)),
            }
        }
        self.check_full(false);
        // Recovering again finds nothing to do and moves nothing.
        let transfers = self.transfer_count();
        let again = self.runtime.recover(&mut pactum_runtime::session::shell::Quiet);
        match again {
            Ok(list) if list.is_empty() && self.transfer_count() == transfers => {}
            Ok(list) => self.fail(format!(
                "a second recovery did something: {:?}",
                list.iter().map(|r| (&r.session_id, r.outcome.as_ref().map(|s| s.phase.as_str()))).collect::<Vec<_>>()
            )),
            Err(error) => self.fail(format!("a second recovery failed: {error}")),
        }
    }

    /// `recover` in the current process, every write it makes checked as it is acknowledged.
    fn recover_observed(
        &mut self,
    ) -> Result<Vec<pactum_runtime::session::shell::Recovered>, pactum_runtime::RuntimeError> {
        let mut observer = Acknowledge {
            db: &self.db,
            acknowledged: &mut self.acknowledged,
            ledger_problem: &mut self.ledger_problem,
            starting_minor: self.starting_minor,
        };
        self.runtime.recover(&mut observer)
    }

    /// A new process (owner `sim-<generation>`) on the file; every earlier one is dead.
    fn restart(&mut self) {
        self.generation += 1;
        self.crash_at = None;
        let owner = format!("sim-{}", self.generation);
        let (db, runtime) = open_process(
            &self.path,
            &self.clock,
            &self.entropy,
            &self.liveness,
            &self.faults,
            &self.directory,
            self.starting_minor,
            &owner,
        );
        // The old process's runtime and connection are gone with it.
        self.runtime = runtime;
        self.db = db;
    }

    fn transfer_count(&self) -> usize {
        let connection = rusqlite::Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("read-only connection");
        connection
            .query_row("SELECT count(*) FROM ledger_transfers", [], |row| row.get::<_, i64>(0))
            .map(|n| n as usize)
            .expect("count")
    }

    /// After every operation: the ledger, and the events acknowledged since the last check.
    fn check_cheap(&mut self) {
        if let Some(problem) = self.ledger_problem.take() {
            self.fail(format!("after a durable write: {problem}"));
        }
        if let Some(problem) = ledger_problem(&self.db, self.starting_minor) {
            self.fail(problem);
        }
        if let Some(max) = self.budget_minor {
            let statuses = pactum_runtime::budget::status(&self.db, "buyer", self.clock.now_ms())
                .unwrap_or_else(|error| self.fail(format!("budget unreadable: {error}")));
            for status in statuses {
                if let pactum_runtime::constraints::Tally::Budget { spent_minor } = status.tally
                    && spent_minor > max
                {
                    self.fail(format!("the buyer spent {spent_minor} with a budget of {max}"));
                }
            }
        }
        let both = paid_and_released(&self.path);
        if !both.is_empty() {
            self.fail(format!("payments both paid and released: {both:?}"));
        }
        self.check_acknowledged(self.acknowledged_checked);
    }

    /// Every acknowledged event from `from` on is stored with the hash it was acknowledged with.
    fn check_acknowledged(&mut self, from: usize) {
        let mut by_stream: BTreeMap<&str, Vec<(u64, Digest)>> = BTreeMap::new();
        for (stream, seq, hash) in &self.acknowledged[from..] {
            by_stream.entry(stream).or_default().push((*seq, *hash));
        }
        for (stream, expected) in by_stream {
            let stored: BTreeMap<u64, Digest> = match pactum_runtime::stream_events(&self.db, stream) {
                Ok((_, events)) => events.into_iter().map(|e| (e.seq, e.hash)).collect(),
                Err(error) => self.fail(format!("{stream} unreadable: {error}")),
            };
            for (seq, hash) in expected {
                if stored.get(&seq) != Some(&hash) {
                    self.fail(format!("acknowledged event {stream}#{seq} is lost or changed"));
                }
            }
        }
        self.acknowledged_checked = self.acknowledged.len();
    }

    /// The whole constellation: every transcript verifies and replays, the ledger reconciles
    /// with them, every acknowledged event is there; with `all_ended`, no session is left.
    fn check_full(&mut self, all_ended: bool) {
        self.check_cheap();
        self.check_acknowledged(0);
        let report = check_constellation(&self.db).unwrap_or_else(|error| self.fail(format!("check failed: {error}")));
        if !report.is_sound() {
            self.fail(format!("constellation check: {:#?}", report.problems));
        }
        if all_ended {
            if !report.sessions_resumable.is_empty() {
                self.fail(format!("sessions left unfinished: {:?}", report.sessions_resumable));
            }
            let rows = self.db.session_streams("session:").expect("sessions");
            let sessions: BTreeSet<String> = rows.iter().map(|row| row.stream_id.clone()).collect();
            for session in sessions {
                let id = &session["session:".len()..];
                let state = self.runtime.get_session_state(id).unwrap_or_else(|e| self.fail(e));
                if !state.phase.is_terminal() {
                    self.fail(format!("{id} is still {}", state.phase.as_str()));
                }
            }
        }
    }

    /// The last process stops; one without faults recovers, and every session has ended.
    fn finish(mut self) -> (Vec<String>, Vec<(String, u64, Digest)>) {
        self.faults.enabled.store(false, Ordering::SeqCst);
        self.restart();
        let recovered = self.recover_observed();
        self.next_step(format!(
            "final recovery as sim-{}: {}",
            self.generation,
            recovered.as_ref().map_or_else(|e| e.to_string(), |list| format!("{} sessions", list.len()))
        ));
        for session in recovered.unwrap_or_else(|error| self.fail(format!("final recovery failed: {error}"))) {
            if let Err(error) = session.outcome {
                self.fail(format!("final recovery of {} failed: {error}", session.session_id));
            }
        }
        self.check_full(true);
        (std::mem::take(&mut self.trace), std::mem::take(&mut self.acknowledged))
    }
}

/// A recovered session as the trace shows it: its id, phase and failure.
fn describe(recovered: &pactum_runtime::session::shell::Recovered) -> String {
    match &recovered.outcome {
        Ok(state) => format!(
            "{} {}{}",
            recovered.session_id,
            state.phase.as_str(),
            state.failure.as_ref().map(|f| format!(" {} ({})", f.code, f.detail)).unwrap_or_default()
        ),
        Err(error) => format!("{} error {error}", recovered.session_id),
    }
}

/// Opens the constellation and a runtime on it as process `owner`, the only one alive.
#[allow(clippy::too_many_arguments)]
fn open_process(
    path: &Path,
    clock: &Arc<ManualClock>,
    entropy: &Arc<SimEntropy>,
    liveness: &Arc<SimLiveness>,
    faults: &Arc<SimFaults>,
    directory: &str,
    starting_minor: u64,
    owner: &str,
) -> (Arc<Constellation>, AgentRuntime) {
    owner.clone_into(&mut liveness.0.lock().unwrap_or_else(PoisonError::into_inner));
    let db = Arc::new(Constellation::open(path).expect("open the constellation"));
    let runtime = AgentRuntime::new(
        db.clone(),
        clock.clone(),
        Directory::parse(directory, "simulated directory").expect("directory"),
        entropy.clone(),
        liveness.clone(),
        owner.to_owned(),
    )
    .with_starting_balance(starting_minor)
    .with_faults(faults.clone());
    (db, runtime)
}

/// The built-in directory with failure rates drawn from the seed.
fn simulated_directory(rng: &mut SplitMix) -> String {
    let scale = rng.pick(&[0, 1, 3, 8]);
    let text = DEFAULT_DIRECTORY
        .lines()
        .map(|line| {
            if line.starts_with("failures = ") {
                let mut rate = || (rng.below(10) * scale).min(33);
                format!(
                    "failures = {{ timeout_percent = {}, refusal_percent = {}, unreachable_percent = {} }}",
                    rate(),
                    rate(),
                    rate()
                )
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !rng.chance(30) {
        return text;
    }
    let key = pactum_transcripts::Ed25519Signer::from_seed(
        pactum_transcripts::KeyId::new(format!("agent:{GARBAGE_PROVIDER}#1")).expect("key id"),
        &[7; 32],
    );
    format!(
        "{text}\n[[remote]]\nid = \"{GARBAGE_PROVIDER}\"\nname = \"Garbage\"\nintent_types = [\"compute.inference\"]\n\
         currency = \"USD\"\nendpoint = \"{}\"\nkey_id = \"agent:{GARBAGE_PROVIDER}#1\"\npublic_key = \"{}\"\n",
        garbage_provider(),
        pactum_transcripts::public_key_to_base64url(&key.verifying_key())
    )
}

/// The loopback provider that only ever answers garbage: its address, started once.
fn garbage_provider() -> &'static str {
    static ADDRESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDRESS.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                answer_garbage(stream);
            }
        });
        address
    })
}

/// The remote provider's id and its pinned key (garbage never checks out whatever the key).
const GARBAGE_PROVIDER: &str = "garbage-compute";

/// Reads one request and answers it with garbage chosen by the session and round it names:
/// unavailable (`503`), an error status, bytes that are not JSON, an answer of another kind,
/// or an ask that is not sealed.
fn answer_garbage(mut stream: std::net::TcpStream) {
    use std::io::{Read as _, Write as _};
    let mut request = Vec::new();
    let mut buffer = [0_u8; 8192];
    let body_start = loop {
        let Ok(read) = stream.read(&mut buffer) else { return };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|n| n.trim().parse::<usize>().unwrap_or(0)))
        .unwrap_or(0);
    while request.len() < body_start + length {
        let Ok(read) = stream.read(&mut buffer) else { return };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let body: serde_json::Value = serde_json::from_slice(&request[body_start..]).unwrap_or_default();
    let session = body["session_id"].as_str().unwrap_or_default();
    let round = body["round"].as_u64().unwrap_or(0);
    let choice = Digest::tagged(b"garbage\0", format!("{session}/{round}").as_bytes()).as_bytes()[0] % 5;
    let (status, text) = match choice {
        0 => ("503 Service Unavailable", String::new()),
        1 => ("500 Internal Server Error", r#"{"error":{"message":"the provider broke"}}"#.to_owned()),
        2 => ("200 OK", "this is not JSON".to_owned()),
        3 => ("200 OK", r#"{"format":"pactum-remote/1","kind":"round.accept","message":{}}"#.to_owned()),
        _ => {
            let offer_seq = body["events"].as_array().and_then(|e| e.last()).and_then(|e| e["seq"].as_u64());
            let message = serde_json::json!({
                "round": round, "round_type": "ASK", "sender": GARBAGE_PROVIDER,
                "receiver": body["buyer"]["agent_id"], "price": { "amount_minor": 1, "currency": "USD" },
                "latency_ms": 1, "in_reply_to": offer_seq.unwrap_or(0),
            });
            (
                "200 OK",
                serde_json::json!({ "format": "pactum-remote/1", "kind": "round.ask", "message": message }).to_string(),
            )
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
