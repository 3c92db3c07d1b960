//! What recording an execution costs a command: the start transaction (`created` → `running`,
//! two log entries) and the end transaction (`completed`, a log entry, two artifacts with a
//! parent, as a negotiation registers), around a handler that does nothing.
//!
//! `cargo bench -p pactum-runtime --bench contracts`
//!
//! A plain `main`: [`WARMUP`] executions, then [`EXECUTIONS`] on one constellation file
//! (synchronous NORMAL, the default; and FULL, `PACTUM_DURABILITY=power-loss`); prints the
//! median, p90 and max per execution.
#![allow(clippy::float_arithmetic, clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use pactum_memory::{Constellation, Durability, OpenOptions};
use pactum_runtime::ManualClock;
use pactum_runtime::contracts::{
    ArtifactDraft, ExecutionRequest, HandlerError, HandlerOutput, Intent, IntentRegistry, Materialization,
};

const WARMUP: usize = 20;
const EXECUTIONS: usize = 500;
const NOW: u64 = 1_767_225_600_000;

#[derive(Debug)]
struct Never;

impl HandlerError for Never {
    fn code(&self) -> &str {
        "NEVER"
    }
    fn message(&self) -> String {
        String::new()
    }
}

fn measure(durability: Durability, with_artifacts: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Constellation::open_with(dir.path().join("bench.db"), OpenOptions { durability, create: true }).unwrap(),
    );
    let mut registry = IntentRegistry::<bool, (), Never>::new(Arc::new(ManualClock::new(NOW)));
    registry
        .register_intent(
            "negotiate",
            "bench",
            |context, with_artifacts| {
                if with_artifacts {
                    let transcript = context
                        .register_artifact(ArtifactDraft::ready(
                            "transcript",
                            json!({ "stream_id": "session:s-1" }),
                            vec![Materialization::at("stream:session:s-1")],
                        ))
                        .unwrap();
                    context
                        .register_artifact(
                            ArtifactDraft::ready(
                                "receipt",
                                json!({ "session_id": "s-1" }),
                                vec![Materialization::at("session:s-1")],
                            )
                            .with_parents([transcript]),
                        )
                        .unwrap();
                }
                Ok(HandlerOutput::new((), json!({ "exit_code": 0 })))
            },
            json!({}),
        )
        .unwrap();
    let tenant = db.path().display().to_string();
    let mut times = Vec::with_capacity(EXECUTIONS);
    for index in 0..WARMUP + EXECUTIONS {
        let request = ExecutionRequest {
            execution_id: format!("exec-{index:016x}"),
            intent: Intent {
                intent_type: "negotiate".to_owned(),
                parameters: json!({ "argv": ["negotiate", "weather.data", "--max-price", "0.05", "--yes"] }),
                metadata: json!({}),
                tenant: tenant.clone(),
                session_id: None,
                solution_id: "cli".to_owned(),
            },
            owner: "pid:1:1".to_owned(),
            metadata: json!({ "program": "pactum" }),
            created_at_ms: NOW,
        };
        let started = Instant::now();
        let executed = registry.execute(request, Some(&db), with_artifacts).unwrap();
        let elapsed = started.elapsed();
        assert!(executed.outcome.is_ok() && executed.record_error.is_none());
        if index >= WARMUP {
            times.push(elapsed);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "execution ({}, {}): median {:.3} ms, p90 {:.3} ms, max {:.3} ms ({EXECUTIONS} executions)",
        durability.pragma_value(),
        if with_artifacts { "two artifacts" } else { "no artifact" },
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(times[times.len() - 1])
    );
}

fn main() {
    for durability in [Durability::Process, Durability::PowerLoss] {
        measure(durability, false);
        measure(durability, true);
    }
}
