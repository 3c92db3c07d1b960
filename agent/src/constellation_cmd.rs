//! `pactum constellation info|backup`.

use serde_json::json;

use crate::cli::{ConstellationCommand, Context};
use crate::clock::format_ms;
use crate::failure::{EXIT_OK, Failure};

pub fn run(context: &Context, command: ConstellationCommand) -> Result<u8, Failure> {
    // `info` creates the constellation on first use (it is how a new user meets it); backing up
    // something that does not exist is an error.
    let db = match &command {
        ConstellationCommand::Info { .. } => context.open()?,
        ConstellationCommand::Backup { .. } | ConstellationCommand::Check { .. } => {
            context.open_existing()?.map_err(|path| {
                Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display()))
            })?
        }
    };
    match command {
        ConstellationCommand::Info { json } => {
            let info = db.info()?;
            if json {
                let document = json!({
                    "path": info.path,
                    "constellation_id": info.constellation_id,
                    "schema_version": info.schema_version,
                    "created_at_ms": info.created_at_ms,
                    "durability": format!("{:?}", info.durability).to_lowercase(),
                    "synchronous": info.durability.pragma_value(),
                    "page_size": info.page_size,
                    "page_count": info.page_count,
                    "freelist_pages": info.freelist_pages,
                    "file_bytes": info.file_bytes,
                    "wal_bytes": info.wal_bytes,
                    "counts": {
                        "transcripts": info.streams,
                        "events": info.events,
                        "checkpoints": info.checkpoints,
                        "signing_keys": info.signing_keys,
                        "agents": info.agents,
                    },
                });
                print_json(&document);
            } else {
                let lines = [
                    format!("path            {}", info.path.display()),
                    format!("id              {}", info.constellation_id),
                    format!("created         {}", format_ms(info.created_at_ms)),
                    format!("schema version  {}", info.schema_version),
                    format!(
                        "durability      {} (synchronous={})",
                        match info.durability {
                            pactum_memory::Durability::Process => "survives process crash",
                            pactum_memory::Durability::PowerLoss => "survives power loss",
                        },
                        info.durability.pragma_value()
                    ),
                    format!(
                        "size            {} bytes file + {} bytes WAL ({} pages of {} bytes, {} free)",
                        info.file_bytes, info.wal_bytes, info.page_count, info.page_size, info.freelist_pages
                    ),
                    format!("transcripts     {}", info.streams),
                    format!("events          {}", info.events),
                    format!("checkpoints     {}", info.checkpoints),
                    format!("signing keys    {}", info.signing_keys),
                    format!("agents          {}", info.agents),
                ];
                print_lines(&lines);
            }
        }
        ConstellationCommand::Check { json } => {
            let report = pactum_runtime::check_constellation(&db)?;
            if json {
                let problems: Vec<serde_json::Value> = report
                    .problems
                    .iter()
                    .map(|p| json!({ "area": p.area, "subject": p.subject, "code": p.code, "detail": p.detail }))
                    .collect();
                print_json(&json!({
                    "sound": report.is_sound(),
                    "transcripts_checked": report.transcripts_checked,
                    "events_checked": report.events_checked,
                    "accounts_checked": report.accounts_checked,
                    "sessions_checked": report.sessions_checked,
                    "memory_blocks_checked": report.memory_blocks_checked,
                    "memory_versions_checked": report.memory_versions_checked,
                    "sessions_resumable": report.sessions_resumable,
                    "problems": problems,
                }));
            } else {
                let mut lines = vec![format!(
                    "{}: {} transcripts ({} events), {} sessions, {} memory blocks ({} versions) and {} ledger accounts checked: {}",
                    db.path().display(),
                    report.transcripts_checked,
                    report.events_checked,
                    report.sessions_checked,
                    report.memory_blocks_checked,
                    report.memory_versions_checked,
                    report.accounts_checked,
                    if report.is_sound() {
                        "no problems".to_owned()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                )];
                for problem in &report.problems {
                    lines.push(format!("  {} {}: {}: {}", problem.area, problem.subject, problem.code, problem.detail));
                }
                for session_id in &report.sessions_resumable {
                    lines.push(format!(
                        "  session {session_id} is not finished; it resumes when pactum next opens this constellation"
                    ));
                }
                print_lines(&lines);
            }
            if !report.is_sound() {
                return Ok(crate::failure::EXIT_INVALID);
            }
        }
        ConstellationCommand::Backup { dest, json } => {
            let report = db.backup(&dest)?;
            if json {
                print_json(&json!({ "path": report.path, "bytes": report.bytes }));
            } else {
                print_lines(&[format!(
                    "backed up {} to {} ({} bytes)",
                    db.path().display(),
                    report.path.display(),
                    report.bytes
                )]);
            }
        }
    }
    Ok(EXIT_OK)
}

/// Pretty JSON document on stdout.
pub fn print_json(document: &serde_json::Value) {
    let text = serde_json::to_string_pretty(document).unwrap_or_else(|_| document.to_string());
    write_stdout(&format!("{text}\n"));
}

/// Lines of human output on stdout.
pub fn print_lines(lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    write_stdout(&text);
}

/// Writes to stdout (or, in an editor, to the command's captured output).
pub fn write_stdout(text: &str) {
    crate::output::write_stdout(text);
}
