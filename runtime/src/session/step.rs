//! The sans-IO negotiation core: `step(state, input, now, rng) -> (state, events, effects)`.
//!
//! `step` decides what happens when something arrives (a provider's answer, the buyer's
//! approval, a rail's result). It returns the events to record — the input itself first, then
//! the decisions — and the effects the shell must perform next. It never reads a clock, the
//! disk, the network or the OS's randomness: time and an RNG are passed in, and the RNG of a step
//! is derived from the session's seed and the step's first seq, so a replay reproduces it.
//!
//! Decisions, in the order they are made:
//! - Admission (`Start`): the rail and settlement mode must be allowed (PACT-103/104); the
//!   intent's maximum price must be within the policy's cap (PACT-105); the deadline must not
//!   have passed (PACT-107).
//! - Discovery: no provider offering the intent in its currency is PACT-309. When the policy
//!   requires a passport, the shell's recorded checks (one per offering provider, made under the
//!   policy's requirement) exclude the denied ones; the passport gate denying every one is
//!   PACT-203 with `passport:<agent>:<REASON>` evidence. Policy excluding every one (static
//!   limits, an admission rule, or these together with passport denials) is PACT-102. Otherwise
//!   INTENT goes to the admitted providers, then the round-1 BID.
//! - End of a round (every active provider answered): past the deadline is PACT-107. Otherwise
//!   the asks the strategy accepts and the policy admits are candidates, and the best is
//!   selected by lowest price, then (when the buyer's preferences name preferred providers) a
//!   preferred provider, then lowest latency, then provider id. With no candidate: no
//!   provider left is PACT-310 (all unreachable), PACT-311 (any timed out) or PACT-301 (refused);
//!   the round limit reached is PACT-101 when the only asks otherwise acceptable were denied by a
//!   round rule (`policy_rule:<name>`), else PACT-106; asks that stopped moving for two rounds while above the
//!   maximum price are a deadlock, PACT-303; else a COUNTER opens the next round.
//! - Approval: declined is ABORT and PACT-312; past the deadline PACT-107; the policy check
//!   before settlement (static limits, then settlement rules) may refuse (PACT-108); else ACCEPT
//!   and the commitment.
//!
//! Policy rules (`pactum-policy/2`, CEL) are evaluated on plain data built from the session's
//! records, never the clock; each stage's evaluations are recorded in one `policy.evaluated`
//! event, written only when the policy has rules for that stage.
//! - Settlement: prepare, commit, receipt; a failed commit is aborted before the session fails.

use rand_core::Rng;
use serde::Serialize;
use serde_json::Value;

use pactum_transcripts::{Digest, Event, ReduceError, SignatureBytes, verify_digest_signature};

use crate::coalition::CoalitionBody;
use crate::failure::FailureCode;
use crate::intent::{Intent, PolicyRule};
use crate::money::Money;
use crate::passport::PassportRequirement;
use crate::policy::{Context, Evaluation, OfferFacts, Policy, Stage, evaluate};
use crate::rail::RailPhase;
use crate::remote::EnvelopeSeal;
use crate::session::model::*;
use crate::session::receipt::attach_signature;
use crate::session::spending::{
    AgentConstraint, NamedConstraint, SESSION_SCOPE, judge_all, validate_session_constraints,
};
use crate::strategy::Strategy;

/// How many drop events a provider failure cites at most.
const EVIDENCE_REFS_MAX: usize = 16;

/// What starts a session.
#[derive(Debug)]
pub struct StartInput {
    pub session_id: String,
    pub buyer: PartyBody,
    pub intent: Intent,
    pub policy: Policy,
    pub strategy: &'static dyn Strategy,
    pub rail: String,
    pub seed: u64,
    pub auto_approve: bool,
    pub preferences: Option<PreferencesRecord>,
    /// The session's own spending constraints, named `1`, `2`, ...
    pub constraints: Vec<NamedConstraint>,
    /// Buyers pooling the purchase (the buyer leads), when there are several.
    pub coalition: Option<CoalitionBody>,
    /// The session a broker buys for (the buyer is the broker).
    pub parent_session: Option<String>,
    /// The broker's purchase a buyer's session relies on.
    pub delegated_to: Option<DelegationBody>,
}

/// A provider's answer to a request for a quote.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum QuoteAnswer {
    /// A price; a remote provider's carries its seal.
    Ask {
        price: Money,
        latency_ms: u32,
        envelope: Option<EnvelopeSeal>,
    },
    Refused {
        latency_ms: u32,
        envelope: Option<EnvelopeSeal>,
    },
    Timeout {
        waited_ms: u32,
    },
    Unreachable,
    /// A remote provider's answer that is not a valid signed message (`reason` is a stable
    /// code, see [`InvalidAnswerBody`]).
    Invalid {
        reason: String,
        detail: String,
    },
}

/// A rail step that failed, with the failure code it leads to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RailFailure {
    pub code: FailureCode,
    pub detail: String,
    /// The coalition member whose part failed, if the failure is one member's.
    pub member: Option<String>,
}

/// Something that happened, fed to [`step`].
#[derive(Debug)]
pub enum Input {
    Start(Box<StartInput>),
    Discovered {
        offering: Vec<ProviderRef>,
        /// The passport of each provider offering the intent, when the policy requires one.
        passports: Option<PassportRecord>,
    },
    Quote {
        provider: String,
        round: u32,
        answer: QuoteAnswer,
    },
    /// The buyer's answer to [`Effect::AskApproval`]; `by` says who gave it.
    Approval {
        approved: bool,
        by: String,
    },
    Abort {
        reason: String,
    },
    Rail {
        phase: RailPhase,
        outcome: Result<EvidenceBody, RailFailure>,
    },
    /// The buyer agent's spending constraints and their tallies, read in the transaction that
    /// would hold the payment (the session's own constraints are added by the core).
    ConstraintsChecked {
        agent: Vec<AgentConstraint>,
    },
    ReceiptSigned {
        key_id: String,
        signature: SignatureBytes,
        /// The provider's signature over the PEAC record's signing input (absent in sessions
        /// recorded before PEAC receipts).
        peac_signature: Option<SignatureBytes>,
    },
}

/// An event to record, not yet sealed into the stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventDraft {
    pub seq: u64,
    pub kind: &'static str,
    pub body: Value,
    pub party: Party,
    pub key_id: String,
    pub at_ms: u64,
}

/// The outcome of a step.
#[derive(Debug)]
pub struct Step {
    pub state: SessionState,
    pub events: Vec<EventDraft>,
    pub effects: Vec<Effect>,
}

/// Why an input was refused. Nothing was decided; the state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The input does not fit the session's phase (stable code `SESSION_INPUT_UNEXPECTED`).
    #[error("{0}")]
    Unexpected(String),
    /// The input is malformed (`SESSION_INPUT_INVALID`).
    #[error("{0}")]
    Invalid(String),
    /// A decision broke the protocol's own invariants: a bug (`SESSION_INVARIANT`).
    #[error("invariant broken: {0}")]
    Invariant(#[from] ReduceError),
}

impl StepError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unexpected(_) => "SESSION_INPUT_UNEXPECTED",
            Self::Invalid(_) => "SESSION_INPUT_INVALID",
            Self::Invariant(_) => "SESSION_INVARIANT",
        }
    }
}

/// The RNG of the step whose first event is `seq`: ChaCha20 keyed by SHA-256 of the seed and seq.
pub fn step_rng(seed: u64, seq: u64) -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng as _;
    let mut input = [0_u8; 16];
    input[..8].copy_from_slice(&seed.to_be_bytes());
    input[8..].copy_from_slice(&seq.to_be_bytes());
    rand_chacha::ChaCha20Rng::from_seed(*Digest::tagged(b"pactum-session/1 rng\0", &input).as_bytes())
}

struct Decider<'r, R: Rng + ?Sized> {
    state: SessionState,
    events: Vec<EventDraft>,
    now_ms: u64,
    rng: &'r mut R,
}

impl<R: Rng + ?Sized> Decider<'_, R> {
    fn emit<T: Serialize>(&mut self, kind: &'static str, body: &T, party: Party) -> Result<u64, StepError> {
        let body = serde_json::to_value(body).map_err(|e| StepError::Invalid(format!("{kind}: {e}")))?;
        let seq = self.state.next_seq;
        let key_id = match self.state.key_id_of(&party) {
            Some(key_id) => key_id.to_owned(),
            // The buyer's key id arrives with the first event.
            None => body.pointer("/buyer/key_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        };
        self.state.apply(seq, kind, &body, Some(&key_id), self.now_ms, None)?;
        self.events.push(EventDraft { seq, kind, body, party, key_id, at_ms: self.now_ms });
        Ok(seq)
    }

    fn nonce(&mut self) -> String {
        let mut bytes = [0_u8; 16];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The buyer's ABORT to the providers still in the negotiation.
    fn emit_abort(&mut self, reason: String) -> Result<u64, StepError> {
        let message = AbortMessage {
            round: self.state.round,
            round_type: "ABORT".into(),
            sender: self.buyer(),
            receivers: self.state.active.clone(),
            reason,
            nonce: self.nonce(),
        };
        self.emit(kind::ABORT, &message, Party::Buyer)
    }

    fn fail(&mut self, code: FailureCode, detail: String, evidence: Vec<String>) -> Result<(), StepError> {
        self.emit(kind::FAILED, &FailureBody::new(code, detail, evidence), Party::Buyer).map(|_| ())
    }

    fn buyer(&self) -> String {
        self.state.buyer_id().unwrap_or_default().to_owned()
    }

    fn config(&self) -> Result<std::sync::Arc<SessionConfig>, StepError> {
        self.state.config().map_err(|e| StepError::Invariant(refuse(self.state.next_seq, "config", e.to_string())))
    }

    fn deadline_passed(&self, intent: &Intent) -> bool {
        intent.deadline_ms().is_some_and(|deadline| self.now_ms > deadline)
    }
}

/// Decides what `input` means for a session in `state`, at `now_ms`. See the module docs.
pub fn step<R: Rng + ?Sized>(state: &SessionState, input: Input, now_ms: u64, rng: &mut R) -> Result<Step, StepError> {
    // Time never runs backwards inside a session.
    let now_ms = now_ms.max(state.last_at_ms);
    let mut decider = Decider { state: state.clone(), events: Vec::new(), now_ms, rng };
    match input {
        Input::Start(start) => start_session(&mut decider, *start)?,
        Input::Discovered { offering, passports } => discovered(&mut decider, offering, passports)?,
        Input::Quote { provider, round, answer } => quote(&mut decider, provider, round, answer)?,
        Input::Approval { approved, by } => approval(&mut decider, approved, by)?,
        Input::Abort { reason } => abort(&mut decider, reason)?,
        Input::Rail { phase, outcome } => rail(&mut decider, phase, outcome)?,
        Input::ConstraintsChecked { agent } => constraints_checked(&mut decider, agent)?,
        Input::ReceiptSigned { key_id, signature, peac_signature } => {
            receipt_signed(&mut decider, key_id, signature, peac_signature)?
        }
    }
    let effects = decider.state.effects();
    Ok(Step { state: decider.state, events: decider.events, effects })
}

fn start_session<R: Rng + ?Sized>(d: &mut Decider<'_, R>, start: StartInput) -> Result<(), StepError> {
    if d.state.phase != Phase::New {
        return Err(StepError::Unexpected("the session has already started".into()));
    }
    start.policy.static_part().check().map_err(|e| StepError::Invalid(e.to_string()))?;
    let created = CreatedBody {
        format: SESSION_FORMAT.to_owned(),
        session_id: start.session_id,
        buyer: start.buyer,
        intent: start.intent.to_json(),
        policy: start.policy.to_json(),
        policy_hash: start.policy.policy_hash().to_owned(),
        strategy: start.strategy.name().to_owned(),
        rail: start.rail.clone(),
        seed: start.seed.to_string(),
        approval: if start.auto_approve { "auto" } else { "interactive" }.to_owned(),
        preferences: start.preferences.clone(),
        constraints: start.constraints.clone(),
        coalition: start.coalition.clone(),
        parent_session: start.parent_session.clone(),
        delegated_to: start.delegated_to.clone(),
    };
    validate_session_constraints(&created.constraints).map_err(StepError::Invalid)?;
    if let Some(coalition) = &created.coalition {
        coalition.validate(&created.buyer.agent_id).map_err(StepError::Invalid)?;
    }
    let created_seq = d.emit(kind::CREATED, &created, Party::Buyer)?;
    // Each member other than the lead signs its share before anything else happens.
    if let Some(coalition) = &start.coalition {
        for member in coalition.members.iter().filter(|m| m.agent_id != coalition.lead) {
            let joined = JoinedBody {
                session_id: created.session_id.clone(),
                member: member.agent_id.clone(),
                weight: member.weight,
                split: coalition.split.clone(),
            };
            d.emit(kind::COALITION_JOINED, &joined, Party::Member(member.agent_id.clone()))?;
        }
    }
    let (intent, policy) = (&start.intent, start.policy.static_part());
    let evidence = |rule: PolicyRule| vec![event_ref(created_seq), format!("policy_rule:{}", rule.name())];
    if let Err(rule) = policy.admits_settlement(&start.rail, intent.settlement_mode()) {
        let code = match rule {
            PolicyRule::AllowedRails => FailureCode::RailNotAllowed,
            _ => FailureCode::SettlementModeNotAllowed,
        };
        let detail = format!(
            "the policy does not allow rail {} with settlement mode {}",
            start.rail,
            intent.settlement_mode().as_str()
        );
        return d.fail(code, detail, evidence(rule));
    }
    if let Some(cap) = policy.max_price {
        let max = intent.max_price();
        if cap.currency() != max.currency() || cap.amount_minor() < max.amount_minor() {
            let detail = format!("the intent's maximum price {max} is above the policy's cap {cap}");
            return d.fail(FailureCode::MaxPriceExceeded, detail, evidence(PolicyRule::MaxPrice));
        }
    }
    if let Some(deadline) = intent.deadline_ms().filter(|deadline| *deadline <= d.now_ms) {
        let detail = format!("the deadline {deadline} ms had passed when the session started ({} ms)", d.now_ms);
        return d.fail(FailureCode::DeadlineExceeded, detail, vec![event_ref(created_seq)]);
    }
    Ok(())
}

/// Checks the recorded passport answers against the policy: one per provider offering the
/// intent, under the policy's requirement, each consistent with itself.
fn check_passports(
    requirement: Option<PassportRequirement>,
    offering: &[ProviderRef],
    passports: Option<PassportRecord>,
) -> Result<Option<PassportRecord>, StepError> {
    let Some(requirement) = requirement else {
        return match passports {
            None => Ok(None),
            Some(_) => Err(StepError::Invalid("passport checks given, but the policy requires no passport".into())),
        };
    };
    let mut record = passports.ok_or_else(|| {
        StepError::Invalid("the policy requires a passport, and no passport checks were given".into())
    })?;
    if record.requirement != requirement {
        return Err(StepError::Invalid("the passport checks were made under another requirement".into()));
    }
    record.checks.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let ids: Vec<&str> = record.checks.iter().map(|c| c.agent_id.as_str()).collect();
    let offered: Vec<&str> = offering.iter().map(|p| p.agent_id.as_str()).collect();
    if ids != offered {
        return Err(StepError::Invalid("there must be one passport check per provider offering the intent".into()));
    }
    for check in &record.checks {
        let thresholds = check.min_score_milli == requirement.min_score_milli
            && check.min_confidence_milli == requirement.min_confidence_milli;
        if !thresholds || !check.is_consistent() {
            return Err(StepError::Invalid(format!("the passport check of {} is inconsistent", check.agent_id)));
        }
    }
    Ok(Some(record))
}

fn discovered<R: Rng + ?Sized>(
    d: &mut Decider<'_, R>,
    mut offering: Vec<ProviderRef>,
    passports: Option<PassportRecord>,
) -> Result<(), StepError> {
    if !d.state.effects().iter().any(|e| matches!(e, Effect::Discover { .. })) {
        return Err(StepError::Unexpected("discovery is not awaited".into()));
    }
    let config = d.config()?;
    offering.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    offering.dedup_by(|a, b| a.agent_id == b.agent_id);
    let passports = check_passports(config.resolved.passport_requirement(), &offering, passports)?;
    let mut admitted = Vec::new();
    let mut excluded = Vec::new();
    let mut evaluations = Vec::new();
    let mut passport_denials = Vec::new();
    let rail = d.state.created.as_ref().map(|c| c.rail.clone()).unwrap_or_default();
    let admission_rules = config.resolved.has_rules_at(Stage::Admission);
    for provider in &offering {
        let denial = passports
            .as_ref()
            .and_then(|record| record.checks.iter().find(|c| c.agent_id == provider.agent_id))
            .and_then(|check| check.reason);
        match config.policy.admits_provider(&provider.agent_id) {
            Ok(()) if denial.is_some() => {
                excluded.push(ExcludedProvider {
                    provider: provider.agent_id.clone(),
                    policy_rule: PASSPORT_EXCLUSION.to_owned(),
                });
                passport_denials.push(passport_ref(&provider.agent_id, denial.map_or("", |r| r.as_str())));
            }
            Ok(()) if admission_rules => {
                let context = Context::admission(&config.intent, &provider.agent_id, &provider.name, &rail);
                let evaluation = evaluate(&config.resolved, &context);
                match &evaluation.denied_by {
                    Some(rule) => excluded
                        .push(ExcludedProvider { provider: provider.agent_id.clone(), policy_rule: rule.clone() }),
                    None => admitted.push(provider.agent_id.clone()),
                }
                evaluations.push(evaluation);
            }
            Ok(()) => admitted.push(provider.agent_id.clone()),
            Err(rule) => excluded
                .push(ExcludedProvider { provider: provider.agent_id.clone(), policy_rule: rule.name().to_owned() }),
        }
    }
    let intent = &config.intent;
    let offered = !offering.is_empty();
    let discovery_seq = d.emit(
        kind::DISCOVERY,
        &DiscoveryBody { offering, admitted: admitted.clone(), excluded: excluded.clone(), passport: passports },
        Party::Buyer,
    )?;
    let evaluated_seq = emit_evaluations(d, Stage::Admission, 0, evaluations)?;
    if !offered {
        let detail = format!(
            "no provider in the directory offers {} in {}",
            intent.intent_type(),
            intent.max_price().currency()
        );
        return d.fail(FailureCode::NoProviders, detail, vec![event_ref(discovery_seq)]);
    }
    if admitted.is_empty() && passport_denials.len() == excluded.len() {
        let mut evidence = vec![event_ref(discovery_seq)];
        evidence.extend(passport_denials.iter().take(EVIDENCE_REFS_MAX).cloned());
        let names: Vec<&str> = excluded.iter().map(|e| e.provider.as_str()).collect();
        let detail =
            format!("the passport gate denied every provider offering {}: {}", intent.intent_type(), names.join(", "));
        return d.fail(FailureCode::PassportDenied, detail, evidence);
    }
    if admitted.is_empty() {
        let mut evidence = vec![event_ref(discovery_seq)];
        evidence.extend(evaluated_seq.map(event_ref));
        evidence.extend(passport_denials.iter().take(EVIDENCE_REFS_MAX).cloned());
        for rule in excluded.iter().filter(|e| e.policy_rule != PASSPORT_EXCLUSION) {
            let reference = format!("policy_rule:{}", rule.policy_rule);
            if !evidence.contains(&reference) {
                evidence.push(reference);
            }
        }
        let names: Vec<&str> = excluded.iter().map(|e| e.provider.as_str()).collect();
        let detail =
            format!("the policy excludes every provider offering {}: {}", intent.intent_type(), names.join(", "));
        return d.fail(FailureCode::ProviderNotAllowed, detail, evidence);
    }
    if d.deadline_passed(intent) {
        let detail = "the deadline passed during discovery".to_owned();
        return d.fail(FailureCode::DeadlineExceeded, detail, vec![event_ref(0), event_ref(discovery_seq)]);
    }
    let message = IntentMessage {
        round: 0,
        round_type: "INTENT".into(),
        sender: d.buyer(),
        receivers: admitted.clone(),
        intent_type: intent.intent_type().as_str().to_owned(),
        scope: intent.scope().to_owned(),
        currency: intent.max_price().currency().code().to_owned(),
        latency_ms_max: intent.latency_ms_max(),
        deadline_ms: intent.deadline_ms(),
        settlement_mode: intent.settlement_mode().as_str().to_owned(),
        nonce: d.nonce(),
    };
    d.emit(kind::INTENT, &message, Party::Buyer)?;
    let bid = config.strategy.bid(intent.max_price(), 1, config.policy.rounds_max);
    let offer = OfferMessage {
        round: 1,
        round_type: "BID".into(),
        sender: d.buyer(),
        receivers: admitted,
        price: PriceBody::of(bid),
        nonce: d.nonce(),
    };
    d.emit(kind::BID, &offer, Party::Buyer)?;
    Ok(())
}

fn quote<R: Rng + ?Sized>(
    d: &mut Decider<'_, R>,
    provider: String,
    round: u32,
    answer: QuoteAnswer,
) -> Result<(), StepError> {
    let awaited = d
        .state
        .effects()
        .iter()
        .any(|e| matches!(e, Effect::RequestQuote { provider: p, round: r, .. } if *p == provider && *r == round));
    if !awaited {
        return Err(StepError::Unexpected(format!("no quote from {provider} for round {round} is awaited")));
    }
    let in_reply_to = d.state.bid_seq.unwrap_or_default();
    let buyer = d.buyer();
    match answer {
        QuoteAnswer::Ask { price, latency_ms, envelope } => {
            let party = if envelope.is_some() { Party::Buyer } else { Party::Provider(provider.clone()) };
            let message = AskMessage {
                round,
                round_type: "ASK".into(),
                sender: provider.clone(),
                receiver: buyer,
                price: PriceBody::of(price),
                latency_ms,
                in_reply_to,
                envelope,
            };
            d.emit(kind::ASK, &message, party).map_err(|error| match error {
                StepError::Invariant(reduce) => StepError::Invalid(reduce.reason),
                other => other,
            })?;
        }
        QuoteAnswer::Refused { latency_ms, envelope } => {
            let party = if envelope.is_some() { Party::Buyer } else { Party::Provider(provider.clone()) };
            let message = RejectMessage {
                round,
                round_type: "REJECT".into(),
                sender: provider.clone(),
                receiver: buyer,
                reason: "refused".into(),
                latency_ms,
                in_reply_to,
                envelope,
            };
            d.emit(kind::REJECT, &message, party)?;
        }
        QuoteAnswer::Timeout { waited_ms } => {
            d.emit(kind::TIMEOUT, &NoAnswerBody { round, provider, waited_ms: Some(waited_ms) }, Party::Buyer)?;
        }
        QuoteAnswer::Unreachable => {
            d.emit(kind::UNREACHABLE, &NoAnswerBody { round, provider, waited_ms: None }, Party::Buyer)?;
        }
        QuoteAnswer::Invalid { reason, detail } => {
            d.emit(kind::INVALID_ANSWER, &InvalidAnswerBody { round, provider, reason, detail }, Party::Buyer)?;
        }
    }
    if d.state.answers.len() == d.state.active.len() {
        close_round(d)?;
    }
    Ok(())
}

/// Records the evaluations of a stage (nothing when there are none: sessions whose policy has
/// no rules for the stage write exactly the events they always did). Returns the event's seq.
fn emit_evaluations<R: Rng + ?Sized>(
    d: &mut Decider<'_, R>,
    stage: Stage,
    round: u32,
    evaluations: Vec<Evaluation>,
) -> Result<Option<u64>, StepError> {
    if evaluations.is_empty() {
        return Ok(None);
    }
    d.emit(kind::POLICY_EVALUATED, &PolicyEvaluatedBody { stage, round, evaluations }, Party::Buyer).map(Some)
}

/// Orders offers: lowest price, then a preferred provider (if the buyer's preferences name
/// any), then lowest latency, then provider id.
fn offer_order(preferred: &[String]) -> impl Fn(&AskRecord, &AskRecord) -> std::cmp::Ordering + '_ {
    let rank = |ask: &AskRecord| !preferred.contains(&ask.provider);
    move |a, b| {
        (a.price.amount_minor, rank(a), a.latency_ms, &a.provider).cmp(&(
            b.price.amount_minor,
            rank(b),
            b.latency_ms,
            &b.provider,
        ))
    }
}

fn close_round<R: Rng + ?Sized>(d: &mut Decider<'_, R>) -> Result<(), StepError> {
    let config = d.config()?;
    let (intent, policy, strategy) = (&config.intent, &config.policy, config.strategy);
    let round = d.state.round;
    let rounds_max = policy.rounds_max;
    let max_price = intent.max_price();
    let last_answer = d.state.answers.last().map(|a| a.seq).unwrap_or_default();
    if d.deadline_passed(intent) {
        let detail = format!("the deadline passed in round {round} without agreement");
        return d.fail(FailureCode::DeadlineExceeded, detail, vec![event_ref(0), event_ref(last_answer)]);
    }
    let mut asks: Vec<AskRecord> = d.state.asks.iter().filter(|a| a.round == round).cloned().collect();
    asks.sort_by(offer_order(&config.preferred_providers));
    let within_limits = |ask: &AskRecord| {
        ask.price.money().is_ok_and(|price| {
            strategy.accepts(price, max_price, round, rounds_max) && policy.admits_price(intent, price).is_ok()
        })
    };
    let evaluations: Vec<Evaluation> = if config.resolved.has_rules_at(Stage::Round) {
        let rail = d.state.created.as_ref().map(|c| c.rail.clone()).unwrap_or_default();
        asks.iter()
            .filter_map(|ask| {
                let price = ask.price.money().ok()?;
                let name = d.state.provider(&ask.provider).map(|p| p.name.clone()).unwrap_or_default();
                let offer = OfferFacts { provider: &ask.provider, price, latency_ms: ask.latency_ms };
                Some(evaluate(&config.resolved, &Context::round(intent, &name, &rail, round, rounds_max, offer)))
            })
            .collect()
    } else {
        Vec::new()
    };
    let denied_by =
        |ask: &AskRecord| evaluations.iter().find(|e| e.subject == ask.provider).and_then(|e| e.denied_by.clone());
    let acceptable = |ask: &AskRecord| within_limits(ask) && denied_by(ask).is_none();
    let rule_denials: Vec<(AskRecord, String)> = asks
        .iter()
        .filter(|ask| within_limits(ask))
        .filter_map(|ask| denied_by(ask).map(|rule| (ask.clone(), rule)))
        .collect();
    let evaluated_seq = emit_evaluations(d, Stage::Round, round, evaluations.clone())?;
    if let Some(best) = asks.iter().find(|ask| acceptable(ask)) {
        let selection = SelectionBody {
            round,
            provider: best.provider.clone(),
            price: best.price.clone(),
            ask: event_ref(best.seq),
            rule: if config.preferred_providers.is_empty() { SELECTION_RULE } else { SELECTION_RULE_PREFERRED }
                .to_owned(),
            considered: asks
                .iter()
                .map(|ask| ConsideredOffer {
                    provider: ask.provider.clone(),
                    price: ask.price.clone(),
                    latency_ms: ask.latency_ms,
                    acceptable: acceptable(ask),
                })
                .collect(),
        };
        d.emit(kind::SELECTED, &selection, Party::Buyer)?;
        return Ok(());
    }
    let Some(best) = asks.first() else {
        return providers_gone(d);
    };
    let best_text = best.price.money().map(|m| m.to_string()).unwrap_or_default();
    let bid_text = d.state.bid.as_ref().and_then(|b| b.money().ok()).map(|m| m.to_string()).unwrap_or_default();
    if round >= rounds_max
        && let (Some((ask, rule)), Some(evaluated_seq)) = (rule_denials.first(), evaluated_seq)
    {
        let price = ask.price.money().map(|m| m.to_string()).unwrap_or_default();
        let detail = format!(
            "no agreement after {rounds_max} rounds: policy rule {rule} denied the ask of {price} from {}, the only \
             offer(s) otherwise acceptable",
            ask.provider
        );
        let evidence = vec![event_ref(evaluated_seq), event_ref(ask.seq), format!("policy_rule:{rule}")];
        return d.fail(FailureCode::PolicyViolation, detail, evidence);
    }
    if round >= rounds_max {
        let detail = format!(
            "no agreement after {rounds_max} rounds: the last offer was {bid_text}, the best ask {best_text} from {}",
            best.provider
        );
        let evidence = vec![
            event_ref(d.state.bid_seq.unwrap_or_default()),
            event_ref(best.seq),
            format!("policy_rule:{}", PolicyRule::RoundsMax.name()),
        ];
        return d.fail(FailureCode::RoundLimitExceeded, detail, evidence);
    }
    if round >= 3 && best.price.amount_minor > max_price.amount_minor() && stalled(&d.state, round, &asks) {
        let earlier = d
            .state
            .asks
            .iter()
            .filter(|a| a.round == round - 2)
            .min_by(|a, b| offer_order(&config.preferred_providers)(a, b))
            .map(|a| a.seq)
            .unwrap_or_default();
        let detail = format!(
            "asks stopped moving for two rounds above the maximum price {max_price}: the best is {best_text} from {}",
            best.provider
        );
        let evidence =
            vec![event_ref(earlier), event_ref(best.seq), format!("policy_rule:{}", PolicyRule::MaxPrice.name())];
        return d.fail(FailureCode::NegotiationDeadlock, detail, evidence);
    }
    let receivers: Vec<String> = {
        let mut providers: Vec<String> = asks.iter().map(|a| a.provider.clone()).collect();
        providers.sort();
        providers
    };
    let counter = OfferMessage {
        round: round + 1,
        round_type: "COUNTER".into(),
        sender: d.buyer(),
        receivers,
        price: PriceBody::of(strategy.bid(max_price, round + 1, rounds_max)),
        nonce: d.nonce(),
    };
    d.emit(kind::COUNTER, &counter, Party::Buyer)?;
    Ok(())
}

/// Whether no provider still asking lowered its ask over the last two rounds.
fn stalled(state: &SessionState, round: u32, asks: &[AskRecord]) -> bool {
    let ask_of = |provider: &str, round: u32| {
        state.asks.iter().find(|a| a.round == round && a.provider == provider).map(|a| a.price.amount_minor)
    };
    asks.iter().all(|ask| match (ask_of(&ask.provider, round - 2), ask_of(&ask.provider, round - 1)) {
        (Some(two_before), Some(before)) => ask.price.amount_minor >= before && before >= two_before,
        _ => false,
    })
}

/// Every provider left the negotiation: the code says why.
fn providers_gone<R: Rng + ?Sized>(d: &mut Decider<'_, R>) -> Result<(), StepError> {
    let dropped = &d.state.dropped;
    let all_unreachable = dropped.iter().all(|drop| drop.reason == DropReason::Unreachable);
    let any_timeout = dropped.iter().any(|drop| drop.reason == DropReason::Timeout);
    let any_invalid = dropped.iter().any(|drop| drop.reason == DropReason::Invalid);
    let code = if all_unreachable {
        FailureCode::ProviderUnavailable
    } else if any_timeout {
        FailureCode::ProviderTimeout
    } else if any_invalid {
        FailureCode::ProviderAnswerInvalid
    } else {
        FailureCode::ProviderRefused
    };
    let summary: Vec<String> = dropped
        .iter()
        .map(|drop| {
            let reason = match drop.reason {
                DropReason::Refused => "refused",
                DropReason::Timeout => "timed out",
                DropReason::Unreachable => "was unreachable",
                DropReason::Invalid => "answered with an invalid message",
            };
            format!("{} {reason} in round {}", drop.provider, drop.round)
        })
        .collect();
    let evidence = dropped.iter().take(EVIDENCE_REFS_MAX).map(|drop| event_ref(drop.seq)).collect();
    d.fail(code, format!("no provider is left: {}", summary.join(", ")), evidence)
}

fn approval<R: Rng + ?Sized>(d: &mut Decider<'_, R>, approved: bool, by: String) -> Result<(), StepError> {
    if !d.state.effects().iter().any(|e| matches!(e, Effect::AskApproval { .. })) {
        return Err(StepError::Unexpected("no payment awaits approval".into()));
    }
    if !matches!(by.as_str(), "auto" | "terminal" | "client" | "read-only" | "recovery") {
        return Err(StepError::Invalid(format!(
            "approval by {by:?} is not auto, terminal, client, read-only or recovery"
        )));
    }
    let config = d.config()?;
    let Some(selection) = d.state.selection.clone() else {
        return Err(StepError::Unexpected("no offer was selected".into()));
    };
    let approval_seq = d.emit(
        kind::APPROVAL,
        &ApprovalBody {
            approved,
            by: by.clone(),
            provider: selection.provider.clone(),
            price: selection.price.clone(),
        },
        Party::Buyer,
    )?;
    if !approved {
        let reason = if by == "recovery" {
            "the process stopped before the buyer approved the payment".to_owned()
        } else if by == "read-only" {
            "read-only mode: negotiations never pay".to_owned()
        } else {
            "the buyer declined to pay".to_owned()
        };
        d.emit_abort(reason.clone())?;
        return d.fail(FailureCode::AbortedByBuyer, reason, vec![event_ref(selection.seq), event_ref(approval_seq)]);
    }
    if d.deadline_passed(&config.intent) {
        let detail = "the deadline passed before the payment was approved".to_owned();
        return d.fail(FailureCode::DeadlineExceeded, detail, vec![event_ref(0), event_ref(approval_seq)]);
    }
    let price = selection.price.money().map_err(StepError::Invalid)?;
    let rail = d.state.created.as_ref().map(|c| c.rail.clone()).unwrap_or_default();
    let check = config
        .policy
        .admits_price(&config.intent, price)
        .and_then(|()| config.policy.admits_provider(&selection.provider))
        .and_then(|()| config.policy.admits_settlement(&rail, config.intent.settlement_mode()));
    if let Err(rule) = check {
        let detail = format!("the policy check before settlement refused paying {price} to {}", selection.provider);
        let evidence = vec![event_ref(selection.seq), format!("policy_rule:{}", rule.name())];
        return d.fail(FailureCode::SettlementPolicyViolation, detail, evidence);
    }
    if config.resolved.has_rules_at(Stage::Settlement) {
        let latency_ms =
            d.state.asks.iter().find(|a| a.seq == selection.ask_seq).map(|a| a.latency_ms).unwrap_or_default();
        let name = d.state.provider(&selection.provider).map(|p| p.name.clone()).unwrap_or_default();
        let facts = OfferFacts { provider: &selection.provider, price, latency_ms };
        let context =
            Context::settlement(&config.intent, &name, &rail, selection.round, config.policy.rounds_max, facts);
        let evaluation = evaluate(&config.resolved, &context);
        let denied_by = evaluation.denied_by.clone();
        let evaluated_seq = emit_evaluations(d, Stage::Settlement, selection.round, vec![evaluation])?;
        if let (Some(rule), Some(evaluated_seq)) = (denied_by, evaluated_seq) {
            let detail =
                format!("policy rule {rule} refused paying {price} to {} before settlement", selection.provider);
            let evidence = vec![event_ref(selection.seq), event_ref(evaluated_seq), format!("policy_rule:{rule}")];
            return d.fail(FailureCode::SettlementPolicyViolation, detail, evidence);
        }
    }
    let accept = AcceptMessage {
        round: d.state.round,
        round_type: "ACCEPT".into(),
        sender: d.buyer(),
        receiver: selection.provider.clone(),
        price: selection.price.clone(),
        ask: event_ref(selection.ask_seq),
        nonce: d.nonce(),
    };
    d.emit(kind::ACCEPT, &accept, Party::Buyer)?;
    let request = d.state.payment_request().ok_or_else(|| StepError::Unexpected("no payment".into()))?;
    let committed = CommittedBody {
        payment_id: request.payment_id,
        rail,
        payer: request.payer,
        payee: request.payee,
        amount: PriceBody::of(request.amount),
    };
    d.emit(kind::COMMITTED, &committed, Party::Buyer)?;
    Ok(())
}

fn abort<R: Rng + ?Sized>(d: &mut Decider<'_, R>, reason: String) -> Result<(), StepError> {
    if !matches!(d.state.phase, Phase::Discovering | Phase::Negotiating) {
        return Err(StepError::Unexpected(format!(
            "a {} session cannot be aborted: {}",
            d.state.phase.as_str(),
            if d.state.phase.is_terminal() { "it has ended" } else { "settlement has begun" }
        )));
    }
    if reason.is_empty() || reason.len() > 256 || reason.chars().any(char::is_control) {
        return Err(StepError::Invalid("an abort reason is 1 to 256 bytes of printable text".into()));
    }
    let request_seq = d.emit(kind::ABORT_REQUESTED, &AbortRequestBody { reason: reason.clone() }, Party::Buyer)?;
    if d.state.phase == Phase::Negotiating {
        d.emit_abort(reason.clone())?;
    }
    d.fail(FailureCode::AbortedByBuyer, format!("aborted: {reason}"), vec![event_ref(request_seq)])
}

fn rail<R: Rng + ?Sized>(
    d: &mut Decider<'_, R>,
    phase: RailPhase,
    outcome: Result<EvidenceBody, RailFailure>,
) -> Result<(), StepError> {
    let awaited = d.state.effects().into_iter().find_map(|effect| match effect {
        Effect::Rail { phase: p, request } if p == phase => Some(request),
        _ => None,
    });
    let Some(request) = awaited else {
        return Err(StepError::Unexpected(format!("no rail {} is awaited", phase.as_str())));
    };
    let rail_id = d.state.created.as_ref().map(|c| c.rail.clone()).unwrap_or_default();
    // Evidence that is not exactly this payment's is a failure (fail closed).
    let outcome = outcome.and_then(|evidence| {
        let matches = evidence.phase == phase.as_str()
            && evidence.rail == rail_id
            && evidence.payment_id == request.payment_id
            && evidence.amount == PriceBody::of(request.amount)
            && !evidence.reference.is_empty()
            && d.state.parts_match(phase.as_str(), &evidence.parts);
        if matches {
            Ok(evidence)
        } else {
            Err(RailFailure {
                code: FailureCode::RailEvidenceInvalid,
                detail: format!("the rail's {} evidence is not for payment {}", phase.as_str(), request.payment_id),
                member: None,
            })
        }
    });
    let committed_seq = d.state.agreement.as_ref().and_then(|a| a.committed_seq).unwrap_or_default();
    match (phase, outcome) {
        (RailPhase::Prepare, Ok(evidence)) => {
            d.emit(kind::PREPARED, &evidence, Party::Buyer)?;
        }
        (RailPhase::Commit, Ok(evidence)) => {
            d.emit(kind::RAIL_COMMITTED, &evidence, Party::Buyer)?;
        }
        (RailPhase::Abort, Ok(evidence)) => {
            let aborted_seq = d.emit(kind::RAIL_ABORTED, &evidence, Party::Buyer)?;
            let pending = d.state.aborting.clone().ok_or_else(|| StepError::Unexpected("nothing to abort".into()))?;
            let code = FailureCode::ALL
                .iter()
                .copied()
                .find(|c| c.code() == pending.code)
                .unwrap_or(FailureCode::SettlementCommitFailed);
            let evidence = vec![event_ref(committed_seq), event_ref(pending.failed_seq), event_ref(aborted_seq)];
            let detail = format!("{}; the hold was released", pending.detail);
            d.fail(code, detail, evidence)?;
        }
        (phase, Err(failure)) => {
            let failed_seq = d.emit(
                kind::SETTLEMENT_FAILED,
                &SettlementFailedBody {
                    phase: phase.as_str().to_owned(),
                    code: failure.code.code().to_owned(),
                    detail: failure.detail.clone(),
                    member: failure.member.clone(),
                },
                Party::Buyer,
            )?;
            // A failed prepare held nothing (unless its evidence is in doubt, which `apply`
            // turns into an abort); a failed commit or abort waits for the abort to succeed.
            if phase == RailPhase::Prepare && d.state.aborting.is_none() {
                let mut evidence = vec![event_ref(committed_seq), event_ref(failed_seq)];
                evidence.extend(failure.member.as_deref().map(coalition_ref));
                d.fail(failure.code, failure.detail, evidence)?;
            }
        }
        (RailPhase::Refund, Ok(_)) => return Err(StepError::Unexpected("refunds are not part of a session".into())),
    }
    Ok(())
}

/// The spending constraints before the payment is held: PACT-109 if one refuses.
fn constraints_checked<R: Rng + ?Sized>(d: &mut Decider<'_, R>, agent: Vec<AgentConstraint>) -> Result<(), StepError> {
    let awaits_prepare =
        d.state.effects().iter().any(|effect| matches!(effect, Effect::Rail { phase: RailPhase::Prepare, .. }));
    if !awaits_prepare || d.state.aborting.is_some() || d.state.constraints_seq.is_some() {
        return Err(StepError::Unexpected("no payment awaits its constraints check".into()));
    }
    let config = d.config()?;
    let request = d.state.payment_request().ok_or_else(|| StepError::Unexpected("no payment".into()))?;
    let body = judge_all(&config.constraints, &request.payer, agent, &request.payment_id, request.amount, d.now_ms)
        .map_err(StepError::Invalid)?;
    if body.checks.is_empty() {
        return Err(StepError::Invalid("no constraint to check".into()));
    }
    let checked_seq = d.emit(kind::CONSTRAINTS_CHECKED, &body, Party::Buyer)?;
    if let Some(refusal) = body.refusal() {
        let committed_seq = d.state.agreement.as_ref().and_then(|a| a.committed_seq).unwrap_or_default();
        let detail = format!(
            "constraint {} of {} refused paying {} to {}: {}",
            refusal.name,
            if refusal.scope == SESSION_SCOPE { "the session".to_owned() } else { format!("agent {}", request.payer) },
            request.amount,
            request.payee,
            refusal.violation.as_deref().unwrap_or("refused")
        );
        let evidence = vec![event_ref(committed_seq), event_ref(checked_seq), refusal.evidence_ref()];
        return d.fail(FailureCode::ConstraintViolation, detail, evidence);
    }
    Ok(())
}

fn receipt_signed<R: Rng + ?Sized>(
    d: &mut Decider<'_, R>,
    key_id: String,
    signature: SignatureBytes,
    peac_signature: Option<SignatureBytes>,
) -> Result<(), StepError> {
    let awaited = d.state.effects().into_iter().find_map(|effect| match effect {
        Effect::SignReceipt { provider, digest, receipt, peac_input } => Some((provider, digest, receipt, peac_input)),
        _ => None,
    });
    let Some((provider, digest, receipt, peac_input)) = awaited else {
        return Err(StepError::Unexpected("no receipt is awaited".into()));
    };
    let provider_ref =
        d.state.provider(&provider).cloned().ok_or_else(|| StepError::Unexpected("unknown provider".into()))?;
    if key_id != provider_ref.key_id {
        return Err(StepError::Invalid(format!("the receipt is signed by {key_id}, not by {}", provider_ref.key_id)));
    }
    let public_key =
        pactum_transcripts::public_key_from_base64url(&provider_ref.public_key).map_err(StepError::Invalid)?;
    if !verify_digest_signature(&public_key, &digest, &signature) {
        return Err(StepError::Invalid(format!("{provider}'s receipt signature does not verify")));
    }
    let signed = attach_signature(&receipt, &key_id, &signature);
    let peac = match (peac_signature, peac_input) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(StepError::Invalid("a PEAC signature for a receipt that has no PEAC form".into()));
        }
        (Some(peac_signature), Some(input)) => {
            let jws = pactum_transcripts::peac::attach_signature(&input, &peac_signature)
                .map_err(|e| StepError::Invalid(e.to_string()))?;
            crate::session::receipt::verify_peac_for_input(&d.state, &jws, &input)
                .map_err(|e| StepError::Invalid(format!("{provider}'s PEAC receipt: {e}")))?;
            Some(jws)
        }
    };
    let receipt_id = receipt.get("receipt_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let amount = d
        .state
        .agreement
        .as_ref()
        .map(|a| a.price.clone())
        .ok_or_else(|| StepError::Unexpected("no agreement".into()))?;
    let recorder = if provider_ref.endpoint.is_some() { Party::Buyer } else { Party::Provider(provider.clone()) };
    d.emit(kind::RECEIPT, &ReceiptBody { receipt: signed, peac }, recorder)?;
    d.emit(kind::COMPLETED, &CompletedBody { receipt_id, provider, amount }, Party::Buyer)?;
    Ok(())
}

/// The input an event records, for replays: `None` for events that are decisions.
pub fn input_of(state: &SessionState, event: &Event) -> Result<Option<Input>, String> {
    let body = &event.body;
    let bad = |error: serde_json::Error| format!("event {} ({}): {error}", event.seq, event.kind);
    let input = match event.kind.as_str() {
        kind::CREATED => {
            let created: CreatedBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let intent = Intent::from_json(&created.intent).map_err(|e| e.to_string())?;
            let policy = Policy::from_json(&created.policy).map_err(|e| e.to_string())?;
            let strategy = crate::strategy::strategy_named(&created.strategy)
                .ok_or_else(|| format!("unknown strategy {:?}", created.strategy))?;
            let seed = created.seed.parse().map_err(|_| "seed is not a number".to_owned())?;
            Input::Start(Box::new(StartInput {
                session_id: created.session_id,
                buyer: created.buyer,
                intent,
                policy,
                strategy,
                rail: created.rail,
                seed,
                auto_approve: created.approval == "auto",
                preferences: created.preferences,
                constraints: created.constraints,
                coalition: created.coalition,
                parent_session: created.parent_session,
                delegated_to: created.delegated_to,
            }))
        }
        kind::DISCOVERY => {
            let discovery: DiscoveryBody = serde_json::from_value(body.clone()).map_err(bad)?;
            Input::Discovered { offering: discovery.offering, passports: discovery.passport }
        }
        kind::ASK => {
            let message: AskMessage = serde_json::from_value(body.clone()).map_err(bad)?;
            let price = message.price.money()?;
            Input::Quote {
                provider: message.sender,
                round: message.round,
                answer: QuoteAnswer::Ask { price, latency_ms: message.latency_ms, envelope: message.envelope },
            }
        }
        kind::REJECT => {
            let message: RejectMessage = serde_json::from_value(body.clone()).map_err(bad)?;
            Input::Quote {
                provider: message.sender,
                round: message.round,
                answer: QuoteAnswer::Refused { latency_ms: message.latency_ms, envelope: message.envelope },
            }
        }
        kind::TIMEOUT | kind::UNREACHABLE => {
            let observed: NoAnswerBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let answer = match observed.waited_ms {
                Some(waited_ms) if event.kind.as_str() == kind::TIMEOUT => QuoteAnswer::Timeout { waited_ms },
                _ => QuoteAnswer::Unreachable,
            };
            Input::Quote { provider: observed.provider, round: observed.round, answer }
        }
        kind::INVALID_ANSWER => {
            let observed: InvalidAnswerBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let answer = QuoteAnswer::Invalid { reason: observed.reason, detail: observed.detail };
            Input::Quote { provider: observed.provider, round: observed.round, answer }
        }
        kind::APPROVAL => {
            let approval: ApprovalBody = serde_json::from_value(body.clone()).map_err(bad)?;
            Input::Approval { approved: approval.approved, by: approval.by }
        }
        kind::ABORT_REQUESTED => {
            let request: AbortRequestBody = serde_json::from_value(body.clone()).map_err(bad)?;
            Input::Abort { reason: request.reason }
        }
        kind::PREPARED | kind::RAIL_COMMITTED | kind::RAIL_ABORTED => {
            let evidence: EvidenceBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let phase = match event.kind.as_str() {
                kind::PREPARED => RailPhase::Prepare,
                kind::RAIL_COMMITTED => RailPhase::Commit,
                _ => RailPhase::Abort,
            };
            Input::Rail { phase, outcome: Ok(evidence) }
        }
        kind::SETTLEMENT_FAILED => {
            let failed: SettlementFailedBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let phase = match failed.phase.as_str() {
                "prepare" => RailPhase::Prepare,
                "commit" => RailPhase::Commit,
                "abort" => RailPhase::Abort,
                other => return Err(format!("event {}: unknown rail phase {other:?}", event.seq)),
            };
            let code = FailureCode::ALL
                .iter()
                .copied()
                .find(|c| c.code() == failed.code)
                .ok_or_else(|| format!("event {}: unknown failure code {}", event.seq, failed.code))?;
            Input::Rail { phase, outcome: Err(RailFailure { code, detail: failed.detail, member: failed.member }) }
        }
        kind::CONSTRAINTS_CHECKED => {
            let checked: crate::session::spending::ConstraintsCheckedBody =
                serde_json::from_value(body.clone()).map_err(bad)?;
            Input::ConstraintsChecked { agent: checked.agent_constraints() }
        }
        kind::RECEIPT => {
            let receipt: ReceiptBody = serde_json::from_value(body.clone()).map_err(bad)?;
            let signature = receipt.receipt.get("signature").ok_or("the receipt has no signature")?;
            let key_id = signature.get("key_id").and_then(Value::as_str).ok_or("the signature has no key_id")?;
            let value = signature.get("value").and_then(Value::as_str).ok_or("the signature has no value")?;
            let signature = SignatureBytes::from_base64url(value).map_err(|e| e.to_string())?;
            let peac_signature = receipt
                .peac
                .as_deref()
                .map(|jws| {
                    let (_, encoded) = jws.rsplit_once('.').ok_or("the PEAC receipt is not a compact JWS")?;
                    SignatureBytes::from_base64url(encoded).map_err(|e| e.to_string())
                })
                .transpose()?;
            Input::ReceiptSigned { key_id: key_id.to_owned(), signature, peac_signature }
        }
        _ => return Ok(None),
    };
    let _ = state;
    Ok(Some(input))
}
