//! Delegation: a buyer buys from a broker, and the broker buys from a provider.
//!
//! [`AgentRuntime::negotiate_delegated`] runs two sessions, linked both ways in their
//! `session.created` (`parent_session` in the broker's, `delegated_to` in the buyer's):
//!
//! 1. the **child**: the broker, as buyer, negotiates the same intent with the directory's
//!    providers for at most `max × 100 / (100 + margin)`, to an agreement and its commitment,
//!    and stops before paying (its prepare waits for the parent);
//! 2. the **parent**: the buyer negotiates with the broker alone, who asks its cost plus margin
//!    (rounded up) in every round;
//! 3. the parent's settling write (one SQLite transaction) applies the child's prepare and
//!    commit (broker wallet → escrow → provider) and then the parent's prepare and commit (buyer
//!    → escrow → broker): **both hops are paid in one transaction, or neither**. If the broker
//!    cannot pay, the parent fails with PACT-501 DEPENDENCY_FAILED and nothing moves;
//! 4. the child then records its steps (found already applied under their keys) and completes,
//!    or, if the parent ended without paying, fails with PACT-501, holding nothing.
//!
//! A crash after the child's commitment and before the parent's settling write leaves the child
//! waiting: recovery fails it (PACT-501) once its parent has ended unpaid or was never written.
//! A crash after that write leaves both paid; each resumes and records its steps once.

use pactum_memory::{AgentRole, LedgerTx};

use super::{AgentRuntime, Approver, NewSession, SessionLinks, SessionObserver, session_id_for, session_stream_id};
use crate::directory::Directory;
use crate::error::RuntimeError;
use crate::intent::IntentError;
use crate::money::Money;
use crate::rail::{PaymentRequest, RailError, RailPhase};
use crate::session::model::{DelegationBody, PriceBody, SessionState, payment_id_for};

/// Largest broker margin, in percent of its cost: a margin is a fee, not a multiple.
pub const BROKER_MARGIN_PERCENT_MAX: u32 = 100;

/// A broker: an agent of the constellation that sells what it buys, at its cost plus a margin.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Broker {
    pub agent_id: String,
    pub name: String,
    pub margin_percent: u32,
}

/// What a delegated negotiation did: the broker's purchase and, if it reached an agreement, the
/// buyer's session with the broker.
#[derive(Debug)]
pub struct Delegated {
    pub child: SessionState,
    pub parent: Option<SessionState>,
}

/// Whether a broker's purchase may be paid.
pub(super) enum ParentPayment {
    /// The parent's settling write happened: the purchase was paid in it.
    Paid,
    /// The parent may still pay (it is being negotiated).
    Pending,
    /// The parent ended, or never started, without paying.
    Never(String),
}

fn invalid(detail: String) -> RuntimeError {
    RuntimeError::Intent(IntentError(detail))
}

impl AgentRuntime {
    /// Negotiates `request` through `broker` (see the module docs). Returns both sessions'
    /// states; the parent is `None` when the broker reached no agreement (the child failed).
    pub fn negotiate_delegated(
        &self,
        request: NewSession,
        broker: &Broker,
        approver: &mut dyn Approver,
        observer: &mut dyn SessionObserver,
    ) -> Result<Delegated, RuntimeError> {
        if broker.margin_percent > BROKER_MARGIN_PERCENT_MAX {
            return Err(invalid(format!("a broker's margin is 0 to {BROKER_MARGIN_PERCENT_MAX} %")));
        }
        if !request.coalition.is_empty() {
            return Err(invalid("a coalition cannot buy through a broker in this version".into()));
        }
        let max = request.intent.max_price();
        let currency = max.currency();
        let broker_agent = self.agent(&broker.agent_id, &broker.name, AgentRole::Provider)?;
        if broker_agent.role != AgentRole::Provider {
            return Err(RuntimeError::InvalidAgentId(format!("{} is not a provider agent", broker.agent_id)));
        }
        let broker_agent = self.fund_once(broker_agent, currency)?;
        if self.directory.providers().iter().any(|p| p.id == broker.agent_id) {
            return Err(invalid(format!("{} is a provider of the directory, not a broker", broker.agent_id)));
        }

        // The parent's id is the first free one for its seed: the child records it.
        let parent_id = self.free_session_id(request.seed)?;
        let child_max = u128::from(max.amount_minor()) * 100 / (100 + u128::from(broker.margin_percent));
        let child_max =
            Money::from_minor(u64::try_from(child_max).unwrap_or(0), currency).map_err(|e| invalid(e.to_string()))?;
        if child_max.amount_minor() == 0 {
            return Err(invalid(format!("{max} leaves the broker nothing to buy with")));
        }
        let mut child_intent = request.intent.to_json();
        child_intent["max_price"] = serde_json::json!(PriceBody::of(child_max));
        let child_seed = u64::from_be_bytes(
            pactum_transcripts::Digest::tagged(b"pactum-session/1 delegation\0", &request.seed.to_be_bytes())
                .as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let child_request = NewSession {
            intent: crate::intent::Intent::from_json(&child_intent)?,
            policy: request.policy.clone(),
            strategy: request.strategy,
            seed: child_seed,
            auto_approve: true,
            preferences: None,
            constraints: Vec::new(),
            coalition: Vec::new(),
        };
        let links = SessionLinks { parent_session: Some(parent_id.clone()), delegated_to: None };
        let mut child = self.start_as(child_request, broker_agent, links)?;
        child.wait_for_parent = true;
        self.drive(&mut child, approver, observer)?;
        let child_id = child.session_id.clone();
        let Some(agreement) = child.state.agreement.clone().filter(|_| child.state.prepared.is_none()) else {
            if child.state.phase.is_terminal() {
                self.close_live(&child)?;
            }
            return Ok(Delegated { child: child.state, parent: None });
        };

        // The broker asks its cost plus margin, rounded up, in every round.
        let cost = agreement.price.money().map_err(invalid)?;
        let margin = (u128::from(cost.amount_minor()) * u128::from(broker.margin_percent)).div_ceil(100);
        let price = Money::from_minor(cost.amount_minor().saturating_add(u64::try_from(margin).unwrap_or(0)), currency)
            .map_err(|e| invalid(e.to_string()))?;
        let quoting = AgentRuntime::new(
            self.db.clone(),
            self.clock.clone(),
            broker_directory(broker, request.intent.intent_type().as_str(), price)?,
            self.entropy.clone(),
            self.liveness.clone(),
            self.owner.clone(),
        )
        .with_starting_balance(self.starting_balance_minor);
        let quoting = AgentRuntime { stop_after_rail: self.stop_after_rail, ..quoting };
        let delegation = DelegationBody {
            broker: broker.agent_id.clone(),
            child_session: child_id.clone(),
            cost: agreement.price.clone(),
            margin_percent: broker.margin_percent,
        };
        let buyer = quoting.ensure_buyer(currency)?;
        let mut parent =
            quoting.start_as(request, buyer, SessionLinks { parent_session: None, delegated_to: Some(delegation) })?;
        if parent.session_id != parent_id {
            return Err(RuntimeError::SessionBusy { session_id: parent_id, owner: self.owner.clone() });
        }
        quoting.drive(&mut parent, approver, observer)?;
        if parent.state.phase.is_terminal() {
            quoting.close_live(&parent)?;
        }

        // Now the child records the payment made in the parent's write, or fails without one.
        let mut child = self.load(&child_id)?;
        self.drive(&mut child, approver, observer)?;
        if child.state.phase.is_terminal() {
            self.close_live(&child)?;
        }
        Ok(Delegated { child: child.state, parent: Some(parent.state) })
    }

    /// The first session id free for `seed` (what [`AgentRuntime::start`] would pick now).
    fn free_session_id(&self, seed: u64) -> Result<String, RuntimeError> {
        for ordinal in 0..super::SESSION_ID_ATTEMPTS_MAX {
            let session_id = session_id_for(seed, ordinal);
            if self.db.session_id_free(&session_id, &session_stream_id(&session_id))? {
                return Ok(session_id);
            }
        }
        Err(RuntimeError::SessionIdsExhausted(seed))
    }

    /// Whether the parent session paid (its prepare is on the ledger, applied in the write that
    /// also paid this purchase), may still pay, or never will.
    pub(super) fn parent_payment(&self, parent: &str, waiting: bool) -> Result<ParentPayment, RuntimeError> {
        let key = format!("{}:{}", payment_id_for(parent), RailPhase::Prepare.as_str());
        if self.db.transfer_by_key(&key)?.is_some() {
            return Ok(ParentPayment::Paid);
        }
        if waiting {
            return Ok(ParentPayment::Pending);
        }
        let stream = session_stream_id(parent);
        if self.db.stream(&stream)?.is_none_or(|record| record.event_count == 0) {
            return Ok(ParentPayment::Never(format!("the session {parent} this purchase was for never started")));
        }
        let state = super::read_session_state(&self.db, parent)?;
        Ok(if state.phase.is_terminal() {
            ParentPayment::Never(format!("the session {parent} this purchase was for ended without paying"))
        } else {
            ParentPayment::Pending
        })
    }

    /// Pays a broker's purchase inside its parent's settling write: prepare and commit. `Err`
    /// with the reason if the broker cannot pay (nothing moved); a commit refused right after
    /// its prepare is a broken ledger, so the whole write rolls back.
    pub(super) fn pay_child(
        &self,
        ledger: &LedgerTx<'_>,
        child: Option<&PaymentRequest>,
        now: u64,
    ) -> Result<Result<(), String>, RuntimeError> {
        let Some(child) = child else {
            return Ok(Err("the broker's purchase has no agreement to pay".into()));
        };
        match self.rail.apply_in(ledger, RailPhase::Prepare, child, now) {
            Ok(_) => {}
            Err(RailError::Store(error)) => return Err(error.into()),
            Err(error) => return Ok(Err(format!("the broker could not pay {}: {error}", child.payee))),
        }
        match self.rail.apply_in(ledger, RailPhase::Commit, child, now) {
            Ok(_) => Ok(Ok(())),
            Err(RailError::Store(error)) => Err(error.into()),
            Err(error) => Err(RuntimeError::Io(std::io::Error::other(format!(
                "the broker's payment {} was held but not paid: {error}",
                child.payment_id
            )))),
        }
    }
}

/// A directory of the broker alone, asking `price` in every round, never failing.
fn broker_directory(broker: &Broker, intent_type: &str, price: Money) -> Result<Directory, RuntimeError> {
    let text = format!(
        r#"format = "pactum-directory/1"
[[provider]]
id = {id}
name = {name}
intent_types = [{intent_type}]
reference_price = {{ amount = "{amount}", currency = "{currency}" }}
floor_percent = 100
concession = "eager"
concession_percent = 0
latency_ms = {{ base = 0, jitter = 0 }}
failures = {{ timeout_percent = 0, refusal_percent = 0, unreachable_percent = 0 }}
"#,
        id = toml_string(&broker.agent_id),
        name = toml_string(&broker.name),
        intent_type = toml_string(intent_type),
        amount = price.major_text(),
        currency = price.currency().code(),
    );
    Directory::parse(&text, "broker").map_err(|e| invalid(format!("the broker's quote: {e}")))
}

fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}
