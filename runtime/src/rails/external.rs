//! [`ExternalRail`]: the [`Rail`] for rails whose money moves outside Pactum (x402, Stripe).
//!
//! Pactum does not move money on these rails and makes no network calls: the payer pays on the
//! rail, and what the rail answered (an x402 settlement header with the payment requirements, a
//! Stripe PaymentIntent, Charge or signed webhook) is handed to the rail through an
//! [`EvidenceInbox`], keyed by payment id and step. Each step then reads that evidence with the
//! rail's adapter and checks it against the [`PaymentRequest`]:
//!
//! - `prepare` checks that the rail can pay the request (its currency) and records the step; no
//!   evidence is read, because nothing has been paid yet.
//! - `commit` needs evidence of a settled payment of exactly the request's amount and currency,
//!   in the environment the rail was configured with (never taken from the evidence alone).
//! - `abort` succeeds without evidence, since nothing was paid, unless this rail accepted a
//!   commit or holds evidence of one (then the money may have moved: refund instead).
//! - `refund` needs evidence of a refund of the committed payment (its reference must be the
//!   commit's): a Stripe Charge or `charge.refunded` webhook. x402 has no refund evidence, so an
//!   x402 refund always fails closed.
//!
//! Missing evidence or evidence failing any check is [`RailError::EvidenceInvalid`] with the
//! reason; nothing is filled in. Steps are idempotent: a step already accepted returns the same
//! evidence (`applied_now` false) as long as the inbox holds the same bytes (or none); different
//! bytes for an accepted step must still check out and name the same reference.
//!
//! Steps evidenced by nothing from the rail (`prepare`, `abort`) carry the step's idempotency key
//! `<payment_id>:<phase>` as their reference: the rail has no id for a payment that did not happen.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Env, EvidenceReason, ExpectedPayment, PaymentEvidence, PaymentStatus, RailEvidenceError, stripe, x402};
use crate::money::Currency;
use crate::rail::{PaymentRequest, Rail, RailError, RailEvidence, RailPhase};

/// Evidence as received from a rail, bytes untouched.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum InboundEvidence {
    /// An x402 payment: the payment requirements it was made against (JSON) and the
    /// `X-PAYMENT-RESPONSE` header value.
    X402 { requirements: Vec<u8>, payment_response: Vec<u8> },
    /// A Stripe API object: a PaymentIntent (a payment) or a Charge (a refund).
    StripeObject(Vec<u8>),
    /// A Stripe webhook: the raw payload and its `Stripe-Signature` header, checked under the
    /// rail's endpoint secret at the step's time.
    StripeWebhook { payload: Vec<u8>, signature_header: String },
}

impl InboundEvidence {
    /// The rail this evidence comes from.
    pub fn rail(&self) -> &'static str {
        match self {
            Self::X402 { .. } => x402::RAIL,
            Self::StripeObject(_) | Self::StripeWebhook { .. } => stripe::RAIL,
        }
    }
}

/// Where an [`ExternalRail`] finds the evidence of each step. The caller fills it with what the
/// rail sent.
pub trait EvidenceInbox {
    /// The evidence handed over for `payment_id`'s `phase`, if any.
    fn evidence(&self, payment_id: &str, phase: RailPhase) -> Option<InboundEvidence>;
}

impl<T: EvidenceInbox + ?Sized> EvidenceInbox for Arc<T> {
    fn evidence(&self, payment_id: &str, phase: RailPhase) -> Option<InboundEvidence> {
        (**self).evidence(payment_id, phase)
    }
}

/// An inbox in memory: evidence delivered by the caller, the latest delivery per step.
#[derive(Default, Debug)]
pub struct MemoryInbox {
    entries: Mutex<HashMap<(String, RailPhase), InboundEvidence>>,
}

impl MemoryInbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over the evidence for `payment_id`'s `phase`, replacing any earlier delivery.
    pub fn deliver(&self, payment_id: &str, phase: RailPhase, evidence: InboundEvidence) {
        lock(&self.entries).insert((payment_id.to_owned(), phase), evidence);
    }
}

impl EvidenceInbox for MemoryInbox {
    fn evidence(&self, payment_id: &str, phase: RailPhase) -> Option<InboundEvidence> {
        lock(&self.entries).get(&(payment_id.to_owned(), phase)).cloned()
    }
}

/// A Stripe webhook endpoint secret (`whsec_…`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("WebhookSecret(<redacted>)")
    }
}

/// Which external rail, with what it needs to read its evidence.
#[derive(Clone, Debug)]
pub enum ExternalRailKind {
    X402,
    /// Without a secret, webhooks are refused (an unsigned webhook proves nothing); API objects
    /// are still read.
    Stripe {
        webhook_secret: Option<WebhookSecret>,
    },
}

/// A step this rail accepted: the bytes it read, what they said, and the evidence returned.
#[derive(Debug)]
struct AcceptedStep {
    inbound: Option<InboundEvidence>,
    payment: Option<PaymentEvidence>,
    evidence: RailEvidence,
}

/// The rail over evidence from x402 or Stripe (see the module docs).
#[derive(Debug)]
pub struct ExternalRail<I> {
    kind: ExternalRailKind,
    env: Env,
    inbox: I,
    accepted: Mutex<HashMap<(String, RailPhase), AcceptedStep>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves whole entries only; keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(why: String) -> RailError {
    RailError::Refused(why)
}

impl<I: EvidenceInbox> ExternalRail<I> {
    /// An x402 rail whose payments must be in `env` (live: mainnet networks; test: testnets).
    pub fn x402(env: Env, inbox: I) -> Self {
        Self::new(ExternalRailKind::X402, env, inbox)
    }

    /// A Stripe rail whose payments must be in `env` (`livemode`), reading webhooks signed
    /// under `webhook_secret`.
    pub fn stripe(env: Env, webhook_secret: Option<WebhookSecret>, inbox: I) -> Self {
        Self::new(ExternalRailKind::Stripe { webhook_secret }, env, inbox)
    }

    pub fn new(kind: ExternalRailKind, env: Env, inbox: I) -> Self {
        Self { kind, env, inbox, accepted: Mutex::new(HashMap::new()) }
    }

    /// The environment the rail's payments must be in.
    pub fn env(&self) -> Env {
        self.env
    }

    /// The rail-neutral evidence of a step this rail accepted (commit or refund), for a receipt.
    pub fn accepted(&self, payment_id: &str, phase: RailPhase) -> Option<PaymentEvidence> {
        lock(&self.accepted).get(&(payment_id.to_owned(), phase)).and_then(|step| step.payment.clone())
    }

    /// Reads inbound evidence with this rail's adapter; `now_s` is the time a webhook's
    /// signature is checked at. The result is not yet compared with any payment.
    pub fn read(&self, inbound: &InboundEvidence, now_s: u64) -> Result<PaymentEvidence, RailEvidenceError> {
        match (&self.kind, inbound) {
            (ExternalRailKind::X402, InboundEvidence::X402 { requirements, payment_response }) => {
                x402::evidence(requirements, payment_response)
            }
            (ExternalRailKind::Stripe { .. }, InboundEvidence::StripeObject(json)) => stripe::object_evidence(json),
            (
                ExternalRailKind::Stripe { webhook_secret: Some(secret) },
                InboundEvidence::StripeWebhook { payload, signature_header },
            ) => stripe::verified_webhook_evidence(payload, signature_header, secret.expose(), now_s),
            (ExternalRailKind::Stripe { webhook_secret: None }, InboundEvidence::StripeWebhook { .. }) => {
                Err(RailEvidenceError::new(
                    EvidenceReason::SignatureMismatch,
                    "no webhook endpoint secret is configured, and an unsigned webhook is not evidence",
                ))
            }
            (_, other) => Err(RailEvidenceError::new(
                EvidenceReason::ObjectUnexpected,
                format!("{} evidence handed to the {} rail", other.rail(), self.id()),
            )),
        }
    }

    /// Whether the rail can pay in `currency`.
    fn supports(&self, currency: Currency) -> bool {
        match self.kind {
            // Every x402 network Pactum reads pays in USDC, counted in US cents.
            ExternalRailKind::X402 => currency.code() == "USD",
            ExternalRailKind::Stripe { .. } => stripe::currency_supported(currency),
        }
    }

    /// Records a step no rail evidence stands behind (prepare, abort).
    fn unevidenced_step(&self, request: &PaymentRequest, phase: RailPhase) -> RailEvidence {
        let mut accepted = lock(&self.accepted);
        let key = (request.payment_id.clone(), phase);
        if let Some(step) = accepted.get(&key) {
            return RailEvidence { applied_now: false, ..step.evidence.clone() };
        }
        let evidence = RailEvidence {
            rail: self.id(),
            phase,
            payment_id: request.payment_id.clone(),
            reference: format!("{}:{}", request.payment_id, phase.as_str()),
            amount_minor: request.amount.amount_minor(),
            currency: request.amount.currency().code(),
            applied_now: true,
        };
        accepted.insert(key, AcceptedStep { inbound: None, payment: None, evidence: evidence.clone() });
        evidence
    }

    /// Checks the inbox's evidence for a step against the request and records the step.
    fn evidenced_step(
        &self,
        request: &PaymentRequest,
        phase: RailPhase,
        status: PaymentStatus,
        reference: Option<String>,
        at_ms: u64,
    ) -> Result<RailEvidence, RailError> {
        let inbound = self.inbox.evidence(&request.payment_id, phase);
        let mut accepted = lock(&self.accepted);
        let key = (request.payment_id.clone(), phase);
        let mut expected_reference = reference;
        if let Some(step) = accepted.get(&key) {
            // The step is done; the same bytes (or none any more) change nothing.
            if inbound.is_none() || inbound == step.inbound {
                return Ok(RailEvidence { applied_now: false, ..step.evidence.clone() });
            }
            // Other bytes for a step already accepted must evidence the same payment.
            expected_reference = Some(step.evidence.reference.clone());
        }
        let inbound = inbound.ok_or_else(|| {
            RailEvidenceError::new(
                EvidenceReason::EvidenceMissing,
                format!("no {} evidence for {} of payment {}", self.id(), phase.as_str(), request.payment_id),
            )
        })?;
        let payment = self.read(&inbound, at_ms / 1_000)?;
        payment.expect(&ExpectedPayment {
            amount: request.amount,
            env: self.env,
            status,
            reference: expected_reference,
        })?;
        if let Some(step) = accepted.get(&key) {
            return Ok(RailEvidence { applied_now: false, ..step.evidence.clone() });
        }
        let evidence = RailEvidence {
            rail: self.id(),
            phase,
            payment_id: request.payment_id.clone(),
            reference: payment.reference.clone(),
            amount_minor: payment.amount.amount_minor(),
            currency: payment.amount.currency().code(),
            applied_now: true,
        };
        let step = AcceptedStep { inbound: Some(inbound), payment: Some(payment), evidence: evidence.clone() };
        accepted.insert(key, step);
        Ok(evidence)
    }

    fn was_accepted(&self, request: &PaymentRequest, phase: RailPhase) -> Option<RailEvidence> {
        lock(&self.accepted).get(&(request.payment_id.clone(), phase)).map(|step| step.evidence.clone())
    }
}

impl<I: EvidenceInbox> Rail for ExternalRail<I> {
    fn id(&self) -> &'static str {
        match self.kind {
            ExternalRailKind::X402 => x402::RAIL,
            ExternalRailKind::Stripe { .. } => stripe::RAIL,
        }
    }

    fn prepare(&self, request: &PaymentRequest, _at_ms: u64) -> Result<RailEvidence, RailError> {
        if request.payer == request.payee {
            return Err(refused("payer and payee are the same agent".into()));
        }
        let currency = request.amount.currency();
        if !self.supports(currency) {
            return Err(refused(format!("the {} rail cannot pay in {currency}", self.id())));
        }
        Ok(self.unevidenced_step(request, RailPhase::Prepare))
    }

    fn commit(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        if self.was_accepted(request, RailPhase::Abort).is_some() {
            return Err(refused(format!("payment {} was aborted", request.payment_id)));
        }
        self.evidenced_step(request, RailPhase::Commit, PaymentStatus::Settled, None, at_ms)
    }

    fn abort(&self, request: &PaymentRequest, _at_ms: u64) -> Result<RailEvidence, RailError> {
        let id = &request.payment_id;
        if self.was_accepted(request, RailPhase::Commit).is_some() {
            return Err(refused(format!("payment {id} was committed; refund it instead")));
        }
        // Evidence of a commit, even one that did not check out, means money may have moved.
        if self.inbox.evidence(id, RailPhase::Commit).is_some() {
            return Err(refused(format!("the rail holds commit evidence for payment {id}; refund it instead")));
        }
        Ok(self.unevidenced_step(request, RailPhase::Abort))
    }

    fn refund(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        let committed = match self.was_accepted(request, RailPhase::Commit) {
            Some(evidence) => evidence,
            None if self.inbox.evidence(&request.payment_id, RailPhase::Commit).is_some() => {
                self.commit(request, at_ms)?
            }
            None => return Err(refused(format!("payment {} was not committed", request.payment_id))),
        };
        self.evidenced_step(request, RailPhase::Refund, PaymentStatus::Refunded, Some(committed.reference), at_ms)
    }
}
