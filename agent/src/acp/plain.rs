//! Plain prompts such as "buy weather data for at most 5 cents within 200 ms", parsed
//! deterministically into the arguments of `/negotiate`. The grammar is small and documented in
//! docs/PROTOCOL.md ("Plain prompts"); anything outside it gets an answer saying what works.
//!
//! - What: an intent type written as is (`weather.data`) or as its words (`weather data`, in
//!   any order); exactly one of the directory's intent types must match.
//! - Price (required): `$0.05`, `€2`, `5 cents`, `5¢`, `0.05 USD`, `2 euros`, `0.05usd`.
//! - Latency: `within 200 ms`, `within 2 s`, `latency 200ms` — the slowest answer accepted.
//! - Deadline: `deadline 5 s`, `give up after 10 s` — no agreement by then ends the session.
//! - Strategy: `urgent`/`urgently`/`asap` → urgent; `baseline`; `banded` (the default).
//! - Seed: `seed 7` — the simulated providers' seed, to reproduce a run.
//!
//! Other words ("buy", "please", "for", "at most") are allowed and ignored.

use std::collections::BTreeSet;

use pactum_runtime::{Currency, IntentType, Money};

/// What a plain prompt asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlainRequest {
    pub intent_type: String,
    /// Major units, as `--max-price` takes them (`0.05`); `None` when the prompt names no price
    /// (the buyer's preferences then supply it, or the negotiation says how to give one).
    pub max_price: Option<String>,
    pub currency: Option<String>,
    pub latency_ms: Option<u32>,
    pub deadline_ms: Option<u64>,
    /// `None` when the prompt names none (the preferences' default, else banded, applies).
    pub strategy: Option<&'static str>,
    pub seed: Option<u64>,
}

/// Why a prompt was not understood, in words for the person who wrote it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NotUnderstood(pub String);

fn tokens(prompt: &str) -> Vec<String> {
    prompt
        .split_whitespace()
        .map(|word| {
            word.trim_end_matches([',', ';', '!', '?', ':'])
                .trim_end_matches('.')
                .trim_start_matches(['(', '"', '\''])
                .trim_end_matches([')', '"', '\''])
                .to_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

fn currency_word(word: &str) -> Option<Currency> {
    let code = match word {
        "dollar" | "dollars" | "usd" | "$" => "USD",
        "euro" | "euros" | "eur" | "€" => "EUR",
        "pound" | "pounds" | "gbp" | "£" => "GBP",
        "yen" | "jpy" | "¥" => "JPY",
        other if other.len() == 3 && other.bytes().all(|b| b.is_ascii_alphabetic()) => other,
        _ => return None,
    };
    Currency::parse(code).ok()
}

fn is_number(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.')
}

/// Splits `0.05usd`, `5¢`, `200ms` into number and unit; `$0.05` into unit and number.
fn split_glued(token: &str) -> Option<(String, String)> {
    for symbol in ["$", "€", "£", "¥"] {
        if let Some(number) = token.strip_prefix(symbol)
            && is_number(number)
        {
            return Some((number.to_owned(), symbol.to_owned()));
        }
    }
    let digits_end = token.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = token.split_at(digits_end);
    (is_number(number) && !unit.is_empty()).then(|| (number.to_owned(), unit.to_owned()))
}

/// The (number, unit) pairs of the prompt, with the index of the token each starts at.
fn quantities(words: &[String]) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    let mut index = 0;
    while index < words.len() {
        let word = &words[index];
        if is_number(word) {
            let unit = words.get(index + 1).cloned().unwrap_or_default();
            found.push((index, word.clone(), unit));
            index += 2;
            continue;
        }
        if let Some((number, unit)) = split_glued(word) {
            found.push((index, number, unit));
        }
        index += 1;
    }
    found
}

fn price_of(number: &str, unit: &str) -> Result<Option<(String, Currency)>, NotUnderstood> {
    if matches!(unit, "cent" | "cents" | "¢" | "c") {
        let cents: u64 =
            number.parse().map_err(|_| NotUnderstood(format!("{number} cents is not a whole number of cents")))?;
        let usd = Currency::parse("USD").map_err(|e| NotUnderstood(e.to_string()))?;
        let money = Money::from_minor(cents, usd).map_err(|e| NotUnderstood(e.to_string()))?;
        return Ok(Some((money.major_text(), usd)));
    }
    Ok(currency_word(unit).map(|currency| (number.to_owned(), currency)))
}

fn millis(number: &str, unit: &str) -> Option<u64> {
    let scale = match unit {
        "ms" | "millisecond" | "milliseconds" | "msec" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "mins" | "minute" | "minutes" => 60_000,
        _ => return None,
    };
    // Fractions of a unit (1.5 s) are fine if they come to whole milliseconds.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().ok()?;
    let mut ms = whole.checked_mul(scale)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok().filter(|&d| d <= 9)?;
        let part: u64 = fraction.parse().ok()?;
        let scaled = part.checked_mul(scale)?;
        let divisor = 10_u64.pow(digits);
        if scaled % divisor != 0 {
            return None;
        }
        ms = ms.checked_add(scaled / divisor)?;
    }
    Some(ms)
}

fn intent_type_of(words: &[String], known: &BTreeSet<&IntentType>) -> Result<String, NotUnderstood> {
    let present: BTreeSet<&str> = words.iter().map(String::as_str).collect();
    let matching: Vec<&str> = known
        .iter()
        .map(|t| t.as_str())
        .filter(|t| present.contains(t) || t.split(['.', '_', '-']).all(|part| present.contains(part)))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(NotUnderstood(format!(
            "I could not tell what to buy. Name one of: {}.",
            known.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(NotUnderstood(format!("That could be any of {}: name one.", many.join(", ")))),
    }
}

/// Parses a plain prompt against the intent types the directory offers.
pub fn parse(prompt: &str, known: &BTreeSet<&IntentType>) -> Result<PlainRequest, NotUnderstood> {
    let words = tokens(prompt);
    let intent_type = intent_type_of(&words, known)?;
    let mut price = None;
    let mut latency_ms = None;
    let mut deadline_ms = None;
    let mut seed = None;
    for (index, number, unit) in quantities(&words) {
        let before = |n: usize| index.checked_sub(n).and_then(|i| words.get(i)).map(String::as_str);
        if before(1) == Some("seed") {
            seed = Some(number.parse().map_err(|_| NotUnderstood(format!("seed {number} is not a whole number")))?);
            continue;
        }
        if let Some(found) = price_of(&number, &unit)? {
            if price.replace(found).is_some() {
                return Err(NotUnderstood("I found more than one price; give one maximum price.".into()));
            }
        } else if let Some(ms) = millis(&number, &unit) {
            let is_deadline = matches!(before(1), Some("deadline" | "after"))
                || (before(1) == Some("of") && before(2) == Some("deadline"));
            if is_deadline {
                deadline_ms = Some(ms);
            } else {
                let ms =
                    u32::try_from(ms).map_err(|_| NotUnderstood(format!("{number} {unit} is too long a latency")))?;
                latency_ms = Some(ms);
            }
        }
    }
    let (max_price, currency) = match price {
        Some((amount, currency)) => (Some(amount), Some(currency.code().to_owned())),
        None => (None, None),
    };
    let strategy = if words.iter().any(|w| matches!(w.as_str(), "urgent" | "urgently" | "asap")) {
        Some("urgent")
    } else if words.iter().any(|w| w == "baseline") {
        Some("baseline")
    } else if words.iter().any(|w| w == "banded") {
        Some("banded")
    } else {
        None
    };
    Ok(PlainRequest { intent_type, max_price, currency, latency_ms, deadline_ms, strategy, seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<IntentType> {
        ["weather.data", "compute.inference", "storage.blob"]
            .iter()
            .map(|t| IntentType::new(t).expect("type"))
            .collect()
    }

    fn run(prompt: &str) -> Result<PlainRequest, NotUnderstood> {
        let types = known();
        parse(prompt, &types.iter().collect())
    }

    #[test]
    fn the_example_from_the_help() {
        let request = run("buy weather data for at most 5 cents within 200 ms").expect("parses");
        assert_eq!(
            request,
            PlainRequest {
                intent_type: "weather.data".into(),
                max_price: Some("0.05".into()),
                currency: Some("USD".into()),
                latency_ms: Some(200),
                deadline_ms: None,
                strategy: None,
                seed: None,
            }
        );
    }

    #[test]
    fn prices_in_every_accepted_form() {
        for (prompt, price, currency) in [
            ("weather.data $0.05", "0.05", "USD"),
            ("weather data 5¢", "0.05", "USD"),
            ("get compute inference for 0.40 USD", "0.40", "USD"),
            ("storage blob under 2 euros", "2", "EUR"),
            ("storage blob for 0.05usd", "0.05", "USD"),
            ("inference compute, up to €1.5", "1.5", "EUR"),
            ("weather data for 120 cents", "1.20", "USD"),
        ] {
            let request = run(prompt).unwrap_or_else(|e| panic!("{prompt}: {e:?}"));
            assert_eq!(
                (request.max_price.as_deref(), request.currency.as_deref()),
                (Some(price), Some(currency)),
                "{prompt}"
            );
        }
    }

    #[test]
    fn latency_deadline_and_strategy() {
        let request = run("urgently buy weather data for $1 within 2 s, deadline 10 s").expect("parses");
        assert_eq!(
            (request.latency_ms, request.deadline_ms, request.strategy),
            (Some(2_000), Some(10_000), Some("urgent"))
        );
        let request = run("weather data $1 latency 150ms give up after 1.5 s baseline").expect("parses");
        assert_eq!(
            (request.latency_ms, request.deadline_ms, request.strategy),
            (Some(150), Some(1_500), Some("baseline"))
        );
        assert_eq!(run("weather data $1 seed 42").expect("parses").seed, Some(42));
    }

    #[test]
    fn what_is_not_understood_is_explained() {
        let no_item = run("buy something nice for 5 cents").expect_err("no item");
        assert!(
            no_item.0.contains("weather.data, compute.inference") || no_item.0.contains("compute.inference"),
            "{no_item:?}"
        );
        // Without a price the buyer's preferences supply one (or the negotiation says how to).
        let no_price = run("buy weather data").expect("understood");
        assert_eq!((no_price.max_price, no_price.currency), (None, None));
        let two = run("weather data for 5 cents or $1").expect_err("two prices");
        assert!(two.0.contains("more than one price"));
        let fraction = run("weather data for 2.5 cents").expect_err("fraction of a cent");
        assert!(fraction.0.contains("whole number"));
        assert!(run("").is_err());
    }
}
