//! `pactum passport show|check|ingest`: agents' records as counterparties, from the transcripts
//! that verify.

use clap::Subcommand;
use pactum_runtime::passport::{
    self, IngestSummary, Ingested, PassportCheck, PassportRequirement, Score, gate::confidence_text, gate::milli_text,
};
use serde_json::{Value, json};

use crate::cli::Context;
use crate::clock::{format_ms, now_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};

#[derive(Debug, Subcommand)]
pub enum PassportCommand {
    /// An agent's passport score and confidence with their full breakdown. Ended sessions not in
    /// the passport yet are verified and ingested first.
    Show {
        agent: String,
        /// Compute the score as of this time (RFC 3339, or Unix milliseconds); default now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the passport gate on an agent: exit 0 if it passes, 1 with the reason if denied.
    Check {
        agent: String,
        /// Minimum score, 0-100 (up to three decimals).
        #[arg(long, value_name = "SCORE")]
        min_score: String,
        /// Minimum confidence, 0-1 (up to three decimals).
        #[arg(long, value_name = "CONFIDENCE", default_value = "0")]
        min_confidence: String,
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Record your ruling on a dispute over an ended session: --upheld (the provider failed you
    /// after all: a lost dispute on its passport) or --dismissed. Signed by the buyer, stored as
    /// its own transcript; a ruling is never replaced.
    Dispute {
        session: String,
        /// The provider the dispute is against.
        #[arg(long)]
        against: String,
        #[arg(long, conflicts_with = "dismissed", required_unless_present = "dismissed")]
        upheld: bool,
        #[arg(long)]
        dismissed: bool,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify and ingest ended sessions (one by id, or every one not ingested yet), or a PACT v4
    /// transcript file (VALID, no Pactum findings, every round signed by the key this
    /// constellation knows for its agent).
    Ingest {
        /// A session id or a PACT v4 file; all ended sessions when left out.
        session: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

impl PassportCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::Show { json, .. }
            | Self::Check { json, .. }
            | Self::Ingest { json, .. }
            | Self::Dispute { json, .. } => *json,
        }
    }

    /// The intent this command runs as (`None`: it only reads).
    pub fn intent_type(&self) -> Option<&'static str> {
        match self {
            Self::Ingest { .. } => Some("passport.ingest"),
            Self::Dispute { .. } => Some("passport.dispute"),
            Self::Show { .. } | Self::Check { .. } => None,
        }
    }
}

pub fn run(context: &Context, command: PassportCommand) -> Result<u8, Failure> {
    match command {
        PassportCommand::Show { agent, as_of, json } => show(context, &agent, as_of.as_deref(), json),
        PassportCommand::Check { agent, min_score, min_confidence, as_of, json } => {
            let requirement = PassportRequirement {
                min_score_milli: parse_milli(&min_score, 100, "--min-score")?,
                min_confidence_milli: parse_milli(&min_confidence, 1, "--min-confidence")?,
            };
            check(context, &agent, requirement, as_of.as_deref(), json)
        }
        PassportCommand::Ingest { session, json } => ingest(context, session.as_deref(), json),
        PassportCommand::Dispute { session, against, upheld, dismissed: _, reason, json } => {
            let db = context.open_existing()?.map_err(|path| {
                Failure::new("SESSION_NOT_FOUND", format!("there is no constellation at {} yet", path.display()))
            })?;
            let clock: std::sync::Arc<dyn pactum_runtime::Clock> = std::sync::Arc::new(crate::clock::SystemClock);
            let session = crate::acp::commands::session_id_of(&session);
            let ruling = passport::dispute::record_dispute(&db, clock, &session, &against, upheld, &reason)?;
            let stream = passport::dispute::dispute_stream_id(&session, &against);
            if json {
                print_json(&json!({
                    "transcript": stream,
                    "session_id": ruling.session_id,
                    "session_head": ruling.session_head,
                    "against": ruling.against,
                    "filed_by": ruling.filed_by,
                    "outcome": ruling.outcome,
                    "reason": ruling.reason,
                }));
            } else {
                print_lines(&[format!(
                    "dispute over {} against {}: {} (transcript {stream}, signed by {})",
                    ruling.session_id, ruling.against, ruling.outcome, ruling.filed_by
                )]);
            }
            Ok(EXIT_OK)
        }
    }
}

/// `60`, `45.25` → thousandths (`60000`, `45250`); at most `max` and three decimals; no floats.
pub fn parse_milli(text: &str, max: u32, flag: &str) -> Result<u32, Failure> {
    let bad =
        || Failure::new("USAGE", format!("{flag} {text:?}: expected a number from 0 to {max}, at most three decimals"));
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!fraction.is_empty() && (!digits(fraction) || fraction.len() > 3)) || text.ends_with('.') {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let fraction: u32 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
    let milli = whole.checked_mul(1000).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?;
    if milli > max * 1000 {
        return Err(bad());
    }
    Ok(milli)
}

/// `--as-of`: RFC 3339 or Unix milliseconds; left out, now — or the agent's latest outcome if
/// that is later (a session's clock runs ahead of the wall clock by its simulated latencies).
fn parse_as_of(text: Option<&str>, db: &pactum_memory::Constellation, agent: &str) -> Result<u64, Failure> {
    let Some(text) = text else {
        return Ok(now_ms().max(passport::latest_outcome_ms(db, agent)?.unwrap_or(0)));
    };
    crate::clock::parse_time(text, "--as-of")
}

fn open(context: &Context, agent: &str) -> Result<std::sync::Arc<pactum_memory::Constellation>, Failure> {
    context.open_existing()?.map_err(|path| {
        Failure::new(
            "AGENT_NOT_FOUND",
            format!("no passport for {agent:?}: there is no constellation at {} yet", path.display()),
        )
    })
}

fn ingest_quietly(db: &std::sync::Arc<pactum_memory::Constellation>) -> Result<IngestSummary, Failure> {
    Ok(passport::ingest_sessions(db, now_ms())?)
}

fn ingest_json(summary: &IngestSummary) -> Value {
    json!({
        "sessions_added": summary.sessions_added,
        "disputes_added": summary.disputes_added,
        "rows_added": summary.rows_added,
        "refused": summary.refused.iter().map(|(source, reason)| json!({"source": source, "reason": reason})).collect::<Vec<_>>(),
    })
}

fn number(text: &str) -> Value {
    serde_json::from_str::<serde_json::Number>(text).map_or(Value::Null, Value::Number)
}

fn latest_json(latest: &Option<passport::score::Latest>) -> Value {
    latest.as_ref().map_or(Value::Null, |l| {
        json!({"at_ms": l.at_ms, "code": l.code, "fault_domain": l.fault_domain, "counterparty": l.counterparty, "transcript_hash": l.transcript_hash})
    })
}

fn tally_json(tally: passport::score::Tally) -> Value {
    json!({"count": tally.count, "weight_micro": tally.weight})
}

pub fn score_json(score: &Score) -> Value {
    let b = &score.breakdown;
    json!({
        "agent_id": score.agent_id,
        "as_of_ms": score.as_of_ms,
        "as_of": format_ms(score.as_of_ms),
        "formula": passport::score::FORMULA,
        "score": number(&milli_text(score.score_milli)),
        "score_milli": score.score_milli,
        "confidence": number(&confidence_text(score.confidence_milli)),
        "confidence_milli": score.confidence_milli,
        "breakdown": {
            "events": b.events,
            "successes": tally_json(b.successes),
            "failures": tally_json(b.failures),
            "policy_violations": tally_json(b.policy_violations),
            "disputes_lost": tally_json(b.disputes_lost),
            "neutral": tally_json(b.neutral),
            "reliability_micro": b.reliability,
            "outcome_points_milli": b.outcome_points_milli,
            "failure_cost_milli": b.failure_cost_milli,
            "policy_violation_cost_milli": b.policy_violation_cost_milli,
            "dispute_cost_milli": b.dispute_cost_milli,
            "counterparties": b.counterparties,
            "concentration_micro": b.concentration,
            "concentration_penalty_milli": b.concentration_penalty_milli,
            "volume_micro": b.volume,
            "volume_confidence_micro": b.volume_confidence,
            "diversity_confidence_micro": b.diversity_confidence,
            "top_counterparties": b.top_counterparties.iter().map(|(id, v)| json!({"agent_id": id, "volume_micro": v})).collect::<Vec<_>>(),
            "latest_failure": latest_json(&b.latest_failure),
            "latest_policy_violation": latest_json(&b.latest_policy_violation),
            "latest_dispute_lost": latest_json(&b.latest_dispute_lost),
        },
    })
}

pub fn check_json(check: &PassportCheck) -> Value {
    json!({
        "agent_id": check.agent_id,
        "pass": check.pass,
        "reason": check.reason.map(|r| r.as_str()),
        "score": number(&milli_text(check.score_milli)),
        "score_milli": check.score_milli,
        "confidence": number(&confidence_text(check.confidence_milli)),
        "confidence_milli": check.confidence_milli,
        "thresholds": {
            "min_score": number(&milli_text(check.min_score_milli)),
            "min_score_milli": check.min_score_milli,
            "min_confidence": number(&confidence_text(check.min_confidence_milli)),
            "min_confidence_milli": check.min_confidence_milli,
        },
        "events": check.events,
        "as_of_ms": check.as_of_ms,
        "triggering_factor": check.triggering_factor,
        "narrative": passport::narrate(check),
    })
}

fn percent(micro: u64) -> String {
    milli_text(u32::try_from(micro / 10).unwrap_or(u32::MAX).min(100_000))
}

fn show(context: &Context, agent: &str, as_of: Option<&str>, json: bool) -> Result<u8, Failure> {
    let db = open(context, agent)?;
    let ingested = ingest_quietly(&db)?;
    let as_of = parse_as_of(as_of, &db, agent)?;
    let score = passport::passport_score(&db, agent, as_of)?;
    if json {
        let mut document = score_json(&score);
        document["ingested"] = ingest_json(&ingested);
        print_json(&document);
        return Ok(EXIT_OK);
    }
    let b = &score.breakdown;
    let mut lines = vec![
        format!("passport of {agent} as of {}", format_ms(as_of)),
        format!(
            "score {} / 100, confidence {} ({} outcome(s), {} counterpart{})",
            milli_text(score.score_milli),
            confidence_text(score.confidence_milli),
            b.events,
            b.counterparties,
            if b.counterparties == 1 { "y" } else { "ies" }
        ),
        format!(
            "  outcomes: {} success(es), {} failure(s), {} policy violation(s), {} dispute(s) lost, {} neutral",
            b.successes.count, b.failures.count, b.policy_violations.count, b.disputes_lost.count, b.neutral.count
        ),
        format!("  reliability {}% → {} points", percent(b.reliability), milli_text(b.outcome_points_milli)),
        format!(
            "    cost of failures {}, policy violations {}, disputes {}",
            milli_text(b.failure_cost_milli),
            milli_text(b.policy_violation_cost_milli),
            milli_text(b.dispute_cost_milli)
        ),
        format!(
            "  concentration {}% → −{} points",
            percent(b.concentration),
            milli_text(b.concentration_penalty_milli)
        ),
        format!(
            "  confidence: volume {}% × diversity {}%",
            percent(b.volume_confidence),
            percent(b.diversity_confidence)
        ),
    ];
    for (label, latest) in [
        ("latest failure", &b.latest_failure),
        ("latest policy violation", &b.latest_policy_violation),
        ("latest dispute lost", &b.latest_dispute_lost),
    ] {
        if let Some(l) = latest {
            lines.push(format!(
                "  {label}: {} with {} at {}",
                l.code.as_deref().unwrap_or("-"),
                l.counterparty,
                format_ms(l.at_ms)
            ));
        }
    }
    if ingested.sessions_added > 0 {
        lines.push(format!("(ingested {} ended session(s) first)", ingested.sessions_added));
    }
    for (source, reason) in &ingested.refused {
        lines.push(format!("(left out {source}: {reason})"));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

fn check(
    context: &Context,
    agent: &str,
    requirement: PassportRequirement,
    as_of: Option<&str>,
    json: bool,
) -> Result<u8, Failure> {
    let db = open(context, agent)?;
    ingest_quietly(&db)?;
    let as_of = parse_as_of(as_of, &db, agent)?;
    let check = passport::check_passport(&db, agent, requirement, as_of)?;
    if json {
        print_json(&check_json(&check));
    } else {
        print_lines(&[passport::narrate(&check)]);
    }
    Ok(if check.pass { EXIT_OK } else { EXIT_INVALID })
}

fn ingest(context: &Context, session: Option<&str>, json: bool) -> Result<u8, Failure> {
    let db = context.open_existing()?.map_err(|path| {
        Failure::new("SESSION_NOT_FOUND", format!("there is no constellation at {} yet", path.display()))
    })?;
    let summary = match session {
        Some(target) => {
            let ingested = if crate::transcript_cmd::is_file_target(target) {
                passport::v4::ingest_v4(&db, &read_v4_file(std::path::Path::new(target))?, now_ms())?
            } else {
                passport::ingest_session(&db, target, now_ms())?
            };
            let rows = match ingested {
                Ingested::Added { rows } => rows,
                Ingested::AlreadyIngested => 0,
            };
            IngestSummary {
                sessions_added: usize::from(rows > 0),
                disputes_added: 0,
                rows_added: rows,
                refused: Vec::new(),
            }
        }
        None => ingest_quietly(&db)?,
    };
    if json {
        print_json(&ingest_json(&summary));
    } else {
        let mut lines =
            vec![format!("ingested {} session(s), {} passport row(s)", summary.sessions_added, summary.rows_added)];
        lines.extend(summary.refused.iter().map(|(source, reason)| format!("left out {source}: {reason}")));
        print_lines(&lines);
    }
    Ok(if summary.refused.is_empty() { EXIT_OK } else { EXIT_INVALID })
}

/// A v4 file, read through its size limit.
fn read_v4_file(path: &std::path::Path) -> Result<String, Failure> {
    let bad = |message: String| Failure::new("IO_ERROR", format!("{}: {message}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let limit = pactum_transcripts::pact_v4::V4_DOCUMENT_BYTES_MAX as u64;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new("PASSPORT_SOURCE_INVALID", format!("{}: larger than {limit} bytes", path.display())));
    }
    String::from_utf8(bytes)
        .map_err(|_| Failure::new("PASSPORT_SOURCE_INVALID", format!("{}: not UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::parse_milli;

    #[test]
    fn thresholds_parse_exactly() {
        assert_eq!(parse_milli("60", 100, "x").ok(), Some(60_000));
        assert_eq!(parse_milli("45.25", 100, "x").ok(), Some(45_250));
        assert_eq!(parse_milli("0.5", 1, "x").ok(), Some(500));
        assert_eq!(parse_milli("1", 1, "x").ok(), Some(1_000));
        for bad in ["", ".5", "5.", "1.2345", "-1", "101", "1.001e2", "1,5", "nan"] {
            assert!(parse_milli(bad, 100, "x").is_err(), "{bad}");
        }
        assert!(parse_milli("1.5", 1, "x").is_err());
    }
}
