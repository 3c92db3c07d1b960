//! ACP frames: one Pactum agent (`pactum_agent::serve_acp_lines`, the server `pactum acp` runs)
//! lives for the whole run on a temporary constellation, initialised and with one session open.
//! Each input is sent as one frame (newlines made spaces; `$SESSION` becomes the open session's
//! id, so prompts and session methods reach a real conversation; `-o` in any string becomes
//! `-q`, so no slash command writes a file). After every frame the agent
//! must still answer a request of the harness's own (`session/resume` of its session, which also
//! attaches it again if the frame closed it) within `ANSWER_TIMEOUT`: a frame that ends the
//! connection, panics the agent or stalls its reading fails the run.

#![no_main]

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// How long the agent may take to answer the harness's check after a frame.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

struct Agent {
    frames: tokio::sync::mpsc::UnboundedSender<String>,
    answers: Receiver<String>,
    session_id: String,
    next_check: u64,
    directory: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let options = pactum_agent::AcpOptions {
            constellation: Some(directory.path().join("constellation.db").display().to_string()),
            directory: None,
        };
        let (frames, incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (answer_sender, answers) = std::sync::mpsc::channel::<String>();
        let incoming = futures::stream::unfold(incoming, |mut receiver| async move {
            receiver.recv().await.map(|line| (Ok(line), receiver))
        });
        let outgoing = futures::sink::unfold(answer_sender, |sender, line: String| async move {
            sender.send(line).map_err(|_| std::io::Error::other("the harness has gone"))?;
            Ok::<_, std::io::Error>(sender)
        });
        std::thread::Builder::new()
            .name("acp-agent".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                let result = runtime.block_on(pactum_agent::serve_acp_lines(options, outgoing, incoming));
                panic!("the agent stopped serving: {result:?}");
            })
            .expect("the agent thread");
        let mut agent = Self { frames, answers, session_id: String::new(), next_check: 0, directory };
        let initialize = json!({"jsonrpc": "2.0", "id": "fuzz-init", "method": "initialize",
            "params": {"protocolVersion": 1, "clientCapabilities": {}}});
        agent.request(&initialize.to_string(), "fuzz-init").expect("initialize is answered");
        let cwd = agent.directory.path().display().to_string();
        let new_session = json!({"jsonrpc": "2.0", "id": "fuzz-session", "method": "session/new",
            "params": {"cwd": cwd, "mcpServers": []}});
        let answer = agent.request(&new_session.to_string(), "fuzz-session").expect("session/new is answered");
        agent.session_id = answer["result"]["sessionId"].as_str().expect("a session id").to_owned();
        agent
    }

    /// Sends `frame` and waits for the answer to `id`, answering the agent's own requests
    /// (permission questions) with a cancellation on the way.
    fn request(&self, frame: &str, id: &str) -> Result<Value, String> {
        self.frames.send(frame.to_owned()).map_err(|_| "the agent stopped reading".to_owned())?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.answers.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => return Err(format!("no answer to {id} within {ANSWER_TIMEOUT:?}")),
                Err(RecvTimeoutError::Disconnected) => return Err("the agent stopped writing".to_owned()),
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                return Err(format!("the agent wrote a frame that is not JSON: {line}"));
            };
            if message.get("method").is_some()
                && let Some(request_id) = message.get("id")
            {
                let answer = json!({"jsonrpc": "2.0", "id": request_id,
                    "result": {"outcome": {"outcome": "cancelled"}}});
                let _ = self.frames.send(answer.to_string());
                continue;
            }
            if message.get("id").and_then(Value::as_str) == Some(id) && message.get("method").is_none() {
                return Ok(message);
            }
        }
    }
}

/// Turns `-o` into `-q` in every string and key; true if anything changed.
fn defuse(value: &mut Value) -> bool {
    match value {
        Value::String(text) if text.contains("-o") => {
            *text = text.replace("-o", "-q");
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| defuse(item) | changed),
        Value::Object(members) => {
            let before = members.len();
            let entries: Vec<(String, Value)> = std::mem::take(members).into_iter().collect();
            let mut changed = false;
            for (key, mut item) in entries {
                changed |= defuse(&mut item) | key.contains("-o");
                members.insert(key.replace("-o", "-q"), item);
            }
            changed || members.len() != before
        }
        _ => false,
    }
}

fn agent() -> &'static Mutex<Agent> {
    static AGENT: OnceLock<Mutex<Agent>> = OnceLock::new();
    AGENT.get_or_init(|| Mutex::new(Agent::start()))
}

fuzz_target!(|bytes: &[u8]| {
    let mut agent = agent().lock().unwrap_or_else(PoisonError::into_inner);
    // The stdio transport turns a line that is not UTF-8 into text that is not JSON; lossy
    // decoding reaches the same parse error.
    let mut frame = String::from_utf8_lossy(bytes).replace(['\n', '\r'], " ");
    frame = frame.replace("$SESSION", &agent.session_id);
    // No file is written outside the temporary directory: `--out`/`-o` are the options of the
    // slash commands that name a file to write, so they are defused in every string of the frame
    // as the agent will decode it (escapes included).
    if let Ok(mut value) = serde_json::from_str::<Value>(&frame)
        && defuse(&mut value)
    {
        frame = value.to_string();
    }
    agent.frames.send(frame).expect("the agent reads frames");
    agent.next_check += 1;
    let id = format!("fuzz-check-{}", agent.next_check);
    // `session/resume` also attaches the harness's session again if the frame closed it.
    let cwd = agent.directory.path().display().to_string();
    let check = json!({"jsonrpc": "2.0", "id": id, "method": "session/resume",
        "params": {"sessionId": agent.session_id, "cwd": cwd}});
    if let Err(problem) = agent.request(&check.to_string(), &id) {
        panic!("after the frame {:?}: {problem}", String::from_utf8_lossy(bytes));
    }
});
