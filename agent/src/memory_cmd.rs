//! `pactum memory`: agents' versioned memory blocks — list, show, set, append, edit, log, diff,
//! rollback, export, import, search — plus create, configure, share and archive.
//!
//! Changes are made by the partner (you) unless `--as-agent` makes them as the agent itself, held
//! to its permission on the block. Every change is a new version; nothing here removes one.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_memory::blocks::{
    Author, Block, BlockDiff, BlockKind, Change, Configure, MemoryError, NewBlock, Permission, Template, Version,
    Write, Written,
};
use pactum_runtime::{DEFAULT_BUYER_ID, derive_agent_seed, ensure_agent};
use serde_json::{Value, json};

use crate::cli::Context;
use crate::clock::{format_ms, now_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

/// The most text `set -` or `archive -` reads from stdin.
pub const STDIN_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Log entries `show` prints for a rolling log unless `--window` says otherwise.
pub const LOG_WINDOW_DEFAULT: usize = 20;

impl From<MemoryError> for Failure {
    fn from(error: MemoryError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// Options every memory command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryOptions {
    /// Whose memory: an agent id (default: the buyer agent, created on first use).
    #[arg(long, global = true, value_name = "AGENT", default_value = DEFAULT_BUYER_ID)]
    pub agent: String,
    /// Make changes as the agent itself, held to its permission on the block, instead of as you
    /// (the partner, who may change any block except a rolling log).
    #[arg(long, global = true)]
    pub as_agent: bool,
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MemoryCommand {
    /// The agent's blocks and those shared with it.
    List,
    /// A block's content, latest or at a version: `show persona` or `show persona@3`.
    Show {
        /// LABEL or LABEL@VERSION (OWNER/LABEL for a block shared by another agent).
        block: String,
        /// For a rolling log: how many of the latest entries to print.
        #[arg(long, value_name = "N", default_value_t = LOG_WINDOW_DEFAULT)]
        window: usize,
    },
    /// Replace a block's content: text, or JSON for a structured block; `-` reads stdin.
    Set {
        label: String,
        /// The new content, or `-` to read it from stdin.
        #[arg(allow_hyphen_values = true)]
        text: String,
        /// Why (recorded with the version).
        #[arg(long, short)]
        message: Option<String>,
        /// The version the new content was based on: if the block has changed since, your change
        /// (from that version to this content) is merged with the versions written meanwhile.
        #[arg(long, value_name = "VERSION")]
        base: Option<u64>,
    },
    /// Add a line to a text block, or an item to a list block (a task title or a JSON item).
    Append {
        label: String,
        #[arg(allow_hyphen_values = true)]
        text: String,
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Edit a block in $VISUAL or $EDITOR; if it changed meanwhile, your edit is merged.
    Edit {
        label: String,
        #[arg(long, short)]
        message: Option<String>,
    },
    /// A block's versions, newest first: number, time, author, operation, message, size.
    Log {
        label: String,
        /// At most N versions.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Versions older than this one (to page back).
        #[arg(long, value_name = "VERSION")]
        before: Option<u64>,
    },
    /// The difference between two versions (a unified diff; field changes for structured blocks).
    Diff { label: String, from: u64, to: u64 },
    /// Make a block equal to an old version again, as a new version (history is kept).
    Rollback {
        label: String,
        /// The version to return to.
        #[arg(value_name = "VERSION")]
        target: u64,
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Write a block with every version and its metadata (pactum-memory-block/1 JSON).
    Export {
        label: String,
        /// Write to FILE instead of stdout (written whole, then renamed into place).
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
    /// Import a block export: a new block with all its versions, or the versions a block you
    /// have lacks, merged. Everything is checked before anything is written.
    Import {
        file: PathBuf,
        /// Import under this label: when the agent already has a block with the file's label, or
        /// to keep the export as a separate copy of a block you have.
        #[arg(long)]
        label: Option<String>,
    },
    /// Search the agent's archival passages (full text, BM25 ranking).
    Search {
        query: String,
        #[arg(long, value_name = "N", default_value_t = 10)]
        limit: usize,
    },
    /// Keep a passage in the agent's archival memory (`-` reads stdin).
    Archive {
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// Create a block.
    Create {
        label: String,
        /// core, working, archival or log.
        #[arg(long, default_value = "working")]
        kind: String,
        /// persona, partner, preferences, tasks or scratchpad (structured blocks).
        #[arg(long)]
        template: Option<String>,
        /// Character limit (default by kind: core 5000, working 10000, archival 50000, log 20000).
        #[arg(long, value_name = "CHARS")]
        limit: Option<u32>,
        /// What the agent may do with it: read_only, append, read_write or admin.
        #[arg(long, default_value = "read_write")]
        permission: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        pinned: bool,
        /// First content (text, or JSON for a structured block).
        #[arg(long)]
        content: Option<String>,
    },
    /// Change a block's description, limit, permission or pinned flag (admin).
    Configure {
        label: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_name = "CHARS")]
        limit: Option<u32>,
        #[arg(long)]
        permission: Option<String>,
        #[arg(long)]
        pinned: Option<bool>,
    },
    /// Attach a block to another agent with a permission no higher than the owner's.
    Share {
        label: String,
        #[arg(long, value_name = "AGENT")]
        with: String,
        #[arg(long, default_value = "read_only")]
        permission: String,
    },
}

impl MemoryCommand {
    /// Whether the command only reads (and so creates nothing: no file, agent or block).
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Self::List
                | Self::Show { .. }
                | Self::Log { .. }
                | Self::Diff { .. }
                | Self::Export { .. }
                | Self::Search { .. }
        )
    }
}

/// Runs one memory command.
pub fn run(context: &Context, options: &MemoryOptions, command: MemoryCommand) -> Result<u8, Failure> {
    let reads = command.only_reads();
    let db = if reads {
        // Reading creates nothing: no constellation, no agent, no default blocks.
        match context.open_existing()? {
            Ok(db) => db,
            Err(path) if matches!(command, MemoryCommand::List) => {
                if options.json {
                    print_json(&Value::Array(Vec::new()));
                } else {
                    print_lines(&[format!(
                        "no constellation at {} yet: the first negotiation or memory change creates it, with the default memory blocks",
                        path.display()
                    )]);
                }
                return Ok(EXIT_OK);
            }
            Err(path) => {
                return Err(Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display())));
            }
        }
    } else {
        let db = context.open()?;
        ensure_memory_agent(&db, &options.agent)?;
        db
    };
    if reads && options.agent != DEFAULT_BUYER_ID && db.agent(&options.agent)?.is_none() {
        return Err(Failure::new(
            "NOT_FOUND",
            format!("no agent {:?} in this constellation (see pactum agents list)", options.agent),
        ));
    }
    let memory = Memory { db: &db, options };
    match command {
        MemoryCommand::List => memory.list(),
        MemoryCommand::Show { block, window } => memory.show(&block, window),
        MemoryCommand::Set { label, text, message, base } => {
            let text = if text == "-" { read_stdin()? } else { text };
            memory.change(&label, Change::Set(text), message, base, None)
        }
        MemoryCommand::Append { label, text, message } => {
            memory.change(&label, Change::Append(text), message, None, None)
        }
        MemoryCommand::Edit { label, message } => memory.edit(&label, message),
        MemoryCommand::Log { label, limit, before } => memory.log(&label, limit, before),
        MemoryCommand::Diff { label, from, to } => memory.diff(&label, from, to),
        MemoryCommand::Rollback { label, target, message } => {
            memory.change(&label, Change::Rollback(target), message, None, None)
        }
        MemoryCommand::Export { label, out, force } => memory.export(&label, out.as_deref(), force),
        MemoryCommand::Import { file, label } => memory.import(&file, label.as_deref()),
        MemoryCommand::Search { query, limit } => memory.search(&query, limit),
        MemoryCommand::Archive { text } => {
            let text = if text == "-" { read_stdin()? } else { text };
            memory.archive(&text)
        }
        MemoryCommand::Create { label, kind, template, limit, permission, description, pinned, content } => {
            let new = NewBlock {
                owner: options.agent.clone(),
                label,
                description,
                kind: BlockKind::parse(&kind)
                    .ok_or_else(|| usage(format!("kind {kind:?}: use core, working, archival or log")))?,
                template: template
                    .map(|name| {
                        Template::parse(&name).ok_or_else(|| {
                            usage(format!("template {name:?}: use persona, partner, preferences, tasks or scratchpad"))
                        })
                    })
                    .transpose()?,
                char_limit: limit,
                permission: parse_permission(&permission)?,
                pinned,
                initial: content,
            };
            let block = db.create_block(new, &memory.author(), now_ms())?;
            memory.print_block_line(&block, "created")
        }
        MemoryCommand::Configure { label, description, limit, permission, pinned } => {
            let configure = Configure {
                description,
                char_limit: limit,
                permission: permission.as_deref().map(parse_permission).transpose()?,
                pinned,
            };
            let (owner, label) = memory.address(&label)?;
            let block = db.configure_block(&owner, &label, &memory.author(), &configure, now_ms())?;
            memory.print_block_line(&block, "configured")
        }
        MemoryCommand::Share { label, with, permission } => {
            let (owner, label) = memory.address(&label)?;
            let permission = parse_permission(&permission)?;
            let block = db.share_block(&owner, &label, &memory.author(), &with, permission, now_ms())?;
            if options.json {
                print_json(
                    &json!({ "block": block_json(&block), "shared_with": with, "permission": permission.as_str() }),
                );
            } else {
                print_lines(&[format!("{} is shared with {with} ({})", block.label, permission.as_str())]);
            }
            Ok(EXIT_OK)
        }
    }
}

fn usage(message: String) -> Failure {
    Failure::new("USAGE", message)
}

fn parse_permission(text: &str) -> Result<Permission, Failure> {
    Permission::parse(text)
        .ok_or_else(|| usage(format!("permission {text:?}: use read_only, append, read_write or admin")))
}

fn read_stdin() -> Result<String, Failure> {
    if crate::output::capturing() {
        return Err(Failure::new("USAGE", "`-` reads stdin, which carries the protocol here: give the text itself"));
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(STDIN_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new("IO_ERROR", format!("cannot read stdin: {e}")))?;
    if bytes.len() > STDIN_BYTES_MAX {
        return Err(Failure::new("MEMORY_INPUT_INVALID", format!("stdin holds more than {STDIN_BYTES_MAX} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| Failure::new("MEMORY_INPUT_INVALID", "stdin is not UTF-8 text"))
}

/// The agent whose memory a command reads: the default buyer is created on first use (with its
/// default blocks); any other agent must exist. Every agent gets the default blocks it lacks.
pub fn ensure_memory_agent(db: &Arc<Constellation>, agent_id: &str) -> Result<(), Failure> {
    if db.agent(agent_id)?.is_none() {
        if agent_id != DEFAULT_BUYER_ID {
            return Err(Failure::new(
                "NOT_FOUND",
                format!("no agent {agent_id:?} in this constellation (see pactum agents list)"),
            ));
        }
        let root = db.ensure_key_root(
            &pactum_memory::SecretSeed::new(pactum_runtime::session::shell::KeyEntropy::key_seed(
                &crate::edge::OsEntropy,
            )),
            now_ms(),
        )?;
        let seed = derive_agent_seed(&root, agent_id, 1);
        ensure_agent(db, agent_id, "Buyer", pactum_memory::AgentRole::Buyer, seed, now_ms())?;
    }
    db.ensure_default_blocks(agent_id, now_ms())?;
    Ok(())
}

/// The block a command names: `LABEL` (the agent's own) or `OWNER/LABEL` (a block another agent
/// shares with it). Returns (owner, label).
pub fn address(agent: &str, text: &str) -> Result<(String, String), Failure> {
    match text.split_once('/') {
        Some((owner, label)) if !owner.is_empty() && !label.is_empty() => Ok((owner.to_owned(), label.to_owned())),
        Some(_) => Err(usage(format!("{text:?}: use LABEL or OWNER/LABEL"))),
        None => Ok((agent.to_owned(), text.to_owned())),
    }
}

/// One block as JSON.
pub fn block_json(block: &Block) -> Value {
    json!({
        "label": block.label,
        "owner": block.owner,
        "description": block.description,
        "kind": block.kind.as_str(),
        "template": block.template.map(Template::as_str),
        "shape": block.shape.as_str(),
        "char_limit": block.char_limit,
        "chars": block.chars,
        "permission": block.permission.as_str(),
        "access": block.access.map(Permission::as_str),
        "shared_by": block.shared_by,
        "pinned": block.pinned,
        "versions": block.version_count,
        "created_at_ms": block.created_at_ms,
        "updated_at_ms": block.updated_at_ms,
    })
}

/// One version as JSON.
pub fn version_json(version: &Version) -> Value {
    json!({
        "version": version.seq,
        "op": version.op,
        "author": version.author,
        "message": version.message,
        "at_ms": version.at_ms,
        "at": format_ms(version.at_ms),
        "chars": version.chars,
        "content_sha256": hex::encode(version.content_sha256),
        "merged_from": version.base,
    })
}

/// One version as a line of `memory log`.
pub fn version_line(version: &Version) -> String {
    let merged = version.base.map(|base| format!(" (made on v{base}, merged)")).unwrap_or_default();
    format!(
        "v{:<5} {}  {:<14} {:<8} {:>6} chars  {}{merged}",
        version.seq,
        format_ms(version.at_ms),
        version.author,
        version.op,
        version.chars,
        version.message
    )
}

/// A diff as JSON.
pub fn diff_json(diff: &BlockDiff) -> Value {
    json!({
        "from": version_json(&diff.from),
        "to": version_json(&diff.to),
        "unified": diff.unified,
        "changes": diff.changes,
    })
}

/// What a write did, in words (and its diff).
pub fn written_lines(label: &str, written: &Written) -> Vec<String> {
    let Some(version) = &written.version else {
        return vec![format!("{label}: no change (still version {})", written.block.version_count)];
    };
    let mut lines = vec![format!(
        "{label}: version {} ({} by {}), {} of {} characters",
        version.seq, version.op, version.author, version.chars, written.block.char_limit
    )];
    if let Some(base) = version.base {
        lines.push(format!("made on version {base} and merged with the versions written since"));
    }
    if written.rolled_off > 0 {
        lines.push(format!("{} oldest log entries rolled off (they stay in earlier versions)", written.rolled_off));
    }
    let diff = pactum_memory::blocks::unified_diff(
        label,
        (version.seq - 1, &written.previous),
        (version.seq, &written.content),
        2,
    );
    lines.extend(diff.lines().map(str::to_owned));
    lines
}

/// A write as JSON.
pub fn written_json(written: &Written) -> Value {
    json!({
        "block": block_json(&written.block),
        "changed": written.version.is_some(),
        "version": written.version.as_ref().map(version_json),
        "rolled_off": written.rolled_off,
        "content": written.content,
    })
}

/// Who makes a change: the agent itself with `--as-agent`, else the partner.
pub fn author_of(options: &MemoryOptions) -> Author {
    if options.as_agent { Author::Agent(options.agent.clone()) } else { Author::Partner }
}

struct Memory<'a> {
    db: &'a Arc<Constellation>,
    options: &'a MemoryOptions,
}

impl Memory<'_> {
    fn author(&self) -> Author {
        author_of(self.options)
    }

    /// Who reads: the agent itself with `--as-agent`, else the partner.
    fn viewer(&self) -> Author {
        self.author()
    }

    fn address(&self, text: &str) -> Result<(String, String), Failure> {
        address(&self.options.agent, text)
    }

    fn print_block_line(&self, block: &Block, what: &str) -> Result<u8, Failure> {
        if self.options.json {
            print_json(&block_json(block));
        } else {
            print_lines(&[format!(
                "{} {what}: {} {} block, {} of {} characters, {}{}",
                block.label,
                block.kind.as_str(),
                block.template.map_or(block.shape.as_str(), Template::as_str),
                block.chars,
                block.char_limit,
                block.permission.as_str(),
                if block.pinned { ", pinned" } else { "" }
            )]);
        }
        Ok(EXIT_OK)
    }

    fn list(&self) -> Result<u8, Failure> {
        let blocks = self.db.blocks(&self.options.agent, &self.viewer())?;
        if self.options.json {
            print_json(&Value::Array(blocks.iter().map(block_json).collect()));
            return Ok(EXIT_OK);
        }
        if blocks.is_empty() {
            print_lines(&[format!(
                "{} has no memory blocks yet: its first negotiation or memory change creates the default ones",
                self.options.agent
            )]);
            return Ok(EXIT_OK);
        }
        let mut lines = vec![format!(
            "{:<24} {:<9} {:<12} {:>13} {:<11} {:>8}  description",
            "label", "kind", "template", "chars/limit", "permission", "versions"
        )];
        for block in &blocks {
            let label = match &block.shared_by {
                Some(owner) => format!("{owner}/{}", block.label),
                None => block.label.clone(),
            };
            let permission = block.access.unwrap_or(block.permission).as_str();
            lines.push(format!(
                "{:<24} {:<9} {:<12} {:>13} {:<11} {:>8}  {}{}",
                label,
                block.kind.as_str(),
                block.template.map_or(block.shape.as_str(), Template::as_str),
                format!("{}/{}", block.chars, block.char_limit),
                permission,
                block.version_count,
                if block.pinned { "[pinned] " } else { "" },
                block.description
            ));
        }
        print_lines(&lines);
        Ok(EXIT_OK)
    }

    fn show(&self, spec: &str, window: usize) -> Result<u8, Failure> {
        let (address, version) = match spec.rsplit_once('@') {
            Some((address, version)) => (
                address,
                Some(version.parse::<u64>().map_err(|_| usage(format!("{spec:?}: the version after @ is a number")))?),
            ),
            None => (spec, None),
        };
        let (owner, label) = self.address(address)?;
        let (block, version, content) = self.db.block_content(&owner, &label, &self.viewer(), version)?;
        if self.options.json {
            let value = block.shape.value_of(&content).unwrap_or(Value::Null);
            print_json(&json!({
                "block": block_json(&block),
                "version": version_json(&version),
                "content": content,
                "value": value,
            }));
            return Ok(EXIT_OK);
        }
        if block.kind == BlockKind::Log {
            let entries: Vec<&str> = content.lines().collect();
            let shown = entries.len().min(window);
            let mut lines = vec![format!(
                "{label}@{}: the last {shown} of {} entries (rolled-off entries stay in earlier versions)",
                version.seq,
                entries.len()
            )];
            lines.extend(entries[entries.len() - shown..].iter().map(|line| (*line).to_owned()));
            print_lines(&lines);
        } else {
            crate::output::write_stdout(&content);
            if !content.is_empty() && !content.ends_with('\n') {
                crate::output::write_stdout("\n");
            }
        }
        Ok(EXIT_OK)
    }

    fn change(
        &self,
        address: &str,
        change: Change,
        message: Option<String>,
        base: Option<u64>,
        op: Option<&'static str>,
    ) -> Result<u8, Failure> {
        let (owner, label) = self.address(address)?;
        let write = Write { author: self.author(), change, base, message, op, at_ms: now_ms() };
        let written = self.db.write_block(&owner, &label, write)?;
        if self.options.json {
            print_json(&written_json(&written));
        } else {
            print_lines(&written_lines(&label, &written));
        }
        Ok(EXIT_OK)
    }

    fn edit(&self, address: &str, message: Option<String>) -> Result<u8, Failure> {
        let (owner, label) = self.address(address)?;
        let (block, version, content) = self.db.block_content(&owner, &label, &self.viewer(), None)?;
        let extension = block.shape.file_extension();
        let dir = tempfile::tempdir()
            .map_err(|e| Failure::new("IO_ERROR", format!("cannot make a temporary directory: {e}")))?;
        let path = dir.path().join(format!("{label}.{extension}"));
        std::fs::write(&path, &content).map_err(|e| Failure::new("IO_ERROR", format!("{}: {e}", path.display())))?;
        run_editor(&path)?;
        let edited = std::fs::read_to_string(&path)
            .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot read the edited text: {e}", path.display())))?;
        if edited == content {
            if self.options.json {
                print_json(&json!({ "block": block_json(&block), "changed": false }));
            } else {
                print_lines(&[format!("{label}: no change (still version {})", version.seq)]);
            }
            return Ok(EXIT_OK);
        }
        let address = format!("{owner}/{label}");
        self.change(&address, Change::Set(edited), message, Some(version.seq), Some("edit"))
    }

    fn log(&self, address: &str, limit: usize, before: Option<u64>) -> Result<u8, Failure> {
        let (owner, label) = self.address(address)?;
        let (block, versions) = self.db.block_versions(&owner, &label, &self.viewer(), before, limit.max(1))?;
        if self.options.json {
            print_json(
                &json!({ "block": block_json(&block), "versions": versions.iter().map(version_json).collect::<Vec<_>>() }),
            );
        } else {
            let mut lines: Vec<String> = versions.iter().map(version_line).collect();
            if let Some(oldest) = versions.last().filter(|v| v.seq > 1) {
                lines.push(format!("(older versions: pactum memory log {label} --before {})", oldest.seq));
            }
            print_lines(&lines);
        }
        Ok(EXIT_OK)
    }

    fn diff(&self, address: &str, from: u64, to: u64) -> Result<u8, Failure> {
        let (owner, label) = self.address(address)?;
        let diff = self.db.diff_block(&owner, &label, &self.viewer(), from, to)?;
        if self.options.json {
            print_json(&diff_json(&diff));
        } else if diff.unified.is_empty() {
            print_lines(&[format!("{label}: versions {from} and {to} are the same")]);
        } else {
            crate::output::write_stdout(&diff.unified);
        }
        Ok(EXIT_OK)
    }

    fn export(&self, address: &str, out: Option<&Path>, force: bool) -> Result<u8, Failure> {
        let (owner, label) = self.address(address)?;
        let bytes = self.db.export_block(&owner, &label, &self.viewer())?;
        match out {
            None => crate::output::write_stdout(&String::from_utf8_lossy(&bytes)),
            Some(path) => {
                if path.exists() && !force {
                    return Err(Failure::new(
                        "DESTINATION_EXISTS",
                        format!("{} already exists; pass --force to replace it", path.display()),
                    ));
                }
                crate::transcript_cmd::write_whole(path, &bytes)?;
                if self.options.json {
                    print_json(&json!({ "label": label, "path": path.display().to_string(), "bytes": bytes.len() }));
                } else {
                    print_lines(&[format!("{label}: exported to {} ({} bytes)", path.display(), bytes.len())]);
                }
            }
        }
        Ok(EXIT_OK)
    }

    fn import(&self, file: &Path, label: Option<&str>) -> Result<u8, Failure> {
        let bytes = read_limited(file, pactum_memory::blocks::IMPORT_BYTES_MAX)?;
        let owner = Some(self.options.agent.as_str());
        let report =
            self.db.import_block(&bytes, owner, label, &self.author(), now_ms()).map_err(|error| match error {
                MemoryError::LabelTaken { owner, label } => Failure::new(
                    "MEMORY_LABEL_TAKEN",
                    format!(
                        "agent {owner} already has another block {label:?}; import it under a new name with --label"
                    ),
                ),
                other => other.into(),
            })?;
        if self.options.json {
            print_json(&json!({
                "block": block_json(&report.block),
                "created": report.created,
                "added": report.added,
                "skipped": report.skipped,
            }));
        } else {
            let what = if report.created { "imported as a new block" } else { "merged" };
            print_lines(&[format!(
                "{}: {what}: {} versions added, {} already present; now at version {}",
                report.block.label, report.added, report.skipped, report.block.version_count
            )]);
        }
        Ok(EXIT_OK)
    }

    fn search(&self, query: &str, limit: usize) -> Result<u8, Failure> {
        let found = self.db.search_passages(&self.options.agent, query, limit)?;
        if self.options.json {
            let list: Vec<Value> = found
                .iter()
                .map(|p| {
                    json!({
                        "passage": p.passage_id,
                        "text": p.text,
                        "author": p.author,
                        "at_ms": p.created_at_ms,
                        "bm25": p.rank,
                    })
                })
                .collect();
            print_json(&Value::Array(list));
        } else if found.is_empty() {
            print_lines(&[format!("no archival passage of {} matches {query:?}", self.options.agent)]);
        } else {
            let lines = found
                .iter()
                .map(|p| {
                    let text: String = p.text.chars().take(120).collect();
                    let more = if p.text.chars().count() > 120 { "…" } else { "" };
                    format!("#{:<5} {}  {}{more}", p.passage_id, format_ms(p.created_at_ms), text.replace('\n', " "))
                })
                .collect::<Vec<_>>();
            print_lines(&lines);
        }
        Ok(EXIT_OK)
    }

    fn archive(&self, text: &str) -> Result<u8, Failure> {
        let passage = self.db.insert_passage(&self.options.agent, text, &self.author(), now_ms())?;
        if self.options.json {
            print_json(&json!({ "passage": passage.passage_id, "agent": passage.agent_id }));
        } else {
            print_lines(&[format!("archived passage #{} for {}", passage.passage_id, passage.agent_id)]);
        }
        Ok(EXIT_OK)
    }
}

fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot open: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new("IO_ERROR", format!("{}: cannot read: {e}", path.display())))?;
    if bytes.len() > max {
        return Err(Failure::new("MEMORY_IMPORT_INVALID", format!("{}: larger than {max} bytes", path.display())));
    }
    Ok(bytes)
}

/// Runs $VISUAL or $EDITOR (a command line, split like a shell would) on `path` and waits.
fn run_editor(path: &Path) -> Result<(), Failure> {
    let command = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            Failure::new(
                "EDITOR_FAILED",
                "set $EDITOR (or $VISUAL) to the editor to use, such as vi or \"code --wait\"",
            )
        })?;
    let words = shell_words::split(&command)
        .map_err(|e| Failure::new("EDITOR_FAILED", format!("$EDITOR {command:?} cannot be split into words: {e}")))?;
    let (program, args) = words.split_first().ok_or_else(|| Failure::new("EDITOR_FAILED", "$EDITOR is empty"))?;
    let status = std::process::Command::new(program)
        .args(args)
        .arg(path)
        .status()
        .map_err(|e| Failure::new("EDITOR_FAILED", format!("cannot run the editor {program:?}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(
            "EDITOR_FAILED",
            format!("the editor {program:?} exited with {status}; nothing was changed"),
        ));
    }
    Ok(())
}
