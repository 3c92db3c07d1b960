//! A negotiation session's state, and the fold that builds it from transcript events.
//!
//! The state is a pure function of the events: [`SessionState::apply`] is the only way it
//! changes, for live sessions and replays alike. `apply` also checks the protocol's invariants
//! (order of phases, who may send what, signer = sender), so an event that breaks them is refused
//! when written and flagged when read back.
//!
//! Event bodies are wire types (serde, unknown fields refused); they are the signed envelopes of
//! the negotiation, stored whole.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use pactum_transcripts::{Digest, ReduceError};

use crate::coalition::CoalitionBody;
use crate::failure::FailureCode;
use crate::intent::{Intent, IntentError, StaticPolicy};
use crate::money::{Currency, Money};
use crate::policy::{Evaluation, Policy, Stage};
use crate::rail::{PaymentRequest, RailPhase};
use crate::session::spending::{ConstraintsCheckedBody, NamedConstraint, judge_all, validate_session_constraints};
use crate::strategy::{Strategy, strategy_named};

/// Stream ids of sessions are this prefix and the session id.
pub const SESSION_STREAM_PREFIX: &str = "session:";
/// Name and version of the session protocol, recorded in `session.created`.
pub const SESSION_FORMAT: &str = "pactum-session/1";
/// How the best offer is chosen, recorded with every selection.
pub const SELECTION_RULE: &str = "lowest price, then lowest latency, then provider id";
/// The selection rule when the buyer's preferences name preferred providers.
pub const SELECTION_RULE_PREFERRED: &str =
    "lowest price, then a preferred provider, then lowest latency, then provider id";

/// Event kinds.
pub mod kind {
    pub const CREATED: &str = "session.created";
    pub const DISCOVERY: &str = "discovery.completed";
    pub const INTENT: &str = "round.intent";
    pub const BID: &str = "round.bid";
    pub const COUNTER: &str = "round.counter";
    pub const ASK: &str = "round.ask";
    pub const REJECT: &str = "round.reject";
    pub const TIMEOUT: &str = "provider.timeout";
    /// A remote provider answered with something that is not a valid signed message.
    pub const INVALID_ANSWER: &str = "provider.invalid_answer";
    pub const UNREACHABLE: &str = "provider.unreachable";
    pub const SELECTED: &str = "offer.selected";
    pub const APPROVAL: &str = "payment.approval";
    pub const ACCEPT: &str = "round.accept";
    pub const ABORT_REQUESTED: &str = "session.abort_requested";
    pub const ABORT: &str = "round.abort";
    pub const COMMITTED: &str = "session.committed";
    pub const PREPARED: &str = "settlement.prepared";
    pub const RAIL_COMMITTED: &str = "settlement.committed";
    pub const RAIL_ABORTED: &str = "settlement.aborted";
    pub const SETTLEMENT_FAILED: &str = "settlement.failed";
    pub const RECEIPT: &str = "receipt.issued";
    pub const COMPLETED: &str = "session.completed";
    pub const FAILED: &str = "session.failed";
    /// Written only for policies with rules: the evaluations of one stage's check.
    pub const POLICY_EVALUATED: &str = "policy.evaluated";
    /// Written only when the session or its buyer has spending constraints: their judgement
    /// before the payment is held.
    pub const CONSTRAINTS_CHECKED: &str = "constraints.checked";
    /// Written only for a coalition: each member other than the lead signs its share, right
    /// after `session.created`.
    pub const COALITION_JOINED: &str = "coalition.joined";
}

/// Where a session is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No event yet.
    New,
    Discovering,
    Negotiating,
    /// Agreement reached; the payment is being prepared.
    Committed,
    /// The payment is held; it is being committed (or, after a failure, aborted).
    Settling,
    Completed,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Discovering => "discovering",
            Self::Negotiating => "negotiating",
            Self::Committed => "committed",
            Self::Settling => "settling",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// An amount as recorded: integer minor units and an ISO 4217 code.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    pub amount_minor: u64,
    pub currency: String,
}

impl PriceBody {
    pub fn of(money: Money) -> Self {
        Self { amount_minor: money.amount_minor(), currency: money.currency().code().to_owned() }
    }

    pub fn money(&self) -> Result<Money, String> {
        let currency = Currency::parse(&self.currency).map_err(|e| e.to_string())?;
        if currency.code() != self.currency {
            return Err(format!("currency {:?} is not an upper-case ISO 4217 code", self.currency));
        }
        Money::from_minor(self.amount_minor, currency).map_err(|e| e.to_string())
    }
}

/// An agent as recorded in a session: id, key id and public key (base64url).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyBody {
    pub agent_id: String,
    pub key_id: String,
    pub public_key: String,
}

/// A provider offering the intent, as discovery found it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRef {
    pub agent_id: String,
    pub name: String,
    pub key_id: String,
    pub public_key: String,
    /// Where a remote provider answers (`pactum provider serve`); absent for providers the
    /// buyer's constellation simulates. A remote provider's messages carry its envelope seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `session.created`: everything the session was started with.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedBody {
    pub format: String,
    pub session_id: String,
    pub buyer: PartyBody,
    pub intent: Value,
    pub policy: Value,
    pub policy_hash: String,
    pub strategy: String,
    pub rail: String,
    /// The simulation seed, as decimal text (a u64 may exceed JSON's exact integers).
    pub seed: String,
    /// `auto` (approved in advance, e.g. `--yes`) or `interactive`.
    pub approval: String,
    /// The defaults taken from the buyer's preferences memory block, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<PreferencesRecord>,
    /// The session's own spending constraints (`1`, `2`, ...), checked before the payment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<NamedConstraint>,
    /// Buyers pooling this purchase, when there are several (the buyer above leads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalition: Option<CoalitionBody>,
    /// A broker's purchase on behalf of another session: that session's id. The buyer here is
    /// the broker; its payment is made only in the write that pays the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session: Option<String>,
    /// The buyer's session with a broker: the broker's own purchase it relies on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<DelegationBody>,
}

/// `session.created`'s `delegated_to`: the broker, its session buying from a provider, what that
/// purchase costs and the broker's margin on it (the broker quotes cost plus margin).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationBody {
    pub broker: String,
    pub child_session: String,
    pub cost: PriceBody,
    pub margin_percent: u32,
}

/// `coalition.joined`: a member's signed consent to pay its weight's part of the session's price.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinedBody {
    pub session_id: String,
    pub member: String,
    pub weight: u64,
    pub split: String,
}

/// One member's transfer in a coalition's prepare or abort evidence.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartEvidence {
    pub agent_id: String,
    pub amount_minor: u64,
    /// The rail's reference of this member's transfer (`transfer:<id>`).
    pub reference: String,
}

/// What a session took from the buyer's `preferences` memory block. The intent, policy and
/// strategy recorded beside it are what applied: explicit arguments first, then these.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesRecord {
    /// `memory:<agent>/preferences@<version>`.
    pub source: String,
    /// The block's value at that version.
    pub values: Value,
    /// What the command gave explicitly (`null`: not given, so the preference applied).
    pub arguments: Value,
    /// Providers chosen when offers tie on price.
    pub preferred_providers: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludedProvider {
    pub provider: String,
    pub policy_rule: String,
}

/// `discovery.completed`: who offers the intent and their passports (the input) and whom policy
/// and the passport gate admit (the decision).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryBody {
    pub offering: Vec<ProviderRef>,
    pub admitted: Vec<String>,
    pub excluded: Vec<ExcludedProvider>,
    /// The passport context at negotiation time, when the policy requires a passport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passport: Option<PassportRecord>,
}

/// The passport gate's input and answers at admission: the requirement and one check per
/// provider offering the intent (score, confidence, reason, triggering factor, as of when).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassportRecord {
    pub requirement: crate::passport::PassportRequirement,
    pub checks: Vec<crate::passport::PassportCheck>,
}

/// `policy_rule` of a provider excluded by the passport gate (its evidence is
/// `passport:<agent>:<REASON>`).
pub const PASSPORT_EXCLUSION: &str = "passport";

/// `passport:<agent>:<REASON>` evidence.
pub fn passport_ref(agent_id: &str, reason: &str) -> String {
    format!("passport:{agent_id}:{reason}")
}

/// `round.intent`: what the buyer tells providers it wants (never its maximum price).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receivers: Vec<String>,
    pub intent_type: String,
    pub scope: String,
    pub currency: String,
    pub latency_ms_max: Option<u32>,
    pub deadline_ms: Option<u64>,
    pub settlement_mode: String,
    pub nonce: String,
}

/// `round.bid` and `round.counter`: the buyer's offer for a round, to every active provider.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receivers: Vec<String>,
    pub price: PriceBody,
    pub nonce: String,
}

/// `round.ask`: a provider's price for a round.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receiver: String,
    pub price: PriceBody,
    pub latency_ms: u32,
    /// Seq of the buyer's message this answers.
    pub in_reply_to: u64,
    /// A remote provider's signature on this message (the event is then the buyer's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<crate::remote::EnvelopeSeal>,
}

/// `round.reject`: a provider declines.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receiver: String,
    pub reason: String,
    pub latency_ms: u32,
    pub in_reply_to: u64,
    /// A remote provider's signature on this message (the event is then the buyer's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<crate::remote::EnvelopeSeal>,
}

/// `provider.invalid_answer`: a remote provider's answer the buyer could not accept — an error
/// status, a body over the limit, bytes that are not the expected message, or a seal that does
/// not verify. `reason` is a stable code (`HTTP_STATUS`, `BODY_TOO_LARGE`, `MALFORMED`,
/// `MESSAGE_MISMATCH`, `SIGNATURE_INVALID`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidAnswerBody {
    pub round: u32,
    pub provider: String,
    pub reason: String,
    pub detail: String,
}

/// `provider.timeout` and `provider.unreachable`: what the buyer observed instead of an answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoAnswerBody {
    pub round: u32,
    pub provider: String,
    /// How long the buyer waited (timeouts only).
    pub waited_ms: Option<u32>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsideredOffer {
    pub provider: String,
    pub price: PriceBody,
    pub latency_ms: u32,
    pub acceptable: bool,
}

/// `offer.selected`: the best acceptable ask of a round, and every ask it was chosen from.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    pub round: u32,
    pub provider: String,
    pub price: PriceBody,
    pub ask: String,
    pub rule: String,
    pub considered: Vec<ConsideredOffer>,
}

/// `payment.approval`: the buyer's answer to "pay this?".
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    pub approved: bool,
    /// `auto`, `terminal`, `client` or `recovery`.
    pub by: String,
    pub provider: String,
    pub price: PriceBody,
}

/// `round.accept`: the buyer accepts a provider's ask.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receiver: String,
    pub price: PriceBody,
    pub ask: String,
    pub nonce: String,
}

/// `session.abort_requested`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRequestBody {
    pub reason: String,
}

/// `round.abort`: the buyer ends the negotiation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortMessage {
    pub round: u32,
    pub round_type: String,
    pub sender: String,
    pub receivers: Vec<String>,
    pub reason: String,
    pub nonce: String,
}

/// `session.committed`: the payment the agreement calls for.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommittedBody {
    pub payment_id: String,
    pub rail: String,
    pub payer: String,
    pub payee: String,
    pub amount: PriceBody,
}

/// `settlement.prepared`, `settlement.committed`, `settlement.aborted`: a rail step's evidence.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBody {
    pub phase: String,
    pub rail: String,
    pub payment_id: String,
    pub reference: String,
    pub amount: PriceBody,
    /// A coalition's prepare and abort: one transfer per member, in member order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartEvidence>,
}

/// `settlement.failed`: a rail step failed, with the failure code it leads to.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementFailedBody {
    pub phase: String,
    pub code: String,
    pub detail: String,
    /// The coalition member whose part failed (its wallet could not pay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// `receipt.issued`: the provider's signed receipt.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub receipt: Value,
    /// The same receipt as a PEAC interaction record (compact JWS, Wire 0.2), signed by the
    /// provider too. Sessions recorded before PEAC receipts have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peac: Option<String>,
}

/// `session.completed`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedBody {
    pub receipt_id: String,
    pub provider: String,
    pub amount: PriceBody,
}

/// `policy.evaluated`: the rules of a stage evaluated on each provider (admission) or ask (round),
/// or on the selected offer (settlement). Each evaluation holds its context, so it can be
/// explained and re-verified from the transcript alone.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEvaluatedBody {
    pub stage: Stage,
    /// The round (0 at admission).
    pub round: u32,
    pub evaluations: Vec<Evaluation>,
}

/// `session.failed`: the one FailureEvent of a failed session.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureBody {
    pub code: String,
    pub name: String,
    pub stage: String,
    pub fault_domain: String,
    pub terminality: String,
    pub detail: String,
    pub evidence_refs: Vec<String>,
}

impl FailureBody {
    pub fn new(code: FailureCode, detail: String, evidence_refs: Vec<String>) -> Self {
        Self {
            code: code.code().to_owned(),
            name: code.name(),
            stage: code.stage().as_str().to_owned(),
            fault_domain: code.fault_domain().as_str().to_owned(),
            terminality: code.terminality().as_str().to_owned(),
            detail,
            evidence_refs,
        }
    }

    pub fn failure_code(&self) -> Option<FailureCode> {
        FailureCode::ALL.iter().copied().find(|code| code.code() == self.code)
    }
}

/// One answer in the current round.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRecord {
    pub provider: String,
    pub seq: u64,
}

/// An ask, from any round.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRecord {
    pub round: u32,
    pub provider: String,
    pub price: PriceBody,
    pub latency_ms: u32,
    pub seq: u64,
}

/// Why a provider left the negotiation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Refused,
    Timeout,
    Unreachable,
    /// A remote provider's answer was not a valid signed message.
    Invalid,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropRecord {
    pub provider: String,
    pub round: u32,
    pub reason: DropReason,
    pub seq: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionRecord {
    pub round: u32,
    pub provider: String,
    pub price: PriceBody,
    pub ask_seq: u64,
    pub seq: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementRecord {
    pub provider: String,
    pub price: PriceBody,
    pub accept_seq: u64,
    /// Hash of the accept event, once it is sealed (drafts do not have one yet).
    pub accept_hash: Option<String>,
    pub committed_seq: Option<u64>,
    pub payment_id: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    pub evidence: EvidenceBody,
    pub seq: u64,
    pub at_ms: u64,
}

/// A settlement failure waiting for the hold to be released before the session can fail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingFailure {
    pub code: String,
    pub detail: String,
    pub failed_seq: u64,
}

/// A session's state: the fold of its events. Serialized as checkpoint state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionState {
    pub next_seq: u64,
    pub last_at_ms: u64,
    pub phase: Phase,
    pub created: Option<CreatedBody>,
    pub offering: Vec<ProviderRef>,
    pub admitted: Vec<String>,
    /// The passport context recorded at admission, when the policy requires a passport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passport: Option<PassportRecord>,
    /// The current round (0 until the first bid).
    pub round: u32,
    pub bid: Option<PriceBody>,
    pub bid_seq: Option<u64>,
    /// Hash of the round's offer, kept only in sessions with remote providers (whose seals
    /// name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_hash: Option<String>,
    /// Providers still negotiating, sorted by id.
    pub active: Vec<String>,
    /// Answers received in the current round.
    pub answers: Vec<AnswerRecord>,
    pub asks: Vec<AskRecord>,
    pub dropped: Vec<DropRecord>,
    pub selection: Option<SelectionRecord>,
    pub approval_seq: Option<u64>,
    pub abort_request_seq: Option<u64>,
    pub agreement: Option<AgreementRecord>,
    pub prepared: Option<EvidenceRecord>,
    pub rail_committed: Option<EvidenceRecord>,
    pub aborting: Option<PendingFailure>,
    pub rail_aborted: Option<EvidenceRecord>,
    pub receipt: Option<Value>,
    /// The PEAC receipt (compact JWS), when the session issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_peac: Option<String>,
    pub receipt_seq: Option<u64>,
    pub completed_seq: Option<u64>,
    pub failure: Option<FailureBody>,
    pub failure_seq: Option<u64>,
    /// The spending constraints judged before the payment, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<ConstraintsCheckedBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints_seq: Option<u64>,
    /// Coalition members (other than the lead) whose `coalition.joined` is recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<String>,
    /// `created` parsed, kept because every step consults it; not part of the state's value.
    #[serde(skip)]
    config_cache: ConfigCache,
}

/// A session's parsed configuration, worked out once from `created` (parsing the intent and the
/// policy and hashing the policy again at every step was a measurable part of a negotiation).
/// Equal to every other cache and never serialized: a state loaded from a checkpoint fills it
/// on first use.
#[derive(Clone, Default)]
struct ConfigCache(std::sync::OnceLock<Result<Arc<SessionConfig>, IntentError>>);

impl ConfigCache {
    fn filled(config: SessionConfig) -> Self {
        Self(std::sync::OnceLock::from(Ok(Arc::new(config))))
    }
}

impl PartialEq for ConfigCache {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for ConfigCache {}

impl fmt::Debug for ConfigCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ConfigCache")
    }
}

impl Default for SessionState {
    fn default() -> Self {
        Self {
            next_seq: 0,
            last_at_ms: 0,
            phase: Phase::New,
            created: None,
            offering: Vec::new(),
            admitted: Vec::new(),
            passport: None,
            round: 0,
            bid: None,
            bid_seq: None,
            bid_hash: None,
            active: Vec::new(),
            answers: Vec::new(),
            asks: Vec::new(),
            dropped: Vec::new(),
            selection: None,
            approval_seq: None,
            abort_request_seq: None,
            agreement: None,
            prepared: None,
            rail_committed: None,
            aborting: None,
            rail_aborted: None,
            receipt: None,
            receipt_peac: None,
            receipt_seq: None,
            completed_seq: None,
            failure: None,
            failure_seq: None,
            constraints: None,
            constraints_seq: None,
            joined: Vec::new(),
            config_cache: ConfigCache::default(),
        }
    }
}

/// Who sends (and signs) an event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Party {
    Buyer,
    Provider(String),
    /// A coalition member (its `coalition.joined`).
    Member(String),
}

/// The parsed configuration of a session (from `session.created`).
#[derive(Debug)]
pub struct SessionConfig {
    pub intent: Intent,
    /// The static part of the policy.
    pub policy: StaticPolicy,
    /// The whole resolved policy (its rules are evaluated at each stage).
    pub resolved: Policy,
    pub strategy: &'static dyn Strategy,
    pub seed: u64,
    pub auto_approve: bool,
    /// From the buyer's preferences: providers chosen when offers tie on price.
    pub preferred_providers: Vec<String>,
    /// The session's own spending constraints.
    pub constraints: Vec<NamedConstraint>,
    /// The buyers pooling the purchase, when there are several.
    pub coalition: Option<CoalitionBody>,
}

/// What the session needs done next; the shell performs it and feeds back the result.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Effect {
    /// Find the providers offering the intent type in this currency.
    Discover { intent_type: String, currency: Currency },
    /// Ask a provider for its price in a round.
    RequestQuote { provider: String, round: u32, bid: Money, in_reply_to: u64 },
    /// Ask the buyer whether to pay `price` to `provider`.
    AskApproval { provider: String, price: Money, round: u32 },
    /// Run a rail step.
    Rail { phase: RailPhase, request: PaymentRequest },
    /// Have the provider sign the receipt (`digest` is what it signs).
    /// `peac_input`: the PEAC record's JWS signing input, which the provider signs too.
    SignReceipt { provider: String, digest: Digest, receipt: Value, peac_input: Option<String> },
}

pub(crate) fn refuse(seq: u64, kind: &str, reason: impl Into<String>) -> ReduceError {
    ReduceError { seq, kind: kind.to_owned(), reason: reason.into() }
}

fn parse<T: serde::de::DeserializeOwned>(seq: u64, kind: &str, body: &Value) -> Result<T, ReduceError> {
    T::deserialize(body).map_err(|error| refuse(seq, kind, format!("body: {error}")))
}

/// `coalition:<agent>` evidence: the coalition member a failure is about.
pub fn coalition_ref(agent_id: &str) -> String {
    format!("coalition:{agent_id}")
}

/// `event:<seq>` evidence.
pub fn event_ref(seq: u64) -> String {
    format!("event:{seq}")
}

/// The seq in `event:<seq>`.
pub fn parse_event_ref(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("event:")?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

impl SessionState {
    pub fn session_id(&self) -> Option<&str> {
        self.created.as_ref().map(|c| c.session_id.as_str())
    }

    pub fn buyer_id(&self) -> Option<&str> {
        self.created.as_ref().map(|c| c.buyer.agent_id.as_str())
    }

    /// The parsed configuration, once the session is created.
    pub fn config(&self) -> Result<Arc<SessionConfig>, IntentError> {
        let created = self.created.as_ref().ok_or_else(|| IntentError("the session has not started".into()))?;
        self.config_cache.0.get_or_init(|| config_of(created).map(Arc::new)).clone()
    }

    pub fn provider(&self, agent_id: &str) -> Option<&ProviderRef> {
        self.offering.iter().find(|p| p.agent_id == agent_id)
    }

    /// The key id that must sign an event sent by `party`.
    pub fn key_id_of(&self, party: &Party) -> Option<&str> {
        match party {
            Party::Buyer => self.created.as_ref().map(|c| c.buyer.key_id.as_str()),
            Party::Provider(id) => self.provider(id).map(|p| p.key_id.as_str()),
            Party::Member(id) => self
                .created
                .as_ref()
                .and_then(|c| c.coalition.as_ref())
                .and_then(|coalition| coalition.member(id))
                .map(|member| member.key_id.as_str()),
        }
    }

    /// The session this one buys for, when its buyer is a broker.
    pub fn parent_session(&self) -> Option<&str> {
        self.created.as_ref().and_then(|c| c.parent_session.as_deref())
    }

    /// The broker's purchase this session relies on, when it buys from a broker.
    pub fn delegation(&self) -> Option<&DelegationBody> {
        self.created.as_ref().and_then(|c| c.delegated_to.as_ref())
    }

    /// The coalition pooling this purchase, if any.
    pub fn coalition(&self) -> Option<&CoalitionBody> {
        self.created.as_ref().and_then(|c| c.coalition.as_ref())
    }

    /// Each coalition member's part of the agreed price (members paying nothing left out);
    /// `None` without a coalition or an agreement.
    pub fn coalition_parts(&self) -> Option<Vec<(String, u64)>> {
        let coalition = self.coalition()?;
        let agreement = self.agreement.as_ref()?;
        Some(coalition.parts(agreement.price.amount_minor))
    }

    /// Whether a rail step's per-member transfers are the ones the coalition's split calls for
    /// (a prepare or an abort of a coalition), or absent (everything else).
    pub fn parts_match(&self, phase: &str, parts: &[PartEvidence]) -> bool {
        match (self.coalition_parts(), phase) {
            (Some(expected), "prepare" | "abort") => {
                parts.len() == expected.len()
                    && parts.iter().zip(&expected).all(|(part, (agent_id, amount_minor))| {
                        &part.agent_id == agent_id && part.amount_minor == *amount_minor && !part.reference.is_empty()
                    })
            }
            _ => parts.is_empty(),
        }
    }

    /// The payment the agreement calls for.
    pub fn payment_request(&self) -> Option<PaymentRequest> {
        let agreement = self.agreement.as_ref()?;
        Some(PaymentRequest {
            payment_id: agreement.payment_id.clone(),
            payer: self.buyer_id()?.to_owned(),
            payee: agreement.provider.clone(),
            amount: agreement.price.money().ok()?,
        })
    }

    /// Records the hash of an event folded as a draft, once it is sealed (the state keeps the
    /// hash of the agreement, which receipts cite).
    pub fn record_hash(&mut self, seq: u64, hash: &Digest) {
        if self.bid_seq == Some(seq) && self.has_remote_providers() {
            self.bid_hash = Some(hash.to_hex());
        }
        if let Some(agreement) = &mut self.agreement
            && agreement.accept_seq == seq
        {
            agreement.accept_hash = Some(hash.to_hex());
        }
    }

    /// Folds a sealed event (its signer and hash as recorded).
    pub fn apply_event(&mut self, event: &pactum_transcripts::Event) -> Result<(), ReduceError> {
        self.apply(
            event.seq,
            event.kind.as_str(),
            &event.body,
            event.signer.as_ref().map(pactum_transcripts::KeyId::as_str),
            event.at_ms,
            Some(&event.hash),
        )
    }

    /// The state after `events`; the first refusal is the error.
    pub fn fold(events: &[pactum_transcripts::Event]) -> Result<Self, ReduceError> {
        let mut state = Self::default();
        for event in events {
            state.apply_event(event)?;
        }
        Ok(state)
    }

    /// Folds one event. `signer` is the event's key id; `hash` its hash (`None` for a draft).
    pub fn apply(
        &mut self,
        seq: u64,
        kind: &str,
        body: &Value,
        signer: Option<&str>,
        at_ms: u64,
        hash: Option<&Digest>,
    ) -> Result<(), ReduceError> {
        if seq != self.next_seq {
            return Err(refuse(seq, kind, format!("expected event {}", self.next_seq)));
        }
        if self.phase.is_terminal() {
            return Err(refuse(seq, kind, format!("the session is already {}", self.phase.as_str())));
        }
        let sender = self.apply_body(seq, kind, body, at_ms, hash)?;
        let expected_key = self.key_id_of(&sender).map(str::to_owned);
        if expected_key.is_none() || signer != expected_key.as_deref() {
            return Err(refuse(
                seq,
                kind,
                format!(
                    "must be signed by {}, is signed by {}",
                    expected_key.unwrap_or_default(),
                    signer.unwrap_or("nobody")
                ),
            ));
        }
        self.next_seq = seq + 1;
        self.last_at_ms = self.last_at_ms.max(at_ms);
        Ok(())
    }

    /// A payment is held only after the session's own constraints were checked, and never
    /// after a constraint refused it.
    fn expect_constraints_cleared(&self, seq: u64, kind: &str) -> Result<(), ReduceError> {
        let has_own = self.config().map(|config| !config.constraints.is_empty()).unwrap_or(false);
        if has_own && self.constraints_seq.is_none() {
            return Err(refuse(seq, kind, "the session's constraints were not checked before the payment"));
        }
        if self.constraints.as_ref().is_some_and(|checked| checked.refusal().is_some()) {
            return Err(refuse(seq, kind, "a constraint refused the payment"));
        }
        Ok(())
    }

    fn expect_phase(&self, seq: u64, kind: &str, phases: &[Phase]) -> Result<(), ReduceError> {
        if phases.contains(&self.phase) {
            Ok(())
        } else {
            Err(refuse(seq, kind, format!("not allowed while the session is {}", self.phase.as_str())))
        }
    }

    fn expect_round(
        &self,
        seq: u64,
        kind: &str,
        round: u32,
        round_type: &str,
        expected_type: &str,
    ) -> Result<(), ReduceError> {
        if round_type != expected_type {
            return Err(refuse(seq, kind, format!("round_type {round_type:?} is not {expected_type}")));
        }
        if round != self.round {
            return Err(refuse(seq, kind, format!("round {round} is not the current round {}", self.round)));
        }
        Ok(())
    }

    fn buyer_is(&self, seq: u64, kind: &str, sender: &str) -> Result<(), ReduceError> {
        if Some(sender) != self.buyer_id() {
            return Err(refuse(seq, kind, format!("sender {sender:?} is not the session's buyer")));
        }
        Ok(())
    }

    /// A provider answering in the current round: active and not answered yet.
    /// Whether any provider offering the intent is remote.
    pub fn has_remote_providers(&self) -> bool {
        self.offering.iter().any(|p| p.endpoint.is_some())
    }

    /// Who records a provider's answer: the provider itself (signing the event) when the buyer's
    /// constellation simulates it; the buyer when it is remote, the message then carrying the
    /// provider's seal, which must verify under the provider's recorded key, for this session
    /// and the round's offer.
    fn answer_party(
        &self,
        seq: u64,
        kind: &str,
        provider: &str,
        body: &Value,
        envelope: Option<&crate::remote::EnvelopeSeal>,
    ) -> Result<Party, ReduceError> {
        let Some(provider_ref) = self.provider(provider) else {
            return Err(refuse(seq, kind, format!("{provider} was not discovered")));
        };
        match (provider_ref.endpoint.is_some(), envelope) {
            (false, None) => Ok(Party::Provider(provider.to_owned())),
            (false, Some(_)) => Err(refuse(seq, kind, "a simulated provider's message carries no envelope")),
            (true, None) => Err(refuse(seq, kind, "a remote provider's message must carry its envelope")),
            (true, Some(seal)) => {
                let session_id = self.created.as_ref().map(|c| c.session_id.as_str()).unwrap_or_default();
                if self.bid_hash.as_deref() != Some(seal.reply_to.as_str()) {
                    return Err(refuse(seq, kind, "the envelope does not answer the round's offer"));
                }
                crate::remote::verify_seal(
                    seal,
                    &provider_ref.public_key,
                    &provider_ref.key_id,
                    session_id,
                    kind,
                    body,
                )
                .map_err(|reason| refuse(seq, kind, reason))?;
                Ok(Party::Buyer)
            }
        }
    }

    fn answering(&self, seq: u64, kind: &str, round: u32, provider: &str) -> Result<(), ReduceError> {
        if self.phase != Phase::Negotiating || self.selection.is_some() {
            return Err(refuse(seq, kind, "no quote is awaited"));
        }
        if round != self.round {
            return Err(refuse(seq, kind, format!("round {round} is not the current round {}", self.round)));
        }
        if !self.active.iter().any(|p| p == provider) {
            return Err(refuse(seq, kind, format!("{provider} is not negotiating")));
        }
        if self.answers.iter().any(|a| a.provider == provider) {
            return Err(refuse(seq, kind, format!("{provider} already answered round {round}")));
        }
        Ok(())
    }

    fn apply_body(
        &mut self,
        seq: u64,
        kind: &str,
        body: &Value,
        at_ms: u64,
        hash: Option<&Digest>,
    ) -> Result<Party, ReduceError> {
        use kind::*;
        match kind {
            CREATED => {
                self.expect_phase(seq, kind, &[Phase::New])?;
                let created: CreatedBody = parse(seq, kind, body)?;
                if created.format != SESSION_FORMAT {
                    return Err(refuse(seq, kind, format!("format {:?} is not {SESSION_FORMAT}", created.format)));
                }
                let config = config_of(&created).map_err(|e| refuse(seq, kind, e.to_string()))?;
                self.created = Some(created);
                self.config_cache = ConfigCache::filled(config);
                self.phase = Phase::Discovering;
                Ok(Party::Buyer)
            }
            DISCOVERY => {
                self.expect_phase(seq, kind, &[Phase::Discovering])?;
                let discovery: DiscoveryBody = parse(seq, kind, body)?;
                let sorted = discovery.offering.windows(2).all(|w| w[0].agent_id < w[1].agent_id);
                if !sorted {
                    return Err(refuse(seq, kind, "offering must be sorted by agent id, without repeats"));
                }
                if discovery.admitted.iter().any(|id| !discovery.offering.iter().any(|p| &p.agent_id == id)) {
                    return Err(refuse(seq, kind, "an admitted provider is not offering"));
                }
                let required = self.config().ok().and_then(|config| config.resolved.passport_requirement());
                if discovery.passport.as_ref().map(|record| record.requirement) != required {
                    return Err(refuse(
                        seq,
                        kind,
                        "the passport context must be present exactly when the policy requires a passport, under its requirement",
                    ));
                }
                if let Some(record) = &discovery.passport {
                    if let Some(check) = record.checks.iter().find(|c| {
                        !c.is_consistent()
                            || c.min_score_milli != record.requirement.min_score_milli
                            || c.min_confidence_milli != record.requirement.min_confidence_milli
                    }) {
                        return Err(refuse(
                            seq,
                            kind,
                            format!("the passport check of {} is inconsistent", check.agent_id),
                        ));
                    }
                    let checked: Vec<&str> = record.checks.iter().map(|c| c.agent_id.as_str()).collect();
                    let offered: Vec<&str> = discovery.offering.iter().map(|p| p.agent_id.as_str()).collect();
                    if checked != offered {
                        return Err(refuse(seq, kind, "one passport check per offering provider, in the same order"));
                    }
                    let denied_but_admitted =
                        record.checks.iter().any(|c| !c.pass && discovery.admitted.contains(&c.agent_id));
                    if denied_but_admitted {
                        return Err(refuse(seq, kind, "a provider the passport gate denied was admitted"));
                    }
                }
                self.offering = discovery.offering;
                self.admitted = discovery.admitted;
                self.passport = discovery.passport;
                Ok(Party::Buyer)
            }
            INTENT => {
                self.expect_phase(seq, kind, &[Phase::Discovering])?;
                let message: IntentMessage = parse(seq, kind, body)?;
                self.expect_round(seq, kind, message.round, &message.round_type, "INTENT")?;
                self.buyer_is(seq, kind, &message.sender)?;
                if message.receivers != self.admitted || self.admitted.is_empty() {
                    return Err(refuse(seq, kind, "the intent must go to exactly the admitted providers"));
                }
                self.active = self.admitted.clone();
                self.phase = Phase::Negotiating;
                Ok(Party::Buyer)
            }
            BID | COUNTER => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let message: OfferMessage = parse(seq, kind, body)?;
                let (expected_type, expected_round) =
                    if kind == BID { ("BID", 1) } else { ("COUNTER", self.round + 1) };
                if message.round_type != expected_type || message.round != expected_round {
                    return Err(refuse(seq, kind, format!("expected {expected_type} for round {expected_round}")));
                }
                if kind == BID && self.round != 0 {
                    return Err(refuse(seq, kind, "a BID opens round 1 only"));
                }
                if kind == COUNTER && (self.answers.len() != self.active.len() || self.round == 0) {
                    return Err(refuse(seq, kind, "a COUNTER comes after every answer of the round"));
                }
                self.buyer_is(seq, kind, &message.sender)?;
                message.price.money().map_err(|e| refuse(seq, kind, e))?;
                // Providers that did not ask in the last round are out.
                let still: Vec<String> = if kind == BID {
                    self.active.clone()
                } else {
                    self.active
                        .iter()
                        .filter(|p| self.asks.iter().any(|a| a.round == self.round && &a.provider == *p))
                        .cloned()
                        .collect()
                };
                if message.receivers != still || still.is_empty() {
                    return Err(refuse(seq, kind, "the offer must go to exactly the providers still negotiating"));
                }
                self.active = still;
                self.round = message.round;
                self.bid = Some(message.price);
                self.bid_seq = Some(seq);
                self.bid_hash = if self.has_remote_providers() { hash.map(Digest::to_hex) } else { None };
                self.answers.clear();
                Ok(Party::Buyer)
            }
            ASK => {
                let message: AskMessage = parse(seq, kind, body)?;
                self.answering(seq, kind, message.round, &message.sender)?;
                if message.round_type != "ASK" || Some(message.receiver.as_str()) != self.buyer_id() {
                    return Err(refuse(seq, kind, "an ASK goes from a provider to the buyer"));
                }
                if Some(message.in_reply_to) != self.bid_seq {
                    return Err(refuse(seq, kind, "in_reply_to is not the round's offer"));
                }
                let price = message.price.money().map_err(|e| refuse(seq, kind, e))?;
                let currency = self.bid.as_ref().map(|b| b.currency.as_str()).unwrap_or_default();
                if price.currency().code() != currency {
                    return Err(refuse(
                        seq,
                        kind,
                        format!("asks in {} but the negotiation is in {currency}", price.currency()),
                    ));
                }
                let party = self.answer_party(seq, kind, &message.sender, body, message.envelope.as_ref())?;
                self.answers.push(AnswerRecord { provider: message.sender.clone(), seq });
                self.asks.push(AskRecord {
                    round: message.round,
                    provider: message.sender.clone(),
                    price: message.price,
                    latency_ms: message.latency_ms,
                    seq,
                });
                Ok(party)
            }
            REJECT => {
                let message: RejectMessage = parse(seq, kind, body)?;
                self.answering(seq, kind, message.round, &message.sender)?;
                if message.round_type != "REJECT" || Some(message.in_reply_to) != self.bid_seq {
                    return Err(refuse(seq, kind, "a REJECT answers the round's offer"));
                }
                let party = self.answer_party(seq, kind, &message.sender, body, message.envelope.as_ref())?;
                self.answers.push(AnswerRecord { provider: message.sender.clone(), seq });
                self.dropped.push(DropRecord {
                    provider: message.sender.clone(),
                    round: message.round,
                    reason: DropReason::Refused,
                    seq,
                });
                Ok(party)
            }
            TIMEOUT | UNREACHABLE => {
                let observed: NoAnswerBody = parse(seq, kind, body)?;
                self.answering(seq, kind, observed.round, &observed.provider)?;
                if (kind == TIMEOUT) != observed.waited_ms.is_some() {
                    return Err(refuse(seq, kind, "waited_ms is recorded for timeouts only"));
                }
                self.answers.push(AnswerRecord { provider: observed.provider.clone(), seq });
                let reason = if kind == TIMEOUT { DropReason::Timeout } else { DropReason::Unreachable };
                self.dropped.push(DropRecord { provider: observed.provider, round: observed.round, reason, seq });
                Ok(Party::Buyer)
            }
            INVALID_ANSWER => {
                let observed: InvalidAnswerBody = parse(seq, kind, body)?;
                self.answering(seq, kind, observed.round, &observed.provider)?;
                if self.provider(&observed.provider).and_then(|p| p.endpoint.as_ref()).is_none() {
                    return Err(refuse(seq, kind, "only a remote provider's answer can be invalid"));
                }
                self.answers.push(AnswerRecord { provider: observed.provider.clone(), seq });
                self.dropped.push(DropRecord {
                    provider: observed.provider,
                    round: observed.round,
                    reason: DropReason::Invalid,
                    seq,
                });
                Ok(Party::Buyer)
            }
            SELECTED => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let selection: SelectionBody = parse(seq, kind, body)?;
                if self.selection.is_some() || self.answers.len() != self.active.len() {
                    return Err(refuse(seq, kind, "an offer is selected once, after every answer of the round"));
                }
                let ask_seq =
                    parse_event_ref(&selection.ask).ok_or_else(|| refuse(seq, kind, "ask is not an event ref"))?;
                let ask = self
                    .asks
                    .iter()
                    .find(|a| a.seq == ask_seq && a.round == self.round)
                    .ok_or_else(|| refuse(seq, kind, "ask does not refer to an ask of this round"))?;
                if ask.provider != selection.provider || ask.price != selection.price || selection.round != self.round {
                    return Err(refuse(seq, kind, "the selection differs from the ask it refers to"));
                }
                self.selection = Some(SelectionRecord {
                    round: selection.round,
                    provider: selection.provider,
                    price: selection.price,
                    ask_seq,
                    seq,
                });
                Ok(Party::Buyer)
            }
            APPROVAL => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let approval: ApprovalBody = parse(seq, kind, body)?;
                let Some(selection) = &self.selection else {
                    return Err(refuse(seq, kind, "no offer awaits approval"));
                };
                if self.approval_seq.is_some()
                    || approval.provider != selection.provider
                    || approval.price != selection.price
                {
                    return Err(refuse(seq, kind, "the approval does not match the selected offer"));
                }
                self.approval_seq = Some(seq);
                Ok(Party::Buyer)
            }
            ACCEPT => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let message: AcceptMessage = parse(seq, kind, body)?;
                self.expect_round(seq, kind, message.round, &message.round_type, "ACCEPT")?;
                self.buyer_is(seq, kind, &message.sender)?;
                let selection = self.selection.as_ref().ok_or_else(|| refuse(seq, kind, "nothing was selected"))?;
                if self.approval_seq.is_none() {
                    return Err(refuse(seq, kind, "an ACCEPT needs the buyer's approval first"));
                }
                if message.receiver != selection.provider
                    || message.price != selection.price
                    || message.ask != event_ref(selection.ask_seq)
                {
                    return Err(refuse(seq, kind, "the ACCEPT differs from the selected offer"));
                }
                let session_id = self.session_id().unwrap_or_default();
                self.agreement = Some(AgreementRecord {
                    provider: message.receiver,
                    price: message.price,
                    accept_seq: seq,
                    accept_hash: hash.map(Digest::to_hex),
                    committed_seq: None,
                    payment_id: payment_id_for(session_id),
                });
                Ok(Party::Buyer)
            }
            COMMITTED => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let committed: CommittedBody = parse(seq, kind, body)?;
                let request = self.payment_request().ok_or_else(|| refuse(seq, kind, "nothing was accepted"))?;
                let rail = self.created.as_ref().map(|c| c.rail.as_str()).unwrap_or_default();
                if committed.payment_id != request.payment_id
                    || committed.payer != request.payer
                    || committed.payee != request.payee
                    || committed.amount != PriceBody::of(request.amount)
                    || committed.rail != rail
                {
                    return Err(refuse(seq, kind, "the commitment differs from the agreement"));
                }
                if let Some(agreement) = &mut self.agreement {
                    agreement.committed_seq = Some(seq);
                }
                self.phase = Phase::Committed;
                Ok(Party::Buyer)
            }
            ABORT_REQUESTED => {
                self.expect_phase(seq, kind, &[Phase::Discovering, Phase::Negotiating])?;
                let _: AbortRequestBody = parse(seq, kind, body)?;
                if self.abort_request_seq.is_some() {
                    return Err(refuse(seq, kind, "abort was already requested"));
                }
                self.abort_request_seq = Some(seq);
                Ok(Party::Buyer)
            }
            ABORT => {
                self.expect_phase(seq, kind, &[Phase::Negotiating])?;
                let message: AbortMessage = parse(seq, kind, body)?;
                self.expect_round(seq, kind, message.round, &message.round_type, "ABORT")?;
                self.buyer_is(seq, kind, &message.sender)?;
                Ok(Party::Buyer)
            }
            PREPARED | RAIL_COMMITTED | RAIL_ABORTED => {
                let evidence: EvidenceBody = parse(seq, kind, body)?;
                let request = self.payment_request().ok_or_else(|| refuse(seq, kind, "no payment"))?;
                let rail = self.created.as_ref().map(|c| c.rail.as_str()).unwrap_or_default();
                if evidence.payment_id != request.payment_id
                    || evidence.amount != PriceBody::of(request.amount)
                    || evidence.rail != rail
                    || !self.parts_match(&evidence.phase, &evidence.parts)
                {
                    return Err(refuse(seq, kind, "the evidence is for another payment"));
                }
                let record = EvidenceRecord { evidence: evidence.clone(), seq, at_ms };
                match kind {
                    PREPARED => {
                        self.expect_phase(seq, kind, &[Phase::Committed])?;
                        if evidence.phase != "prepare" || self.prepared.is_some() {
                            return Err(refuse(seq, kind, "not the evidence of a prepare"));
                        }
                        self.expect_constraints_cleared(seq, kind)?;
                        self.prepared = Some(record);
                        self.phase = Phase::Settling;
                    }
                    RAIL_COMMITTED => {
                        self.expect_phase(seq, kind, &[Phase::Settling])?;
                        if evidence.phase != "commit" || self.rail_committed.is_some() || self.aborting.is_some() {
                            return Err(refuse(seq, kind, "not the evidence of a commit"));
                        }
                        self.rail_committed = Some(record);
                    }
                    _ => {
                        self.expect_phase(seq, kind, &[Phase::Committed, Phase::Settling])?;
                        if evidence.phase != "abort" || self.aborting.is_none() || self.rail_aborted.is_some() {
                            return Err(refuse(seq, kind, "not the evidence of an abort"));
                        }
                        self.rail_aborted = Some(record);
                    }
                }
                Ok(Party::Buyer)
            }
            SETTLEMENT_FAILED => {
                self.expect_phase(seq, kind, &[Phase::Committed, Phase::Settling])?;
                let failed: SettlementFailedBody = parse(seq, kind, body)?;
                let code = FailureCode::ALL
                    .iter()
                    .find(|c| c.code() == failed.code)
                    .ok_or_else(|| refuse(seq, kind, format!("unknown failure code {}", failed.code)))?;
                match failed.phase.as_str() {
                    "prepare" if self.phase == Phase::Committed && self.aborting.is_none() => {
                        self.expect_constraints_cleared(seq, kind)?;
                        // Evidence that does not check out may hide a hold: release it before failing.
                        if *code == FailureCode::RailEvidenceInvalid {
                            self.aborting =
                                Some(PendingFailure { code: failed.code, detail: failed.detail, failed_seq: seq });
                        }
                    }
                    "commit" if self.phase == Phase::Settling && self.aborting.is_none() => {
                        self.aborting =
                            Some(PendingFailure { code: failed.code, detail: failed.detail, failed_seq: seq });
                    }
                    "abort" if self.aborting.is_some() => {}
                    other => return Err(refuse(seq, kind, format!("a {other} failure is not possible now"))),
                }
                Ok(Party::Buyer)
            }
            RECEIPT => {
                self.expect_phase(seq, kind, &[Phase::Settling])?;
                let receipt: ReceiptBody = parse(seq, kind, body)?;
                let provider = self
                    .agreement
                    .as_ref()
                    .map(|a| a.provider.clone())
                    .ok_or_else(|| refuse(seq, kind, "no agreement"))?;
                if self.rail_committed.is_none() || self.receipt.is_some() {
                    return Err(refuse(seq, kind, "a receipt is issued once, after the payment is committed"));
                }
                self.receipt = Some(receipt.receipt);
                self.receipt_peac = receipt.peac;
                self.receipt_seq = Some(seq);
                // A remote provider's receipt is recorded by the buyer; the provider's signature
                // is inside it (checked by the core before it is recorded, and by replays).
                if self.provider(&provider).is_some_and(|p| p.endpoint.is_some()) {
                    return Ok(Party::Buyer);
                }
                Ok(Party::Provider(provider))
            }
            COMPLETED => {
                self.expect_phase(seq, kind, &[Phase::Settling])?;
                let completed: CompletedBody = parse(seq, kind, body)?;
                if self.receipt.is_none() {
                    return Err(refuse(seq, kind, "a session completes with its receipt"));
                }
                let agreement = self.agreement.as_ref().ok_or_else(|| refuse(seq, kind, "no agreement"))?;
                if completed.provider != agreement.provider || completed.amount != agreement.price {
                    return Err(refuse(seq, kind, "differs from the agreement"));
                }
                self.completed_seq = Some(seq);
                self.phase = Phase::Completed;
                Ok(Party::Buyer)
            }
            FAILED => {
                let failure: FailureBody = parse(seq, kind, body)?;
                let code = failure
                    .failure_code()
                    .ok_or_else(|| refuse(seq, kind, format!("unknown failure code {}", failure.code)))?;
                if failure != FailureBody::new(code, failure.detail.clone(), failure.evidence_refs.clone()) {
                    return Err(refuse(seq, kind, "name, stage, fault domain or terminality differ from the taxonomy"));
                }
                if failure.evidence_refs.is_empty() {
                    return Err(refuse(seq, kind, "a failure needs evidence"));
                }
                if self.prepared.is_some() && self.rail_aborted.is_none() {
                    return Err(refuse(seq, kind, "money is still held: the payment must be aborted first"));
                }
                self.failure = Some(failure);
                self.failure_seq = Some(seq);
                self.phase = Phase::Failed;
                Ok(Party::Buyer)
            }
            POLICY_EVALUATED => {
                self.expect_phase(seq, kind, &[Phase::Discovering, Phase::Negotiating])?;
                let body: PolicyEvaluatedBody = parse(seq, kind, body)?;
                let config = self.config().map_err(|e| refuse(seq, kind, e.to_string()))?;
                if body.evaluations.is_empty() || !config.resolved.has_rules_at(body.stage) {
                    return Err(refuse(seq, kind, "evaluations are recorded for the stages that have rules"));
                }
                for evaluation in &body.evaluations {
                    if evaluation.stage != body.stage {
                        return Err(refuse(seq, kind, "an evaluation of another stage"));
                    }
                    crate::policy::verify(&config.resolved, evaluation).map_err(|mismatch| {
                        refuse(
                            seq,
                            kind,
                            format!("the evaluation of {} does not verify: {mismatch}", evaluation.subject),
                        )
                    })?;
                }
                Ok(Party::Buyer)
            }
            CONSTRAINTS_CHECKED => {
                self.expect_phase(seq, kind, &[Phase::Committed])?;
                let recorded: ConstraintsCheckedBody = parse(seq, kind, body)?;
                if self.constraints_seq.is_some() || self.prepared.is_some() || self.aborting.is_some() {
                    return Err(refuse(seq, kind, "constraints are checked once, before the payment is held"));
                }
                let config = self.config().map_err(|e| refuse(seq, kind, e.to_string()))?;
                let request = self.payment_request().ok_or_else(|| refuse(seq, kind, "no payment"))?;
                let judged = judge_all(
                    &config.constraints,
                    &request.payer,
                    recorded.agent_constraints(),
                    &request.payment_id,
                    request.amount,
                    at_ms,
                )
                .map_err(|e| refuse(seq, kind, e))?;
                if judged != recorded || judged.checks.is_empty() {
                    return Err(refuse(seq, kind, "the verdicts do not follow from the recorded constraints"));
                }
                self.constraints = Some(recorded);
                self.constraints_seq = Some(seq);
                Ok(Party::Buyer)
            }
            COALITION_JOINED => {
                self.expect_phase(seq, kind, &[Phase::Discovering])?;
                let joined: JoinedBody = parse(seq, kind, body)?;
                let coalition = self.coalition().ok_or_else(|| refuse(seq, kind, "the session has no coalition"))?;
                let member = coalition
                    .member(&joined.member)
                    .ok_or_else(|| refuse(seq, kind, format!("{} is not a member", joined.member)))?;
                // Members join in order, right after the start, before anything else happens.
                let next = coalition
                    .members
                    .iter()
                    .find(|m| m.agent_id != coalition.lead && !self.joined.contains(&m.agent_id))
                    .map(|m| m.agent_id.as_str());
                if next != Some(joined.member.as_str())
                    || !self.offering.is_empty()
                    || joined.weight != member.weight
                    || joined.split != coalition.split
                    || Some(joined.session_id.as_str()) != self.session_id()
                {
                    return Err(refuse(seq, kind, "not the next member's share of this session"));
                }
                self.joined.push(joined.member.clone());
                Ok(Party::Member(joined.member))
            }
            other => Err(refuse(seq, other, "not an event of a negotiation session")),
        }
    }

    /// The rail step the session needs next, if any: the step [`Self::effects`] asks for,
    /// without working out the receipt that follows the rail's steps.
    pub fn rail_effect(&self) -> Option<Effect> {
        if !matches!(self.phase, Phase::Committed | Phase::Settling) {
            return None;
        }
        let phase = self.rail_phase_due()?;
        Some(Effect::Rail { phase, request: self.payment_request()? })
    }

    /// Which rail step a committed or settling session is due for: abort while it is aborting,
    /// else prepare and then commit.
    fn rail_phase_due(&self) -> Option<RailPhase> {
        if self.aborting.is_some() {
            return self.rail_aborted.is_none().then_some(RailPhase::Abort);
        }
        if self.prepared.is_none() {
            return Some(RailPhase::Prepare);
        }
        self.rail_committed.is_none().then_some(RailPhase::Commit)
    }

    /// What must happen next. Empty for a terminal session.
    pub fn effects(&self) -> Vec<Effect> {
        match self.phase {
            Phase::New | Phase::Completed | Phase::Failed => Vec::new(),
            Phase::Discovering => {
                let Ok(config) = self.config() else { return Vec::new() };
                let all_joined = config.coalition.as_ref().is_none_or(|c| self.joined.len() + 1 == c.members.len());
                if self.offering.is_empty()
                    && self.admitted.is_empty()
                    && self.abort_request_seq.is_none()
                    && all_joined
                {
                    vec![Effect::Discover {
                        intent_type: config.intent.intent_type().as_str().to_owned(),
                        currency: config.intent.max_price().currency(),
                    }]
                } else {
                    Vec::new()
                }
            }
            Phase::Negotiating => {
                if let Some(selection) = &self.selection {
                    if self.approval_seq.is_none() {
                        return selection
                            .price
                            .money()
                            .map(|price| Effect::AskApproval {
                                provider: selection.provider.clone(),
                                price,
                                round: selection.round,
                            })
                            .into_iter()
                            .collect();
                    }
                    return Vec::new();
                }
                let (Some(bid), Some(in_reply_to)) = (&self.bid, self.bid_seq) else { return Vec::new() };
                let Ok(bid) = bid.money() else { return Vec::new() };
                self.active
                    .iter()
                    .filter(|p| !self.answers.iter().any(|a| &a.provider == *p))
                    .map(|provider| Effect::RequestQuote {
                        provider: provider.clone(),
                        round: self.round,
                        bid,
                        in_reply_to,
                    })
                    .collect()
            }
            Phase::Committed | Phase::Settling => {
                let Some(request) = self.payment_request() else { return Vec::new() };
                if let Some(phase) = self.rail_phase_due() {
                    return vec![Effect::Rail { phase, request }];
                }
                if self.aborting.is_none() && self.receipt.is_none() {
                    return crate::session::receipt::unsigned_receipt(self)
                        .map(|(receipt, digest)| Effect::SignReceipt {
                            provider: request.payee.clone(),
                            digest,
                            receipt,
                            peac_input: crate::session::receipt::peac_signing_input(self),
                        })
                        .into_iter()
                        .collect();
                }
                Vec::new()
            }
        }
    }
}

/// The payment id of a session: every rail idempotency key derives from it.
pub fn payment_id_for(session_id: &str) -> String {
    format!("pay-{session_id}")
}

fn config_of(created: &CreatedBody) -> Result<SessionConfig, IntentError> {
    let intent = Intent::from_json(&created.intent)?;
    let resolved = Policy::from_json(&created.policy).map_err(|e| IntentError(e.to_string()))?;
    let policy = resolved.static_part().clone();
    if resolved.policy_hash() != created.policy_hash {
        return Err(IntentError("policy_hash does not match the recorded policy".into()));
    }
    let strategy = strategy_named(&created.strategy)
        .ok_or_else(|| IntentError(format!("unknown strategy {:?}", created.strategy)))?;
    let seed = created.seed.parse::<u64>().map_err(|_| IntentError("seed is not a decimal u64".into()))?;
    if seed.to_string() != created.seed {
        return Err(IntentError("seed is not in canonical decimal form".into()));
    }
    let auto_approve = match created.approval.as_str() {
        "auto" => true,
        "interactive" => false,
        other => return Err(IntentError(format!("approval {other:?} is not auto or interactive"))),
    };
    let preferred_providers = created.preferences.as_ref().map(|p| p.preferred_providers.clone()).unwrap_or_default();
    validate_session_constraints(&created.constraints).map_err(IntentError)?;
    let constraints = created.constraints.clone();
    if let Some(coalition) = &created.coalition {
        coalition.validate(&created.buyer.agent_id).map_err(IntentError)?;
        if coalition.member(&created.buyer.agent_id).is_none_or(|lead| lead.key_id != created.buyer.key_id) {
            return Err(IntentError("the coalition's lead must sign with the buyer's key".into()));
        }
    }
    let coalition = created.coalition.clone();
    Ok(SessionConfig {
        intent,
        policy,
        resolved,
        strategy,
        seed,
        auto_approve,
        preferred_providers,
        constraints,
        coalition,
    })
}

#[cfg(test)]
mod thread_safety {
    /// Sessions are driven from any thread (the editor's agent runs them on an async runtime).
    #[test]
    fn session_state_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::SessionState>();
    }
}
