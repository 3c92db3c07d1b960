//! `pactum providers list`, `pactum agents list` and `pactum balance`: who negotiations involve
//! and where the money is.

use serde_json::{Value, json};

use crate::cli::{Context, ProvidersCommand};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

pub fn run(context: &Context, command: ProvidersCommand) -> Result<u8, Failure> {
    let ProvidersCommand::List { json } = command;
    let directory = context.directory()?;
    if json {
        let providers: Vec<Value> = directory
            .providers()
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "name": p.name,
                    "intent_types": p.intent_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    "reference_price": {
                        "amount_minor": p.reference_price.amount_minor(),
                        "currency": p.reference_price.currency().code(),
                    },
                    "floor_percent": p.floor_percent,
                    "floor_price_minor": p.floor_price().amount_minor(),
                    "concession": p.concession.as_str(),
                    "concession_percent": p.concession_percent,
                    "latency_ms": { "base": p.latency_base_ms, "jitter": p.latency_jitter_ms },
                    "failures": {
                        "timeout_percent": p.failures.timeout_percent,
                        "refusal_percent": p.failures.refusal_percent,
                        "unreachable_percent": p.failures.unreachable_percent,
                    },
                })
            })
            .chain(directory.remotes().iter().map(|p| {
                json!({
                    "id": p.id,
                    "name": p.name,
                    "intent_types": p.intent_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    "currency": p.currency.code(),
                    "remote": { "endpoint": p.endpoint, "key_id": p.key_id, "public_key": p.public_key },
                })
            }))
            .collect();
        print_json(&Value::Array(providers));
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 7]> = directory
        .providers()
        .iter()
        .map(|p| {
            [
                p.id.clone(),
                p.intent_types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
                p.reference_price.to_string(),
                p.floor_price().to_string(),
                format!("{} {}%", p.concession.as_str(), p.concession_percent),
                format!("{}±{} ms", p.latency_base_ms, p.latency_jitter_ms),
                format!(
                    "{}/{}/{}%",
                    p.failures.timeout_percent, p.failures.refusal_percent, p.failures.unreachable_percent
                ),
            ]
        })
        .collect();
    let headers = ["ID", "INTENTS", "ASKS FROM", "FLOOR", "CONCESSION", "LATENCY", "TIMEOUT/REFUSE/DOWN"];
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![line(&headers.map(str::to_owned))];
    lines.extend(rows.iter().map(|row| line(row)));
    if !directory.remotes().is_empty() {
        lines.push(String::new());
        lines
            .push("remote providers (their own constellations; asks, concessions and failures are theirs):".to_owned());
        for remote in directory.remotes() {
            let intents: Vec<&str> = remote.intent_types.iter().map(|t| t.as_str()).collect();
            lines.push(format!(
                "{}  {}  {}  {}  key {}",
                remote.id,
                intents.join(","),
                remote.currency.code(),
                remote.endpoint,
                remote.key_id
            ));
        }
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

/// Lists the constellation's agents with their public identity. The secret key is never read
/// out for this.
pub fn list_agents(context: &Context, json: bool) -> Result<u8, Failure> {
    let agents = match context.open_existing()? {
        Ok(db) => db.agents()?,
        Err(_) => Vec::new(),
    };
    let public_key = |key: &[u8; 32]| {
        pactum_transcripts::VerifyingKey::from_bytes(key)
            .map_or_else(|_| "(invalid key)".to_owned(), |key| pactum_transcripts::public_key_to_base64url(&key))
    };
    if json {
        let list: Vec<Value> = agents
            .iter()
            .map(|a| {
                json!({
                    "id": a.agent_id,
                    "name": a.display_name,
                    "role": a.role.as_str(),
                    "key_id": a.key_id,
                    "public_key": public_key(&a.public_key),
                    "created_at_ms": a.created_at_ms,
                })
            })
            .collect();
        print_json(&Value::Array(list));
        return Ok(EXIT_OK);
    }
    if agents.is_empty() {
        print_lines(&["no agents yet (the default buyer is created by the first negotiation)".to_owned()]);
        return Ok(EXIT_OK);
    }
    let mut lines = vec![format!("{:<20} {:<9} {:<22} {:<28} PUBLIC KEY", "ID", "ROLE", "NAME", "KEY ID")];
    for a in &agents {
        lines.push(format!(
            "{:<20} {:<9} {:<22} {:<28} {}",
            a.agent_id,
            a.role.as_str(),
            a.display_name,
            a.key_id,
            public_key(&a.public_key)
        ));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

/// An amount in minor units shown in major units of its currency (`-1000` USD is `-10.00 USD`).
fn format_amount(balance_minor: i64, currency: &str) -> String {
    match pactum_runtime::Currency::parse(currency) {
        Ok(parsed) => {
            let magnitude = pactum_runtime::Money::from_minor(balance_minor.unsigned_abs(), parsed)
                .map_or_else(|_| balance_minor.unsigned_abs().to_string(), |m| m.major_text());
            format!("{}{magnitude} {currency}", if balance_minor < 0 { "-" } else { "" })
        }
        Err(_) => format!("{balance_minor} (minor units) {currency}"),
    }
}

/// Lists every ledger account with its balance, and each currency's total (zero in a sound
/// double-entry ledger; the external account holds minus what was funded).
pub fn balance(context: &Context, json: bool) -> Result<u8, Failure> {
    let (accounts, check) = match context.open_existing()? {
        Ok(db) => (db.accounts()?, Some(db.check_ledger()?)),
        Err(_) => (Vec::new(), None),
    };
    let totals = check.as_ref().map(|c| c.sums_by_currency.clone()).unwrap_or_default();
    if json {
        let list: Vec<Value> = accounts
            .iter()
            .map(|a| {
                json!({
                    "account": a.account_id,
                    "kind": a.kind.as_str(),
                    "currency": a.currency,
                    "balance_minor": a.balance_minor,
                    "balance": format_amount(a.balance_minor, &a.currency),
                })
            })
            .collect();
        let totals: Vec<Value> =
            totals.iter().map(|(currency, sum)| json!({ "currency": currency, "sum_minor": sum })).collect();
        print_json(
            &json!({ "accounts": list, "totals": totals, "sound": check.as_ref().is_none_or(|c| c.is_sound()) }),
        );
        return Ok(EXIT_OK);
    }
    if accounts.is_empty() {
        print_lines(&["no ledger accounts yet".to_owned()]);
        return Ok(EXIT_OK);
    }
    let width = accounts.iter().map(|a| a.account_id.len()).max().unwrap_or(7).max(7);
    let mut lines = vec![format!("{:<width$}  {:<8}  {:>16}", "ACCOUNT", "KIND", "BALANCE")];
    for a in &accounts {
        lines.push(format!(
            "{:<width$}  {:<8}  {:>16}",
            a.account_id,
            a.kind.as_str(),
            format_amount(a.balance_minor, &a.currency)
        ));
    }
    for (currency, sum) in &totals {
        lines.push(format!(
            "{:<width$}  {:<8}  {:>16}",
            format!("total {currency}"),
            "",
            format_amount(*sum, currency)
        ));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}
