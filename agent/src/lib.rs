//! The `pactum` program: the command-line interface and the ACP server (`pactum acp`).
//!
//! This is the only crate that prints. Human output goes to stdout, `--json` output is one JSON
//! document on stdout, errors are one line `error[CODE]: message` on stderr, and logs go through
//! `tracing` to stderr (`RUST_LOG`). Exit codes: 0 success or valid, 1 tampered or invalid
//! content, 2 usage or I/O error.

mod acp;
mod budget_cmd;
mod bundle_cmd;
mod cli;
mod clock;
mod constellation_cmd;
mod contracts_cmd;
mod edge;
mod failure;
mod home;
mod intents;
mod keys_cmd;
mod memory_cmd;
mod negotiate_cmd;
mod output;
mod passport_cmd;
mod peac_cmd;
mod policy_cmd;
pub mod provider_cmd;
mod providers_cmd;
mod rail_cmd;
mod replay_cmd;
mod session_cmd;
mod session_view;
mod transcript_cmd;

use std::process::ExitCode;

use clap::Parser as _;

pub use acp::serve_lines as serve_acp_lines;
pub use acp::state::Options as AcpOptions;
pub use failure::{EXIT_INVALID, EXIT_NEGOTIATION_FAILED, EXIT_OK, EXIT_USAGE};

/// Runs the program with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_logging();
    let json = cli.json_output();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(json),
    }
}

fn init_logging() {
    use std::io::IsTerminal as _;
    // The ACP library logs every error answer it sends at `warn`; an editor's log needs only its
    // real failures, so it is quieter by default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,agent_client_protocol=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
