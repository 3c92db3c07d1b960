//! `/memory` in the editor: the verbs of `pactum memory`. Changes and diffs are shown as tool calls
//! with `diff` content; a rollback asks permission first in the `ask` mode; a `read-only`
//! conversation changes nothing. Reading verbs answer with the command's own output.
//!
//! A diff's `path` names the block, not a file: `<constellation>.memory/<agent>/<label>.md`
//! (`.json` for structured blocks, `.jsonl` for rolling logs) beside the constellation file.
//! Nothing is written there.

use std::path::PathBuf;
use std::sync::Arc;

use agent_client_protocol::v1::schema as acp;
use clap::Parser as _;
use pactum_memory::ConversationMode;
use pactum_memory::blocks::{Change, Shape, Write};
use serde_json::json;

use crate::acp::record::Recorder;
use crate::acp::state::{CancelSignal, Conversation};
use crate::acp::{blocking, run_cli};
use crate::failure::Failure;
use crate::memory_cmd::{
    MemoryCommand, MemoryOptions, address, author_of, diff_json, ensure_memory_agent, written_json,
};

/// `/memory VERB ...`: the arguments of `pactum memory`.
#[derive(Debug, clap::Parser)]
#[command(name = "/memory", disable_version_flag = true)]
struct SlashMemory {
    #[command(flatten)]
    options: MemoryOptions,
    #[command(subcommand)]
    command: MemoryCommand,
}

/// The path a diff shows for a block (see the module documentation).
fn block_path(conversation: &Conversation, owner: &str, label: &str, shape: Shape) -> PathBuf {
    let db = conversation.workspace.db.path();
    let stem = db.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "constellation".into());
    db.with_file_name(format!("{stem}.memory")).join(owner).join(format!("{label}.{}", shape.file_extension()))
}

fn call_id(conversation: &Conversation) -> String {
    format!("{}#memory-{:016x}", conversation.id, crate::edge::random_seed())
}

fn diff_content(path: PathBuf, old: &str, new: &str) -> Vec<acp::ToolCallContent> {
    vec![acp::ToolCallContent::Diff(acp::Diff::new(path, new.to_owned()).old_text(old.to_owned()))]
}

fn failed(recorder: &mut Recorder, id: &str, failure: &Failure) {
    let fields = acp::ToolCallUpdateFields::new()
        .status(acp::ToolCallStatus::Failed)
        .content(vec![acp::ToolCallContent::from(format!("error[{}]: {}", failure.code, failure.message))])
        .raw_output(json!({ "error": { "code": failure.code, "message": failure.message } }));
    recorder.send(acp::SessionUpdate::ToolCallUpdate(acp::ToolCallUpdate::new(id.to_owned(), fields)));
}

/// One `/memory` prompt.
pub async fn turn(
    recorder: &mut Recorder,
    conversation: &Arc<Conversation>,
    words: Vec<String>,
    cancel: &CancelSignal,
) {
    let argv = std::iter::once("/memory".to_owned()).chain(words.iter().cloned());
    let parsed = match SlashMemory::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(error) => return recorder.say(error.render().to_string()),
    };
    let read_only = conversation.mode() == ConversationMode::ReadOnly;
    match parsed.command {
        MemoryCommand::Edit { label, .. } => recorder.say(format!(
            "/memory edit opens $EDITOR, which an editor session cannot: use /memory set {label} <text> here, or pactum memory edit {label} in a terminal."
        )),
        MemoryCommand::Diff { label, from, to } => diff(recorder, conversation, &parsed.options, &label, from, to).await,
        MemoryCommand::Set { label, text, message, base } => {
            let change = Change::Set(text);
            write(recorder, conversation, &parsed.options, &label, change, message, base, cancel, read_only).await;
        }
        MemoryCommand::Append { label, text, message } => {
            let change = Change::Append(text);
            write(recorder, conversation, &parsed.options, &label, change, message, None, cancel, read_only).await;
        }
        MemoryCommand::Rollback { label, target, message } => {
            let change = Change::Rollback(target);
            write(recorder, conversation, &parsed.options, &label, change, message, None, cancel, read_only).await;
        }
        MemoryCommand::Import { .. }
        | MemoryCommand::Archive { .. }
        | MemoryCommand::Create { .. }
        | MemoryCommand::Configure { .. }
        | MemoryCommand::Share { .. }
            if read_only =>
        {
            recorder.say(READ_ONLY.to_owned());
        }
        command => {
            // The editor's constellation exists: outside read-only, give the agent its default
            // blocks before reading, so a first `/memory list` shows them.
            if !read_only || !command.only_reads() {
                let db = Arc::clone(&conversation.workspace.db);
                let agent = parsed.options.agent.clone();
                if let Err(failure) = blocking(move || ensure_memory_agent(&db, &agent)).await {
                    return recorder.say(format!("error[{}]: {}\n", failure.code, failure.message));
                }
            }
            let output = run_cli(conversation, std::iter::once("memory".to_owned()).chain(words).collect()).await;
            recorder.say(output);
        }
    }
}

const READ_ONLY: &str =
    "This session is read-only: memory is not changed. Switch the approval mode to ask or auto to change it.";

async fn diff(
    recorder: &mut Recorder,
    conversation: &Arc<Conversation>,
    options: &MemoryOptions,
    label: &str,
    from: u64,
    to: u64,
) {
    let id = call_id(conversation);
    let title = format!("Memory: {label} version {from} → {to}");
    recorder.send(acp::SessionUpdate::ToolCall(
        acp::ToolCall::new(id.clone(), title).kind(acp::ToolKind::Read).status(acp::ToolCallStatus::InProgress),
    ));
    let db = Arc::clone(&conversation.workspace.db);
    let (options, label) = (options.clone(), label.to_owned());
    let result = blocking(move || {
        let (owner, label) = address(&options.agent, &label)?;
        let block = db.block(&owner, &label, &author_of(&options))?;
        let diff = db.diff_block(&owner, &label, &author_of(&options), from, to)?;
        Ok((owner, label, block.shape, diff))
    })
    .await;
    match result {
        Ok((owner, label, shape, diff)) => {
            let path = block_path(conversation, &owner, &label, shape);
            let fields = acp::ToolCallUpdateFields::new()
                .status(acp::ToolCallStatus::Completed)
                .content(diff_content(path, &diff.before, &diff.after))
                .raw_output(diff_json(&diff));
            recorder.send(acp::SessionUpdate::ToolCallUpdate(acp::ToolCallUpdate::new(id, fields)));
            let summary = if diff.unified.is_empty() {
                format!("Versions {from} and {to} are the same.")
            } else {
                format!("```diff\n{}```\n", diff.unified)
            };
            recorder.say(summary);
        }
        Err(failure) => {
            failed(recorder, &id, &failure);
            recorder.say(format!("error[{}]: {}\n", failure.code, failure.message));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    recorder: &mut Recorder,
    conversation: &Arc<Conversation>,
    options: &MemoryOptions,
    label: &str,
    change: Change,
    message: Option<String>,
    base: Option<u64>,
    cancel: &CancelSignal,
    read_only: bool,
) {
    if read_only {
        return recorder.say(READ_ONLY.to_owned());
    }
    let id = call_id(conversation);
    let db = Arc::clone(&conversation.workspace.db);
    let opts = options.clone();
    let text = label.to_owned();
    // What the block holds now (and, for a rollback, what it would go back to).
    let target = match &change {
        Change::Rollback(version) => Some(*version),
        _ => None,
    };
    let preview = blocking(move || {
        ensure_memory_agent(&db, &opts.agent)?;
        let (owner, label) = address(&opts.agent, &text)?;
        let (block, _, current) = db.block_content(&owner, &label, &author_of(&opts), None)?;
        let old = match target {
            Some(version) => Some(db.block_content(&owner, &label, &author_of(&opts), Some(version))?.2),
            None => None,
        };
        Ok((owner, label, block.shape, current, old))
    })
    .await;
    let (owner, label, shape, current, old) = match preview {
        Ok(preview) => preview,
        Err(failure) => return recorder.say(format!("error[{}]: {}\n", failure.code, failure.message)),
    };
    let path = block_path(conversation, &owner, &label, shape);
    let title = match (&change, target) {
        (_, Some(version)) => format!("Roll back memory {label} to version {version}"),
        (Change::Append(_), _) => format!("Append to memory {label}"),
        _ => format!("Set memory {label}"),
    };
    let mut call = acp::ToolCall::new(id.clone(), title.clone()).kind(acp::ToolKind::Edit);
    if let (Some(version), Some(old)) = (target, &old) {
        call = call.status(acp::ToolCallStatus::Pending).content(diff_content(path.clone(), &current, old));
        recorder.send(acp::SessionUpdate::ToolCall(call));
        if conversation.mode() == ConversationMode::Ask {
            if let Err(failure) = recorder.flush().await {
                return tracing::warn!("could not record the rollback question: {}", failure.message);
            }
            let question = acp::ToolCallUpdate::new(id.clone(), acp::ToolCallUpdateFields::new().title(title));
            let allow = format!("Roll back {label} to version {version}");
            match crate::acp::turn::ask(recorder, question, allow, "Keep it as it is", cancel).await {
                Some(true) => {}
                Some(false) => {
                    let refused =
                        Failure::new("MEMORY_PERMISSION_DENIED", "you declined the rollback; nothing changed");
                    failed(recorder, &id, &refused);
                    return recorder.say(format!("{label} was not rolled back."));
                }
                None => {
                    let cancelled = Failure::new("MEMORY_PERMISSION_DENIED", "cancelled; nothing changed");
                    return failed(recorder, &id, &cancelled);
                }
            }
        }
    } else {
        recorder.send(acp::SessionUpdate::ToolCall(call.status(acp::ToolCallStatus::InProgress)));
    }
    let db = Arc::clone(&conversation.workspace.db);
    let author = author_of(options);
    let (write_owner, write_label) = (owner.clone(), label.clone());
    let intent_type = match &change {
        Change::Rollback(_) => "memory.rollback",
        Change::Append(_) => "memory.append",
        _ => "memory.set",
    };
    let parameters = serde_json::json!({
        "agent": options.agent, "as_agent": options.as_agent, "label": label, "base": base, "message": message,
    });
    let solution_id = format!("acp:{}", conversation.id);
    let result = blocking(move || {
        crate::intents::run_as_execution(&db, intent_type, parameters, &solution_id, || {
            let write = Write { author, change, base, message, op: None, at_ms: crate::clock::now_ms() };
            let written = db.write_block(&write_owner, &write_label, write)?;
            let result = serde_json::json!({ "version": written.version.as_ref().map(|v| v.seq) });
            Ok((written, result))
        })
    })
    .await;
    match result {
        Ok(written) => {
            let fields = acp::ToolCallUpdateFields::new()
                .status(acp::ToolCallStatus::Completed)
                .content(diff_content(path, &written.previous, &written.content))
                .raw_output(written_json(&written));
            recorder.send(acp::SessionUpdate::ToolCallUpdate(acp::ToolCallUpdate::new(id, fields)));
            let said = match &written.version {
                Some(version) => format!(
                    "{label} is now version {} ({} characters of {}).",
                    version.seq, version.chars, written.block.char_limit
                ),
                None => format!("{label} already held that: no new version."),
            };
            recorder.say(said);
        }
        Err(failure) => {
            failed(recorder, &id, &failure);
            recorder.say(format!("error[{}]: {}\n", failure.code, failure.message));
        }
    }
}
