//! Failures as the user sees them: a stable code, one line of explanation, an exit code.
//!
//! Codes and their exit codes are defined in specs/error-codes.toml, embedded at build time: the
//! exit code of a failure is looked up there, never decided at the call site.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::LazyLock;

use pactum_memory::StoreError;
use pactum_runtime::RuntimeError;

pub const EXIT_OK: u8 = 0;
/// The content is tampered with or invalid (a transcript that does not verify, a malformed file).
pub const EXIT_INVALID: u8 = 1;
/// Usage or I/O error: bad arguments, missing files, unknown ids, refused constellations.
pub const EXIT_USAGE: u8 = 2;
/// The negotiation ran and ended in a PACT failure (its code is in the output).
pub const EXIT_NEGOTIATION_FAILED: u8 = 3;

const ERROR_CODES_SPEC: &str = include_str!("../../specs/error-codes.toml");

/// Exit code of every error code, from the spec.
static EXIT_CODES: LazyLock<HashMap<String, u8>> = LazyLock::new(|| parse_exit_codes(ERROR_CODES_SPEC));

fn parse_exit_codes(spec: &str) -> HashMap<String, u8> {
    let table: toml::Table = spec.parse().unwrap_or_default();
    let entries = table.get("error").and_then(|v| v.as_array()).cloned().unwrap_or_default();
    entries
        .iter()
        .filter_map(|entry| {
            let code = entry.get("code")?.as_str()?.to_owned();
            let exit = u8::try_from(entry.get("exit")?.as_integer()?).ok()?;
            Some((code, exit))
        })
        .collect()
}

/// The exit code for `code`; a code missing from the spec (a bug the spec test catches) is a
/// usage error rather than a crash.
pub fn exit_code_of(code: &str) -> u8 {
    EXIT_CODES.get(code).copied().unwrap_or(EXIT_USAGE)
}

/// A command that could not do its job.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Prints the one-line error on stderr only (the command already printed its result) and
    /// returns the exit code.
    pub fn report_on_stderr(self) -> u8 {
        crate::output::write_stderr_line(&format!("error[{}]: {}", self.code, self.message.replace('\n', " ")));
        exit_code_of(self.code)
    }

    /// Prints the error (one line on stderr; also a JSON object on stdout for `--json`).
    pub fn report(self, json: bool) -> ExitCode {
        // One line, and no control characters: a message may quote a hostile file, whose escape
        // sequences must not reach the terminal.
        let message: String = self
            .message
            .chars()
            .map(|c| {
                if c == '\n' {
                    " ".to_owned()
                } else if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        crate::output::write_stderr_line(&format!("error[{}]: {}", self.code, message));
        if json {
            let document = serde_json::json!({ "error": { "code": self.code, "message": message } });
            crate::constellation_cmd::write_stdout(&format!("{document}\n"));
        }
        ExitCode::from(exit_code_of(self.code))
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<RuntimeError> for Failure {
    fn from(error: RuntimeError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_spec_parses() {
        assert_eq!(exit_code_of("TRANSCRIPT_TAMPERED"), EXIT_INVALID);
        assert_eq!(exit_code_of("TRANSCRIPT_NOT_FOUND"), EXIT_USAGE);
        assert!(EXIT_CODES.len() >= 20, "{} codes", EXIT_CODES.len());
        assert_eq!(exit_code_of("NEGOTIATION_FAILED"), EXIT_NEGOTIATION_FAILED);
        assert!(EXIT_CODES.values().all(|exit| [EXIT_INVALID, EXIT_USAGE, EXIT_NEGOTIATION_FAILED].contains(exit)));
    }
}
