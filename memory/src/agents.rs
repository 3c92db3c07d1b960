//! Agent records: id, display name, role and the Ed25519 identity each signs with. The secret
//! key is stored here (the constellation is the agent's home) and is never part of `Debug` output.

use std::fmt;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::StoreError;
use crate::events::StreamOrigin;
use crate::store::Constellation;

/// What an agent does in negotiations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AgentRole {
    Buyer,
    Provider,
}

impl AgentRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Provider => "provider",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "buyer" => Ok(Self::Buyer),
            "provider" => Ok(Self::Provider),
            other => Err(StoreError::Corrupt { detail: format!("unknown agent role {other:?}") }),
        }
    }
}

/// A 32-byte Ed25519 secret seed. `Debug` shows nothing of it; it is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSeed([u8; 32]);

impl SecretSeed {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The seed bytes, for building a signer. Never print or log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretSeed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretSeed(<redacted>)")
    }
}

impl Drop for SecretSeed {
    fn drop(&mut self) {
        // Best effort: the bytes do not outlive the value in this allocation.
        self.0 = [0; 32];
    }
}

/// One agent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentRecord {
    pub agent_id: String,
    pub display_name: String,
    pub role: AgentRole,
    /// The key it signs with now (`agent:<id>#<n>`).
    pub key_id: String,
    pub public_key: [u8; 32],
    pub secret_key: SecretSeed,
    pub created_at_ms: u64,
}

pub(crate) fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

pub(crate) fn read_agent(tx: &Transaction<'_>, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
    let row = tx
        .query_row(
            "SELECT a.agent_id, a.display_name, a.role, a.key_id, k.public_key, a.secret_key, a.created_at_ms
             FROM agents a JOIN signing_keys k ON k.key_id = a.key_id WHERE a.agent_id = ?1",
            [agent_id],
            |row| {
                let blob = |index: usize| -> Result<[u8; 32], rusqlite::Error> {
                    let bytes: Vec<u8> = row.get(index)?;
                    bytes.try_into().map_err(|_| {
                        rusqlite::Error::InvalidColumnType(index, "key".into(), rusqlite::types::Type::Blob)
                    })
                };
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    blob(4)?,
                    blob(5)?,
                    row.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()
        .map_err(sql_error)?;
    let Some((agent_id, display_name, role, key_id, public_key, secret, created_at_ms)) = row else {
        return Ok(None);
    };
    Ok(Some(AgentRecord {
        agent_id,
        display_name,
        role: AgentRole::parse(&role)?,
        key_id,
        public_key,
        secret_key: SecretSeed::new(secret),
        created_at_ms: u64::try_from(created_at_ms).unwrap_or(0),
    }))
}

impl Constellation {
    /// Stores a new agent and binds its key, in one transaction. If an agent with this id exists,
    /// it is returned unchanged and `record` is discarded (creation is idempotent, and two
    /// processes creating the same agent at once agree on one identity).
    pub fn ensure_agent(&self, record: AgentRecord) -> Result<AgentRecord, StoreError> {
        self.write(|tx| {
            if let Some(existing) = read_agent(tx, &record.agent_id)? {
                return Ok(existing);
            }
            tx.execute(
                "INSERT INTO signing_keys (key_id, public_key, origin, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.key_id,
                    record.public_key.as_slice(),
                    StreamOrigin::Local.as_str(),
                    i64::try_from(record.created_at_ms).unwrap_or(i64::MAX)
                ],
            )
            .map_err(|error| match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::KeyConflict(record.key_id.clone()),
                _ => sql_error(error),
            })?;
            tx.execute(
                "INSERT INTO agents (agent_id, display_name, role, key_id, secret_key, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.agent_id,
                    record.display_name,
                    record.role.as_str(),
                    record.key_id,
                    record.secret_key.expose().as_slice(),
                    i64::try_from(record.created_at_ms).unwrap_or(i64::MAX)
                ],
            )
            .map_err(sql_error)?;
            // The first generation; its number is the key id's suffix (`agent:<id>#<n>`).
            tx.execute(
                "INSERT INTO agent_keys (key_id, agent_id, generation, created_at_ms)
                 VALUES (?1, ?2, max(1, CAST(substr(?1, instr(?1, '#') + 1) AS INTEGER)), ?3)",
                params![record.key_id, record.agent_id, i64::try_from(record.created_at_ms).unwrap_or(i64::MAX)],
            )
            .map_err(sql_error)?;
            Ok(record)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The constellation's key root, storing `candidate` first if there is none yet. Two
    /// processes racing here agree on one root (the first written).
    pub fn ensure_key_root(&self, candidate: &SecretSeed, created_at_ms: u64) -> Result<SecretSeed, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO key_root (id, seed, created_at_ms) VALUES (1, ?1, ?2)",
                params![candidate.expose().as_slice(), i64::try_from(created_at_ms).unwrap_or(i64::MAX)],
            )
            .map_err(sql_error)?;
            let seed: Vec<u8> =
                tx.query_row("SELECT seed FROM key_root WHERE id = 1", [], |row| row.get(0)).map_err(sql_error)?;
            let seed: [u8; 32] =
                seed.try_into().map_err(|_| StoreError::Corrupt { detail: "the key root is not 32 bytes".into() })?;
            Ok(SecretSeed::new(seed))
        })
        .map_err(|e| self.with_path(e))
    }

    /// The constellation's key root, if it has one. Reading never creates it (commands that
    /// only read, such as writing an evidence bundle, create nothing).
    pub fn key_root(&self) -> Result<Option<SecretSeed>, StoreError> {
        self.read(|tx| {
            let seed: Option<Vec<u8>> = tx
                .query_row("SELECT seed FROM key_root WHERE id = 1", [], |row| row.get(0))
                .optional()
                .map_err(sql_error)?;
            seed.map(|seed| {
                let seed: [u8; 32] = seed
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { detail: "the key root is not 32 bytes".into() })?;
                Ok(SecretSeed::new(seed))
            })
            .transpose()
        })
        .map_err(|e| self.with_path(e))
    }

    /// The agent with this id.
    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.read(|tx| read_agent(tx, agent_id)).map_err(|e| self.with_path(e))
    }

    /// Every agent, by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(|tx| {
            let ids: Vec<String> = {
                let mut statement = tx.prepare("SELECT agent_id FROM agents ORDER BY agent_id").map_err(sql_error)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(sql_error)?;
                rows.collect::<Result<_, _>>().map_err(sql_error)?
            };
            let mut agents = Vec::with_capacity(ids.len());
            for id in ids {
                agents.extend(read_agent(tx, &id)?);
            }
            Ok(agents)
        })
        .map_err(|e| self.with_path(e))
    }
}
