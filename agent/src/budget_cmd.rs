//! `pactum budget set|show|remove`: spending constraints on an agent (a monthly budget on the
//! buyer, a cap on the number of payments, a validity period), enforced before every payment.

use std::path::PathBuf;

use clap::Subcommand;
use pactum_memory::ConstraintRow;
use pactum_runtime::budget::{self, BudgetError, ConstraintStatus};
use pactum_runtime::constraints::{Budget, Constraint, Temporal, Usage, Window};
use pactum_runtime::{Currency, DEFAULT_BUYER_ID, Money};
use serde_json::{Value, json};

use crate::cli::Context;
use crate::clock::{format_ms, now_ms, parse_time};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set (or replace) a named constraint on an agent. --amount/--currency is a budget,
    /// --max-uses a number of payments, --valid-from/--valid-until/--duration a validity
    /// period; several together must all pass. --per makes budget and uses reset every period.
    /// A constraint counts the payments made since it was first set (--since), and a new version
    /// keeps that start.
    Set(Box<SetArgs>),
    /// Where each of an agent's constraints stands: spent and remaining, uses, when the period
    /// resets, whether a payment is possible now.
    Show {
        #[arg(long, default_value = DEFAULT_BUYER_ID)]
        agent: String,
        /// As of this time (RFC 3339 or Unix ms); default now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Every version of every constraint, removals included.
        #[arg(long)]
        history: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a named constraint (its history is kept).
    Remove {
        name: String,
        #[arg(long, default_value = DEFAULT_BUYER_ID)]
        agent: String,
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `pactum budget set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The agent the constraint binds; default the buyer.
    #[arg(long, default_value = DEFAULT_BUYER_ID)]
    pub agent: String,
    /// The constraint's name (letters, digits, '-', '_', '.').
    #[arg(long, default_value = "budget")]
    pub name: String,
    /// The most the agent may spend, in major units of --currency (per --per period).
    #[arg(long, value_name = "AMOUNT", requires = "currency", allow_hyphen_values = true)]
    pub amount: Option<String>,
    /// ISO 4217 currency of --amount.
    #[arg(long, value_name = "ISO", requires = "amount")]
    pub currency: Option<String>,
    /// The most payments the agent may make (per --per period).
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u64>,
    /// Reset budget and uses every period: day, week, or a length such as 30d, 12h, 90m, 45s.
    #[arg(long, value_name = "PERIOD")]
    pub per: Option<String>,
    /// Where periods start (RFC 3339 or Unix ms); default the start (UTC) of the day the
    /// constraint starts counting.
    #[arg(long, value_name = "TIME", requires = "per")]
    pub anchor: Option<String>,
    /// No payment before this time (RFC 3339 or Unix ms).
    #[arg(long, value_name = "TIME")]
    pub valid_from: Option<String>,
    /// No payment at or after this time.
    #[arg(long, value_name = "TIME")]
    pub valid_until: Option<String>,
    /// Payments allowed for this long from --valid-from (or from the first payment).
    #[arg(long, value_name = "PERIOD")]
    pub duration: Option<String>,
    /// A constraint written as JSON (any kind, including combined and custom ones).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["amount", "max_uses", "valid_from", "valid_until", "duration", "per"])]
    pub file: Option<PathBuf>,
    /// Count payments made since this time (RFC 3339 or Unix ms); default now. Ignored when
    /// the constraint exists already: it keeps its start.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

impl BudgetCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::Set(args) => args.json,
            Self::Show { json, .. } | Self::Remove { json, .. } => *json,
        }
    }

    /// The intent this command runs as (`None`: it only reads).
    pub fn intent_type(&self) -> Option<&'static str> {
        match self {
            Self::Set(_) => Some("budget.set"),
            Self::Remove { .. } => Some("budget.remove"),
            Self::Show { .. } => None,
        }
    }
}

fn failure(error: BudgetError) -> Failure {
    Failure::new(error.code(), error.to_string())
}

/// `day`, `week`, or a positive integer with a unit: `ms`, `s`, `m`, `h`, `d`.
pub fn parse_period(text: &str, flag: &str) -> Result<u64, Failure> {
    let bad =
        || Failure::new("USAGE", format!("{flag} {text:?}: expected day, week, or a length such as 30d, 12h, 90m"));
    let millis = match text {
        "day" => DAY_MS,
        "week" => 7 * DAY_MS,
        _ => {
            let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (digits, unit) = text.split_at(split);
            if digits.is_empty() || digits.len() > 12 {
                return Err(bad());
            }
            let count: u64 = digits.parse().map_err(|_| bad())?;
            let unit_ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => DAY_MS,
                _ => return Err(bad()),
            };
            count.checked_mul(unit_ms).ok_or_else(bad)?
        }
    };
    if millis == 0 {
        return Err(bad());
    }
    Ok(millis)
}

pub fn run(context: &Context, command: BudgetCommand) -> Result<u8, Failure> {
    match command {
        BudgetCommand::Set(args) => {
            let SetArgs {
                agent,
                name,
                amount,
                currency,
                max_uses,
                per,
                anchor,
                valid_from,
                valid_until,
                duration,
                file,
                since,
                json,
            } = *args;
            let now = now_ms();
            let since_ms = since.as_deref().map(|text| parse_time(text, "--since")).transpose()?;
            let window = per
                .as_deref()
                .map(|per| -> Result<Window, Failure> {
                    let length_ms = parse_period(per, "--per")?;
                    let anchor_ms = match anchor.as_deref() {
                        Some(text) => parse_time(text, "--anchor")?,
                        None => {
                            let start = since_ms.unwrap_or(now);
                            start - start % DAY_MS
                        }
                    };
                    Ok(Window { length_ms, anchor_ms })
                })
                .transpose()?;
            let constraint = match file {
                Some(path) => Constraint::load(&path).map_err(|e| Failure::new(e.code(), e.to_string()))?,
                None => {
                    let mut parts = Vec::new();
                    if valid_from.is_some() || valid_until.is_some() || duration.is_some() {
                        parts.push(Constraint::Temporal(Temporal {
                            valid_from_ms: valid_from.as_deref().map(|t| parse_time(t, "--valid-from")).transpose()?,
                            valid_until_ms: valid_until
                                .as_deref()
                                .map(|t| parse_time(t, "--valid-until"))
                                .transpose()?,
                            duration_ms: duration.as_deref().map(|d| parse_period(d, "--duration")).transpose()?,
                        }));
                    }
                    if let Some(max_uses) = max_uses {
                        parts.push(Constraint::Usage(Usage { max_uses, window }));
                    }
                    if let (Some(amount), Some(currency)) = (amount, currency) {
                        let currency = Currency::parse(&currency).map_err(|e| Failure::new(e.code(), e.to_string()))?;
                        let money =
                            Money::parse_major(&amount, currency).map_err(|e| Failure::new(e.code(), e.to_string()))?;
                        parts.push(Constraint::Budget(Budget {
                            max_amount_minor: money.amount_minor(),
                            currency: currency.code().to_owned(),
                            window,
                        }));
                    } else if window.is_some() && max_uses.is_none() {
                        return Err(Failure::new("USAGE", "--per resets a budget (--amount) or a count (--max-uses)"));
                    }
                    match parts.len() {
                        0 => {
                            return Err(Failure::new(
                                "USAGE",
                                "say what to limit: --amount with --currency, --max-uses, --valid-from, \
                                 --valid-until, --duration, or --file",
                            ));
                        }
                        1 => parts.remove(0),
                        _ => Constraint::Combined { all: parts },
                    }
                }
            };
            let at = since_ms.unwrap_or(now);
            let db = context.open()?;
            if agent == DEFAULT_BUYER_ID {
                crate::memory_cmd::ensure_memory_agent(&db, &agent)?;
            }
            let row = budget::set(&db, &agent, &name, &constraint, at).map_err(failure)?;
            let statuses = budget::status(&db, &agent, now.max(at)).map_err(failure)?;
            let status = statuses.iter().find(|s| s.row.name == row.name);
            if json {
                print_json(&json!({
                    "set": row_json(&row),
                    "status": status.map(|s| status_json(s, now.max(at))),
                }));
            } else {
                let mut lines = vec![format!(
                    "{}: constraint {} is now version {} ({}), counting payments since {}",
                    row.agent_id,
                    row.name,
                    row.version,
                    row.constraint_hash.as_deref().unwrap_or_default(),
                    format_ms(row.since_ms)
                )];
                if let Some(status) = status {
                    lines.extend(status_lines(status, now.max(at)));
                }
                print_lines(&lines);
            }
            Ok(EXIT_OK)
        }
        BudgetCommand::Show { agent, as_of, history, json } => {
            let as_of = as_of.as_deref().map(|t| parse_time(t, "--as-of")).transpose()?.unwrap_or_else(now_ms);
            let Ok(db) = context.open_existing()? else {
                if json {
                    print_json(&json!({"agent": agent, "as_of_ms": as_of, "constraints": []}));
                } else {
                    print_lines(&[format!("{agent} has no spending constraints")]);
                }
                return Ok(EXIT_OK);
            };
            if db.agent(&agent)?.is_none() && agent != DEFAULT_BUYER_ID {
                return Err(Failure::new("AGENT_NOT_FOUND", format!("no agent {agent:?} in this constellation")));
            }
            let statuses = budget::status(&db, &agent, as_of).map_err(failure)?;
            let versions = if history { Some(db.agent_constraint_history(&agent)?) } else { None };
            if json {
                let mut document = json!({
                    "agent": agent,
                    "as_of_ms": as_of,
                    "constraints": statuses.iter().map(|s| status_json(s, as_of)).collect::<Vec<_>>(),
                });
                if let Some(versions) = &versions {
                    document["history"] = versions.iter().map(row_json).collect();
                }
                print_json(&document);
                return Ok(EXIT_OK);
            }
            let mut lines = Vec::new();
            if statuses.is_empty() {
                lines.push(format!("{agent} has no spending constraints"));
            }
            for status in &statuses {
                lines.push(format!(
                    "{} (version {}, {}), counting since {}:",
                    status.row.name,
                    status.row.version,
                    status.row.constraint_hash.as_deref().unwrap_or_default(),
                    format_ms(status.row.since_ms)
                ));
                lines.extend(status_lines(status, as_of));
            }
            if let Some(versions) = versions {
                lines.push("history:".to_owned());
                for row in versions {
                    lines.push(format!(
                        "  {} version {} at {}: {}",
                        row.name,
                        row.version,
                        format_ms(row.created_at_ms),
                        row.body.as_deref().unwrap_or("removed")
                    ));
                }
            }
            print_lines(&lines);
            Ok(EXIT_OK)
        }
        BudgetCommand::Remove { name, agent, json } => {
            let db = context.open_existing()?.map_err(|path| {
                Failure::new(
                    "CONSTRAINT_NOT_FOUND",
                    format!("{agent} has no constraint {name}: there is no constellation at {} yet", path.display()),
                )
            })?;
            let row = budget::remove(&db, &agent, &name, now_ms()).map_err(failure)?;
            if json {
                print_json(&json!({"removed": row_json(&row)}));
            } else {
                print_lines(&[format!("{}: constraint {} removed (version {})", row.agent_id, row.name, row.version)]);
            }
            Ok(EXIT_OK)
        }
    }
}

fn row_json(row: &ConstraintRow) -> Value {
    json!({
        "agent": row.agent_id,
        "name": row.name,
        "version": row.version,
        "constraint": row.body.as_deref().and_then(|body| serde_json::from_str::<Value>(body).ok()),
        "constraint_hash": row.constraint_hash,
        "since_ms": row.since_ms,
        "created_at_ms": row.created_at_ms,
    })
}

fn status_json(status: &ConstraintStatus, as_of: u64) -> Value {
    json!({
        "name": status.row.name,
        "version": status.row.version,
        "constraint_hash": status.row.constraint_hash,
        "since_ms": status.row.since_ms,
        "constraint": status.constraint,
        "tally": status.tally,
        "standing": budget::describe(&status.constraint, &status.tally, as_of),
        "open": status.open.is_ok(),
        "refusal": status.open.as_ref().err(),
    })
}

/// `  spent 12.00 of 50.00 USD, 38.00 left; resets at ...`, one line per part.
fn status_lines(status: &ConstraintStatus, as_of: u64) -> Vec<String> {
    let mut lines = Vec::new();
    standing_lines(&budget::describe(&status.constraint, &status.tally, as_of), "  ", &mut lines);
    if let Err(refusal) = &status.open {
        lines.push(format!("  no payment is possible now: {refusal}"));
    }
    lines
}

fn standing_lines(standing: &Value, indent: &str, lines: &mut Vec<String>) {
    let number = |key: &str| standing.get(key).and_then(Value::as_u64);
    let resets = standing
        .pointer("/window/resets_at_ms")
        .and_then(Value::as_u64)
        .map(|at| format!("; resets at {}", format_ms(at)))
        .unwrap_or_default();
    match standing.get("type").and_then(Value::as_str).unwrap_or_default() {
        "budget" => {
            let currency = standing.get("currency").and_then(Value::as_str).unwrap_or_default();
            let money = |minor: Option<u64>| {
                Currency::parse(currency)
                    .ok()
                    .and_then(|c| Money::from_minor(minor.unwrap_or_default(), c).ok())
                    .map_or_else(|| format!("{} minor units", minor.unwrap_or_default()), |m| m.to_string())
            };
            lines.push(format!(
                "{indent}budget: spent {} of {}, {} left{resets}",
                money(number("spent_minor")),
                money(number("max_amount_minor")),
                money(number("remaining_minor"))
            ));
        }
        "usage" => lines.push(format!(
            "{indent}uses: {} of {}, {} left{resets}",
            number("uses").unwrap_or_default(),
            number("max_uses").unwrap_or_default(),
            number("remaining_uses").unwrap_or_default()
        )),
        "temporal" => {
            let mut parts = Vec::new();
            if let Some(from) = number("valid_from_ms") {
                parts.push(format!("from {}", format_ms(from)));
            }
            match number("ends_at_ms") {
                Some(end) => parts.push(format!("until {}", format_ms(end))),
                None if number("duration_ms").is_some() => parts.push("for a duration from the first payment".into()),
                None => {}
            }
            lines.push(format!("{indent}valid {}", parts.join(" ")));
        }
        "combined" => {
            lines.push(format!("{indent}all of:"));
            for part in standing.get("all").and_then(Value::as_array).into_iter().flatten() {
                standing_lines(part, &format!("{indent}  "), lines);
            }
        }
        "custom" => lines.push(format!(
            "{indent}custom {} (carried, not enforced)",
            standing.get("id").and_then(Value::as_str).unwrap_or_default()
        )),
        other => lines.push(format!("{indent}{other}")),
    }
}
