//! Slash commands in the editor, and what every other prompt means. `/negotiate` takes exactly
//! the arguments of `pactum negotiate`; the other commands run the same code as the matching
//! `pactum` subcommand, with their output as the agent's message.

use std::path::Path;

use agent_client_protocol::v1::schema as acp;
use clap::Parser as _;

use crate::acp::plain;
use crate::negotiate_cmd::NegotiateArgs;

/// `/negotiate ARGS`: the arguments of `pactum negotiate`.
#[derive(Debug, clap::Parser)]
#[command(name = "/negotiate", disable_version_flag = true)]
struct SlashNegotiate {
    #[command(flatten)]
    args: NegotiateArgs,
}

/// What a prompt asks for.
#[derive(Debug)]
pub enum Request {
    Negotiate(Box<NegotiateArgs>),
    /// A `pactum` subcommand's arguments (after the global options).
    Cli(Vec<String>),
    /// `/memory VERB ...`: the words after `/memory`.
    Memory(Vec<String>),
    /// Where the conversation stands (constellation, mode, latest negotiation).
    Status,
    /// A text answer (help, usage, or what was not understood).
    Answer(String),
}

/// The commands announced with `available_commands_update`, with their input hints.
pub fn available() -> Vec<acp::AvailableCommand> {
    let command = |name: &str, description: &str, hint: Option<&str>| {
        let command = acp::AvailableCommand::new(name.to_owned(), description.to_owned());
        match hint {
            Some(hint) => command
                .input(acp::AvailableCommandInput::Unstructured(acp::UnstructuredCommandInput::new(hint.to_owned()))),
            None => command,
        }
    };
    vec![
        command(
            "negotiate",
            "Negotiate with providers, settle after you approve, and get a signed receipt",
            Some(
                "<intent-type> --max-price <amount> --currency <ISO> [--latency-ms N] [--strategy baseline|banded|urgent]",
            ),
        ),
        command("status", "The constellation, the approval mode and the latest negotiation", Some("[session id]")),
        command("sessions", "Every negotiation session of this constellation", None),
        command(
            "transcript",
            "Show, verify, replay or export a session's hash-linked transcript",
            Some("show|verify|replay|export <session or transcript id> [--out FILE]"),
        ),
        command("receipt", "A completed session's signed receipt, verified", Some("<session id>")),
        command(
            "passport",
            "An agent's record as a counterparty: score, confidence and their breakdown",
            Some("<agent> [--as-of TIME]"),
        ),
        command(
            "memory",
            "The agent's versioned memory: list, show, set, append, log, diff, rollback, export, import, search",
            Some(
                "list | show <label>[@<version>] | set <label> <text> | append <label> <text> | log <label> | diff <label> <a> <b> | rollback <label> <version> | search <query>",
            ),
        ),
        command(
            "budget",
            "Spending limits on the buyer: where each stands, set one, remove one",
            Some("[show] | set --amount <amount> --currency <ISO> [--per day|week|30d] [--max-uses N] | remove <name>"),
        ),
        command("providers", "The providers negotiations can use", None),
        command("balance", "Every ledger account and its balance", None),
        command("help", "What Pactum understands", None),
    ]
}

/// The answer to `/help` and to prompts that are not understood.
pub fn help() -> String {
    "Pactum negotiates with providers, settles after you approve, and keeps a signed, hash-linked record.\n\n\
     Commands:\n\
     - /negotiate <intent-type> --max-price <amount> --currency <ISO> [--latency-ms N] [--deadline-ms N] [--strategy baseline|banded|urgent] [--seed N]\n\
     - /status [session id]\n\
     - /sessions\n\
     - /transcript show|verify|replay|export <id> [--out FILE]\n\
     - /receipt <session id>\n\
     - /passport <agent> [--as-of TIME]\n\
     - /memory list | show <label>[@<version>] | set <label> <text> | append <label> <text> | log <label> | diff <label> <a> <b> | rollback <label> <version> | export <label> | import <file> | search <query> | archive <text>\n\
     - /budget [show] | set --amount <amount> --currency <ISO> [--per day|week|30d] [--max-uses N] [--name NAME] | remove <name>\n\
     - /providers\n\
     - /balance\n\
     - /help\n\n\
     Or ask in plain words, for example \"buy weather data for at most 5 cents within 200 ms\": \
     name what to buy (an intent type or its words), the most you will pay ($0.05, 5 cents, 0.40 USD), \
     and optionally a latency (within 200 ms), a deadline (deadline 5 s), urgency (urgently) or a seed (seed 7).\n\
     The approval mode (ask, auto, read-only) is a session option of your editor."
        .to_owned()
}

fn absolute(cwd: &Path, path: &str) -> String {
    let candidate = Path::new(path);
    if candidate.is_absolute() { path.to_owned() } else { cwd.join(candidate).display().to_string() }
}

/// Makes the values of path options absolute against the conversation's directory.
fn absolutize_options(words: &mut [String], cwd: &Path, options: &[&str]) {
    let mut index = 0;
    while index < words.len() {
        if options.contains(&words[index].as_str()) && index + 1 < words.len() {
            words[index + 1] = absolute(cwd, &words[index + 1]);
            index += 2;
            continue;
        }
        for option in options {
            if let Some(value) = words[index].strip_prefix(&format!("{option}=")) {
                words[index] = format!("{option}={}", absolute(cwd, value));
            }
        }
        index += 1;
    }
}

/// A negotiation session id from `s-...` or `session:s-...`.
pub fn session_id_of(id: &str) -> String {
    id.strip_prefix(pactum_runtime::session::model::SESSION_STREAM_PREFIX).unwrap_or(id).to_owned()
}

fn transcript_id_of(id: &str) -> String {
    if id.contains(':') {
        id.to_owned()
    } else {
        format!("{}{id}", pactum_runtime::session::model::SESSION_STREAM_PREFIX)
    }
}

fn slash(name: &str, mut words: Vec<String>, cwd: &Path) -> Request {
    let usage = |text: &str| Request::Answer(format!("Usage: {text}\n\n{}", help()));
    match name {
        "negotiate" => {
            absolutize_options(&mut words, cwd, &["--policy", "--constraint"]);
            let argv = std::iter::once("/negotiate".to_owned()).chain(words);
            match SlashNegotiate::try_parse_from(argv) {
                Ok(parsed) => Request::Negotiate(Box::new(parsed.args)),
                Err(error) => Request::Answer(error.render().to_string()),
            }
        }
        "status" => match words.as_slice() {
            [] => Request::Status,
            [id] => Request::Cli(vec!["session".into(), "show".into(), session_id_of(id)]),
            _ => usage("/status [session id]"),
        },
        "sessions" if words.is_empty() => Request::Cli(vec!["session".into(), "list".into()]),
        "sessions" => usage("/sessions"),
        "transcript" => {
            let mut words = words.into_iter();
            let (Some(action), Some(id)) = (words.next(), words.next()) else {
                return usage("/transcript show|verify|replay|export <id> [--out FILE]");
            };
            let mut rest: Vec<String> = words.collect();
            absolutize_options(&mut rest, cwd, &["--out", "-o", "--keys"]);
            let (command, target) = match action.as_str() {
                "show" => (vec!["transcript", "show"], transcript_id_of(&id)),
                "verify" if id.ends_with(".jsonl") || id.contains('/') => {
                    (vec!["transcript", "verify"], absolute(cwd, &id))
                }
                "verify" => (vec!["transcript", "verify"], transcript_id_of(&id)),
                "replay" if id.ends_with(".jsonl") || id.contains('/') => {
                    (vec!["transcript", "replay"], absolute(cwd, &id))
                }
                "replay" => (vec!["transcript", "replay"], transcript_id_of(&id)),
                "export" => (vec!["transcript", "export"], transcript_id_of(&id)),
                _ => return usage("/transcript show|verify|replay|export <id> [--out FILE]"),
            };
            let mut argv: Vec<String> = command.into_iter().map(str::to_owned).collect();
            argv.push(target);
            argv.extend(rest);
            Request::Cli(argv)
        }
        "passport" => match words.as_slice() {
            [agent, rest @ ..] if matches!(rest, [] | [_, _]) && rest.first().is_none_or(|o| o == "--as-of") => {
                let mut argv = vec!["passport".to_owned(), "show".to_owned(), agent.clone()];
                argv.extend(rest.iter().cloned());
                Request::Cli(argv)
            }
            _ => usage("/passport <agent> [--as-of TIME]"),
        },
        "receipt" => match words.as_slice() {
            [id] => Request::Cli(vec!["receipt".into(), "show".into(), session_id_of(id)]),
            _ => usage("/receipt <session id>"),
        },
        "budget" => {
            absolutize_options(&mut words, cwd, &["--file"]);
            let mut argv = vec!["budget".to_owned()];
            match words.first().map(String::as_str) {
                None => argv.push("show".into()),
                Some("show" | "set" | "remove") => {}
                Some(_) => return usage("/budget [show] | set --amount <amount> --currency <ISO> ... | remove <name>"),
            }
            argv.extend(words);
            Request::Cli(argv)
        }
        "providers" if words.is_empty() => Request::Cli(vec!["providers".into(), "list".into()]),
        "balance" if words.is_empty() => Request::Cli(vec!["balance".into()]),
        "providers" | "balance" => usage(&format!("/{name}")),
        "memory" if words.is_empty() => usage("/memory list | show <label>[@<version>] | set <label> <text> | ..."),
        "memory" => {
            absolutize_options(&mut words, cwd, &["--out", "-o"]);
            if words.first().map(String::as_str) == Some("import") && words.len() > 1 {
                words[1] = absolute(cwd, &words[1]);
            }
            Request::Memory(words)
        }
        "help" => Request::Answer(help()),
        other => Request::Answer(format!("/{other} is not a Pactum command.\n\n{}", help())),
    }
}

/// Reads a prompt: a slash command, or a plain request parsed with [`plain::parse`].
pub fn parse(
    text: &str,
    cwd: &Path,
    intent_types: &std::collections::BTreeSet<&pactum_runtime::IntentType>,
) -> Request {
    let text = text.trim();
    if text.is_empty() {
        return Request::Answer(help());
    }
    if let Some(command) = text.strip_prefix('/') {
        let words = match shell_words::split(command) {
            Ok(words) => words,
            Err(error) => {
                return Request::Answer(format!(
                    "I could not read that command ({error}): check its quotes.\n\n{}",
                    help()
                ));
            }
        };
        let mut words = words.into_iter();
        let name = words.next().unwrap_or_default();
        return slash(&name, words.collect(), cwd);
    }
    if matches!(text.to_lowercase().as_str(), "help" | "?" | "what can you do" | "what can you do?") {
        return Request::Answer(help());
    }
    match plain::parse(text, intent_types) {
        Ok(request) => Request::Negotiate(Box::new(plain_args(request))),
        Err(plain::NotUnderstood(why)) => Request::Answer(format!("{why}\n\n{}", help())),
    }
}

/// A request read from plain words, with `/negotiate`'s defaults for everything it leaves out.
fn plain_args(request: plain::PlainRequest) -> NegotiateArgs {
    NegotiateArgs {
        intent_type: request.intent_type,
        max_price: request.max_price,
        currency: request.currency,
        latency_ms: request.latency_ms,
        deadline_ms: request.deadline_ms,
        scope: String::new(),
        urgency: "normal".into(),
        strategy: request.strategy.map(str::to_owned),
        seed: request.seed,
        clock: None,
        policy: None,
        constraint: Vec::new(),
        coalition: Vec::new(),
        parallel: None,
        broker: None,
        broker_margin: 10,
        starting_balance: None,
        yes: false,
        json: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<pactum_runtime::IntentType> {
        ["weather.data", "compute.inference"]
            .iter()
            .map(|t| pactum_runtime::IntentType::new(t).expect("type"))
            .collect()
    }

    fn read(text: &str) -> Request {
        let types = types();
        parse(text, Path::new("/project"), &types.iter().collect())
    }

    #[test]
    fn negotiate_takes_the_cli_arguments() {
        let Request::Negotiate(args) = read("/negotiate weather.data --max-price 0.05 --currency USD --policy p.toml")
        else {
            panic!("not a negotiation");
        };
        assert_eq!(
            (args.intent_type.as_str(), args.max_price.as_deref(), args.currency.as_deref()),
            ("weather.data", Some("0.05"), Some("USD"))
        );
        assert_eq!(args.policy.as_deref(), Some(Path::new("/project/p.toml")));
        // Without a price the buyer's preferences supply it (or the negotiation says how to).
        let Request::Negotiate(args) = read("/negotiate weather.data") else { panic!("not a negotiation") };
        assert_eq!((args.max_price, args.currency, args.strategy), (None, None, None));
        let Request::Answer(text) = read("/negotiate") else { panic!("usage expected") };
        assert!(text.contains("<INTENT_TYPE>"), "{text}");
    }

    #[test]
    fn plain_words_become_a_negotiation() {
        let Request::Negotiate(args) = read("buy weather data for at most 5 cents within 200 ms") else {
            panic!("not a negotiation");
        };
        assert_eq!(
            (args.max_price.as_deref(), args.latency_ms, args.strategy.as_deref()),
            (Some("0.05"), Some(200), None)
        );
    }

    #[test]
    fn other_commands_map_to_the_cli() {
        let cli = |text: &str| match read(text) {
            Request::Cli(argv) => argv,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(cli("/sessions"), ["session", "list"]);
        assert_eq!(cli("/transcript replay session:s-1"), ["transcript", "replay", "session:s-1"]);
        assert_eq!(cli("/transcript replay s-1"), ["transcript", "replay", "session:s-1"]);
        assert_eq!(cli("/passport tensor-forge"), ["passport", "show", "tensor-forge"]);
        assert_eq!(cli("/budget"), ["budget", "show"]);
        assert_eq!(
            cli("/budget set --amount 5 --currency USD --per day"),
            ["budget", "set", "--amount", "5", "--currency", "USD", "--per", "day"]
        );
        assert_eq!(cli("/budget remove daily"), ["budget", "remove", "daily"]);
        assert_eq!(
            cli("/passport tensor-forge --as-of 2026-11-20T00:00:00Z"),
            ["passport", "show", "tensor-forge", "--as-of", "2026-11-20T00:00:00Z"]
        );
        assert_eq!(cli("/transcript show s-1"), ["transcript", "show", "session:s-1"]);
        assert_eq!(
            cli("/transcript export s-1 --out t.jsonl"),
            ["transcript", "export", "session:s-1", "--out", "/project/t.jsonl"]
        );
        assert_eq!(cli("/receipt s-1"), ["receipt", "show", "s-1"]);
        assert_eq!(cli("/balance"), ["balance"]);
        assert!(matches!(read("/status"), Request::Status));
    }

    #[test]
    fn what_is_not_understood_gets_help() {
        for text in ["/frobnicate", "hello there", "/transcript", "/negotiate 'unclosed", ""] {
            let Request::Answer(answer) = read(text) else { panic!("{text}: not an answer") };
            assert!(answer.contains("/negotiate"), "{text}: {answer}");
        }
    }
}
