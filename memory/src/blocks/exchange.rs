//! Export and import of a block with every version: the block's settings and, per version, the
//! Loro update, frontiers, author, message, time and the SHA-256 of its content. Import replays
//! the updates and checks each version's frontiers and content before writing anything. A block
//! the constellation lacks is created with the same id and versions; a block it has (same id)
//! gains the imported versions whose changes it lacks, merged, each keeping its author.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use loro::{Frontiers, LoroDoc};
use rusqlite::{Transaction, params};
use serde::{Deserialize, Serialize};

use super::{
    Author, Block, BlockKind, BlockRow, DESCRIPTION_CHARS_MAX, Loaded, MESSAGE_BYTES_MAX, MemoryError, Permission,
    Shape, Template, check_label, check_limit, consolidate, doc, find_block, find_block_by_id, load_history,
    record_version, sha256, sql, to_i64,
};
use crate::error::StoreError;
use crate::store::Constellation;

/// The `format` of an export file.
pub const EXPORT_FORMAT: &str = "pactum-memory-block/1";
/// The largest export file import reads.
pub const IMPORT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// At most this many versions in one export file.
const IMPORT_VERSIONS_MAX: usize = 1_000_000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    block: ExportBlock,
    versions: Vec<ExportVersion>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBlock {
    block_id: String,
    owner: String,
    label: String,
    description: String,
    kind: String,
    template: Option<String>,
    shape: String,
    char_limit: u32,
    permission: String,
    pinned: bool,
    created_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportVersion {
    seq: u64,
    op: String,
    author: String,
    message: String,
    at_ms: u64,
    base: Option<u64>,
    /// Base64 of the encoded Loro frontiers after this version.
    frontiers: String,
    /// Base64 of the Loro update this version added.
    update: String,
    content_sha256: String,
    chars: u64,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub block: Block,
    /// True when the block was new to this constellation.
    pub created: bool,
    /// Versions written.
    pub added: u64,
    /// Imported versions whose changes the block already had.
    pub skipped: u64,
}

const OPS: &[&str] = &["create", "set", "append", "edit", "rollback", "log", "import"];

impl Constellation {
    /// The block and all its versions as an export file (JSON).
    pub fn export_block(&self, owner: &str, label: &str, viewer: &Author) -> Result<Vec<u8>, MemoryError> {
        self.read_as(|tx| {
            let block = find_block(tx, owner, label)?.block;
            super::access(tx, &block, viewer)?;
            let mut statement = tx
                .prepare(
                    "SELECT seq, op, author, message, at_ms, base_seq, frontiers, update_blob, content_sha256,
                            content_chars
                     FROM memory_versions WHERE block_id = ?1 ORDER BY seq",
                )
                .map_err(sql)?;
            let versions = statement
                .query_map([&block.block_id], |row| {
                    Ok(ExportVersion {
                        seq: super::to_u64(row.get(0)?),
                        op: row.get(1)?,
                        author: row.get(2)?,
                        message: row.get(3)?,
                        at_ms: super::to_u64(row.get(4)?),
                        base: row.get::<_, Option<i64>>(5)?.map(super::to_u64),
                        frontiers: STANDARD.encode(row.get::<_, Vec<u8>>(6)?),
                        update: STANDARD.encode(row.get::<_, Vec<u8>>(7)?),
                        content_sha256: hex::encode(row.get::<_, Vec<u8>>(8)?),
                        chars: super::to_u64(row.get(9)?),
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            let file = ExportFile {
                format: EXPORT_FORMAT.to_owned(),
                block: ExportBlock {
                    block_id: block.block_id.clone(),
                    owner: block.owner.clone(),
                    label: block.label.clone(),
                    description: block.description.clone(),
                    kind: block.kind.as_str().to_owned(),
                    template: block.template.map(|t| t.as_str().to_owned()),
                    shape: block.shape.as_str().to_owned(),
                    char_limit: block.char_limit,
                    permission: block.permission.as_str().to_owned(),
                    pinned: block.pinned,
                    created_at_ms: block.created_at_ms,
                },
                versions,
            };
            let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| MemoryError::Invalid(e.to_string()))?;
            bytes.push(b'\n');
            Ok(bytes)
        })
    }

    /// Imports an export file. `owner` overrides the file's owner (the agent must exist here).
    /// Everything is checked before anything is written; the import is one transaction.
    pub fn import_block(
        &self,
        bytes: &[u8],
        owner: Option<&str>,
        label: Option<&str>,
        author: &Author,
        at_ms: u64,
    ) -> Result<ImportReport, MemoryError> {
        let mut checked = check_file(bytes)?;
        if let Some(label) = label {
            check_label(label)?;
            checked.file.block.label = label.to_owned();
        }
        let owner = owner.unwrap_or(&checked.file.block.owner).to_owned();
        if let Author::Agent(agent) = author {
            return Err(MemoryError::PermissionDenied(format!(
                "agent {agent} cannot import memory; imports are made by the partner"
            )));
        }
        let (report, loaded) = self.write_as(|tx| import(tx, checked, &owner, at_ms)).map_err(|e| match e {
            MemoryError::Store(store) => MemoryError::Store(self.with_path(store)),
            other => other,
        })?;
        self.memory_docs.put(&report.block.block_id, loaded);
        Ok(report)
    }
}

/// The first operation id both documents hold with different operations: two copies of one
/// constellation that kept writing with the same peer ids. Loro would keep one side silently.
/// (Compared op by op: the same operations may be grouped into changes differently.)
fn reused_ids(local: &LoroDoc, imported: &LoroDoc) -> Option<loro::ID> {
    let local_vv = local.oplog_vv();
    let ops = |doc: &LoroDoc, span: loro::IdSpan| -> Vec<(i32, String)> {
        doc.export_json_in_id_span(span)
            .into_iter()
            .flat_map(|change| change.ops)
            .map(|op| (op.counter, serde_json::to_string(&op).unwrap_or_default()))
            .collect()
    };
    for (peer, end) in imported.oplog_vv().iter() {
        let shared = (*end).min(local_vv.get(peer).copied().unwrap_or(0));
        if shared <= 0 {
            continue;
        }
        let span = loro::IdSpan::new(*peer, 0, shared);
        let (ours, theirs) = (ops(local, span), ops(imported, span));
        if ours != theirs {
            let counter = ours.iter().zip(&theirs).find(|(a, b)| a != b).map_or(0, |(a, _)| a.0);
            return Some(loro::ID::new(*peer, counter));
        }
    }
    None
}

impl Constellation {
    /// Checks a block's whole history: every version's update replays in order to its recorded
    /// frontiers and content (hash and size), the stored content of every version rebuilds to its
    /// hash, and the snapshots load to the latest version. Returns the number of versions.
    pub fn verify_block(&self, owner: &str, label: &str) -> Result<u64, MemoryError> {
        let bad = |detail: String| MemoryError::Corrupt { label: label.to_owned(), detail };
        let bytes = self.export_block(owner, label, &Author::Partner)?;
        let checked = check_document(&bytes, usize::MAX).map_err(|error| match error {
            MemoryError::ImportInvalid(detail) => bad(detail),
            other => other,
        })?;
        let versions = checked.file.versions.len() as u64;
        for seq in 1..=versions {
            self.block_content(owner, label, &Author::Partner, Some(seq))?;
        }
        self.load_block_history(owner, label)?;
        self.load_block_doc(owner, label)?;
        Ok(versions)
    }

    /// Every block: (owner, label), by owner then label.
    pub fn all_blocks(&self) -> Result<Vec<(String, String)>, MemoryError> {
        self.read_as(|tx| {
            let mut statement =
                tx.prepare("SELECT owner, label FROM memory_blocks ORDER BY owner, label").map_err(sql)?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        })
    }
}

struct Checked {
    file: ExportFile,
    /// The file's versions replayed: the document with the file's whole history.
    doc: LoroDoc,
    kind: BlockKind,
    shape: Shape,
    template: Option<Template>,
    permission: Permission,
    /// Per version: update bytes and the content it must render to.
    updates: Vec<Vec<u8>>,
}

fn invalid(detail: impl Into<String>) -> MemoryError {
    MemoryError::ImportInvalid(detail.into())
}

/// Parses the file and replays every version into a fresh document, checking frontiers and
/// content hashes.
fn check_file(bytes: &[u8]) -> Result<Checked, MemoryError> {
    if bytes.len() > IMPORT_BYTES_MAX {
        return Err(invalid(format!("the file has {} bytes; at most {IMPORT_BYTES_MAX} are read", bytes.len())));
    }
    check_document(bytes, IMPORT_VERSIONS_MAX)
}

/// [`check_file`] without the size limits (for checking a block's own export).
fn check_document(bytes: &[u8], versions_max: usize) -> Result<Checked, MemoryError> {
    let file: ExportFile = serde_json::from_slice(bytes).map_err(|e| invalid(format!("{e}")))?;
    if file.format != EXPORT_FORMAT {
        return Err(invalid(format!("format {:?}; this build reads {EXPORT_FORMAT:?}", file.format)));
    }
    let block = &file.block;
    let id_ok =
        block.block_id.len() == 32 && block.block_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !id_ok {
        return Err(invalid("block_id is not 32 lowercase hex digits"));
    }
    check_label(&block.label).map_err(|e| invalid(e.to_string()))?;
    check_limit(block.char_limit).map_err(|e| invalid(e.to_string()))?;
    if block.owner.is_empty() || block.owner.len() > 128 {
        return Err(invalid("owner is not an agent id"));
    }
    if block.description.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(invalid(format!("the description has more than {DESCRIPTION_CHARS_MAX} characters")));
    }
    let kind = BlockKind::parse(&block.kind).ok_or_else(|| invalid(format!("unknown kind {:?}", block.kind)))?;
    let permission = Permission::parse(&block.permission)
        .ok_or_else(|| invalid(format!("unknown permission {:?}", block.permission)))?;
    let template = match &block.template {
        None => None,
        Some(name) => Some(Template::parse(name).ok_or_else(|| invalid(format!("unknown template {name:?}")))?),
    };
    let shape = match (kind, template) {
        (BlockKind::Log, None) => Shape::Log,
        (BlockKind::Log, Some(_)) => return Err(invalid("a rolling log has no template")),
        (_, Some(template)) => template.shape(),
        (_, None) => Shape::Text,
    };
    if shape.as_str() != block.shape {
        return Err(invalid(format!("shape {:?} does not fit kind and template", block.shape)));
    }
    if file.versions.is_empty() || file.versions.len() > versions_max {
        return Err(invalid(format!("an export holds 1 to {versions_max} versions")));
    }
    let doc = LoroDoc::new();
    let mut updates = Vec::with_capacity(file.versions.len());
    let mut content = String::new();
    for (index, version) in file.versions.iter().enumerate() {
        let seq = version.seq;
        let at = |detail: String| invalid(format!("version {seq}: {detail}"));
        if seq != index as u64 + 1 {
            return Err(invalid(format!(
                "versions must be numbered 1, 2, 3...; found {seq} at position {}",
                index + 1
            )));
        }
        if !OPS.contains(&version.op.as_str()) {
            return Err(at(format!("unknown op {:?}", version.op)));
        }
        if Author::parse(&version.author).is_none() || version.author.len() > 200 {
            return Err(at(format!("author {:?} is not agent:<id>, partner or system", version.author)));
        }
        if version.message.len() > MESSAGE_BYTES_MAX {
            return Err(at(format!("the message has more than {MESSAGE_BYTES_MAX} bytes")));
        }
        if version.base.is_some_and(|base| base == 0 || base >= seq) {
            return Err(at("base is not an earlier version".into()));
        }
        let update = STANDARD.decode(&version.update).map_err(|e| at(format!("update is not base64: {e}")))?;
        let frontiers =
            STANDARD.decode(&version.frontiers).map_err(|e| at(format!("frontiers are not base64: {e}")))?;
        let frontiers = Frontiers::decode(&frontiers).map_err(|e| at(format!("frontiers do not decode: {e}")))?;
        match doc.import(&update) {
            Ok(status) if status.pending.is_none() => {}
            Ok(_) => return Err(at("its update depends on changes no earlier version has".into())),
            Err(error) => return Err(at(format!("its update does not load: {error}"))),
        }
        if doc.oplog_frontiers() != frontiers {
            return Err(at("the frontiers after its update are not the recorded ones".into()));
        }
        content = doc::render(&doc, shape);
        if hex::encode(sha256(content.as_bytes())) != version.content_sha256 {
            return Err(at("its content does not match its SHA-256".into()));
        }
        if content.chars().count() as u64 != version.chars {
            return Err(at("its character count is wrong".into()));
        }
        if let (Some(template), Some(value)) = (template, shape.value_of(&content))
            && !(seq == 1 && content == doc::render(&LoroDoc::new(), shape))
        {
            template
                .validate(&value)
                .map_err(|detail| at(format!("it does not fit the {} template: {detail}", template.as_str())))?;
        }
        updates.push(update);
    }
    if content.chars().count() as u64 > u64::from(block.char_limit) {
        return Err(invalid(format!("the latest content is longer than the block's limit of {}", block.char_limit)));
    }
    Ok(Checked { file, doc, kind, shape, template, permission, updates })
}

fn import(
    tx: &Transaction<'_>,
    checked: Checked,
    owner: &str,
    at_ms: u64,
) -> Result<(ImportReport, Loaded), MemoryError> {
    let owner_exists: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = ?1)", [owner], |r| r.get(0)).map_err(sql)?;
    if !owner_exists {
        return Err(StoreError::NotFoundId { what: "agent", id: owner.to_owned() }.into());
    }
    let file = &checked.file;
    let existing = find_block_by_id(tx, &file.block.block_id)?;
    // The same block under its own owner and label merges; asked for another owner or label, the
    // import is a copy: a new block (a new id) with the same versions.
    let copy = existing.as_ref().is_some_and(|row| row.block.owner != owner || row.block.label != file.block.label);
    let (mut row, created) = match existing.filter(|_| !copy) {
        Some(row) => {
            if row.block.shape != checked.shape {
                return Err(invalid("the block here has another shape; it cannot merge"));
            }
            (row, false)
        }
        None => {
            let block = &file.block;
            let inserted = tx
                .execute(
                    "INSERT INTO memory_blocks (block_id, owner, label, description, kind, template, shape, char_limit,
                         permission, pinned, created_at_ms, updated_at_ms)
                     VALUES (coalesce(?1, lower(hex(randomblob(16)))), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                     ON CONFLICT (owner, label) DO NOTHING",
                    params![
                        (!copy).then_some(&block.block_id),
                        owner,
                        block.label,
                        block.description,
                        checked.kind.as_str(),
                        checked.template.map(Template::as_str),
                        checked.shape.as_str(),
                        block.char_limit,
                        checked.permission.as_str(),
                        block.pinned,
                        to_i64(block.created_at_ms)
                    ],
                )
                .map_err(sql)?;
            if inserted == 0 {
                return Err(MemoryError::LabelTaken { owner: owner.to_owned(), label: block.label.clone() });
            }
            (find_block(tx, owner, &block.label)?, true)
        }
    };
    let loaded = if created {
        Loaded::new(LoroDoc::new(), 0, String::new())
    } else {
        // A merge compares operation ids with the whole history, so it needs all of it.
        let loaded = load_history(tx, &row)?;
        if let Some(id) = reused_ids(&loaded.doc, &checked.doc) {
            return Err(invalid(format!(
                "its changes reuse operation ids this block already holds with other content (peer {}, counter {}): it comes from a copy of this constellation changed separately; import it under another label (--label) to keep it as a separate block",
                id.peer, id.counter
            )));
        }
        loaded
    };
    let Loaded { doc, mut content, .. } = loaded;
    let (mut added, mut skipped) = (0, 0);
    for (version, update) in file.versions.iter().zip(&checked.updates) {
        let before = doc.oplog_vv();
        doc.import(update).map_err(|e| invalid(format!("version {}: {e}", version.seq)))?;
        if !created && doc.oplog_vv() == before {
            skipped += 1;
            continue;
        }
        let next = doc::render(&doc, row.block.shape);
        // A new block keeps its history as it was; a merge records what arrived as imported.
        let (op, base) = if created { (version.op.as_str(), version.base) } else { ("import", None) };
        record_version(
            tx,
            &mut row,
            &doc,
            &before,
            &content,
            &next,
            None,
            (op, &version.author, &version.message, version.at_ms, base, None),
        )?;
        content = next;
        added += 1;
    }
    if u64::from(row.block.char_limit) < content.chars().count() as u64 {
        return Err(MemoryError::LimitExceeded {
            label: row.block.label.clone(),
            limit: u64::from(row.block.char_limit),
            attempted: content.chars().count() as u64,
        });
    }
    if added > 0 && row.snapshot_seq < row.block.version_count {
        consolidate(tx, &mut row, &doc, !doc.is_shallow(), at_ms)?;
        tx.execute(
            "UPDATE memory_blocks SET snapshot_seq = ?2, pending_bytes = ?3, history_pending_bytes = ?4 WHERE block_id = ?1",
            params![row.block.block_id, to_i64(row.snapshot_seq), to_i64(row.pending_bytes), to_i64(row.history_pending_bytes)],
        )
        .map_err(sql)?;
    }
    let BlockRow { block, .. } = row;
    let loaded = Loaded::new(doc, block.version_count, content);
    Ok((ImportReport { block, created, added, skipped }, loaded))
}
