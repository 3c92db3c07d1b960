//! `pactum rail check`: reads a payment rail's evidence from files with the runtime's adapters
//! (x402 settlement and payment requirements; Stripe PaymentIntent, Charge or webhook event),
//! optionally checks it against an expected payment, and prints the rail-neutral evidence with
//! the PEAC commerce extension it would produce. Rejected evidence is `RAIL_EVIDENCE_INVALID`
//! (exit 1) naming the adapter's reason. No network: the evidence is what the user hands over.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use pactum_runtime::rails::{Env, ExpectedPayment, PaymentEvidence, PaymentStatus, RailEvidenceError, stripe, x402};
use pactum_runtime::{Currency, Money};
use pactum_transcripts::peac::COMMERCE_EXTENSION;

use crate::clock::now_ms;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

/// Slack over an adapter's own limit when reading a file: a trailing newline or two. Anything
/// past the limit is still read (up to this) so the adapter refuses it by its own rule.
const FILE_SLACK_BYTES: usize = 64;

#[derive(Debug, Subcommand)]
pub enum RailCommand {
    /// Check a rail's evidence (files as received; no network) and print the rail-neutral
    /// evidence and its PEAC commerce extension, or fail with RAIL_EVIDENCE_INVALID and the reason.
    Check(CheckArgs),
}

impl RailCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::Check(args) => args.json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RailName {
    X402,
    Stripe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvName {
    Live,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusName {
    Settled,
    Pending,
    Failed,
    Refunded,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The rail the evidence comes from.
    #[arg(long, value_enum)]
    rail: RailName,
    /// x402 only: the payment requirements (JSON, one entry of the 402 response's accepts).
    #[arg(long, value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// x402: the X-PAYMENT-RESPONSE header value (surrounding whitespace ignored). Stripe: a
    /// PaymentIntent or Charge object, or a webhook event payload (the raw bytes as received).
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    /// Expected amount in major units (12.34); exact, with --currency.
    #[arg(long, requires = "currency", value_name = "DECIMAL")]
    amount: Option<String>,
    /// Expected currency (ISO 4217), with --amount.
    #[arg(long, requires = "amount", value_name = "CODE")]
    currency: Option<String>,
    /// Expected environment: live or test money.
    #[arg(long, value_enum)]
    env: Option<EnvName>,
    /// Expected status (settled for a payment, refunded for a refund).
    #[arg(long, value_enum)]
    status: Option<StatusName>,
    /// Stripe webhooks: the environment variable holding the endpoint secret (whsec_...).
    #[arg(long, value_name = "VAR", requires = "signature_header")]
    webhook_secret_env: Option<String>,
    /// Stripe webhooks: the Stripe-Signature header value, checked against the current time.
    #[arg(long, value_name = "VALUE", requires = "webhook_secret_env")]
    signature_header: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(command: RailCommand) -> Result<u8, Failure> {
    match command {
        RailCommand::Check(args) => check(&args),
    }
}

/// Reads at most `bytes_max` bytes and a little more, so an oversized file reaches the adapter
/// and is refused by its limit, never read whole.
fn read_bounded(path: &Path, bytes_max: usize) -> Result<Vec<u8>, Failure> {
    let label = path.display();
    let file = std::fs::File::open(path).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?;
    let limit = u64::try_from(bytes_max + FILE_SLACK_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?;
    Ok(bytes)
}

/// How a Stripe webhook's signature was handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signature {
    /// Not a webhook, or not a Stripe rail.
    NotApplicable,
    Verified,
    /// A webhook read without --webhook-secret-env and --signature-header.
    NotChecked,
}

impl Signature {
    fn as_json(self) -> Value {
        match self {
            Self::NotApplicable => Value::Null,
            Self::Verified => json!("verified"),
            Self::NotChecked => json!("not_checked"),
        }
    }
}

fn read_evidence(args: &CheckArgs) -> Result<Result<(PaymentEvidence, Signature), RailEvidenceError>, Failure> {
    match args.rail {
        RailName::X402 => {
            if args.webhook_secret_env.is_some() {
                return Err(Failure::new("USAGE", "--webhook-secret-env and --signature-header are for --rail stripe"));
            }
            let requirements_path = args.requirements.as_deref().ok_or_else(|| {
                Failure::new("USAGE", "--rail x402 needs --requirements FILE (the payment requirements paid against)")
            })?;
            let requirements = read_bounded(requirements_path, x402::REQUIREMENTS_BYTES_MAX)?;
            let header = read_bounded(&args.evidence, x402::PAYMENT_RESPONSE_BYTES_MAX)?;
            Ok(x402::evidence(&requirements, header.trim_ascii()).map(|evidence| (evidence, Signature::NotApplicable)))
        }
        RailName::Stripe => {
            if args.requirements.is_some() {
                return Err(Failure::new("USAGE", "--requirements is for --rail x402"));
            }
            let payload = read_bounded(&args.evidence, stripe::PAYLOAD_BYTES_MAX)?;
            if let (Some(variable), Some(header)) = (&args.webhook_secret_env, &args.signature_header) {
                let secret = std::env::var(variable)
                    .map_err(|_| Failure::new("USAGE", format!("--webhook-secret-env: ${variable} is not set")))?;
                let now_s = now_ms() / 1_000;
                let evidence = stripe::verified_webhook_evidence(&payload, header, &secret, now_s);
                return Ok(evidence.map(|evidence| (evidence, Signature::Verified)));
            }
            // Only to choose the adapter; the adapter parses the bytes again, strictly.
            let is_event = serde_json::from_slice::<Value>(&payload)
                .ok()
                .is_some_and(|value| value.get("object").and_then(Value::as_str) == Some("event"));
            if is_event {
                Ok(stripe::webhook_evidence(&payload).map(|evidence| (evidence, Signature::NotChecked)))
            } else {
                Ok(stripe::object_evidence(&payload).map(|evidence| (evidence, Signature::NotApplicable)))
            }
        }
    }
}

/// The expectation from the options; what was not given is taken from the evidence (so not
/// checked), and the names of what was given are returned.
fn expectation(args: &CheckArgs, evidence: &PaymentEvidence) -> Result<(ExpectedPayment, Vec<&'static str>), Failure> {
    let mut checked = Vec::new();
    let amount = match (&args.amount, &args.currency) {
        (Some(amount), Some(currency)) => {
            let currency = Currency::parse(currency).map_err(|error| Failure::new(error.code(), error.to_string()))?;
            checked.extend(["amount", "currency"]);
            Money::parse_major(amount, currency).map_err(|error| Failure::new(error.code(), error.to_string()))?
        }
        _ => evidence.amount,
    };
    let env = match args.env {
        Some(EnvName::Live) => Env::Live,
        Some(EnvName::Test) => Env::Test,
        None => evidence.env,
    };
    if args.env.is_some() {
        checked.push("env");
    }
    let status = match args.status {
        Some(StatusName::Settled) => PaymentStatus::Settled,
        Some(StatusName::Pending) => PaymentStatus::Pending,
        Some(StatusName::Failed) => PaymentStatus::Failed,
        Some(StatusName::Refunded) => PaymentStatus::Refunded,
        None => evidence.status,
    };
    if args.status.is_some() {
        checked.push("status");
    }
    Ok((ExpectedPayment { amount, env, status, reference: None }, checked))
}

fn evidence_json(evidence: &PaymentEvidence) -> Value {
    json!({
        "rail": evidence.rail,
        "amount_minor": evidence.amount.amount_minor(),
        "currency": evidence.amount.currency().code(),
        "reference": evidence.reference,
        "env": evidence.env.as_str(),
        "status": evidence.status.as_str(),
        "event": evidence.event,
        "asset": evidence.asset,
    })
}

fn check(args: &CheckArgs) -> Result<u8, Failure> {
    let outcome = read_evidence(args)?;
    let checked = match outcome {
        Ok((evidence, signature)) => {
            let (expected, checked) = expectation(args, &evidence)?;
            evidence.expect(&expected).map(|()| (evidence, signature, checked))
        }
        Err(error) => Err(error),
    };
    let (evidence, signature, checked) = match checked {
        Ok(accepted) => accepted,
        Err(error) => return Ok(rejected(args, &error)),
    };
    let commerce = evidence.to_commerce_extension();
    if args.json {
        print_json(&json!({
            "valid": true,
            "code": null,
            "reason": null,
            "message": null,
            "evidence": evidence_json(&evidence),
            "signature": signature.as_json(),
            "checked": checked,
            "commerce_extension": { COMMERCE_EXTENSION: commerce },
        }));
        return Ok(EXIT_OK);
    }
    let mut lines = vec![
        format!("VALID        {} evidence {}", evidence.rail, args.evidence.display()),
        format!("amount       {} ({} minor units)", evidence.amount, evidence.amount.amount_minor()),
        format!("reference    {}", evidence.reference),
        format!("env          {}", evidence.env.as_str()),
        format!("status       {}", evidence.status.as_str()),
    ];
    if let Some(event) = &evidence.event {
        lines.push(format!("event        {event}"));
    }
    if let Some(asset) = &evidence.asset {
        lines.push(format!("asset        {asset}"));
    }
    match signature {
        Signature::NotApplicable => {}
        Signature::Verified => lines.push("signature    Stripe-Signature verified".to_owned()),
        Signature::NotChecked => lines.push(
            "signature    NOT CHECKED: give --webhook-secret-env VAR and --signature-header VALUE to verify it"
                .to_owned(),
        ),
    }
    let checked_text = if checked.is_empty() { "nothing expected".to_owned() } else { checked.join(", ") };
    lines.push(format!("checked      {checked_text}"));
    lines.push(format!("commerce     {COMMERCE_EXTENSION} {commerce}"));
    print_lines(&lines);
    Ok(EXIT_OK)
}

/// Reports rejected evidence: a JSON verdict on stdout with --json, the error line on stderr.
fn rejected(args: &CheckArgs, error: &RailEvidenceError) -> u8 {
    // The detail may quote the file; its control characters must not reach the terminal.
    let message: String = format!("{} evidence {}: {error}", rail_id(args.rail), args.evidence.display())
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect();
    if args.json {
        print_json(&json!({
            "valid": false,
            "code": error.code(),
            "reason": error.reason().as_str(),
            "message": message,
            "evidence": null,
            "signature": null,
            "checked": null,
            "commerce_extension": null,
        }));
    }
    Failure::new(error.code(), message).report_on_stderr()
}

fn rail_id(rail: RailName) -> &'static str {
    match rail {
        RailName::X402 => x402::RAIL,
        RailName::Stripe => stripe::RAIL,
    }
}
