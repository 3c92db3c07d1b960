//! `pactum providers list`.

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
    print_lines(&lines);
    Ok(EXIT_OK)
}
