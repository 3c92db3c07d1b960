//! How session events read to a person: one line each, for `negotiate` (as they happen) and
//! `session show`.

use serde_json::Value;

use pactum_runtime::Money;
use pactum_runtime::session::model::{
    AbortMessage, AcceptMessage, ApprovalBody, AskMessage, CommittedBody, CreatedBody, DiscoveryBody, EvidenceBody,
    FailureBody, InvalidAnswerBody, NoAnswerBody, OfferMessage, PriceBody, RejectMessage, SelectionBody,
    SettlementFailedBody, kind,
};
use pactum_transcripts::Event;

fn price(body: &PriceBody) -> String {
    body.money()
        .map_or_else(|_| format!("{} (minor units) {}", body.amount_minor, body.currency), |m: Money| m.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Option<T> {
    T::deserialize(body).ok()
}

/// One line describing `event`, or `None` for events not worth a line of their own.
pub fn describe(event: &Event) -> Option<String> {
    let body = &event.body;
    let line = match event.kind.as_str() {
        kind::CREATED => {
            let created: CreatedBody = parse(body)?;
            let intent = &created.intent;
            let max = parse::<PriceBody>(intent.get("max_price")?).map(|p| price(&p)).unwrap_or_default();
            format!(
                "session {} (transcript session:{}): {} for at most {max}, strategy {}, seed {}",
                created.session_id,
                created.session_id,
                intent.get("intent_type")?.as_str()?,
                created.strategy,
                created.seed
            )
        }
        kind::DISCOVERY => {
            let discovery: DiscoveryBody = parse(body)?;
            let mut line = if discovery.offering.is_empty() {
                "discovery: no provider offers this intent in this currency".to_owned()
            } else {
                let ids: Vec<&str> = discovery.offering.iter().map(|p| p.agent_id.as_str()).collect();
                format!("discovery: {} offering: {}", ids.len(), ids.join(", "))
            };
            if let Some(record) = &discovery.passport {
                let checks: Vec<String> = record
                    .checks
                    .iter()
                    .map(|check| {
                        format!(
                            "{} {} ({}/{})",
                            check.agent_id,
                            check.reason.map_or("passed", |reason| reason.as_str()),
                            pactum_runtime::passport::gate::milli_text(check.score_milli),
                            pactum_runtime::passport::gate::confidence_text(check.confidence_milli),
                        )
                    })
                    .collect();
                line.push_str(&format!("; passport: {}", checks.join(", ")));
            }
            if !discovery.excluded.is_empty() {
                let excluded: Vec<String> =
                    discovery.excluded.iter().map(|e| format!("{} ({})", e.provider, e.policy_rule)).collect();
                line.push_str(&format!("; excluded by policy: {}", excluded.join(", ")));
            }
            line
        }
        kind::INTENT => return None,
        kind::BID | kind::COUNTER => {
            let offer: OfferMessage = parse(body)?;
            format!(
                "round {:<2} {:<8} {:>12} → {}",
                offer.round,
                offer.round_type,
                price(&offer.price),
                offer.receivers.join(", ")
            )
        }
        kind::ASK => {
            let ask: AskMessage = parse(body)?;
            format!(
                "round {:<2} {:<8} {:>12} ← {} ({} ms)",
                ask.round,
                "ASK",
                price(&ask.price),
                ask.sender,
                ask.latency_ms
            )
        }
        kind::REJECT => {
            let reject: RejectMessage = parse(body)?;
            format!("round {:<2} {:<8} {:>12} ← {} ({})", reject.round, "REJECT", "", reject.sender, reject.reason)
        }
        kind::TIMEOUT => {
            let observed: NoAnswerBody = parse(body)?;
            format!(
                "round {:<2} {:<8} {:>12}   {} did not answer within {} ms",
                observed.round,
                "TIMEOUT",
                "",
                observed.provider,
                observed.waited_ms.unwrap_or_default()
            )
        }
        kind::UNREACHABLE => {
            let observed: NoAnswerBody = parse(body)?;
            format!("round {:<2} {:<8} {:>12}   {} could not be reached", observed.round, "DOWN", "", observed.provider)
        }
        kind::INVALID_ANSWER => {
            let observed: InvalidAnswerBody = parse(body)?;
            format!(
                "round {:<2} {:<8} {:>12}   {} answered invalidly ({}: {})",
                observed.round, "INVALID", "", observed.provider, observed.reason, observed.detail
            )
        }
        kind::SELECTED => {
            let selection: SelectionBody = parse(body)?;
            format!("selected {} at {} ({})", selection.provider, price(&selection.price), selection.rule)
        }
        kind::APPROVAL => {
            let approval: ApprovalBody = parse(body)?;
            format!("payment {} ({})", if approval.approved { "approved" } else { "declined" }, approval.by)
        }
        kind::ACCEPT => {
            let accept: AcceptMessage = parse(body)?;
            format!("round {:<2} {:<8} {:>12} → {}", accept.round, "ACCEPT", price(&accept.price), accept.receiver)
        }
        kind::ABORT_REQUESTED => format!("abort requested: {}", body.get("reason")?.as_str()?),
        kind::ABORT => {
            let abort: AbortMessage = parse(body)?;
            format!(
                "round {:<2} {:<8} {:>12} → {} ({})",
                abort.round,
                "ABORT",
                "",
                abort.receivers.join(", "),
                abort.reason
            )
        }
        kind::COMMITTED => {
            let committed: CommittedBody = parse(body)?;
            format!(
                "committed: payment {} of {} to {} on the {} rail",
                committed.payment_id,
                price(&committed.amount),
                committed.payee,
                committed.rail
            )
        }
        kind::PREPARED | kind::RAIL_COMMITTED | kind::RAIL_ABORTED => {
            let evidence: EvidenceBody = parse(body)?;
            let what = match event.kind.as_str() {
                kind::PREPARED => "held in escrow",
                kind::RAIL_COMMITTED => "paid",
                _ => "hold released",
            };
            if evidence.parts.is_empty() {
                format!("settlement: {} {what} ({})", price(&evidence.amount), evidence.reference)
            } else {
                let currency = &evidence.amount.currency;
                let parts: Vec<String> = evidence
                    .parts
                    .iter()
                    .map(|part| {
                        let amount = PriceBody { amount_minor: part.amount_minor, currency: currency.clone() };
                        format!("{} {} ({})", part.agent_id, price(&amount), part.reference)
                    })
                    .collect();
                format!("settlement: {} {what}: {}", price(&evidence.amount), parts.join(", "))
            }
        }
        kind::COALITION_JOINED => {
            let joined: pactum_runtime::session::model::JoinedBody = parse(body)?;
            format!("coalition: {} joined with weight {}", joined.member, joined.weight)
        }
        kind::SETTLEMENT_FAILED => {
            let failed: SettlementFailedBody = parse(body)?;
            format!("settlement: {} failed ({}): {}", failed.phase, failed.code, failed.detail)
        }
        kind::RECEIPT => {
            let receipt = body.get("receipt")?;
            format!(
                "receipt {} signed by {}",
                receipt.get("receipt_id")?.as_str()?,
                receipt.pointer("/signature/key_id")?.as_str()?
            )
        }
        kind::COMPLETED => "completed".to_owned(),
        kind::POLICY_EVALUATED => {
            let evaluated: pactum_runtime::session::model::PolicyEvaluatedBody = parse(body)?;
            let verdicts: Vec<String> = evaluated
                .evaluations
                .iter()
                .map(|e| match &e.denied_by {
                    Some(rule) => format!("{} denied by {rule}", e.subject),
                    None => format!("{} allowed", e.subject),
                })
                .collect();
            format!("policy rules ({}): {}", evaluated.stage.as_str(), verdicts.join(", "))
        }
        kind::CONSTRAINTS_CHECKED => {
            let checked: pactum_runtime::session::spending::ConstraintsCheckedBody = parse(body)?;
            let verdicts: Vec<String> = checked
                .checks
                .iter()
                .map(|check| match &check.violation {
                    Some(why) => format!("{}:{} refused ({why})", check.scope, check.name),
                    None => format!("{}:{} allowed", check.scope, check.name),
                })
                .collect();
            format!("constraints before paying {}: {}", price(&checked.amount), verdicts.join(", "))
        }
        kind::FAILED => {
            let failure: FailureBody = parse(body)?;
            format!(
                "failed: {} {} ({}, {}, {}): {} [evidence: {}]",
                failure.code,
                failure.name,
                failure.stage,
                failure.fault_domain,
                failure.terminality,
                failure.detail,
                failure.evidence_refs.join(", ")
            )
        }
        _ => return None,
    };
    Some(line)
}
