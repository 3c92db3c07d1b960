//! Stored policies: named, versioned, append-only. The store keeps what the runtime resolved
//! (canonical JSON and its hash) and the source text; it does not parse policies itself.

use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::store::Constellation;

/// One stored version of a policy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PolicyRow {
    pub name: String,
    pub version: u32,
    pub policy_hash: String,
    pub canonical_json: String,
    pub source: String,
    pub created_at_ms: u64,
}

/// What [`Constellation::add_policy`] did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PolicyAdded {
    /// A new row.
    Stored,
    /// The same name, version and hash were already stored: nothing changed.
    AlreadyStored,
    /// That name and version hold another policy (its hash): nothing changed.
    VersionTaken { policy_hash: String },
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRow> {
    Ok(PolicyRow {
        name: row.get(0)?,
        version: row.get(1)?,
        policy_hash: row.get(2)?,
        canonical_json: row.get(3)?,
        source: row.get(4)?,
        created_at_ms: u64::try_from(row.get::<_, i64>(5)?).unwrap_or_default(),
    })
}

const COLUMNS: &str = "name, version, policy_hash, canonical_json, source, created_at_ms";

impl Constellation {
    /// Stores a version of a policy, unless that name and version exist already.
    pub fn add_policy(&self, row: &PolicyRow) -> Result<PolicyAdded, StoreError> {
        self.write(|tx| {
            let existing: Option<String> = tx
                .prepare_cached("SELECT policy_hash FROM policies WHERE name = ?1 AND version = ?2")
                .and_then(|mut statement| statement.query_row(params![row.name, row.version], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            match existing {
                Some(hash) if hash == row.policy_hash => Ok(PolicyAdded::AlreadyStored),
                Some(hash) => Ok(PolicyAdded::VersionTaken { policy_hash: hash }),
                None => {
                    let at_ms = i64::try_from(row.created_at_ms).unwrap_or(i64::MAX);
                    tx.prepare_cached(&format!("INSERT INTO policies ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
                        .and_then(|mut statement| {
                            statement.execute(params![
                                row.name,
                                row.version,
                                row.policy_hash,
                                row.canonical_json,
                                row.source,
                                at_ms
                            ])
                        })
                        .map_err(sql_error)?;
                    Ok(PolicyAdded::Stored)
                }
            }
        })
        .map_err(|e| self.with_path(e))
    }

    /// Every stored version, by name then version.
    pub fn policies(&self) -> Result<Vec<PolicyRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM policies ORDER BY name, version"))
                .map_err(sql_error)?;
            let rows = statement.query_map([], row_of).map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The latest version of a policy, or a given version.
    pub fn policy(&self, name: &str, version: Option<u32>) -> Result<Option<PolicyRow>, StoreError> {
        self.read(|tx| {
            let query = match version {
                Some(_) => format!("SELECT {COLUMNS} FROM policies WHERE name = ?1 AND version = ?2"),
                None => format!(
                    "SELECT {COLUMNS} FROM policies WHERE name = ?1 AND ?2 IS NULL ORDER BY version DESC LIMIT 1"
                ),
            };
            tx.prepare_cached(&query)
                .and_then(|mut statement| statement.query_row(params![name, version], row_of).optional())
                .map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }
}
