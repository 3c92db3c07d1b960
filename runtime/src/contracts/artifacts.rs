//! Artifacts: what executions produce, registered with their producer, parents, a semantic
//! descriptor and where they materialize; resolved and listed through [`ArtifactRegistry`].

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use pactum_memory::{ArtifactFilter, ArtifactRow, Constellation, NewArtifact};

use super::{ContractError, RESULT_JSON_BYTES_MAX, canonical, is_prefixed_id, short_digest};

/// Artifact types are short names: 1 to this many bytes.
pub const ARTIFACT_TYPE_BYTES_MAX: usize = 64;
/// Materializations of one artifact.
pub const MATERIALIZATIONS_MAX: usize = 16;
/// Parents of one artifact.
pub const PARENTS_MAX: usize = 64;

/// An artifact's lifecycle. Moves only forward: `PENDING` → `READY` | `FAILED`, `READY` →
/// `ARCHIVED`, and any state → `DELETED`, which is terminal (the record stays; deletion is a
/// state, not a removal).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lifecycle {
    Pending,
    Ready,
    Failed,
    Archived,
    Deleted,
}

impl Lifecycle {
    pub const ALL: [Self; 5] = [Self::Pending, Self::Ready, Self::Failed, Self::Archived, Self::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Archived => "ARCHIVED",
            Self::Deleted => "DELETED",
        }
    }

    /// Parses a lifecycle state, in any case.
    pub fn parse(text: &str) -> Result<Self, ContractError> {
        Self::ALL.into_iter().find(|state| state.as_str().eq_ignore_ascii_case(text)).ok_or_else(|| {
            ContractError::ArtifactInvalid(format!(
                "{:?} is not a lifecycle state (PENDING, READY, FAILED, ARCHIVED or DELETED)",
                text.chars().take(40).collect::<String>()
            ))
        })
    }
}

/// Where an artifact's bytes are: a URI (`file:<absolute path>`, `stream:<transcript id>`,
/// `session:<id>` for a receipt stored with its session), with the SHA-256 and size of the bytes
/// when they were read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Materialization {
    pub uri: String,
    /// Lowercase hex.
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub media_type: Option<String>,
}

impl Materialization {
    /// A materialization without digest (a stream or a stored record).
    pub fn at(uri: impl Into<String>) -> Self {
        Self { uri: uri.into(), sha256: None, size_bytes: None, media_type: None }
    }

    /// A file, read once to take its SHA-256 and size. The path is made absolute.
    pub fn file(path: &Path, media_type: &str) -> std::io::Result<Self> {
        use sha2::Digest as _;
        let absolute = std::path::absolute(path)?;
        let mut file = std::fs::File::open(&absolute)?;
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        let mut size_bytes = 0_u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            size_bytes += read as u64;
            hasher.update(&buffer[..read]);
        }
        Ok(Self {
            uri: format!("file:{}", absolute.display()),
            sha256: Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()),
            size_bytes: Some(size_bytes),
            media_type: Some(media_type.to_owned()),
        })
    }

    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("uri".to_owned(), json!(self.uri));
        if let Some(sha256) = &self.sha256 {
            object.insert("sha256".to_owned(), json!(sha256));
        }
        if let Some(size_bytes) = self.size_bytes {
            object.insert("size_bytes".to_owned(), json!(size_bytes));
        }
        if let Some(media_type) = &self.media_type {
            object.insert("media_type".to_owned(), json!(media_type));
        }
        Value::Object(object)
    }

    fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            uri: value.get("uri")?.as_str()?.to_owned(),
            sha256: value.get("sha256").and_then(Value::as_str).map(str::to_owned),
            size_bytes: value.get("size_bytes").and_then(Value::as_u64),
            media_type: value.get("media_type").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// An artifact a handler registers ([`super::ExecutionContext::register_artifact`]).
#[derive(Clone, PartialEq, Debug)]
pub struct ArtifactDraft {
    /// `receipt`, `transcript`, `transcript_export`, `evidence_bundle`, ...
    pub artifact_type: String,
    /// `PENDING`, `READY` or `FAILED` (an artifact is not born archived or deleted).
    pub lifecycle: Lifecycle,
    /// What it is, as a JSON object.
    pub descriptor: Value,
    pub materializations: Vec<Materialization>,
    /// Artifact ids it was made from.
    pub parents: Vec<String>,
}

impl ArtifactDraft {
    /// A `READY` artifact with no parents.
    pub fn ready(artifact_type: &str, descriptor: Value, materializations: Vec<Materialization>) -> Self {
        Self {
            artifact_type: artifact_type.to_owned(),
            lifecycle: Lifecycle::Ready,
            descriptor,
            materializations,
            parents: Vec::new(),
        }
    }

    #[must_use]
    pub fn with_parents(mut self, parents: impl IntoIterator<Item = String>) -> Self {
        self.parents.extend(parents);
        self
    }

    pub(super) fn check(&self) -> Result<(), ContractError> {
        let type_ok = !self.artifact_type.is_empty()
            && self.artifact_type.len() <= ARTIFACT_TYPE_BYTES_MAX
            && self.artifact_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !type_ok {
            return Err(ContractError::ArtifactInvalid(format!(
                "artifact type {:?} is not 1-{ARTIFACT_TYPE_BYTES_MAX} lowercase letters, digits, '.', '_' or '-'",
                self.artifact_type.chars().take(80).collect::<String>()
            )));
        }
        if matches!(self.lifecycle, Lifecycle::Archived | Lifecycle::Deleted) {
            return Err(ContractError::ArtifactInvalid(format!(
                "an artifact is registered PENDING, READY or FAILED, not {}",
                self.lifecycle.as_str()
            )));
        }
        if !self.descriptor.is_object() {
            return Err(ContractError::ArtifactInvalid("an artifact's descriptor is a JSON object".to_owned()));
        }
        if self.materializations.len() > MATERIALIZATIONS_MAX || self.parents.len() > PARENTS_MAX {
            return Err(ContractError::ArtifactInvalid(format!(
                "an artifact has at most {MATERIALIZATIONS_MAX} materializations and {PARENTS_MAX} parents"
            )));
        }
        if self.materializations.iter().any(|m| m.uri.is_empty() || m.uri.chars().any(char::is_control)) {
            return Err(ContractError::ArtifactInvalid("a materialization needs a URI".to_owned()));
        }
        for parent in &self.parents {
            check_artifact_id(parent)?;
        }
        Ok(())
    }

    pub(super) fn to_new(
        &self,
        artifact_id: &str,
        tenant: &str,
        execution_id: &str,
        intent_type: &str,
        at_ms: u64,
    ) -> Result<NewArtifact, ContractError> {
        let descriptor = canonical(&self.descriptor, "the artifact's descriptor", RESULT_JSON_BYTES_MAX)
            .map_err(ContractError::ArtifactInvalid)?;
        let materializations = Value::Array(self.materializations.iter().map(Materialization::to_json).collect());
        let materializations = canonical(&materializations, "the artifact's materializations", RESULT_JSON_BYTES_MAX)
            .map_err(ContractError::ArtifactInvalid)?;
        let mut parents = self.parents.clone();
        parents.sort();
        parents.dedup();
        Ok(NewArtifact {
            artifact_id: artifact_id.to_owned(),
            artifact_type: self.artifact_type.clone(),
            tenant: tenant.to_owned(),
            execution_id: execution_id.to_owned(),
            intent_type: intent_type.to_owned(),
            lifecycle: self.lifecycle.as_str().to_owned(),
            locator: self.materializations.first().map(|m| m.uri.clone()),
            descriptor,
            materializations,
            parents,
            created_at_ms: at_ms,
        })
    }
}

/// The id of the `index`th artifact an execution registers: `art-` and 16 hexadecimal digits
/// of SHA-256 over the execution id and the index (no randomness needed).
pub fn artifact_id_for(execution_id: &str, index: usize) -> String {
    format!("art-{}", short_digest(&["pactum-artifact/1", execution_id, &index.to_string()]))
}

/// Checks an artifact id's form: `art-` and 16 lowercase hexadecimal digits.
pub fn check_artifact_id(artifact_id: &str) -> Result<(), ContractError> {
    if is_prefixed_id(artifact_id, "art-") {
        Ok(())
    } else {
        Err(ContractError::InvalidArtifactId(artifact_id.chars().take(80).collect()))
    }
}

/// A registered artifact.
#[derive(Clone, PartialEq, Debug)]
pub struct Artifact {
    pub artifact_id: String,
    pub artifact_type: String,
    pub tenant: String,
    /// The intent type and execution that produced it.
    pub produced_by_intent: String,
    pub produced_by_execution: String,
    pub lifecycle: Lifecycle,
    pub descriptor: Value,
    pub materializations: Vec<Materialization>,
    pub parents: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl Artifact {
    fn from_row(row: ArtifactRow) -> Result<Self, ContractError> {
        let corrupt = |what: &str| {
            ContractError::Store(pactum_memory::StoreError::Corrupt {
                detail: format!("artifact {}: {what}", row.artifact_id),
            })
        };
        let descriptor: Value =
            serde_json::from_str(&row.descriptor).map_err(|_| corrupt("the descriptor is not JSON"))?;
        let materializations: Value =
            serde_json::from_str(&row.materializations).map_err(|_| corrupt("the materializations are not JSON"))?;
        let materializations = materializations
            .as_array()
            .map(|items| items.iter().map(Materialization::from_json).collect::<Option<Vec<_>>>())
            .unwrap_or_default()
            .ok_or_else(|| corrupt("a materialization has no URI"))?;
        Ok(Self {
            lifecycle: Lifecycle::parse(&row.lifecycle).map_err(|_| corrupt("unknown lifecycle"))?,
            artifact_id: row.artifact_id,
            artifact_type: row.artifact_type,
            tenant: row.tenant,
            produced_by_intent: row.intent_type,
            produced_by_execution: row.execution_id,
            descriptor,
            materializations,
            parents: row.parents,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }

    /// The artifact's JSON document (`pactum artifact show --json`, `_pactum/artifact/resolve`).
    pub fn to_json(&self) -> Value {
        json!({
            "artifact_id": self.artifact_id,
            "artifact_type": self.artifact_type,
            "tenant": self.tenant,
            "produced_by": { "intent_type": self.produced_by_intent, "execution_id": self.produced_by_execution },
            "lifecycle_state": self.lifecycle.as_str(),
            "semantic_descriptor": self.descriptor,
            "materializations": self.materializations.iter().map(Materialization::to_json).collect::<Vec<_>>(),
            "parent_artifacts": self.parents,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        })
    }
}

/// Which artifacts to list; every filter given must match.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ArtifactQuery {
    pub artifact_type: Option<String>,
    pub execution_id: Option<String>,
    pub lifecycle: Option<Lifecycle>,
    /// A materialization's URI (the first one registered).
    pub locator: Option<String>,
}

/// The authority on a constellation's artifacts: resolve, list, and lifecycle moves.
#[derive(Clone, Debug)]
pub struct ArtifactRegistry {
    db: Arc<Constellation>,
}

impl ArtifactRegistry {
    pub fn new(db: Arc<Constellation>) -> Self {
        Self { db }
    }

    /// The artifact with this id.
    pub fn resolve(&self, artifact_id: &str) -> Result<Artifact, ContractError> {
        check_artifact_id(artifact_id)?;
        let row =
            self.db.artifact(artifact_id)?.ok_or_else(|| ContractError::ArtifactNotFound(artifact_id.to_owned()))?;
        Artifact::from_row(row)
    }

    /// The artifacts matching `query`, oldest first (at most [`pactum_memory::LIST_ROWS_MAX`]).
    pub fn list(&self, query: &ArtifactQuery) -> Result<Vec<Artifact>, ContractError> {
        if let Some(execution_id) = &query.execution_id {
            super::check_execution_id(execution_id)?;
        }
        let filter = ArtifactFilter {
            artifact_type: query.artifact_type.clone(),
            execution_id: query.execution_id.clone(),
            lifecycle: query.lifecycle.map(|l| l.as_str().to_owned()),
            locator: query.locator.clone(),
        };
        self.db.artifacts(&filter)?.into_iter().map(Artifact::from_row).collect()
    }

    /// The newest artifact of `artifact_type` materialized first at `uri`, if any.
    pub fn latest_at(&self, artifact_type: &str, uri: &str) -> Result<Option<Artifact>, ContractError> {
        let query = ArtifactQuery {
            artifact_type: Some(artifact_type.to_owned()),
            locator: Some(uri.to_owned()),
            ..ArtifactQuery::default()
        };
        Ok(self
            .list(&query)?
            .into_iter()
            .rev()
            .find(|a| !matches!(a.lifecycle, Lifecycle::Deleted | Lifecycle::Failed)))
    }

    /// Moves an artifact's lifecycle forward (`TRANSITION_REFUSED` otherwise).
    pub fn set_lifecycle(&self, artifact_id: &str, lifecycle: Lifecycle, at_ms: u64) -> Result<(), ContractError> {
        check_artifact_id(artifact_id)?;
        match self.db.set_artifact_lifecycle(artifact_id, lifecycle.as_str(), at_ms) {
            Err(pactum_memory::StoreError::NotFoundId { .. }) => {
                Err(ContractError::ArtifactNotFound(artifact_id.to_owned()))
            }
            other => Ok(other?),
        }
    }
}
