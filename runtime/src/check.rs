//! `constellation check`: an integrity check of a whole constellation, like `git fsck`. Every
//! transcript is verified against its keys and recorded head, and the ledger's invariants are
//! checked. Each problem is named, so a script can act on it.

use std::sync::Arc;

use pactum_memory::Constellation;

use crate::error::RuntimeError;
use crate::rail::RailPhase;
use crate::session::model::{Phase, SESSION_STREAM_PREFIX, SessionState};
use crate::session::replay::replay_session;
use crate::transcripts::{list_streams, verify_stream_with};

/// One problem found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Problem {
    /// What kind of problem: `transcript`, `session`, `memory` or `ledger`.
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
    pub sessions_checked: u64,
    pub memory_blocks_checked: u64,
    pub memory_versions_checked: u64,
    /// Sessions not ended whose next step is known: the next command that opens the
    /// constellation resumes them (or they are being driven right now).
    pub sessions_resumable: Vec<String>,
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
    let broken: Vec<String> = report.problems.iter().map(|p| p.subject.clone()).collect();
    let balances: std::collections::HashMap<String, i64> =
        db.accounts()?.into_iter().map(|a| (a.account_id, a.balance_minor)).collect();
    let spends: std::collections::HashMap<String, pactum_memory::SpendRow> =
        db.spends()?.into_iter().map(|spend| (spend.payment_id.clone(), spend)).collect();
    // Sessions linked by a delegation, checked against each other once all are replayed.
    let mut linked: std::collections::HashMap<String, SessionState> = std::collections::HashMap::new();
    for row in db.session_streams(SESSION_STREAM_PREFIX)? {
        if broken.contains(&row.stream_id) || row.event_count == 0 {
            continue;
        }
        let session_id = row.stream_id[SESSION_STREAM_PREFIX.len()..].to_owned();
        report.sessions_checked += 1;
        let mut session_problem = |code: &str, detail: String| {
            report.problems.push(Problem {
                area: "session",
                subject: session_id.clone(),
                code: code.to_owned(),
                detail,
            });
        };
        let replay = match replay_session(db, &session_id) {
            Ok(replay) => replay,
            Err(error) => {
                session_problem(error.code(), error.to_string());
                continue;
            }
        };
        for divergence in &replay.problems {
            session_problem(divergence.code, format!("event {}: {}", divergence.seq, divergence.problem));
        }
        for (code, detail) in settlement_problems(db, &balances, &replay.state)? {
            session_problem(code, detail);
        }
        for (code, detail) in spend_problems(&spends, &replay.state) {
            session_problem(code, detail);
        }
        if replay.state.delegation().is_some() || replay.state.parent_session().is_some() {
            linked.insert(session_id.clone(), replay.state.clone());
        }
        if !replay.state.phase.is_terminal() {
            if replay.state.effects().is_empty() {
                session_problem(
                    "SESSION_STUCK",
                    format!("the session is {} and has no next step", replay.state.phase.as_str()),
                );
            } else {
                report.sessions_resumable.push(session_id.clone());
            }
        }
    }
    for (session_id, state) in &linked {
        if let Some(detail) = delegation_problem(session_id, state, &linked) {
            report.problems.push(Problem {
                area: "session",
                subject: session_id.clone(),
                code: "DELEGATION_MISMATCH".into(),
                detail,
            });
        }
    }
    for (owner, label) in db.all_blocks()? {
        report.memory_blocks_checked += 1;
        match db.verify_block(&owner, &label) {
            Ok(versions) => report.memory_versions_checked += versions,
            Err(error) => report.problems.push(Problem {
                area: "memory",
                subject: format!("{owner}/{label}"),
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

/// What spending constraints count must agree with the transcript: a spend is a payment the
/// transcript records as held, by its payer, released exactly when the transcript records the
/// hold given back. (A payment held while its payer had no constraint has no spend.)
fn spend_problems(
    spends: &std::collections::HashMap<String, pactum_memory::SpendRow>,
    state: &SessionState,
) -> Vec<(&'static str, String)> {
    let Some(request) = state.payment_request() else { return Vec::new() };
    let spend = spends.get(&request.payment_id);
    let problem = match (state.prepared.is_some(), spend) {
        (true, Some(spend))
            if spend.agent_id != request.payer
                || spend.amount_minor != request.amount.amount_minor()
                || spend.currency != request.amount.currency().code() =>
        {
            Some(format!("the spend of payment {} is not the payment the transcript records", request.payment_id))
        }
        (true, Some(spend)) if state.rail_aborted.is_some() != spend.released_at_ms.is_some() => Some(format!(
            "the spend of payment {} is {} but the transcript says the hold was {}",
            request.payment_id,
            if spend.released_at_ms.is_some() { "released" } else { "counted" },
            if state.rail_aborted.is_some() { "released" } else { "kept" }
        )),
        (false, Some(_)) if state.phase.is_terminal() => {
            Some(format!("payment {} is counted as a spend but was never held", request.payment_id))
        }
        _ => None,
    };
    problem.map(|detail| ("SPEND_MISMATCH", detail)).into_iter().collect()
}

/// The ledger must hold exactly the transfers a session's transcript records: a recorded rail
/// step whose transfer is missing or different, or a completed or failed session that left money
/// in escrow, is a problem.
fn settlement_problems(
    db: &Constellation,
    balances: &std::collections::HashMap<String, i64>,
    state: &SessionState,
) -> Result<Vec<(&'static str, String)>, RuntimeError> {
    let mut problems = Vec::new();
    let Some(request) = state.payment_request() else { return Ok(problems) };
    let recorded = [
        (RailPhase::Prepare, state.prepared.as_ref()),
        (RailPhase::Commit, state.rail_committed.as_ref()),
        (RailPhase::Abort, state.rail_aborted.as_ref()),
    ];
    for (phase, evidence) in recorded {
        if let Some(parts) = state.coalition_parts().filter(|_| phase != RailPhase::Commit) {
            problems.extend(part_problems(db, state, &request.payment_id, phase, evidence, &parts)?);
            continue;
        }
        let key = format!("{}:{}", request.payment_id, phase.as_str());
        let transfer = db.transfer_by_key(&key)?;
        match (evidence, transfer) {
            (Some(evidence), Some(transfer)) => {
                let reference = format!("transfer:{}", transfer.transfer_id);
                if evidence.evidence.reference != reference
                    || transfer.request.amount_minor != request.amount.amount_minor()
                {
                    problems.push((
                        "SETTLEMENT_MISMATCH",
                        format!("the transcript's {} evidence does not match ledger transfer {key}", phase.as_str()),
                    ));
                }
            }
            (Some(_), None) => problems.push((
                "SETTLEMENT_MISSING",
                format!("the transcript records a {} the ledger does not have ({key})", phase.as_str()),
            )),
            (None, Some(_)) if state.phase.is_terminal() => problems.push((
                "SETTLEMENT_UNRECORDED",
                format!("the ledger has {key}, which the ended session's transcript does not record"),
            )),
            // A step applied just before a crash is recorded when the session resumes.
            (None, _) => {}
        }
    }
    if matches!(state.phase, Phase::Completed | Phase::Failed) {
        let escrow = balances.get(&crate::rail::escrow_account(&request.payment_id));
        if escrow.is_some_and(|balance| *balance != 0) {
            problems.push(("ESCROW_NOT_EMPTY", format!("payment {} still holds money in escrow", request.payment_id)));
        }
    }
    Ok(problems)
}

/// A coalition's prepare or abort: one ledger transfer per member's part, under
/// `<payment_id>:<member>:<phase>`, each exactly as the transcript records it (or, for a step
/// not recorded yet, none at all once the session has ended).
fn part_problems(
    db: &Constellation,
    state: &SessionState,
    payment_id: &str,
    phase: RailPhase,
    evidence: Option<&crate::session::model::EvidenceRecord>,
    parts: &[(String, u64)],
) -> Result<Vec<(&'static str, String)>, RuntimeError> {
    let mut problems = Vec::new();
    for (index, (member, amount_minor)) in parts.iter().enumerate() {
        let key = crate::rail::LedgerRail::part_key(payment_id, member, phase);
        let transfer = db.transfer_by_key(&key)?;
        match (evidence, transfer) {
            (Some(evidence), Some(transfer)) => {
                let recorded = evidence.evidence.parts.get(index);
                let reference = format!("transfer:{}", transfer.transfer_id);
                let same = recorded.is_some_and(|part| {
                    part.agent_id == *member && part.amount_minor == *amount_minor && part.reference == reference
                }) && transfer.request.amount_minor == *amount_minor;
                if !same {
                    problems.push((
                        "SETTLEMENT_MISMATCH",
                        format!(
                            "the transcript's {} evidence for {member} does not match ledger transfer {key}",
                            phase.as_str()
                        ),
                    ));
                }
            }
            (Some(_), None) => problems.push((
                "SETTLEMENT_MISSING",
                format!("the transcript records a {} the ledger does not have ({key})", phase.as_str()),
            )),
            (None, Some(_)) if state.phase.is_terminal() => problems.push((
                "SETTLEMENT_UNRECORDED",
                format!("the ledger has {key}, which the ended session's transcript does not record"),
            )),
            (None, _) => {}
        }
    }
    Ok(problems)
}

/// A buyer's session with a broker and the broker's purchase must name each other, the recorded
/// cost must be the purchase's price, and the purchase is paid only if the parent was.
fn delegation_problem(
    session_id: &str,
    state: &SessionState,
    linked: &std::collections::HashMap<String, SessionState>,
) -> Option<String> {
    if let Some(delegation) = state.delegation() {
        let Some(child) = linked.get(&delegation.child_session) else {
            return Some(format!(
                "its broker's purchase {} is not a session of this constellation",
                delegation.child_session
            ));
        };
        if child.parent_session() != Some(session_id) || child.buyer_id() != Some(delegation.broker.as_str()) {
            return Some(format!(
                "session {} is not the purchase of broker {} for it",
                delegation.child_session, delegation.broker
            ));
        }
        if child.agreement.as_ref().map(|a| &a.price) != Some(&delegation.cost) {
            return Some(format!("the recorded cost differs from session {}'s price", delegation.child_session));
        }
    }
    if let Some(parent) = state.parent_session()
        && state.prepared.is_some()
        && linked.get(parent).is_none_or(|parent| parent.phase.is_terminal() && parent.prepared.is_none())
    {
        return Some(format!("the broker's purchase was paid but session {parent}, which it was for, was not"));
    }
    None
}
