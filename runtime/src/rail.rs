//! Payment rails. The runtime knows rails only through [`Rail`]: prepare (hold the money),
//! commit (pay the provider), abort (release the hold) and refund (pay back after commit), each
//! idempotent under a key derived from the payment id, each returning evidence the caller checks.
//!
//! [`LedgerRail`] settles on the constellation's own double-entry ledger: prepare moves the amount
//! from the payer's wallet to an escrow account for the payment, commit from escrow to the
//! provider, abort from escrow back to the wallet, refund from the provider back to the wallet.
//! The payment's state is derived from the ledger's transfers; nothing lives only in memory.

use std::sync::Arc;

use pactum_memory::{
    AccountKind, Constellation, LedgerError, LedgerTx, StoreError, Transfer, TransferOutcome, TransferRequest,
};

use crate::failure::FailureCode;
use crate::money::Money;
use crate::rails::{EvidenceReason, RailEvidenceError};

/// A payment between two agents.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PaymentRequest {
    /// Unique per payment (a session's payment id); every idempotency key derives from it.
    pub payment_id: String,
    pub payer: String,
    pub payee: String,
    pub amount: Money,
}

/// One coalition member's transfer in a step: (member, amount in minor units, rail reference).
pub type PartTransfer = (String, u64, String);
/// Why a coalition's step failed, and the member whose part failed when it is one member's.
pub type PartFailure = (RailError, Option<String>);

/// A step of a payment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RailPhase {
    Prepare,
    Commit,
    Abort,
    Refund,
}

impl RailPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Commit => "commit",
            Self::Abort => "abort",
            Self::Refund => "refund",
        }
    }
}

/// What a rail returns for a completed step: enough for the transcript to record and for anyone
/// to check against the rail later.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RailEvidence {
    pub rail: &'static str,
    pub phase: RailPhase,
    pub payment_id: String,
    /// The rail's own reference (for the ledger, the transfer id).
    pub reference: String,
    pub amount_minor: u64,
    pub currency: &'static str,
    /// Whether this call moved money (false when a retry found the step already done).
    pub applied_now: bool,
}

/// Why a rail step failed.
#[derive(Debug, thiserror::Error)]
pub enum RailError {
    #[error("insufficient funds: {0}")]
    InsufficientFunds(String),
    #[error("refused: {0}")]
    Refused(String),
    /// The rail's evidence did not check out, or there was none; the step is treated as failed
    /// (fail closed). The error's reason names the rule that failed.
    #[error("{0}")]
    EvidenceInvalid(RailEvidenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RailError {
    /// Why the evidence was refused, for [`RailError::EvidenceInvalid`].
    pub fn evidence_reason(&self) -> Option<EvidenceReason> {
        match self {
            Self::EvidenceInvalid(error) => Some(error.reason()),
            _ => None,
        }
    }

    /// The failure code a negotiation records for this error.
    pub fn failure_code(&self, phase: RailPhase) -> FailureCode {
        match (self, phase) {
            (Self::InsufficientFunds(_), _) => FailureCode::InsufficientFunds,
            (Self::EvidenceInvalid(_), _) => FailureCode::RailEvidenceInvalid,
            (_, RailPhase::Prepare) => FailureCode::SettlementPrepareFailed,
            (_, _) => FailureCode::SettlementCommitFailed,
        }
    }
}

/// A payment rail. Every method is idempotent: calling it again after success (a retry after a
/// crash) returns the same evidence without moving money again.
pub trait Rail {
    /// A stable id recorded in transcripts (`ledger`).
    fn id(&self) -> &'static str;
    fn prepare(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError>;
    fn commit(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError>;
    fn abort(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError>;
    fn refund(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError>;
}

/// Account ids on the ledger. An account holds one currency, so agents' accounts are per currency.
pub fn wallet_account(agent_id: &str, currency: &str) -> String {
    format!("wallet:{agent_id}:{currency}")
}

pub fn provider_account(agent_id: &str, currency: &str) -> String {
    format!("provider:{agent_id}:{currency}")
}

pub fn escrow_account(payment_id: &str) -> String {
    format!("escrow:{payment_id}")
}

pub fn external_account(currency: &str) -> String {
    format!("external:{currency}")
}

/// Funds `agent_id`'s wallet once from outside (idempotent under `funding_key`).
pub fn fund_wallet(
    db: &Constellation,
    agent_id: &str,
    amount: Money,
    funding_key: &str,
    at_ms: u64,
) -> Result<TransferOutcome, RailError> {
    let currency = amount.currency().code();
    let (external, wallet) = (external_account(currency), wallet_account(agent_id, currency));
    let request = TransferRequest {
        idempotency_key: funding_key.to_owned(),
        from_account: external.clone(),
        to_account: wallet.clone(),
        amount_minor: amount.amount_minor(),
        currency: currency.to_owned(),
        memo: format!("funding {agent_id}"),
        at_ms,
    };
    db.transfer_ensuring(&[(&external, AccountKind::External), (&wallet, AccountKind::Wallet)], &request)?
        .map_err(|error| RailError::Refused(error.to_string()))
}

/// Where the ledger rail reads and moves money: the constellation (each step its own
/// transaction) or a transaction that also records the session's events.
trait Ledger {
    fn transfer_ensuring(
        &self,
        accounts: &[(&str, AccountKind)],
        request: &TransferRequest,
    ) -> Result<Result<TransferOutcome, LedgerError>, StoreError>;
    fn transfer_by_key(&self, idempotency_key: &str) -> Result<Option<Transfer>, StoreError>;
}

impl Ledger for Constellation {
    fn transfer_ensuring(
        &self,
        accounts: &[(&str, AccountKind)],
        request: &TransferRequest,
    ) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
        Constellation::transfer_ensuring(self, accounts, request)
    }

    fn transfer_by_key(&self, idempotency_key: &str) -> Result<Option<Transfer>, StoreError> {
        Constellation::transfer_by_key(self, idempotency_key)
    }
}

impl Ledger for LedgerTx<'_> {
    fn transfer_ensuring(
        &self,
        accounts: &[(&str, AccountKind)],
        request: &TransferRequest,
    ) -> Result<Result<TransferOutcome, LedgerError>, StoreError> {
        LedgerTx::transfer_ensuring(self, accounts, request)
    }

    fn transfer_by_key(&self, idempotency_key: &str) -> Result<Option<Transfer>, StoreError> {
        LedgerTx::transfer_by_key(self, idempotency_key)
    }
}

/// The rail over the constellation's ledger.
#[derive(Clone, Debug)]
pub struct LedgerRail {
    db: Arc<Constellation>,
}

impl LedgerRail {
    pub const ID: &'static str = "ledger";

    pub fn new(db: Arc<Constellation>) -> Self {
        Self { db }
    }

    fn key(request: &PaymentRequest, phase: RailPhase) -> String {
        format!("{}:{}", request.payment_id, phase.as_str())
    }

    fn done(ledger: &dyn Ledger, request: &PaymentRequest, phase: RailPhase) -> Result<bool, RailError> {
        Ok(ledger.transfer_by_key(&Self::key(request, phase))?.is_some())
    }

    /// Applies one step inside `ledger`'s transaction, which also records the session's events
    /// up to the step: the runtime's way of settling on this rail, one commit for both.
    pub fn apply_in(
        &self,
        ledger: &LedgerTx<'_>,
        phase: RailPhase,
        request: &PaymentRequest,
        at_ms: u64,
    ) -> Result<RailEvidence, RailError> {
        Self::apply(ledger, phase, request, at_ms)
    }

    /// A coalition's prepare or abort inside `ledger`'s transaction: one transfer per member's
    /// part, between the member's wallet and the payment's one escrow, under the key
    /// `<payment_id>:<member>:<phase>` (so a retry after a crash finds each one done). A prepare
    /// first checks every member can pay its part and holds nothing if one cannot
    /// ([`RailError::InsufficientFunds`], with the member); the commit is the ordinary one, escrow
    /// to provider for the whole amount. Returns the step's evidence (the reference of the first
    /// part) and each part's `(member, amount, reference)`.
    pub fn apply_parts_in(
        &self,
        ledger: &LedgerTx<'_>,
        phase: RailPhase,
        request: &PaymentRequest,
        parts: &[(String, u64)],
        at_ms: u64,
    ) -> Result<(RailEvidence, Vec<PartTransfer>), PartFailure> {
        let currency = request.amount.currency();
        let total: u128 = parts.iter().map(|(_, part)| u128::from(*part)).sum();
        if !matches!(phase, RailPhase::Prepare | RailPhase::Abort)
            || parts.is_empty()
            || total != u128::from(request.amount.amount_minor())
        {
            return Err((
                RailError::Refused(format!("{} of payment {} is not split", phase.as_str(), request.payment_id)),
                None,
            ));
        }
        let part_request = |member: &str, amount_minor: u64| -> Result<PaymentRequest, RailError> {
            Ok(PaymentRequest {
                payment_id: format!("{}:{member}", request.payment_id),
                payer: member.to_owned(),
                payee: request.payee.clone(),
                amount: Money::from_minor(amount_minor, currency).map_err(|e| RailError::Refused(e.to_string()))?,
            })
        };
        if phase == RailPhase::Prepare {
            // All or none: every part not held yet must be payable before any is held.
            for (member, amount_minor) in parts {
                let part = part_request(member, *amount_minor).map_err(|e| (e, None))?;
                if Self::done(ledger, &part, phase).map_err(|e| (e, None))? {
                    continue;
                }
                let wallet = wallet_account(member, currency.code());
                let balance = ledger.balance(&wallet).map_err(|e| (e.into(), None))?.unwrap_or(0);
                if u64::try_from(balance).unwrap_or(0) < *amount_minor {
                    let error = RailError::InsufficientFunds(format!(
                        "coalition member {member}: {wallet} cannot pay its part {}",
                        part.amount
                    ));
                    return Err((error, Some(member.clone())));
                }
            }
        }
        let escrow = (escrow_account(&request.payment_id), AccountKind::Escrow);
        let mut evidence = Vec::with_capacity(parts.len());
        let mut applied_now = false;
        for (member, amount_minor) in parts {
            let part = part_request(member, *amount_minor).map_err(|e| (e, None))?;
            // The escrow is shared: a part never held must not take another member's money.
            if phase == RailPhase::Abort && !Self::done(ledger, &part, RailPhase::Prepare).map_err(|e| (e, None))? {
                let error =
                    RailError::Refused(format!("{member}'s part of payment {} was not held", request.payment_id));
                return Err((error, Some(member.clone())));
            }
            let wallet = (wallet_account(member, currency.code()), AccountKind::Wallet);
            let (from, to) =
                if phase == RailPhase::Prepare { (wallet, escrow.clone()) } else { (escrow.clone(), wallet) };
            let step = Self::step(ledger, &part, phase, from, to, at_ms).map_err(|error| match error {
                // Once a part has moved, a refusal must not leave the others moved: the store
                // error rolls the whole write back.
                RailError::Store(_) => (error, Some(member.clone())),
                refused if !evidence.is_empty() => (
                    RailError::Store(pactum_memory::StoreError::Corrupt {
                        detail: format!(
                            "{member}'s part of {} was refused after others moved: {refused}",
                            request.payment_id
                        ),
                    }),
                    Some(member.clone()),
                ),
                refused => (refused, Some(member.clone())),
            })?;
            applied_now |= step.applied_now;
            evidence.push((member.clone(), *amount_minor, step.reference));
        }
        let reference = evidence.first().map(|(_, _, reference)| reference.clone()).unwrap_or_default();
        let applied = RailEvidence {
            rail: Self::ID,
            phase,
            payment_id: request.payment_id.clone(),
            reference,
            amount_minor: request.amount.amount_minor(),
            currency: currency.code(),
            applied_now,
        };
        Ok((applied, evidence))
    }

    /// Whether the step `phase` of the payment (or any member's part of it, for a coalition's
    /// prepare or abort split in `parts`) is on the ledger already, read in `ledger`'s
    /// transaction.
    pub fn step_done_in(
        &self,
        ledger: &LedgerTx<'_>,
        phase: RailPhase,
        request: &PaymentRequest,
        parts: Option<&[(String, u64)]>,
    ) -> Result<bool, RailError> {
        match parts {
            Some(parts) if phase != RailPhase::Commit => {
                for (member, _) in parts {
                    if ledger.transfer_by_key(&Self::part_key(&request.payment_id, member, phase))?.is_some() {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            _ => Self::done(ledger, request, phase),
        }
    }

    /// The idempotency key of a coalition member's part of a step.
    pub fn part_key(payment_id: &str, member: &str, phase: RailPhase) -> String {
        format!("{payment_id}:{member}:{}", phase.as_str())
    }

    fn apply(
        ledger: &dyn Ledger,
        phase: RailPhase,
        request: &PaymentRequest,
        at_ms: u64,
    ) -> Result<RailEvidence, RailError> {
        let currency = request.amount.currency().code();
        let (from, to) = match phase {
            RailPhase::Prepare => {
                if request.payer == request.payee {
                    return Err(RailError::Refused("payer and payee are the same agent".into()));
                }
                (
                    (wallet_account(&request.payer, currency), AccountKind::Wallet),
                    (escrow_account(&request.payment_id), AccountKind::Escrow),
                )
            }
            // Moves the hold to the provider. Escrow holds exactly this payment, so a payment
            // never prepared, or already aborted, has an empty escrow and the transfer is refused.
            RailPhase::Commit => (
                (escrow_account(&request.payment_id), AccountKind::Escrow),
                (provider_account(&request.payee, currency), AccountKind::Provider),
            ),
            // Returns the hold to the payer; refused (by the empty escrow) after a commit.
            RailPhase::Abort => (
                (escrow_account(&request.payment_id), AccountKind::Escrow),
                (wallet_account(&request.payer, currency), AccountKind::Wallet),
            ),
            RailPhase::Refund => {
                if !Self::done(ledger, request, RailPhase::Commit)? {
                    return Err(RailError::Refused(format!("payment {} was not committed", request.payment_id)));
                }
                (
                    (provider_account(&request.payee, currency), AccountKind::Provider),
                    (wallet_account(&request.payer, currency), AccountKind::Wallet),
                )
            }
        };
        Self::step(ledger, request, phase, from, to, at_ms)
    }

    /// Applies one step's transfer and checks that the transfer the ledger holds under the
    /// step's key is exactly the one asked for (fail closed: anything else is invalid evidence).
    /// A refused transfer is explained by `diagnose`, which may look at the payment's other steps.
    fn step(
        ledger: &dyn Ledger,
        request: &PaymentRequest,
        phase: RailPhase,
        (from_account, from_kind): (String, AccountKind),
        (to_account, to_kind): (String, AccountKind),
        at_ms: u64,
    ) -> Result<RailEvidence, RailError> {
        let currency = request.amount.currency().code();
        let transfer = TransferRequest {
            idempotency_key: Self::key(request, phase),
            from_account,
            to_account,
            amount_minor: request.amount.amount_minor(),
            currency: currency.to_owned(),
            memo: format!("{} {}", phase.as_str(), request.payment_id),
            at_ms,
        };
        let accounts = [(transfer.from_account.as_str(), from_kind), (transfer.to_account.as_str(), to_kind)];
        let outcome = match ledger.transfer_ensuring(&accounts, &transfer)? {
            Ok(outcome) => outcome,
            Err(LedgerError::InsufficientFunds { .. }) if phase == RailPhase::Prepare => {
                return Err(RailError::InsufficientFunds(format!(
                    "{} cannot pay {}",
                    transfer.from_account, request.amount
                )));
            }
            Err(error) => {
                return Err(Self::diagnose(ledger, request, phase)?.unwrap_or(RailError::Refused(error.to_string())));
            }
        };
        let recorded = outcome.transfer();
        let matches = recorded.request.idempotency_key == transfer.idempotency_key
            && recorded.request.from_account == transfer.from_account
            && recorded.request.to_account == transfer.to_account
            && recorded.request.amount_minor == transfer.amount_minor
            && recorded.request.currency == transfer.currency
            && recorded.transfer_id > 0;
        if !matches {
            return Err(RailError::EvidenceInvalid(RailEvidenceError::new(
                EvidenceReason::RecordMismatch,
                format!("transfer {} on record differs from the one requested", transfer.idempotency_key),
            )));
        }
        Ok(RailEvidence {
            rail: Self::ID,
            phase,
            payment_id: request.payment_id.clone(),
            reference: format!("transfer:{}", recorded.transfer_id),
            amount_minor: recorded.request.amount_minor,
            currency,
            applied_now: matches!(outcome, TransferOutcome::Applied(_)),
        })
    }

    /// Why a step after prepare cannot run, in terms of the payment's other steps.
    /// Why a step after prepare cannot run, in terms of the payment's other steps. A database
    /// error reading them is passed up (inside a session's write it must roll everything back).
    fn diagnose(
        ledger: &dyn Ledger,
        request: &PaymentRequest,
        phase: RailPhase,
    ) -> Result<Option<RailError>, RailError> {
        let done = |step: RailPhase| Self::done(ledger, request, step);
        let id = &request.payment_id;
        let refused = |why: String| Ok(Some(RailError::Refused(why)));
        match phase {
            RailPhase::Commit | RailPhase::Abort if !done(RailPhase::Prepare)? => {
                refused(format!("payment {id} was not prepared"))
            }
            RailPhase::Commit if done(RailPhase::Abort)? => refused(format!("payment {id} was aborted")),
            RailPhase::Abort if done(RailPhase::Commit)? => {
                refused(format!("payment {id} was committed; refund it instead"))
            }
            RailPhase::Refund if !done(RailPhase::Commit)? => refused(format!("payment {id} was not committed")),
            _ => Ok(None),
        }
    }
}

impl Rail for LedgerRail {
    fn id(&self) -> &'static str {
        Self::ID
    }

    fn prepare(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        Self::apply(&*self.db, RailPhase::Prepare, request, at_ms)
    }

    fn commit(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        Self::apply(&*self.db, RailPhase::Commit, request, at_ms)
    }

    fn abort(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        Self::apply(&*self.db, RailPhase::Abort, request, at_ms)
    }

    fn refund(&self, request: &PaymentRequest, at_ms: u64) -> Result<RailEvidence, RailError> {
        Self::apply(&*self.db, RailPhase::Refund, request, at_ms)
    }
}
