//! `pactum transcript bundle` (write an evidence bundle) and `pactum bundle verify`.

use std::path::Path;

use serde_json::{Value, json};

use pactum_runtime::bundle::{self, BundleReport, View};

use crate::cli::Context;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};

/// The views as `--view` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewArg {
    Full,
    Partner,
    Auditor,
}

impl ViewArg {
    /// The name `--view` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Partner => "partner",
            Self::Auditor => "auditor",
        }
    }
}

impl From<ViewArg> for View {
    fn from(view: ViewArg) -> Self {
        match view {
            ViewArg::Full => View::Full,
            ViewArg::Partner => View::Partner,
            ViewArg::Auditor => View::Auditor,
        }
    }
}

/// Writes a bundle of session `session_id` to `dir`.
pub fn write(
    context: &Context,
    session_id: &str,
    dir: &Path,
    view: ViewArg,
    force: bool,
    json: bool,
) -> Result<u8, Failure> {
    let db = context
        .open_existing()?
        .map_err(|path| Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display())))?;
    let bundle = bundle::bundle_session(&db, session_id, view.into())?;
    bundle::write_bundle(dir, &bundle, force).map_err(|error| {
        let mut failure = Failure::from(error);
        failure.message = format!("{}: {}", dir.display(), failure.message);
        failure
    })?;
    let files: Vec<Value> =
        bundle.files.iter().map(|file| json!({"name": file.name, "bytes": file.bytes.len()})).collect();
    if json {
        print_json(&json!({
            "dir": dir.display().to_string(),
            "session": bundle.session_id,
            "view": bundle.view.as_str(),
            "commitments_root": bundle.commitments_root.to_hex(),
            "files": files,
        }));
    } else {
        let names: Vec<&str> = bundle.files.iter().map(|file| file.name).collect();
        print_lines(&[
            format!("bundle of session {} ({} view) written to {}", bundle.session_id, bundle.view, dir.display()),
            format!("  files: {}", names.join(", ")),
            format!("  commitments root {}", bundle.commitments_root),
        ]);
    }
    Ok(EXIT_OK)
}

/// Verifies the bundle in `dir`: exit 0 when it verifies, 1 naming each problem otherwise.
pub fn verify(dir: &Path, json: bool) -> Result<u8, Failure> {
    let report = bundle::verify_bundle_dir(dir).map_err(|error| {
        let mut failure = Failure::from(error);
        failure.message = format!("{}: {}", dir.display(), failure.message);
        failure
    })?;
    if json {
        print_json(&report_json(&report));
    } else {
        print_lines(&report_lines(dir, &report));
    }
    Ok(if report.is_valid() { EXIT_OK } else { EXIT_INVALID })
}

fn report_json(report: &BundleReport) -> Value {
    json!({
        "valid": report.is_valid(),
        "session": report.session,
        "view": report.view.map(View::as_str),
        "commitments_root": report.commitments_root.map(|root| root.to_hex()),
        "events": report.events,
        "redacted_fields": report.redacted_fields,
        "problems": report.problems.iter().map(|problem| json!({
            "code": problem.code.code(),
            "message": problem.message,
            "file": problem.file,
        })).collect::<Vec<_>>(),
    })
}

fn report_lines(dir: &Path, report: &BundleReport) -> Vec<String> {
    let mut what = format!("bundle {}", printable(&dir.display().to_string()));
    if let (Some(session), Some(view)) = (&report.session, report.view) {
        what.push_str(&format!(" (session {session}, {view} view)"));
    }
    if report.is_valid() {
        let root = report.commitments_root.map(|root| root.to_hex()).unwrap_or_default();
        return vec![
            format!(
                "{what}: VALID: {} events, {} fields redacted, every file as listed",
                report.events, report.redacted_fields
            ),
            format!("  commitments root {root}, signed by the buyer"),
        ];
    }
    let mut lines = vec![format!("{what}: INVALID: {} problem(s)", report.problems.len())];
    for problem in &report.problems {
        let file = problem.file.as_deref().map_or_else(String::new, |f| format!(" {}", printable(f)));
        lines.push(format!("  {}{file}: {}", problem.code.code(), printable(&problem.message)));
    }
    lines
}

/// A message may quote a hostile file: no control characters reach the terminal.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}
