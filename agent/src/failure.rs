//! Failures as the user sees them: a stable code, one line of explanation, an exit code.

use std::process::ExitCode;

use pactum_memory::StoreError;
use pactum_runtime::RuntimeError;

pub const EXIT_OK: u8 = 0;
/// The content is tampered with or invalid (a transcript that does not verify, a malformed file).
pub const EXIT_INVALID: u8 = 1;
/// Usage or I/O error: bad arguments, missing files, unknown ids, refused constellations.
pub const EXIT_USAGE: u8 = 2;

/// A command that could not do its job.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub exit: u8,
}

impl Failure {
    pub fn usage(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), exit: EXIT_USAGE }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), exit: EXIT_INVALID }
    }

    /// Prints the error (one line on stderr; also a JSON object on stdout for `--json`).
    pub fn report(self, json: bool) -> ExitCode {
        let message = self.message.replace('\n', " ");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error[{}]: {}", self.code, message);
        }
        if json {
            let document = serde_json::json!({ "error": { "code": self.code, "message": message } });
            crate::constellation_cmd::write_stdout(&format!("{document}\n"));
        }
        ExitCode::from(self.exit)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        let exit = match error {
            StoreError::Corrupt { .. } => EXIT_INVALID,
            _ => EXIT_USAGE,
        };
        Self { code: error.code(), message: error.to_string(), exit }
    }
}

impl From<RuntimeError> for Failure {
    fn from(error: RuntimeError) -> Self {
        let exit = match &error {
            RuntimeError::Store(StoreError::Corrupt { .. })
            | RuntimeError::Tampered { .. }
            | RuntimeError::Key(_)
            | RuntimeError::Transcript(_) => EXIT_INVALID,
            RuntimeError::File(file) if !matches!(file.kind, pactum_transcripts::jsonl::FileErrorKind::Io(_)) => {
                EXIT_INVALID
            }
            _ => EXIT_USAGE,
        };
        Self { code: error.code(), message: error.to_string(), exit }
    }
}
