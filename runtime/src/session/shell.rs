//! The shell around the sans-IO core: [`AgentRuntime`] performs the effects a session asks for
//! (directory lookups, simulated provider calls, approvals, rail steps, receipt signatures),
//! feeds their results back to [`step`] as inputs, and makes every step durable before the next
//! effect runs. The transcript is the session: nothing the runtime needs survives only in memory.
//!
//! Time: the runtime reads its injected [`Clock`]. Simulated providers answer in simulated time:
//! their latency is added to the session's clock rather than slept, so with a fixed clock
//! (`--clock`) a session's timestamps are a function of its inputs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use pactum_memory::{AgentRecord, AgentRole, Constellation, LedgerTx, SecretSeed, SpendRow};
use pactum_transcripts::{
    Clock, Ed25519Signer, EventKind, EventSigner, EventStore as _, KeyId, NewEvent, StreamId, TranscriptStream,
    public_key_bytes_to_base64url,
};

use crate::directory::{Directory, IntentType};
use crate::error::RuntimeError;
use crate::event_store::{ConstellationEventStore, SealedCheckpoint};
use crate::identities::{DEFAULT_BUYER_ID, derive_agent_seed, ensure_agent, signer_for};
use crate::intent::Intent;
use crate::money::{Currency, Money};
use crate::policy::Policy;
use crate::rail::{LedgerRail, RailError, RailPhase, fund_wallet};
use crate::session::model::*;
use crate::session::spending::AgentConstraint;
use crate::session::step::*;
use crate::strategy::{ProviderAnswer, Strategy, simulate_provider};
use crate::transcripts::key_ring;

mod delegation;
use delegation::ParentPayment;
pub use delegation::{BROKER_MARGIN_PERCENT_MAX, Broker, Delegated};

/// How long the buyer waits for a quote when the intent sets no latency limit.
pub const QUOTE_TIMEOUT_MS_DEFAULT: u32 = 2_000;
/// Tries at releasing a hold before a run gives up and leaves the session for recovery.
const ABORT_ATTEMPTS_MAX: u32 = 3;
/// Session ids tried before giving up (ids collide only when a seed is reused).
const SESSION_ID_ATTEMPTS_MAX: u64 = 10_000;
/// The wallet balance a buyer starts with in each currency, in minor units, unless configured.
pub const STARTING_BALANCE_MINOR_DEFAULT: u64 = 100_000;

/// Where the constellation's key root comes from, the one time it is made (agent keys are
/// derived from it). The program draws it from the operating system; tests pass a
/// deterministic source. The runtime never reads randomness itself.
pub trait KeyEntropy: Send + Sync + fmt::Debug {
    fn key_seed(&self) -> [u8; 32];
}

/// Whether the process that claimed a session is still running (so its session is left alone).
pub trait OwnerLiveness: Send + Sync + fmt::Debug {
    fn is_alive(&self, owner: &str) -> bool;
}

/// The offer a buyer is asked to approve.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OfferToApprove {
    pub session_id: String,
    pub provider: String,
    pub provider_name: String,
    pub price: Money,
    pub round: u32,
}

/// Decides, for interactive sessions, whether to pay. Returns `(approved, by)`, `by` being
/// `terminal`, `client`, `read-only` (a mode that never pays) or `recovery`.
pub trait Approver {
    fn approve(&mut self, offer: &OfferToApprove) -> (bool, &'static str);

    /// Whether the buyer wants the session aborted (an editor's cancel), with the reason to
    /// record. Asked before every step while the session may still be aborted (discovering or
    /// negotiating) and right after [`Approver::approve`], whose answer it overrides: a cancel that
    /// arrives while a person is being asked records ABORT, not a declined payment. Never asked
    /// once the buyer has committed.
    fn abort_requested(&mut self) -> Option<String> {
        None
    }
}

/// Declines every payment: what recovery uses for interactive sessions whose buyer is gone.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeclineAll;

impl Approver for DeclineAll {
    fn approve(&mut self, _offer: &OfferToApprove) -> (bool, &'static str) {
        (false, "recovery")
    }
}

/// Sees every event as it becomes durable (the CLI prints rounds as they happen).
pub trait SessionObserver {
    fn on_event(&mut self, state: &SessionState, event: &pactum_transcripts::Event);
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl SessionObserver for Quiet {
    fn on_event(&mut self, _state: &SessionState, _event: &pactum_transcripts::Event) {}
}

/// A session to start.
#[derive(Debug)]
pub struct NewSession {
    pub intent: Intent,
    pub policy: Policy,
    pub strategy: &'static dyn Strategy,
    /// Drives the simulated providers and the session's RNG (and so its id).
    pub seed: u64,
    /// Payment approved in advance (`--yes`); otherwise the [`Approver`] is asked.
    pub auto_approve: bool,
    /// The defaults the request took from the buyer's preferences (see [`crate::preferences`]).
    pub preferences: Option<PreferencesRecord>,
    /// The session's own spending constraints (`--constraint`), named `1`, `2`, ... in order.
    pub constraints: Vec<crate::session::spending::NamedConstraint>,
    /// Other buyers pooling the purchase, `(agent id, weight)`: empty for a buyer alone. The
    /// lead (the buyer) is a member with weight 1 unless it is listed here with another weight.
    /// Members are created (as buyers) and funded on first use, like the buyer.
    pub coalition: Vec<(String, u64)>,
}

/// What recovery did with one session.
#[derive(Debug)]
pub struct Recovered {
    pub session_id: String,
    pub outcome: Result<SessionState, RuntimeError>,
}

/// The in-process runtime: creates, drives, resumes, checkpoints and closes sessions of one
/// constellation. Cheap to share across threads; each session is driven by one thread at a time.
pub struct AgentRuntime {
    db: Arc<Constellation>,
    store: ConstellationEventStore,
    clock: Arc<dyn Clock>,
    directory: Arc<Directory>,
    rail: LedgerRail,
    entropy: Arc<dyn KeyEntropy>,
    liveness: Arc<dyn OwnerLiveness>,
    owner: String,
    starting_balance_minor: u64,
    /// Signers by agent id: a cache of keys read from the constellation.
    signers: Mutex<HashMap<String, Arc<Ed25519Signer>>>,
    /// Agents by id, and the buyer wallets known to be funded: caches of facts that never
    /// change once true (agents are never deleted or re-keyed; funding happens once).
    agents: Mutex<HashMap<String, AgentRecord>>,
    funded: Mutex<std::collections::HashSet<String>>,
    /// Test seam: stop right after this rail step is applied, before it is recorded, as a
    /// crash at the worst moment would.
    stop_after_rail: Option<RailPhase>,
    /// Injected faults of the outside world (see [`crate::faults`]); `None` in the program.
    faults: Option<Arc<dyn crate::faults::Faults>>,
    /// The HTTP client for remote providers, made on first use.
    remote: std::sync::OnceLock<Result<crate::remote::client::RemoteClient, String>>,
    /// Signs large writes on two cores (see [`super::cosign`]).
    cosigner: super::cosign::CoSigner,
}

impl fmt::Debug for AgentRuntime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("AgentRuntime").field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// The stream id of a session.
pub fn session_stream_id(session_id: &str) -> String {
    format!("{SESSION_STREAM_PREFIX}{session_id}")
}

/// Checks a session id as the CLI receives it: `s-` and 16 lowercase hex digits.
pub fn check_session_id(session_id: &str) -> Result<(), RuntimeError> {
    let valid = session_id.len() == 18
        && session_id.starts_with("s-")
        && session_id[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid { Ok(()) } else { Err(RuntimeError::SessionNotFound(session_id.to_owned())) }
}

/// The id of the `ordinal`-th session tried with `seed`.
fn session_id_for(seed: u64, ordinal: u64) -> String {
    let mut input = [0_u8; 16];
    input[..8].copy_from_slice(&seed.to_be_bytes());
    input[8..].copy_from_slice(&ordinal.to_be_bytes());
    let digest = pactum_transcripts::Digest::tagged(b"pactum-session/1 id\0", &input);
    format!("s-{}", &digest.to_hex()[..16])
}

impl AgentRuntime {
    pub fn new(
        db: Arc<Constellation>,
        clock: Arc<dyn Clock>,
        directory: Directory,
        entropy: Arc<dyn KeyEntropy>,
        liveness: Arc<dyn OwnerLiveness>,
        owner: String,
    ) -> Self {
        Self {
            store: ConstellationEventStore::new(db.clone()),
            rail: LedgerRail::new(db.clone()),
            db,
            clock,
            directory: Arc::new(directory),
            entropy,
            liveness,
            owner,
            starting_balance_minor: STARTING_BALANCE_MINOR_DEFAULT,
            signers: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            funded: Mutex::new(std::collections::HashSet::new()),
            stop_after_rail: None,
            faults: None,
            remote: std::sync::OnceLock::new(),
            cosigner: super::cosign::CoSigner::default(),
        }
    }

    /// For crash tests: every run stops with [`RuntimeError::InjectedStop`] right after the
    /// transaction that applied `phase` on the rail commits, before the step's evidence is
    /// recorded (a ledger settlement applies prepare and commit in one transaction, so both are
    /// then applied and neither recorded).
    #[doc(hidden)]
    pub fn with_injected_stop_after(mut self, phase: RailPhase) -> Self {
        self.stop_after_rail = Some(phase);
        self
    }

    /// Injects faults into the runtime's outside world (rail steps refused or delivered twice,
    /// see [`crate::faults`]), for simulations. Without it there are none.
    pub fn with_faults(mut self, faults: Arc<dyn crate::faults::Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Sets the balance a buyer's wallet is funded with the first time it is used in a currency.
    pub fn with_starting_balance(mut self, amount_minor: u64) -> Self {
        self.starting_balance_minor = amount_minor;
        self
    }

    pub fn constellation(&self) -> &Arc<Constellation> {
        &self.db
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    fn stream(&self, session_id: &str) -> Result<TranscriptStream<ConstellationEventStore>, RuntimeError> {
        let stream_id = StreamId::new(session_stream_id(session_id))
            .map_err(|_| RuntimeError::SessionNotFound(session_id.to_owned()))?;
        Ok(TranscriptStream::open(self.store.clone(), stream_id, self.clock.clone())?)
    }

    /// The key seed of a new agent: derived from the constellation's key root (made on first use).
    fn agent_seed(&self, agent_id: &str) -> Result<[u8; 32], RuntimeError> {
        let root = self.db.ensure_key_root(&SecretSeed::new(self.entropy.key_seed()), self.clock.now_ms())?;
        Ok(derive_agent_seed(&root, agent_id, 1))
    }

    /// The agent `agent_id`, created (with a key derived from the root) if it does not exist.
    fn agent(&self, agent_id: &str, display_name: &str, role: AgentRole) -> Result<AgentRecord, RuntimeError> {
        if let Some(agent) = self.agents.lock().unwrap_or_else(PoisonError::into_inner).get(agent_id) {
            return Ok(agent.clone());
        }
        let agent = match self.db.agent(agent_id)? {
            Some(agent) => agent,
            None => {
                let seed = self.agent_seed(agent_id)?;
                ensure_agent(&self.db, agent_id, display_name, role, seed, self.clock.now_ms())?
            }
        };
        self.agents.lock().unwrap_or_else(PoisonError::into_inner).insert(agent_id.to_owned(), agent.clone());
        Ok(agent)
    }

    /// The default buyer, created on first use, with its wallet funded in `currency` once.
    pub fn ensure_buyer(&self, currency: Currency) -> Result<AgentRecord, RuntimeError> {
        self.ensure_funded_buyer(DEFAULT_BUYER_ID, "Buyer", currency)
    }

    /// A buyer agent (the default buyer or a coalition member), created on first use, with its
    /// wallet funded in `currency` once with the starting balance.
    pub fn ensure_funded_buyer(
        &self,
        agent_id: &str,
        display_name: &str,
        currency: Currency,
    ) -> Result<AgentRecord, RuntimeError> {
        let buyer = self.agent(agent_id, display_name, AgentRole::Buyer)?;
        if buyer.role != AgentRole::Buyer {
            return Err(RuntimeError::InvalidAgentId(format!("{agent_id} is not a buyer")));
        }
        self.fund_once(buyer, currency)
    }

    /// Funds `agent`'s wallet in `currency` with the starting balance, the first time only.
    fn fund_once(&self, buyer: AgentRecord, currency: Currency) -> Result<AgentRecord, RuntimeError> {
        let funding_key = format!("fund:{}:{}:initial", buyer.agent_id, currency.code());
        if self.funded.lock().unwrap_or_else(PoisonError::into_inner).contains(&funding_key) {
            return Ok(buyer);
        }
        if self.starting_balance_minor > 0 && self.db.transfer_by_key(&funding_key)?.is_none() {
            let amount = Money::from_minor(self.starting_balance_minor, currency)
                .map_err(|e| RuntimeError::Intent(crate::intent::IntentError(e.to_string())))?;
            fund_wallet(&self.db, &buyer.agent_id, amount, &funding_key, self.clock.now_ms())
                .map_err(rail_store_error)?;
        }
        self.funded.lock().unwrap_or_else(PoisonError::into_inner).insert(funding_key);
        Ok(buyer)
    }

    fn signer(&self, agent_id: &str) -> Result<Arc<Ed25519Signer>, RuntimeError> {
        let mut signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(signer) = signers.get(agent_id) {
            return Ok(signer.clone());
        }
        let agent = self.db.agent(agent_id)?.ok_or_else(|| RuntimeError::InvalidAgentId(agent_id.to_owned()))?;
        let signer = Arc::new(signer_for(&agent)?);
        signers.insert(agent_id.to_owned(), signer.clone());
        Ok(signer)
    }

    /// Starts a session: picks its id, claims it for this process and records `session.created`
    /// (and, if admission fails, the failure). Returns the session id; [`AgentRuntime::run`]
    /// drives it.
    pub fn create_session(
        &self,
        request: NewSession,
        observer: &mut dyn SessionObserver,
    ) -> Result<String, RuntimeError> {
        let mut live = self.start(request)?;
        self.flush(&mut live, observer)?;
        Ok(live.session_id)
    }

    /// Picks a session id, claims it, and decides the start (not yet durable).
    fn start(&self, request: NewSession) -> Result<LiveSession, RuntimeError> {
        let buyer = self.ensure_buyer(request.intent.max_price().currency())?;
        self.start_as(request, buyer, SessionLinks::default())
    }

    /// [`AgentRuntime::start`] for `buyer`, with the links of a delegation.
    fn start_as(
        &self,
        request: NewSession,
        buyer: AgentRecord,
        links: SessionLinks,
    ) -> Result<LiveSession, RuntimeError> {
        let currency = request.intent.max_price().currency();
        let buyer_body = PartyBody {
            agent_id: buyer.agent_id.clone(),
            key_id: buyer.key_id.clone(),
            // Derived from the agent's secret key when it was created; every signature checks
            // that the two still match (`signer_for`), so it is not decoded again here.
            public_key: public_key_bytes_to_base64url(&buyer.public_key),
        };
        let coalition = self.coalition(&buyer, &request.coalition, currency)?;
        let now = self.clock.now_ms();
        for ordinal in 0..SESSION_ID_ATTEMPTS_MAX {
            let session_id = session_id_for(request.seed, ordinal);
            // Only a free id is tried; the session's first write claims it atomically (and is
            // refused if another process took the id in between).
            if !self.db.session_id_free(&session_id, &session_stream_id(&session_id))? {
                continue;
            }
            let start = StartInput {
                session_id: session_id.clone(),
                buyer: buyer_body,
                intent: request.intent,
                policy: request.policy,
                strategy: request.strategy,
                rail: LedgerRail::ID.to_owned(),
                seed: request.seed,
                auto_approve: request.auto_approve,
                preferences: request.preferences,
                constraints: request.constraints,
                coalition,
                parent_session: links.parent_session,
                delegated_to: links.delegated_to,
            };
            let stream = self.stream(&session_id)?;
            let mut live = LiveSession::new(session_id, SessionState::default(), stream, None);
            live.claimed = false;
            self.decide(&mut live, vec![(Input::Start(Box::new(start)), now)], request.seed)?;
            return Ok(live);
        }
        Err(RuntimeError::SessionIdsExhausted(request.seed))
    }

    /// The coalition a request names: the lead (weight 1 unless listed) and every member, each
    /// created and funded on first use, sorted by agent id. `None` for a buyer alone.
    fn coalition(
        &self,
        lead: &AgentRecord,
        members: &[(String, u64)],
        currency: Currency,
    ) -> Result<Option<crate::coalition::CoalitionBody>, RuntimeError> {
        use crate::coalition::{COALITION_MEMBERS_MAX, CoalitionBody, CoalitionMember, SPLIT_RULE};
        if members.is_empty() {
            return Ok(None);
        }
        let invalid = |detail: String| RuntimeError::Intent(crate::intent::IntentError(detail));
        let mut weights: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        weights.insert(lead.agent_id.clone(), 1);
        let mut named = std::collections::HashSet::new();
        for (agent_id, weight) in members {
            if !named.insert(agent_id.as_str()) {
                return Err(invalid(format!("coalition member {agent_id} is named twice")));
            }
            weights.insert(agent_id.clone(), *weight);
        }
        if weights.len() < 2 || weights.len() > COALITION_MEMBERS_MAX {
            return Err(invalid(format!("a coalition has 2 to {COALITION_MEMBERS_MAX} members, the lead included")));
        }
        let mut recorded = Vec::with_capacity(weights.len());
        for (agent_id, weight) in weights {
            let agent = if agent_id == lead.agent_id {
                lead.clone()
            } else {
                crate::identities::check_agent_id(&agent_id).map_err(|e| invalid(e.to_string()))?;
                // Only the lead's spending constraints are judged before a coalition pays: a
                // member with constraints of its own is refused rather than paying past them.
                if !self.db.agent_constraints(&agent_id)?.is_empty() {
                    return Err(invalid(format!(
                        "coalition member {agent_id} has spending constraints (pactum budget show --agent {agent_id}); \
                         a coalition judges only its lead's, so it cannot include a constrained member"
                    )));
                }
                self.ensure_funded_buyer(&agent_id, &agent_id, currency)?
            };
            recorded.push(CoalitionMember {
                agent_id,
                key_id: agent.key_id.clone(),
                public_key: public_key_bytes_to_base64url(&agent.public_key),
                weight,
            });
        }
        let coalition = CoalitionBody { lead: lead.agent_id.clone(), members: recorded, split: SPLIT_RULE.to_owned() };
        coalition.validate(&lead.agent_id).map_err(invalid)?;
        Ok(Some(coalition))
    }

    /// Creates a session, drives it to its end and closes it.
    pub fn negotiate(
        &self,
        request: NewSession,
        approver: &mut dyn Approver,
        observer: &mut dyn SessionObserver,
    ) -> Result<SessionState, RuntimeError> {
        let mut live = self.start(request)?;
        self.drive(&mut live, approver, observer)?;
        if live.state.phase.is_terminal() {
            self.close_live(&live)?;
        }
        Ok(live.state)
    }

    /// Drives a session this process owns until it ends or needs something it cannot get
    /// (a rail that keeps failing to release a hold).
    pub fn run(
        &self,
        session_id: &str,
        approver: &mut dyn Approver,
        observer: &mut dyn SessionObserver,
    ) -> Result<SessionState, RuntimeError> {
        let owner = self.db.session_owner(session_id)?;
        if owner.as_deref() != Some(self.owner.as_str()) {
            return Err(RuntimeError::SessionBusy {
                session_id: session_id.to_owned(),
                owner: owner.unwrap_or_default(),
            });
        }
        let mut live = self.load(session_id)?;
        self.drive(&mut live, approver, observer)?;
        Ok(live.state)
    }

    /// Takes over a session whose process is gone (or that nobody owns) and drives it on.
    pub fn resume_session(
        &self,
        session_id: &str,
        approver: &mut dyn Approver,
        observer: &mut dyn SessionObserver,
    ) -> Result<SessionState, RuntimeError> {
        self.claim(session_id)?;
        let mut live = self.load(session_id)?;
        self.drive(&mut live, approver, observer)?;
        if live.state.phase.is_terminal() {
            self.close_live(&live)?;
        }
        Ok(live.state)
    }

    fn claim(&self, session_id: &str) -> Result<(), RuntimeError> {
        check_session_id(session_id)?;
        let owner = self.db.session_owner(session_id)?;
        match owner {
            Some(owner) if owner == self.owner => Ok(()),
            Some(owner) if self.liveness.is_alive(&owner) => {
                Err(RuntimeError::SessionBusy { session_id: session_id.to_owned(), owner })
            }
            previous => {
                if self.db.claim_session(session_id, &self.owner, previous.as_deref(), self.clock.now_ms())? {
                    Ok(())
                } else {
                    let owner = self.db.session_owner(session_id)?.unwrap_or_default();
                    Err(RuntimeError::SessionBusy { session_id: session_id.to_owned(), owner })
                }
            }
        }
    }

    /// The session's state: the latest checkpoint plus the events after it, verified.
    pub fn get_session_state(&self, session_id: &str) -> Result<SessionState, RuntimeError> {
        Ok(self.load(session_id)?.state)
    }

    fn load(&self, session_id: &str) -> Result<LiveSession, RuntimeError> {
        let (state, stream) = load_session(&self.db, self.clock.clone(), session_id)?;
        let head = stream.head()?;
        Ok(LiveSession::new(session_id.to_owned(), state, stream, head))
    }

    /// Stores a checkpoint of the session's current state; returns its id.
    pub fn checkpoint(&self, session_id: &str) -> Result<pactum_transcripts::CheckpointId, RuntimeError> {
        let live = self.load(session_id)?;
        let state = state_json(&live.state)?;
        let seq =
            live.state.next_seq.checked_sub(1).ok_or_else(|| RuntimeError::SessionNotFound(live.session_id.clone()))?;
        Ok(live.stream.put_checkpoint_state(seq, state)?)
    }

    /// Closes an ended session: a final checkpoint, and this process lets go of it.
    pub fn close_session(&self, session_id: &str) -> Result<SessionState, RuntimeError> {
        let live = self.load(session_id)?;
        self.close_live(&live)?;
        Ok(live.state)
    }

    fn close_live(&self, live: &LiveSession) -> Result<(), RuntimeError> {
        if !live.state.phase.is_terminal() {
            return Err(RuntimeError::SessionNotTerminal {
                session_id: live.session_id.clone(),
                phase: live.state.phase.as_str(),
            });
        }
        // The flush that ended the session stored a checkpoint at its last event; a session
        // ended by an older build may lack one.
        if live.checkpoint_seq.is_none_or(|seq| seq + 1 < live.state.next_seq) {
            let latest = live
                .stream
                .store()
                .latest_checkpoint(live.stream.id())
                .map_err(pactum_transcripts::TranscriptError::from)?;
            if latest.is_none_or(|(_, checkpoint)| checkpoint.seq + 1 < live.state.next_seq) {
                live.stream.put_checkpoint_state(live.state.next_seq - 1, state_json(&live.state)?)?;
            }
        }
        // A session ended by this process had its outcome logged in the write that ended it.
        // Otherwise (a session ended by an older build), before the session is released: if
        // the process stops in between, recovery finds the ended session still owned, closes it
        // again, and the keyed append happens once. The transcript is the record; a log that
        // cannot take the entry (a corrupt block, a block of another kind under that label)
        // must not keep the session from closing.
        if !live.outcome_logged
            && let Err(error) = crate::preferences::record_outcome(&self.db, &live.state)
        {
            tracing::warn!(session = %live.session_id, code = error.code(), "the outcomes log was not updated: {error}");
        }
        if !live.released {
            self.db.release_session(&live.session_id, &self.owner)?;
        }
        Ok(())
    }

    /// Aborts a session still discovering or negotiating (ABORT, then PACT-312).
    pub fn abort_session(
        &self,
        session_id: &str,
        reason: &str,
        observer: &mut dyn SessionObserver,
    ) -> Result<SessionState, RuntimeError> {
        self.claim(session_id)?;
        let mut live = self.load(session_id)?;
        let seed = live.state.config().map_err(RuntimeError::Intent)?.seed;
        let now = self.clock.now_ms();
        self.decide(&mut live, vec![(Input::Abort { reason: reason.to_owned() }, now)], seed)?;
        self.flush(&mut live, observer)?;
        self.close_live(&live)?;
        Ok(live.state)
    }

    /// Resumes every session left unfinished by a process that is gone: a settlement in flight
    /// is completed or aborted (never applied twice, thanks to the rail's idempotency keys); an
    /// interactive session still waiting for approval is declined.
    /// (Settlement graphs left unfinished by a stopped process are finished too.)
    pub fn recover(&self, observer: &mut dyn SessionObserver) -> Result<Vec<Recovered>, RuntimeError> {
        let mut recovered = Vec::new();
        for row in self.db.session_streams(SESSION_STREAM_PREFIX)? {
            let terminal = matches!(row.last_kind.as_deref(), Some(kind::COMPLETED | kind::FAILED));
            let orphaned =
                row.owner.as_deref().is_none_or(|owner| owner != self.owner && !self.liveness.is_alive(owner));
            let session_id = row.stream_id[SESSION_STREAM_PREFIX.len()..].to_owned();
            if terminal && orphaned && row.owner.is_some() {
                // Ended, but its process stopped before closing it (outcome log, release).
                tracing::info!(session = %session_id, "closing a session a stopped process ended");
                let outcome = self.claim(&session_id).and_then(|()| self.close_session(&session_id));
                recovered.push(Recovered { session_id, outcome });
                continue;
            }
            if terminal || !orphaned || row.event_count == 0 {
                continue;
            }
            tracing::info!(session = %session_id, "resuming a session interrupted by a stopped process");
            let outcome = self.resume_session(&session_id, &mut DeclineAll, observer);
            recovered.push(Recovered { session_id, outcome });
        }
        // A broker's purchase resumed before its parent session waited for the parent's
        // payment; the parent has been resumed since (paid, or ended without paying), so the
        // purchase is driven again now rather than left to the next recovery.
        for entry in &mut recovered {
            if matches!(&entry.outcome, Ok(state) if !state.phase.is_terminal() && state.parent_session().is_some()) {
                entry.outcome = self.resume_session(&entry.session_id, &mut DeclineAll, observer);
            }
        }
        // Settlement graphs a stopped process left unfinished: every edge paid or none.
        let owner = crate::graph::GraphOwner { id: &self.owner, liveness: self.liveness.as_ref() };
        match crate::graph::recover_graphs(&self.db, &self.rail, owner, self.clock.now_ms()) {
            Ok(graphs) => {
                for graph in graphs {
                    tracing::info!(graph = %graph.graph_id, state = graph.state.as_str(), "settlement graph recovered");
                }
            }
            Err(crate::graph::GraphError::Runtime(error)) => return Err(error),
            Err(error) => tracing::warn!(%error, "settlement graphs could not all be recovered"),
        }
        Ok(recovered)
    }

    /// Performs effects and feeds their results back until the session ends. Steps accumulate
    /// and are made durable in one write before a question to the buyer, together with the
    /// ledger's settlement (see [`AgentRuntime::settle`]), and at the end. A crash loses only
    /// steps that a resume decides again identically: discovery, simulated providers,
    /// automatic approval and receipt signatures are deterministic, and rail steps are
    /// idempotent and never happen before the decisions that led to them are durable.
    fn drive(
        &self,
        live: &mut LiveSession,
        approver: &mut dyn Approver,
        observer: &mut dyn SessionObserver,
    ) -> Result<(), RuntimeError> {
        let _driving = self.cosigner.driving();
        let config = live.state.config().map_err(RuntimeError::Intent)?;
        let mut abort_attempts = 0;
        loop {
            let effects = live.state.effects();
            let Some(first) = effects.first() else { break };
            if matches!(live.state.phase, Phase::Discovering | Phase::Negotiating)
                && let Some(reason) = approver.abort_requested()
            {
                let now = self.clock.now_ms().max(live.state.last_at_ms);
                self.decide(live, vec![(Input::Abort { reason }, now)], config.seed)?;
                continue;
            }
            if matches!(first, Effect::Rail { phase: RailPhase::Prepare, .. })
                && let Some(parent) = live.state.parent_session().map(str::to_owned)
                && live.state.aborting.is_none()
            {
                // A broker's purchase is paid only in the write that pays its parent session.
                match self.parent_payment(&parent, live.wait_for_parent)? {
                    ParentPayment::Paid => {}
                    ParentPayment::Pending => break,
                    ParentPayment::Never(why) => {
                        let now = self.clock.now_ms().max(live.state.last_at_ms);
                        let failure =
                            RailFailure { code: crate::FailureCode::DependencyFailed, detail: why, member: None };
                        let input = Input::Rail { phase: RailPhase::Prepare, outcome: Err(failure) };
                        self.decide(live, vec![(input, now)], config.seed)?;
                        continue;
                    }
                }
            }
            if matches!(first, Effect::Rail { .. }) {
                if self.settle(live, &config, &mut abort_attempts, observer)? {
                    continue;
                }
                tracing::warn!(session = %live.session_id, "the rail keeps refusing to release the hold; leaving the session for recovery");
                break;
            }
            // A person may take a while to answer: what led to the question is made durable first.
            if matches!(first, Effect::AskApproval { .. }) && !config.auto_approve {
                self.flush(live, observer)?;
            }
            let now = self.clock.now_ms().max(live.state.last_at_ms);
            let inputs = match first {
                Effect::Discover { intent_type, currency } => {
                    let offering = self.discover(intent_type, *currency)?;
                    let passports = self.passports(&config, &offering, now)?;
                    vec![(Input::Discovered { offering, passports }, now)]
                }
                Effect::RequestQuote { .. } => {
                    let remote: Vec<&ProviderRef> =
                        live.state.offering.iter().filter(|p| p.endpoint.is_some()).collect();
                    let remote_ids: Vec<String> = remote.iter().map(|p| p.agent_id.clone()).collect();
                    let mut answers = self.request_quotes(&live.session_id, &config, &effects, now, &remote_ids);
                    if !remote_ids.is_empty() {
                        answers.extend(self.request_remote_quotes(live, &config, &effects, now, observer)?);
                        answers
                            .sort_by(|(a, at_a), (b, at_b)| (at_a, quote_provider(a)).cmp(&(at_b, quote_provider(b))));
                    }
                    answers
                }
                Effect::AskApproval { provider, price, round } => {
                    let (approved, by) = if config.auto_approve {
                        (true, "auto")
                    } else {
                        let provider_name =
                            live.state.provider(provider).map(|p| p.name.clone()).unwrap_or_else(|| provider.clone());
                        let offer = OfferToApprove {
                            session_id: live.session_id.clone(),
                            provider: provider.clone(),
                            provider_name,
                            price: *price,
                            round: *round,
                        };
                        approver.approve(&offer)
                    };
                    // Approval may take a person a while: read the clock after it.
                    let now = self.clock.now_ms().max(now);
                    match approver.abort_requested() {
                        Some(reason) => vec![(Input::Abort { reason }, now)],
                        None => vec![(Input::Approval { approved, by: by.to_owned() }, now)],
                    }
                }
                // Handled above.
                Effect::Rail { .. } => continue,
                Effect::SignReceipt { provider, receipt, peac_input, .. }
                    if live.state.provider(provider).is_some_and(|p| p.endpoint.is_some()) =>
                {
                    let (provider, receipt, peac_input) = (provider.clone(), receipt.clone(), peac_input.clone());
                    vec![(self.remote_receipt(live, &provider, receipt, peac_input, observer)?, now)]
                }
                Effect::SignReceipt { provider, digest, peac_input, .. } => {
                    vec![(receipt_signed_by(self.signer(provider)?.as_ref(), digest, peac_input.as_deref()), now)]
                }
            };
            self.decide(live, inputs, config.seed)?;
        }
        self.flush(live, observer)
    }

    /// The providers offering an intent type in a currency, each with its identity (created on
    /// first use).
    /// The passport of every provider offering the intent, as of `now`, when the policy requires
    /// one; ended sessions not in the passport yet are verified and ingested first.
    fn passports(
        &self,
        config: &SessionConfig,
        offering: &[ProviderRef],
        now: u64,
    ) -> Result<Option<PassportRecord>, RuntimeError> {
        let Some(requirement) = config.resolved.passport_requirement() else { return Ok(None) };
        let ingested = crate::passport::ingest_sessions(&self.db, now)?;
        for (source, reason) in &ingested.refused {
            tracing::warn!(%source, %reason, "left out of the passport");
        }
        // As of the session's time, or the provider's latest outcome if later: simulated
        // latencies move sessions' clocks ahead of the wall clock, and an outcome already
        // recorded must count.
        let checks = offering
            .iter()
            .map(|provider| {
                let latest = crate::passport::latest_outcome_ms(&self.db, &provider.agent_id)?.unwrap_or(0);
                crate::passport::check_passport(&self.db, &provider.agent_id, requirement, now.max(latest))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(PassportRecord { requirement, checks }))
    }

    fn discover(&self, intent_type: &str, currency: Currency) -> Result<Vec<ProviderRef>, RuntimeError> {
        let intent_type =
            IntentType::new(intent_type).map_err(|e| RuntimeError::Intent(crate::intent::IntentError(e)))?;
        let mut offering = Vec::new();
        for spec in self.directory.offering(&intent_type) {
            if spec.reference_price.currency() != currency {
                continue;
            }
            let agent = self.agent(&spec.id, &spec.name, AgentRole::Provider)?;
            if agent.role != AgentRole::Provider {
                tracing::warn!(agent = %spec.id, "the directory lists an agent of this constellation that is not a provider; skipped");
                continue;
            }
            offering.push(ProviderRef {
                agent_id: agent.agent_id.clone(),
                name: spec.name.clone(),
                key_id: agent.key_id.clone(),
                public_key: public_key_bytes_to_base64url(&agent.public_key),
                endpoint: None,
            });
        }
        for remote in self.directory.remote_offering(&intent_type) {
            if remote.currency != currency {
                continue;
            }
            offering.push(ProviderRef {
                agent_id: remote.id.clone(),
                name: remote.name.clone(),
                key_id: remote.key_id.clone(),
                public_key: remote.public_key.clone(),
                endpoint: Some(remote.endpoint.clone()),
            });
        }
        Ok(offering)
    }

    /// Asks every provider awaited in this round, in simulated time, and returns their answers
    /// in the order they arrive (by arrival time, then provider id).
    fn request_quotes(
        &self,
        session_id: &str,
        config: &SessionConfig,
        effects: &[Effect],
        now: u64,
        remote: &[String],
    ) -> Vec<(Input, u64)> {
        let latency_ms_max = config.intent.latency_ms_max();
        let waited_ms = latency_ms_max.unwrap_or(QUOTE_TIMEOUT_MS_DEFAULT);
        let mut answers: Vec<(u64, String, Input)> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::RequestQuote { provider, round, .. } => Some((provider, *round)),
                _ => None,
            })
            .filter(|(provider, _)| !remote.contains(provider))
            .map(|(provider, round)| {
                let answer = match self.directory.providers().iter().find(|p| &p.id == provider) {
                    // A provider gone from the directory cannot be reached.
                    None => ProviderAnswer::Unreachable,
                    Some(spec) => simulate_provider(spec, config.seed, session_id, round, Some(waited_ms)),
                };
                let (delay_ms, answer) = match answer {
                    ProviderAnswer::Ask { price, latency_ms } => {
                        (latency_ms, QuoteAnswer::Ask { price, latency_ms, envelope: None })
                    }
                    ProviderAnswer::Refuse { latency_ms } => {
                        (latency_ms, QuoteAnswer::Refused { latency_ms, envelope: None })
                    }
                    ProviderAnswer::Timeout => (waited_ms, QuoteAnswer::Timeout { waited_ms }),
                    ProviderAnswer::Unreachable => (0, QuoteAnswer::Unreachable),
                };
                let at = now.saturating_add(u64::from(delay_ms));
                (at, provider.clone(), Input::Quote { provider: provider.clone(), round, answer })
            })
            .collect();
        answers.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        answers.into_iter().map(|(at, _, input)| (input, at)).collect()
    }

    /// The client for remote providers (made on first use: it starts a thread of its own).
    fn remote_client(&self) -> Result<&crate::remote::client::RemoteClient, RuntimeError> {
        self.remote
            .get_or_init(crate::remote::client::RemoteClient::new)
            .as_ref()
            .map_err(|e| RuntimeError::RemoteClient(e.clone()))
    }

    /// Asks every remote provider awaited in this round, in parallel, each within the quote
    /// wait. The round's offer is made durable first, so a provider only ever sees messages
    /// the buyer has recorded, and it receives them sealed (`round.intent` and the offer). Every
    /// outcome becomes an answer: a checked, sealed message; `Unreachable` (no connection, or
    /// `503`); `Timeout`; or `Invalid` with a reason code. Arrival times are read from the
    /// runtime's clock as the answers come.
    fn request_remote_quotes(
        &self,
        live: &mut LiveSession,
        config: &SessionConfig,
        effects: &[Effect],
        now: u64,
        observer: &mut dyn SessionObserver,
    ) -> Result<Vec<(Input, u64)>, RuntimeError> {
        let awaited: Vec<(ProviderRef, u32)> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::RequestQuote { provider, round, .. } => {
                    live.state.provider(provider).filter(|p| p.endpoint.is_some()).map(|p| (p.clone(), *round))
                }
                _ => None,
            })
            .collect();
        if awaited.is_empty() {
            return Ok(Vec::new());
        }
        self.flush(live, observer)?;
        let Some(buyer) = live.state.created.as_ref().map(|c| c.buyer.clone()) else { return Ok(Vec::new()) };
        let bid_seq = live.state.bid_seq;
        let events: Vec<serde_json::Value> = live
            .stream
            .events(0)?
            .into_iter()
            .filter(|e| e.kind.as_str() == kind::INTENT || Some(e.seq) == bid_seq)
            .map(|e| e.to_json())
            .collect();
        let waited_ms = config.intent.latency_ms_max().unwrap_or(QUOTE_TIMEOUT_MS_DEFAULT);
        let client = self.remote_client()?;
        let session_id = live.session_id.as_str();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = awaited
                .iter()
                .map(|(provider, round)| {
                    let request = crate::remote::host::QuoteRequest {
                        format: crate::remote::REMOTE_FORMAT.to_owned(),
                        session_id: session_id.to_owned(),
                        buyer: buyer.clone(),
                        round: *round,
                        wait_ms: waited_ms,
                        events: events.clone(),
                    };
                    scope.spawn(move || {
                        let outcome = serde_json::to_value(&request)
                            .map_err(|e| crate::remote::client::RemoteFault::Malformed(e.to_string()))
                            .and_then(|request| {
                                client.quote(provider.endpoint.as_deref().unwrap_or_default(), &request, waited_ms)
                            });
                        (outcome, self.clock.now_ms().max(now))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut answers = Vec::with_capacity(awaited.len());
        for ((provider, round), joined) in awaited.iter().zip(outcomes) {
            let (outcome, at) = joined.unwrap_or_else(|_| {
                (Err(crate::remote::client::RemoteFault::Malformed("the request thread panicked".into())), now)
            });
            let answer = match outcome {
                Ok(response) => check_remote_answer(&live.state, provider, *round, response),
                Err(fault) => {
                    tracing::info!(provider = %provider.agent_id, %fault, "a remote provider gave no usable answer");
                    match fault.invalid_reason() {
                        Some(reason) => QuoteAnswer::Invalid {
                            reason: reason.to_owned(),
                            detail: bounded_detail(fault.to_string()),
                        },
                        None if matches!(fault, crate::remote::client::RemoteFault::Timeout(_)) => {
                            QuoteAnswer::Timeout { waited_ms }
                        }
                        None => QuoteAnswer::Unreachable,
                    }
                }
            };
            answers.push((Input::Quote { provider: provider.agent_id.clone(), round: *round, answer }, at));
        }
        Ok(answers)
    }

    /// Has a remote provider sign the receipt of its paid session: the accept and the rail's
    /// commitment are made durable first and sent sealed, so the provider signs only what the
    /// buyer has recorded. Asks a few times; then the session is left to be resumed.
    fn remote_receipt(
        &self,
        live: &mut LiveSession,
        provider: &str,
        receipt: serde_json::Value,
        peac_input: Option<String>,
        observer: &mut dyn SessionObserver,
    ) -> Result<Input, RuntimeError> {
        self.flush(live, observer)?;
        let fail = |detail: String| RuntimeError::RemoteReceipt {
            session_id: live.session_id.clone(),
            provider: provider.to_owned(),
            detail,
        };
        let endpoint = live.state.provider(provider).and_then(|p| p.endpoint.clone()).unwrap_or_default();
        let buyer = live.state.created.as_ref().map(|c| c.buyer.clone()).ok_or_else(|| fail("no buyer".into()))?;
        let wanted =
            [live.state.agreement.as_ref().map(|a| a.accept_seq), live.state.rail_committed.as_ref().map(|c| c.seq)];
        let events: Vec<serde_json::Value> =
            live.stream.events(0)?.into_iter().filter(|e| wanted.contains(&Some(e.seq))).map(|e| e.to_json()).collect();
        let request = serde_json::to_value(crate::remote::host::ReceiptRequest {
            format: crate::remote::REMOTE_FORMAT.to_owned(),
            session_id: live.session_id.clone(),
            buyer,
            events,
            receipt,
            peac_input,
        })
        .map_err(|e| fail(e.to_string()))?;
        let client = self.remote_client()?;
        let mut last = String::new();
        for _ in 0..crate::remote::REMOTE_RECEIPT_ATTEMPTS {
            match client.receipt(&endpoint, &request, crate::remote::REMOTE_RECEIPT_TIMEOUT_MS as u32) {
                Ok(response) => {
                    let signature = pactum_transcripts::SignatureBytes::from_base64url(&response.signature)
                        .map_err(|e| fail(e.to_string()))?;
                    let peac_signature = response
                        .peac_signature
                        .as_deref()
                        .map(pactum_transcripts::SignatureBytes::from_base64url)
                        .transpose()
                        .map_err(|e| fail(e.to_string()))?;
                    return Ok(Input::ReceiptSigned { key_id: response.key_id, signature, peac_signature });
                }
                Err(fault) => last = fault.to_string(),
            }
        }
        Err(fail(last))
    }

    /// Runs inputs through the core. Their events wait in `live.pending` until the next flush;
    /// `live.state` already includes them, so the next effects follow from them.
    fn decide(&self, live: &mut LiveSession, inputs: Vec<(Input, u64)>, seed: u64) -> Result<(), RuntimeError> {
        decide_into(&mut live.state, &mut live.pending, inputs, seed)
    }

    /// Applies the rail step the session asks for — and the ones that follow directly from its
    /// outcome (commit after prepare, release after a failed commit) — in the same transaction
    /// that makes the pending events durable. Money therefore never moves unless the decisions
    /// that led to it are recorded, and a payment takes one commit instead of one per step. The
    /// steps' evidence stays pending for the next write: a crash before it only makes the resume
    /// find each step already done (the rail is idempotent). Returns `false` if the rail keeps
    /// refusing to release a hold.
    fn settle(
        &self,
        live: &mut LiveSession,
        config: &SessionConfig,
        abort_attempts: &mut u32,
        observer: &mut dyn SessionObserver,
    ) -> Result<bool, RuntimeError> {
        // A session buying from a broker pays the broker's own purchase in the same write.
        let child_request = match live.state.delegation() {
            Some(delegation) if live.state.prepared.is_none() && live.state.aborting.is_none() => {
                Some(read_session_state(&self.db, &delegation.child_session)?.payment_request())
            }
            _ => None,
        };
        let finisher = self.local_finisher(live)?;
        let sealed = self.seal_pending(live)?;
        let base = sealed.as_ref().map_or(&live.state, |flush| &flush.durable).clone();
        let after = sealed.as_ref().map_or(SealAfter { head: live.head, durable_phase: live.durable.phase }, |flush| {
            SealAfter { head: flush.sealed.last().map(head_of), durable_phase: flush.durable.phase }
        });
        let mut owner_change = sealed.as_ref().and_then(|flush| self.owner_change(live, flush));
        // A session this write may end is claimed at the end of the write, and only if it does
        // not end there: a session that never outlives a write is never held.
        let deferred_claim =
            finisher.is_some() && matches!(owner_change, Some(pactum_memory::OwnerChange::Claim { .. }));
        if deferred_claim {
            owner_change = None;
        }
        let (events, checkpoint) =
            sealed.as_ref().map_or((&[][..], None), |flush| (flush.sealed.as_slice(), flush.checkpoint.as_ref()));
        let (checkpoint_id, mut run) =
            live.stream.store().append_session_then(live.stream.id(), events, checkpoint, owner_change, |ledger| {
                let mut run =
                    RailRun { state: base, pending: Vec::new(), applied: Vec::new(), gave_up: false, ended: None };
                let mut payer_constrained = None;
                while let Some(Effect::Rail { phase, request }) = run.state.rail_effect() {
                    if phase == RailPhase::Abort {
                        *abort_attempts += 1;
                        if *abort_attempts > ABORT_ATTEMPTS_MAX {
                            run.gave_up = true;
                            break;
                        }
                    }
                    let now = self.clock.now_ms().max(run.state.last_at_ms);
                    // Constraints are judged in the transaction that would hold the money, so
                    // no other payment can slip in between the check and the hold.
                    // Whether the payer has constraints, read once per write (in it, so no
                    // other process can set one in between).
                    if phase == RailPhase::Prepare && payer_constrained.is_none() {
                        payer_constrained = Some(!ledger.agent_constraints(&request.payer)?.is_empty());
                    }
                    let constrained = payer_constrained == Some(true);
                    if phase == RailPhase::Prepare
                        && run.state.constraints_seq.is_none()
                        && (constrained || !config.constraints.is_empty())
                    {
                        let agent = if constrained {
                            agent_constraints(ledger, &request.payer, &request.payment_id, now)?
                        } else {
                            Vec::new()
                        };
                        let input = vec![(Input::ConstraintsChecked { agent }, now)];
                        decide_into(&mut run.state, &mut run.pending, input, config.seed)?;
                        continue;
                    }
                    // The broker's purchase is paid only if the buyer's hold can follow in this
                    // write: a buyer short of funds fails its own prepare, and nothing moves.
                    let buyer_can_pay = || -> Result<bool, RuntimeError> {
                        let wallet = crate::rail::wallet_account(&request.payer, request.amount.currency().code());
                        let balance = ledger.balance(&wallet)?.unwrap_or(0);
                        Ok(u64::try_from(balance).unwrap_or(0) >= request.amount.amount_minor())
                    };
                    let paying_child = phase == RailPhase::Prepare && child_request.is_some() && buyer_can_pay()?;
                    if paying_child
                        && let Some(child) = &child_request
                        && let Err(detail) = self.pay_child(ledger, child.as_ref(), now)?
                    {
                        let failure = RailFailure { code: crate::FailureCode::DependencyFailed, detail, member: None };
                        let input = vec![(Input::Rail { phase, outcome: Err(failure) }, now)];
                        decide_into(&mut run.state, &mut run.pending, input, config.seed)?;
                        continue;
                    }
                    // A coalition's prepare and abort move each member's part.
                    let coalition_parts = run.state.coalition_parts();
                    let (result, parts, member) = crate::faults::apply_rail_step(
                        self.faults.as_deref(),
                        &self.rail,
                        ledger,
                        phase,
                        &request,
                        coalition_parts.as_deref(),
                        now,
                    );
                    run.applied.push(phase);
                    // What the buyer's constraints count: the hold (when it has constraints;
                    // setting its first copies earlier holds from the ledger), and its release.
                    match (&result, phase) {
                        (Ok(_), RailPhase::Prepare) if constrained => ledger.record_spend(&SpendRow {
                            payment_id: request.payment_id.clone(),
                            agent_id: request.payer.clone(),
                            amount_minor: request.amount.amount_minor(),
                            currency: request.amount.currency().code().to_owned(),
                            at_ms: now,
                            released_at_ms: None,
                        })?,
                        (Ok(_), RailPhase::Abort) => ledger.release_spend(&request.payment_id, now)?,
                        _ => {}
                    }
                    let outcome = match result {
                        Ok(evidence) => Ok(EvidenceBody {
                            phase: evidence.phase.as_str().to_owned(),
                            rail: evidence.rail.to_owned(),
                            payment_id: evidence.payment_id,
                            reference: evidence.reference,
                            amount: PriceBody {
                                amount_minor: evidence.amount_minor,
                                currency: evidence.currency.to_owned(),
                            },
                            parts: parts
                                .into_iter()
                                .map(|(agent_id, amount_minor, reference)| PartEvidence {
                                    agent_id,
                                    amount_minor,
                                    reference,
                                })
                                .collect(),
                        }),
                        // The database failing is not the rail refusing: the whole write rolls
                        // back and the step is retried on resume.
                        Err(RailError::Store(error)) => return Err(error.into()),
                        // The broker's purchase was paid in this write but the buyer's hold was
                        // refused after all: roll the whole write back rather than pay one hop.
                        Err(error) if paying_child => {
                            return Err(RuntimeError::Io(std::io::Error::other(format!(
                                "the buyer's hold was refused after the broker's purchase was paid in the same write; nothing was kept: {error}"
                            ))));
                        }
                        Err(error) => {
                            Err(RailFailure { code: error.failure_code(phase), detail: error.to_string(), member })
                        }
                    };
                    let input = vec![(Input::Rail { phase, outcome }, now)];
                    decide_into(&mut run.state, &mut run.pending, input, config.seed)?;
                }
                if let Some(finisher) = &finisher
                    && !run.gave_up
                {
                    self.finish_in_write(live, ledger, finisher, after, &mut run, config.seed)?;
                }
                if deferred_claim && run.ended.is_none() {
                    let at_ms = run.state.last_at_ms;
                    let claim =
                        pactum_memory::OwnerChange::Claim { session_id: &live.session_id, owner: &self.owner, at_ms };
                    ConstellationEventStore::append_session_in(ledger, live.stream.id(), &[], None, Some(claim))?;
                }
                Ok(run)
            })?;
        if let Some(flush) = sealed {
            self.finish_flush(live, flush, checkpoint_id, observer);
        }
        let ended = run.ended.take();
        live.state = run.state;
        live.pending = run.pending;
        if let Some(ended) = ended {
            if let Some(staged) = ended.staged {
                self.db.staged_committed(staged);
            }
            live.outcome_logged = true;
            self.finish_flush(live, ended.flush, ended.checkpoint_id, observer);
        }
        if let Some(phase) = self.stop_after_rail.filter(|phase| run.applied.contains(phase)) {
            return Err(RuntimeError::InjectedStop(phase.as_str()));
        }
        Ok(!run.gave_up)
    }

    /// The signers that can end this session in its settlement's write: when its provider is
    /// local (it signs the receipt in process, deterministically, with nothing to wait for)
    /// and nothing else must happen between paying and the receipt (a broker's purchase, an
    /// injected stop). `None` otherwise: the receipt then comes in a write of its own.
    fn local_finisher(&self, live: &LiveSession) -> Result<Option<LocalFinisher>, RuntimeError> {
        let state = &live.state;
        // With other sessions waiting for the connection, the receipt's signing and checking
        // are better done outside the write that holds it: a second, shorter write then.
        if self.cosigner.sessions_driven() > 1
            || self.stop_after_rail.is_some()
            || state.aborting.is_some()
            || state.delegation().is_some()
            || state.parent_session().is_some()
        {
            return Ok(None);
        }
        let (Some(agreement), Some(buyer_id)) = (&state.agreement, state.buyer_id()) else { return Ok(None) };
        if state.provider(&agreement.provider).is_none_or(|provider| provider.endpoint.is_some()) {
            return Ok(None);
        }
        Ok(Some(LocalFinisher {
            provider_id: agreement.provider.clone(),
            provider: self.signer(&agreement.provider)?,
            buyer_id: buyer_id.to_owned(),
            buyer: self.signer(buyer_id)?,
        }))
    }

    /// Inside the write that settled the session: has the local provider sign the receipt
    /// and, when that completes the session, appends its last events (the rail's evidence, the
    /// receipt, the completion) with their checkpoint, lets go of the session if this process
    /// held it, and stages the outcome in the buyer's log. One commit instead of two, and a
    /// crash leaves either no trace of the settlement or all of it.
    fn finish_in_write(
        &self,
        live: &LiveSession,
        ledger: &pactum_memory::LedgerTx<'_>,
        finisher: &LocalFinisher,
        after: SealAfter,
        run: &mut RailRun,
        seed: u64,
    ) -> Result<(), RuntimeError> {
        let Some(Effect::SignReceipt { provider, digest, peac_input, .. }) = run.state.effects().into_iter().next()
        else {
            return Ok(());
        };
        if provider != finisher.provider_id {
            return Ok(());
        }
        let now = self.clock.now_ms().max(run.state.last_at_ms);
        let input = receipt_signed_by(&finisher.provider, &digest, peac_input.as_deref());
        decide_into(&mut run.state, &mut run.pending, vec![(input, now)], seed)?;
        // Only the buyer's and the provider's events end a session here; anything else (never
        // the case today) is left for the next write, which looks its signers up as usual.
        let signed_by_finisher = |draft: &EventDraft| match &draft.party {
            Party::Buyer => true,
            Party::Provider(id) => *id == finisher.provider_id,
            Party::Member(_) => false,
        };
        if run.state.phase != Phase::Completed || !run.pending.iter().all(signed_by_finisher) {
            return Ok(());
        }
        // The signers were fetched before the write: looking one up now could read the
        // constellation, whose connection this write holds.
        let signer_of = |agent: &str| -> Result<Arc<Ed25519Signer>, RuntimeError> {
            match agent {
                agent if agent == finisher.provider_id => Ok(Arc::clone(&finisher.provider)),
                agent if agent == finisher.buyer_id => Ok(Arc::clone(&finisher.buyer)),
                other => Err(RuntimeError::Io(std::io::Error::other(format!(
                    "agent {other} signs a session's last events, which only its buyer and provider do"
                )))),
            }
        };
        let drafts = std::mem::take(&mut run.pending);
        let Some(flush) = self.seal_drafts(&live.stream, after, drafts, &run.state, &signer_of)? else {
            return Ok(());
        };
        let release = live
            .claimed
            .then(|| pactum_memory::OwnerChange::Release { session_id: &live.session_id, owner: &self.owner });
        let checkpoint_id = ConstellationEventStore::append_session_in(
            ledger,
            live.stream.id(),
            &flush.sealed,
            flush.checkpoint.as_ref(),
            release,
        )?;
        let staged = crate::preferences::stage_outcome(&self.db, ledger, &flush.durable);
        run.ended = Some(EndedInWrite { flush, checkpoint_id, staged });
        Ok(())
    }

    /// Makes the pending events durable in one atomic write, each signed by its sender, with a
    /// checkpoint when the session has just committed or ended; then folds the sealed events
    /// into the durable state.
    fn flush(&self, live: &mut LiveSession, observer: &mut dyn SessionObserver) -> Result<(), RuntimeError> {
        let Some(flush) = self.seal_pending(live)? else { return Ok(()) };
        let owner_change = self.owner_change(live, &flush);
        let store = live.stream.store();
        let (events, checkpoint) = (&flush.sealed, flush.checkpoint.as_ref());
        let ends = flush.durable.phase.is_terminal() && !live.durable.phase.is_terminal();
        let (checkpoint_id, staged) = if ends {
            // The write that ends the session also appends its outcome to the buyer's log:
            // both are durable together, and one commit is saved.
            store.append_session_then(live.stream.id(), events, checkpoint, owner_change, |ledger| {
                Ok(crate::preferences::stage_outcome(&self.db, ledger, &flush.durable))
            })?
        } else {
            let id = store
                .append_session(live.stream.id(), events, checkpoint, owner_change)
                .map_err(pactum_transcripts::TranscriptError::from)?;
            (id, None)
        };
        if let Some(staged) = staged {
            self.db.staged_committed(staged);
        }
        live.outcome_logged |= ends;
        self.finish_flush(live, flush, checkpoint_id, observer);
        Ok(())
    }

    /// Seals the pending events (each signed by its sender, chained after the durable head) and
    /// works out what their write carries: the durable state they lead to and, when the session
    /// has just committed or ended, a checkpoint of it. `None` when nothing is pending. The
    /// drafts leave `live.pending` here: if the write then fails, the caller returns the error
    /// and drops the live session (the next run reloads it from the transcript).
    fn seal_pending(&self, live: &mut LiveSession) -> Result<Option<SealedFlush>, RuntimeError> {
        if live.pending.is_empty() {
            return Ok(None);
        }
        let drafts = std::mem::take(&mut live.pending);
        let after = SealAfter { head: live.head, durable_phase: live.durable.phase };
        self.seal_drafts(&live.stream, after, drafts, &live.state, &|agent| self.signer(agent))
    }

    /// Seals `drafts` after `after.head`: `state` is the session's state with the drafts
    /// folded in, `signer_of` finds each sender's signer. See [`Self::seal_pending`].
    fn seal_drafts(
        &self,
        stream: &TranscriptStream<ConstellationEventStore>,
        after: SealAfter,
        drafts: Vec<EventDraft>,
        state: &SessionState,
        signer_of: &dyn Fn(&str) -> Result<Arc<Ed25519Signer>, RuntimeError>,
    ) -> Result<Option<SealedFlush>, RuntimeError> {
        let mut signers = Vec::with_capacity(drafts.len());
        for draft in &drafts {
            let agent = match &draft.party {
                Party::Buyer => state.buyer_id().unwrap_or_default().to_owned(),
                Party::Provider(id) | Party::Member(id) => id.clone(),
            };
            let signer = signer_of(&agent)?;
            if signer.key_id().as_str() != draft.key_id {
                return Err(RuntimeError::Store(pactum_memory::StoreError::Corrupt {
                    detail: format!("agent {agent} signs as {}, the session expects {}", signer.key_id(), draft.key_id),
                }));
            }
            signers.push(signer);
        }
        let new_events = drafts
            .into_iter()
            .zip(&signers)
            .map(|(draft, signer)| {
                Ok(NewEvent {
                    kind: EventKind::new(draft.kind)
                        .map_err(|e| RuntimeError::Io(std::io::Error::other(e.to_string())))?,
                    body: draft.body,
                    signer: Some(signer.as_ref() as &dyn EventSigner),
                    at_ms: Some(draft.at_ms),
                })
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let sealed = stream.seal_batch_with(after.head, new_events, |jobs| {
            // Every event has a signer (`signers`, in order), so `jobs` line up with them.
            let jobs = signers
                .iter()
                .zip(jobs)
                .map(|(signer, (named, digest))| {
                    debug_assert_eq!(signer.key_id(), named.key_id());
                    (Arc::clone(signer), *digest)
                })
                .collect();
            self.cosigner.sign_all(jobs)
        })?;
        let Some(last) = sealed.last() else { return Ok(None) };
        // The sealed events are the drafts `state` already folds; only their hashes are new.
        let mut durable = state.clone();
        for event in &sealed {
            durable.record_hash(event.seq, &event.hash);
        }
        let milestone = matches!(durable.phase, Phase::Committed | Phase::Completed | Phase::Failed)
            && durable.phase != after.durable_phase;
        let checkpoint = if milestone {
            let state = state_json(&durable)?;
            Some(SealedCheckpoint::new(stream.id(), last.seq, last.hash, &state, last.at_ms)?)
        } else {
            None
        };
        Ok(Some(SealedFlush { sealed, durable, checkpoint }))
    }

    /// The change of owner a write makes: a new session is claimed by its first write, an
    /// ended one released by its last (one that ends in its first write is never held).
    fn owner_change<'a>(
        &'a self,
        live: &'a LiveSession,
        flush: &SealedFlush,
    ) -> Option<pactum_memory::OwnerChange<'a>> {
        let at_ms = flush.sealed.last()?.at_ms;
        match (live.claimed, flush.durable.phase.is_terminal()) {
            (false, false) => {
                Some(pactum_memory::OwnerChange::Claim { session_id: &live.session_id, owner: &self.owner, at_ms })
            }
            (true, true) => {
                Some(pactum_memory::OwnerChange::Release { session_id: &live.session_id, owner: &self.owner })
            }
            (false, true) | (true, false) => None,
        }
    }

    /// Updates the live session once a sealed flush is durable, and shows its events.
    fn finish_flush(
        &self,
        live: &mut LiveSession,
        flush: SealedFlush,
        checkpoint_id: Option<pactum_transcripts::CheckpointId>,
        observer: &mut dyn SessionObserver,
    ) {
        let SealedFlush { sealed, durable, .. } = flush;
        let Some(last) = sealed.last() else { return };
        live.head = Some(pactum_transcripts::Head { seq: last.seq, hash: last.hash, at_ms: last.at_ms });
        if checkpoint_id.is_some() {
            live.checkpoint_seq = Some(last.seq);
        }
        let ended = durable.phase.is_terminal();
        live.claimed = !ended;
        live.released = ended;
        live.durable = durable;
        live.state = live.durable.clone();
        for event in &sealed {
            observer.on_event(&live.state, event);
        }
    }
}

/// Where a batch of drafts is sealed: after `head`, in a session whose durable phase so far
/// is `durable_phase` (a batch that changes it to a milestone carries a checkpoint).
#[derive(Clone, Copy)]
struct SealAfter {
    head: Option<pactum_transcripts::Head>,
    durable_phase: Phase,
}

/// Pending events sealed for one write, and the durable state they lead to.
struct SealedFlush {
    sealed: Vec<pactum_transcripts::Event>,
    durable: SessionState,
    checkpoint: Option<SealedCheckpoint>,
}

/// What [`AgentRuntime::settle`] did inside its transaction.
struct RailRun {
    state: SessionState,
    pending: Vec<EventDraft>,
    applied: Vec<RailPhase>,
    gave_up: bool,
    /// The session's last events, when the write also ended it (see
    /// [`AgentRuntime::finish_in_write`]).
    ended: Option<EndedInWrite>,
}

/// The end of a session written in the transaction that settled it.
struct EndedInWrite {
    flush: SealedFlush,
    checkpoint_id: Option<pactum_transcripts::CheckpointId>,
    staged: Option<pactum_memory::blocks::StagedWrite>,
}

/// Who can end a settling session inside its settlement's write: its local provider, which
/// signs the receipt, and the buyer; both signers are fetched before the write begins.
struct LocalFinisher {
    provider_id: String,
    provider: Arc<Ed25519Signer>,
    buyer_id: String,
    buyer: Arc<Ed25519Signer>,
}

/// The input that records a receipt signed by a local provider's key.
fn receipt_signed_by(signer: &Ed25519Signer, digest: &pactum_transcripts::Digest, peac_input: Option<&str>) -> Input {
    Input::ReceiptSigned {
        key_id: signer.key_id().as_str().to_owned(),
        signature: signer.sign_digest(digest),
        peac_signature: peac_input.map(|input| signer.sign_message(input.as_bytes())),
    }
}

fn head_of(event: &pactum_transcripts::Event) -> pactum_transcripts::Head {
    pactum_transcripts::Head { seq: event.seq, hash: event.hash, at_ms: event.at_ms }
}

/// What a remote provider said, as recorded: at most `INVALID_DETAIL_CHARS_MAX` characters.
fn bounded_detail(detail: String) -> String {
    const INVALID_DETAIL_CHARS_MAX: usize = 200;
    if detail.chars().count() <= INVALID_DETAIL_CHARS_MAX {
        return detail;
    }
    let mut cut: String = detail.chars().take(INVALID_DETAIL_CHARS_MAX).collect();
    cut.push('…');
    cut
}

/// The provider a quote input is from.
fn quote_provider(input: &Input) -> &str {
    match input {
        Input::Quote { provider, .. } => provider,
        _ => "",
    }
}

/// Checks a remote provider's answer before the core sees it: an `round.ask` or `round.reject`
/// from this provider to this buyer, for this round's offer, in the offer's currency, sealed
/// with the provider's key. Anything else is an invalid answer with its reason.
fn check_remote_answer(
    state: &SessionState,
    provider: &ProviderRef,
    round: u32,
    response: crate::remote::host::QuoteResponse,
) -> QuoteAnswer {
    let invalid = |reason: &str, detail: String| QuoteAnswer::Invalid {
        reason: reason.to_owned(),
        detail: bounded_detail(detail),
    };
    let session_id = state.created.as_ref().map(|c| c.session_id.as_str()).unwrap_or_default();
    let buyer = state.buyer_id().unwrap_or_default();
    // Parsed once; the core records exactly these fields, so each must be what it would write.
    let (ask, reject) = match response.kind.as_str() {
        kind::ASK => match serde_json::from_value::<AskMessage>(response.message.clone()) {
            Ok(message) => (Some(message), None),
            Err(e) => return invalid("MALFORMED", format!("round.ask: {e}")),
        },
        kind::REJECT => match serde_json::from_value::<RejectMessage>(response.message.clone()) {
            Ok(message) => (None, Some(message)),
            Err(e) => return invalid("MALFORMED", format!("round.reject: {e}")),
        },
        other => return invalid("MALFORMED", format!("an answer of kind {other:?}")),
    };
    let (sender, receiver, message_round, round_type, in_reply_to, envelope) = match (&ask, &reject) {
        (Some(m), _) => (&m.sender, &m.receiver, m.round, m.round_type.as_str(), m.in_reply_to, &m.envelope),
        (_, Some(m)) => (&m.sender, &m.receiver, m.round, m.round_type.as_str(), m.in_reply_to, &m.envelope),
        (None, None) => return invalid("MALFORMED", "no message".into()),
    };
    let expected_type = if ask.is_some() { "ASK" } else { "REJECT" };
    // The core records a refusal as `refused`; any other reason would not match the seal.
    let refused_as_recorded = reject.as_ref().is_none_or(|m| m.reason == "refused");
    if *sender != provider.agent_id
        || receiver != buyer
        || message_round != round
        || round_type != expected_type
        || Some(in_reply_to) != state.bid_seq
        || !refused_as_recorded
    {
        return invalid(
            "MESSAGE_MISMATCH",
            format!(
                "the answer is not {}'s {expected_type} (reason refused) to round {round}'s offer",
                provider.agent_id
            ),
        );
    }
    let Some(seal) = envelope.clone() else { return invalid("SIGNATURE_INVALID", "the answer is not sealed".into()) };
    if state.bid_hash.as_deref() != Some(seal.reply_to.as_str()) {
        return invalid("MESSAGE_MISMATCH", "the seal does not name the round's offer".into());
    }
    if let Err(reason) = crate::remote::verify_seal(
        &seal,
        &provider.public_key,
        &provider.key_id,
        session_id,
        &response.kind,
        &response.message,
    ) {
        return invalid("SIGNATURE_INVALID", reason);
    }
    let Some(message) = ask else {
        let latency_ms = reject.map_or(0, |m| m.latency_ms);
        return QuoteAnswer::Refused { latency_ms, envelope: Some(seal) };
    };
    let currency = state.bid.as_ref().map(|b| b.currency.as_str()).unwrap_or_default();
    match message.price.money() {
        Ok(price) if price.currency().code() == currency => {
            QuoteAnswer::Ask { price, latency_ms: message.latency_ms, envelope: Some(seal) }
        }
        Ok(price) => {
            invalid("MESSAGE_MISMATCH", format!("asks in {} but the negotiation is in {currency}", price.currency()))
        }
        Err(e) => invalid("MESSAGE_MISMATCH", format!("price: {e}")),
    }
}

/// Runs inputs through the core. Their events wait in `pending` until the next flush; `state`
/// already includes them, so the next effects follow from them.
fn decide_into(
    state: &mut SessionState,
    pending: &mut Vec<EventDraft>,
    inputs: Vec<(Input, u64)>,
    seed: u64,
) -> Result<(), RuntimeError> {
    let mut decided_any = false;
    for (input, now) in inputs {
        // Inputs after the one that ended the session are moot; an input for a session that
        // had already ended is refused by `step`.
        if state.phase.is_terminal() && decided_any {
            break;
        }
        let mut rng = step_rng(seed, state.next_seq);
        let step = step(state, input, now, &mut rng)?;
        pending.extend(step.events);
        *state = step.state;
        decided_any = true;
    }
    Ok(())
}

fn state_json(state: &SessionState) -> Result<serde_json::Value, RuntimeError> {
    serde_json::to_value(state).map_err(|e| RuntimeError::Io(std::io::Error::other(e)))
}

/// A session's state: its latest checkpoint plus the events after it, verified on the way.
pub fn read_session_state(db: &Arc<Constellation>, session_id: &str) -> Result<SessionState, RuntimeError> {
    struct Epoch;
    impl fmt::Debug for Epoch {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("Epoch")
        }
    }
    impl Clock for Epoch {
        fn now_ms(&self) -> u64 {
            0
        }
    }
    Ok(load_session(db, Arc::new(Epoch), session_id)?.0)
}

fn load_session(
    db: &Arc<Constellation>,
    clock: Arc<dyn Clock>,
    session_id: &str,
) -> Result<(SessionState, TranscriptStream<ConstellationEventStore>), RuntimeError> {
    check_session_id(session_id)?;
    let stream_id = session_stream_id(session_id);
    if db.stream(&stream_id)?.is_none_or(|r| r.event_count == 0) {
        return Err(RuntimeError::SessionNotFound(session_id.to_owned()));
    }
    let stream_id = StreamId::new(stream_id).map_err(|_| RuntimeError::SessionNotFound(session_id.to_owned()))?;
    let stream = TranscriptStream::open(ConstellationEventStore::new(db.clone()), stream_id, clock)?;
    let keys = key_ring(db)?;
    let latest = stream
        .store()
        .latest_checkpoint(stream.id())
        .map_err(pactum_transcripts::TranscriptError::from)?
        .map(|(id, _)| id);
    let replay = stream.replay(latest, &SessionReducer, &keys)?;
    Ok((replay.state, stream))
}

/// The buyer's constraints, each with the tally of the payments it counts, read inside the
/// payment's write transaction. A stored constraint that no longer parses is a refusal to pay,
/// never a constraint skipped. The payment's own hold is never counted: it is on the ledger
/// already when a crash came between the write that held it and the one that records it.
fn agent_constraints(
    ledger: &LedgerTx<'_>,
    payer: &str,
    payment_id: &str,
    now: u64,
) -> Result<Vec<AgentConstraint>, RuntimeError> {
    let rows = ledger.agent_constraints(payer)?;
    let held_already = ledger.spend(payment_id)?.is_some();
    let without = crate::budget::SpendsWithout { ledger, payment_id };
    let mut constraints = Vec::with_capacity(rows.len());
    for row in rows {
        let constraint = crate::budget::parse_row(&row).map_err(|error| match error {
            crate::budget::BudgetError::Runtime(error) => error,
            other => RuntimeError::Store(pactum_memory::StoreError::Corrupt {
                detail: format!("constraint {} of {payer} does not parse: {other}", row.name),
            }),
        })?;
        let tally = if held_already {
            constraint.tally_with(&crate::budget::StoredSpends::new(&without, payer, row.since_ms, None), now)?
        } else {
            constraint.tally_with(&crate::budget::StoredSpends::new(ledger, payer, row.since_ms, None), now)?
        };
        constraints.push(AgentConstraint { name: row.name, constraint, since_ms: row.since_ms, tally });
    }
    Ok(constraints)
}

fn rail_store_error(error: RailError) -> RuntimeError {
    match error {
        RailError::Store(store) => store.into(),
        other => RuntimeError::Io(std::io::Error::other(other.to_string())),
    }
}

/// A session being driven.
struct LiveSession {
    session_id: String,
    /// The state including pending events: what the next effects follow from.
    state: SessionState,
    /// The fold of the durable events only.
    durable: SessionState,
    /// Decided, not yet durable.
    pending: Vec<EventDraft>,
    stream: TranscriptStream<ConstellationEventStore>,
    /// The last durable event, as this process wrote or read it.
    head: Option<pactum_transcripts::Head>,
    /// Seq of the checkpoint this process last stored.
    checkpoint_seq: Option<u64>,
    /// Whether this process holds the session (a new one is claimed by its first write).
    claimed: bool,
    /// Whether the write that ended the session also let go of it.
    released: bool,
    /// A broker's purchase driven before its parent session exists: wait for the parent rather
    /// than fail when the parent has not paid.
    wait_for_parent: bool,
    /// Whether this process's write that ended the session also appended its outcome to the
    /// buyer's outcomes log (or tried to).
    outcome_logged: bool,
}

/// How a session is linked to another by a delegation (both empty for a plain session).
#[derive(Default)]
struct SessionLinks {
    parent_session: Option<String>,
    delegated_to: Option<DelegationBody>,
}

impl LiveSession {
    fn new(
        session_id: String,
        state: SessionState,
        stream: TranscriptStream<ConstellationEventStore>,
        head: Option<pactum_transcripts::Head>,
    ) -> Self {
        Self {
            session_id,
            durable: state.clone(),
            state,
            pending: Vec::new(),
            stream,
            head,
            checkpoint_seq: None,
            claimed: true,
            released: false,
            wait_for_parent: false,
            outcome_logged: false,
        }
    }
}

/// The fold of session events, for replays and checkpoints.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionReducer;

impl pactum_transcripts::Reducer for SessionReducer {
    type State = SessionState;

    fn initial_state(&self) -> SessionState {
        SessionState::default()
    }

    fn apply(
        &self,
        state: &mut SessionState,
        event: &pactum_transcripts::Event,
    ) -> Result<(), pactum_transcripts::ReduceError> {
        state.apply(
            event.seq,
            event.kind.as_str(),
            &event.body,
            event.signer.as_ref().map(KeyId::as_str),
            event.at_ms,
            Some(&event.hash),
        )
    }
}
