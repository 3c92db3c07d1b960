//! `pactum keys list|jwks|rotate|revoke`: the agents' public keys, their generations and the
//! revocation list. Only public material is ever printed; secret seeds stay in the constellation.

use clap::Subcommand;
use serde_json::{Value, json};

use pactum_memory::{AgentKey, StoreError};
use pactum_transcripts::peac::did_key_for_ed25519;
use pactum_transcripts::public_key_bytes_to_base64url;

use crate::cli::Context;
use crate::clock::{format_ms, now_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every agent key: agent, key id, status (current, retired or revoked), public key, did:key.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The public JWKS of the agents' keys (OKP Ed25519) with the revocation list, for verifiers.
    /// Revoked keys are listed in revoked_keys only.
    Jwks {
        /// Only this agent's keys.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
    },
    /// Give an agent a new key generation (agent:<id>#<n+1>); the old key is retired but kept, so
    /// what it signed still verifies. Sessions started afterwards sign with the new key.
    Rotate {
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a key on the constellation's revocation list (append-only): receipts signed with it no
    /// longer verify (E_KEY_REVOKED).
    Revoke {
        /// Key id, e.g. agent:buyer#1.
        kid: String,
        #[arg(long, value_name = "TEXT", default_value = "revoked by the operator")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

impl KeysCommand {
    /// Whether the command prints JSON (`jwks` always does, but its errors stay on stderr only so
    /// that a redirected JWKS file never holds an error document).
    pub fn json(&self) -> bool {
        match self {
            Self::List { json } | Self::Rotate { json, .. } | Self::Revoke { json, .. } => *json,
            Self::Jwks { .. } => false,
        }
    }

    /// The intent this command runs as (`None`: it only reads).
    pub fn intent_type(&self) -> Option<&'static str> {
        match self {
            Self::Rotate { .. } => Some("keys.rotate"),
            Self::Revoke { .. } => Some("keys.revoke"),
            Self::List { .. } | Self::Jwks { .. } => None,
        }
    }
}

pub fn run(context: &Context, command: KeysCommand) -> Result<u8, Failure> {
    match command {
        KeysCommand::List { json } => list(context, json),
        KeysCommand::Jwks { agent } => jwks(context, agent.as_deref()),
        KeysCommand::Rotate { agent, json } => rotate(context, &agent, json),
        KeysCommand::Revoke { kid, reason, json } => revoke(context, &kid, &reason, json),
    }
}

/// The agent keys, or none when there is no constellation (reading creates nothing).
fn agent_keys(context: &Context) -> Result<Vec<AgentKey>, Failure> {
    match context.open_existing()? {
        Ok(db) => Ok(db.agent_keys()?),
        Err(_) => Ok(Vec::new()),
    }
}

fn key_json(key: &AgentKey) -> Value {
    json!({
        "agent_id": key.agent_id,
        "kid": key.key_id,
        "generation": key.generation,
        "status": key.status().as_str(),
        "public_key": public_key_bytes_to_base64url(&key.public_key),
        "did_key": did_key_for_ed25519(&key.public_key),
        "created_at_ms": key.created_at_ms,
        "created_at": format_ms(key.created_at_ms),
        "revoked_at_ms": key.revocation.as_ref().map(|r| r.revoked_at_ms),
        "revocation_reason": key.revocation.as_ref().map(|r| r.reason.clone()),
    })
}

fn list(context: &Context, json: bool) -> Result<u8, Failure> {
    let keys = agent_keys(context)?;
    if json {
        print_json(&Value::Array(keys.iter().map(key_json).collect()));
        return Ok(EXIT_OK);
    }
    if keys.is_empty() {
        print_lines(&["no keys yet (the default buyer and its key are created by the first negotiation)".to_owned()]);
        return Ok(EXIT_OK);
    }
    let mut lines =
        vec![format!("{:<20} {:<28} {:<8} {:<24} {:<44} DID", "AGENT", "KID", "STATUS", "CREATED", "PUBLIC KEY")];
    for key in &keys {
        lines.push(format!(
            "{:<20} {:<28} {:<8} {:<24} {:<44} {}",
            key.agent_id,
            key.key_id,
            key.status().as_str(),
            format_ms(key.created_at_ms),
            public_key_bytes_to_base64url(&key.public_key),
            did_key_for_ed25519(&key.public_key)
        ));
    }
    print_lines(&lines);
    Ok(EXIT_OK)
}

/// The JWKS document of `keys`: usable keys under `keys`, revoked ones under `revoked_keys`.
pub fn jwks_document(keys: &[AgentKey]) -> Value {
    let usable: Vec<Value> = keys
        .iter()
        .filter(|key| key.revocation.is_none())
        .map(|key| {
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": key.key_id,
                "x": public_key_bytes_to_base64url(&key.public_key),
                "use": "sig",
                "alg": "EdDSA",
            })
        })
        .collect();
    let revoked: Vec<Value> = keys
        .iter()
        .filter_map(|key| key.revocation.as_ref())
        .map(|revocation| {
            json!({
                "kid": revocation.key_id,
                "revoked_at": format_ms(revocation.revoked_at_ms),
                "reason": revocation.reason,
            })
        })
        .collect();
    json!({ "keys": usable, "revoked_keys": revoked })
}

fn jwks(context: &Context, agent: Option<&str>) -> Result<u8, Failure> {
    let mut keys = agent_keys(context)?;
    if let Some(agent) = agent {
        keys.retain(|key| key.agent_id == agent);
        if keys.is_empty() {
            return Err(StoreError::NotFoundId { what: "agent", id: agent.to_owned() }.into());
        }
    }
    print_json(&jwks_document(&keys));
    Ok(EXIT_OK)
}

fn existing(context: &Context) -> Result<std::sync::Arc<pactum_memory::Constellation>, Failure> {
    context
        .open_existing()?
        .map_err(|path| Failure::new("CONSTELLATION_NOT_FOUND", format!("no constellation at {}", path.display())))
}

fn rotate(context: &Context, agent_id: &str, json: bool) -> Result<u8, Failure> {
    let db = existing(context)?;
    let previous = db.agent(agent_id)?.map(|agent| agent.key_id);
    let rotated = pactum_runtime::rotate_agent_key(&db, agent_id, now_ms())?;
    let previous = previous.unwrap_or_default();
    let public_key = public_key_bytes_to_base64url(&rotated.public_key);
    let did_key = did_key_for_ed25519(&rotated.public_key);
    if json {
        print_json(&json!({
            "agent_id": rotated.agent_id,
            "kid": rotated.key_id,
            "previous_kid": previous,
            "public_key": public_key,
            "did_key": did_key,
        }));
    } else {
        print_lines(&[
            format!(
                "agent {}: now signs with {} ({previous} is retired, kept for verification)",
                agent_id, rotated.key_id
            ),
            format!("public key  {public_key}"),
            format!("did:key     {did_key}"),
        ]);
    }
    Ok(EXIT_OK)
}

fn revoke(context: &Context, kid: &str, reason: &str, json: bool) -> Result<u8, Failure> {
    let db = existing(context)?;
    let revocation = db.revoke_key(kid, reason, now_ms())?;
    let still_current = db.agents()?.into_iter().find(|agent| agent.key_id == kid).map(|agent| agent.agent_id);
    if json {
        print_json(&json!({
            "kid": revocation.key_id,
            "reason": revocation.reason,
            "revoked_at_ms": revocation.revoked_at_ms,
            "revoked_at": format_ms(revocation.revoked_at_ms),
            "current_of_agent": still_current,
        }));
    } else {
        let mut lines = vec![format!(
            "revoked {} at {}: {}",
            revocation.key_id,
            format_ms(revocation.revoked_at_ms),
            revocation.reason
        )];
        if let Some(agent) = still_current {
            lines.push(format!(
                "agent {agent} still signs with this key: give it a new one with pactum keys rotate {agent}"
            ));
        }
        print_lines(&lines);
    }
    Ok(EXIT_OK)
}
