//! Command-line arguments (these names are a contract scripts rely on) and dispatch.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use clap::{Parser, Subcommand};
use pactum_memory::{Constellation, Durability, OpenOptions};
use pactum_transcripts::Clock as _;

use crate::failure::Failure;
use crate::{
    budget_cmd, bundle_cmd, constellation_cmd, contracts_cmd, home, keys_cmd, memory_cmd, negotiate_cmd, passport_cmd,
    policy_cmd, providers_cmd, rail_cmd, session_cmd, transcript_cmd,
};

fn long_version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{}\nconstellation schema: {}\ntranscript format: {}",
            env!("CARGO_PKG_VERSION"),
            pactum_memory::SCHEMA_VERSION,
            pactum_transcripts::FORMAT
        )
    });
    TEXT.as_str()
}

/// Pactum: negotiate, settle and keep verifiable records, from your editor or the command line.
#[derive(Debug, Parser)]
#[command(name = "pactum", version, long_version = long_version(), propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok/valid, 1 tampered or invalid, 2 usage or I/O error, 3 the negotiation failed (its PACT code is in the output). Logs: RUST_LOG=debug."
)]
pub struct Cli {
    /// Constellation to use: a name (stored under $PACTUM_HOME/constellations/<name>.db) or a
    /// path to a .db file. Created on first use.
    #[arg(long, global = true, env = "PACTUM_CONSTELLATION", value_name = "NAME|PATH")]
    constellation: Option<String>,

    /// Provider directory file (pactum-directory/1 TOML) to use instead of the built-in one.
    #[arg(long, global = true, env = "PACTUM_DIRECTORY", value_name = "FILE")]
    directory: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Negotiate with the providers offering INTENT_TYPE, settle and print the receipt.
    ///
    /// Rounds are printed as they happen. Without --yes, you are asked before any money moves
    /// (and the command refuses to run when stdin is not a terminal). --seed and --clock make a
    /// run reproducible: the same constellation given the same command produces the same
    /// transcript, byte for byte.
    Negotiate(negotiate_cmd::NegotiateArgs),
    /// List, show, replay, resume or abort negotiation sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Show or verify signed receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// List, show, verify, export and import hash-linked transcripts.
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// Agents' versioned memory: show, set, edit, log, diff and roll back blocks; search archival
    /// passages. Every change is a version; nothing removes one.
    Memory {
        #[command(flatten)]
        options: memory_cmd::MemoryOptions,
        #[command(subcommand)]
        command: memory_cmd::MemoryCommand,
    },
    /// Agents' records as counterparties: scores, confidence and the passport gate, from the
    /// transcripts that verify.
    #[command(subcommand)]
    Passport(passport_cmd::PassportCommand),
    /// Verify evidence bundles written by `pactum transcript bundle`.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Policies as code (pactum-policy/2, rules in CEL): check, store, list, show, and explain
    /// a session's policy decisions.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Inspect or back up the constellation file.
    #[command(subcommand)]
    Constellation(ConstellationCommand),
    /// The simulated providers negotiations can use.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Serve a provider of the directory to remote buyers over HTTP (`provider serve`).
    #[command(subcommand)]
    Provider(crate::provider_cmd::ProviderCommand),
    /// The agents of the constellation and their public keys.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Spending constraints on an agent (a budget per period, a number of payments, a validity
    /// period), checked before every payment: set, show, remove.
    #[command(subcommand)]
    Budget(budget_cmd::BudgetCommand),
    /// Agents' keys: list them, publish a JWKS, rotate an agent to a new key, revoke a key.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Payment rails' evidence: check an x402 settlement or a Stripe PaymentIntent, Charge or
    /// webhook (files as received, no network) and print the rail-neutral evidence.
    #[command(subcommand)]
    Rail(rail_cmd::RailCommand),
    /// Serve the Agent Client Protocol on stdin/stdout, for editors (Zed, JetBrains, Neovim) and
    /// scripts. A session opened in a directory containing .pactum/ uses .pactum/constellation.db.
    Acp,
    /// Every ledger account and its balance, with the total of each currency (always zero).
    Balance {
        #[arg(long)]
        json: bool,
    },
    /// What commands produced: receipts, transcripts, exports, bundles, backups, each with the
    /// execution that made it, its parents and where it is.
    #[command(subcommand)]
    Artifact(contracts_cmd::ArtifactCommand),
    /// Commands that did work, as executions: their intent, status and log.
    #[command(subcommand)]
    Execution(contracts_cmd::ExecutionCommand),
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Every session of the constellation, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A session's events, one line each, and its outcome.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-run every recorded input through the runtime and check each recorded decision against
    /// the recomputed one (exit 1 naming the first divergence).
    Replay {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Drive on a session whose process stopped (settlements in flight are finished, never doubled).
    Resume {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Abort a session still negotiating (records ABORT and PACT-312).
    Abort {
        id: String,
        #[arg(long, default_value = "aborted by the buyer")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// A completed session's receipt, verified against its transcript.
    Show {
        /// Session id.
        session: String,
        /// Print the receipt itself (the signed JSON object).
        #[arg(long)]
        json: bool,
        /// Show the PEAC interaction record (compact JWS) instead: the JWS, its header and claims
        /// and its receipt_ref (with --json, one document with those).
        #[arg(long)]
        peac: bool,
    },
    /// Verify a receipt on its own (exit 1 if it does not verify): a pactum-receipt/1 JSON file,
    /// or a PEAC receipt (compact JWS) given inline or in a file, recognised by its content.
    ///
    /// A PEAC receipt is checked against --jwks FILE, or --public-key (under the receipt's kid),
    /// or else the constellation's own agent keys with its revocation list.
    Verify {
        /// A file, or a compact JWS (header.payload.signature) given inline.
        receipt: String,
        /// PEAC only: a JWKS file ({"keys":[...], "revoked_keys":[...]}).
        #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
        jwks: Option<PathBuf>,
        /// PEAC only: the issuer's Ed25519 public key (unpadded base64url), for the receipt's kid.
        #[arg(long, value_name = "BASE64URL")]
        public_key: Option<String>,
        /// PEAC only: the issuer the receipt must name (iss), else E_ISSUER_MISMATCH.
        #[arg(long, value_name = "ISS")]
        issuer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents: id, role, name, key id and public key (never the secret key).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// List the providers in the directory (the built-in one, or --directory FILE).
    List {
        #[arg(long)]
        json: bool,
    },
}

/// File formats `pactum transcript export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `pactum-transcript/1` JSON Lines.
    #[value(name = "pactum-v1")]
    PactumV1,
    /// `pact-transcript/4.0` JSON.
    #[value(name = "pact-v4")]
    PactV4,
}

#[derive(Debug, Subcommand)]
pub enum TranscriptCommand {
    /// List the transcripts in the constellation.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a transcript's events.
    Show {
        /// Transcript (stream) id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify a stored transcript, a .jsonl file or a PACT v4 JSON file (recognised by its
    /// content); exit 0 valid, 1 tampered or invalid.
    Verify {
        /// A transcript id, or a file (anything containing '/' or ending in .jsonl, or an existing file).
        target: String,
        /// PACT v4 files only: a TAMPERED verdict is still reported as TAMPERED, but exits 0
        /// (an INVALID document still exits 1).
        #[arg(long)]
        allow_compromised: bool,
        /// Trusted public keys for a file, as a JSON object {"<key id>": "<base64url key>"};
        /// without it, a file is checked against the keys in its own header.
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
        /// Require every event to be signed by a trusted key (with --keys, this proves who wrote
        /// every event: unsigned events could otherwise replace signed ones).
        #[arg(long)]
        require_signed: bool,
        /// The head hash you obtained independently; the transcript must end exactly there
        /// (detects a rewritten or shortened file whose header was rewritten too).
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Export a transcript as a pactum-transcript/1 JSON Lines file, or a session as a PACT v4
    /// transcript (`--format pact-v4`).
    Export {
        id: String,
        /// `pactum-v1`: the pactum-transcript/1 JSON Lines file; `pact-v4`: a pact-transcript/4.0
        /// JSON document (sessions only, canonical JSON, the same bytes every time).
        #[arg(long, value_enum, default_value_t = ExportFormat::PactumV1)]
        format: ExportFormat,
        /// Write to FILE instead of stdout (written whole, then renamed into place).
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
    /// Tell what happened in a negotiation, from its transcript (stored, or a .jsonl file) once
    /// it verifies: who offered what, policy and passport decisions, the failure with its code,
    /// fault and evidence, the receipt.
    Replay {
        /// A session id, a transcript id, or a file.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Import a pactum-transcript/1 file; it is verified before anything is stored.
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a session's evidence bundle (pactum-bundle/1) to DIR: its transcript, receipt,
    /// policy and a manifest, with field commitments signed by the buyer (docs/BUNDLES.md).
    Bundle {
        /// Session id.
        session: String,
        /// Directory to create (an existing one must be empty, unless --force).
        dir: PathBuf,
        /// full: everything; partner: what a provider may see; auditor: all but the seed and
        /// the preferences. Every view carries the same signed commitments root.
        #[arg(long, value_enum, default_value = "full")]
        view: bundle_cmd::ViewArg,
        /// Replace DIR if it exists and is not empty.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check that a buyer's session and a remote provider's record of it agree: both files
    /// (pactum-transcript/1, exported from each constellation) verify, name the same session and
    /// keys, and every message one side sent is in the other's record, the same (docs/REMOTE.md).
    Agree {
        /// The buyer's session transcript (`session:<id>`), exported by the buyer.
        buyer: PathBuf,
        /// The provider's record of it (`remote:<id>:<provider>:<buyer>`), exported by the provider.
        provider: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Verify a bundle directory: every file as listed, the transcript, receipt, policy and the
    /// signed commitments (exit 0 valid, 1 naming each problem).
    Verify {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConstellationCommand {
    /// Path, schema version, sizes and counts.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Check the whole constellation, like git fsck: every transcript and the ledger's invariants
    /// (exit 1 naming each problem).
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Copy the constellation to DEST with SQLite's online backup API.
    Backup {
        dest: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// Whether the chosen command asked for JSON output (errors are then also JSON).
    pub fn json_output(&self) -> bool {
        match &self.command {
            Command::Negotiate(args) => args.json,
            Command::Session(
                SessionCommand::List { json }
                | SessionCommand::Show { json, .. }
                | SessionCommand::Replay { json, .. }
                | SessionCommand::Resume { json, .. }
                | SessionCommand::Abort { json, .. },
            ) => *json,
            Command::Receipt(ReceiptCommand::Show { json, .. } | ReceiptCommand::Verify { json, .. }) => *json,
            Command::Transcript(
                TranscriptCommand::List { json }
                | TranscriptCommand::Show { json, .. }
                | TranscriptCommand::Verify { json, .. }
                | TranscriptCommand::Import { json, .. }
                | TranscriptCommand::Replay { json, .. }
                | TranscriptCommand::Bundle { json, .. }
                | TranscriptCommand::Agree { json, .. },
            ) => *json,
            Command::Bundle(BundleCommand::Verify { json, .. }) => *json,
            Command::Transcript(TranscriptCommand::Export { .. }) => false,
            Command::Constellation(
                ConstellationCommand::Info { json }
                | ConstellationCommand::Check { json }
                | ConstellationCommand::Backup { json, .. },
            ) => *json,
            Command::Providers(ProvidersCommand::List { json })
            | Command::Agents(AgentsCommand::List { json })
            | Command::Balance { json } => *json,
            Command::Memory { options, command } => {
                options.json && !matches!(command, memory_cmd::MemoryCommand::Export { out: None, .. })
            }
            Command::Passport(command) => command.json(),
            Command::Keys(command) => command.json(),
            Command::Budget(command) => command.json(),
            Command::Rail(command) => command.json(),
            Command::Policy(command) => command.json(),
            Command::Provider(command) => command.json(),
            Command::Artifact(command) => command.json(),
            Command::Execution(command) => command.json(),
            Command::Acp => false,
        }
    }
}

/// What commands need from the environment: the constellation, opened on demand.
///
/// The constellation is opened once per context (clones share it), so the commands of one
/// invocation, and the slash commands of one editor workspace, use one connection. A context
/// running an execution binds it to the constellation the first time it opens it.
#[derive(Debug, Clone)]
pub struct Context {
    constellation: Option<String>,
    directory: Option<PathBuf>,
    opened: Arc<Mutex<Option<Arc<Constellation>>>>,
    binding: Option<pactum_runtime::contracts::Binding>,
}

impl Context {
    /// A context naming a constellation (name or path) and, optionally, a directory file.
    pub fn new(constellation: Option<String>, directory: Option<PathBuf>) -> Self {
        Self { constellation, directory, opened: Arc::default(), binding: None }
    }

    /// This context for the work of one execution.
    pub fn for_execution(&self, binding: pactum_runtime::contracts::Binding) -> Self {
        Self { binding: Some(binding), ..self.clone() }
    }

    /// The constellation's path (it need not exist).
    pub fn constellation_path(&self) -> Result<PathBuf, Failure> {
        home::resolve(self.constellation.as_deref())
    }

    fn cached(&self) -> Option<Arc<Constellation>> {
        self.opened.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn keep(&self, db: Constellation) -> Arc<Constellation> {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(opened.get_or_insert_with(|| Arc::new(db)))
    }

    fn bind(&self, db: &Arc<Constellation>) -> Result<(), Failure> {
        match &self.binding {
            Some(binding) => Ok(binding.bind(db)?),
            None => Ok(()),
        }
    }

    /// The global options that name this context, for running a command in it.
    pub fn global_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(constellation) = &self.constellation {
            args.extend(["--constellation".to_owned(), constellation.clone()]);
        }
        if let Some(directory) = &self.directory {
            args.extend(["--directory".to_owned(), directory.display().to_string()]);
        }
        args
    }

    /// The provider directory: `--directory FILE`, else the built-in one.
    pub fn directory(&self) -> Result<pactum_runtime::Directory, Failure> {
        let directory = match &self.directory {
            Some(path) => pactum_runtime::Directory::load(path),
            None => pactum_runtime::Directory::builtin(),
        };
        directory.map_err(|error| Failure::new(error.code(), error.to_string()))
    }

    /// Opens the selected constellation, creating it on first use. A new constellation gets its
    /// key root (from which its agents' keys derive) from the OS at once, so every copy of the
    /// file derives the same identities.
    pub fn open(&self) -> Result<Arc<Constellation>, Failure> {
        let db = match self.cached() {
            Some(db) => db,
            None => {
                let path = home::resolve(self.constellation.as_deref())?;
                self.keep(Constellation::open_with(&path, OpenOptions { durability: durability()?, create: true })?)
            }
        };
        let candidate = pactum_memory::SecretSeed::new(pactum_runtime::session::shell::KeyEntropy::key_seed(
            &crate::edge::OsEntropy,
        ));
        db.ensure_key_root(&candidate, crate::clock::SystemClock.now_ms())?;
        self.bind(&db)?;
        Ok(db)
    }

    /// Opens the selected constellation if it exists. Commands that only read use this, so a
    /// typo or a query on a fresh machine never creates a file. `Err` carries the path for messages.
    pub fn open_existing(&self) -> Result<Result<Arc<Constellation>, PathBuf>, Failure> {
        if let Some(db) = self.cached() {
            self.bind(&db)?;
            return Ok(Ok(db));
        }
        let path = home::resolve(self.constellation.as_deref())?;
        match Constellation::open_with(&path, OpenOptions { durability: durability()?, create: false }) {
            Ok(db) => {
                let db = self.keep(db);
                self.bind(&db)?;
                Ok(Ok(db))
            }
            Err(pactum_memory::StoreError::NotFound { path }) => Ok(Err(path)),
            Err(error) => Err(error.into()),
        }
    }
}

fn durability() -> Result<Durability, Failure> {
    match std::env::var("PACTUM_DURABILITY") {
        Err(_) => Ok(Durability::default()),
        Ok(value) => Durability::parse(&value).ok_or_else(|| {
            Failure::new("BAD_DURABILITY", format!("PACTUM_DURABILITY={value:?}: expected process or power-loss"))
        }),
    }
}

/// Runs the parsed command from the command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    run_as(cli, std::env::args().skip(1).collect(), crate::intents::SOLUTION_CLI)
}

/// Runs the parsed command given by `argv` (without the program name) for `solution_id` (the
/// front end: `cli`, `acp:<conversation>`). A command that does work runs as an intent through
/// the registry ([`crate::intents`]); one that only reads runs as is.
pub fn run_as(cli: Cli, argv: Vec<String>, solution_id: &str) -> Result<u8, Failure> {
    let context = Context::new(cli.constellation, cli.directory);
    match crate::intents::intent_of(&cli.command) {
        Some(intent) => crate::intents::execute(&context, cli.command, intent, argv, solution_id),
        None => dispatch(&context, cli.command),
    }
}

/// Runs a command with its own function (the handler of its intent, when it has one).
pub(crate) fn dispatch(context: &Context, command: Command) -> Result<u8, Failure> {
    let context = context.clone();
    match command {
        Command::Negotiate(args) => negotiate_cmd::run(&context, args),
        Command::Session(command) => session_cmd::run(&context, command),
        Command::Receipt(command) => session_cmd::run_receipt(&context, command),
        Command::Transcript(command) => transcript_cmd::run(&context, command),
        Command::Memory { options, command } => memory_cmd::run(&context, &options, command),
        Command::Bundle(BundleCommand::Verify { dir, json }) => bundle_cmd::verify(&dir, json),
        Command::Constellation(command) => constellation_cmd::run(&context, command),
        Command::Passport(command) => passport_cmd::run(&context, command),
        Command::Policy(command) => policy_cmd::run(&context, command),
        Command::Providers(command) => providers_cmd::run(&context, command),
        Command::Provider(command) => crate::provider_cmd::run(&context, command),
        Command::Agents(AgentsCommand::List { json }) => providers_cmd::list_agents(&context, json),
        Command::Keys(command) => keys_cmd::run(&context, command),
        Command::Budget(command) => budget_cmd::run(&context, command),
        Command::Rail(command) => rail_cmd::run(command),
        Command::Balance { json } => providers_cmd::balance(&context, json),
        Command::Artifact(command) => contracts_cmd::run_artifact(&context, command),
        Command::Execution(command) => contracts_cmd::run_execution(&context, command),
        Command::Acp => Ok(crate::acp::serve_code(crate::acp::state::Options {
            constellation: context.constellation,
            directory: context.directory,
        })),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks the whole command tree (duplicate names, conflicting flags) only when a
    /// subcommand is used; this checks every one at once.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
