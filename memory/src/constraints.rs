//! Agents' spending constraints and the payments they count.
//!
//! A constraint is stored as the runtime wrote it (canonical JSON and its hash): this crate does
//! not parse constraints. Every version of a named constraint is a row; a removal is a row
//! without a body. `since_ms` is when the constraint started counting: a new version keeps its
//! predecessor's, so raising a limit does not forget what was spent.
//!
//! A spend is one payment held for an agent that has constraints, written in the transaction
//! that holds the money and released (once) in the one that gives the hold back; when an agent's
//! first constraint is set, its holds on the ledger since the constraint's start are copied in.
//! Checks before a payment read both inside the payment's own write transaction ([`LedgerTx`]),
//! so two payments can never both pass a limit that only one fits.

use rusqlite::{Connection, OptionalExtension, params};

use crate::agents::sql_error;
use crate::error::StoreError;
use crate::ledger::LedgerTx;
use crate::store::Constellation;

/// Longest constraint name, in bytes.
pub const CONSTRAINT_NAME_BYTES_MAX: usize = 64;
/// Most constraints one agent may have at a time: each is checked before every payment.
pub const AGENT_CONSTRAINTS_MAX: usize = 32;

/// One version of an agent's named constraint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConstraintRow {
    pub agent_id: String,
    pub name: String,
    pub version: u32,
    /// Canonical JSON of the constraint; `None` for a removal.
    pub body: Option<String>,
    pub constraint_hash: Option<String>,
    /// When the constraint started counting payments.
    pub since_ms: u64,
    pub created_at_ms: u64,
}

/// One payment an agent made.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SpendRow {
    pub payment_id: String,
    pub agent_id: String,
    pub amount_minor: u64,
    pub currency: String,
    pub at_ms: u64,
    /// When the hold was given back (the payment did not happen).
    pub released_at_ms: Option<u64>,
}

/// Why a constraint could not be stored.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConstraintStoreError {
    #[error("a constraint name is 1 to {CONSTRAINT_NAME_BYTES_MAX} bytes of letters, digits, '-', '_' or '.'")]
    InvalidName,
    #[error("agent {0} does not exist")]
    UnknownAgent(String),
    #[error("agent {agent_id} has no constraint named {name}")]
    NotFound { agent_id: String, name: String },
    #[error("agent {0} already has {AGENT_CONSTRAINTS_MAX} constraints")]
    TooMany(String),
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

const CONSTRAINT_COLUMNS: &str = "agent_id, name, version, body, constraint_hash, since_ms, created_at_ms";

fn constraint_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConstraintRow> {
    Ok(ConstraintRow {
        agent_id: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        body: row.get(3)?,
        constraint_hash: row.get(4)?,
        since_ms: u64_of(row.get(5)?),
        created_at_ms: u64_of(row.get(6)?),
    })
}

const SPEND_COLUMNS: &str = "payment_id, agent_id, amount_minor, currency, at_ms, released_at_ms";

fn spend_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<SpendRow> {
    Ok(SpendRow {
        payment_id: row.get(0)?,
        agent_id: row.get(1)?,
        amount_minor: u64_of(row.get(2)?),
        currency: row.get(3)?,
        at_ms: u64_of(row.get(4)?),
        released_at_ms: row.get::<_, Option<i64>>(5)?.map(u64_of),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= CONSTRAINT_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The current constraints of an agent (latest version of each name, removals left out), by name.
fn current_constraints(connection: &Connection, agent_id: &str) -> Result<Vec<ConstraintRow>, StoreError> {
    let mut statement = connection.prepare_cached(&current_constraints_sql()).map_err(sql_error)?;
    let rows = statement.query_map(params![agent_id], constraint_of).map_err(sql_error)?;
    rows.collect::<Result<_, _>>().map_err(sql_error)
}

fn current_constraints_sql() -> String {
    format!(
        "SELECT {CONSTRAINT_COLUMNS} FROM agent_constraints c WHERE agent_id = ?1 AND body IS NOT NULL
         AND version = (SELECT max(version) FROM agent_constraints l WHERE l.agent_id = c.agent_id AND l.name = c.name)
         ORDER BY name"
    )
}

/// The payments an agent made (not released) at or after `since_ms`, oldest first.
fn live_spends(connection: &Connection, agent_id: &str, since_ms: u64) -> Result<Vec<SpendRow>, StoreError> {
    let sql = format!(
        "SELECT {SPEND_COLUMNS} FROM spends WHERE agent_id = ?1 AND at_ms >= ?2 AND released_at_ms IS NULL
         ORDER BY at_ms, payment_id"
    );
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    let rows = statement.query_map(params![agent_id, i64_of(since_ms)], spend_of).map_err(sql_error)?;
    rows.collect::<Result<_, _>>().map_err(sql_error)
}

/// Copies an agent's holds on the ledger at or after `since_ms` into `spends` (a hold is a
/// transfer out of one of its wallets under `<payment id>:prepare`; released if the payment has
/// an `:abort` transfer). Spends already recorded are kept.
fn copy_ledger_holds(connection: &Connection, agent_id: &str, since_ms: u64) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO spends (payment_id, agent_id, amount_minor, currency, at_ms, released_at_ms)
             SELECT substr(t.idempotency_key, 1, length(t.idempotency_key) - length(':prepare')), ?1,
                    t.amount_minor, t.currency, t.at_ms,
                    (SELECT a.at_ms FROM ledger_transfers a WHERE a.idempotency_key =
                        substr(t.idempotency_key, 1, length(t.idempotency_key) - length(':prepare')) || ':abort')
             FROM ledger_transfers t
             WHERE t.from_account = 'wallet:' || ?1 || ':' || t.currency
               AND t.idempotency_key LIKE '%:prepare' AND t.at_ms >= ?2",
        )
        .and_then(|mut s| s.execute(params![agent_id, i64_of(since_ms)]))
        .map(|_| ())
        .map_err(sql_error)
}

/// The payments (not released) of an agent held in `[from_ms, to_ms)`: their number and, in
/// `currency`, their sum (saturating). Read from the covering index, without visiting rows.
fn spend_totals(
    connection: &Connection,
    agent_id: &str,
    from_ms: u64,
    to_ms: u64,
    currency: &str,
) -> Result<SpendTotals, StoreError> {
    connection
        .prepare_cached(
            "SELECT count(*), coalesce(sum(CASE WHEN currency = ?4 THEN amount_minor END), 0) FROM spends
             WHERE agent_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 AND released_at_ms IS NULL",
        )
        .and_then(|mut s| {
            s.query_row(params![agent_id, i64_of(from_ms), i64_of(to_ms), currency], |row| {
                Ok(SpendTotals { count: u64_of(row.get(0)?), sum_minor: u64_of(row.get(1)?) })
            })
        })
        .map_err(sql_error)
}

fn first_spend_ms(connection: &Connection, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
    connection
        .prepare_cached("SELECT min(at_ms) FROM spends WHERE agent_id = ?1 AND at_ms >= ?2 AND released_at_ms IS NULL")
        .and_then(|mut s| s.query_row(params![agent_id, i64_of(since_ms)], |row| row.get::<_, Option<i64>>(0)))
        .map(|first| first.map(u64_of))
        .map_err(sql_error)
}

/// What [`Constellation::spend_totals`] counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SpendTotals {
    pub count: u64,
    pub sum_minor: u64,
}

impl Constellation {
    /// The payments (not released) an agent held in `[from_ms, to_ms)`: how many, and their sum
    /// in `currency`.
    pub fn spend_totals(
        &self,
        agent_id: &str,
        from_ms: u64,
        to_ms: u64,
        currency: &str,
    ) -> Result<SpendTotals, StoreError> {
        self.read(|tx| spend_totals(tx, agent_id, from_ms, to_ms, currency)).map_err(|e| self.with_path(e))
    }

    /// When the agent's first payment (not released) at or after `since_ms` was held.
    pub fn first_spend_ms(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
        self.read(|tx| first_spend_ms(tx, agent_id, since_ms)).map_err(|e| self.with_path(e))
    }

    /// Stores a new version of an agent's named constraint (`body` and `constraint_hash`
    /// given) or removes it (both `None`). Returns the row written. A new constraint starts
    /// counting at `at_ms`, and the agent's holds on the ledger since then are copied into
    /// `spends`; a new version keeps its predecessor's start.
    pub fn set_agent_constraint(
        &self,
        agent_id: &str,
        name: &str,
        body: Option<(&str, &str)>,
        at_ms: u64,
    ) -> Result<Result<ConstraintRow, ConstraintStoreError>, StoreError> {
        if !valid_name(name) {
            return Ok(Err(ConstraintStoreError::InvalidName));
        }
        self.write(|tx| {
            let known: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM agents WHERE agent_id = ?1")
                .and_then(|mut s| s.query_row(params![agent_id], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            if known.is_none() {
                return Ok(Err(ConstraintStoreError::UnknownAgent(agent_id.to_owned())));
            }
            let latest = tx
                .prepare_cached(&format!(
                    "SELECT {CONSTRAINT_COLUMNS} FROM agent_constraints WHERE agent_id = ?1 AND name = ?2
                     ORDER BY version DESC LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![agent_id, name], constraint_of).optional())
                .map_err(sql_error)?;
            let live = latest.as_ref().filter(|row| row.body.is_some());
            if body.is_none() && live.is_none() {
                return Ok(Err(ConstraintStoreError::NotFound {
                    agent_id: agent_id.to_owned(),
                    name: name.to_owned(),
                }));
            }
            if body.is_some() && live.is_none() && current_constraints(tx, agent_id)?.len() >= AGENT_CONSTRAINTS_MAX {
                return Ok(Err(ConstraintStoreError::TooMany(agent_id.to_owned())));
            }
            if body.is_some() && live.is_none() {
                copy_ledger_holds(tx, agent_id, at_ms)?;
            }
            let row = ConstraintRow {
                agent_id: agent_id.to_owned(),
                name: name.to_owned(),
                version: latest.as_ref().map_or(1, |row| row.version + 1),
                body: body.map(|(json, _)| json.to_owned()),
                constraint_hash: body.map(|(_, hash)| hash.to_owned()),
                since_ms: live.map_or(at_ms, |row| row.since_ms),
                created_at_ms: at_ms,
            };
            tx.prepare_cached(&format!(
                "INSERT INTO agent_constraints ({CONSTRAINT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    row.agent_id,
                    row.name,
                    row.version,
                    row.body,
                    row.constraint_hash,
                    i64_of(row.since_ms),
                    i64_of(row.created_at_ms)
                ])
            })
            .map_err(sql_error)?;
            Ok(Ok(row))
        })
        .map_err(|e| self.with_path(e))
    }

    /// The current constraints of an agent, by name.
    pub fn agent_constraints(&self, agent_id: &str) -> Result<Vec<ConstraintRow>, StoreError> {
        self.read(|tx| current_constraints(tx, agent_id)).map_err(|e| self.with_path(e))
    }

    /// Every version of every constraint of an agent, by name then version.
    pub fn agent_constraint_history(&self, agent_id: &str) -> Result<Vec<ConstraintRow>, StoreError> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {CONSTRAINT_COLUMNS} FROM agent_constraints WHERE agent_id = ?1 ORDER BY name, version"
            );
            let mut statement = tx.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map(params![agent_id], constraint_of).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }

    /// The payments an agent made (not released) at or after `since_ms`, oldest first.
    pub fn live_spends(&self, agent_id: &str, since_ms: u64) -> Result<Vec<SpendRow>, StoreError> {
        self.read(|tx| live_spends(tx, agent_id, since_ms)).map_err(|e| self.with_path(e))
    }

    /// Every spend, released or not, by time then payment id.
    pub fn spends(&self) -> Result<Vec<SpendRow>, StoreError> {
        self.read(|tx| {
            let sql = format!("SELECT {SPEND_COLUMNS} FROM spends ORDER BY at_ms, payment_id");
            let mut statement = tx.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([], spend_of).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)
        })
        .map_err(|e| self.with_path(e))
    }
}

impl LedgerTx<'_> {
    /// [`Constellation::agent_constraints`], inside this transaction.
    pub fn agent_constraints(&self, agent_id: &str) -> Result<Vec<ConstraintRow>, StoreError> {
        current_constraints(self.tx(), agent_id)
    }

    /// [`Constellation::spend_totals`], inside this transaction.
    pub fn spend_totals(
        &self,
        agent_id: &str,
        from_ms: u64,
        to_ms: u64,
        currency: &str,
    ) -> Result<SpendTotals, StoreError> {
        spend_totals(self.tx(), agent_id, from_ms, to_ms, currency)
    }

    /// [`Constellation::first_spend_ms`], inside this transaction.
    pub fn first_spend_ms(&self, agent_id: &str, since_ms: u64) -> Result<Option<u64>, StoreError> {
        first_spend_ms(self.tx(), agent_id, since_ms)
    }

    /// The spend recorded for a payment, released or not.
    pub fn spend(&self, payment_id: &str) -> Result<Option<SpendRow>, StoreError> {
        self.tx()
            .prepare_cached(&format!("SELECT {SPEND_COLUMNS} FROM spends WHERE payment_id = ?1"))
            .and_then(|mut s| s.query_row(params![payment_id], spend_of).optional())
            .map_err(sql_error)
    }

    /// [`LedgerTx::spend_totals`] without the payment `payment_id`'s own spend (a payment
    /// judged again must not count its own hold). Reads every row of the range: for the rare
    /// payment whose hold is recorded before its judgement is.
    pub fn spend_totals_without(
        &self,
        agent_id: &str,
        from_ms: u64,
        to_ms: u64,
        currency: &str,
        payment_id: &str,
    ) -> Result<SpendTotals, StoreError> {
        self.tx()
            .prepare_cached(
                "SELECT count(*), coalesce(sum(CASE WHEN currency = ?4 THEN amount_minor END), 0) FROM spends
                 WHERE agent_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 AND released_at_ms IS NULL AND payment_id <> ?5",
            )
            .and_then(|mut s| {
                s.query_row(params![agent_id, i64_of(from_ms), i64_of(to_ms), currency, payment_id], |row| {
                    Ok(SpendTotals { count: u64_of(row.get(0)?), sum_minor: u64_of(row.get(1)?) })
                })
            })
            .map_err(sql_error)
    }

    /// [`LedgerTx::first_spend_ms`] without the payment `payment_id`'s own spend.
    pub fn first_spend_ms_without(
        &self,
        agent_id: &str,
        since_ms: u64,
        payment_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.tx()
            .prepare_cached(
                "SELECT min(at_ms) FROM spends
                 WHERE agent_id = ?1 AND at_ms >= ?2 AND released_at_ms IS NULL AND payment_id <> ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![agent_id, i64_of(since_ms), payment_id], |row| row.get::<_, Option<i64>>(0))
            })
            .map(|first| first.map(u64_of))
            .map_err(sql_error)
    }

    /// Records a payment (idempotent: the same payment again changes nothing; a different one
    /// under the same id is refused as corruption).
    pub fn record_spend(&self, spend: &SpendRow) -> Result<(), StoreError> {
        let tx = self.tx();
        let existing = tx
            .prepare_cached(&format!("SELECT {SPEND_COLUMNS} FROM spends WHERE payment_id = ?1"))
            .and_then(|mut s| s.query_row(params![spend.payment_id], spend_of).optional())
            .map_err(sql_error)?;
        match existing {
            Some(row)
                if row.agent_id == spend.agent_id
                    && row.amount_minor == spend.amount_minor
                    && row.currency == spend.currency =>
            {
                Ok(())
            }
            Some(_) => Err(StoreError::Corrupt {
                detail: format!("payment {} is recorded as another spend", spend.payment_id),
            }),
            None => tx
                .prepare_cached(&format!("INSERT INTO spends ({SPEND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL)"))
                .and_then(|mut s| {
                    s.execute(params![
                        spend.payment_id,
                        spend.agent_id,
                        i64_of(spend.amount_minor),
                        spend.currency,
                        i64_of(spend.at_ms)
                    ])
                })
                .map(|_| ())
                .map_err(sql_error),
        }
    }

    /// Marks a payment's hold as given back (idempotent; a payment never recorded is left alone).
    pub fn release_spend(&self, payment_id: &str, at_ms: u64) -> Result<(), StoreError> {
        self.tx()
            .prepare_cached("UPDATE spends SET released_at_ms = ?2 WHERE payment_id = ?1 AND released_at_ms IS NULL")
            .and_then(|mut s| s.execute(params![payment_id, i64_of(at_ms)]))
            .map(|_| ())
            .map_err(sql_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Constellation;

    /// Every payment reads its payer's constraints: the cached statement must keep its plan from
    /// one payer to the next instead of being parsed and planned again.
    #[test]
    fn reading_constraints_again_reuses_the_planned_statement() {
        let dir = tempfile::tempdir().expect("temp");
        let db = Constellation::open(dir.path().join("c.db")).expect("open");
        let connection = db.lock();
        for agent in ["buyer", "alice", "buyer", "bob"] {
            assert!(current_constraints(&connection, agent).expect("read").is_empty());
        }
        let statement = connection.prepare_cached(&current_constraints_sql()).expect("cached");
        assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0);
        assert_eq!(statement.get_status(rusqlite::StatementStatus::Run), 4);
    }
}
