//! `pactum acp` driven as an editor drives it: the real program over stdio, with the
//! `agent-client-protocol` crate's client role. Covers initialize, new, /negotiate with the
//! payment allowed and rejected, cancel while asked to pay, list, load (the replayed updates
//! equal the original ones), resume across a restart, modes, plain prompts, extension methods,
//! and malformed or unknown frames on the raw wire.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema as acp;
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{AcpAgent, AcpAgentConfig, Agent, Client, Error, ErrorCode, LineDirection, UntypedMessage};
use futures::StreamExt as _;
use futures::channel::mpsc;
use serde_json::{Value, json};

use common::Home;

type PermissionAsked = (acp::RequestPermissionRequest, Responder<acp::RequestPermissionResponse>);

/// How the test answers a payment question.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    Allow,
    Reject,
    /// Sends `session/cancel`, then answers `cancelled` as the protocol asks of clients.
    Cancel,
    /// No question is expected.
    Unexpected,
}

/// One turn's result.
struct Turn {
    stop: acp::StopReason,
    updates: Vec<acp::SessionUpdate>,
    asked: Vec<acp::RequestPermissionRequest>,
}

impl Turn {
    fn text(&self) -> String {
        self.updates
            .iter()
            .filter_map(|u| match u {
                acp::SessionUpdate::AgentMessageChunk(chunk) => match &chunk.content {
                    acp::ContentBlock::Text(text) => Some(text.text.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn tool_titles(&self) -> Vec<String> {
        self.updates
            .iter()
            .filter_map(|u| match u {
                acp::SessionUpdate::ToolCall(call) => Some(call.title.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The editor's side of one connection.
struct Editor {
    cx: ConnectionTo<Agent>,
    updates: mpsc::UnboundedReceiver<acp::SessionNotification>,
    asked: mpsc::UnboundedReceiver<PermissionAsked>,
}

impl Editor {
    async fn initialize(&self) -> Result<acp::InitializeResponse, Error> {
        self.cx
            .send_request(
                acp::InitializeRequest::new(ProtocolVersion::V1).client_info(acp::Implementation::new("tests", "1")),
            )
            .block_task()
            .await
    }

    fn drain(&mut self) -> Vec<acp::SessionUpdate> {
        let mut drained = Vec::new();
        while let Ok(notification) = self.updates.try_recv() {
            drained.push(notification.update);
        }
        drained
    }

    async fn new_session(&mut self, cwd: &Path) -> Result<(acp::SessionId, acp::NewSessionResponse), Error> {
        let response = self.cx.send_request(acp::NewSessionRequest::new(cwd.to_path_buf())).block_task().await?;
        let announced = self.updates.next().await.expect("an update after session/new");
        assert!(
            matches!(announced.update, acp::SessionUpdate::AvailableCommandsUpdate(_)),
            "the commands are announced right after session/new: {:?}",
            announced.update
        );
        Ok((response.session_id.clone(), response))
    }

    async fn prompt(&mut self, session: &acp::SessionId, text: &str, answer: Answer) -> Result<Turn, Error> {
        self.drain();
        let mut pending =
            Box::pin(self.cx.send_request(acp::PromptRequest::new(session.clone(), vec![text.into()])).block_task());
        let mut asked = Vec::new();
        let response = loop {
            tokio::select! {
                response = &mut pending => break response?,
                Some((question, responder)) = self.asked.next() => {
                    asked.push(question);
                    let outcome = match answer {
                        Answer::Allow => acp::RequestPermissionOutcome::Selected(acp::SelectedPermissionOutcome::new("allow-once")),
                        Answer::Reject => acp::RequestPermissionOutcome::Selected(acp::SelectedPermissionOutcome::new("reject-once")),
                        Answer::Cancel => {
                            self.cx.send_notification(acp::CancelNotification::new(session.clone()))?;
                            acp::RequestPermissionOutcome::Cancelled
                        }
                        Answer::Unexpected => panic!("no payment question was expected"),
                    };
                    // After a cancel the agent may already have dropped the question.
                    let _ = responder.respond(acp::RequestPermissionResponse::new(outcome));
                }
            }
        };
        Ok(Turn { stop: response.stop_reason, updates: self.drain(), asked })
    }
}

/// Starts `pactum acp` with `home` as its data home and runs `body` as the editor.
async fn with_agent<R>(home: &Home, body: impl AsyncFnOnce(Editor) -> Result<R, Error>) -> R {
    let config = AcpAgentConfig::new(env!("CARGO_BIN_EXE_pactum-under-test"))
        .arg("acp")
        .env("PACTUM_HOME", home.path().join("home").display().to_string())
        .env("RUST_LOG", "warn");
    let agent = AcpAgent::new(config).with_debug(|line, direction| {
        if direction == LineDirection::Stderr {
            eprintln!("[pactum acp] {line}");
        }
    });
    let (updates_in, updates) = mpsc::unbounded::<acp::SessionNotification>();
    let (asked_in, asked) = mpsc::unbounded::<PermissionAsked>();
    Client
        .v1()
        .name("pactum-tests")
        .on_receive_notification(
            async move |notification: acp::SessionNotification, _cx: ConnectionTo<Agent>| {
                let _ = updates_in.unbounded_send(notification);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |question: acp::RequestPermissionRequest,
                        responder: Responder<acp::RequestPermissionResponse>,
                        _cx: ConnectionTo<Agent>| {
                asked_in.unbounded_send((question, responder)).map_err(Error::into_internal_error)
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(agent, async |cx: ConnectionTo<Agent>| body(Editor { cx, updates, asked }).await)
        .await
        .expect("the editor session succeeds")
}

const NEGOTIATE: &str = "/negotiate weather.data --max-price 0.05 --currency USD --seed 7";

fn update_json(update: &acp::SessionUpdate) -> Value {
    serde_json::to_value(update).expect("serializable")
}

#[tokio::test]
async fn initialize_advertises_what_is_implemented_and_new_announces_the_commands() {
    let home = Home::new();
    with_agent(&home, async |mut editor| {
        let init = editor.initialize().await?;
        assert_eq!(init.protocol_version, ProtocolVersion::V1);
        assert!(init.agent_capabilities.load_session);
        let sessions = &init.agent_capabilities.session_capabilities;
        assert!(sessions.list.is_some() && sessions.resume.is_some() && sessions.close.is_some());
        let info = init.agent_info.expect("agent info");
        assert_eq!((info.name.as_str(), info.title.as_deref()), ("pactum", Some("Pactum")));
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

        let (_, response) = editor.new_session(home.path()).await?;
        let options = response.config_options.expect("config options");
        let mode = serde_json::to_value(&options[0]).expect("json");
        assert_eq!(
            (mode["id"].as_str(), mode["category"].as_str(), mode["currentValue"].as_str()),
            (Some("mode"), Some("mode"), Some("ask"))
        );
        Ok(())
    })
    .await;
    // Nothing is created before a session is: initialize alone touches no file.
    let bare = Home::new();
    with_agent(&bare, async |editor| editor.initialize().await.map(drop)).await;
    assert!(!bare.default_db().exists(), "initialize wrote nothing");
}

#[tokio::test]
async fn negotiate_with_the_payment_allowed_shows_every_step_and_pays_once() {
    let home = Home::new();
    let turn = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        editor.prompt(&session, NEGOTIATE, Answer::Allow).await
    })
    .await;
    assert_eq!(turn.stop, acp::StopReason::EndTurn);
    assert_eq!(turn.asked.len(), 1, "asked exactly once before paying");
    let question = serde_json::to_value(&turn.asked[0]).expect("json");
    let title = question["toolCall"]["title"].as_str().expect("title");
    assert!(title.contains("0.05 USD") && title.contains("ledger"), "names amount and rail: {title}");
    let kinds: Vec<&str> =
        question["options"].as_array().expect("options").iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["allow_once", "reject_once"]);
    assert_eq!(question["toolCall"]["rawInput"]["rail"], "ledger");

    let plans: Vec<&acp::Plan> = turn
        .updates
        .iter()
        .filter_map(|u| if let acp::SessionUpdate::Plan(plan) = u { Some(plan) } else { None })
        .collect();
    let last = plans.last().expect("a plan");
    assert_eq!(last.entries.len(), 7);
    assert!(last.entries.iter().all(|e| e.status == acp::PlanEntryStatus::Completed), "every stage done");
    let titles = turn.tool_titles();
    for expected in ["Discover providers", "Quote from", "Counter", "Policy check", "Commit", "Settle", "Receipt"] {
        assert!(titles.iter().any(|t| t.starts_with(expected)), "a {expected} tool call in {titles:#?}");
    }
    let text = turn.text();
    assert!(text.contains("completed: paid 0.05 USD"), "{text}");
    let session_id = text.split_whitespace().nth(1).expect("session id").to_owned();
    assert!(text.contains(&format!("transcript session:{session_id}")), "{text}");

    // The same constellation, seen from the command line: the receipt verifies, money moved once.
    let receipt = home.run(&["receipt", "show", &session_id]);
    assert!(receipt.status.success(), "{}", String::from_utf8_lossy(&receipt.stderr));
    let check = home.run(&["constellation", "check"]);
    assert!(check.status.success(), "{}", common::stdout(&check));
}

#[tokio::test]
async fn a_rejected_payment_aborts_with_its_failure_and_ends_the_turn() {
    let home = Home::new();
    let turn = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        editor.prompt(&session, NEGOTIATE, Answer::Reject).await
    })
    .await;
    assert_eq!(turn.stop, acp::StopReason::EndTurn);
    let text = turn.text();
    assert!(text.contains("PACT-312") && text.contains("declined to pay"), "{text}");
    assert!(turn.tool_titles().iter().any(|t| t.starts_with("Failed: PACT-312")));
    let balance = home.run(&["balance", "--json"]);
    let document: Value = serde_json::from_slice(&balance.stdout).expect("json");
    let wallet = document["accounts"].as_array().expect("accounts").iter().find(|a| a["account"] == "wallet:buyer:USD");
    assert_eq!(wallet.map(|w| w["balance_minor"].clone()), Some(json!(100_000)), "nothing was paid: {document}");
}

#[tokio::test]
async fn cancel_while_asked_to_pay_returns_cancelled_and_records_an_abort() {
    let home = Home::new();
    let (turn, after) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let turn = editor.prompt(&session, NEGOTIATE, Answer::Cancel).await?;
        // The session takes prompts again at once.
        let after = editor.prompt(&session, "/help", Answer::Unexpected).await?;
        Ok((turn, after))
    })
    .await;
    assert_eq!(turn.stop, acp::StopReason::Cancelled);
    let text = turn.text();
    assert!(text.contains("PACT-312") && text.contains("cancelled from the editor"), "{text}");
    assert_eq!(after.stop, acp::StopReason::EndTurn);
    // Every tool call ends with a final status: the withdrawn payment question is failed.
    let payment = turn.updates.iter().rev().find_map(|u| match u {
        acp::SessionUpdate::ToolCallUpdate(update) if update.tool_call_id.0.ends_with("#payment") => {
            update.fields.status
        }
        _ => None,
    });
    assert_eq!(payment, Some(acp::ToolCallStatus::Failed));
    let sessions = home.run(&["session", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&sessions.stdout).expect("json");
    let session_id = listed[0]["session_id"].as_str().expect("one session").to_owned();
    let shown = home.run(&["session", "show", &session_id, "--json"]);
    let events: Value = serde_json::from_slice(&shown.stdout).expect("json");
    let kinds: Vec<&str> =
        events["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"session.abort_requested") && kinds.contains(&"round.abort"), "{kinds:?}");
    assert!(!kinds.contains(&"payment.approval"), "a cancel is not a declined payment: {kinds:?}");
}

#[tokio::test]
async fn conversations_are_listed_loaded_as_they_were_shown_and_resumed_after_a_restart() {
    let home = Home::new();
    let cwd = home.path().to_path_buf();
    let (session, shown) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(&cwd).await?;
        let first = editor.prompt(&session, NEGOTIATE, Answer::Allow).await?;
        let second = editor.prompt(&session, "/balance", Answer::Unexpected).await?;
        // What the editor showed, with the person's own prompts where they were typed.
        let mut shown =
            vec![update_json(&acp::SessionUpdate::UserMessageChunk(acp::ContentChunk::new(NEGOTIATE.into())))];
        shown.extend(first.updates.iter().map(update_json));
        shown.push(update_json(&acp::SessionUpdate::UserMessageChunk(acp::ContentChunk::new("/balance".into()))));
        shown.extend(second.updates.iter().map(update_json));
        Ok((session, shown))
    })
    .await;

    // A new process: list, load (replayed before the answer), then an unknown id.
    with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let listed = editor.cx.send_request(acp::ListSessionsRequest::new()).block_task().await?;
        assert_eq!(listed.sessions.len(), 1);
        let info = &listed.sessions[0];
        assert_eq!((&info.session_id, info.cwd.as_path()), (&session, cwd.as_path()));
        assert_eq!(info.title.as_deref(), Some(NEGOTIATE));
        assert!(info.updated_at.is_some());
        let filtered =
            editor.cx.send_request(acp::ListSessionsRequest::new().cwd(Path::new("/elsewhere"))).block_task().await?;
        assert!(filtered.sessions.is_empty(), "the cwd filter applies");

        editor.cx.send_request(acp::LoadSessionRequest::new(session.clone(), cwd.clone())).block_task().await?;
        let replayed: Vec<Value> = editor
            .drain()
            .iter()
            .filter(|u| !matches!(u, acp::SessionUpdate::AvailableCommandsUpdate(_)))
            .map(update_json)
            .collect();
        assert_eq!(replayed, shown, "session/load replays exactly what was shown");

        let unknown = editor
            .cx
            .send_request(acp::LoadSessionRequest::new("c-0000000000000000", cwd.clone()))
            .block_task()
            .await
            .expect_err("unknown");
        assert_eq!(unknown.code, ErrorCode::RESOURCE_NOT_FOUND);
        Ok(())
    })
    .await;

    // Another process: resume (no replay) and go on; the history grows.
    with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        editor.cx.send_request(acp::ResumeSessionRequest::new(session.clone(), cwd.clone())).block_task().await?;
        let replayed = editor.drain();
        assert!(
            replayed.iter().all(|u| matches!(u, acp::SessionUpdate::AvailableCommandsUpdate(_))),
            "resume does not replay: {replayed:?}"
        );
        let turn = editor.prompt(&session, "/providers", Answer::Unexpected).await?;
        assert!(turn.text().contains("nimbus-weather"), "{}", turn.text());
        editor.cx.send_request(acp::CloseSessionRequest::new(session.clone())).block_task().await?;
        let closed =
            editor.cx.send_request(acp::PromptRequest::new(session.clone(), vec!["/help".into()])).block_task().await;
        assert_eq!(closed.expect_err("closed").code, ErrorCode::RESOURCE_NOT_FOUND);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_project_with_a_pactum_directory_uses_its_own_constellation() {
    let home = Home::new();
    let project = home.path().join("project");
    std::fs::create_dir_all(project.join(".pactum")).expect("project");
    with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(&project).await?;
        editor.prompt(&session, NEGOTIATE, Answer::Allow).await.map(drop)
    })
    .await;
    assert!(project.join(".pactum/constellation.db").exists());
    assert!(!home.default_db().exists(), "the default constellation was not used");
    let sessions = home.run(&[
        "--constellation",
        &project.join(".pactum/constellation.db").display().to_string(),
        "session",
        "list",
        "--json",
    ]);
    let listed: Value = serde_json::from_slice(&sessions.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn auto_mode_pays_without_asking_and_read_only_never_pays() {
    let home = Home::new();
    let (auto, read_only) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let set = |value: &str| {
            acp::SetSessionConfigOptionRequest::new(
                session.clone(),
                "mode",
                acp::SessionConfigOptionValue::value_id(value.to_owned()),
            )
        };
        let options = editor.cx.send_request(set("auto")).block_task().await?;
        assert_eq!(serde_json::to_value(&options.config_options[0]).expect("json")["currentValue"], "auto");
        let auto = editor.prompt(&session, NEGOTIATE, Answer::Unexpected).await?;
        editor.cx.send_request(set("read-only")).block_task().await?;
        let read_only = editor
            .prompt(
                &session,
                "/negotiate weather.data --max-price 0.05 --currency USD --seed 7 --yes",
                Answer::Unexpected,
            )
            .await?;
        let bad = editor.cx.send_request(set("sometimes")).block_task().await.expect_err("bad value");
        assert_eq!(bad.code, ErrorCode::INVALID_PARAMS);
        Ok((auto, read_only))
    })
    .await;
    assert!(auto.text().contains("completed: paid"), "{}", auto.text());
    assert!(read_only.text().contains("nothing was paid"), "{}", read_only.text());
    assert!(read_only.text().contains("PACT-312"), "{}", read_only.text());
}

#[tokio::test]
async fn plain_prompts_and_unknown_commands_get_answers() {
    let home = Home::new();
    let (plain, unknown, vague) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let plain = editor
            .prompt(&session, "buy weather data for at most 5 cents within 800 ms, seed 7", Answer::Allow)
            .await?;
        let unknown = editor.prompt(&session, "/frobnicate", Answer::Unexpected).await?;
        let vague = editor.prompt(&session, "make me rich", Answer::Unexpected).await?;
        Ok((plain, unknown, vague))
    })
    .await;
    assert_eq!(plain.asked.len(), 1);
    assert!(plain.text().contains("session s-"), "{}", plain.text());
    for turn in [&unknown, &vague] {
        assert_eq!(turn.stop, acp::StopReason::EndTurn);
        assert!(turn.text().contains("/negotiate") && turn.text().contains("weather data"), "{}", turn.text());
    }
}

#[tokio::test]
async fn extension_methods_return_structured_json() {
    let home = Home::new();
    with_agent(&home, async |editor| {
        editor.initialize().await?;
        let call = async |method: &str, params: Value| -> Result<Value, Error> {
            editor.cx.send_request(UntypedMessage::new(method, params)?).block_task().await
        };
        let negotiated = call(
            "_pactum/negotiate",
            json!({"intentType": "weather.data", "maxPrice": "0.05", "currency": "USD", "approve": true, "seed": 7}),
        )
        .await?;
        assert_eq!(negotiated["phase"], "completed");
        let session = negotiated["session_id"].as_str().expect("id").to_owned();
        let shown = call("_pactum/session/get", json!({"sessionId": session})).await?;
        assert_eq!(shown["phase"], "completed");
        let transcript = call("_pactum/transcript/get", json!({"transcriptId": format!("session:{session}")})).await?;
        assert_eq!(transcript["events"], negotiated["events"]);
        let verified = call("_pactum/transcript/verify", json!({"transcriptId": format!("session:{session}")})).await?;
        assert_eq!(verified["valid"], true);
        let receipt = call("_pactum/receipt/get", json!({"sessionId": session})).await?;
        assert_eq!(receipt["receipt_id"], format!("rcpt-{session}"));
        let unpaid = call(
            "_pactum/negotiate",
            json!({"intentType": "weather.data", "maxPrice": "0.05", "currency": "USD", "approve": false, "seed": 7}),
        )
        .await?;
        assert_eq!(unpaid["failure"]["code"], "PACT-312", "no consent, no payment: {unpaid}");

        let missing = call("_pactum/receipt/get", json!({"sessionId": "s-0"})).await.expect_err("missing");
        assert_eq!(missing.code, ErrorCode::RESOURCE_NOT_FOUND);
        let bad = call("_pactum/negotiate", json!({"intentType": "weather.data"})).await.expect_err("bad params");
        assert_eq!(bad.code, ErrorCode::INVALID_PARAMS);
        let negative = call(
            "_pactum/negotiate",
            json!({"intentType": "weather.data", "maxPrice": "-1", "currency": "USD", "approve": true}),
        )
        .await
        .expect_err("negative");
        assert_eq!(
            (negative.code, negative.data.map(|d| d["code"].clone())),
            (ErrorCode::INVALID_PARAMS, Some(json!("AMOUNT_INVALID")))
        );
        let unknown = call("_pactum/nothing", json!({})).await.expect_err("unknown");
        assert_eq!(unknown.code, ErrorCode::METHOD_NOT_FOUND);
        Ok(())
    })
    .await;
}

/// The raw wire: what a buggy client might send.
struct Wire {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl Wire {
    fn start(home: &Home) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pactum-under-test"))
            .arg("acp")
            .env("PACTUM_HOME", home.path().join("home"))
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, input, output }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.input, "{line}").expect("write");
        self.input.flush().expect("flush");
    }

    /// The next frame that answers a request (notifications are skipped).
    fn answer(&mut self) -> Value {
        loop {
            let mut line = String::new();
            assert!(self.output.read_line(&mut line).expect("read") > 0, "the agent closed stdout");
            let frame: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carries JSON frames only: {line:?}: {e}"));
            if frame.get("method").is_none() {
                return frame;
            }
        }
    }
}

#[test]
fn malformed_and_unknown_frames_get_errors_and_the_process_stays_up_until_stdin_closes() {
    let home = Home::new();
    let mut wire = Wire::start(&home);
    wire.send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1,"clientCapabilities":{}}}"#,
    );
    assert_eq!(wire.answer()["result"]["protocolVersion"], 1);
    wire.send("this is not json");
    assert_eq!(wire.answer()["error"]["code"], -32700);
    wire.input.write_all(b"\xff\xfe{\"not\": utf-8}\n").expect("write");
    wire.input.flush().expect("flush");
    let undecodable = wire.answer();
    assert_eq!(undecodable["error"]["code"], -32700, "a line that is not UTF-8 is a parse error: {undecodable}");
    wire.send(r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#);
    let unknown = wire.answer();
    assert_eq!((unknown["id"].clone(), unknown["error"]["code"].clone()), (json!(2), json!(-32601)));
    wire.send(r#"{"jsonrpc":"2.0","id":3,"method":"session/new","params":{"cwd":42}}"#);
    let bad = wire.answer();
    assert_eq!(bad["error"]["code"], -32602);
    assert!(bad["error"]["data"].to_string().contains("cwd"), "says what is wrong: {bad}");
    wire.send(r#"{"jsonrpc":"2.0","id":4,"method":"session/new","params":{"cwd":"relative/dir","mcpServers":[]}}"#);
    let relative = wire.answer();
    assert_eq!(relative["error"]["code"], -32602);
    assert!(relative["error"]["data"].to_string().contains("absolute"), "{relative}");
    wire.send(r#"{"jsonrpc":"2.0","id":5,"method":"session/prompt","params":{"sessionId":"c-unknown","prompt":[]}}"#);
    let missing = wire.answer();
    assert_eq!(
        (missing["error"]["code"].clone(), missing["error"]["data"]["sessionId"].clone()),
        (json!(-32002), json!("c-unknown"))
    );
    wire.send(r#"{"jsonrpc":"2.0","id":6,"method":"session/list","params":{"cursor":"garbage"}}"#);
    assert_eq!(wire.answer()["error"]["code"], -32602);
    // Still up: a real request works after all of that.
    wire.send(r#"{"jsonrpc":"2.0","id":7,"method":"session/new","params":{"cwd":"/","mcpServers":[]}}"#);
    assert!(wire.answer()["result"]["sessionId"].is_string());
    drop(wire.input);
    let status = wire.child.wait().expect("exit");
    assert!(status.success(), "exits cleanly on stdin EOF: {status}");
}

/// A frame longer than `FRAME_BYTES_MAX` (8 MiB) is read to its end and dropped, answered with a
/// parse error that names the limit; the frames after it are read as usual.
#[test]
fn a_frame_longer_than_the_limit_is_a_parse_error_and_the_next_frame_is_served() {
    let home = Home::new();
    let mut wire = Wire::start(&home);
    let mut huge = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"padding":""#.to_vec();
    huge.resize(9 * 1024 * 1024, b'x');
    huge.extend_from_slice(b"\"}}\n");
    // The answer is written once the whole frame is read: it fits in the pipe.
    wire.input.write_all(&huge).expect("write");
    wire.input.flush().expect("flush");
    let answer = wire.answer();
    assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (Value::Null, json!(-32700)), "{answer}");
    assert!(answer.to_string().contains("limit of 8388608 bytes"), "names the limit: {answer}");
    wire.send(
        r#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":1,"clientCapabilities":{}}}"#,
    );
    let answer = wire.answer();
    assert_eq!((answer["id"].clone(), answer["result"]["protocolVersion"].clone()), (json!(2), json!(1)));
    drop(wire.input);
    assert!(wire.child.wait().expect("exit").success());
}

#[tokio::test]
async fn long_prompts_are_kept_within_the_limits() {
    let home = Home::new();
    // 61 four-byte characters: 80 characters of title would be 259 bytes.
    let emoji = format!("buy weather data for $0.05 seed 7 {}", "😀".repeat(61));
    let huge = "x".repeat(70 * 1024);
    let (paid, refused, session) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let paid = editor.prompt(&session, &emoji, Answer::Allow).await?;
        let refused = editor.prompt(&session, &huge, Answer::Unexpected).await?;
        Ok((paid, refused, session))
    })
    .await;
    assert!(paid.text().contains("completed: paid"), "{}", paid.text());
    assert_eq!(refused.stop, acp::StopReason::EndTurn);
    assert!(refused.text().contains("65536 bytes"), "{}", refused.text());
    let listed = with_agent(&home, async |editor| {
        editor.initialize().await?;
        editor.cx.send_request(acp::ListSessionsRequest::new()).block_task().await
    })
    .await;
    let info = listed.sessions.iter().find(|s| s.session_id == session).expect("listed");
    let title = info.title.as_deref().expect("a title");
    assert!(title.starts_with("buy weather data") && title.len() <= 256, "{title}");
}

/// The `diff` contents of a turn's tool calls and updates, as JSON.
fn diffs(turn: &Turn) -> Vec<Value> {
    turn.updates
        .iter()
        .map(update_json)
        .filter_map(|update| update["content"].as_array().cloned())
        .flatten()
        .filter(|content| content["type"] == "diff")
        .collect()
}

#[tokio::test]
async fn memory_edits_and_diffs_are_diff_tool_calls_and_a_rollback_asks_first() {
    let home = Home::new();
    let (set, diff, declined, rolled, read_only) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let set = editor.prompt(&session, "/memory set scratchpad first", Answer::Unexpected).await?;
        editor.prompt(&session, "/memory append scratchpad second", Answer::Unexpected).await?;
        let diff = editor.prompt(&session, "/memory diff scratchpad 2 3", Answer::Unexpected).await?;
        let declined = editor.prompt(&session, "/memory rollback scratchpad 2", Answer::Reject).await?;
        let rolled = editor.prompt(&session, "/memory rollback scratchpad 2", Answer::Allow).await?;
        let mode = acp::SetSessionConfigOptionRequest::new(
            session.clone(),
            "mode",
            acp::SessionConfigOptionValue::value_id("read-only".to_owned()),
        );
        editor.cx.send_request(mode).block_task().await?;
        let read_only = editor.prompt(&session, "/memory set scratchpad nope", Answer::Unexpected).await?;

        let call = async |method: &str, params: Value| -> Result<Value, Error> {
            editor.cx.send_request(UntypedMessage::new(method, params)?).block_task().await
        };
        let log = call("_pactum/memory/log", json!({"label": "scratchpad"})).await?;
        let ops: Vec<&str> =
            log["versions"].as_array().expect("versions").iter().map(|v| v["op"].as_str().expect("op")).collect();
        assert_eq!(ops, ["rollback", "append", "set", "create"]);
        let shown = call("_pactum/memory/show", json!({"label": "scratchpad", "version": 3})).await?;
        assert_eq!(shown["content"], "first\nsecond");
        let written = call("_pactum/memory/append", json!({"label": "tasks", "text": "buy storage"})).await?;
        assert_eq!(written["version"]["version"], 2);
        let invalid = call("_pactum/memory/set", json!({"label": "preferences", "text": "{\"default_strategy\": 1}"}))
            .await
            .expect_err("invalid");
        assert_eq!(
            (invalid.code, invalid.data.map(|d| d["code"].clone())),
            (ErrorCode::INVALID_PARAMS, Some(json!("MEMORY_TEMPLATE_INVALID")))
        );
        let missing = call("_pactum/memory/show", json!({"label": "nope"})).await.expect_err("missing");
        assert_eq!(missing.code, ErrorCode::RESOURCE_NOT_FOUND);
        // `-` would read stdin, which carries the protocol: refused at once, never a hang.
        let dash = call("_pactum/memory/archive", json!({"text": "-"})).await.expect_err("no stdin");
        assert_eq!(dash.code, ErrorCode::INVALID_PARAMS);
        let exported = call("_pactum/memory/export", json!({"label": "scratchpad"})).await?;
        assert_eq!(exported["versions"].as_array().map(Vec::len), Some(4));
        Ok((set, diff, declined, rolled, read_only))
    })
    .await;
    let shown = diffs(&set);
    assert_eq!(shown.last().expect("a diff")["newText"], "first");
    assert_eq!(shown.last().expect("a diff")["oldText"], "");
    assert!(shown[0]["path"].as_str().expect("path").ends_with("default.memory/buyer/scratchpad.md"), "{shown:?}");
    let shown = diffs(&diff);
    assert_eq!((shown[0]["oldText"].as_str(), shown[0]["newText"].as_str()), (Some("first"), Some("first\nsecond")));
    assert_eq!(declined.asked.len(), 1, "a rollback asks first");
    assert!(declined.text().contains("was not rolled back"), "{}", declined.text());
    assert_eq!(rolled.asked.len(), 1);
    assert!(rolled.text().contains("scratchpad is now version 4"), "{}", rolled.text());
    assert_eq!(diffs(&rolled).last().expect("a diff")["newText"], "first");
    assert!(read_only.text().contains("read-only"), "{}", read_only.text());
    assert!(diffs(&read_only).is_empty());
}

#[tokio::test]
async fn a_plain_prompt_without_a_price_uses_the_preferences() {
    let home = Home::new();
    let (before, after) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let before = editor.prompt(&session, "buy weather data, seed 7", Answer::Unexpected).await?;
        let preferences = r#"/memory set preferences '{"default_max_price_minor": 6, "default_currency": "USD"}'"#;
        editor.prompt(&session, preferences, Answer::Unexpected).await?;
        let after = editor.prompt(&session, "buy weather data, seed 7", Answer::Allow).await?;
        Ok((before, after))
    })
    .await;
    assert!(
        before.text().contains("no maximum price") && before.text().contains("/memory set preferences"),
        "{}",
        before.text()
    );
    assert_eq!(after.asked.len(), 1);
    assert!(after.text().contains("completed: paid"), "{}", after.text());
}

#[tokio::test]
async fn negotiations_in_a_turn_are_executions_whose_artifacts_the_extension_methods_resolve() {
    let home = Home::new();
    let (turn, receipts, status, resolved, errors) = with_agent(&home, async |mut editor| {
        editor.initialize().await?;
        let (session, _) = editor.new_session(home.path()).await?;
        let turn = editor.prompt(&session, NEGOTIATE, Answer::Allow).await?;
        editor.prompt(&session, "/memory set scratchpad noted", Answer::Unexpected).await?;
        let call = async |method: &str, params: Value| -> Result<Value, Error> {
            editor.cx.send_request(UntypedMessage::new(method, params)?).block_task().await
        };
        let receipts = call("_pactum/artifact/list", json!({"type": "receipt"})).await?;
        let execution_id =
            receipts["artifacts"][0]["produced_by"]["execution_id"].as_str().unwrap_or_default().to_owned();
        let status = call("_pactum/execution/status", json!({"executionId": execution_id})).await?;
        let artifact_id = receipts["artifacts"][0]["artifact_id"].as_str().unwrap_or_default().to_owned();
        let resolved = call("_pactum/artifact/resolve", json!({"artifact_id": artifact_id})).await?;
        let mut errors = Vec::new();
        for (method, params) in [
            ("_pactum/execution/status", json!({"executionId": "nope"})),
            ("_pactum/execution/status", json!({"executionId": "exec-0000000000000000"})),
            ("_pactum/artifact/resolve", json!({"artifactId": "art-0000000000000000"})),
            ("_pactum/artifact/list", json!({"state": "gone"})),
        ] {
            let error = call(method, params).await.expect_err("refused");
            errors.push((error.code, error.data.map(|d| d["code"].clone()).unwrap_or_default()));
        }
        Ok((turn, receipts, status, resolved, errors))
    })
    .await;
    assert_eq!(turn.stop, acp::StopReason::EndTurn);
    let session_id = turn.text().split_whitespace().nth(1).expect("session id").to_owned();
    let receipt = &receipts["artifacts"][0];
    assert_eq!(receipts["artifacts"].as_array().map(Vec::len), Some(1), "{receipts}");
    assert_eq!(receipt["produced_by"]["intent_type"], "negotiate");
    assert_eq!(receipt["semantic_descriptor"]["session_id"], session_id.as_str());
    assert_eq!(status["status"], "completed");
    assert_eq!(status["session_id"], session_id.as_str());
    assert!(status["solution_id"].as_str().is_some_and(|s| s.starts_with("acp:")), "{status}");
    assert_eq!(&resolved, receipt);
    assert_eq!(
        errors,
        [
            (ErrorCode::INVALID_PARAMS, json!("EXECUTION_ID_INVALID")),
            (ErrorCode::RESOURCE_NOT_FOUND, json!("EXECUTION_NOT_FOUND")),
            (ErrorCode::RESOURCE_NOT_FOUND, json!("ARTIFACT_NOT_FOUND")),
            (ErrorCode::INVALID_PARAMS, json!("ARTIFACT_INVALID")),
        ]
    );
    // The command line shows the same documents.
    let listed = home.run(&["artifact", "list", "--type", "receipt", "--json"]);
    assert_eq!(common::json(&listed), receipts);
    let execution_id = receipt["produced_by"]["execution_id"].as_str().expect("id");
    let shown = home.run(&["execution", "show", execution_id, "--json"]);
    assert_eq!(common::json(&shown), status);
    // A memory edit from the editor is an execution of its own.
    let listed = common::json(&home.run(&["execution", "list", "--json"]));
    let edit = listed["executions"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["intent"]["intent_type"] == "memory.set"))
        .expect("a memory.set execution")
        .clone();
    assert_eq!(
        (edit["status"].as_str(), edit["solution_id"].as_str()),
        (Some("completed"), status["solution_id"].as_str())
    );
}
