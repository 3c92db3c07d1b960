//! Agents and their identities: ids, key ids, and the signer an agent signs its messages with.
//! Key material comes from the caller (the program draws it from the operating system; tests and
//! simulations pass seeds), so this module never reads randomness itself.

use std::sync::Arc;

use pactum_memory::{AgentRecord, AgentRole, Constellation, Rotation, SecretSeed, StoreError};
use pactum_transcripts::{Ed25519Signer, KeyId};

use crate::error::RuntimeError;

/// The buyer agent every constellation gets on first use.
pub const DEFAULT_BUYER_ID: &str = "buyer";
/// Longest agent id.
const AGENT_ID_BYTES_MAX: usize = 64;

/// Checks an agent id: 1-64 lowercase letters, digits or '-'.
pub fn check_agent_id(agent_id: &str) -> Result<(), RuntimeError> {
    let valid = !agent_id.is_empty()
        && agent_id.len() <= AGENT_ID_BYTES_MAX
        && agent_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid { Ok(()) } else { Err(RuntimeError::InvalidAgentId(agent_id.to_owned())) }
}

/// The key id of an agent's `generation`-th key: `agent:<id>#<generation>`.
pub fn key_id_for(agent_id: &str, generation: u32) -> String {
    format!("agent:{agent_id}#{generation}")
}

/// The Ed25519 signer of an agent's current key.
pub fn signer_for(agent: &AgentRecord) -> Result<Ed25519Signer, RuntimeError> {
    let key_id = KeyId::new(agent.key_id.clone())
        .map_err(|e| pactum_memory::StoreError::Corrupt { detail: format!("agent {}: {e}", agent.agent_id) })?;
    let signer = Ed25519Signer::from_seed(key_id, agent.secret_key.expose());
    if signer.verifying_key().to_bytes() != agent.public_key {
        return Err(pactum_memory::StoreError::Corrupt {
            detail: format!("agent {}: stored secret key does not match its public key", agent.agent_id),
        }
        .into());
    }
    Ok(signer)
}

/// Returns the agent `agent_id`, creating it with a key from `seed` if it does not exist yet.
/// Idempotent: an existing agent keeps its identity and `seed` is discarded.
pub fn ensure_agent(
    db: &Arc<Constellation>,
    agent_id: &str,
    display_name: &str,
    role: AgentRole,
    seed: [u8; 32],
    created_at_ms: u64,
) -> Result<AgentRecord, RuntimeError> {
    check_agent_id(agent_id)?;
    if let Some(existing) = db.agent(agent_id)? {
        return Ok(existing);
    }
    let key_id = key_id_for(agent_id, 1);
    let public_key = Ed25519Signer::from_seed(
        KeyId::new(key_id.clone()).map_err(|_| RuntimeError::InvalidAgentId(agent_id.to_owned()))?,
        &seed,
    )
    .verifying_key()
    .to_bytes();
    let record = AgentRecord {
        agent_id: agent_id.to_owned(),
        display_name: display_name.to_owned(),
        role,
        key_id,
        public_key,
        secret_key: SecretSeed::new(seed),
        created_at_ms,
    };
    Ok(db.ensure_agent(record)?)
}

/// Domain-separation tag of agent key derivation.
const AGENT_KEY_TAG: &[u8] = b"pactum-agent-key/1\0";

/// The secret seed of agent `agent_id`'s `generation`-th key, derived from the constellation's
/// key root: SHA-256(tag ‖ root ‖ len(agent id) ‖ agent id ‖ generation). One root per
/// constellation, written once from the OS's randomness, so copies of a constellation derive the
/// same identities and nothing but the root needs protecting.
pub fn derive_agent_seed(root: &SecretSeed, agent_id: &str, generation: u32) -> [u8; 32] {
    let mut input = Vec::with_capacity(32 + 4 + agent_id.len() + 4);
    input.extend_from_slice(root.expose());
    input.extend_from_slice(&(agent_id.len() as u32).to_be_bytes());
    input.extend_from_slice(agent_id.as_bytes());
    input.extend_from_slice(&generation.to_be_bytes());
    *pactum_transcripts::Digest::tagged(AGENT_KEY_TAG, &input).as_bytes()
}

/// The default buyer, created on first use with a key from `seed`.
pub fn ensure_default_buyer(
    db: &Arc<Constellation>,
    seed: [u8; 32],
    created_at_ms: u64,
) -> Result<AgentRecord, RuntimeError> {
    ensure_agent(db, DEFAULT_BUYER_ID, "Buyer", AgentRole::Buyer, seed, created_at_ms)
}

/// Moves agent `agent_id` to its next key generation `n + 1`: key id `agent:<id>#<n+1>`, seed
/// [`derive_agent_seed`]`(root, agent_id, n + 1)`. The old key is retired, not removed: it stays
/// bound in the constellation so that everything it signed still verifies. Sessions started
/// afterwards sign with the new key (they read the agent's current key when they start).
pub fn rotate_agent_key(db: &Constellation, agent_id: &str, created_at_ms: u64) -> Result<AgentRecord, RuntimeError> {
    check_agent_id(agent_id)?;
    let agent = db.agent(agent_id)?.ok_or_else(|| StoreError::NotFoundId { what: "agent", id: agent_id.to_owned() })?;
    let root = db
        .key_root()?
        .ok_or_else(|| StoreError::Corrupt { detail: "the constellation has agents but no key root".into() })?;
    let generation = db
        .newest_key_generation(agent_id)?
        .checked_add(1)
        .ok_or_else(|| StoreError::Invalid { detail: format!("agent {agent_id} has used every key generation") })?;
    let key_id = key_id_for(agent_id, generation);
    let seed = derive_agent_seed(&root, agent_id, generation);
    let signer = Ed25519Signer::from_seed(
        KeyId::new(key_id.clone()).map_err(|_| RuntimeError::InvalidAgentId(agent_id.to_owned()))?,
        &seed,
    );
    let rotation = Rotation {
        agent_id: agent_id.to_owned(),
        from_key_id: agent.key_id,
        key_id,
        generation,
        public_key: signer.verifying_key().to_bytes(),
        secret_key: SecretSeed::new(seed),
        created_at_ms,
    };
    let rotated = db.rotate_agent_key(&rotation)?;
    // The stored record must sign with the key it names.
    signer_for(&rotated)?;
    Ok(rotated)
}
