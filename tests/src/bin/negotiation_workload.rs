//! The child of the session crash test (tests/tests/session_crash.rs): recovers the sessions a
//! killed predecessor left, then runs negotiations one after another on one constellation,
//! printing a line per finished one, until it is killed (or has run `count`).
//!
//! Usage: negotiation-workload <db> <first-seed> <count>
//! Output lines: `recovered <session> <phase>`, `ready`, `done <seed> <session> <phase>`.

use std::io::Write as _;
use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::session::shell::{
    AgentRuntime, Approver, KeyEntropy, NewSession, OfferToApprove, OwnerLiveness, Quiet,
};
use pactum_runtime::{Currency, Directory, Intent, IntentType, Money, SettlementMode, Urgency, strategy_named};
use pactum_transcripts::Clock;

#[derive(Debug)]
struct OsEntropy;

impl KeyEntropy for OsEntropy {
    fn key_seed(&self) -> [u8; 32] {
        let mut seed = [0_u8; 32];
        getrandom::fill(&mut seed).expect("OS randomness");
        seed
    }
}

/// One child runs at a time: every owner but this process is dead.
#[derive(Debug)]
struct OnlyMe(String);

impl OwnerLiveness for OnlyMe {
    fn is_alive(&self, owner: &str) -> bool {
        owner == self.0
    }
}

#[derive(Debug)]
struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

struct Approve;

impl Approver for Approve {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (true, "client")
    }
}

/// The workload's mix: intent type, maximum price in cents, strategy. Some fail by design
/// (prices below every floor), so failed sessions are recovered too.
const MIX: &[(&str, u64, &str)] = &[
    ("weather.data", 10, "banded"),
    ("compute.inference", 30, "banded"),
    ("storage.blob", 20, "urgent"),
    ("weather.data", 3, "banded"),
    ("compute.inference", 50, "baseline"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db_path, first_seed, count] = args.as_slice() else {
        return Err("usage: negotiation-workload <db> <first-seed> <count>".into());
    };
    let first_seed: u64 = first_seed.parse()?;
    let count: u64 = count.parse()?;
    let owner = format!("pid:{}", std::process::id());
    let db = Arc::new(Constellation::open(db_path)?);
    let runtime = AgentRuntime::new(
        db,
        Arc::new(SystemClock),
        Directory::builtin()?,
        Arc::new(OsEntropy),
        Arc::new(OnlyMe(owner.clone())),
        owner,
    );
    let mut stdout = std::io::stdout().lock();
    for recovered in runtime.recover(&mut Quiet)? {
        let state = recovered.outcome?;
        writeln!(stdout, "recovered {} {}", recovered.session_id, state.phase.as_str())?;
    }
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let usd = Currency::parse("USD")?;
    for seed in first_seed..first_seed + count {
        let (intent_type, max_cents, strategy) = MIX[(seed % MIX.len() as u64) as usize];
        let intent = Intent::new(
            IntentType::new(intent_type)?,
            "crash test",
            Money::from_minor(max_cents, usd)?,
            None,
            None,
            Urgency::Normal,
            SettlementMode::Escrow,
        )?;
        let request = NewSession {
            intent,
            policy: pactum_runtime::policy::Policy::default(),
            strategy: strategy_named(strategy).ok_or("strategy")?,
            seed,
            // Half the sessions ask for approval, so recovery meets both kinds.
            auto_approve: seed % 2 == 0,
            preferences: None,
            constraints: Vec::new(),
            coalition: Vec::new(),
        };
        let state = runtime.negotiate(request, &mut Approve, &mut Quiet)?;
        writeln!(stdout, "done {seed} {} {}", state.session_id().unwrap_or_default(), state.phase.as_str())?;
        stdout.flush()?;
    }
    Ok(())
}
