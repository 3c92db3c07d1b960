//! The constellation schema and its migrations. `PRAGMA user_version` holds the number of
//! migrations applied; `PRAGMA application_id` marks the file as Pactum's.

/// "PCT1" in ASCII: identifies a Pactum constellation file (SQLite header offset 68).
pub const APPLICATION_ID: u32 = 0x5043_5431;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`. Never edit a
/// migration that has shipped; append a new one.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6];

/// The schema version this build writes and the newest it can open.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const MIGRATION_1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES
    ('constellation_id', lower(hex(randomblob(16)))),
    ('created_at_ms', CAST(CAST(unixepoch('subsec') * 1000 AS INTEGER) AS TEXT));

-- One row per transcript stream; head_* mirror the last event and are updated in the same
-- transaction as every append, so they anchor verification (a deleted tail is detected).
CREATE TABLE transcript_streams (
    stream_id     TEXT PRIMARY KEY,
    origin        TEXT NOT NULL CHECK (origin IN ('local', 'imported')),
    genesis       BLOB NOT NULL CHECK (length(genesis) = 32),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    event_count   INTEGER NOT NULL DEFAULT 0 CHECK (event_count >= 0),
    head_hash     BLOB CHECK (head_hash IS NULL OR length(head_hash) = 32),
    head_at_ms    INTEGER
) STRICT;

CREATE TABLE transcript_events (
    stream_id TEXT NOT NULL REFERENCES transcript_streams (stream_id),
    seq       INTEGER NOT NULL CHECK (seq >= 0),
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    at_ms     INTEGER NOT NULL CHECK (at_ms >= 0),
    prev      BLOB NOT NULL CHECK (length(prev) = 32),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    signer    TEXT,
    sig       BLOB CHECK (sig IS NULL OR length(sig) = 64),
    PRIMARY KEY (stream_id, seq)
) STRICT, WITHOUT ROWID;

-- History is append-only: no statement may change or remove an event.
CREATE TRIGGER transcript_events_no_update BEFORE UPDATE ON transcript_events
BEGIN SELECT RAISE(ABORT, 'transcript events are append-only'); END;
CREATE TRIGGER transcript_events_no_delete BEFORE DELETE ON transcript_events
BEGIN SELECT RAISE(ABORT, 'transcript events are append-only'); END;

CREATE TABLE transcript_checkpoints (
    checkpoint_id INTEGER PRIMARY KEY,
    stream_id     TEXT NOT NULL REFERENCES transcript_streams (stream_id),
    seq           INTEGER NOT NULL CHECK (seq >= 0),
    event_hash    BLOB NOT NULL CHECK (length(event_hash) = 32),
    state_hash    BLOB NOT NULL CHECK (length(state_hash) = 32),
    state         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    FOREIGN KEY (stream_id, seq) REFERENCES transcript_events (stream_id, seq)
) STRICT;
CREATE INDEX transcript_checkpoints_by_stream ON transcript_checkpoints (stream_id, checkpoint_id);
CREATE TRIGGER transcript_checkpoints_no_update BEFORE UPDATE ON transcript_checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END;

-- Public keys that came with an imported transcript. They verify that transcript only: a file's
-- claims about its own signers never become trust for the rest of the constellation.
CREATE TABLE stream_keys (
    stream_id  TEXT NOT NULL REFERENCES transcript_streams (stream_id),
    key_id     TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    PRIMARY KEY (stream_id, key_id)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER stream_keys_no_update BEFORE UPDATE ON stream_keys
BEGIN SELECT RAISE(ABORT, 'stream keys are immutable'); END;
CREATE TRIGGER stream_keys_no_delete BEFORE DELETE ON stream_keys
BEGIN SELECT RAISE(ABORT, 'stream keys are immutable'); END;

-- The constellation's own public keys: signatures in its local transcripts are verified
-- against them. A key id, once bound, keeps its key: re-binding would silently change what old
-- signatures prove.
CREATE TABLE signing_keys (
    key_id        TEXT PRIMARY KEY,
    public_key    BLOB NOT NULL CHECK (length(public_key) = 32),
    origin        TEXT NOT NULL CHECK (origin IN ('local', 'imported')),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE TRIGGER signing_keys_no_update BEFORE UPDATE OF key_id, public_key ON signing_keys
BEGIN SELECT RAISE(ABORT, 'a key id keeps its public key'); END;
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN SELECT RAISE(ABORT, 'signing keys are kept for verification'); END;
"#;

/// Agents and their identities. The secret key stays in the constellation file; nothing reads it
/// back except to sign (see `memory::agents`).
const MIGRATION_2: &str = r#"
CREATE TABLE agents (
    agent_id      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('buyer', 'provider')),
    key_id        TEXT NOT NULL REFERENCES signing_keys (key_id),
    secret_key    BLOB NOT NULL CHECK (length(secret_key) = 32),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE TRIGGER agents_no_delete BEFORE DELETE ON agents
BEGIN SELECT RAISE(ABORT, 'agents are kept: transcripts refer to them'); END;
"#;

/// The ledger: double-entry accounts and transfers. Every transfer moves an amount from one
/// account to another in one transaction, so the balances of each currency always sum to zero
/// (the external account, where funding comes from, goes negative by what it has put in).
const MIGRATION_3: &str = r#"
CREATE TABLE ledger_accounts (
    account_id    TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('wallet', 'provider', 'escrow', 'external')),
    currency      TEXT NOT NULL CHECK (length(currency) = 3),
    balance_minor INTEGER NOT NULL DEFAULT 0 CHECK (kind = 'external' OR balance_minor >= 0),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN SELECT RAISE(ABORT, 'ledger accounts are kept'); END;

CREATE TABLE ledger_transfers (
    transfer_id     INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    from_account    TEXT NOT NULL REFERENCES ledger_accounts (account_id),
    to_account      TEXT NOT NULL REFERENCES ledger_accounts (account_id),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    memo            TEXT NOT NULL,
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),
    CHECK (from_account <> to_account)
) STRICT;
CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger transfers are append-only'); END;
CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger transfers are append-only'); END;
"#;

/// Which process drives each negotiation session. A session's content is its transcript; this
/// table only says who may append to it, so that recovery after a crash resumes the sessions of
/// dead processes and leaves live ones alone. A row is removed when its session is closed.
const MIGRATION_4: &str = r#"
CREATE TABLE session_owners (
    session_id    TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    claimed_at_ms INTEGER NOT NULL CHECK (claimed_at_ms >= 0)
) STRICT;
"#;

/// The constellation's key root: one secret from which every agent's key is derived
/// (`runtime::identities`). It is written once, from the operating system's randomness, and
/// never changes, so copies of a constellation derive the same keys for the same agents.
const MIGRATION_5: &str = r#"
CREATE TABLE key_root (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seed          BLOB NOT NULL CHECK (length(seed) = 32),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE TRIGGER key_root_no_update BEFORE UPDATE ON key_root
BEGIN SELECT RAISE(ABORT, 'the key root never changes'); END;
CREATE TRIGGER key_root_no_delete BEFORE DELETE ON key_root
BEGIN SELECT RAISE(ABORT, 'the key root never changes'); END;
"#;

/// Editor conversations (ACP sessions): one row per conversation and its `session/update`
/// payloads in the order they were sent, so that loading a conversation replays exactly what the
/// editor showed. Updates are append-only; a conversation's title, mode and times change.
const MIGRATION_6: &str = r#"
CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY,
    cwd             TEXT NOT NULL,
    title           TEXT,
    mode            TEXT NOT NULL DEFAULT 'ask' CHECK (mode IN ('ask', 'auto', 'read-only')),
    update_count    INTEGER NOT NULL DEFAULT 0 CHECK (update_count >= 0),
    created_at_ms   INTEGER NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms   INTEGER NOT NULL CHECK (updated_at_ms >= created_at_ms),
    closed_at_ms    INTEGER
) STRICT;
CREATE INDEX conversations_by_update ON conversations (updated_at_ms, conversation_id);
CREATE TRIGGER conversations_no_delete BEFORE DELETE ON conversations
BEGIN SELECT RAISE(ABORT, 'conversations are kept'); END;

CREATE TABLE conversation_updates (
    conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id),
    seq             INTEGER NOT NULL CHECK (seq >= 0),
    body            TEXT NOT NULL,
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),
    PRIMARY KEY (conversation_id, seq)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER conversation_updates_no_update BEFORE UPDATE ON conversation_updates
BEGIN SELECT RAISE(ABORT, 'conversation history is append-only'); END;
CREATE TRIGGER conversation_updates_no_delete BEFORE DELETE ON conversation_updates
BEGIN SELECT RAISE(ABORT, 'conversation history is append-only'); END;
"#;
