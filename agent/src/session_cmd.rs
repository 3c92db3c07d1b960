//! `pactum session list|show|replay|resume|abort` and `pactum receipt show|verify`.

use std::io::IsTerminal as _;
use std::sync::Arc;

use serde_json::{Value, json};

use pactum_memory::Constellation;
use pactum_runtime::session::model::{SESSION_STREAM_PREFIX, SessionState, kind};
use pactum_runtime::session::receipt::{RECEIPT_BYTES_MAX, verify_receipt, verify_receipt_in_session};
use pactum_runtime::session::replay::replay_session;
use pactum_runtime::session::shell::{Approver, DeclineAll, check_session_id, read_session_state};

use crate::cli::{Context, ReceiptCommand, SessionCommand};
use crate::clock::{SystemClock, format_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};
use crate::negotiate_cmd::{recover, result_json, runtime, summary};
use crate::session_view::describe;

fn existing(context: &Context) -> Result<Arc<Constellation>, Failure> {
    context
        .open_existing()?
        .map_err(|path| Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display())))
}

fn price_text(state: &SessionState) -> String {
    state
        .agreement
        .as_ref()
        .map(|a| &a.price)
        .or(state.selection.as_ref().map(|s| &s.price))
        .and_then(|p| p.money().ok())
        .map_or_else(|| "-".to_owned(), |m| m.to_string())
}

pub fn run(context: &Context, command: SessionCommand) -> Result<u8, Failure> {
    match command {
        SessionCommand::List { json } => list(context, json),
        SessionCommand::Show { id, json } => show(context, &id, json),
        SessionCommand::Replay { id, json } => replay(context, &id, json),
        command @ (SessionCommand::Resume { .. } | SessionCommand::Abort { .. }) => {
            drive(context, command).map(|(code, _)| code)
        }
    }
}

/// `session resume` and `session abort`: drives the session and returns its final state.
pub fn drive(context: &Context, command: SessionCommand) -> Result<(u8, Option<SessionState>), Failure> {
    match command {
        SessionCommand::Resume { id, json } => {
            check_session_id(&id)?;
            let runtime = runtime(context, Arc::new(SystemClock))?;
            let mut approver: Box<dyn Approver> = if std::io::stdin().is_terminal() {
                Box::new(crate::negotiate_cmd::TerminalApprover)
            } else {
                Box::new(DeclineAll)
            };
            let state =
                runtime.resume_session(&id, approver.as_mut(), &mut crate::negotiate_cmd::Printer::new(json))?;
            Ok((finish(&state, json)?, Some(state)))
        }
        SessionCommand::Abort { id, reason, json } => {
            check_session_id(&id)?;
            let runtime = runtime(context, Arc::new(SystemClock))?;
            recover(&runtime)?;
            let state = runtime.abort_session(&id, &reason, &mut crate::negotiate_cmd::Printer::new(json))?;
            Ok((finish(&state, json)?, Some(state)))
        }
        other => run(context, other).map(|code| (code, None)),
    }
}

fn finish(state: &SessionState, json: bool) -> Result<u8, Failure> {
    if json {
        print_json(&result_json(state));
    } else {
        print_lines(&[summary(state)]);
    }
    Ok(EXIT_OK)
}

fn list(context: &Context, json: bool) -> Result<u8, Failure> {
    let Ok(db) = context.open_existing()? else {
        if json {
            print_json(&Value::Array(Vec::new()));
        } else {
            print_lines(&["no sessions yet (start one with pactum negotiate)".to_owned()]);
        }
        return Ok(EXIT_OK);
    };
    let rows = db.session_streams(SESSION_STREAM_PREFIX)?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let session_id = &row.stream_id[SESSION_STREAM_PREFIX.len()..];
        let state = read_session_state(&db, session_id)?;
        let terminal = matches!(row.last_kind.as_deref(), Some(kind::COMPLETED | kind::FAILED));
        entries.push((session_id.to_owned(), state, row.owner.clone(), terminal, row.created_at_ms));
    }
    if json {
        let list: Vec<Value> = entries
            .iter()
            .map(|(id, state, owner, _, created)| {
                json!({
                    "session_id": id,
                    "transcript_id": format!("{SESSION_STREAM_PREFIX}{id}"),
                    "phase": state.phase.as_str(),
                    "intent_type": state.created.as_ref().and_then(|c| c.intent.get("intent_type").cloned()),
                    "provider": state.agreement.as_ref().map(|a| a.provider.clone()),
                    "price": state.agreement.as_ref().map(|a| json!({"amount_minor": a.price.amount_minor, "currency": a.price.currency})),
                    "failure_code": state.failure.as_ref().map(|f| f.code.clone()),
                    "rounds": state.round,
                    "events": state.next_seq,
                    "owner": owner,
                    "created_at_ms": created,
                })
            })
            .collect();
        print_json(&Value::Array(list));
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        print_lines(&["no sessions yet (start one with pactum negotiate)".to_owned()]);
        return Ok(EXIT_OK);
    }
    let mut lines = vec![format!(
        "{:<18}  {:<11}  {:<18}  {:<16}  {:>14}  {:>6}  {:<24}  OUTCOME",
        "SESSION", "PHASE", "INTENT", "PROVIDER", "PRICE", "ROUNDS", "STARTED"
    )];
    for (id, state, _, _, created) in &entries {
        let intent = state
            .created
            .as_ref()
            .and_then(|c| c.intent.get("intent_type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let provider = state.agreement.as_ref().map_or("-", |a| a.provider.as_str());
        let outcome = match (&state.failure, &state.receipt) {
            (Some(failure), _) => format!("{} {}", failure.code, failure.name),
            (None, Some(_)) => format!("receipt rcpt-{id}"),
            _ => "in progress".to_owned(),
        };
        lines.push(format!(
            "{id:<18}  {:<11}  {intent:<18}  {provider:<16}  {:>14}  {:>6}  {:<24}  {outcome}",
            state.phase.as_str(),
            price_text(state),
            state.round,
            format_ms(*created)
        ));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn show(context: &Context, session_id: &str, json: bool) -> Result<u8, Failure> {
    check_session_id(session_id)?;
    let db = existing(context)?;
    let state = read_session_state(&db, session_id)?;
    let (_, events) = pactum_runtime::stream_events(&db, &format!("{SESSION_STREAM_PREFIX}{session_id}"))?;
    if json {
        let mut document = result_json(&state);
        document["events"] = Value::Array(
            events
                .iter()
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "kind": e.kind.as_str(),
                        "at_ms": e.at_ms,
                        "signer": e.signer.as_ref().map(|k| k.as_str()),
                        "hash": e.hash.to_hex(),
                        "body": e.body,
                    })
                })
                .collect(),
        );
        print_json(&document);
        return Ok(EXIT_OK);
    }
    let mut lines = Vec::with_capacity(events.len() + 2);
    for event in &events {
        if let Some(line) = describe(event) {
            lines.push(format!("{:>3}  {}  {line}", event.seq, format_ms(event.at_ms)));
        }
    }
    lines.push(summary(&state));
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn replay(context: &Context, session_id: &str, json: bool) -> Result<u8, Failure> {
    let db = existing(context)?;
    let report = replay_session(&db, session_id)?;
    if json {
        print_json(&json!({
            "session_id": report.session_id,
            "consistent": report.is_consistent(),
            "events": report.events,
            "inputs": report.inputs,
            "events_compared": report.events_compared,
            "checkpoint_seq": report.checkpoint_seq,
            "phase": report.state.phase.as_str(),
            "problems": report.problems.iter().map(|p| json!({
                "seq": p.seq, "problem": p.problem, "expected": p.expected, "found": p.found,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut lines = vec![format!(
            "session {}: {} events, {} inputs re-run, {} recorded events compared with the recomputed ones{}",
            report.session_id,
            report.events,
            report.inputs,
            report.events_compared,
            report.checkpoint_seq.map(|seq| format!(", checkpoint at event {seq} compared")).unwrap_or_default()
        )];
        if report.is_consistent() {
            lines.push(format!(
                "consistent: every recorded decision is the one the runtime makes ({})",
                report.state.phase.as_str()
            ));
        }
        for problem in &report.problems {
            lines.push(format!("DIVERGES at event {}: {}", problem.seq, problem.problem));
            if !problem.expected.is_empty() {
                lines.push(format!("  expected: {}", problem.expected));
                lines.push(format!("  found:    {}", problem.found));
            }
        }
        print_lines(&lines);
    }
    Ok(if report.is_consistent() { EXIT_OK } else { EXIT_INVALID })
}

pub fn run_receipt(context: &Context, command: ReceiptCommand) -> Result<u8, Failure> {
    match command {
        ReceiptCommand::Show { session, json, peac } => {
            check_session_id(&session)?;
            let db = existing(context)?;
            let state = read_session_state(&db, &session)?;
            let receipt = state.receipt.clone().ok_or_else(|| {
                Failure::new(
                    "RECEIPT_NOT_FOUND",
                    format!("session {session} has no receipt: it is {}", state.phase.as_str()),
                )
            })?;
            let verified = verify_receipt_in_session(&state).map_err(pactum_runtime::RuntimeError::from)?;
            if peac {
                return show_peac(&state, &session, json);
            }
            if json {
                print_json(&receipt);
                return Ok(EXIT_OK);
            }
            print_lines(&receipt_lines(
                &receipt,
                &verified,
                "signature valid, and the receipt matches its session's agreement and payment",
            ));
            Ok(EXIT_OK)
        }
        ReceiptCommand::Verify { receipt, jwks, public_key, issuer, json } => {
            let keys = crate::peac_cmd::KeySource::from_options(jwks, public_key);
            let (label, text) = crate::peac_cmd::read_receipt_input(&receipt)?;
            if text.trim_start().starts_with('{') {
                if !matches!(keys, crate::peac_cmd::KeySource::Constellation) || issuer.is_some() {
                    return Err(Failure::new(
                        "USAGE",
                        format!(
                            "{label} is a pactum-receipt/1 JSON receipt: --jwks, --public-key and --issuer apply to PEAC receipts only"
                        ),
                    ));
                }
                verify_json_receipt(&label, &text, json)
            } else {
                crate::peac_cmd::verify(context, &label, text.trim(), &keys, issuer.as_deref(), json)
            }
        }
    }
}

/// `receipt show --peac`: the session's PEAC record, verified against the session.
fn show_peac(state: &pactum_runtime::session::model::SessionState, session: &str, json: bool) -> Result<u8, Failure> {
    let jws = state.receipt_peac.as_deref().ok_or_else(|| {
        Failure::new(
            "RECEIPT_NOT_FOUND",
            format!("session {session} has no PEAC receipt (it was recorded before Pactum issued them)"),
        )
    })?;
    let verified = pactum_runtime::session::receipt::verify_peac_in_session(state, jws)
        .map_err(pactum_runtime::RuntimeError::from)?;
    if json {
        print_json(&json!({
            "jws": jws,
            "header": verified.header,
            "claims": verified.claims,
            "receipt_ref": verified.receipt_ref,
        }));
        return Ok(EXIT_OK);
    }
    let claims = serde_json::to_string_pretty(&verified.claims).unwrap_or_default();
    let mut lines = vec![
        format!("PEAC record {} (verified against session {session})", verified.receipt_ref),
        format!("jws         {jws}"),
        format!("header      {}", verified.header),
        "claims".to_owned(),
    ];
    lines.extend(claims.lines().map(|line| format!("  {line}")));
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn receipt_lines(
    receipt: &Value,
    verified: &pactum_runtime::session::receipt::VerifiedReceipt,
    verdict: &str,
) -> Vec<String> {
    let text = |pointer: &str| {
        receipt.pointer(pointer).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default()
    };
    let amount = verified.amount.money().map(|m| m.to_string()).unwrap_or_default();
    vec![
        format!("receipt     {}", verified.receipt_id),
        format!("session     {} (transcript {})", verified.session_id, verified.transcript_id),
        format!("intent      {}", text("/intent_type")),
        format!("paid        {amount} by {} to {}", verified.payer, verified.payee),
        format!("rail        {} payment {} ({})", text("/rail"), text("/payment_id"), text("/rail_reference")),
        format!("agreement   {} with hash {}", text("/agreement/event"), text("/agreement/hash")),
        format!("policy      {}", text("/policy_hash")),
        format!(
            "issued      {} by {} ({})",
            format_ms(receipt.get("issued_at_ms").and_then(Value::as_u64).unwrap_or(0)),
            verified.issuer,
            verified.issuer_key_id
        ),
        format!("digest      {}", verified.digest.to_hex()),
        format!("verdict     {verdict}"),
    ]
}

fn verify_json_receipt(label: &str, text: &str, json: bool) -> Result<u8, Failure> {
    if text.len() > RECEIPT_BYTES_MAX {
        return Err(Failure::new("RECEIPT_INVALID", format!("{label}: larger than {RECEIPT_BYTES_MAX} bytes")));
    }
    let receipt = pactum_transcripts::canonical::parse_strict(text)
        .map_err(|e| Failure::new("RECEIPT_INVALID", format!("{label}: not strict JSON: {e}")))?;
    let verified = verify_receipt(&receipt).map_err(pactum_runtime::RuntimeError::from)?;
    if json {
        print_json(
            &json!({ "valid": true, "format": "pactum-receipt/1", "receipt_id": verified.receipt_id, "issuer": verified.issuer, "digest": verified.digest.to_hex() }),
        );
    } else {
        print_lines(&receipt_lines(
            &receipt,
            &verified,
            "signature valid (the issuer's key is the one the receipt names; check it against the transcript with pactum receipt show)",
        ));
    }
    Ok(EXIT_OK)
}
