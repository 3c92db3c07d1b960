//! Runtime contracts: the intent registry (one handler per type, unknown intents refused,
//! validation before any handler), the execution lifecycle (forward only, recorded by the
//! runtime, failed and cancelled handlers, interrupted processes), the state surface, the log and
//! artifacts (register, resolve, list, lifecycle, parents, producer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use pactum_memory::{Constellation, StoreError};
use pactum_runtime::contracts::{
    ArtifactDraft, ArtifactQuery, ArtifactRegistry, ContractError, ExecutionContext, ExecutionRequest, ExecutionStatus,
    HandlerError, HandlerOutput, Intent, IntentRegistry, Lifecycle, Materialization, recover_interrupted,
};
use pactum_runtime::session::shell::OwnerLiveness;
use pactum_runtime::{Clock, ManualClock};

const NOW: u64 = 1_700_000_000_000;
const OWNER: &str = "pid:1:1";

#[derive(Debug)]
struct TestError(&'static str);

impl HandlerError for TestError {
    fn code(&self) -> &str {
        self.0
    }
    fn message(&self) -> String {
        format!("the handler said {}", self.0)
    }
}

/// What a test handler is asked to do.
#[derive(Debug)]
enum Work {
    Succeed,
    Fail,
    Cancel,
    Produce,
    UseState,
}

type Registry = IntentRegistry<Work, u32, TestError>;
type Spoil = Box<dyn Fn(&mut ExecutionRequest)>;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<Constellation>,
    registry: Registry,
    calls: Arc<AtomicUsize>,
    next_id: Mutex<u64>,
}

fn handle(context: &ExecutionContext, work: Work) -> Result<HandlerOutput<u32>, TestError> {
    match work {
        Work::Succeed => Ok(HandlerOutput::new(7, json!({ "answer": 7 }))),
        Work::Fail => Err(TestError("HANDLER_SAID_NO")),
        Work::Cancel => Ok(HandlerOutput { cancelled: true, ..HandlerOutput::new(0, json!({ "stopped": true })) }),
        Work::Produce => {
            let transcript = context
                .register_artifact(ArtifactDraft::ready(
                    "transcript",
                    json!({ "stream_id": "session:s-1" }),
                    vec![Materialization::at("stream:session:s-1")],
                ))
                .map_err(|_| TestError("ARTIFACT"))?;
            context
                .register_artifact(
                    ArtifactDraft::ready(
                        "receipt",
                        json!({ "session_id": "s-1" }),
                        vec![Materialization::at("session:s-1")],
                    )
                    .with_parents([transcript]),
                )
                .map_err(|_| TestError("ARTIFACT"))?;
            Ok(HandlerOutput { session_id: Some("s-1".to_owned()), ..HandlerOutput::new(2, json!({})) })
        }
        Work::UseState => {
            let state = context.state().map_err(|_| TestError("STATE"))?;
            state.set_execution_state("step", &json!(1)).map_err(|_| TestError("STATE"))?;
            state.set_session_state("s-9", "note", &json!({ "a": [1, 2] })).map_err(|_| TestError("STATE"))?;
            let step = state.get_execution_state("step").map_err(|_| TestError("STATE"))?;
            let wal = context.wal().map_err(|_| TestError("WAL"))?;
            wal.append("checkpoint", &json!({ "step": step })).map_err(|_| TestError("WAL"))?;
            if wal.append("transition", &json!({})).is_ok() {
                return Err(TestError("RESERVED_KIND_ACCEPTED"));
            }
            Ok(HandlerOutput::new(1, json!({})))
        }
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp");
    let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new(Arc::new(ManualClock::new(NOW)));
    for intent_type in ["test.work", "test.other"] {
        let counted = Arc::clone(&calls);
        registry
            .register_intent(
                intent_type,
                "tests",
                move |context, work| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    handle(context, work)
                },
                json!({ "doc": "a test handler" }),
            )
            .expect("register");
    }
    Fixture { _dir: dir, db, registry, calls, next_id: Mutex::new(0) }
}

impl Fixture {
    fn request(&self, intent_type: &str) -> ExecutionRequest {
        let mut next = self.next_id.lock().expect("lock");
        *next += 1;
        ExecutionRequest {
            execution_id: format!("exec-{:016x}", *next),
            intent: Intent {
                intent_type: intent_type.to_owned(),
                parameters: json!({ "argv": ["work"] }),
                metadata: json!({}),
                tenant: self.db.path().display().to_string(),
                session_id: None,
                solution_id: "tests".to_owned(),
            },
            owner: OWNER.to_owned(),
            metadata: json!({ "front_end": "tests" }),
            created_at_ms: NOW,
        }
    }

    fn run(&self, work: Work) -> (String, Option<ExecutionStatus>, Result<u32, TestError>) {
        let executed = self.registry.execute(self.request("test.work"), Some(&self.db), work).expect("execute");
        assert!(executed.record_error.is_none(), "{:?}", executed.record_error);
        (executed.execution_id, executed.status, executed.outcome)
    }

    fn status(&self, execution_id: &str) -> String {
        self.db.execution(execution_id).expect("read").expect("recorded").status
    }

    fn transitions(&self, execution_id: &str) -> Vec<String> {
        self.db
            .execution_log(execution_id)
            .expect("log")
            .into_iter()
            .filter(|entry| entry.entry_kind == "transition")
            .map(|entry| {
                serde_json::from_str::<Value>(&entry.detail).expect("json")["to"].as_str().unwrap_or("").to_owned()
            })
            .collect()
    }
}

#[test]
fn an_intent_type_registers_once() {
    let mut fixture = fixture();
    let error = fixture
        .registry
        .register_intent("test.work", "again", |_, _| Ok(HandlerOutput::new(0, Value::Null)), json!({}))
        .expect_err("registered twice");
    assert_eq!(error.code(), "INTENT_EXISTS");
    let types: Vec<_> = fixture.registry.intents().map(|i| i.intent_type.clone()).collect();
    assert_eq!(types, ["test.other", "test.work"]);
    let error = fixture
        .registry
        .register_intent("Not A Type", "x", |_, _| Ok(HandlerOutput::new(0, Value::Null)), json!({}))
        .expect_err("a bad name");
    assert_eq!(error.code(), "EXECUTION_CONTEXT_INVALID");
}

#[test]
fn an_unknown_intent_is_refused_and_records_nothing() {
    let fixture = fixture();
    let request = fixture.request("test.missing");
    let error = fixture.registry.execute(request.clone(), Some(&fixture.db), Work::Succeed).expect_err("unknown");
    assert_eq!(error.code(), "INTENT_UNKNOWN");
    assert!(matches!(error, ContractError::UnknownIntent(ref t) if t == "test.missing"));
    assert!(fixture.db.execution(&request.execution_id).expect("read").is_none());
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_completed_execution_goes_through_every_state_and_keeps_its_result() {
    let fixture = fixture();
    let (execution_id, status, outcome) = fixture.run(Work::Succeed);
    assert_eq!(status, Some(ExecutionStatus::Completed));
    assert_eq!(outcome.expect("ok"), 7);
    let row = fixture.db.execution(&execution_id).expect("read").expect("recorded");
    assert_eq!(row.status, "completed");
    assert_eq!(row.intent_type, "test.work");
    assert_eq!(row.handler_name, "tests");
    assert_eq!(row.parameters, r#"{"argv":["work"]}"#);
    assert_eq!(row.result.as_deref(), Some(r#"{"answer":7}"#));
    assert_eq!(row.owner, OWNER);
    assert_eq!(fixture.transitions(&execution_id), ["created", "running", "completed"]);
}

#[test]
fn a_failing_handler_leaves_a_failed_execution_with_its_error() {
    let fixture = fixture();
    let (execution_id, status, outcome) = fixture.run(Work::Fail);
    assert_eq!(status, Some(ExecutionStatus::Failed));
    assert_eq!(outcome.expect_err("failed").0, "HANDLER_SAID_NO");
    let row = fixture.db.execution(&execution_id).expect("read").expect("recorded");
    assert_eq!(row.status, "failed");
    assert_eq!(row.error_code.as_deref(), Some("HANDLER_SAID_NO"));
    assert_eq!(row.error_message.as_deref(), Some("the handler said HANDLER_SAID_NO"));
    assert_eq!(fixture.transitions(&execution_id), ["created", "running", "failed"]);
}

#[test]
fn a_cancelled_handler_leaves_a_cancelled_execution() {
    let fixture = fixture();
    let (execution_id, status, _) = fixture.run(Work::Cancel);
    assert_eq!(status, Some(ExecutionStatus::Cancelled));
    assert_eq!(fixture.status(&execution_id), "cancelled");
    // A started execution can be cancelled by its driver too.
    let running = fixture.registry.start(fixture.request("test.other"), &fixture.db).expect("start");
    let id = running.execution_id().to_owned();
    assert_eq!(fixture.status(&id), "running");
    running.cancel(&json!({ "why": "asked" }), None).expect("cancel");
    assert_eq!(fixture.status(&id), "cancelled");
}

#[test]
fn a_context_that_fails_validation_is_recorded_failed_and_its_handler_never_runs() {
    let fixture = fixture();
    let cases: Vec<(&str, Spoil)> = vec![
        ("an empty solution id", Box::new(|r| r.intent.solution_id.clear())),
        ("parameters that are not an object", Box::new(|r| r.intent.parameters = json!([1]))),
        ("a tenant that is another constellation", Box::new(|r| r.intent.tenant = "/elsewhere.db".to_owned())),
        ("an empty tenant", Box::new(|r| r.intent.tenant.clear())),
        ("an empty session id", Box::new(|r| r.intent.session_id = Some(String::new()))),
    ];
    for (case, spoil) in cases {
        let mut request = fixture.request("test.work");
        spoil(&mut request);
        let error = fixture.registry.execute(request.clone(), Some(&fixture.db), Work::Succeed).expect_err(case);
        assert_eq!(error.code(), "EXECUTION_CONTEXT_INVALID", "{case}");
        let row = fixture.db.execution(&request.execution_id).expect("read").expect(case);
        assert_eq!(row.status, "failed", "{case}");
        assert_eq!(row.error_code.as_deref(), Some("EXECUTION_CONTEXT_INVALID"), "{case}");
        assert_eq!(fixture.transitions(&request.execution_id), ["created", "failed"], "{case}");
    }
    // A malformed execution id cannot be recorded at all.
    let mut request = fixture.request("test.work");
    request.execution_id = "exec-XYZ".to_owned();
    let error = fixture.registry.execute(request, Some(&fixture.db), Work::Succeed).expect_err("bad id");
    assert_eq!(error.code(), "EXECUTION_ID_INVALID");
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 0, "no handler ran");
}

#[test]
fn an_execution_bound_by_its_handler_records_only_once_bound() {
    let fixture = fixture();
    // A handler that refuses its input before opening a constellation: nothing is recorded.
    let mut registry = Registry::new(Arc::new(ManualClock::new(NOW)));
    let db = Arc::clone(&fixture.db);
    registry
        .register_intent(
            "test.lazy",
            "tests",
            move |context, work| {
                if matches!(work, Work::Fail) {
                    return Err(TestError("BAD_INPUT"));
                }
                context.binding().bind(&db).map_err(|_| TestError("BIND"))?;
                context.binding().bind(&db).map_err(|_| TestError("BIND_TWICE"))?;
                Ok(HandlerOutput::new(3, json!({})))
            },
            json!({}),
        )
        .expect("register");
    let refused = registry.execute(fixture.request("test.lazy"), None, Work::Fail).expect("execute");
    assert_eq!(refused.status, None);
    assert!(fixture.db.execution(&refused.execution_id).expect("read").is_none(), "nothing recorded");
    let done = registry.execute(fixture.request("test.lazy"), None, Work::Succeed).expect("execute");
    assert_eq!(done.status, Some(ExecutionStatus::Completed));
    assert_eq!(fixture.status(&done.execution_id), "completed");
}

#[test]
fn the_store_refuses_every_backward_move() {
    let fixture = fixture();
    let (completed, _, _) = fixture.run(Work::Succeed);
    let (failed, _, _) = fixture.run(Work::Fail);
    let running = fixture.registry.start(fixture.request("test.work"), &fixture.db).expect("start");
    let path = fixture.db.path().to_owned();
    let raw = rusqlite::Connection::open(&path).expect("raw");
    for statement in [
        format!("UPDATE executions SET status = 'running' WHERE execution_id = '{completed}'"),
        format!("UPDATE executions SET status = 'completed', error_code = NULL WHERE execution_id = '{failed}'"),
        format!("UPDATE executions SET status = 'created' WHERE execution_id = '{}'", running.execution_id()),
        format!("UPDATE executions SET intent_type = 'other' WHERE execution_id = '{completed}'"),
        format!("DELETE FROM executions WHERE execution_id = '{completed}'"),
        format!("UPDATE execution_log SET detail = '{{}}' WHERE execution_id = '{completed}'"),
        format!("DELETE FROM execution_log WHERE execution_id = '{completed}'"),
    ] {
        assert!(raw.execute_batch(&statement).is_err(), "the store accepted: {statement}");
    }
    // Through the store's API: a completed execution cannot be ended again.
    let end = pactum_memory::ExecutionEnd {
        status: "failed".to_owned(),
        error_code: Some("LATE".to_owned()),
        error_message: Some("late".to_owned()),
        result: None,
        session_id: None,
        at_ms: NOW,
    };
    let error = fixture.db.finish_execution(&completed, &end, &[]).expect_err("backwards");
    assert!(matches!(error, StoreError::Refused { .. }), "{error:?}");
    assert_eq!(error.code(), "TRANSITION_REFUSED");
    running.complete(&json!({}), None).expect("complete");
}

#[test]
fn an_execution_left_running_by_a_stopped_process_is_marked_interrupted() {
    #[derive(Debug)]
    struct OnlyOwnerOneLives;
    impl OwnerLiveness for OnlyOwnerOneLives {
        fn is_alive(&self, owner: &str) -> bool {
            owner == OWNER
        }
    }
    let fixture = fixture();
    let mut request = fixture.request("test.work");
    request.owner = "pid:99:99".to_owned();
    let orphan = fixture.registry.start(request, &fixture.db).expect("start");
    let orphan_id = orphan.execution_id().to_owned();
    std::mem::forget(orphan); // the process "stops": nobody ends it
    let live = fixture.registry.start(fixture.request("test.work"), &fixture.db).expect("start");
    let recovered = recover_interrupted(&fixture.db, &OnlyOwnerOneLives, "pid:2:2", NOW + 5).expect("recover");
    assert_eq!(recovered, std::slice::from_ref(&orphan_id));
    let row = fixture.db.execution(&orphan_id).expect("read").expect("recorded");
    assert_eq!((row.status.as_str(), row.error_code.as_deref()), ("failed", Some("EXECUTION_INTERRUPTED")));
    assert_eq!(fixture.status(live.execution_id()), "running", "a live owner's execution is left alone");
    // A registry with liveness recovers before it starts the next execution.
    let mut request = fixture.request("test.work");
    request.owner = "pid:98:98".to_owned();
    let second_orphan = fixture.registry.start(request, &fixture.db).expect("start");
    let second_orphan_id = second_orphan.execution_id().to_owned();
    std::mem::forget(second_orphan);
    let mut registry = Registry::new(Arc::new(ManualClock::new(NOW))).with_liveness(Arc::new(OnlyOwnerOneLives));
    registry.register_intent("test.work", "tests", handle, json!({})).expect("register");
    let executed = registry.execute(fixture.request("test.work"), Some(&fixture.db), Work::Succeed).expect("execute");
    assert_eq!(executed.status, Some(ExecutionStatus::Completed));
    assert_eq!(fixture.status(&second_orphan_id), "failed");
    live.complete(&json!({}), None).expect("complete");
}

#[test]
fn state_and_log_entries_are_kept_per_scope() {
    let fixture = fixture();
    let (execution_id, status, outcome) = fixture.run(Work::UseState);
    assert_eq!((status, outcome.expect("ok")), (Some(ExecutionStatus::Completed), 1));
    assert_eq!(fixture.db.state_value("execution", &execution_id, "step").expect("read").as_deref(), Some("1"));
    assert_eq!(fixture.db.state_value("session", "s-9", "note").expect("read").as_deref(), Some(r#"{"a":[1,2]}"#));
    let kinds: Vec<_> =
        fixture.db.execution_log(&execution_id).expect("log").into_iter().map(|e| e.entry_kind).collect();
    assert_eq!(kinds, ["transition", "transition", "checkpoint", "transition"]);
}

#[test]
fn artifacts_are_registered_with_their_producer_and_parents_and_move_forward() {
    let fixture = fixture();
    let (execution_id, status, _) = fixture.run(Work::Produce);
    assert_eq!(status, Some(ExecutionStatus::Completed));
    assert_eq!(fixture.db.execution(&execution_id).expect("read").expect("row").session_id.as_deref(), Some("s-1"));
    let artifacts = ArtifactRegistry::new(Arc::clone(&fixture.db));
    let all = artifacts.list(&ArtifactQuery::default()).expect("list");
    assert_eq!(all.len(), 2);
    let (transcript, receipt) = (&all[0], &all[1]);
    assert_eq!(transcript.artifact_type, "transcript");
    assert_eq!(receipt.artifact_type, "receipt");
    assert_eq!(receipt.parents, std::slice::from_ref(&transcript.artifact_id));
    assert_eq!(
        (receipt.produced_by_intent.as_str(), receipt.produced_by_execution.as_str()),
        ("test.work", execution_id.as_str())
    );
    assert_eq!(receipt.lifecycle, Lifecycle::Ready);
    assert_eq!(artifacts.resolve(&receipt.artifact_id).expect("resolve"), *receipt);
    let receipts = artifacts
        .list(&ArtifactQuery { artifact_type: Some("receipt".to_owned()), ..ArtifactQuery::default() })
        .expect("list");
    assert_eq!(receipts.len(), 1);
    let by_execution = artifacts
        .list(&ArtifactQuery { execution_id: Some(execution_id.clone()), ..ArtifactQuery::default() })
        .expect("list");
    assert_eq!(by_execution.len(), 2);
    assert_eq!(
        artifacts.latest_at("transcript", "stream:session:s-1").expect("find").map(|a| a.artifact_id),
        Some(transcript.artifact_id.clone())
    );
    // Lifecycle: READY → ARCHIVED → DELETED, never back.
    artifacts.set_lifecycle(&receipt.artifact_id, Lifecycle::Archived, NOW + 1).expect("archive");
    let error = artifacts.set_lifecycle(&receipt.artifact_id, Lifecycle::Ready, NOW + 2).expect_err("back");
    assert_eq!(error.code(), "TRANSITION_REFUSED");
    artifacts.set_lifecycle(&receipt.artifact_id, Lifecycle::Deleted, NOW + 3).expect("delete");
    for state in Lifecycle::ALL {
        assert!(
            artifacts.set_lifecycle(&receipt.artifact_id, state, NOW + 4).is_err(),
            "DELETED is terminal: {state:?}"
        );
    }
    let listed = artifacts
        .list(&ArtifactQuery { lifecycle: Some(Lifecycle::Deleted), ..ArtifactQuery::default() })
        .expect("list");
    assert_eq!(listed.len(), 1);
    // Bad ids.
    assert_eq!(artifacts.resolve("art-nope").expect_err("malformed").code(), "ARTIFACT_ID_INVALID");
    assert_eq!(artifacts.resolve("art-0000000000000000").expect_err("unknown").code(), "ARTIFACT_NOT_FOUND");
    assert_eq!(Lifecycle::parse("gone").expect_err("unknown").code(), "ARTIFACT_INVALID");
}

#[test]
fn artifacts_of_a_failed_handler_are_not_registered_and_bad_drafts_are_refused() {
    let fixture = fixture();
    let mut registry = Registry::new(Arc::new(ManualClock::new(NOW)));
    registry
        .register_intent(
            "test.half",
            "tests",
            |context, _| {
                let bad = context.register_artifact(ArtifactDraft::ready("Bad Type", json!({}), Vec::new()));
                assert_eq!(bad.expect_err("bad type").code(), "ARTIFACT_INVALID");
                let bad = context.register_artifact(ArtifactDraft {
                    lifecycle: Lifecycle::Archived,
                    ..ArtifactDraft::ready("x", json!({}), Vec::new())
                });
                assert!(bad.is_err(), "born archived");
                context.register_artifact(ArtifactDraft::ready("half", json!({}), Vec::new())).expect("draft");
                Err(TestError("STOPPED_HALFWAY"))
            },
            json!({}),
        )
        .expect("register");
    let executed = registry.execute(fixture.request("test.half"), Some(&fixture.db), Work::Succeed).expect("execute");
    assert_eq!(executed.status, Some(ExecutionStatus::Failed));
    assert!(ArtifactRegistry::new(Arc::clone(&fixture.db)).list(&ArtifactQuery::default()).expect("list").is_empty());
    // An artifact whose parent is unknown fails the execution instead of completing it.
    let mut registry = Registry::new(Arc::new(ManualClock::new(NOW)));
    registry
        .register_intent(
            "test.orphan",
            "tests",
            |context, _| {
                context
                    .register_artifact(
                        ArtifactDraft::ready("child", json!({}), Vec::new())
                            .with_parents(["art-00000000000000ff".to_owned()]),
                    )
                    .expect("draft");
                Ok(HandlerOutput::new(0, json!({})))
            },
            json!({}),
        )
        .expect("register");
    let executed = registry.execute(fixture.request("test.orphan"), Some(&fixture.db), Work::Succeed).expect("execute");
    assert_eq!(executed.status, Some(ExecutionStatus::Failed));
    assert_eq!(executed.record_error.expect("recorded why").code(), "NOT_FOUND");
    assert_eq!(ManualClock::new(NOW).now_ms(), NOW);
}
