//! Versioned memory: blocks owned by agents, each a Loro document with its full history.
//!
//! A block has a label (unique per owner), a description, a kind, a character limit checked on
//! every write, a permission (what its owner agent may do with it), a pinned flag and, for
//! structured blocks, a [`Template`]. Every write is one *version*: a row holding the Loro update
//! it added, the document's frontiers after it, its author, message and time, and the rendered
//! content (see `splice`). Loading the document imports the working snapshot (the state at the
//! last consolidation, a Loro shallow snapshot) and the updates after it; past
//! [`CONSOLIDATE_AFTER_VERSIONS`] versions or [`CONSOLIDATE_AFTER_BYTES`] update bytes a write
//! stores a new working snapshot, and a new history snapshot (the whole history) once the updates
//! after the last one outgrow a quarter of it. Version rows are never changed or removed, so
//! consolidation loses nothing.
//!
//! Who writes is an [`Author`]: the partner (the person, through the CLI or the editor), the
//! system (the runtime's rolling logs), or an agent acting on its own memory. Agents are held to
//! their permission (`read_only < append < read_write < admin`; for a shared block, the lesser of
//! the share's and the owner's); the partner may do anything but write a rolling log; only the
//! system appends to rolling logs (an import restores a log's recorded history, it adds no entry).
//!
//! A write may name the version it was based on. If the block has moved on since, the change is
//! made on a fork of the document at that version and merged (Loro's CRDT merge), so two writers
//! who started from the same version both keep their edits, each recorded with its author.
//!
//! The database is the source of truth. Loaded documents are cached per block, tagged with the
//! version they hold; every use first reads the block's head in the same transaction and catches
//! the document up (another process may have written), and a failed write drops the document.

mod doc;
mod exchange;
pub mod splice;
mod template;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use loro::{ExportMode, Frontiers, LoroDoc, VersionVector};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use exchange::{EXPORT_FORMAT, IMPORT_BYTES_MAX, ImportReport};
pub use template::{LIST_FIELD_ITEMS_MAX, STRATEGY_NAMES, Template};

use crate::error::StoreError;
use crate::store::{Constellation, cached_row};

/// A new working snapshot is stored once this many versions follow the last one.
pub const CONSOLIDATE_AFTER_VERSIONS: u64 = 128;
/// ... or once the updates after it hold this many bytes.
pub const CONSOLIDATE_AFTER_BYTES: u64 = 256 * 1024;
/// At a consolidation, the history snapshot is rewritten too once the updates after it hold more
/// than this fraction of its size (1/N) and at least [`CONSOLIDATE_AFTER_BYTES`]: its rewrites
/// then cost a constant factor of the history's size in all, however long the history grows.
pub const HISTORY_SNAPSHOT_GROWTH_DIVISOR: u64 = 4;
/// The largest character limit a block may have.
pub const BLOCK_CHARS_MAX: u32 = 1_000_000;
/// At most this many bytes in a commit message.
pub const MESSAGE_BYTES_MAX: usize = 1_000;
/// At most this many documents stay loaded per open constellation.
pub const DOC_CACHE_MAX: usize = 32;
/// Labels: 1 to 64 ASCII letters, digits, `_` or `-`, starting with a letter or digit.
pub const LABEL_BYTES_MAX: usize = 64;
/// At most this many characters in a block description.
pub const DESCRIPTION_CHARS_MAX: usize = 500;

/// What a block is for (Letta's distinction): core blocks are always in the agent's context,
/// working blocks hold what it is doing, archival blocks what it keeps for later, log blocks are
/// rolling logs the system appends to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BlockKind {
    Core,
    Working,
    Archival,
    Log,
}

impl BlockKind {
    pub const ALL: [Self; 4] = [Self::Core, Self::Working, Self::Archival, Self::Log];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Working => "working",
            Self::Archival => "archival",
            Self::Log => "log",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The character limit of a new block of this kind unless one is given.
    pub fn default_char_limit(self) -> u32 {
        match self {
            Self::Core => 5_000,
            Self::Working => 10_000,
            Self::Archival => 50_000,
            Self::Log => 20_000,
        }
    }
}

/// What an agent may do with a block, in increasing order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Permission {
    ReadOnly,
    Append,
    ReadWrite,
    Admin,
}

impl Permission {
    pub const ALL: [Self; 4] = [Self::ReadOnly, Self::Append, Self::ReadWrite, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::Append => "append",
            Self::ReadWrite => "read_write",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|permission| permission.as_str() == text.replace('-', "_"))
    }
}

/// How a block's document is structured.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Shape {
    /// Text, rendered as itself.
    Text,
    /// Typed fields, rendered as pretty JSON.
    Map,
    /// Items, rendered as a pretty JSON array.
    List,
    /// Rolling-log entries, rendered as JSON Lines (one compact entry per line).
    Log,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Map => "map",
            Self::List => "list",
            Self::Log => "log",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Text, Self::Map, Self::List, Self::Log].into_iter().find(|shape| shape.as_str() == text)
    }

    /// The extension of a file holding this rendering (for editors and diff paths).
    pub fn file_extension(self) -> &'static str {
        match self {
            Self::Text => "md",
            Self::Map | Self::List => "json",
            Self::Log => "jsonl",
        }
    }

    /// The value a rendering stands for: the text itself, the JSON of a map or list, the array of
    /// a log's entries. `None` if the rendering does not parse (it always does for stored content).
    pub fn value_of(self, content: &str) -> Option<Value> {
        match self {
            Self::Text => Some(Value::String(content.to_owned())),
            Self::Map | Self::List => serde_json::from_str(content).ok(),
            Self::Log => content
                .lines()
                .map(|line| serde_json::from_str(line).ok())
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
        }
    }
}

/// Who makes a change.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Author {
    /// An agent acting on memory it owns or that is shared with it; held to its permission.
    Agent(String),
    /// The person the constellation belongs to (CLI, editor).
    Partner,
    /// The runtime (rolling logs).
    System,
}

impl Author {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "partner" => Some(Self::Partner),
            "system" => Some(Self::System),
            _ => text.strip_prefix("agent:").filter(|id| !id.is_empty()).map(|id| Self::Agent(id.to_owned())),
        }
    }
}

impl fmt::Display for Author {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent(id) => write!(formatter, "agent:{id}"),
            Self::Partner => formatter.write_str("partner"),
            Self::System => formatter.write_str("system"),
        }
    }
}

/// Everything the memory layer refuses or fails at, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("agent {owner} has no memory block {label:?}")]
    BlockNotFound { owner: String, label: String },
    #[error("block {label:?} has no version {version}; its versions are 1 to {latest}")]
    VersionNotFound { label: String, version: u64, latest: u64 },
    #[error("agent {owner} already has a block {label:?}")]
    LabelTaken { owner: String, label: String },
    #[error("block {label:?} holds at most {limit} characters; this write would make it {attempted}")]
    LimitExceeded { label: String, limit: u64, attempted: u64 },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("block {label:?} follows the {template} template: {detail}")]
    TemplateInvalid { label: String, template: &'static str, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("memory block {label:?} is corrupt: {detail}; no version was changed")]
    Corrupt { label: String, detail: String },
    #[error("not a memory export: {0}")]
    ImportInvalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MemoryError {
    /// The stable code printed with the error (specs/error-codes.toml).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BlockNotFound { .. } => "MEMORY_BLOCK_NOT_FOUND",
            Self::VersionNotFound { .. } => "MEMORY_VERSION_NOT_FOUND",
            Self::LabelTaken { .. } => "MEMORY_LABEL_TAKEN",
            Self::LimitExceeded { .. } => "MEMORY_LIMIT_EXCEEDED",
            Self::PermissionDenied(_) => "MEMORY_PERMISSION_DENIED",
            Self::TemplateInvalid { .. } => "MEMORY_TEMPLATE_INVALID",
            Self::Invalid(_) => "MEMORY_INPUT_INVALID",
            Self::Corrupt { .. } => "MEMORY_CORRUPT",
            Self::ImportInvalid(_) => "MEMORY_IMPORT_INVALID",
            Self::Store(error) => error.code(),
        }
    }
}

fn sql(error: rusqlite::Error) -> MemoryError {
    MemoryError::Store(StoreError::Sqlite { path: Default::default(), source: error })
}

/// A new block.
#[derive(Clone, Debug)]
pub struct NewBlock {
    pub owner: String,
    pub label: String,
    pub description: String,
    pub kind: BlockKind,
    pub template: Option<Template>,
    /// `None`: the kind's default.
    pub char_limit: Option<u32>,
    pub permission: Permission,
    pub pinned: bool,
    /// The first version's content (text, or JSON for structured blocks); `None`: empty (a map
    /// template's required fields must then be set before the block has content).
    pub initial: Option<String>,
}

/// A block as stored, with its head.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Block {
    pub block_id: String,
    pub owner: String,
    pub label: String,
    pub description: String,
    pub kind: BlockKind,
    pub template: Option<Template>,
    pub shape: Shape,
    pub char_limit: u32,
    pub permission: Permission,
    pub pinned: bool,
    /// The latest version (versions are numbered from 1).
    pub version_count: u64,
    /// Characters of the latest version.
    pub chars: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// What the viewer may do with it (`None` for the partner and the system, who are not held
    /// to block permissions).
    pub access: Option<Permission>,
    /// Set when the block is another agent's, shared with the viewer.
    pub shared_by: Option<String>,
}

/// One version's metadata.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Version {
    pub seq: u64,
    /// `create`, `set`, `append`, `edit`, `rollback`, `log`, `import`.
    pub op: String,
    pub author: String,
    pub message: String,
    pub at_ms: u64,
    pub chars: u64,
    pub content_sha256: [u8; 32],
    /// The version the change was made against when that was not the latest (a merge).
    pub base: Option<u64>,
}

/// A change to a block.
#[derive(Clone, Debug)]
pub enum Change {
    /// Replace the content: text for text blocks, JSON for structured blocks.
    Set(String),
    /// Add to the end: a line of text, or one item (JSON, or a string for a task title).
    Append(String),
    /// Make the content equal to version N again (a new version; history is kept).
    Rollback(u64),
    /// Append an entry to a rolling log, dropping its oldest entries past the limit. With a key,
    /// a second append with the same key is a no-op (the runtime re-appends after a crash).
    Log { entry: Value, key: Option<String> },
}

impl Change {
    fn op(&self) -> &'static str {
        match self {
            Self::Set(_) => "set",
            Self::Append(_) => "append",
            Self::Rollback(_) => "rollback",
            Self::Log { .. } => "log",
        }
    }

    fn needs(&self) -> Permission {
        match self {
            Self::Append(_) | Self::Log { .. } => Permission::Append,
            Self::Set(_) | Self::Rollback(_) => Permission::ReadWrite,
        }
    }
}

/// One write.
#[derive(Clone, Debug)]
pub struct Write {
    pub author: Author,
    pub change: Change,
    /// The version the change was made against (`None`: the latest). If newer versions exist,
    /// the change is merged over them.
    pub base: Option<u64>,
    /// `None`: a message describing the change.
    pub message: Option<String>,
    /// `op` recorded instead of the change's own (`edit` for a set made in an editor).
    pub op: Option<&'static str>,
    pub at_ms: u64,
}

/// A block change made inside another write's transaction ([`Constellation::write_block_in`]),
/// waiting for that transaction to commit.
pub struct StagedWrite {
    loaded: Loaded,
    written: Written,
}

impl fmt::Debug for StagedWrite {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("StagedWrite").field("written", &self.written).finish_non_exhaustive()
    }
}

/// What a write did.
#[derive(Clone, Debug)]
pub struct Written {
    pub block: Block,
    /// The new version; `None` when the content did not change (no version is made).
    pub version: Option<Version>,
    pub previous: String,
    pub content: String,
    /// Log entries rolled off the front to stay within the limit.
    pub rolled_off: usize,
}

/// Metadata changes (admin).
#[derive(Clone, Default, Debug)]
pub struct Configure {
    pub description: Option<String>,
    pub char_limit: Option<u32>,
    pub permission: Option<Permission>,
    pub pinned: Option<bool>,
}

/// One structured difference between two versions of a map or list block.
#[derive(Clone, PartialEq, Debug, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum FieldChange {
    Added { field: String, value: Value },
    Removed { field: String, value: Value },
    Changed { field: String, before: Value, after: Value },
    Inserted { index: usize, item: Value },
    Deleted { index: usize, item: Value },
}

/// The difference between two versions.
#[derive(Clone, Debug)]
pub struct BlockDiff {
    pub from: Version,
    pub to: Version,
    /// A unified diff of the rendered contents (empty when equal).
    pub unified: String,
    /// For map and list blocks: field or item changes.
    pub changes: Vec<FieldChange>,
    pub before: String,
    pub after: String,
}

/// The documents a process has loaded: block id → document at a version, with that version's
/// rendered content.
#[derive(Default)]
pub(crate) struct DocCache(Mutex<HashMap<String, Loaded>>);

impl fmt::Debug for DocCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.lock().map(|docs| docs.len()).unwrap_or(0);
        formatter.debug_struct("DocCache").field("loaded", &count).finish()
    }
}

struct Loaded {
    doc: LoroDoc,
    seq: u64,
    content: String,
    /// SHA-256 of `content`.
    digest: [u8; 32],
}

impl Loaded {
    fn new(doc: LoroDoc, seq: u64, content: String) -> Self {
        let digest = sha256(content.as_bytes());
        Self { doc, seq, content, digest }
    }
}

impl DocCache {
    fn take(&self, block_id: &str) -> Option<Loaded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(block_id)
    }

    fn put(&self, block_id: &str, loaded: Loaded) {
        let mut docs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if docs.len() >= DOC_CACHE_MAX
            && let Some(evict) = docs.keys().next().cloned()
        {
            docs.remove(&evict);
        }
        docs.insert(block_id.to_owned(), loaded);
    }
}

/// Checks a label: 1 to 64 ASCII letters, digits, `_` or `-`, starting with a letter or digit.
pub fn check_label(label: &str) -> Result<(), MemoryError> {
    let ok = !label.is_empty()
        && label.len() <= LABEL_BYTES_MAX
        && label.as_bytes()[0].is_ascii_alphanumeric()
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MemoryError::Invalid(format!(
            "{label:?} is not a block label: use 1 to {LABEL_BYTES_MAX} letters, digits, _ or -, starting with a letter or digit"
        )))
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

const BLOCK_COLUMNS: &str = "block_id, owner, label, description, kind, template, shape, char_limit, permission, \
     pinned, version_count, created_at_ms, updated_at_ms, snapshot_seq, pending_bytes, history_pending_bytes";

struct BlockRow {
    block: Block,
    /// The version the working snapshot holds (0: none).
    snapshot_seq: u64,
    /// Update bytes after the working snapshot.
    pending_bytes: u64,
    /// Update bytes after the history snapshot.
    history_pending_bytes: u64,
}

fn read_block_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<String>, [i64; 6], Option<String>)> {
    Ok((
        vec![row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(6)?, row.get(8)?],
        [row.get(7)?, row.get(9)?, row.get(10)?, row.get(11)?, row.get(12)?, row.get(13)?],
        row.get(5)?,
    ))
}

fn corrupt(label: &str, detail: impl Into<String>) -> MemoryError {
    MemoryError::Corrupt { label: label.to_owned(), detail: detail.into() }
}

fn block_from(
    (text, numbers, template): (Vec<String>, [i64; 6], Option<String>),
    (pending_bytes, history_pending_bytes): (i64, i64),
) -> Result<BlockRow, MemoryError> {
    let [block_id, owner, label, description, kind, shape, permission] =
        <[String; 7]>::try_from(text).map_err(|_| corrupt("?", "block row"))?;
    let [char_limit, pinned, version_count, created_at_ms, updated_at_ms, snapshot_seq] = numbers;
    let bad = |what: &str| corrupt(&label, format!("unknown {what}"));
    let template = match template {
        None => None,
        Some(name) => Some(Template::parse(&name).ok_or_else(|| bad("template"))?),
    };
    Ok(BlockRow {
        block: Block {
            kind: BlockKind::parse(&kind).ok_or_else(|| bad("kind"))?,
            shape: Shape::parse(&shape).ok_or_else(|| bad("shape"))?,
            permission: Permission::parse(&permission).ok_or_else(|| bad("permission"))?,
            template,
            char_limit: u32::try_from(char_limit).unwrap_or(BLOCK_CHARS_MAX),
            pinned: pinned != 0,
            version_count: to_u64(version_count),
            chars: 0,
            created_at_ms: to_u64(created_at_ms),
            updated_at_ms: to_u64(updated_at_ms),
            access: None,
            shared_by: None,
            block_id,
            owner,
            label,
            description,
        },
        snapshot_seq: to_u64(snapshot_seq),
        pending_bytes: to_u64(pending_bytes),
        history_pending_bytes: to_u64(history_pending_bytes),
    })
}

fn find_block(tx: &Transaction<'_>, owner: &str, label: &str) -> Result<BlockRow, MemoryError> {
    let row = cached_row(
        tx,
        &format!("SELECT {BLOCK_COLUMNS} FROM memory_blocks WHERE owner = ?1 AND label = ?2"),
        params![owner, label],
        |row| Ok((read_block_row(row)?, (row.get::<_, i64>(14)?, row.get::<_, i64>(15)?))),
    )
    .optional()
    .map_err(sql)?;
    let (fields, pending) =
        row.ok_or_else(|| MemoryError::BlockNotFound { owner: owner.to_owned(), label: label.to_owned() })?;
    let mut row = block_from(fields, pending)?;
    if row.block.version_count > 0 {
        row.block.chars = version(tx, &row.block, row.block.version_count)?.chars;
    }
    Ok(row)
}

fn find_block_by_id(tx: &Transaction<'_>, block_id: &str) -> Result<Option<BlockRow>, MemoryError> {
    let row =
        cached_row(tx, &format!("SELECT {BLOCK_COLUMNS} FROM memory_blocks WHERE block_id = ?1"), [block_id], |row| {
            Ok((read_block_row(row)?, (row.get::<_, i64>(14)?, row.get::<_, i64>(15)?)))
        })
        .optional()
        .map_err(sql)?;
    row.map(|(fields, pending)| block_from(fields, pending)).transpose()
}

/// What `viewer` may do with `block`: `None` for the partner and the system; the owner's
/// permission for the owner; the lesser of share and owner for an agent it is shared with.
fn access(tx: &Transaction<'_>, block: &Block, viewer: &Author) -> Result<Option<Permission>, MemoryError> {
    let Author::Agent(agent) = viewer else {
        return Ok(None);
    };
    if *agent == block.owner {
        return Ok(Some(block.permission));
    }
    let shared: Option<String> = cached_row(
        tx,
        "SELECT permission FROM memory_shares WHERE block_id = ?1 AND agent_id = ?2",
        params![block.block_id, agent],
        |row| row.get(0),
    )
    .optional()
    .map_err(sql)?;
    match shared.as_deref().and_then(Permission::parse) {
        Some(permission) => Ok(Some(permission.min(block.permission))),
        None => Err(MemoryError::PermissionDenied(format!(
            "agent {agent} has no access to block {:?} of agent {}: it is not shared with it",
            block.label, block.owner
        ))),
    }
}

/// The block, if `viewer` may read it, with what `viewer` may do with it.
fn readable(tx: &Transaction<'_>, owner: &str, label: &str, viewer: &Author) -> Result<Block, MemoryError> {
    let mut block = find_block(tx, owner, label)?.block;
    block.access = access(tx, &block, viewer)?;
    Ok(block)
}

/// Refuses a change `author` may not make; the message says who, what and what it would need.
fn check_write(tx: &Transaction<'_>, block: &Block, author: &Author, change: &Change) -> Result<(), MemoryError> {
    let is_log = block.kind == BlockKind::Log;
    match (author, is_log, change) {
        (Author::System, true, Change::Log { .. }) => return Ok(()),
        (_, true, _) => {
            return Err(MemoryError::PermissionDenied(format!(
                "block {:?} is a rolling log: only the system appends to it; {author} may read it",
                block.label
            )));
        }
        (_, false, Change::Log { .. }) => {
            return Err(MemoryError::Invalid(format!("block {:?} is not a rolling log", block.label)));
        }
        _ => {}
    }
    require(tx, block, author, change.needs(), change.op())
}

fn require(
    tx: &Transaction<'_>,
    block: &Block,
    author: &Author,
    needs: Permission,
    what: &str,
) -> Result<(), MemoryError> {
    match access(tx, block, author)? {
        Some(has) if has < needs => Err(MemoryError::PermissionDenied(format!(
            "{author} has {} permission on block {:?}; {what} needs {}",
            has.as_str(),
            block.label,
            needs.as_str()
        ))),
        _ => Ok(()),
    }
}

fn version(tx: &Transaction<'_>, block: &Block, seq: u64) -> Result<Version, MemoryError> {
    let row = cached_row(
        tx,
        "SELECT op, author, message, at_ms, content_chars, content_sha256, base_seq
             FROM memory_versions WHERE block_id = ?1 AND seq = ?2",
        params![block.block_id, to_i64(seq)],
        |row| {
            Ok(Version {
                seq,
                op: row.get(0)?,
                author: row.get(1)?,
                message: row.get(2)?,
                at_ms: to_u64(row.get(3)?),
                chars: to_u64(row.get(4)?),
                content_sha256: row.get::<_, Vec<u8>>(5)?.try_into().unwrap_or([0; 32]),
                base: row.get::<_, Option<i64>>(6)?.map(to_u64),
            })
        },
    )
    .optional()
    .map_err(sql)?;
    row.ok_or_else(|| MemoryError::VersionNotFound {
        label: block.label.clone(),
        version: seq,
        latest: block.version_count,
    })
}

/// The rendered content of version `seq`: its keyframe and the splices after it, checked against
/// the version's SHA-256.
fn content_at(tx: &Transaction<'_>, block: &Block, seq: u64) -> Result<String, MemoryError> {
    if seq == 0 || seq > block.version_count {
        return Err(MemoryError::VersionNotFound {
            label: block.label.clone(),
            version: seq,
            latest: block.version_count,
        });
    }
    let mut statement = tx
        .prepare_cached(
            "SELECT seq, content, splice, content_sha256 FROM memory_versions
             WHERE block_id = ?1 AND seq <= ?2
               AND seq >= (SELECT keyframe_seq FROM memory_versions WHERE block_id = ?1 AND seq = ?2)
             ORDER BY seq",
        )
        .map_err(sql)?;
    let mut rows = statement.query(params![block.block_id, to_i64(seq)]).map_err(sql)?;
    let mut content: Option<Vec<u8>> = None;
    let mut expected = [0_u8; 32];
    let mut last = 0;
    while let Some(row) = rows.next().map_err(sql)? {
        last = to_u64(row.get(0).map_err(sql)?);
        let keyframe: Option<Vec<u8>> = row.get(1).map_err(sql)?;
        let splice: Option<Vec<u8>> = row.get(2).map_err(sql)?;
        expected = row.get::<_, Vec<u8>>(3).map_err(sql)?.try_into().unwrap_or([0; 32]);
        content = match (content, keyframe, splice) {
            (None, Some(full), _) => Some(full),
            (Some(previous), _, Some(splice)) => Some(splice::apply(&previous, &splice).ok_or_else(|| {
                corrupt(&block.label, format!("the stored content of version {last} does not apply"))
            })?),
            _ => return Err(corrupt(&block.label, format!("version {last} breaks its content chain"))),
        };
    }
    let content = content
        .filter(|_| last == seq)
        .ok_or_else(|| corrupt(&block.label, format!("the content chain of version {seq} is incomplete")))?;
    if sha256(&content) != expected {
        return Err(corrupt(&block.label, format!("the content of version {seq} does not match its SHA-256")));
    }
    String::from_utf8(content).map_err(|_| corrupt(&block.label, format!("version {seq} is not UTF-8")))
}

/// Loads the block's document at its head: the snapshot and the updates after it, checked
/// against the head's recorded content.
fn load_doc(tx: &Transaction<'_>, row: &BlockRow) -> Result<Loaded, MemoryError> {
    if row.snapshot_seq > 0 {
        match load_working(tx, row) {
            Ok(loaded) => return Ok(loaded),
            // An update based on a version older than the snapshot (a merge) needs the history.
            Err(error) => tracing::debug!(block = %row.block.label, %error, "loading the whole history"),
        }
    }
    load_history(tx, row)
}

/// The working document: the state at the last consolidation with the history after it (a Loro
/// shallow snapshot), and the updates since. Enough to read and change the latest version.
fn load_working(tx: &Transaction<'_>, row: &BlockRow) -> Result<Loaded, MemoryError> {
    let block = &row.block;
    let shallow: Vec<u8> = tx
        .query_row("SELECT shallow FROM memory_snapshots WHERE block_id = ?1", [&block.block_id], |r| r.get(0))
        .map_err(sql)?;
    let doc = LoroDoc::new();
    doc.import(&shallow).map_err(|e| corrupt(&block.label, format!("its shallow snapshot does not load: {e}")))?;
    catch_up(tx, block, &doc, row.snapshot_seq)?;
    let content = doc::render(&doc, block.shape);
    let loaded = Loaded::new(doc, block.version_count, content);
    check_head(tx, block, &loaded.digest)?;
    Ok(loaded)
}

/// The document with its whole history: the history snapshot and the updates after it.
fn load_history(tx: &Transaction<'_>, row: &BlockRow) -> Result<Loaded, MemoryError> {
    let block = &row.block;
    let doc = LoroDoc::new();
    let snapshot: Option<(i64, Vec<u8>)> = tx
        .query_row("SELECT seq, snapshot FROM memory_snapshots WHERE block_id = ?1", [&block.block_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sql)?;
    let mut from = 0;
    if let Some((seq, snapshot)) = snapshot {
        doc.import(&snapshot).map_err(|e| corrupt(&block.label, format!("its snapshot does not load: {e}")))?;
        from = to_u64(seq);
    }
    catch_up(tx, block, &doc, from)?;
    let content = doc::render(&doc, block.shape);
    let loaded = Loaded::new(doc, block.version_count, content);
    check_head(tx, block, &loaded.digest)?;
    Ok(loaded)
}

/// Imports the updates of versions after `from` into `doc`.
fn catch_up(tx: &Transaction<'_>, block: &Block, doc: &LoroDoc, from: u64) -> Result<(), MemoryError> {
    let mut statement = tx
        .prepare_cached("SELECT seq, update_blob FROM memory_versions WHERE block_id = ?1 AND seq > ?2 ORDER BY seq")
        .map_err(sql)?;
    let updates = statement
        .query_map(params![block.block_id, to_i64(from)], |row| Ok((to_u64(row.get(0)?), row.get::<_, Vec<u8>>(1)?)))
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    if updates.is_empty() {
        return Ok(());
    }
    // One import per version: Loro's `import_batch` costs several times more for a few updates
    // on a long history (4 ms against 0.9 ms for 16 updates over 10,000 versions, measured).
    for (seq, blob) in &updates {
        match doc.import(blob) {
            Ok(status) if status.pending.is_none() => {}
            Ok(_) => return Err(corrupt(&block.label, format!("the update of version {seq} misses earlier changes"))),
            Err(error) => {
                return Err(corrupt(&block.label, format!("the update of version {seq} does not load: {error}")));
            }
        }
    }
    Ok(())
}

fn check_head(tx: &Transaction<'_>, block: &Block, digest: &[u8; 32]) -> Result<(), MemoryError> {
    if block.version_count == 0 {
        return Ok(());
    }
    let head = version(tx, block, block.version_count)?;
    if *digest != head.content_sha256 {
        return Err(corrupt(
            &block.label,
            format!("its Loro document does not match the recorded content of version {}", block.version_count),
        ));
    }
    Ok(())
}

/// The document at the head, from the cache when it is current.
fn doc_at_head(cache: &DocCache, tx: &Transaction<'_>, row: &BlockRow) -> Result<Loaded, MemoryError> {
    let block = &row.block;
    match cache.take(&block.block_id) {
        Some(loaded) if loaded.seq == block.version_count => {
            check_head(tx, block, &loaded.digest)?;
            Ok(loaded)
        }
        Some(loaded) if loaded.seq < block.version_count => match catch_up(tx, block, &loaded.doc, loaded.seq) {
            Ok(()) => {
                let content = doc::render(&loaded.doc, block.shape);
                let loaded = Loaded::new(loaded.doc, block.version_count, content);
                check_head(tx, block, &loaded.digest)?;
                Ok(loaded)
            }
            // A working document cannot take a merge based on a version before it.
            Err(_) if loaded.doc.is_shallow() => load_history(tx, row),
            Err(error) => Err(error),
        },
        _ => load_doc(tx, row),
    }
}

/// The author's peer id: its first, or a new one when `avoid` says the first would reuse
/// operation ids (a write based on an old version).
fn peer_for(tx: &Transaction<'_>, author: &Author, fresh: bool, at_ms: u64) -> Result<u64, MemoryError> {
    let author = author.to_string();
    if !fresh {
        let existing: Option<i64> = cached_row(
            tx,
            "SELECT peer_id FROM memory_peers WHERE author = ?1 ORDER BY created_at_ms, peer_id LIMIT 1",
            [&author],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql)?;
        if let Some(peer) = existing {
            return Ok(peer as u64);
        }
    }
    let peer: i64 = cached_row(
        tx,
        "INSERT INTO memory_peers (peer_id, author, created_at_ms)
             VALUES (random() & 0x3fffffffffffffff, ?1, ?2) RETURNING peer_id",
        params![author, to_i64(at_ms)],
        |row| row.get(0),
    )
    .map_err(sql)?;
    Ok(peer as u64)
}

fn decode_frontiers(block: &Block, seq: u64, bytes: &[u8]) -> Result<Frontiers, MemoryError> {
    Frontiers::decode(bytes)
        .map_err(|e| corrupt(&block.label, format!("the frontiers of version {seq} do not decode: {e}")))
}

/// Parses a change's text for this block: text as is, JSON for structured blocks, validated
/// against the template.
fn parse_value(block: &Block, input: &str, item: bool) -> Result<Value, MemoryError> {
    if block.shape == Shape::Text {
        return Ok(Value::String(input.to_owned()));
    }
    let value = match serde_json::from_str::<Value>(input) {
        Ok(value) => value,
        Err(_) if item && block.template == Some(Template::Tasks) => Value::String(input.trim().to_owned()),
        Err(error) => {
            return Err(MemoryError::Invalid(format!(
                "block {:?} is a {} block and takes JSON: {error}",
                block.label,
                block.shape.as_str()
            )));
        }
    };
    let Some(template) = block.template else {
        return Ok(value);
    };
    let invalid = |detail: String| MemoryError::TemplateInvalid {
        label: block.label.clone(),
        template: template.as_str(),
        detail,
    };
    if item { template.validate_item(&value).map_err(invalid) } else { template.validate(&value).map_err(invalid) }
}

fn describe(change: &Change) -> String {
    match change {
        Change::Set(_) => "set".to_owned(),
        Change::Append(_) => "append".to_owned(),
        Change::Rollback(seq) => format!("roll back to version {seq}"),
        Change::Log { .. } => "log entry".to_owned(),
    }
}

fn check_message(message: &str) -> Result<(), MemoryError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(MemoryError::Invalid(format!("a version message holds at most {MESSAGE_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Appends one version: the update `doc` gained since `before`, its frontiers, and the rendered
/// content stored as a keyframe or a splice. Consolidates when a threshold is crossed.
#[allow(clippy::too_many_arguments)]
fn record_version(
    tx: &Transaction<'_>,
    row: &mut BlockRow,
    doc: &LoroDoc,
    before: &VersionVector,
    previous: &str,
    content: &str,
    known_splice: Option<Vec<u8>>,
    meta: (&str, &str, &str, u64, Option<u64>, Option<&str>),
) -> Result<Version, MemoryError> {
    let (op, author, message, at_ms, base, key) = meta;
    let block = &mut row.block;
    let seq = block.version_count + 1;
    let update = doc
        .export(ExportMode::updates(before))
        .map_err(|e| MemoryError::Invalid(format!("cannot encode the change: {e}")))?;
    let frontiers = doc.oplog_frontiers().encode();
    let (keyframe_seq, chain_bytes, full, splice) = if seq == 1 {
        (1, 0, Some(content.as_bytes().to_vec()), None)
    } else {
        let (last_keyframe, last_chain): (i64, i64) = cached_row(
            tx,
            "SELECT keyframe_seq, chain_bytes FROM memory_versions WHERE block_id = ?1 AND seq = ?2",
            params![block.block_id, to_i64(seq - 1)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
        let splice = known_splice.unwrap_or_else(|| splice::encode(previous, content));
        let chain = to_u64(last_chain) + splice.len() as u64;
        if seq - to_u64(last_keyframe) >= splice::KEYFRAME_EVERY || chain > content.len().max(256) as u64 {
            (seq, 0, Some(content.as_bytes().to_vec()), None)
        } else {
            (to_u64(last_keyframe), chain, None, Some(splice))
        }
    };
    let chars = content.chars().count() as u64;
    let digest = sha256(content.as_bytes());
    tx.prepare_cached(
        "INSERT INTO memory_versions (block_id, seq, op, author, message, at_ms, frontiers, update_blob,
             keyframe_seq, chain_bytes, content, splice, content_sha256, content_chars, idempotency_key, base_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .map_err(sql)?
    .execute(params![
        block.block_id,
        to_i64(seq),
        op,
        author,
        message,
        to_i64(at_ms),
        frontiers,
        update,
        to_i64(keyframe_seq),
        to_i64(chain_bytes),
        full,
        splice,
        digest.as_slice(),
        to_i64(chars),
        key,
        base.map(to_i64),
    ])
    .map_err(sql)?;
    row.pending_bytes += update.len() as u64;
    row.history_pending_bytes += update.len() as u64;
    block.version_count = seq;
    block.chars = chars;
    block.updated_at_ms = block.updated_at_ms.max(at_ms);
    if seq - row.snapshot_seq >= CONSOLIDATE_AFTER_VERSIONS || row.pending_bytes >= CONSOLIDATE_AFTER_BYTES {
        consolidate(tx, row, doc, false, at_ms)?;
    }
    tx.prepare_cached(
        "UPDATE memory_blocks SET version_count = ?2, updated_at_ms = ?3, snapshot_seq = ?4, pending_bytes = ?5,
             history_pending_bytes = ?6
         WHERE block_id = ?1",
    )
    .map_err(sql)?
    .execute(params![
        row.block.block_id,
        to_i64(seq),
        to_i64(row.block.updated_at_ms),
        to_i64(row.snapshot_seq),
        to_i64(row.pending_bytes),
        to_i64(row.history_pending_bytes)
    ])
    .map_err(sql)?;
    Ok(Version {
        seq,
        op: op.to_owned(),
        author: author.to_owned(),
        message: message.to_owned(),
        at_ms,
        chars,
        content_sha256: digest,
        base,
    })
}

/// Stores a new working snapshot of the document (its state at the head), and a new history
/// snapshot too when the updates after the last one have grown past its size over
/// [`HISTORY_SNAPSHOT_GROWTH_DIVISOR`] (or `force_history`). Version rows stay. The caller
/// stores `row`'s counters.
fn consolidate(
    tx: &Transaction<'_>,
    row: &mut BlockRow,
    doc: &LoroDoc,
    force_history: bool,
    at_ms: u64,
) -> Result<(), MemoryError> {
    let encode = |e: loro::LoroEncodeError| MemoryError::Invalid(format!("cannot encode a snapshot: {e}"));
    let seq = row.block.version_count;
    let shallow = doc.export(ExportMode::shallow_snapshot(&doc.oplog_frontiers())).map_err(encode)?;
    let history_bytes: Option<i64> = tx
        .query_row("SELECT length(snapshot) FROM memory_snapshots WHERE block_id = ?1", [&row.block.block_id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql)?;
    let history_due = force_history
        || history_bytes.is_none_or(|bytes| {
            row.history_pending_bytes >= (to_u64(bytes) / HISTORY_SNAPSHOT_GROWTH_DIVISOR).max(CONSOLIDATE_AFTER_BYTES)
        });
    if history_due {
        // A working document lacks the early history the history snapshot must hold.
        let snapshot = if doc.is_shallow() {
            load_history(tx, row)?.doc.export(ExportMode::Snapshot).map_err(encode)?
        } else {
            doc.export(ExportMode::Snapshot).map_err(encode)?
        };
        tx.execute(
            "INSERT INTO memory_snapshots (block_id, seq, snapshot, shallow_seq, shallow, created_at_ms)
             VALUES (?1, ?2, ?3, ?2, ?4, ?5)
             ON CONFLICT (block_id) DO UPDATE SET seq = excluded.seq, snapshot = excluded.snapshot,
                 shallow_seq = excluded.shallow_seq, shallow = excluded.shallow, created_at_ms = excluded.created_at_ms",
            params![row.block.block_id, to_i64(seq), snapshot, shallow, to_i64(at_ms)],
        )
        .map_err(sql)?;
        row.history_pending_bytes = 0;
        tracing::debug!(block = %row.block.label, seq, bytes = snapshot.len(), "memory block history consolidated");
    } else {
        tx.execute(
            "UPDATE memory_snapshots SET shallow_seq = ?2, shallow = ?3, created_at_ms = ?4 WHERE block_id = ?1",
            params![row.block.block_id, to_i64(seq), shallow, to_i64(at_ms)],
        )
        .map_err(sql)?;
    }
    row.snapshot_seq = seq;
    row.pending_bytes = 0;
    Ok(())
}

/// A unified diff between two versions' contents, headed `label@from` and `label@to`, with
/// `context` lines around each change (empty when they are equal).
pub fn unified_diff(label: &str, (from, before): (u64, &str), (to, after): (u64, &str), context: usize) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(context)
        .header(&format!("{label}@{from}"), &format!("{label}@{to}"))
        .to_string()
}

/// The blocks a new agent starts with: persona, partner, preferences, tasks, scratchpad and
/// the outcomes log.
pub fn default_blocks(owner: &str) -> Vec<NewBlock> {
    let block = |label: &str, description: &str, kind, template, permission| NewBlock {
        owner: owner.to_owned(),
        label: label.to_owned(),
        description: description.to_owned(),
        kind,
        template,
        char_limit: None,
        permission,
        pinned: kind == BlockKind::Core,
        initial: None,
    };
    vec![
        block("persona", "Who this agent is", BlockKind::Core, Some(Template::Persona), Permission::ReadOnly),
        block(
            "partner",
            "The person this agent works for",
            BlockKind::Core,
            Some(Template::Partner),
            Permission::ReadWrite,
        ),
        block(
            "preferences",
            "Negotiation defaults: max price, currency, providers, strategy",
            BlockKind::Core,
            Some(Template::Preferences),
            Permission::ReadOnly,
        ),
        block("tasks", "What the agent has to do", BlockKind::Working, Some(Template::Tasks), Permission::ReadWrite),
        block(
            "scratchpad",
            "Notes the agent keeps for itself",
            BlockKind::Working,
            Some(Template::Scratchpad),
            Permission::ReadWrite,
        ),
        block("outcomes", "Every finished negotiation (rolling log)", BlockKind::Log, None, Permission::ReadOnly),
    ]
}

impl Constellation {
    fn write_memory<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        self.write_as(work).map_err(|e| self.memory_path(e))
    }

    fn read_memory<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        self.read_as(work).map_err(|e| self.memory_path(e))
    }

    fn memory_path(&self, error: MemoryError) -> MemoryError {
        match error {
            MemoryError::Store(store) => MemoryError::Store(self.with_path(store)),
            other => other,
        }
    }

    /// Creates a block with its first version (authored by `author`, who needs no permission:
    /// creating is the partner's or the system's act). Fails if the owner has the label.
    pub fn create_block(&self, new: NewBlock, author: &Author, at_ms: u64) -> Result<Block, MemoryError> {
        let (block, loaded) = self.write_memory(|tx| create_block(tx, new, author, at_ms))?;
        self.memory_docs.put(&block.block_id, loaded);
        Ok(block)
    }

    /// Creates the [`default_blocks`] the owner lacks, in one transaction.
    pub fn ensure_default_blocks(&self, owner: &str, at_ms: u64) -> Result<(), MemoryError> {
        let created = self.write_memory(|tx| ensure_default_blocks_in(tx, owner, at_ms))?;
        for (block, loaded) in created {
            self.memory_docs.put(&block.block_id, loaded);
        }
        Ok(())
    }

    /// The blocks `agent` owns, then those shared with it, as `viewer` sees them.
    pub fn blocks(&self, agent: &str, viewer: &Author) -> Result<Vec<Block>, MemoryError> {
        self.read_memory(|tx| {
            let keys: Vec<(String, String)> = {
                let mut statement = tx
                    .prepare(
                        "SELECT owner, label, 0 FROM memory_blocks WHERE owner = ?1
                         UNION ALL
                         SELECT b.owner, b.label, 1 FROM memory_shares s JOIN memory_blocks b USING (block_id)
                         WHERE s.agent_id = ?1
                         ORDER BY 3, 1, 2",
                    )
                    .map_err(sql)?;
                let rows = statement.query_map([agent], |row| Ok((row.get(0)?, row.get(1)?))).map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            };
            let viewer = match viewer {
                Author::Agent(_) => viewer.clone(),
                _ => Author::Agent(agent.to_owned()),
            };
            keys.iter()
                .map(|(owner, label)| {
                    let mut block = readable(tx, owner, label, &viewer)?;
                    if *owner != agent {
                        block.shared_by = Some(owner.clone());
                    }
                    Ok(block)
                })
                .collect()
        })
    }

    /// One block, if `viewer` may read it.
    pub fn block(&self, owner: &str, label: &str, viewer: &Author) -> Result<Block, MemoryError> {
        self.read_memory(|tx| {
            let block = readable(tx, owner, label, viewer)?;
            Ok(block)
        })
    }

    /// The block and its content at `version` (`None`: the latest), with that version.
    pub fn block_content(
        &self,
        owner: &str,
        label: &str,
        viewer: &Author,
        version: Option<u64>,
    ) -> Result<(Block, Version, String), MemoryError> {
        self.read_memory(|tx| {
            let block = readable(tx, owner, label, viewer)?;
            let seq = version.unwrap_or(block.version_count);
            let content = content_at(tx, &block, seq)?;
            Ok((block.clone(), self::version(tx, &block, seq)?, content))
        })
    }

    /// Versions of a block, newest first: at most `limit`, older than `before` if given.
    pub fn block_versions(
        &self,
        owner: &str,
        label: &str,
        viewer: &Author,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Block, Vec<Version>), MemoryError> {
        self.read_memory(|tx| {
            let block = readable(tx, owner, label, viewer)?;
            let top = before.map_or(block.version_count, |b| b.saturating_sub(1).min(block.version_count));
            let bottom = top.saturating_sub(limit as u64);
            let versions = (bottom + 1..=top).rev().map(|seq| version(tx, &block, seq)).collect::<Result<_, _>>()?;
            Ok((block, versions))
        })
    }

    /// The difference between two versions: a unified diff of their rendered contents and, for
    /// map and list blocks, the field or item changes.
    pub fn diff_block(
        &self,
        owner: &str,
        label: &str,
        viewer: &Author,
        from: u64,
        to: u64,
    ) -> Result<BlockDiff, MemoryError> {
        self.read_memory(|tx| {
            let block = find_block(tx, owner, label)?.block;
            access(tx, &block, viewer)?;
            let before = content_at(tx, &block, from)?;
            let after = content_at(tx, &block, to)?;
            let unified = unified_diff(label, (from, &before), (to, &after), 3);
            let changes = match block.shape {
                Shape::Text => Vec::new(),
                shape => structured_changes(shape.value_of(&before), shape.value_of(&after)),
            };
            Ok(BlockDiff {
                from: version(tx, &block, from)?,
                to: version(tx, &block, to)?,
                unified,
                changes,
                before,
                after,
            })
        })
    }

    /// Makes one change to a block as one new version (or none when nothing changes).
    pub fn write_block(&self, owner: &str, label: &str, write: Write) -> Result<Written, MemoryError> {
        if let Some(message) = &write.message {
            check_message(message)?;
        }
        let (loaded, written) = self.write_memory(|tx| {
            let mut row = find_block(tx, owner, label)?;
            check_write(tx, &row.block, &write.author, &write.change)?;
            let loaded = doc_at_head(&self.memory_docs, tx, &row)?;
            apply_write(tx, &mut row, loaded, &write)
        })?;
        // The document is cached again only once its version is committed.
        self.memory_docs.put(&written.block.block_id, loaded);
        Ok(written)
    }

    /// [`Self::write_block`] inside another write's transaction (the one that records a
    /// session's end, say), under a savepoint: if the change fails, only it is undone and the
    /// rest of that write goes on. When the owner lacks the block and `label` is one of the
    /// [`default_blocks`], the missing defaults are created first, in the same savepoint. The
    /// block's document is cached by [`Self::staged_committed`] once that transaction commits.
    pub fn write_block_in(
        &self,
        ledger: &crate::ledger::LedgerTx<'_>,
        owner: &str,
        label: &str,
        write: Write,
    ) -> Result<StagedWrite, MemoryError> {
        const SAVEPOINT: &str = "pactum_block_write";
        if let Some(message) = &write.message {
            check_message(message)?;
        }
        let tx = ledger.tx();
        tx.execute_batch(&format!("SAVEPOINT {SAVEPOINT}")).map_err(sql)?;
        let staged = (|| {
            let mut row = match find_block(tx, owner, label) {
                Err(MemoryError::BlockNotFound { .. }) if default_blocks(owner).iter().any(|b| b.label == label) => {
                    ensure_default_blocks_in(tx, owner, write.at_ms)?;
                    find_block(tx, owner, label)?
                }
                found => found?,
            };
            check_write(tx, &row.block, &write.author, &write.change)?;
            let loaded = doc_at_head(&self.memory_docs, tx, &row)?;
            apply_write(tx, &mut row, loaded, &write)
        })();
        match staged {
            Ok((loaded, written)) => {
                tx.execute_batch(&format!("RELEASE {SAVEPOINT}")).map_err(sql)?;
                Ok(StagedWrite { loaded, written })
            }
            Err(error) => {
                tx.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}")).map_err(sql)?;
                Err(error)
            }
        }
    }

    /// A [`StagedWrite`] whose transaction has committed: caches its document and returns what
    /// was written.
    pub fn staged_committed(&self, staged: StagedWrite) -> Written {
        self.memory_docs.put(&staged.written.block.block_id, staged.loaded);
        staged.written
    }

    /// Changes a block's description, limit, permission or pinned flag (admin). A lower limit
    /// must still hold the latest content.
    pub fn configure_block(
        &self,
        owner: &str,
        label: &str,
        author: &Author,
        configure: &Configure,
        at_ms: u64,
    ) -> Result<Block, MemoryError> {
        self.write_memory(|tx| {
            let row = find_block(tx, owner, label)?;
            let block = row.block;
            if block.kind == BlockKind::Log && matches!(author, Author::Agent(_)) {
                return Err(MemoryError::PermissionDenied(format!(
                    "block {label:?} is a rolling log: agents cannot change it"
                )));
            }
            require(tx, &block, author, Permission::Admin, "configure")?;
            if let Some(description) = &configure.description {
                check_description(description)?;
            }
            if let Some(limit) = configure.char_limit {
                check_limit(limit)?;
                if u64::from(limit) < block.chars {
                    return Err(MemoryError::LimitExceeded {
                        label: block.label.clone(),
                        limit: u64::from(limit),
                        attempted: block.chars,
                    });
                }
            }
            if let (Some(wanted), Author::Agent(_)) = (configure.permission, author)
                && wanted > block.permission
            {
                return Err(MemoryError::PermissionDenied(format!(
                    "{author} cannot raise its own permission on block {label:?} above {}",
                    block.permission.as_str()
                )));
            }
            tx.execute(
                "UPDATE memory_blocks SET description = ?2, char_limit = ?3, permission = ?4, pinned = ?5,
                     updated_at_ms = max(updated_at_ms, ?6)
                 WHERE block_id = ?1",
                params![
                    block.block_id,
                    configure.description.as_deref().unwrap_or(&block.description),
                    configure.char_limit.unwrap_or(block.char_limit),
                    configure.permission.unwrap_or(block.permission).as_str(),
                    configure.pinned.unwrap_or(block.pinned),
                    to_i64(at_ms)
                ],
            )
            .map_err(sql)?;
            // Shares never exceed the owner's permission.
            if let Some(lowered) = configure.permission {
                let order = Permission::ALL.iter().position(|p| *p == lowered).unwrap_or(0);
                let above: Vec<&str> = Permission::ALL[order + 1..].iter().map(|p| p.as_str()).collect();
                for permission in above {
                    tx.execute(
                        "UPDATE memory_shares SET permission = ?2 WHERE block_id = ?1 AND permission = ?3",
                        params![block.block_id, lowered.as_str(), permission],
                    )
                    .map_err(sql)?;
                }
            }
            let block = readable(tx, owner, label, author)?;
            Ok(block)
        })
    }

    /// Attaches a block to another agent with a permission no higher than the owner's.
    pub fn share_block(
        &self,
        owner: &str,
        label: &str,
        author: &Author,
        with_agent: &str,
        permission: Permission,
        at_ms: u64,
    ) -> Result<Block, MemoryError> {
        self.write_memory(|tx| {
            let block = find_block(tx, owner, label)?.block;
            require(tx, &block, author, Permission::Admin, "share")?;
            if with_agent == owner {
                return Err(MemoryError::Invalid(format!("block {label:?} already belongs to agent {owner}")));
            }
            if permission > block.permission {
                return Err(MemoryError::PermissionDenied(format!(
                    "block {label:?} cannot be shared with {} permission: its owner {owner} has {}",
                    permission.as_str(),
                    block.permission.as_str()
                )));
            }
            let agent_exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = ?1)", [with_agent], |r| r.get(0))
                .map_err(sql)?;
            if !agent_exists {
                return Err(StoreError::NotFoundId { what: "agent", id: with_agent.to_owned() }.into());
            }
            tx.execute(
                "INSERT INTO memory_shares (block_id, agent_id, permission, created_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (block_id, agent_id) DO UPDATE SET permission = excluded.permission",
                params![block.block_id, with_agent, permission.as_str(), to_i64(at_ms)],
            )
            .map_err(sql)?;
            Ok(block)
        })
    }

    /// The block's Loro document at its latest version (loaded from the database, or the cached
    /// copy once checked current).
    pub fn block_doc(&self, owner: &str, label: &str) -> Result<LoroDoc, MemoryError> {
        let (block_id, loaded) = self.read_memory(|tx| {
            let row = find_block(tx, owner, label)?;
            Ok((row.block.block_id.clone(), doc_at_head(&self.memory_docs, tx, &row)?))
        })?;
        let doc = loaded.doc.fork();
        self.memory_docs.put(&block_id, loaded);
        Ok(doc)
    }

    /// Loads the block's working document from the database alone, bypassing the cache: what a
    /// fresh process does before a change. It holds the latest state and the history since the
    /// last consolidation (earlier history is in the full snapshot and the version rows).
    pub fn load_block_doc(&self, owner: &str, label: &str) -> Result<LoroDoc, MemoryError> {
        self.read_memory(|tx| Ok(load_doc(tx, &find_block(tx, owner, label)?)?.doc))
    }

    /// Loads the block's document with its whole history (full snapshot and updates).
    pub fn load_block_history(&self, owner: &str, label: &str) -> Result<LoroDoc, MemoryError> {
        self.read_memory(|tx| Ok(load_history(tx, &find_block(tx, owner, label)?)?.doc))
    }

    /// The latest value of a block owned by `owner`, if it exists and has content: JSON for
    /// structured blocks, a string for text. With the version it comes from.
    pub fn block_value(&self, owner: &str, label: &str) -> Result<Option<(u64, Value)>, MemoryError> {
        self.read_memory(|tx| {
            let block = match find_block(tx, owner, label) {
                Ok(row) => row.block,
                Err(MemoryError::BlockNotFound { .. }) => return Ok(None),
                Err(other) => return Err(other),
            };
            if block.version_count == 0 {
                return Ok(None);
            }
            let content = content_at(tx, &block, block.version_count)?;
            let value = block.shape.value_of(&content).ok_or_else(|| corrupt(label, "its content does not parse"))?;
            Ok(Some((block.version_count, value)))
        })
    }
}

fn check_description(description: &str) -> Result<(), MemoryError> {
    if description.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(MemoryError::Invalid(format!("a description holds at most {DESCRIPTION_CHARS_MAX} characters")));
    }
    Ok(())
}

fn check_limit(limit: u32) -> Result<(), MemoryError> {
    if limit == 0 || limit > BLOCK_CHARS_MAX {
        return Err(MemoryError::Invalid(format!("a character limit is between 1 and {BLOCK_CHARS_MAX}")));
    }
    Ok(())
}

/// Creates the [`default_blocks`] the owner lacks.
fn ensure_default_blocks_in(
    tx: &Transaction<'_>,
    owner: &str,
    at_ms: u64,
) -> Result<Vec<(Block, Loaded)>, MemoryError> {
    let mut created = Vec::new();
    for new in default_blocks(owner) {
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM memory_blocks WHERE owner = ?1 AND label = ?2)",
                params![owner, new.label],
                |row| row.get(0),
            )
            .map_err(sql)?;
        if !exists {
            created.push(create_block(tx, new, &Author::System, at_ms)?);
        }
    }
    Ok(created)
}

fn create_block(
    tx: &Transaction<'_>,
    new: NewBlock,
    author: &Author,
    at_ms: u64,
) -> Result<(Block, Loaded), MemoryError> {
    check_label(&new.label)?;
    check_description(&new.description)?;
    let char_limit = new.char_limit.unwrap_or_else(|| new.kind.default_char_limit());
    check_limit(char_limit)?;
    let shape = match (new.kind, new.template) {
        (BlockKind::Log, None) => Shape::Log,
        (BlockKind::Log, Some(_)) => {
            return Err(MemoryError::Invalid("a rolling log takes no template: its entries are the system's".into()));
        }
        (_, Some(template)) => template.shape(),
        (_, None) => Shape::Text,
    };
    let owner_exists: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = ?1)", [&new.owner], |r| r.get(0))
        .map_err(sql)?;
    if !owner_exists {
        return Err(StoreError::NotFoundId { what: "agent", id: new.owner.clone() }.into());
    }
    let inserted = tx.execute(
        "INSERT INTO memory_blocks (block_id, owner, label, description, kind, template, shape, char_limit,
             permission, pinned, created_at_ms, updated_at_ms)
         VALUES (lower(hex(randomblob(16))), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
         ON CONFLICT (owner, label) DO NOTHING",
        params![
            new.owner,
            new.label,
            new.description,
            new.kind.as_str(),
            new.template.map(Template::as_str),
            shape.as_str(),
            char_limit,
            new.permission.as_str(),
            new.pinned,
            to_i64(at_ms)
        ],
    );
    if inserted.map_err(sql)? == 0 {
        return Err(MemoryError::LabelTaken { owner: new.owner, label: new.label });
    }
    let mut row = find_block(tx, &new.owner, &new.label)?;
    let doc = LoroDoc::new();
    doc.set_peer_id(peer_for(tx, author, false, at_ms)?).map_err(|e| MemoryError::Invalid(e.to_string()))?;
    let before = doc.oplog_vv();
    let template_name = new.template.map_or(String::new(), |t| format!(" from the {} template", t.as_str()));
    if let Some(initial) = &new.initial {
        let value = parse_value(&row.block, initial, false)?;
        doc::set(&doc, shape, &value).map_err(MemoryError::Invalid)?;
    }
    let message = format!("created{template_name}");
    doc.commit_with(loro::CommitOptions::new().commit_msg(&message).timestamp(timestamp(at_ms)));
    let content = doc::render(&doc, shape);
    check_chars(&row.block, &content)?;
    let version = record_version(
        tx,
        &mut row,
        &doc,
        &before,
        "",
        &content,
        None,
        ("create", &author.to_string(), &message, at_ms, None, None),
    )?;
    Ok((row.block, Loaded { doc, seq: version.seq, content, digest: version.content_sha256 }))
}

fn timestamp(at_ms: u64) -> i64 {
    to_i64(at_ms / 1000)
}

fn check_chars(block: &Block, content: &str) -> Result<(), MemoryError> {
    let chars = content.chars().count() as u64;
    if chars > u64::from(block.char_limit) {
        return Err(MemoryError::LimitExceeded {
            label: block.label.clone(),
            limit: u64::from(block.char_limit),
            attempted: chars,
        });
    }
    Ok(())
}

/// Applies one write to the loaded head document and records the version. Returns the document
/// to cache (only reached on success: on any error the caller drops it, so uncommitted or
/// refused operations never outlive the transaction).
fn apply_write(
    tx: &Transaction<'_>,
    row: &mut BlockRow,
    loaded: Loaded,
    write: &Write,
) -> Result<(Loaded, Written), MemoryError> {
    let block = row.block.clone();
    let Loaded { mut doc, seq: _, content: previous, digest: previous_digest } = loaded;
    if let Change::Log { key: Some(key), .. } = &write.change {
        let seen: bool = cached_row(
            tx,
            "SELECT EXISTS (SELECT 1 FROM memory_versions WHERE block_id = ?1 AND idempotency_key = ?2)",
            params![block.block_id, key],
            |r| r.get(0),
        )
        .map_err(sql)?;
        if seen {
            let content = previous.clone();
            let written =
                Written { block: block.clone(), version: None, previous, content: content.clone(), rolled_off: 0 };
            return Ok((Loaded { doc, seq: block.version_count, content, digest: previous_digest }, written));
        }
    }
    let base = match write.base {
        Some(base) if base > block.version_count || base == 0 => {
            return Err(MemoryError::VersionNotFound {
                label: block.label.clone(),
                version: base,
                latest: block.version_count,
            });
        }
        Some(base) if base < block.version_count => Some(base),
        _ => None,
    };
    if base.is_some() && doc.is_shallow() {
        // Forking at an old version needs the history before the last consolidation.
        doc = load_history(tx, row)?.doc;
    }
    let before = doc.oplog_vv();
    // The doc the change is made on: the head, or a fork at the base version.
    let (target, base_vv) = match base {
        None => (doc.clone(), before.clone()),
        Some(base) => {
            let bytes: Vec<u8> = tx
                .query_row(
                    "SELECT frontiers FROM memory_versions WHERE block_id = ?1 AND seq = ?2",
                    params![block.block_id, to_i64(base)],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            let frontiers = decode_frontiers(&block, base, &bytes)?;
            let fork = doc
                .fork_at(&frontiers)
                .map_err(|e| corrupt(&block.label, format!("cannot fork at version {base}: {e}")))?;
            let base_vv = fork.oplog_vv();
            (fork, base_vv)
        }
    };
    // An author keeps its peer id unless versions after the base already hold its operations.
    let peer = peer_for(tx, &write.author, false, write.at_ms)?;
    let reused = base.is_some() && before.get(&peer).copied().unwrap_or(0) > base_vv.get(&peer).copied().unwrap_or(0);
    let peer = if reused { peer_for(tx, &write.author, true, write.at_ms)? } else { peer };
    target.set_peer_id(peer).map_err(|e| MemoryError::Invalid(e.to_string()))?;

    let mut rolled_off = 0;
    let mut log_content: Option<String> = None;
    let mut log_splice: Option<Vec<u8>> = None;
    match &write.change {
        Change::Set(input) => {
            let value = parse_value(&block, input, false)?;
            doc::set(&target, block.shape, &value).map_err(MemoryError::Invalid)?;
        }
        Change::Append(input) => {
            let value = parse_value(&block, input, true)?;
            doc::append(&target, block.shape, &value).map_err(MemoryError::Invalid)?;
        }
        Change::Rollback(seq) => {
            let old = content_at(tx, &block, *seq)?;
            let value =
                block.shape.value_of(&old).ok_or_else(|| corrupt(&block.label, "its content does not parse"))?;
            doc::set(&target, block.shape, &value).map_err(MemoryError::Invalid)?;
        }
        Change::Log { entry, .. } => {
            if !entry.is_object() {
                return Err(MemoryError::Invalid("a log entry is a JSON object".into()));
            }
            // As the document will hold it (an integer beyond i64 becomes a double).
            let line = doc::line(&doc::stored_form(entry));
            let too_long = || MemoryError::LimitExceeded {
                label: block.label.clone(),
                limit: u64::from(block.char_limit),
                attempted: line.chars().count() as u64,
            };
            if base.is_some() {
                doc::append(&target, Shape::Log, entry).map_err(MemoryError::Invalid)?;
                rolled_off = doc::roll(&target, block.char_limit as usize)
                    .map_err(MemoryError::Invalid)?
                    .ok_or_else(too_long)?;
            } else {
                // The new rendering is the previous one without its first `k` lines, plus this
                // entry's line (a log renders one line per entry): no need to render it all again.
                let (k, kept) = doc::roll_lines(&previous, &line, block.char_limit as usize).ok_or_else(too_long)?;
                doc::append(&target, Shape::Log, entry).map_err(MemoryError::Invalid)?;
                if k > 0 {
                    target.get_list("items").delete(0, k).map_err(|e| MemoryError::Invalid(e.to_string()))?;
                }
                rolled_off = k;
                log_splice = Some(splice::keep_tail_then_insert(previous.len(), kept, line.as_bytes()));
                log_content = Some(format!("{}{line}", &previous[kept..]));
            }
        }
    }
    let message = write.message.clone().unwrap_or_else(|| match write.op {
        Some("edit") => "edited".to_owned(),
        _ => describe(&write.change),
    });
    target.commit_with(loro::CommitOptions::new().commit_msg(&message).timestamp(timestamp(write.at_ms)));
    if base.is_some() {
        let update = target
            .export(ExportMode::updates(&base_vv))
            .map_err(|e| MemoryError::Invalid(format!("cannot encode the change: {e}")))?;
        doc.import(&update).map_err(|e| corrupt(&block.label, format!("cannot merge the change: {e}")))?;
    }
    let content = match log_content {
        Some(content) => content,
        None => doc::render(&doc, block.shape),
    };
    if doc.oplog_vv() == before {
        let written =
            Written { block: block.clone(), version: None, previous: previous.clone(), content, rolled_off: 0 };
        return Ok((Loaded { doc, seq: block.version_count, content: previous, digest: previous_digest }, written));
    }
    check_chars(&block, &content)?;
    // A merge combines changes that were each valid; the result must be too.
    if let (Some(base), Some(template)) = (base, block.template) {
        let value = block.shape.value_of(&content).unwrap_or(Value::Null);
        template.validate(&value).map_err(|detail| MemoryError::TemplateInvalid {
            label: block.label.clone(),
            template: template.as_str(),
            detail: format!(
                "made on version {base} and merged with the versions since, the block would not fit: {detail}"
            ),
        })?;
    }
    if let Change::Rollback(seq) = &write.change
        && base.is_none()
        && content_at(tx, &block, *seq)? != content
    {
        return Err(corrupt(&block.label, format!("rolling back did not reproduce version {seq}")));
    }
    let op = write.op.unwrap_or(write.change.op());
    let key = match &write.change {
        Change::Log { key, .. } => key.as_deref(),
        _ => None,
    };
    let version = record_version(
        tx,
        row,
        &doc,
        &before,
        &previous,
        &content,
        log_splice,
        (op, &write.author.to_string(), &message, write.at_ms, base, key),
    )?;
    let mut block = row.block.clone();
    block.access = access(tx, &block, &write.author)?;
    let written = Written { block, version: Some(version.clone()), previous, content: content.clone(), rolled_off };
    Ok((Loaded { doc, seq: version.seq, content, digest: version.content_sha256 }, written))
}

/// Field changes between two values of a map block, or item changes of a list or log block.
fn structured_changes(before: Option<Value>, after: Option<Value>) -> Vec<FieldChange> {
    match (before.unwrap_or(Value::Null), after.unwrap_or(Value::Null)) {
        (Value::Object(old), Value::Object(new)) => {
            let mut changes = Vec::new();
            for (field, value) in &old {
                match new.get(field) {
                    None => changes.push(FieldChange::Removed { field: field.clone(), value: value.clone() }),
                    Some(after) if after != value => changes.push(FieldChange::Changed {
                        field: field.clone(),
                        before: value.clone(),
                        after: after.clone(),
                    }),
                    Some(_) => {}
                }
            }
            for (field, value) in &new {
                if !old.contains_key(field) {
                    changes.push(FieldChange::Added { field: field.clone(), value: value.clone() });
                }
            }
            changes
        }
        (Value::Array(old), Value::Array(new)) => {
            let old_keys: Vec<String> = old.iter().map(Value::to_string).collect();
            let new_keys: Vec<String> = new.iter().map(Value::to_string).collect();
            let mut changes = Vec::new();
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old_keys, &new_keys) {
                let (_, old_range, new_range) = op.as_tag_tuple();
                if matches!(op, similar::DiffOp::Equal { .. }) {
                    continue;
                }
                for index in old_range {
                    changes.push(FieldChange::Deleted { index, item: old[index].clone() });
                }
                for index in new_range {
                    changes.push(FieldChange::Inserted { index, item: new[index].clone() });
                }
            }
            changes
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
