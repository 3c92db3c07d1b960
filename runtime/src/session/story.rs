//! What happened in a session, told from its transcript: who offered what, what policy and the
//! passport decided, how it ended (the failure with its code, fault and resolved evidence, or the
//! receipt, verified). `pactum transcript replay` prints it; the facts come from folding the
//! events through the session protocol, so a story exists only for a transcript that follows it.

use serde::Serialize;
use serde_json::Value;

use pactum_transcripts::Event;

use crate::session::model::{
    DiscoveryBody, FailureBody, OfferMessage, PASSPORT_EXCLUSION, Phase, PriceBody, SelectionBody, SessionState, kind,
    parse_event_ref,
};
use crate::session::receipt::verify_receipt_in_session;

/// One price in one round.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Offer {
    pub round: u32,
    pub price: PriceBody,
    pub seq: u64,
}

/// A provider's part in the session.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ProviderStory {
    pub agent_id: String,
    pub admitted: bool,
    /// Why it was not admitted: `policy_rule:<name>` or `passport:<REASON>`.
    pub excluded_by: Option<String>,
    pub asks: Vec<Offer>,
    /// `refused`, `timeout`, `unreachable` or `invalid`, with the round, if it left.
    pub left: Option<(String, u32)>,
}

/// A reference from the failure's evidence and what it points at.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Evidence {
    pub reference: String,
    /// What the reference resolves to in this transcript; `None` if it does not resolve.
    pub resolves_to: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct FailureStory {
    pub code: String,
    pub name: String,
    pub stage: String,
    pub fault_domain: String,
    pub terminality: String,
    pub detail: String,
    pub evidence: Vec<Evidence>,
    pub seq: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ReceiptStory {
    pub receipt_id: String,
    pub provider: String,
    pub amount: PriceBody,
    /// `None` when the receipt verifies against the session; the reason otherwise.
    pub problem: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct SelectionStory {
    pub provider: String,
    pub price: PriceBody,
    pub round: u32,
    pub rule: String,
}

/// Everything `transcript replay` tells.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Story {
    pub session_id: String,
    pub buyer: String,
    pub intent: Value,
    pub policy_hash: String,
    pub strategy: String,
    pub rail: String,
    pub phase: String,
    pub events: u64,
    /// The buyer's offers, round by round.
    pub bids: Vec<Offer>,
    pub providers: Vec<ProviderStory>,
    /// Policy and passport decisions recorded in the transcript, in order, as recorded.
    pub decisions: Vec<Value>,
    pub selection: Option<SelectionStory>,
    /// `approved by <who>` or `declined by <who>`.
    pub approval: Option<String>,
    pub receipt: Option<ReceiptStory>,
    pub failure: Option<FailureStory>,
    /// The story in sentences.
    pub narrative: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Option<T> {
    T::deserialize(body).ok()
}

fn money_text(price: &PriceBody) -> String {
    price
        .money()
        .map_or_else(|_| format!("{} minor units of {}", price.amount_minor, price.currency), |m| m.to_string())
}

/// What `event` is, in a few words: `round.ask by tensor-forge (round 2, 0.31 USD)`.
fn event_summary(event: &Event) -> String {
    let body = &event.body;
    let who = body.get("sender").or_else(|| body.get("provider")).and_then(Value::as_str);
    let round = body.get("round").and_then(Value::as_u64);
    let price = body.get("price").and_then(parse::<PriceBody>).map(|p| money_text(&p));
    let mut text = format!("event {} {}", event.seq, event.kind.as_str());
    if let Some(who) = who {
        text.push_str(&format!(" by {who}"));
    }
    let details: Vec<String> = [round.map(|r| format!("round {r}")), price].into_iter().flatten().collect();
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

/// Folds `events` through the session protocol and tells what happened. Refused if the events
/// do not follow the protocol (a story of a broken transcript would mislead).
pub fn tell(events: &[Event]) -> Result<Story, String> {
    let mut state = SessionState::default();
    let mut bids = Vec::new();
    let mut decisions = Vec::new();
    let mut excluded: Vec<(String, String)> = Vec::new();
    for event in events {
        state.apply_event(event).map_err(|e| e.to_string())?;
        match event.kind.as_str() {
            kind::BID | kind::COUNTER => {
                if let Some(offer) = parse::<OfferMessage>(&event.body) {
                    bids.push(Offer { round: offer.round, price: offer.price, seq: event.seq });
                }
            }
            kind::DISCOVERY => {
                if let Some(discovery) = parse::<DiscoveryBody>(&event.body) {
                    for check in discovery.passport.iter().flat_map(|record| &record.checks) {
                        decisions.push(serde_json::json!({
                            "seq": event.seq, "stage": "admission", "subject": check.agent_id,
                            "decision": if check.pass { "passport passed" } else { "passport denied" },
                            "passport": check, "narrative": crate::passport::narrate(check),
                        }));
                    }
                    for exclusion in discovery.excluded {
                        let reference = if exclusion.policy_rule == PASSPORT_EXCLUSION {
                            let reason = discovery
                                .passport
                                .iter()
                                .flat_map(|record| &record.checks)
                                .find(|check| check.agent_id == exclusion.provider)
                                .and_then(|check| check.reason)
                                .map_or("", |reason| reason.as_str());
                            format!("passport:{}:{reason}", exclusion.provider)
                        } else {
                            format!("policy_rule:{}", exclusion.policy_rule)
                        };
                        decisions.push(serde_json::json!({
                            "seq": event.seq, "stage": "admission", "subject": exclusion.provider,
                            "decision": "excluded", "by": reference,
                        }));
                        excluded.push((exclusion.provider, reference));
                    }
                }
            }
            other if other.starts_with("policy.") || other.starts_with("passport.") => {
                decisions.push(serde_json::json!({ "seq": event.seq, "kind": other, "body": event.body }));
            }
            _ => {}
        }
    }
    let created = state.created.clone().ok_or("the transcript has no session.created")?;
    let mut providers: Vec<ProviderStory> = state
        .offering
        .iter()
        .map(|p| ProviderStory {
            agent_id: p.agent_id.clone(),
            admitted: state.admitted.contains(&p.agent_id),
            excluded_by: excluded.iter().find(|(id, _)| *id == p.agent_id).map(|(_, by)| by.clone()),
            asks: state
                .asks
                .iter()
                .filter(|a| a.provider == p.agent_id)
                .map(|a| Offer { round: a.round, price: a.price.clone(), seq: a.seq })
                .collect(),
            left: state.dropped.iter().find(|d| d.provider == p.agent_id).map(|d| {
                let reason = serde_json::to_value(d.reason).ok().and_then(|v| v.as_str().map(str::to_owned));
                (reason.unwrap_or_default(), d.round)
            }),
        })
        .collect();
    providers.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let selection = events
        .iter()
        .rev()
        .find(|e| e.kind.as_str() == kind::SELECTED)
        .and_then(|e| parse::<SelectionBody>(&e.body))
        .map(|s| SelectionStory { provider: s.provider, price: s.price, round: s.round, rule: s.rule });
    let approval = events.iter().rev().find(|e| e.kind.as_str() == kind::APPROVAL).and_then(|e| {
        let approved = e.body.get("approved")?.as_bool()?;
        let by = e.body.get("by")?.as_str()?;
        Some(format!("{} by {by}", if approved { "approved" } else { "declined" }))
    });
    let receipt = state.receipt.as_ref().map(|receipt| ReceiptStory {
        receipt_id: receipt.get("receipt_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        provider: receipt.get("payee").and_then(Value::as_str).unwrap_or_default().to_owned(),
        amount: receipt
            .get("amount")
            .and_then(parse::<PriceBody>)
            .unwrap_or(PriceBody { amount_minor: 0, currency: String::new() }),
        problem: verify_receipt_in_session(&state).err().map(|e| e.to_string()),
    });
    let failure = state.failure.as_ref().map(|failure: &FailureBody| FailureStory {
        code: failure.code.clone(),
        name: failure.name.clone(),
        stage: failure.stage.clone(),
        fault_domain: failure.fault_domain.clone(),
        terminality: failure.terminality.clone(),
        detail: failure.detail.clone(),
        evidence: failure
            .evidence_refs
            .iter()
            .map(|reference| Evidence {
                reference: reference.clone(),
                resolves_to: resolve(reference, events, &created.policy_hash, &state),
            })
            .collect(),
        seq: state.failure_seq.unwrap_or_default(),
    });
    let mut story = Story {
        session_id: created.session_id.clone(),
        buyer: created.buyer.agent_id.clone(),
        intent: created.intent.clone(),
        policy_hash: created.policy_hash.clone(),
        strategy: created.strategy.clone(),
        rail: created.rail.clone(),
        phase: state.phase.as_str().to_owned(),
        events: events.len() as u64,
        bids,
        providers,
        decisions,
        selection,
        approval,
        receipt,
        failure,
        narrative: Vec::new(),
    };
    story.narrative = narrate(&story, &state);
    Ok(story)
}

/// What an evidence reference points at, if it resolves inside the transcript.
fn resolve(reference: &str, events: &[Event], policy_hash: &str, state: &SessionState) -> Option<String> {
    if let Some(denial) = reference.strip_prefix("passport:") {
        let check = state.passport.as_ref()?.checks.iter().find(|check| {
            check.reason.is_some_and(|reason| denial == format!("{}:{}", check.agent_id, reason.as_str()))
        })?;
        return Some(crate::passport::narrate(check));
    }
    if reference.starts_with("constraint:") {
        let check = state.constraints.as_ref()?.checks.iter().find(|check| check.evidence_ref() == reference)?;
        return Some(format!(
            "{} constraint {} ({}) refused: {}",
            check.scope,
            check.name,
            check.constraint.kind(),
            check.violation.as_deref().unwrap_or("refused")
        ));
    }
    if let Some(member) = reference.strip_prefix("coalition:") {
        let member = state.coalition()?.member(member)?;
        return Some(format!("coalition member {} (weight {})", member.agent_id, member.weight));
    }
    if let Some(seq) = parse_event_ref(reference) {
        return events.get(usize::try_from(seq).ok()?).filter(|e| e.seq == seq).map(event_summary);
    }
    if let Some(rule) = reference.strip_prefix("policy_rule:") {
        return Some(format!("rule {rule} of the recorded policy ({policy_hash})"));
    }
    None
}

fn narrate(story: &Story, state: &SessionState) -> Vec<String> {
    let mut sentences = Vec::new();
    let intent_type = story.intent.get("intent_type").and_then(Value::as_str).unwrap_or("?");
    let max = story.intent.get("max_price").and_then(parse::<PriceBody>).map(|p| money_text(&p));
    sentences.push(format!(
        "{} looked for {intent_type}{} with the {} strategy under policy {}.",
        story.buyer,
        max.map(|m| format!(" at no more than {m}")).unwrap_or_default(),
        story.strategy,
        story.policy_hash
    ));
    if let Some(delegation) = state.delegation() {
        sentences.push(format!(
            "It bought through broker {}, whose own purchase (session {}) cost {}; the broker's margin is {} %, and both payments are made in one write or neither.",
            delegation.broker,
            delegation.child_session,
            money_text(&delegation.cost),
            delegation.margin_percent
        ));
    }
    if let Some(parent) = state.parent_session() {
        sentences.push(format!(
            "{} bought as a broker for session {parent}: this payment is made only in the write that pays that session's.",
            story.buyer
        ));
    }
    if let Some(coalition) = state.coalition() {
        let members: Vec<String> =
            coalition.members.iter().map(|m| format!("{} (weight {})", m.agent_id, m.weight)).collect();
        sentences.push(format!(
            "{} led a coalition pooling the purchase: {}; each member's part is {}.",
            coalition.lead,
            members.join(", "),
            coalition.split
        ));
    }
    let offering: Vec<&str> = story.providers.iter().map(|p| p.agent_id.as_str()).collect();
    if offering.is_empty() && state.phase != Phase::Discovering {
        if story.failure.as_ref().is_some_and(|f| f.stage == "admission") {
            sentences.push("The session ended at admission, before any provider was asked.".to_owned());
        } else {
            sentences.push("No provider offered it.".to_owned());
        }
    } else if !offering.is_empty() {
        let admitted: Vec<&str> = story.providers.iter().filter(|p| p.admitted).map(|p| p.agent_id.as_str()).collect();
        let mut sentence = format!("{} offered it; {} admitted", offering.join(", "), admitted.len());
        let excluded: Vec<String> = story
            .providers
            .iter()
            .filter_map(|p| p.excluded_by.as_ref().map(|by| format!("{} ({by})", p.agent_id)))
            .collect();
        if !excluded.is_empty() {
            sentence.push_str(&format!(", excluded {}", excluded.join(", ")));
        }
        sentence.push('.');
        sentences.push(sentence);
    }
    if let Some(record) = &state.passport {
        sentences.push(format!(
            "The policy required a passport score of at least {} and confidence {}:",
            crate::passport::gate::milli_text(record.requirement.min_score_milli),
            crate::passport::gate::confidence_text(record.requirement.min_confidence_milli)
        ));
        sentences.extend(record.checks.iter().map(crate::passport::narrate));
    }
    for bid in &story.bids {
        let asks: Vec<String> = story
            .providers
            .iter()
            .filter_map(|p| {
                p.asks
                    .iter()
                    .find(|a| a.round == bid.round)
                    .map(|a| format!("{} asked {}", p.agent_id, money_text(&a.price)))
            })
            .chain(story.providers.iter().filter_map(|p| match &p.left {
                Some((reason, round)) if *round == bid.round => Some(format!(
                    "{} {}",
                    p.agent_id,
                    match reason.as_str() {
                        "timeout" => "timed out",
                        "unreachable" => "could not be reached",
                        "invalid" => "answered with an invalid message",
                        other => other,
                    }
                )),
                _ => None,
            }))
            .collect();
        sentences.push(format!(
            "Round {}: {} offered {}{}.",
            bid.round,
            story.buyer,
            money_text(&bid.price),
            if asks.is_empty() { String::new() } else { format!("; {}", asks.join(", ")) }
        ));
    }
    if let Some(selection) = &story.selection {
        sentences.push(format!(
            "{} was selected at {} in round {} ({}).",
            selection.provider,
            money_text(&selection.price),
            selection.round,
            selection.rule
        ));
    }
    if let Some(approval) = &story.approval {
        sentences.push(format!("The payment was {approval}."));
    }
    if let Some(receipt) = &story.receipt {
        sentences.push(format!(
            "{} was paid {} and signed receipt {} ({}).",
            receipt.provider,
            money_text(&receipt.amount),
            receipt.receipt_id,
            receipt.problem.as_deref().unwrap_or("it verifies against this transcript")
        ));
        if let (Some(parts), Ok(currency)) =
            (state.coalition_parts(), crate::money::Currency::parse(&receipt.amount.currency))
        {
            let paid: Vec<String> = parts
                .iter()
                .map(|(agent_id, amount_minor)| {
                    let part = PriceBody { amount_minor: *amount_minor, currency: currency.code().to_owned() };
                    format!("{agent_id} {}", money_text(&part))
                })
                .collect();
            sentences.push(format!("The coalition's parts: {}.", paid.join(", ")));
        }
    }
    if let Some(failure) = &story.failure {
        sentences.push(format!(
            "It failed with {} {} at {} ({} fault, {}): {}.",
            failure.code, failure.name, failure.stage, failure.fault_domain, failure.terminality, failure.detail
        ));
        for evidence in &failure.evidence {
            let what = evidence.resolves_to.as_deref().unwrap_or("does not resolve in this transcript");
            let end = if what.ends_with('.') { "" } else { "." };
            sentences.push(format!("Evidence {}: {what}{end}", evidence.reference));
        }
    }
    if !state.phase.is_terminal() {
        sentences.push(format!("The session is still {}.", state.phase.as_str()));
    }
    sentences
}
