//! The runtime and the buyer's memory: negotiation defaults read from the `preferences` block
//! (explicit arguments win; what applied is recorded in `session.created`), and one entry per
//! finished negotiation appended to the `outcomes` rolling log.

use pactum_memory::Constellation;
use pactum_memory::LedgerTx;
use pactum_memory::blocks::{Author, Change, MemoryError, StagedWrite, Write};
use serde_json::{Value, json};

use crate::error::RuntimeError;
use crate::session::model::{Phase, PreferencesRecord, SessionState};

/// The label of the block the runtime reads defaults from.
pub const PREFERENCES_LABEL: &str = "preferences";
/// The label of the rolling log of finished negotiations.
pub const OUTCOMES_LABEL: &str = "outcomes";

/// An agent's negotiation defaults, as its preferences block holds them at one version.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Preferences {
    pub agent_id: String,
    pub version: u64,
    /// The block's whole value (a JSON object, validated by its template on every write).
    pub values: Value,
    pub max_price_minor: Option<u64>,
    pub currency: Option<String>,
    pub preferred_providers: Vec<String>,
    pub blocked_providers: Vec<String>,
    pub strategy: Option<String>,
}

fn ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Preferences {
    /// The agent's preferences, or `None` when it has no preferences block or an empty one.
    pub fn load(db: &Constellation, agent_id: &str) -> Result<Option<Self>, RuntimeError> {
        let Some((version, values)) = db.block_value(agent_id, PREFERENCES_LABEL)? else {
            return Ok(None);
        };
        if values.as_object().is_none_or(|fields| fields.is_empty()) {
            return Ok(None);
        }
        Ok(Some(Self {
            agent_id: agent_id.to_owned(),
            version,
            max_price_minor: values["default_max_price_minor"].as_u64(),
            currency: values["default_currency"].as_str().map(str::to_owned),
            preferred_providers: ids(&values["preferred_providers"]),
            blocked_providers: ids(&values["blocked_providers"]),
            strategy: values["default_strategy"].as_str().map(str::to_owned),
            values,
        }))
    }

    /// What a session records about these preferences; `arguments` are the explicit values the
    /// command was given (`null` where it was not).
    pub fn record(&self, arguments: Value) -> PreferencesRecord {
        PreferencesRecord {
            source: format!("memory:{}/{PREFERENCES_LABEL}@{}", self.agent_id, self.version),
            values: self.values.clone(),
            arguments,
            preferred_providers: self.preferred_providers.clone(),
        }
    }
}

/// The outcomes-log entry of an ended session.
pub fn outcome_entry(state: &SessionState) -> Option<Value> {
    let created = state.created.as_ref()?;
    let mut entry = json!({
        "session": created.session_id,
        "intent_type": created.intent.get("intent_type").cloned().unwrap_or(Value::Null),
        "outcome": match state.phase {
            Phase::Completed => "completed",
            _ => "failed",
        },
        "rounds": state.round,
        "at_ms": state.last_at_ms,
    });
    if let Some(agreement) = &state.agreement {
        entry["provider"] = json!(agreement.provider);
        entry["price_minor"] = json!(agreement.price.amount_minor);
        entry["currency"] = json!(agreement.price.currency);
    }
    if let Some(failure) = &state.failure {
        entry["failure"] = json!(format!("{} {}", failure.code, failure.name));
    }
    Some(entry)
}

/// Appends the session's outcome to its buyer's outcomes log (creating the buyer's default
/// memory blocks if it has none). Keyed by session id: closing a session twice appends once.
pub fn record_outcome(db: &Constellation, state: &SessionState) -> Result<(), RuntimeError> {
    let Some((buyer, write)) = outcome_write(state) else { return Ok(()) };
    let write = || write.clone();
    match db.write_block(buyer, OUTCOMES_LABEL, write()) {
        Ok(_) => Ok(()),
        Err(MemoryError::BlockNotFound { .. }) => {
            db.ensure_default_blocks(buyer, state.last_at_ms)?;
            db.write_block(buyer, OUTCOMES_LABEL, write())?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// [`record_outcome`] inside the write that ends the session (`ledger` is its transaction),
/// undone alone if it fails: the transcript is the record, and a log that cannot take the entry
/// (a corrupt block, a block of another kind under that label) must not keep the session from
/// ending. The returned change is passed to [`Constellation::staged_committed`] after the commit.
pub fn stage_outcome(db: &Constellation, ledger: &LedgerTx<'_>, state: &SessionState) -> Option<StagedWrite> {
    let (buyer, write) = outcome_write(state)?;
    match db.write_block_in(ledger, buyer, OUTCOMES_LABEL, write) {
        Ok(staged) => Some(staged),
        Err(error) => {
            let session = state.session_id().unwrap_or_default();
            let code = RuntimeError::from(error);
            tracing::warn!(session, code = code.code(), "the outcomes log was not updated: {code}");
            None
        }
    }
}

/// The buyer, and the keyed append of the session's outcome to its log; `None` before the
/// session has a buyer and an outcome.
fn outcome_write(state: &SessionState) -> Option<(&str, Write)> {
    let (buyer, entry, session_id) = (state.buyer_id()?, outcome_entry(state)?, state.session_id()?);
    Some((
        buyer,
        Write {
            author: Author::System,
            change: Change::Log { entry, key: Some(format!("session:{session_id}")) },
            base: None,
            message: Some(format!("session {session_id} ended")),
            op: None,
            at_ms: state.last_at_ms,
        },
    ))
}
