//! The double-entry ledger: accounts with balances in integer minor units, and transfers that
//! each debit one account and credit another in the same transaction. Each transfer carries an
//! idempotency key and is applied at most once, however often it is retried (after a crash, say).

use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::StoreError;
use crate::store::Constellation;

/// What an account is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AccountKind {
    /// An agent's own money.
    Wallet,
    /// What a provider has been paid.
    Provider,
    /// Money held for a session between commitment and settlement.
    Escrow,
    /// The outside world: funding comes from here, so its balance is minus what it put in.
    External,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wallet => "wallet",
            Self::Provider => "provider",
            Self::Escrow => "escrow",
            Self::External => "external",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "wallet" => Ok(Self::Wallet),
            "provider" => Ok(Self::Provider),
            "escrow" => Ok(Self::Escrow),
            "external" => Ok(Self::External),
            other => Err(StoreError::Corrupt { detail: format!("unknown account kind {other:?}") }),
        }
    }
}

/// An account and its balance.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Account {
    pub account_id: String,
    pub kind: AccountKind,
    pub currency: String,
    pub balance_minor: i64,
}

/// A transfer to apply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferRequest {
    /// The same key always means the same transfer: a retry with it does not move money again.
    pub idempotency_key: String,
    pub from_account: String,
    pub to_account: String,
    pub amount_minor: u64,
    pub currency: String,
    pub memo: String,
    pub at_ms: u64,
}

/// A transfer as recorded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transfer {
    pub transfer_id: u64,
    pub request: TransferRequest,
}

/// What applying a transfer did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TransferOutcome {
    Applied(Transfer),
    /// This idempotency key was applied before, with the same content; nothing moved now.
    AlreadyApplied(Transfer),
}

impl TransferOutcome {
    pub fn transfer(&self) -> &Transfer {
        match self {
            Self::Applied(transfer) | Self::AlreadyApplied(transfer) => transfer,
        }
    }
}

/// Why a transfer was refused; nothing moved.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {0} does not exist")]
    UnknownAccount(String),
    #[error("account {account} holds {balance_minor} minor units; {needed_minor} are needed")]
    InsufficientFunds { account: String, balance_minor: i64, needed_minor: u64 },
    #[error("currency mismatch: {detail}")]
    CurrencyMismatch { detail: String },
    #[error("idempotency key {0} was already used for a different transfer")]
    IdempotencyConflict(String),
    #[error("invalid transfer: {0}")]
    Invalid(String),
}

/// The result of checking the ledger's invariants.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LedgerCheck {
    /// (currency, sum of all balances): must all be zero.
    pub sums_by_currency: Vec<(String, i64)>,
    /// Accounts that must not be negative but are.
    pub negative_accounts: Vec<String>,
    /// Accounts whose balance differs from the sum of their transfers.
    pub balance_mismatches: Vec<String>,
}

impl LedgerCheck {
    pub fn is_sound(&self) -> bool {
        self.sums_by_currency.iter().all(|(_, sum)| *sum == 0)
            && self.negative_accounts.is_empty()
            && self.balance_mismatches.is_empty()
    }
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: Default::default(), source: error }
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt { detail: format!("{value} is too large for the ledger") })
}

fn read_account(tx: &Transaction<'_>, account_id: &str) -> Result<Option<Account>, StoreError> {
    let row = tx
        .prepare_cached("SELECT account_id, kind, currency, balance_minor FROM ledger_accounts WHERE account_id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([account_id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .optional()
        })
        .map_err(sql_error)?;
    row.map(|(account_id, kind, currency, balance_minor)| {
        Ok(Account { account_id, kind: AccountKind::parse(&kind)?, currency, balance_minor })
    })
    .transpose()
}

fn ensure_account_in(
    tx: &Transaction<'_>,
    account_id: &str,
    kind: AccountKind,
    currency: &str,
    created_at_ms: u64,
) -> Result<Account, StoreError> {
    if let Some(existing) = read_account(tx, account_id)? {
        if existing.kind != kind || existing.currency != currency {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "account {account_id} exists as {} {}, not {} {currency}",
                    existing.kind.as_str(),
                    existing.currency,
                    kind.as_str()
                ),
            });
        }
        return Ok(existing);
    }
    let created_at_ms = to_i64(created_at_ms)?;
    tx.prepare_cached(
        "INSERT INTO ledger_accounts (account_id, kind, currency, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut statement| statement.execute(params![account_id, kind.as_str(), currency, created_at_ms]))
    .map_err(sql_error)?;
    Ok(Account { account_id: account_id.to_owned(), kind, currency: currency.to_owned(), balance_minor: 0 })
}

fn read_transfer(tx: &Transaction<'_>, idempotency_key: &str) -> Result<Option<Transfer>, StoreError> {
    tx.prepare_cached(
        "SELECT transfer_id, idempotency_key, from_account, to_account, amount_minor, currency, memo, at_ms
         FROM ledger_transfers WHERE idempotency_key = ?1",
    )
    .and_then(|mut statement| {
        statement
            .query_row([idempotency_key], |row| {
                Ok(Transfer {
                    transfer_id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    request: TransferRequest {
                        idempotency_key: row.get(1)?,
                        from_account: row.get(2)?,
                        to_account: row.get(3)?,
                        amount_minor: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
                        currency: row.get(5)?,
                        memo: row.get(6)?,
                        at_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
                    },
                })
            })
            .optional()
    })
    .map_err(sql_error)
}

/// Whether a recorded transfer is the same one as a request (time excepted: a retry is later).
fn same_transfer(recorded: &TransferRequest, request: &TransferRequest) -> bool {
    recorded.from_account == request.from_account
        && recorded.to_account == request.to_account
        && recorded.amount_minor == request.amount_minor
        && recorded.currency == request.currency
        && recorded.memo == request.memo
}

impl Constellation {
    /// Creates an account if it does not exist. An existing one must have the same kind and currency.
    pub fn ensure_account(
        &self,
        account_id: &str,
        kind: AccountKind,
        currency: &str,
        created_at_ms: u64,
    ) -> Result<Account, StoreError> {
        self.write(|tx| ensure_account_in(tx, account_id, kind, currency, created_at_ms)).map_err(|e| self.with_path(e))
    }

    /// Creates the accounts that do not exist yet and applies the transfer, all in one
    /// transaction: what a rail step needs, at the cost of one commit.
    pub fn transfer_ensuring(
        &self,
        accounts: &[(&str, AccountKind)],
        request: &TransferRequest,
    ) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
        self.write(|tx| transfer_ensuring_in(tx, accounts, request)).map_err(|e| self.with_path(e))
    }

    /// Applies a transfer exactly once: debit and credit in one transaction, refused (nothing
    /// moved) if the source would go negative, the currencies differ, or the idempotency key was
    /// used for a different transfer. A retry of an applied transfer returns `AlreadyApplied`.
    pub fn transfer(&self, request: &TransferRequest) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
        // Refusals happen before anything is written; a store error rolls the transaction back.
        self.write(|tx| match apply_transfer(tx, request) {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(LedgerOrStore::Ledger(error)) => Ok(Err(error)),
            Err(LedgerOrStore::Store(error)) => Err(error),
        })
        .map_err(|e| self.with_path(e))
    }

    /// The transfer recorded under an idempotency key, if any.
    pub fn transfer_by_key(&self, idempotency_key: &str) -> Result<Option<Transfer>, StoreError> {
        self.read(|tx| read_transfer(tx, idempotency_key)).map_err(|e| self.with_path(e))
    }

    /// Every account, by id.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|tx| {
            let ids: Vec<String> = {
                let mut statement =
                    tx.prepare("SELECT account_id FROM ledger_accounts ORDER BY account_id").map_err(sql_error)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(sql_error)?;
                rows.collect::<Result<_, _>>().map_err(sql_error)?
            };
            let mut accounts = Vec::with_capacity(ids.len());
            for id in ids {
                accounts.extend(read_account(tx, &id)?);
            }
            Ok(accounts)
        })
        .map_err(|e| self.with_path(e))
    }

    /// Checks the ledger's invariants: every currency sums to zero, no account that must not be
    /// negative is, and every balance equals the sum of its transfers.
    pub fn check_ledger(&self) -> Result<LedgerCheck, StoreError> {
        self.read(|tx| {
            let query = |sql: &str| -> Result<Vec<(String, i64)>, StoreError> {
                let mut statement = tx.prepare(sql).map_err(sql_error)?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).map_err(sql_error)?;
                rows.collect::<Result<_, _>>().map_err(sql_error)
            };
            let sums_by_currency =
                query("SELECT currency, sum(balance_minor) FROM ledger_accounts GROUP BY currency ORDER BY currency")?;
            let negative_accounts = query(
                "SELECT account_id, balance_minor FROM ledger_accounts WHERE kind <> 'external' AND balance_minor < 0",
            )?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
            let balance_mismatches = query(
                "SELECT a.account_id, a.balance_minor FROM ledger_accounts a
                 WHERE a.balance_minor <>
                   coalesce((SELECT sum(amount_minor) FROM ledger_transfers WHERE to_account = a.account_id), 0)
                 - coalesce((SELECT sum(amount_minor) FROM ledger_transfers WHERE from_account = a.account_id), 0)",
            )?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
            Ok(LedgerCheck { sums_by_currency, negative_accounts, balance_mismatches })
        })
        .map_err(|e| self.with_path(e))
    }
}

/// A refusal (nothing written) or a store failure (the transaction rolls back).
/// The ledger inside a write transaction that also records something else (a session's
/// events): its transfers commit or roll back together with that record.
#[derive(Clone, Copy)]
pub struct LedgerTx<'t> {
    tx: &'t Transaction<'t>,
}

impl std::fmt::Debug for LedgerTx<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("LedgerTx")
    }
}

impl<'t> LedgerTx<'t> {
    pub(crate) fn new(tx: &'t Transaction<'t>) -> Self {
        Self { tx }
    }

    pub(crate) fn tx(&self) -> &'t Transaction<'t> {
        self.tx
    }

    /// [`Constellation::transfer_ensuring`], inside this transaction.
    pub fn transfer_ensuring(
        &self,
        accounts: &[(&str, AccountKind)],
        request: &TransferRequest,
    ) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
        transfer_ensuring_in(self.tx, accounts, request)
    }

    /// The balance of an account in minor units, inside this transaction; `None` if the
    /// account does not exist.
    pub fn balance(&self, account_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(read_account(self.tx, account_id)?.map(|account| account.balance_minor))
    }

    /// [`Constellation::transfer_by_key`], inside this transaction (it sees the transaction's
    /// own transfers).
    pub fn transfer_by_key(&self, idempotency_key: &str) -> Result<Option<Transfer>, StoreError> {
        read_transfer(self.tx, idempotency_key)
    }
}

fn transfer_ensuring_in(
    tx: &Transaction<'_>,
    accounts: &[(&str, AccountKind)],
    request: &TransferRequest,
) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
    for (account_id, kind) in accounts {
        ensure_account_in(tx, account_id, *kind, &request.currency, request.at_ms)?;
    }
    match apply_transfer(tx, request) {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(LedgerOrStore::Ledger(error)) => Ok(Err(error)),
        Err(LedgerOrStore::Store(error)) => Err(error),
    }
}

enum LedgerOrStore {
    Ledger(LedgerError),
    Store(StoreError),
}

impl From<StoreError> for LedgerOrStore {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

fn apply_transfer(tx: &Transaction<'_>, request: &TransferRequest) -> Result<TransferOutcome, LedgerOrStore> {
    let refuse = |error: LedgerError| Err(LedgerOrStore::Ledger(error));
    if request.amount_minor == 0 || request.from_account == request.to_account || request.idempotency_key.is_empty() {
        return refuse(LedgerError::Invalid(
            "a transfer moves a positive amount between two accounts under a key".into(),
        ));
    }
    if let Some(recorded) = read_transfer(tx, &request.idempotency_key)? {
        return if same_transfer(&recorded.request, request) {
            Ok(TransferOutcome::AlreadyApplied(recorded))
        } else {
            refuse(LedgerError::IdempotencyConflict(request.idempotency_key.clone()))
        };
    }
    let Some(from) = read_account(tx, &request.from_account)? else {
        return refuse(LedgerError::UnknownAccount(request.from_account.clone()));
    };
    let Some(to) = read_account(tx, &request.to_account)? else {
        return refuse(LedgerError::UnknownAccount(request.to_account.clone()));
    };
    if from.currency != request.currency || to.currency != request.currency {
        return refuse(LedgerError::CurrencyMismatch {
            detail: format!(
                "{} {} to {} {} in {}",
                from.account_id, from.currency, to.account_id, to.currency, request.currency
            ),
        });
    }
    let amount = to_i64(request.amount_minor)?;
    if from.kind != AccountKind::External && from.balance_minor < amount {
        return refuse(LedgerError::InsufficientFunds {
            account: from.account_id,
            balance_minor: from.balance_minor,
            needed_minor: request.amount_minor,
        });
    }
    let at_ms = to_i64(request.at_ms)?;
    let store = |e| LedgerOrStore::Store(sql_error(e));
    let mut update = tx
        .prepare_cached("UPDATE ledger_accounts SET balance_minor = balance_minor + ?2 WHERE account_id = ?1")
        .map_err(store)?;
    update.execute(params![request.from_account, -amount]).map_err(store)?;
    update.execute(params![request.to_account, amount]).map_err(store)?;
    tx.prepare_cached(
        "INSERT INTO ledger_transfers (idempotency_key, from_account, to_account, amount_minor, currency, memo, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            request.idempotency_key,
            request.from_account,
            request.to_account,
            amount,
            request.currency,
            request.memo,
            at_ms
        ])
    })
    .map_err(store)?;
    Ok(TransferOutcome::Applied(Transfer {
        transfer_id: u64::try_from(tx.last_insert_rowid()).unwrap_or(0),
        request: request.clone(),
    }))
}
