//! `pactum negotiate`: one negotiation from intent to receipt, printed as it happens.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use pactum_runtime::policy::Policy;
use pactum_runtime::preferences::Preferences;
use pactum_runtime::session::model::{Phase, SessionState};
use pactum_runtime::session::shell::{AgentRuntime, Approver, NewSession, OfferToApprove, SessionObserver};
use pactum_runtime::session::spending::NamedConstraint;
use pactum_runtime::{
    Currency, DEFAULT_BUYER_ID, Directory, Intent, IntentType, Money, SettlementMode, Urgency, strategy_named,
};
use pactum_transcripts::{Clock, Event, ManualClock};

use crate::cli::Context;
use crate::constellation_cmd::{print_json, print_lines};
use crate::edge::{OsEntropy, ProcessLiveness, owner_identity, random_seed};
use crate::failure::{EXIT_OK, Failure, exit_code_of};
use crate::session_view::describe;

/// Arguments of `pactum negotiate`, and of `/negotiate` in an editor (the same names: they are
/// a contract scripts rely on).
#[derive(Debug, Clone, clap::Args)]
pub struct NegotiateArgs {
    /// What to buy, such as weather.data (see `pactum providers list`).
    pub intent_type: String,
    /// The most you will pay, in major units of --currency (0.10 is ten cents of USD). Default:
    /// default_max_price_minor of the buyer's preferences memory block.
    #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
    pub max_price: Option<String>,
    /// ISO 4217 currency of the price, such as USD. Default: default_currency of the buyer's
    /// preferences memory block.
    #[arg(long, value_name = "ISO")]
    pub currency: Option<String>,
    /// The slowest answer you will wait for, in milliseconds; slower providers time out.
    #[arg(long, value_name = "N")]
    pub latency_ms: Option<u32>,
    /// Give up if no agreement is reached within N milliseconds of the start.
    #[arg(long, value_name = "N")]
    pub deadline_ms: Option<u64>,
    /// Free text describing what exactly is wanted (recorded, shown to providers).
    #[arg(long, default_value = "")]
    pub scope: String,
    /// low, normal or high.
    #[arg(long, default_value = "normal")]
    pub urgency: String,
    /// How the buyer bids: baseline (accepts anything within --max-price), banded (opens at
    /// 60% and concedes to the maximum by the last round) or urgent (opens at 90%). Default:
    /// default_strategy of the buyer's preferences memory block, else banded.
    #[arg(long, value_parser = ["baseline", "banded", "urgent"])]
    pub strategy: Option<String>,
    /// Seed of the simulated providers and the session's randomness (random if omitted).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Start the session's clock at this Unix time in milliseconds; it then advances only by
    /// the simulated providers' latencies, so timestamps are reproducible.
    #[arg(long, value_name = "EPOCH-MS")]
    pub clock: Option<u64>,
    /// A policy: a pactum-policy/1 or /2 TOML file (price cap, round limit, allowed rails and
    /// providers; rules in CEL), or the name of a policy stored with `pactum policy add` when
    /// no such file exists.
    #[arg(long, value_name = "FILE|NAME")]
    pub policy: Option<PathBuf>,
    /// A spending constraint for this session alone (a JSON file: budget, usage, temporal,
    /// combined or custom), checked before the payment together with the buyer's own (`pactum
    /// budget`); repeat for several. A refusal fails the session with PACT-109.
    #[arg(long, value_name = "FILE")]
    pub constraint: Vec<PathBuf>,
    /// The balance the buyer's wallet starts with in this currency (used only the first time
    /// the wallet is funded; default 1000.00 for two-decimal currencies).
    #[arg(long, value_name = "AMOUNT")]
    pub starting_balance: Option<String>,
    /// A buyer pooling the purchase with you, as <agent>=<weight> (repeat for several; up to 15).
    /// The price is split in proportion to the integer weights, in whole minor units (the
    /// leftover units by largest remainder, ties by agent id); you lead with weight 1 unless you
    /// name yourself (buyer=<weight>). Every member's part is held from its own wallet, all or
    /// none; members are created and funded with the starting balance on first use.
    #[arg(long, value_name = "AGENT=WEIGHT")]
    pub coalition: Vec<String>,
    /// Buy through this broker agent: it buys from the directory's providers in a session of
    /// its own and sells to you at its cost plus --broker-margin; both payments are made in one
    /// transaction, or neither. Created as an agent (with the starting balance) on first use.
    #[arg(long, value_name = "AGENT")]
    pub broker: Option<String>,
    /// The broker's margin on its cost, in percent (0 to 100).
    #[arg(long, value_name = "PERCENT", default_value_t = 10, requires = "broker")]
    pub broker_margin: u32,
    /// Run N sessions of this request at once, on up to N threads, with seeds --seed, --seed+1,
    /// ... (needs --yes; 1 to 256). Prints one line per session (a JSON array with --json).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Approve paying the negotiated price without asking (never above --max-price).
    #[arg(long, short)]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

/// Prints each event as it becomes durable (nothing with `--json`: one document at the end).
pub struct Printer {
    quiet: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Self {
        Self { quiet }
    }
}

impl SessionObserver for Printer {
    fn on_event(&mut self, _state: &SessionState, event: &Event) {
        if self.quiet {
            return;
        }
        if let Some(line) = describe(event) {
            print_lines(&[line]);
        }
    }
}

/// Asks on the terminal (prompt on stderr, answer on stdin).
pub struct TerminalApprover;

impl Approver for TerminalApprover {
    fn approve(&mut self, offer: &OfferToApprove) -> (bool, &'static str) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "Pay {} to {} ({}) for session {}? [y/N] ",
            offer.price, offer.provider_name, offer.provider, offer.session_id
        );
        let _ = stderr.flush();
        let mut answer = String::new();
        let approved = std::io::stdin().lock().read_line(&mut answer).is_ok()
            && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        (approved, "terminal")
    }
}

/// Everything checked before the constellation is touched: bad input writes nothing.
/// The strategy when neither the command nor the buyer's preferences name one.
pub const DEFAULT_STRATEGY: &str = "banded";

/// The session a negotiate command asks for. What the arguments leave out comes from the buyer's
/// preferences memory block (explicit arguments win; both are recorded in `session.created`);
/// providers blocked there are added to the policy's blocked providers.
pub fn build_request(
    args: &NegotiateArgs,
    directory: &Directory,
    db: Option<&pactum_memory::Constellation>,
) -> Result<(NewSession, u64), Failure> {
    let preferences = match db {
        Some(db) => Preferences::load(db, DEFAULT_BUYER_ID)?,
        None => None,
    };
    let preferred = preferences.as_ref();
    let how_to_set = "give one (--max-price 0.05 --currency USD, or \"at most 5 cents\" in a prompt), or set \
        defaults with: pactum memory set preferences '{\"default_max_price_minor\": 5, \"default_currency\": \"USD\"}' \
        (/memory set preferences ... in the editor)";
    let currency_text = match (&args.currency, preferred.and_then(|p| p.currency.as_ref())) {
        (Some(given), _) => given.clone(),
        (None, Some(default)) => default.clone(),
        (None, None) => {
            let missing = if args.max_price.is_none() { "no maximum price" } else { "no currency" };
            return Err(Failure::new("USAGE", format!("{missing}: {how_to_set}")));
        }
    };
    let currency = Currency::parse(&currency_text).map_err(|e| Failure::new(e.code(), e.to_string()))?;
    let max_price = match (&args.max_price, preferred) {
        (Some(given), _) => Money::parse_major(given, currency).map_err(|e| Failure::new(e.code(), e.to_string()))?,
        (None, Some(p)) if p.max_price_minor.is_some() && p.currency.as_deref() == Some(currency.code()) => {
            Money::from_minor(p.max_price_minor.unwrap_or_default(), currency)
                .map_err(|e| Failure::new(e.code(), e.to_string()))?
        }
        (None, Some(p)) if p.max_price_minor.is_some() => {
            return Err(Failure::new(
                "USAGE",
                format!(
                    "no --max-price: the default in your preferences is in {}, not {}",
                    p.currency.as_deref().unwrap_or("?"),
                    currency.code()
                ),
            ));
        }
        (None, _) => return Err(Failure::new("USAGE", format!("no maximum price: {how_to_set}"))),
    };
    let intent_type = IntentType::new(&args.intent_type).map_err(|e| Failure::new("INTENT_INVALID", e))?;
    if directory.offering(&intent_type).next().is_none() && directory.remote_offering(&intent_type).next().is_none() {
        let known: Vec<&str> = directory.intent_types().into_iter().map(IntentType::as_str).collect();
        return Err(Failure::new(
            "INTENT_TYPE_UNKNOWN",
            format!("no provider in the directory offers {intent_type}; known intent types: {}", known.join(", ")),
        ));
    }
    let strategy_name =
        args.strategy.as_deref().or_else(|| preferred.and_then(|p| p.strategy.as_deref())).unwrap_or(DEFAULT_STRATEGY);
    let strategy = strategy_named(strategy_name)
        .ok_or_else(|| Failure::new("USAGE", format!("unknown strategy {strategy_name:?}")))?;
    let urgency = Urgency::parse(&args.urgency).map_err(|e| Failure::new(e.code(), e.to_string()))?;
    let mut policy = match &args.policy {
        None => Policy::default(),
        Some(argument) => crate::policy_cmd::policy_argument(argument, db)?,
    };
    let start_ms = args.clock.unwrap_or_else(|| crate::clock::SystemClock.now_ms());
    let deadline_ms = args
        .deadline_ms
        .map(|within| start_ms.checked_add(within).ok_or_else(|| Failure::new("USAGE", "--deadline-ms is too large")))
        .transpose()?;
    let intent =
        Intent::new(intent_type, &args.scope, max_price, args.latency_ms, deadline_ms, urgency, SettlementMode::Escrow)
            .map_err(|e| Failure::new(e.code(), e.to_string()))?;
    let starting_balance = args
        .starting_balance
        .as_deref()
        .map(|amount| Money::parse_major(amount, currency).map_err(|e| Failure::new(e.code(), e.to_string())))
        .transpose()?;
    if let Some(p) = &preferences {
        policy = policy.with_blocked_providers(&p.blocked_providers).map_err(crate::policy_cmd::failure_of)?;
    }
    let record = preferences.map(|p| {
        p.record(json!({
            "max_price": args.max_price,
            "currency": args.currency,
            "strategy": args.strategy,
        }))
    });
    let seed = args.seed.unwrap_or_else(random_seed);
    let constraints = args
        .constraint
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let constraint = pactum_runtime::constraints::Constraint::load(path)
                .map_err(|e| Failure::new(e.code(), e.to_string()))?;
            Ok(NamedConstraint { name: (index + 1).to_string(), constraint })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    pactum_runtime::session::spending::validate_session_constraints(&constraints)
        .map_err(|e| Failure::new("CONSTRAINT_INVALID", e))?;
    let coalition = args
        .coalition
        .iter()
        .map(|spec| {
            pactum_runtime::coalition::parse_member_spec(spec).map_err(|e| Failure::new("COALITION_INVALID", e))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let request = NewSession {
        intent,
        policy,
        strategy,
        seed,
        auto_approve: args.yes,
        preferences: record,
        constraints,
        coalition,
    };
    Ok((
        request,
        starting_balance.map_or(pactum_runtime::session::shell::STARTING_BALANCE_MINOR_DEFAULT, Money::amount_minor),
    ))
}

/// The runtime of the selected constellation, with the directory and a clock.
pub fn runtime(context: &Context, clock: Arc<dyn Clock>) -> Result<AgentRuntime, Failure> {
    let directory = context.directory()?;
    let db = context.open()?;
    Ok(runtime_on(&db, directory, clock))
}

/// The runtime of an open constellation, owned by this process.
pub fn runtime_on(db: &Arc<pactum_memory::Constellation>, directory: Directory, clock: Arc<dyn Clock>) -> AgentRuntime {
    AgentRuntime::new(
        Arc::clone(db),
        clock,
        directory,
        Arc::new(OsEntropy),
        Arc::new(ProcessLiveness),
        owner_identity(),
    )
}

/// Resumes sessions interrupted by a process that stopped, saying so on stderr.
pub fn recover(runtime: &AgentRuntime) -> Result<(), Failure> {
    for recovered in runtime.recover(&mut pactum_runtime::session::shell::Quiet)? {
        match recovered.outcome {
            Ok(state) => tracing::warn!(
                session = %recovered.session_id,
                phase = state.phase.as_str(),
                "resumed a session interrupted by a stopped process"
            ),
            Err(error) => {
                tracing::warn!(session = %recovered.session_id, "could not resume an interrupted session: {error}")
            }
        }
    }
    Ok(())
}

pub fn run(context: &Context, args: NegotiateArgs) -> Result<u8, Failure> {
    negotiate(context, args).map(|(code, _)| code)
}

/// Runs `pactum negotiate` and returns its exit code with the final state of every session it
/// ran (one; with `--parallel`, each; with `--broker`, the buyer's and the broker's).
pub fn negotiate(context: &Context, args: NegotiateArgs) -> Result<(u8, Vec<SessionState>), Failure> {
    let directory = context.directory()?;
    // Preferences come from an existing constellation; bad arguments must not create one.
    let existing = context.open_existing()?.ok();
    let (request, starting_balance_minor) = build_request(&args, &directory, existing.as_deref())?;
    if args.broker.is_some() && (args.parallel.is_some() || !args.coalition.is_empty()) {
        return Err(Failure::new("USAGE", "--broker goes with neither --parallel nor --coalition"));
    }
    if args.broker_margin > pactum_runtime::session::shell::BROKER_MARGIN_PERCENT_MAX {
        return Err(Failure::new("USAGE", "--broker-margin is 0 to 100"));
    }
    if let Some(broker) = &args.broker {
        pactum_runtime::check_agent_id(broker).map_err(|e| Failure::new("USAGE", e.to_string()))?;
    }
    if let Some(count) = args.parallel {
        let limit = pactum_runtime::session::parallel::PARALLEL_SESSIONS_MAX;
        if count == 0 || count > limit {
            return Err(Failure::new("USAGE", format!("--parallel takes 1 to {limit} sessions")));
        }
        if !args.yes {
            return Err(Failure::new(
                "APPROVAL_REQUIRED",
                "--parallel runs sessions nobody is asked about: pass --yes",
            ));
        }
    }
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            "APPROVAL_REQUIRED",
            "payment needs approval and stdin is not a terminal: pass --yes to approve paying the negotiated price (never above --max-price)",
        ));
    }
    let clock: Arc<dyn Clock> = match args.clock {
        Some(start_ms) => Arc::new(ManualClock::new(start_ms)),
        None => Arc::new(crate::clock::SystemClock),
    };
    let db = match existing {
        Some(db) => db,
        None => context.open()?,
    };
    let runtime = runtime_on(&db, directory, clock).with_starting_balance(starting_balance_minor);
    recover(&runtime)?;
    if let Some(count) = args.parallel {
        return run_parallel(&runtime, &args, request, count);
    }
    if let Some(broker) = &args.broker {
        let broker = pactum_runtime::session::shell::Broker {
            agent_id: broker.clone(),
            name: broker.clone(),
            margin_percent: args.broker_margin,
        };
        let delegated =
            runtime.negotiate_delegated(request, &broker, &mut TerminalApprover, &mut Printer::new(args.json))?;
        let states: Vec<&SessionState> = delegated.parent.iter().chain(std::iter::once(&delegated.child)).collect();
        if args.json {
            print_json(&Value::Array(states.iter().map(|state| result_json(state)).collect()));
        } else {
            print_lines(&states.iter().map(|state| summary(state)).collect::<Vec<_>>());
        }
        let completed = states.iter().all(|state| state.phase == Phase::Completed);
        let code = if completed {
            EXIT_OK
        } else {
            Failure::new("NEGOTIATION_FAILED", "the delegated purchase did not complete (see each line)")
                .report_on_stderr()
        };
        return Ok((code, states.into_iter().cloned().collect()));
    }
    let state = runtime.negotiate(request, &mut TerminalApprover, &mut Printer::new(args.json))?;
    if args.json {
        print_json(&result_json(&state));
    } else {
        print_lines(&[summary(&state)]);
    }
    let code = match (&state.phase, &state.failure) {
        (Phase::Completed, _) => EXIT_OK,
        (_, Some(failure)) => Failure::new(
            "NEGOTIATION_FAILED",
            format!("{} {} ({}): {}", failure.code, failure.name, failure.stage, failure.detail),
        )
        .report_on_stderr(),
        // Not ended (a rail kept refusing to release a hold): recovery finishes it later.
        _ => exit_code_of("SESSION_NOT_TERMINAL"),
    };
    Ok((code, vec![state]))
}

/// `--parallel N`: the request N times, seeds `seed`, `seed + 1`, ..., on N threads.
fn run_parallel(
    runtime: &AgentRuntime,
    args: &NegotiateArgs,
    first: NewSession,
    count: usize,
) -> Result<(u8, Vec<SessionState>), Failure> {
    let base_seed = first.seed;
    let mut requests = Vec::with_capacity(count);
    requests.push(first);
    for offset in 1..count {
        // `build_request` checked the arguments once; the copies differ only in their seed.
        let (mut request, _) = build_request(args, runtime.directory(), Some(runtime.constellation()))?;
        request.seed = base_seed.wrapping_add(offset as u64);
        requests.push(request);
    }
    let outcomes = runtime.negotiate_many(requests, count);
    let mut all_completed = true;
    let mut documents = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let state = outcome?;
        all_completed &= state.phase == Phase::Completed;
        if args.json {
            documents.push(result_json(&state));
        } else {
            print_lines(&[summary(&state)]);
        }
        states.push(state);
    }
    if args.json {
        print_json(&Value::Array(documents));
    }
    let code = if all_completed {
        EXIT_OK
    } else {
        Failure::new("NEGOTIATION_FAILED", "not every session completed (see each line)").report_on_stderr()
    };
    Ok((code, states))
}

/// The last line of a negotiation.
pub fn summary(state: &SessionState) -> String {
    let session_id = state.session_id().unwrap_or_default();
    match (&state.phase, &state.agreement, &state.failure) {
        (Phase::Completed, Some(agreement), _) => format!(
            "session {session_id} completed: paid {} to {}; receipt rcpt-{session_id} (pactum receipt show {session_id}); transcript session:{session_id}",
            agreement.price.money().map(|m| m.to_string()).unwrap_or_default(),
            agreement.provider
        ),
        (Phase::Failed, _, Some(failure)) => format!(
            "session {session_id} failed: {} {}; transcript session:{session_id} (pactum session show {session_id})",
            failure.code, failure.name
        ),
        (phase, _, _) => format!(
            "session {session_id} is {} and will be resumed by the next pactum command that opens this constellation",
            phase.as_str()
        ),
    }
}

/// The `--json` document of a session's outcome.
pub fn result_json(state: &SessionState) -> Value {
    let session_id = state.session_id().unwrap_or_default();
    json!({
        "session_id": session_id,
        "transcript_id": format!("session:{session_id}"),
        "phase": state.phase.as_str(),
        "rounds": state.round,
        "events": state.next_seq,
        "agreement": state.agreement.as_ref().map(|a| json!({
            "provider": a.provider,
            "price": { "amount_minor": a.price.amount_minor, "currency": a.price.currency },
            "payment_id": a.payment_id,
        })),
        "receipt": state.receipt,
        "failure": state.failure.as_ref().map(|f| serde_json::to_value(f).unwrap_or(Value::Null)),
    })
}
