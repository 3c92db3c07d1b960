//! Opening a constellation file: identification, pragmas, migrations, info and backup.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::StoreError;
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// How long a writer waits for another process's write transaction before giving up. Pactum's
/// transactions are short (one negotiation step); a wait this long means something is stuck.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Pages copied per step of an online backup; small steps let other writers interleave.
const BACKUP_STEP_PAGES: i32 = 1024;

/// What survives a commit (SQLite `synchronous` under WAL).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a committed transaction survives the process being killed at any
    /// point; a power loss or kernel crash may lose the last transactions committed before it
    /// (never corrupting the file). The default.
    #[default]
    Process,
    /// `synchronous=FULL`: every commit is fsynced before it returns, so it also survives a
    /// power loss. Several times slower per transaction.
    PowerLoss,
}

impl Durability {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::PowerLoss => "FULL",
        }
    }

    /// Parses `process` or `power-loss` (for `PACTUM_DURABILITY`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "process" => Some(Self::Process),
            "power-loss" => Some(Self::PowerLoss),
            _ => None,
        }
    }
}

/// Options for [`Constellation::open_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    pub durability: Durability,
}

/// One constellation: all durable state of a group of agents, in one SQLite file.
///
/// A process holds one connection per file behind a mutex: it is the file's only writer in this
/// process. Other processes may open the same file; SQLite's locks serialise their write
/// transactions (each begins `IMMEDIATE`, waiting up to [`BUSY_TIMEOUT_MS`]).
#[derive(Debug)]
pub struct Constellation {
    path: PathBuf,
    durability: Durability,
    connection: Mutex<Connection>,
}

/// The 100-byte SQLite header fields Pactum identifies a file by.
struct HeaderFields {
    user_version: u32,
    application_id: u32,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Reads the identification fields straight from the file header, so that a file which is not a
/// Pactum constellation is refused before SQLite touches it (no `-wal`/`-shm` files, no writes).
/// Returns `None` for an empty file.
fn read_header(path: &Path) -> Result<Option<HeaderFields>, StoreError> {
    let mut file = fs::File::open(path).map_err(|source| StoreError::io(path, "cannot open", source))?;
    let mut header = [0_u8; 100];
    let mut filled = 0;
    while filled < header.len() {
        let read = file.read(&mut header[filled..]).map_err(|source| StoreError::io(path, "cannot read", source))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    if filled == 0 {
        return Ok(None);
    }
    if filled < header.len() || &header[..16] != SQLITE_MAGIC {
        return Err(StoreError::NotSqlite { path: path.to_owned() });
    }
    let field = |offset: usize| {
        u32::from_be_bytes([header[offset], header[offset + 1], header[offset + 2], header[offset + 3]])
    };
    Ok(Some(HeaderFields { user_version: field(60), application_id: field(68) }))
}

fn check_identity(path: &Path, application_id: u32, user_version: u32) -> Result<(), StoreError> {
    if application_id != APPLICATION_ID {
        return Err(StoreError::NotConstellation { path: path.to_owned(), application_id });
    }
    if user_version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found: user_version, supported: SCHEMA_VERSION });
    }
    Ok(())
}

impl Constellation {
    /// Opens the constellation at `path`, creating it (and its directory) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let existing = match fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(StoreError::io(path, "is a directory", std::io::Error::other("expected a file")));
            }
            Ok(_) => read_header(path)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|source| StoreError::io(parent, "cannot create directory", source))?;
                }
                None
            }
            Err(error) => return Err(StoreError::io(path, "cannot access", error)),
        };
        // The header is decisive only when it carries identification. A freshly created
        // constellation still open elsewhere has its application id and version in the WAL, not
        // yet in the main file, so a blank header defers to the pragmas read after opening.
        if let Some(header) = existing.as_ref().filter(|h| h.application_id != 0 || h.user_version != 0) {
            check_identity(path, header.application_id, header.user_version)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(|e| StoreError::sqlite(path, e))?;
        let store = Self { path: path.to_owned(), durability: options.durability, connection: Mutex::new(connection) };
        store.configure_and_migrate(existing.is_some())?;
        tracing::debug!(path = %path.display(), durability = ?options.durability, "constellation opened");
        Ok(store)
    }

    fn configure_and_migrate(&self, existed: bool) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let path = &self.path;
        let sql = |e| StoreError::sqlite(path, e);
        if existed {
            // The header may lag behind the WAL; the pragmas are authoritative.
            let application_id: u32 =
                connection.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
            let user_version: u32 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
            check_identity(path, application_id, user_version)?;
        }
        let mode: String = connection.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sql)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Corrupt { detail: format!("cannot enable WAL (journal_mode is {mode})") });
            }
        }
        connection.pragma_update(None, "synchronous", self.durability.pragma_value()).map_err(sql)?;
        connection.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;

        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        // Another process may have migrated between our check and the lock: read again.
        let current: u32 = transaction.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        let application_id: u32 = transaction.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
        if current == 0 && application_id == 0 {
            let tables: i64 =
                transaction.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql)?;
            if tables > 0 {
                return Err(StoreError::NotConstellation { path: path.clone(), application_id });
            }
            transaction.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
        } else {
            check_identity(path, application_id, current)?;
        }
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            let version = index as u32 + 1;
            if version > current {
                tracing::info!(version, "applying constellation schema migration");
                transaction.execute_batch(migration).map_err(sql)?;
            }
        }
        if current < SCHEMA_VERSION {
            transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
        }
        transaction.commit().map_err(sql)?;
        Ok(())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite transactions roll back when dropped during a panic, so the connection behind a
        // poisoned lock holds no half-applied write.
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Runs `work` inside one `IMMEDIATE` write transaction; commits if it returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.path, e))?;
        let value = work(&transaction)?;
        transaction.commit().map_err(|e| StoreError::sqlite(&self.path, e))?;
        Ok(value)
    }

    /// Runs `work` inside one read transaction (a consistent snapshot).
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| StoreError::sqlite(&self.path, e))?;
        let value = work(&transaction)?;
        transaction.finish().map_err(|e| StoreError::sqlite(&self.path, e))?;
        Ok(value)
    }

    /// Path, schema version, sizes and counts.
    pub fn info(&self) -> Result<Info, StoreError> {
        let wal_path = PathBuf::from(format!("{}-wal", self.path.display()));
        let file_bytes = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let wal_bytes = fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
        let path = self.path.clone();
        self.read(|tx| {
            let sql = |e| StoreError::sqlite(&path, e);
            let pragma_u64 = |name: &str| -> Result<u64, StoreError> {
                tx.pragma_query_value(None, name, |r| r.get::<_, i64>(0)).map(|v| v as u64).map_err(sql)
            };
            let count = |table: &str| -> Result<u64, StoreError> {
                tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
                    .map(|v| v as u64)
                    .map_err(sql)
            };
            let meta = |key: &str| -> Result<String, StoreError> {
                tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).map_err(sql)
            };
            Ok(Info {
                path: path.clone(),
                schema_version: pragma_u64("user_version")? as u32,
                constellation_id: meta("constellation_id")?,
                created_at_ms: meta("created_at_ms")?.parse().unwrap_or(0),
                durability: self.durability,
                page_size: pragma_u64("page_size")?,
                page_count: pragma_u64("page_count")?,
                freelist_pages: pragma_u64("freelist_count")?,
                file_bytes,
                wal_bytes,
                streams: count("transcript_streams")?,
                events: count("transcript_events")?,
                checkpoints: count("transcript_checkpoints")?,
                signing_keys: count("signing_keys")?,
            })
        })
    }

    /// Copies the constellation to `destination` with SQLite's online backup API, while other
    /// connections may keep writing. Refuses to overwrite an existing file; the copy is written
    /// under a temporary name, checked, then renamed into place, so `destination` never holds a
    /// partial backup.
    pub fn backup(&self, destination: impl AsRef<Path>) -> Result<BackupReport, StoreError> {
        let destination = destination.as_ref();
        if destination.exists() {
            return Err(StoreError::DestinationExists { path: destination.to_owned() });
        }
        let parent = destination.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(StoreError::io(
                parent,
                "backup directory does not exist",
                std::io::Error::other("not a directory"),
            ));
        }
        let file_name = destination.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let partial = parent.join(format!(".{file_name}.partial-{}", std::process::id()));
        if let Err(error) = self.backup_to(&partial) {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
        // Only now does the destination name appear, complete.
        if let Err(source) = fs::hard_link(&partial, destination) {
            let _ = fs::remove_file(&partial);
            return Err(if destination.exists() {
                StoreError::DestinationExists { path: destination.to_owned() }
            } else {
                StoreError::io(destination, "cannot create backup file", source)
            });
        }
        let _ = fs::remove_file(&partial);
        let bytes = fs::metadata(destination).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport { path: destination.to_owned(), bytes })
    }

    fn backup_to(&self, partial: &Path) -> Result<(), StoreError> {
        let sql = |e| StoreError::sqlite(partial, e);
        {
            let source = self.lock();
            let mut target = Connection::open(partial).map_err(sql)?;
            let backup = rusqlite::backup::Backup::new(&source, &mut target).map_err(sql)?;
            loop {
                match backup.step(BACKUP_STEP_PAGES).map_err(sql)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => continue,
                    rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                        return Err(StoreError::Busy { path: self.path.clone() });
                    }
                    _ => return Err(StoreError::Busy { path: self.path.clone() }),
                }
            }
        }
        // The copy must itself be a sound constellation before it gets its real name.
        let copy = Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql)?;
        let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sql)?;
        if check != "ok" {
            return Err(StoreError::Corrupt { detail: format!("backup copy fails quick_check: {check}") });
        }
        copy.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").map_err(sql)?;
        drop(copy);
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{suffix}", partial.display()));
        }
        Ok(())
    }
}

/// What `pactum constellation info` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub path: PathBuf,
    pub schema_version: u32,
    pub constellation_id: String,
    pub created_at_ms: u64,
    pub durability: Durability,
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_pages: u64,
    pub file_bytes: u64,
    pub wal_bytes: u64,
    pub streams: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub signing_keys: u64,
}

/// A finished backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
}
