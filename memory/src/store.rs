//! Opening a constellation file: identification, pragmas, migrations, info and backup.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::StoreError;
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// How long a writer waits for another process's write transaction before giving up. Pactum's
/// transactions are short (one negotiation step); a wait this long means something is stuck.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// `sqlite3_backup_step` page count meaning "all remaining pages".
const BACKUP_ALL_PAGES: i32 = -1;
/// Prepared statements kept per connection. A negotiation alone runs more distinct statements
/// than rusqlite's default of 16 (events, checkpoints, owners, the ledger, memory, constraints);
/// past the capacity every statement is parsed and planned again on each use.
const STATEMENT_CACHE_CAPACITY: usize = 128;
/// WAL pages (64 MiB) after which a commit checkpoints the WAL itself, so that the WAL can start
/// over from its beginning. The background [`Checkpointer`] copies the WAL into the file as it
/// grows, but the WAL restarts only after a checkpoint that nothing was appended during, which
/// under a steady stream of writes only this in-line one achieves: it copies what the
/// background one has not yet and syncs both files while the writer waits (about 5–20 ms on a
/// virtual disk). A larger WAL makes that pause rarer (once per ~600 negotiations rather than
/// ~150 with 16 MiB); the WAL file stays at this size on disk once it has grown to it.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// Page cache per connection, in KiB (negative: SQLite's unit for a size in KiB). SQLite's
/// default size, on purpose: every commit scans the cache's hash table for pages past the end
/// of the file, so a larger cache (16 MiB was tried) makes each commit slower while the hot
/// pages (a stream's head, the ledger accounts) fit in this one.
const CACHE_SIZE_KIB_NEGATIVE: i64 = -2_000;

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
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    pub durability: Durability,
    /// Create the file (and its directory) if it does not exist; otherwise a missing file is
    /// [`StoreError::NotFound`]. Commands that only read pass `false`.
    pub create: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { durability: Durability::default(), create: true }
    }
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
    /// Copies the write-ahead log into the file in the background (writable files only).
    checkpointer: Option<Checkpointer>,
    /// Loaded Loro documents of memory blocks, each checked against the database before use.
    pub(crate) memory_docs: crate::blocks::DocCache,
    /// Write transactions that reached their commit through this handle (committed or stopped).
    writes_attempted: AtomicU64,
    /// Fault injection: the write (counted as `writes_attempted`, from 1) from which every
    /// write is stopped before it commits; 0 for never (the default).
    stop_at_write: AtomicU64,
}

/// How often the background checkpointer copies the write-ahead log into the file.
const CHECKPOINT_INTERVAL_MS: u64 = 50;

/// Copies the write-ahead log back into the file from its own connection and thread, with
/// `PRAGMA wal_checkpoint(PASSIVE)`, which never blocks writers. Without it, the commit that
/// crosses SQLite's auto-checkpoint threshold copies megabytes while every other thread of the
/// process waits for the connection: the worst latencies of concurrent negotiations.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = match Connection::open_with_flags(path, flags) {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(path = %path.display(), "no background checkpoints: {error}");
                return None;
            }
        };
        let _ = connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pactum-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                loop {
                    let stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let (stopped, _) = wake
                        .wait_timeout_while(stopped, Duration::from_millis(CHECKPOINT_INTERVAL_MS), |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!("background checkpoint: {error}");
                    }
                }
            })
            .ok()?;
        Some(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
/// [`Connection::query_row`] through the connection's statement cache (rusqlite's own parses
/// the statement on every call).
pub(crate) fn cached_row<T, P, F>(connection: &Connection, sql: &str, params: P, row: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    connection.prepare_cached(sql)?.query_row(params, row)
}

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

/// Reads (application_id, user_version) in one statement, so both come from one snapshot.
/// (Two separate pragma reads can straddle another process's commit and return a pair that never
/// existed, such as a version without an application id.)
fn read_identity(connection: &Connection) -> Result<(u32, u32), rusqlite::Error> {
    connection.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
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

/// Pause between attempts to switch a new file to WAL while another process holds its lock.
const WAL_SWITCH_RETRY_MS: u64 = 10;

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn wal_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", path.display()))
}

/// Decides about an existing SQLite file whose header carries no identification, without
/// modifying it. It is opened read-only: `immutable` (no locks, no recovery) when there is no
/// write-ahead log, plainly when there is one so that its content counts (a read-only connection
/// never checkpoints or deletes the log). A file with tables and no Pactum application id is
/// another application's database and is refused. One without tables is an empty database or a
/// constellation whose creation was interrupted, and is initialised by the normal open.
fn probe_blank_database(path: &Path) -> Result<(), StoreError> {
    let wal_has_content = fs::metadata(wal_path(path)).is_ok_and(|m| m.len() > 0);
    if !wal_has_content {
        // Immutable reads take no locks, so they can see another process's checkpoint half
        // written: a "foreign" verdict is confirmed below through a locking read-only open.
        let uri = format!("file:{}?immutable=1", percent_encode_path(path));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let immutable = Connection::open_with_flags(&uri, flags).map_err(|e| StoreError::sqlite(path, e))?;
        if probe_identity(path, &immutable).is_ok() {
            return Ok(());
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let locking = Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
    locking.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(|e| StoreError::sqlite(path, e))?;
    // A read-only connection cannot roll back a hot journal or checkpoint a log: if the file
    // needs that, it errors, and the file is refused untouched.
    probe_identity(path, &locking).map_err(|error| match error {
        StoreError::Sqlite { .. } | StoreError::Busy { .. } | StoreError::Io { .. } => {
            StoreError::NotConstellation { path: path.to_owned(), application_id: 0 }
        }
        other => other,
    })
}

/// Reads identification through `connection`: Ok for a Pactum constellation or a database with
/// no tables; refused otherwise.
fn probe_identity(path: &Path, connection: &Connection) -> Result<(), StoreError> {
    let sql = |e| StoreError::sqlite(path, e);
    let (application_id, user_version) = read_identity(connection).map_err(sql)?;
    if application_id != 0 || user_version != 0 {
        return check_identity(path, application_id, user_version);
    }
    let tables: i64 = connection.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql)?;
    if tables > 0 {
        return Err(StoreError::NotConstellation { path: path.to_owned(), application_id });
    }
    Ok(())
}

/// A path as the path part of an SQLite `file:` URI: everything but unreserved bytes and `/`
/// percent-encoded.
fn percent_encode_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut encoded = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl Constellation {
    /// Opens the constellation at `path`, creating it (and its directory) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let existing = match fs::metadata(path) {
            Ok(metadata) if !metadata.is_file() => {
                // A directory, FIFO or device: refused before anything reads it (a FIFO would block).
                return Err(StoreError::io(path, "is not a regular file", std::io::Error::other("expected a file")));
            }
            // An empty main file whose content is all in a write-ahead log is not empty.
            Ok(metadata) if metadata.len() == 0 && fs::metadata(wal_path(path)).is_ok_and(|m| m.len() > 0) => {
                Some(HeaderFields { user_version: 0, application_id: 0 })
            }
            Ok(_) => read_header(path)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !options.create {
                    return Err(StoreError::NotFound { path: path.to_owned() });
                }
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|source| StoreError::io(parent, "cannot create directory", source))?;
                }
                None
            }
            Err(error) => return Err(StoreError::io(path, "cannot access", error)),
        };
        match &existing {
            // Identification in the header decides without SQLite touching the file.
            Some(header) if header.application_id != 0 || header.user_version != 0 => {
                check_identity(path, header.application_id, header.user_version)?;
            }
            // A blank header: an empty SQLite file, a Pactum constellation whose creation was
            // interrupted or is still only in another process's WAL, or another application's
            // database (most leave both fields 0). Look without writing before deciding.
            Some(_) => probe_blank_database(path)?,
            None => {}
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if existing.is_none() {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let connection = Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(|e| StoreError::sqlite(path, e))?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        // The query planner stability guarantee: a statement's plan never depends on the values
        // bound to it. Without it SQLite marks some statements (one comparing a column no index
        // serves with a parameter, say) as needing a new plan once their parameters change, and
        // the statement cache clears the parameters after each use: every reuse of such a
        // statement parsed and planned it again. Pactum's schema uses no statistics tables
        // and no LIKE against a parameter, the two things the values would otherwise inform.
        connection
            .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| StoreError::sqlite(path, e))?;
        let read_only = connection.is_readonly(rusqlite::MAIN_DB).map_err(|e| StoreError::sqlite(path, e))?;
        let mut store = Self {
            path: path.to_owned(),
            durability: options.durability,
            connection: Mutex::new(connection),
            checkpointer: None,
            memory_docs: Default::default(),
            writes_attempted: AtomicU64::new(0),
            stop_at_write: AtomicU64::new(0),
        };
        if read_only {
            // A write-protected file (an evidence copy, say) can be read but not migrated.
            store.check_read_only()?;
        } else {
            store.configure_and_migrate()?;
            store.checkpointer = Checkpointer::start(path);
        }
        tracing::debug!(path = %path.display(), durability = ?options.durability, read_only, "constellation opened");
        Ok(store)
    }

    fn check_read_only(&self) -> Result<(), StoreError> {
        let connection = self.lock();
        let sql = |e| StoreError::sqlite(&self.path, e);
        let (application_id, user_version) = read_identity(&connection).map_err(sql)?;
        check_identity(&self.path, application_id, user_version)?;
        if user_version < SCHEMA_VERSION {
            return Err(StoreError::io(
                &self.path,
                "is write-protected and needs a schema upgrade",
                std::io::Error::other(format!("schema {user_version}, this build writes {SCHEMA_VERSION}")),
            ));
        }
        Ok(())
    }

    /// Switches to WAL, waiting while another process holds the lock the switch needs (several
    /// processes opening a new constellation at once).
    fn enable_wal(&self, connection: &Connection) -> Result<(), StoreError> {
        let sql = |e| StoreError::sqlite(&self.path, e);
        let mode: String = connection.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(sql)?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(BUSY_TIMEOUT_MS);
        loop {
            match connection.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(mode) => {
                    return Err(StoreError::Corrupt { detail: format!("cannot enable WAL (journal_mode is {mode})") });
                }
                Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(WAL_SWITCH_RETRY_MS));
                }
                Err(error) => return Err(sql(error)),
            }
        }
    }

    fn configure_and_migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let path = &self.path;
        let sql = |e| StoreError::sqlite(path, e);
        // The header may lag behind the WAL; the pragmas are authoritative. A blank pair is
        // decided inside the write transaction below (initialise if there are no tables).
        let (application_id, user_version) = read_identity(&connection).map_err(sql)?;
        if application_id != 0 || user_version != 0 {
            check_identity(path, application_id, user_version)?;
        } else {
            // Claim a blank file before anything else. In rollback-journal mode (a new file) this
            // writes the application id straight into the main file's header, so from now on any
            // other process identifies the file from its header alone, even while this one is
            // still migrating in its write-ahead log.
            let claim = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            let claimed: u32 = claim.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
            if claimed == 0 {
                let tables: i64 =
                    claim.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql)?;
                if tables > 0 {
                    return Err(StoreError::NotConstellation { path: path.clone(), application_id: 0 });
                }
                claim.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
            }
            claim.commit().map_err(sql)?;
        }
        self.enable_wal(&connection)?;
        connection.pragma_update(None, "synchronous", self.durability.pragma_value()).map_err(sql)?;
        connection.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(sql)?;
        connection.pragma_update(None, "cache_size", CACHE_SIZE_KIB_NEGATIVE).map_err(sql)?;
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
        self.write_as(work)
    }

    /// [`Self::write`] for work whose errors are not the store's own (memory blocks).
    pub(crate) fn write_as<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.path, e))?;
        let value = work(&transaction)?;
        self.before_commit()?;
        transaction.commit().map_err(|e| StoreError::sqlite(&self.path, e))?;
        Ok(value)
    }

    /// Fault injection for simulations and crash tests: from the `nth` write transaction from
    /// now on (1 is the next one), every write through this handle is rolled back instead of
    /// committed and fails with [`StoreError::Stopped`]. Write transactions are atomic, so this
    /// is exactly a process that died between two commits: the writes before the `nth` are
    /// durable and nothing after them ever happens. The program never calls it; `0` turns it
    /// off. Reads are unaffected.
    pub fn stop_before_write(&self, nth: u64) {
        let at = if nth == 0 { 0 } else { self.writes_attempted.load(Ordering::SeqCst).saturating_add(nth) };
        self.stop_at_write.store(at, Ordering::SeqCst);
    }

    /// How many write transactions reached their commit through this handle (the ones
    /// [`Constellation::stop_before_write`] stopped included).
    pub fn writes_attempted(&self) -> u64 {
        self.writes_attempted.load(Ordering::SeqCst)
    }

    /// Counts a write about to commit; refuses it once a stop injected by
    /// [`Constellation::stop_before_write`] is reached. Called with the connection locked, so
    /// writes are counted in the order they commit.
    pub(crate) fn before_commit(&self) -> Result<(), StoreError> {
        let write = self.writes_attempted.fetch_add(1, Ordering::SeqCst) + 1;
        let stop_at = self.stop_at_write.load(Ordering::SeqCst);
        if stop_at != 0 && write >= stop_at {
            tracing::debug!(write, "write stopped before its commit (injected)");
            return Err(StoreError::Stopped { write });
        }
        Ok(())
    }

    /// [`Self::read`] for work whose errors are not the store's own.
    pub(crate) fn read_as<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| StoreError::sqlite(&self.path, e))?;
        let value = work(&transaction)?;
        transaction.finish().map_err(|e| StoreError::sqlite(&self.path, e))?;
        Ok(value)
    }

    /// Runs `work` inside one read transaction (a consistent snapshot).
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read_as(work)
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
                agents: count("agents")?,
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
            // All pages in one step: one read snapshot, which in WAL mode does not block writers.
            // (Small steps restart whenever another connection commits and may never finish.)
            loop {
                match backup.step(BACKUP_ALL_PAGES).map_err(sql)? {
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
    pub agents: u64,
}

/// A finished backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
}
