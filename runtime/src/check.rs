//! `constellation check`: an integrity check of a whole constellation, like `git fsck`. Every
//! transcript is verified against its keys and recorded head, and the ledger's invariants are
//! checked. Each problem is named, so a script can act on it.

use std::sync::Arc;

use pactum_memory::Constellation;

use crate::error::RuntimeError;
use crate::transcripts::{list_streams, verify_stream_with};

/// One problem found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Problem {
    /// What kind of problem: `transcript` or `ledger`.
    pub area: &'static str,
    /// Which transcript or account.
    pub subject: String,
    /// A stable code (a verification reason or a ledger rule).
    pub code: String,
    pub detail: String,
}

/// The outcome of a check.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct CheckReport {
    pub transcripts_checked: u64,
    pub events_checked: u64,
    pub accounts_checked: u64,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every transcript and the ledger.
pub fn check_constellation(db: &Arc<Constellation>) -> Result<CheckReport, RuntimeError> {
    let mut report = CheckReport::default();
    for summary in list_streams(db)? {
        let id = summary.stream.as_str().to_owned();
        report.transcripts_checked += 1;
        match verify_stream_with(db, &id, Default::default()) {
            Ok(verification) => {
                report.events_checked += verification.report.events_verified;
                if let Some(broken) = verification.report.first_break {
                    report.problems.push(Problem {
                        area: "transcript",
                        subject: id,
                        code: broken.reason.code().to_owned(),
                        detail: broken.to_string(),
                    });
                }
            }
            Err(error) => report.problems.push(Problem {
                area: "transcript",
                subject: id,
                code: error.code().to_owned(),
                detail: error.to_string(),
            }),
        }
    }
    let accounts = db.accounts()?;
    report.accounts_checked = accounts.len() as u64;
    let ledger = db.check_ledger()?;
    let mut ledger_problem = |subject: &str, code: &str, detail: String| {
        report.problems.push(Problem { area: "ledger", subject: subject.to_owned(), code: code.to_owned(), detail });
    };
    for (currency, sum) in ledger.sums_by_currency.iter().filter(|(_, sum)| *sum != 0) {
        ledger_problem(
            currency,
            "LEDGER_UNBALANCED",
            format!("balances in {currency} sum to {sum} minor units, not 0"),
        );
    }
    for account in &ledger.negative_accounts {
        ledger_problem(account, "LEDGER_NEGATIVE_BALANCE", format!("{account} is below zero"));
    }
    for account in &ledger.balance_mismatches {
        ledger_problem(
            account,
            "LEDGER_BALANCE_MISMATCH",
            format!("{account}'s balance is not the sum of its transfers"),
        );
    }
    Ok(report)
}
