//! The constellation schema and its migrations. `PRAGMA user_version` holds the number of
//! migrations applied; `PRAGMA application_id` marks the file as Pactum's.

/// "PCT1" in ASCII: identifies a Pactum constellation file (SQLite header offset 68).
pub const APPLICATION_ID: u32 = 0x5043_5431;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`. Never edit a
/// migration that has shipped; append a new one.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
    MIGRATION_10,
    MIGRATION_11,
    MIGRATION_12,
    MIGRATION_13,
    MIGRATION_14,
];

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

/// Versioned memory (`memory::blocks`). Each block is a Loro document: a snapshot
/// (`memory_snapshots`, replaced on consolidation) plus one row per version holding the Loro
/// update that version added, its frontiers, author, message and time. Version rows also hold
/// the block's rendered content as a keyframe or a splice against the previous version, with the
/// SHA-256 of the full content, so that reading, diffing and rolling back to any version never
/// needs Loro time travel. Versions are append-only; blocks are never deleted.
const MIGRATION_7: &str = r#"
-- Loro peer ids, each owned by one author (`agent:<id>`, `partner` or `system`). An author writes
-- with its first peer id; a fresh one is allocated only when a write based on an old version
-- would otherwise reuse operation ids that a newer version already holds.
CREATE TABLE memory_peers (
    peer_id       INTEGER PRIMARY KEY,
    author        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE INDEX memory_peers_by_author ON memory_peers (author, created_at_ms, peer_id);
CREATE TRIGGER memory_peers_no_update BEFORE UPDATE ON memory_peers
BEGIN SELECT RAISE(ABORT, 'a peer id keeps its author'); END;
CREATE TRIGGER memory_peers_no_delete BEFORE DELETE ON memory_peers
BEGIN SELECT RAISE(ABORT, 'peer ids are kept: history refers to them'); END;

CREATE TABLE memory_blocks (
    block_id      TEXT PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES agents (agent_id),
    label         TEXT NOT NULL,
    description   TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('core', 'working', 'archival', 'log')),
    template      TEXT,
    shape         TEXT NOT NULL CHECK (shape IN ('text', 'map', 'list', 'log')),
    char_limit    INTEGER NOT NULL CHECK (char_limit > 0),
    permission    TEXT NOT NULL CHECK (permission IN ('read_only', 'append', 'read_write', 'admin')),
    pinned        INTEGER NOT NULL CHECK (pinned IN (0, 1)),
    version_count INTEGER NOT NULL DEFAULT 0 CHECK (version_count >= 0),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms INTEGER NOT NULL CHECK (updated_at_ms >= 0),
    -- The version the working snapshot holds (0: none yet), the update bytes stored after it, and
    -- the update bytes stored after the history snapshot.
    snapshot_seq  INTEGER NOT NULL DEFAULT 0 CHECK (snapshot_seq >= 0),
    pending_bytes INTEGER NOT NULL DEFAULT 0 CHECK (pending_bytes >= 0),
    history_pending_bytes INTEGER NOT NULL DEFAULT 0 CHECK (history_pending_bytes >= 0),
    UNIQUE (owner, label)
) STRICT;
CREATE TRIGGER memory_blocks_no_delete BEFORE DELETE ON memory_blocks
BEGIN SELECT RAISE(ABORT, 'memory blocks are kept with their history'); END;
CREATE TRIGGER memory_blocks_fixed BEFORE UPDATE OF block_id, owner, label, shape, template, created_at_ms ON memory_blocks
BEGIN SELECT RAISE(ABORT, 'a memory block keeps its id, owner, label, shape and template'); END;

CREATE TABLE memory_versions (
    block_id        TEXT NOT NULL REFERENCES memory_blocks (block_id),
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    op              TEXT NOT NULL,
    author          TEXT NOT NULL,
    message         TEXT NOT NULL,
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),
    frontiers       BLOB NOT NULL,
    update_blob     BLOB NOT NULL,
    keyframe_seq    INTEGER NOT NULL CHECK (keyframe_seq >= 1 AND keyframe_seq <= seq),
    chain_bytes     INTEGER NOT NULL CHECK (chain_bytes >= 0),
    content         BLOB,
    splice          BLOB,
    content_sha256  BLOB NOT NULL CHECK (length(content_sha256) = 32),
    content_chars   INTEGER NOT NULL CHECK (content_chars >= 0),
    idempotency_key TEXT,
    -- The version a change was made against when newer ones existed (it was merged over them).
    base_seq        INTEGER CHECK (base_seq IS NULL OR (base_seq >= 1 AND base_seq < seq)),
    CHECK ((content IS NULL) <> (splice IS NULL)),
    CHECK ((keyframe_seq = seq) = (content IS NOT NULL)),
    UNIQUE (block_id, seq)
) STRICT;
CREATE UNIQUE INDEX memory_versions_idempotency ON memory_versions (block_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TRIGGER memory_versions_no_update BEFORE UPDATE ON memory_versions
BEGIN SELECT RAISE(ABORT, 'memory history is append-only'); END;
CREATE TRIGGER memory_versions_no_delete BEFORE DELETE ON memory_versions
BEGIN SELECT RAISE(ABORT, 'memory history is append-only'); END;

-- The consolidations of each block: a Loro snapshot with the whole history of versions 1..seq,
-- and a working snapshot (the state at shallow_seq with minimal history, a Loro shallow snapshot)
-- that loading the latest version starts from. The working one is refreshed often, the history
-- one as its updates grow past a quarter of its size.
CREATE TABLE memory_snapshots (
    block_id      TEXT PRIMARY KEY REFERENCES memory_blocks (block_id),
    seq           INTEGER NOT NULL CHECK (seq >= 1),
    snapshot      BLOB NOT NULL,
    shallow_seq   INTEGER NOT NULL CHECK (shallow_seq >= seq),
    shallow       BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    FOREIGN KEY (block_id, seq) REFERENCES memory_versions (block_id, seq),
    FOREIGN KEY (block_id, shallow_seq) REFERENCES memory_versions (block_id, seq)
) STRICT;

-- Blocks attached to agents other than their owner.
CREATE TABLE memory_shares (
    block_id      TEXT NOT NULL REFERENCES memory_blocks (block_id),
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id),
    permission    TEXT NOT NULL CHECK (permission IN ('read_only', 'append', 'read_write', 'admin')),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    PRIMARY KEY (block_id, agent_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memory_shares_by_agent ON memory_shares (agent_id, block_id);

-- Archival memory: passages per agent, searched with FTS5 (BM25). Passages are append-only.
CREATE TABLE memory_passages (
    passage_id    INTEGER PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id),
    text          TEXT NOT NULL,
    author        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0)
) STRICT;
CREATE INDEX memory_passages_by_agent ON memory_passages (agent_id, passage_id);
CREATE VIRTUAL TABLE memory_passages_fts USING fts5(
    text, content = 'memory_passages', content_rowid = 'passage_id', tokenize = 'porter unicode61'
);
CREATE TRIGGER memory_passages_index AFTER INSERT ON memory_passages
BEGIN INSERT INTO memory_passages_fts (rowid, text) VALUES (new.passage_id, new.text); END;
CREATE TRIGGER memory_passages_no_update BEFORE UPDATE ON memory_passages
BEGIN SELECT RAISE(ABORT, 'archival passages are append-only'); END;
CREATE TRIGGER memory_passages_no_delete BEFORE DELETE ON memory_passages
BEGIN SELECT RAISE(ABORT, 'archival passages are append-only'); END;
"#;

/// Stored policies (`pactum policy add`): each row is one version of a named policy, resolved
/// (its canonical JSON is self-contained and hashes to `policy_hash`) with the source text it
/// came from. Append-only: a new version is a new row.
const MIGRATION_8: &str = r#"
CREATE TABLE policies (
    name           TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    policy_hash    TEXT NOT NULL,
    canonical_json TEXT NOT NULL,
    source         TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL CHECK (created_at_ms >= 0),
    PRIMARY KEY (name, version)
) STRICT;
CREATE TRIGGER policies_no_update BEFORE UPDATE ON policies
BEGIN SELECT RAISE(ABORT, 'stored policies are append-only'); END;
CREATE TRIGGER policies_no_delete BEFORE DELETE ON policies
BEGIN SELECT RAISE(ABORT, 'stored policies are append-only'); END;
"#;

/// Migration 9: the passport. Outcomes of transcripts that verified, one row per party and
/// transcript; a transcript is ingested once (its hash is the key). Both tables are append-only.
const MIGRATION_9: &str = r#"
CREATE TABLE passport_sources (
    transcript_hash TEXT PRIMARY KEY CHECK (length(transcript_hash) = 64),
    source          TEXT NOT NULL,
    format          TEXT NOT NULL,
    ended_at_ms     INTEGER NOT NULL CHECK (ended_at_ms >= 0),
    ingested_at_ms  INTEGER NOT NULL CHECK (ingested_at_ms >= 0)
) STRICT;
CREATE INDEX passport_sources_by_source ON passport_sources (source);
CREATE TABLE passport_events (
    agent_id        TEXT NOT NULL,
    counterparty    TEXT NOT NULL,
    outcome         TEXT NOT NULL
                    CHECK (outcome IN ('success', 'failure', 'policy_violation', 'dispute_lost', 'neutral')),
    code            TEXT,
    fault_domain    TEXT,
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),
    amount_minor    INTEGER CHECK (amount_minor >= 0),
    currency        TEXT,
    transcript_hash TEXT NOT NULL REFERENCES passport_sources (transcript_hash),
    -- Clustered by agent and time: scoring an agent reads its rows in one sequential range.
    PRIMARY KEY (agent_id, at_ms, transcript_hash)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER passport_sources_no_update BEFORE UPDATE ON passport_sources
BEGIN SELECT RAISE(ABORT, 'passport sources are append-only'); END;
CREATE TRIGGER passport_sources_no_delete BEFORE DELETE ON passport_sources
BEGIN SELECT RAISE(ABORT, 'passport sources are append-only'); END;
CREATE TRIGGER passport_events_no_update BEFORE UPDATE ON passport_events
BEGIN SELECT RAISE(ABORT, 'passport events are append-only'); END;
CREATE TRIGGER passport_events_no_delete BEFORE DELETE ON passport_events
BEGIN SELECT RAISE(ABORT, 'passport events are append-only'); END;
"#;

/// Migration 10: key generations and revocations. `agent_keys` records every key an agent has
/// had (the current one is `agents.key_id`; older ones are retired but stay in `signing_keys` so
/// old transcripts still verify). `key_revocations` is the revocation list. Both are append-only,
/// and an agent's current key only ever moves to a newer generation of its own.
const MIGRATION_10: &str = r#"
CREATE TABLE agent_keys (
    key_id        TEXT PRIMARY KEY REFERENCES signing_keys (key_id),
    agent_id      TEXT NOT NULL REFERENCES agents (agent_id),
    generation    INTEGER NOT NULL CHECK (generation >= 1),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    UNIQUE (agent_id, generation)
) STRICT;
INSERT INTO agent_keys (key_id, agent_id, generation, created_at_ms)
    SELECT a.key_id, a.agent_id,
           max(1, CAST(substr(a.key_id, instr(a.key_id, '#') + 1) AS INTEGER)), k.created_at_ms
    FROM agents a JOIN signing_keys k ON k.key_id = a.key_id;
CREATE TRIGGER agent_keys_no_update BEFORE UPDATE ON agent_keys
BEGIN SELECT RAISE(ABORT, 'agent key generations are append-only'); END;
CREATE TRIGGER agent_keys_no_delete BEFORE DELETE ON agent_keys
BEGIN SELECT RAISE(ABORT, 'agent key generations are append-only'); END;
CREATE TRIGGER agents_key_moves_forward BEFORE UPDATE OF key_id ON agents
WHEN NOT EXISTS (
    SELECT 1 FROM agent_keys newer JOIN agent_keys older ON older.key_id = old.key_id
    WHERE newer.key_id = new.key_id AND newer.agent_id = old.agent_id AND newer.generation > older.generation
)
BEGIN SELECT RAISE(ABORT, 'an agent key only moves to a newer generation of its own'); END;
CREATE TRIGGER agents_fixed BEFORE UPDATE OF agent_id, role, created_at_ms ON agents
BEGIN SELECT RAISE(ABORT, 'an agent keeps its id, role and creation time'); END;

CREATE TABLE key_revocations (
    key_id        TEXT PRIMARY KEY REFERENCES signing_keys (key_id),
    reason        TEXT NOT NULL,
    revoked_at_ms INTEGER NOT NULL CHECK (revoked_at_ms >= 0)
) STRICT;
CREATE TRIGGER key_revocations_no_update BEFORE UPDATE ON key_revocations
BEGIN SELECT RAISE(ABORT, 'the revocation list is append-only'); END;
CREATE TRIGGER key_revocations_no_delete BEFORE DELETE ON key_revocations
BEGIN SELECT RAISE(ABORT, 'the revocation list is append-only'); END;
"#;

/// Migration 11: spending constraints on agents, and the payments they count.
///
/// `agent_constraints` holds every version of an agent's named constraints (`pactum budget
/// set`): a new version is a new row, a removal a row without a body. `since_ms` is when the
/// constraint started counting, kept across versions so that raising a limit does not forget
/// what was spent. `spends` has one row per payment held by an agent that has constraints
/// (written with the hold, in the same transaction; an agent's earlier holds are copied from the
/// ledger when its first constraint is set), released when the hold is given back; only
/// `released_at_ms` may change, once. Existing holds on the ledger are copied in.
const MIGRATION_11: &str = r#"
CREATE TABLE agent_constraints (
    agent_id        TEXT NOT NULL REFERENCES agents (agent_id),
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    body            TEXT,
    constraint_hash TEXT,
    since_ms        INTEGER NOT NULL CHECK (since_ms >= 0),
    created_at_ms   INTEGER NOT NULL CHECK (created_at_ms >= 0),
    CHECK ((body IS NULL) = (constraint_hash IS NULL)),
    PRIMARY KEY (agent_id, name, version)
) STRICT;
CREATE TRIGGER agent_constraints_no_update BEFORE UPDATE ON agent_constraints
BEGIN SELECT RAISE(ABORT, 'agent constraints are append-only'); END;
CREATE TRIGGER agent_constraints_no_delete BEFORE DELETE ON agent_constraints
BEGIN SELECT RAISE(ABORT, 'agent constraints are append-only'); END;

CREATE TABLE spends (
    payment_id     TEXT PRIMARY KEY,
    agent_id       TEXT NOT NULL,
    amount_minor   INTEGER NOT NULL CHECK (amount_minor > 0),
    currency       TEXT NOT NULL,
    at_ms          INTEGER NOT NULL CHECK (at_ms >= 0),
    released_at_ms INTEGER CHECK (released_at_ms IS NULL OR released_at_ms >= 0)
) STRICT, WITHOUT ROWID;
-- Covers the checks' aggregates (uses and sums in a time range), read before every payment.
CREATE INDEX spends_by_agent ON spends (agent_id, at_ms, currency, amount_minor, released_at_ms);
CREATE TRIGGER spends_release_once BEFORE UPDATE ON spends
WHEN old.released_at_ms IS NOT NULL OR new.released_at_ms IS NULL
    OR new.payment_id IS NOT old.payment_id OR new.agent_id IS NOT old.agent_id
    OR new.amount_minor IS NOT old.amount_minor OR new.currency IS NOT old.currency OR new.at_ms IS NOT old.at_ms
BEGIN SELECT RAISE(ABORT, 'a spend is only ever released, once'); END;
CREATE TRIGGER spends_no_delete BEFORE DELETE ON spends
BEGIN SELECT RAISE(ABORT, 'spends are append-only'); END;

INSERT INTO spends (payment_id, agent_id, amount_minor, currency, at_ms, released_at_ms)
    SELECT substr(t.idempotency_key, 1, length(t.idempotency_key) - length(':prepare')),
           substr(t.from_account, length('wallet:') + 1,
                  length(t.from_account) - length('wallet:') - length(t.currency) - 1),
           t.amount_minor, t.currency, t.at_ms,
           (SELECT a.at_ms FROM ledger_transfers a
            WHERE a.idempotency_key = substr(t.idempotency_key, 1, length(t.idempotency_key) - length(':prepare')) || ':abort')
    FROM ledger_transfers t
    WHERE t.idempotency_key LIKE '%:prepare' AND t.from_account LIKE 'wallet:%';
"#;

/// Migration 12: settlement graphs. A graph's edges are written once, with the graph, and never
/// change; its state only moves forward: `preparing` → `committing` → `committed`, or
/// `preparing` → `failed`. `committing` is the commit point: once written, recovery completes
/// every edge; before it, recovery releases every hold.
const MIGRATION_12: &str = r#"
CREATE TABLE settlement_graphs (
    graph_id      TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('preparing', 'committing', 'committed', 'failed')),
    failure       TEXT,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms INTEGER NOT NULL CHECK (updated_at_ms >= 0),
    CHECK ((state = 'failed') = (failure IS NOT NULL))
) STRICT;
CREATE TABLE settlement_graph_edges (
    graph_id     TEXT NOT NULL REFERENCES settlement_graphs (graph_id),
    edge_index   INTEGER NOT NULL CHECK (edge_index >= 0),
    payer        TEXT NOT NULL,
    payee        TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency     TEXT NOT NULL,
    rail         TEXT NOT NULL,
    CHECK (payer <> payee),
    PRIMARY KEY (graph_id, edge_index)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER settlement_graphs_forward BEFORE UPDATE ON settlement_graphs
WHEN new.graph_id IS NOT old.graph_id OR new.created_at_ms IS NOT old.created_at_ms
    OR NOT ((old.state = 'preparing' AND new.state IN ('committing', 'failed'))
         OR (old.state = 'committing' AND new.state = 'committed'))
BEGIN SELECT RAISE(ABORT, 'a settlement graph only moves forward'); END;
CREATE TRIGGER settlement_graphs_no_delete BEFORE DELETE ON settlement_graphs
BEGIN SELECT RAISE(ABORT, 'settlement graphs are append-only'); END;
CREATE TRIGGER settlement_graph_edges_no_update BEFORE UPDATE ON settlement_graph_edges
BEGIN SELECT RAISE(ABORT, 'settlement graph edges are append-only'); END;
CREATE TRIGGER settlement_graph_edges_no_delete BEFORE DELETE ON settlement_graph_edges
BEGIN SELECT RAISE(ABORT, 'settlement graph edges are append-only'); END;
"#;

/// Migration 13: runtime contracts. An execution is one intent run by the runtime; its status
/// only moves forward (`created` → `running` → `completed` | `failed` | `cancelled`, or
/// `created` → `failed` | `cancelled`), the fields that name it never change, and its session id
/// may only be learnt once. `execution_log` is the execution's write-ahead audit log
/// (append-only). `execution_state` holds the state surface's values (session- and
/// execution-scoped; a value is replaced by the next write of its key). `artifacts` are what
/// executions produce; their lifecycle only moves forward (`PENDING` → `READY` | `FAILED`,
/// `READY` → `ARCHIVED`, any → `DELETED`, which is terminal) and their parents are written once.
const MIGRATION_13: &str = r#"
CREATE TABLE executions (
    execution_id  TEXT PRIMARY KEY,
    intent_type   TEXT NOT NULL,
    handler_name  TEXT NOT NULL,
    parameters    TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    solution_id   TEXT NOT NULL,
    session_id    TEXT,
    owner         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('created', 'running', 'completed', 'failed', 'cancelled')),
    error_code    TEXT,
    error_message TEXT,
    result        TEXT,
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms INTEGER NOT NULL CHECK (updated_at_ms >= 0),
    CHECK ((status = 'failed') = (error_code IS NOT NULL))
) STRICT;
CREATE INDEX executions_unfinished ON executions (status) WHERE status IN ('created', 'running');
CREATE INDEX executions_by_time ON executions (created_at_ms, execution_id);
CREATE TRIGGER executions_forward BEFORE UPDATE ON executions
WHEN new.execution_id IS NOT old.execution_id OR new.intent_type IS NOT old.intent_type
    OR new.handler_name IS NOT old.handler_name OR new.parameters IS NOT old.parameters
    OR new.metadata IS NOT old.metadata OR new.tenant IS NOT old.tenant
    OR new.solution_id IS NOT old.solution_id OR new.owner IS NOT old.owner
    OR new.created_at_ms IS NOT old.created_at_ms
    OR (old.session_id IS NOT NULL AND new.session_id IS NOT old.session_id)
    OR NOT ((old.status = 'created' AND new.status IN ('running', 'failed', 'cancelled'))
         OR (old.status = 'running' AND new.status IN ('completed', 'failed', 'cancelled')))
BEGIN SELECT RAISE(ABORT, 'an execution only moves forward'); END;
CREATE TRIGGER executions_no_delete BEFORE DELETE ON executions
BEGIN SELECT RAISE(ABORT, 'executions are append-only'); END;

CREATE TABLE execution_log (
    execution_id TEXT NOT NULL REFERENCES executions (execution_id),
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    at_ms        INTEGER NOT NULL CHECK (at_ms >= 0),
    entry_kind   TEXT NOT NULL,
    detail       TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER execution_log_no_update BEFORE UPDATE ON execution_log
BEGIN SELECT RAISE(ABORT, 'the execution log is append-only'); END;
CREATE TRIGGER execution_log_no_delete BEFORE DELETE ON execution_log
BEGIN SELECT RAISE(ABORT, 'the execution log is append-only'); END;

CREATE TABLE execution_state (
    scope         TEXT NOT NULL CHECK (scope IN ('session', 'execution')),
    scope_id      TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    execution_id  TEXT REFERENCES executions (execution_id),
    updated_at_ms INTEGER NOT NULL CHECK (updated_at_ms >= 0),
    PRIMARY KEY (scope, scope_id, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE artifacts (
    artifact_id      TEXT PRIMARY KEY,
    artifact_type    TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    execution_id     TEXT NOT NULL REFERENCES executions (execution_id),
    intent_type      TEXT NOT NULL,
    lifecycle        TEXT NOT NULL CHECK (lifecycle IN ('PENDING', 'READY', 'FAILED', 'ARCHIVED', 'DELETED')),
    locator          TEXT,
    descriptor       TEXT NOT NULL,
    materializations TEXT NOT NULL,
    created_at_ms    INTEGER NOT NULL CHECK (created_at_ms >= 0),
    updated_at_ms    INTEGER NOT NULL CHECK (updated_at_ms >= 0)
) STRICT;
CREATE INDEX artifacts_by_type ON artifacts (artifact_type, created_at_ms);
CREATE INDEX artifacts_by_execution ON artifacts (execution_id);
CREATE INDEX artifacts_by_locator ON artifacts (locator) WHERE locator IS NOT NULL;
CREATE TRIGGER artifacts_forward BEFORE UPDATE ON artifacts
WHEN new.artifact_id IS NOT old.artifact_id OR new.artifact_type IS NOT old.artifact_type
    OR new.tenant IS NOT old.tenant OR new.execution_id IS NOT old.execution_id
    OR new.intent_type IS NOT old.intent_type OR new.locator IS NOT old.locator
    OR new.descriptor IS NOT old.descriptor OR new.materializations IS NOT old.materializations
    OR new.created_at_ms IS NOT old.created_at_ms
    OR NOT ((old.lifecycle = 'PENDING' AND new.lifecycle IN ('READY', 'FAILED', 'DELETED'))
         OR (old.lifecycle = 'READY' AND new.lifecycle IN ('ARCHIVED', 'DELETED'))
         OR (old.lifecycle IN ('FAILED', 'ARCHIVED') AND new.lifecycle = 'DELETED'))
BEGIN SELECT RAISE(ABORT, 'an artifact only moves forward'); END;
CREATE TRIGGER artifacts_no_delete BEFORE DELETE ON artifacts
BEGIN SELECT RAISE(ABORT, 'artifacts are append-only'); END;

CREATE TABLE artifact_parents (
    artifact_id TEXT NOT NULL REFERENCES artifacts (artifact_id),
    parent_id   TEXT NOT NULL REFERENCES artifacts (artifact_id),
    CHECK (artifact_id <> parent_id),
    PRIMARY KEY (artifact_id, parent_id)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER artifact_parents_no_update BEFORE UPDATE ON artifact_parents
BEGIN SELECT RAISE(ABORT, 'artifact parents are append-only'); END;
CREATE TRIGGER artifact_parents_no_delete BEFORE DELETE ON artifact_parents
BEGIN SELECT RAISE(ABORT, 'artifact parents are append-only'); END;
"#;

/// Who commits each unfinished settlement graph: claimed when the graph is recorded, released by
/// the write that ends it, taken over by recovery only from a process that is gone.
const MIGRATION_14: &str = r#"
CREATE TABLE settlement_graph_owners (
    graph_id      TEXT PRIMARY KEY REFERENCES settlement_graphs (graph_id),
    owner         TEXT NOT NULL,
    claimed_at_ms INTEGER NOT NULL CHECK (claimed_at_ms >= 0)
) STRICT, WITHOUT ROWID;
"#;
