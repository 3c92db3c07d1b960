//! `pactum policy`: check, store, list, show policies, and explain a session's policy decisions.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use pactum_memory::{PolicyAdded, PolicyRow};
use pactum_runtime::policy::{Policy, PolicyError, Rule, RuleTest, explain, verify};
use pactum_runtime::session::model::{CreatedBody, FailureBody, PolicyEvaluatedBody, SESSION_STREAM_PREFIX, kind};
use pactum_transcripts::Clock as _;

use crate::cli::Context;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Parse, resolve (extends) and compile a policy file; print its rules and policy_hash
    /// (exit 2 with POLICY_INVALID, POLICY_NONDETERMINISTIC or POLICY_UNBOUNDED if it is bad).
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Store a pactum-policy/2 file in the constellation, resolved, as a new version.
    Add {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every stored policy version.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The latest stored version of a policy.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Each policy evaluation a session recorded, in plain words, each re-verified (exit 1 if
    /// one does not verify); says which rule decided a failure.
    Explain {
        /// Session id.
        session: String,
        #[arg(long)]
        json: bool,
    },
}

impl PolicyCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::Check { json, .. }
            | Self::Add { json, .. }
            | Self::List { json }
            | Self::Show { json, .. }
            | Self::Explain { json, .. } => *json,
        }
    }

    /// The intent this command runs as (`None`: it only reads).
    pub fn intent_type(&self) -> Option<&'static str> {
        match self {
            Self::Add { .. } => Some("policy.add"),
            Self::Check { .. } | Self::List { .. } | Self::Show { .. } | Self::Explain { .. } => None,
        }
    }
}

pub fn failure_of(error: PolicyError) -> Failure {
    Failure::new(error.code(), error.to_string())
}

/// A `--policy` argument: a file, else (no such file) the name of a stored policy.
pub fn policy_argument(argument: &Path, db: Option<&pactum_memory::Constellation>) -> Result<Policy, Failure> {
    if argument.is_file() {
        return Policy::load(argument).map_err(failure_of);
    }
    // The editor makes paths absolute: a stored name is the last component.
    let name = argument.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let looks_like_name = !name.is_empty() && !name.contains('.');
    if !looks_like_name {
        return Policy::load(argument).map_err(failure_of);
    }
    let row = match db {
        Some(db) => db.policy(name, None)?,
        None => None,
    };
    let row = row.ok_or_else(|| {
        Failure::new("POLICY_NOT_FOUND", format!("no file {} and no stored policy named {name}", argument.display()))
    })?;
    stored_policy(&row)
}

fn stored_policy(row: &PolicyRow) -> Result<Policy, Failure> {
    let value: Value = serde_json::from_str(&row.canonical_json)
        .map_err(|e| Failure::new("STORE_CORRUPT", format!("stored policy {}: {e}", row.name)))?;
    let policy = Policy::from_json(&value)
        .map_err(|e| Failure::new("STORE_CORRUPT", format!("stored policy {}: {e}", row.name)))?;
    if policy.policy_hash() != row.policy_hash {
        return Err(Failure::new("STORE_CORRUPT", format!("stored policy {}: its hash does not match", row.name)));
    }
    Ok(policy)
}

fn rule_test_text(rule: &Rule) -> String {
    match &rule.test {
        RuleTest::When(source) => format!("when {source}"),
        RuleTest::All(names) => format!("all of {}", names.join(", ")),
        RuleTest::Any(names) => format!("any of {}", names.join(", ")),
        RuleTest::Not(name) => format!("not {name}"),
    }
}

fn summary_json(policy: &Policy) -> Value {
    json!({
        "format": policy.format(),
        "name": policy.name(),
        "version": policy.version(),
        "policy_hash": policy.policy_hash(),
        "passport": policy.passport_requirement().map(|p| json!({
            "min_score_milli": p.min_score_milli,
            "min_confidence_milli": p.min_confidence_milli,
        })),
        "rules": policy.rules().iter().map(|rule| json!({
            "name": rule.name,
            "stage": rule.stage.as_str(),
            "enforce": rule.enforce,
            "test": rule_test_text(rule),
            "description": rule.description,
        })).collect::<Vec<_>>(),
        "policy": policy.to_json(),
    })
}

fn summary_lines(policy: &Policy) -> Vec<String> {
    let mut lines = vec![
        format!("format      {}", policy.format()),
        format!(
            "name        {} (version {})",
            if policy.name().is_empty() { "-" } else { policy.name() },
            policy.version()
        ),
        format!("policy_hash {}", policy.policy_hash()),
    ];
    if let Some(passport) = policy.passport_requirement() {
        lines.push(format!(
            "passport    min score {}.{:03}, min confidence {}.{:03} (checked by the passport gate)",
            passport.min_score_milli / 1000,
            passport.min_score_milli % 1000,
            passport.min_confidence_milli / 1000,
            passport.min_confidence_milli % 1000
        ));
    }
    lines.push(format!("rules       {}", policy.rules().len()));
    for rule in policy.rules() {
        let helper = if rule.enforce { "" } else { " (only in groups)" };
        lines.push(format!("  {:<10} {}{helper}: {}", rule.stage.as_str(), rule.name, rule_test_text(rule)));
    }
    lines
}

pub fn run(context: &Context, command: PolicyCommand) -> Result<u8, Failure> {
    match command {
        PolicyCommand::Check { file, json } => {
            let policy = Policy::load(&file).map_err(failure_of)?;
            if json {
                print_json(&summary_json(&policy));
            } else {
                let mut lines = vec![format!("{}: valid", file.display())];
                lines.extend(summary_lines(&policy));
                print_lines(&lines);
            }
            Ok(EXIT_OK)
        }
        PolicyCommand::Add { file, json } => add(context, &file, json),
        PolicyCommand::List { json } => list(context, json),
        PolicyCommand::Show { name, json } => show(context, &name, json),
        PolicyCommand::Explain { session, json } => explain_session(context, &session, json),
    }
}

fn add(context: &Context, file: &Path, json: bool) -> Result<u8, Failure> {
    // Everything is checked before the constellation is touched.
    let policy = Policy::load(file).map_err(failure_of)?;
    if policy.name().is_empty() {
        return Err(Failure::new(
            "POLICY_INVALID",
            format!("{}: a stored policy needs a name and version (pactum-policy/2)", file.display()),
        ));
    }
    let source = std::fs::read_to_string(file)
        .map_err(|e| Failure::new("POLICY_INVALID", format!("{}: cannot read: {e}", file.display())))?;
    let canonical = pactum_transcripts::canonical::to_canonical_string(&policy.to_json())
        .map_err(|e| Failure::new("POLICY_INVALID", e.to_string()))?;
    let db = context.open()?;
    let row = PolicyRow {
        name: policy.name().to_owned(),
        version: policy.version(),
        policy_hash: policy.policy_hash().to_owned(),
        canonical_json: canonical,
        source,
        created_at_ms: crate::clock::SystemClock.now_ms(),
    };
    match db.add_policy(&row)? {
        PolicyAdded::VersionTaken { policy_hash } => Err(Failure::new(
            "POLICY_VERSION_EXISTS",
            format!(
                "policy {} version {} is already stored with another content ({policy_hash}); raise version",
                row.name, row.version
            ),
        )),
        added => {
            let stored = added == PolicyAdded::Stored;
            if json {
                print_json(&json!({
                    "name": row.name, "version": row.version, "policy_hash": row.policy_hash, "stored": stored,
                }));
            } else {
                let what = if stored { "stored" } else { "already stored" };
                print_lines(&[format!("policy {} version {} {what} ({})", row.name, row.version, row.policy_hash)]);
            }
            Ok(EXIT_OK)
        }
    }
}

fn list(context: &Context, json: bool) -> Result<u8, Failure> {
    let rows = match context.open_existing()? {
        Ok(db) => db.policies()?,
        Err(_) => Vec::new(),
    };
    if json {
        print_json(&Value::Array(
            rows.iter()
                .map(|r| {
                    json!({ "name": r.name, "version": r.version, "policy_hash": r.policy_hash, "created_at_ms": r.created_at_ms })
                })
                .collect(),
        ));
    } else if rows.is_empty() {
        print_lines(&["no stored policies (pactum policy add FILE)".to_owned()]);
    } else {
        print_lines(&rows.iter().map(|r| format!("{} v{} {}", r.name, r.version, r.policy_hash)).collect::<Vec<_>>());
    }
    Ok(EXIT_OK)
}

fn show(context: &Context, name: &str, json: bool) -> Result<u8, Failure> {
    let row = match context.open_existing()? {
        Ok(db) => db.policy(name, None)?,
        Err(_) => None,
    };
    let row = row.ok_or_else(|| Failure::new("POLICY_NOT_FOUND", format!("no stored policy named {name}")))?;
    let policy = stored_policy(&row)?;
    if json {
        let mut document = summary_json(&policy);
        if let Some(object) = document.as_object_mut() {
            object.insert("source".into(), json!(row.source));
            object.insert("created_at_ms".into(), json!(row.created_at_ms));
        }
        print_json(&document);
    } else {
        let mut lines = summary_lines(&policy);
        lines.push("source:".to_owned());
        lines.extend(row.source.lines().map(|l| format!("  {l}")));
        print_lines(&lines);
    }
    Ok(EXIT_OK)
}

fn explain_session(context: &Context, session_id: &str, json: bool) -> Result<u8, Failure> {
    let session_id = session_id.strip_prefix(SESSION_STREAM_PREFIX).unwrap_or(session_id);
    let not_found = || Failure::new("SESSION_NOT_FOUND", format!("no session {session_id}"));
    let db = context.open_existing()?.map_err(|_| not_found())?;
    let stream_id = format!("{SESSION_STREAM_PREFIX}{session_id}");
    if db.stream(&stream_id)?.is_none_or(|s| s.event_count == 0) {
        return Err(not_found());
    }
    let (_, events) = pactum_runtime::stream_events(&db, &stream_id)?;
    let created = events
        .iter()
        .find(|e| e.kind.as_str() == kind::CREATED)
        .and_then(|e| serde_json::from_value::<CreatedBody>(e.body.clone()).ok())
        .ok_or_else(|| Failure::new("STORE_CORRUPT", format!("session {session_id} has no valid session.created")))?;
    let policy = Policy::from_json(&created.policy)
        .map_err(|e| Failure::new("STORE_CORRUPT", format!("session {session_id}: recorded policy: {e}")))?;
    let mut lines = vec![format!(
        "session {session_id}: policy {} ({}), {} rule(s)",
        if policy.name().is_empty() { "-" } else { policy.name() },
        policy.policy_hash(),
        policy.rules().len()
    )];
    let mut documents = Vec::new();
    let mut mismatches = 0;
    for event in &events {
        if event.kind.as_str() != kind::POLICY_EVALUATED {
            continue;
        }
        let body: PolicyEvaluatedBody = serde_json::from_value(event.body.clone())
            .map_err(|e| Failure::new("STORE_CORRUPT", format!("event {}: {e}", event.seq)))?;
        for evaluation in &body.evaluations {
            let verified = verify(&policy, evaluation);
            let text = explain(evaluation);
            lines.push(format!("event {}: {}", event.seq, text));
            match &verified {
                Ok(()) => lines.push("  verified: re-evaluating the rules gives the same result".to_owned()),
                Err(mismatch) => {
                    mismatches += 1;
                    lines.push(format!("  NOT VERIFIED: {mismatch}"));
                }
            }
            documents.push(json!({
                "seq": event.seq,
                "stage": evaluation.stage.as_str(),
                "round": body.round,
                "subject": evaluation.subject,
                "denied_by": evaluation.denied_by,
                "trace": evaluation.trace,
                "explanation": text,
                "verified": verified.is_ok(),
                "mismatch": verified.err().map(|m| m.to_string()),
            }));
        }
    }
    if documents.is_empty() {
        lines.push("no rule was evaluated (the policy has no rules for the stages reached)".to_owned());
    }
    let failure = events
        .iter()
        .find(|e| e.kind.as_str() == kind::FAILED)
        .and_then(|e| serde_json::from_value::<FailureBody>(e.body.clone()).ok());
    let deciding_rule = failure
        .as_ref()
        .and_then(|f| f.evidence_refs.iter().find_map(|r| r.strip_prefix("policy_rule:").map(str::to_owned)));
    if let Some(failure) = &failure {
        match &deciding_rule {
            Some(rule) => lines.push(format!(
                "the session failed with {} {}: policy rule {rule} decided it ({})",
                failure.code, failure.name, failure.detail
            )),
            None => lines
                .push(format!("the session failed with {} {}: no policy rule decided it", failure.code, failure.name)),
        }
    }
    if json {
        print_json(&json!({
            "session_id": session_id,
            "policy_hash": policy.policy_hash(),
            "evaluations": documents,
            "failure": failure.as_ref().map(|f| json!({ "code": f.code, "name": f.name, "rule": deciding_rule })),
            "verified": mismatches == 0,
        }));
    } else {
        print_lines(&lines);
    }
    if mismatches > 0 {
        return Ok(Failure::new(
            "POLICY_EVALUATION_MISMATCH",
            format!("{mismatches} recorded evaluation(s) of session {session_id} do not verify"),
        )
        .report_on_stderr()
        .max(EXIT_INVALID));
    }
    Ok(EXIT_OK)
}
