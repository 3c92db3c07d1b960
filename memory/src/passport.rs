//! Passport storage: the outcomes of transcripts that verified, one row per party, each
//! transcript ingested once. The runtime decides what a transcript's outcome is and whether the
//! transcript verifies; this module keeps the rows and refuses a second ingestion of the same
//! transcript hash.

use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::store::Constellation;

/// A transcript whose outcome is in the passport.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PassportSource {
    /// 64 lowercase hex digits: the head hash of a Pactum stream, or a PACT v4 transcript's hash.
    pub transcript_hash: String,
    /// `session:<id>`, `pact-v4:<transcript_id>`, ...
    pub source: String,
    /// The transcript format it was read from.
    pub format: String,
    /// When the transcript ended (its last event).
    pub ended_at_ms: u64,
    pub ingested_at_ms: u64,
}

/// One party's outcome in one transcript.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PassportEventRow {
    pub agent_id: String,
    pub counterparty: String,
    /// `success`, `failure`, `policy_violation`, `dispute_lost` or `neutral`.
    pub outcome: String,
    /// The PACT failure code, for failures.
    pub code: Option<String>,
    pub fault_domain: Option<String>,
    pub at_ms: u64,
    pub amount_minor: Option<u64>,
    pub currency: Option<String>,
    pub transcript_hash: String,
}

fn text(value: rusqlite::types::ValueRef<'_>) -> Result<Option<&str>, StoreError> {
    match value {
        rusqlite::types::ValueRef::Null => Ok(None),
        other => other.as_str().map(Some).map_err(|e| StoreError::Corrupt { detail: format!("passport row: {e}") }),
    }
}

/// One outcome row, borrowed from the store (see [`Constellation::passport_scan`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PassportRowRef<'a> {
    pub counterparty: &'a str,
    pub outcome: &'a str,
    pub code: Option<&'a str>,
    pub fault_domain: Option<&'a str>,
    pub at_ms: u64,
    pub transcript_hash: &'a str,
}

fn sql(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt { detail: format!("{value} does not fit SQLite's integer") })
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Constellation {
    /// Stores a transcript's outcome rows, all in one transaction. Returns `false` (and writes
    /// nothing) when a transcript with this hash was ingested before.
    pub fn passport_ingest(&self, source: &PassportSource, events: &[PassportEventRow]) -> Result<bool, StoreError> {
        if let Some(row) = events.iter().find(|row| row.transcript_hash != source.transcript_hash) {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "passport row of {} filed under transcript {}",
                    row.transcript_hash, source.transcript_hash
                ),
            });
        }
        self.write(|tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO passport_sources (transcript_hash, source, format, ended_at_ms, ingested_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (transcript_hash) DO NOTHING",
                    params![
                        source.transcript_hash,
                        source.source,
                        source.format,
                        to_i64(source.ended_at_ms)?,
                        to_i64(source.ingested_at_ms)?
                    ],
                )
                .map_err(sql)?;
            if inserted == 0 {
                return Ok(false);
            }
            let mut statement = tx
                .prepare_cached(
                    "INSERT INTO passport_events (agent_id, counterparty, outcome, code, fault_domain, at_ms,
                                                  amount_minor, currency, transcript_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql)?;
            for row in events {
                statement
                    .execute(params![
                        row.agent_id,
                        row.counterparty,
                        row.outcome,
                        row.code,
                        row.fault_domain,
                        to_i64(row.at_ms)?,
                        row.amount_minor.map(to_i64).transpose()?,
                        row.currency,
                        row.transcript_hash,
                    ])
                    .map_err(sql)?;
            }
            Ok(true)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The ingestion of a transcript hash, if it was ingested.
    pub fn passport_source(&self, transcript_hash: &str) -> Result<Option<PassportSource>, StoreError> {
        self.read(|tx| {
            tx.query_row(
                "SELECT transcript_hash, source, format, ended_at_ms, ingested_at_ms
                 FROM passport_sources WHERE transcript_hash = ?1",
                [transcript_hash],
                |row| {
                    Ok(PassportSource {
                        transcript_hash: row.get(0)?,
                        source: row.get(1)?,
                        format: row.get(2)?,
                        ended_at_ms: to_u64(row.get(3)?),
                        ingested_at_ms: to_u64(row.get(4)?),
                    })
                },
            )
            .optional()
            .map_err(sql)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Every source name ingested so far (to find the sessions not yet ingested).
    pub fn passport_source_names(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare_cached("SELECT source FROM passport_sources").map_err(sql)?;
            let names = statement.query_map([], |row| row.get::<_, String>(0)).map_err(sql)?;
            names.collect::<Result<_, _>>().map_err(sql)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The outcomes recorded for `agent_id` up to `until_ms` (inclusive), oldest first.
    pub fn passport_events(&self, agent_id: &str, until_ms: u64) -> Result<Vec<PassportEventRow>, StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT counterparty, outcome, code, fault_domain, at_ms, amount_minor, currency, transcript_hash
                     FROM passport_events WHERE agent_id = ?1 AND at_ms <= ?2 ORDER BY at_ms, transcript_hash",
                )
                .map_err(sql)?;
            let rows = statement
                .query_map(params![agent_id, to_i64(until_ms.min(i64::MAX as u64))?], |row| {
                    Ok(PassportEventRow {
                        agent_id: agent_id.to_owned(),
                        counterparty: row.get(0)?,
                        outcome: row.get(1)?,
                        code: row.get(2)?,
                        fault_domain: row.get(3)?,
                        at_ms: to_u64(row.get(4)?),
                        amount_minor: row.get::<_, Option<i64>>(5)?.map(to_u64),
                        currency: row.get(6)?,
                        transcript_hash: row.get(7)?,
                    })
                })
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Calls `each` with every outcome of `agent_id` up to `until_ms` (inclusive), oldest
    /// first, borrowing the row (nothing is copied): scoring 100,000 outcomes reads them in one
    /// sequential range.
    pub fn passport_scan(
        &self,
        agent_id: &str,
        until_ms: u64,
        mut each: impl FnMut(PassportRowRef<'_>) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(
                    "SELECT counterparty, outcome, code, fault_domain, at_ms, transcript_hash
                     FROM passport_events WHERE agent_id = ?1 AND at_ms <= ?2 ORDER BY at_ms, transcript_hash",
                )
                .map_err(sql)?;
            let mut rows = statement.query(params![agent_id, to_i64(until_ms.min(i64::MAX as u64))?]).map_err(sql)?;
            while let Some(row) = rows.next().map_err(sql)? {
                let required = |index: usize| -> Result<&str, StoreError> {
                    text(row.get_ref(index).map_err(sql)?)?
                        .ok_or_else(|| StoreError::Corrupt { detail: "passport row with a missing field".into() })
                };
                let row_ref = PassportRowRef {
                    counterparty: required(0)?,
                    outcome: required(1)?,
                    code: text(row.get_ref(2).map_err(sql)?)?,
                    fault_domain: text(row.get_ref(3).map_err(sql)?)?,
                    at_ms: to_u64(row.get(4).map_err(sql)?),
                    transcript_hash: required(5)?,
                };
                each(row_ref).map_err(|detail| StoreError::Corrupt { detail })?;
            }
            Ok(())
        })
        .map_err(|e| self.with_path(e))
    }

    /// The time of `agent_id`'s latest outcome.
    pub fn passport_latest_ms(&self, agent_id: &str) -> Result<Option<u64>, StoreError> {
        self.read(|tx| {
            tx.query_row("SELECT max(at_ms) FROM passport_events WHERE agent_id = ?1", [agent_id], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map(|at| at.map(to_u64))
            .map_err(sql)
        })
        .map_err(|e| self.with_path(e))
    }

    /// How many outcome rows the passport holds for `agent_id` (any time).
    pub fn passport_event_count(&self, agent_id: &str) -> Result<u64, StoreError> {
        self.read(|tx| {
            tx.query_row("SELECT count(*) FROM passport_events WHERE agent_id = ?1", [agent_id], |row| {
                row.get::<_, i64>(0)
            })
            .map(to_u64)
            .map_err(sql)
        })
        .map_err(|e| self.with_path(e))
    }
}
