//! Agent key generations and the revocation list.
//!
//! Every key an agent has had is a row of `agent_keys`; the one it signs with now is
//! `agents.key_id`. Rotating moves an agent to a new generation and keeps the old public key in
//! `signing_keys`, so transcripts signed before the rotation still verify. Revoking appends a key
//! id to `key_revocations`; nothing removes it. Secret seeds are derived by the caller
//! (`runtime::identities`): this module only stores them.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::agents::{AgentRecord, SecretSeed, read_agent, sql_error};
use crate::error::StoreError;
use crate::events::StreamOrigin;
use crate::store::Constellation;

/// Longest revocation reason, in bytes: a sentence or two for whoever audits the list.
pub const REVOCATION_REASON_BYTES_MAX: usize = 512;

/// Where a key stands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyStatus {
    /// The key its agent signs with now.
    Current,
    /// Replaced by a newer generation; kept to verify what it signed.
    Retired,
    /// On the revocation list: nothing it signed is accepted any more.
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }
}

/// One entry of the revocation list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyRevocation {
    pub key_id: String,
    pub reason: String,
    pub revoked_at_ms: u64,
}

/// One generation of an agent's key (public material only).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentKey {
    pub agent_id: String,
    pub key_id: String,
    pub generation: u32,
    pub public_key: [u8; 32],
    pub created_at_ms: u64,
    /// Whether the agent signs with this key now.
    pub current: bool,
    pub revocation: Option<KeyRevocation>,
}

impl AgentKey {
    /// Revoked wins over current: a revoked key that is still current must not be trusted.
    pub fn status(&self) -> KeyStatus {
        match (&self.revocation, self.current) {
            (Some(_), _) => KeyStatus::Revoked,
            (None, true) => KeyStatus::Current,
            (None, false) => KeyStatus::Retired,
        }
    }
}

/// A new key generation for an agent, prepared by the caller.
#[derive(Debug)]
pub struct Rotation {
    pub agent_id: String,
    /// The key the caller saw as current; if another process rotated meanwhile, nothing is written.
    pub from_key_id: String,
    pub key_id: String,
    /// One more than the agent's newest generation.
    pub generation: u32,
    pub public_key: [u8; 32],
    pub secret_key: SecretSeed,
    pub created_at_ms: u64,
}

fn millis(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn stored_millis(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn newest_generation(tx: &Transaction<'_>, agent_id: &str) -> Result<u32, StoreError> {
    let newest: Option<i64> = tx
        .query_row("SELECT max(generation) FROM agent_keys WHERE agent_id = ?1", [agent_id], |row| row.get(0))
        .map_err(sql_error)?;
    let newest = newest.unwrap_or(0);
    u32::try_from(newest).map_err(|_| StoreError::Corrupt { detail: format!("agent {agent_id}: generation {newest}") })
}

impl Constellation {
    /// Every agent key, by agent and generation, with its revocation if any.
    pub fn agent_keys(&self) -> Result<Vec<AgentKey>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare(
                    "SELECT ak.agent_id, ak.key_id, ak.generation, k.public_key, ak.created_at_ms,
                            a.key_id = ak.key_id, r.reason, r.revoked_at_ms
                     FROM agent_keys ak
                     JOIN signing_keys k ON k.key_id = ak.key_id
                     JOIN agents a ON a.agent_id = ak.agent_id
                     LEFT JOIN key_revocations r ON r.key_id = ak.key_id
                     ORDER BY ak.agent_id, ak.generation",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map([], |row| {
                    let public_key: Vec<u8> = row.get(3)?;
                    let public_key: [u8; 32] = public_key.try_into().map_err(|_| {
                        rusqlite::Error::InvalidColumnType(3, "public_key".into(), rusqlite::types::Type::Blob)
                    })?;
                    let key_id: String = row.get(1)?;
                    let reason: Option<String> = row.get(6)?;
                    let revoked_at_ms: Option<i64> = row.get(7)?;
                    Ok(AgentKey {
                        agent_id: row.get(0)?,
                        generation: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        public_key,
                        created_at_ms: millis(row.get(4)?),
                        current: row.get(5)?,
                        revocation: reason.map(|reason| KeyRevocation {
                            key_id: key_id.clone(),
                            reason,
                            revoked_at_ms: millis(revoked_at_ms.unwrap_or(0)),
                        }),
                        key_id,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The revocation list, oldest first.
    pub fn key_revocations(&self) -> Result<Vec<KeyRevocation>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare("SELECT key_id, reason, revoked_at_ms FROM key_revocations ORDER BY revoked_at_ms, key_id")
                .map_err(sql_error)?;
            let rows = statement
                .query_map([], |row| {
                    Ok(KeyRevocation { key_id: row.get(0)?, reason: row.get(1)?, revoked_at_ms: millis(row.get(2)?) })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Appends `key_id` to the revocation list. The key must be one of the constellation's
    /// signing keys; revoking twice is [`StoreError::KeyAlreadyRevoked`] (the first reason stays).
    pub fn revoke_key(&self, key_id: &str, reason: &str, revoked_at_ms: u64) -> Result<KeyRevocation, StoreError> {
        if reason.len() > REVOCATION_REASON_BYTES_MAX {
            return Err(StoreError::Invalid {
                detail: format!("the reason is {} bytes, at most {REVOCATION_REASON_BYTES_MAX}", reason.len()),
            });
        }
        self.write(|tx| {
            let known: Option<i64> = tx
                .query_row("SELECT 1 FROM signing_keys WHERE key_id = ?1", [key_id], |row| row.get(0))
                .optional()
                .map_err(sql_error)?;
            if known.is_none() {
                return Err(StoreError::KeyNotFound(key_id.to_owned()));
            }
            let revoked: Option<i64> = tx
                .query_row("SELECT 1 FROM key_revocations WHERE key_id = ?1", [key_id], |row| row.get(0))
                .optional()
                .map_err(sql_error)?;
            if revoked.is_some() {
                return Err(StoreError::KeyAlreadyRevoked(key_id.to_owned()));
            }
            tx.execute(
                "INSERT INTO key_revocations (key_id, reason, revoked_at_ms) VALUES (?1, ?2, ?3)",
                params![key_id, reason, stored_millis(revoked_at_ms)],
            )
            .map_err(sql_error)?;
            Ok(KeyRevocation { key_id: key_id.to_owned(), reason: reason.to_owned(), revoked_at_ms })
        })
        .map_err(|e| self.with_path(e))
    }

    /// The agent's newest key generation (0 if the agent does not exist).
    pub fn newest_key_generation(&self, agent_id: &str) -> Result<u32, StoreError> {
        self.read(|tx| newest_generation(tx, agent_id)).map_err(|e| self.with_path(e))
    }

    /// Moves an agent to a new key generation, in one transaction: binds the new public key,
    /// records the generation and makes it the agent's current key. The old key stays in
    /// `signing_keys` (retired), so what it signed still verifies. Returns the updated agent.
    pub fn rotate_agent_key(&self, rotation: &Rotation) -> Result<AgentRecord, StoreError> {
        self.write(|tx| {
            let agent = read_agent(tx, &rotation.agent_id)?
                .ok_or_else(|| StoreError::NotFoundId { what: "agent", id: rotation.agent_id.clone() })?;
            let newest = newest_generation(tx, &rotation.agent_id)?;
            if agent.key_id != rotation.from_key_id || rotation.generation != newest.saturating_add(1) {
                return Err(StoreError::Invalid {
                    detail: format!(
                        "agent {} was rotated meanwhile (its key is {}, generation {newest}); try again",
                        rotation.agent_id, agent.key_id
                    ),
                });
            }
            tx.execute(
                "INSERT INTO signing_keys (key_id, public_key, origin, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![
                    rotation.key_id,
                    rotation.public_key.as_slice(),
                    StreamOrigin::Local.as_str(),
                    stored_millis(rotation.created_at_ms)
                ],
            )
            .map_err(|error| match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::KeyConflict(rotation.key_id.clone()),
                _ => sql_error(error),
            })?;
            tx.execute(
                "INSERT INTO agent_keys (key_id, agent_id, generation, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![rotation.key_id, rotation.agent_id, rotation.generation, stored_millis(rotation.created_at_ms)],
            )
            .map_err(sql_error)?;
            tx.execute(
                "UPDATE agents SET key_id = ?1, secret_key = ?2 WHERE agent_id = ?3",
                params![rotation.key_id, rotation.secret_key.expose().as_slice(), rotation.agent_id],
            )
            .map_err(sql_error)?;
            read_agent(tx, &rotation.agent_id)?
                .ok_or_else(|| StoreError::Corrupt { detail: format!("agent {} vanished", rotation.agent_id) })
        })
        .map_err(|e| self.with_path(e))
    }
}
