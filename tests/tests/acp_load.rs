//! Load: 100 ACP sessions at once in one `pactum acp` process, each running negotiations turn
//! after turn, every payment question answered by the editor. Checks that no request fails,
//! that nothing of one session reaches another (updates, payment questions, negotiation ids,
//! receipts), that every negotiation is recorded and the constellation checks out, and that the
//! process's peak memory stays within a bound.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use common::Home;

const SESSIONS: usize = 100;
const TURNS_PER_SESSION: usize = 3;
/// The process's peak resident memory may not pass this. An idle agent takes about 10 MiB; each
/// session in flight holds a negotiation's state and its pending frames, a few hundred KiB.
const PEAK_RSS_MAX_KIB: u64 = 256 * 1024;

/// Three providers that never fail (the negotiation benchmark's): every turn negotiates to a
/// payment, so every turn asks the editor once.
const DIRECTORY: &str = include_str!("../../runtime/benches/bench-directory.toml");

struct Agent {
    child: Child,
    input: ChildStdin,
    frames: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Agent {
    fn spawn(home: &Home) -> Self {
        let directory = home.write_file("directory.toml", DIRECTORY.as_bytes());
        let mut child = home
            .command()
            .arg("--directory")
            .arg(directory)
            .arg("acp")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pactum acp");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, frames) = mpsc::channel();
        std::thread::spawn(move || {
            for line in output.lines() {
                let Ok(line) = line else { return };
                let frame: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
                if sender.send(frame).is_err() {
                    return;
                }
            }
        });
        Self { child, input, frames, next_id: 1 }
    }

    fn send(&mut self, frame: &Value) {
        writeln!(self.input, "{frame}").expect("write a frame");
        self.input.flush().expect("flush");
    }

    /// Sends a request and returns its id.
    fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    fn next_frame(&self) -> Value {
        self.frames.recv_timeout(std::time::Duration::from_secs(300)).expect("the agent answers")
    }

    /// Waits for the response to request `id` (no other frame may come in between).
    fn response(&self, id: u64) -> Value {
        let frame = self.next_frame();
        assert_eq!(frame["id"], id, "{frame}");
        assert!(frame.get("error").is_none(), "{frame}");
        frame["result"].clone()
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// What one ACP session saw.
#[derive(Default)]
struct Seen {
    /// The prompt request in flight and the turns finished.
    turn: Option<u64>,
    turns: usize,
    questions: usize,
    /// Whether the turn in flight has said anything yet.
    started: bool,
    text: String,
}

fn prompt(agent: &mut Agent, session: &str, turn: usize) -> u64 {
    // Each session its own price cap, so a receipt or an amount from another session shows.
    let text = format!("/negotiate bench.item --max-price 0.85 --currency USD --seed {}", seed(session, turn));
    agent.request("session/prompt", json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}))
}

/// A seed of its own for every turn of every session (sessions are told apart by their ids).
fn seed(session: &str, turn: usize) -> u64 {
    let digits: String = session.chars().filter(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits[digits.len().saturating_sub(12)..], 16).unwrap_or(0) * 10 + turn as u64
}

#[test]
fn a_hundred_sessions_negotiate_at_once_in_one_agent_without_errors_or_leaks() {
    let home = Home::new();
    let cwd = home.path().to_path_buf();
    let mut agent = Agent::spawn(&home);
    let id = agent.request("initialize", json!({"protocolVersion": 1, "clientCapabilities": {}}));
    agent.response(id);

    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for _ in 0..SESSIONS {
        let id = agent.request("session/new", json!({"cwd": cwd, "mcpServers": []}));
        // session/new's answer, then its commands announced.
        let mut session = None;
        while session.is_none() {
            let frame = agent.next_frame();
            if frame["id"] == id {
                assert!(frame.get("error").is_none(), "{frame}");
                session = frame["result"]["sessionId"].as_str().map(str::to_owned);
            } else {
                assert_eq!(frame["method"], "session/update", "{frame}");
            }
        }
        let session = session.expect("a session id");
        assert!(seen.insert(session, Seen::default()).is_none(), "session ids are unique");
    }

    // Every session's first turn at once; each next turn as soon as the last is answered.
    let mut by_request: BTreeMap<u64, String> = BTreeMap::new();
    let sessions: Vec<String> = seen.keys().cloned().collect();
    for session in &sessions {
        let id = prompt(&mut agent, session, 0);
        by_request.insert(id, session.clone());
        seen.get_mut(session).expect("session").turn = Some(id);
    }
    let mut finished = 0;
    // How many turns were under way at once (started to answer, not finished).
    let (mut under_way, mut most_under_way) = (0_usize, 0_usize);
    while finished < SESSIONS * TURNS_PER_SESSION {
        let frame = agent.next_frame();
        match frame["method"].as_str() {
            Some("session/update") => {
                let session = frame["params"]["sessionId"].as_str().expect("sessionId");
                let state =
                    seen.get_mut(session).unwrap_or_else(|| panic!("an update for an unknown session: {frame}"));
                assert!(state.turn.is_some(), "an update for a session with no turn in flight: {frame}");
                if !state.started {
                    state.started = true;
                    under_way += 1;
                    most_under_way = most_under_way.max(under_way);
                }
                let update = &frame["params"]["update"];
                if update["sessionUpdate"] == "agent_message_chunk" {
                    state.text.push_str(update["content"]["text"].as_str().unwrap_or_default());
                }
            }
            Some("session/request_permission") => {
                let session = frame["params"]["sessionId"].as_str().expect("sessionId");
                let state =
                    seen.get_mut(session).unwrap_or_else(|| panic!("a question for an unknown session: {frame}"));
                assert!(state.turn.is_some(), "a question for a session with no turn in flight: {frame}");
                state.questions += 1;
                let answer = json!({"outcome": {"outcome": "selected", "optionId": "allow-once"}});
                agent.send(&json!({"jsonrpc": "2.0", "id": frame["id"], "result": answer}));
            }
            Some(other) => panic!("an unexpected request or notification {other}: {frame}"),
            None => {
                assert!(frame.get("error").is_none(), "a request failed: {frame}");
                let id = frame["id"].as_u64().expect("a response id");
                let session = by_request.remove(&id).unwrap_or_else(|| panic!("a response to no request: {frame}"));
                assert_eq!(frame["result"]["stopReason"], "end_turn", "{frame}");
                finished += 1;
                let state = seen.get_mut(&session).expect("session");
                assert_eq!(state.turn, Some(id));
                state.turns += 1;
                state.turn = None;
                if std::mem::take(&mut state.started) {
                    under_way -= 1;
                }
                if state.turns < TURNS_PER_SESSION {
                    let turns = state.turns;
                    let next = prompt(&mut agent, &session, turns);
                    by_request.insert(next, session.clone());
                    seen.get_mut(&session).expect("session").turn = Some(next);
                }
            }
        }
    }
    let peak = agent.peak_rss_kib();

    // Each ACP session paid once per turn, and names only its own negotiations: the ids of the
    // negotiations every session reports are its own and no other's.
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    for (session, state) in &seen {
        assert_eq!((state.turns, state.questions), (TURNS_PER_SESSION, TURNS_PER_SESSION), "{session}: {}", state.text);
        let ids = negotiation_ids(&state.text);
        assert_eq!(ids.len(), TURNS_PER_SESSION, "{session} names its negotiations: {}", state.text);
        for id in ids {
            if let Some(other) = owner_of.insert(id.clone(), session.clone()) {
                panic!("negotiation {id} is named by {other} and {session}");
            }
        }
    }
    drop(agent.input);
    let status = agent.child.wait().expect("wait");
    assert!(status.success(), "pactum acp exited with {status}");

    // Every negotiation is recorded, completed, and checks out.
    let db = cwd.join(".pactum").join("constellation.db");
    let db = if db.exists() { db } else { home.default_db() };
    let output = home.run(&["--constellation", &db.display().to_string(), "session", "list", "--json"]);
    common::assert_ok(&output);
    let listed = common::json(&output);
    let sessions = listed.as_array().or_else(|| listed["sessions"].as_array()).expect("a list of sessions");
    let completed: BTreeSet<&str> =
        sessions.iter().filter(|s| s["phase"] == "completed").filter_map(|s| s["session_id"].as_str()).collect();
    assert_eq!(completed.len(), SESSIONS * TURNS_PER_SESSION, "{listed}");
    assert_eq!(completed, owner_of.keys().map(String::as_str).collect(), "the sessions named are the ones recorded");
    let check = home.run(&["--constellation", &db.display().to_string(), "constellation", "check"]);
    common::assert_ok(&check);

    eprintln!(
        "peak resident memory of pactum acp: {} MiB; at most {most_under_way} turns under way at once",
        peak / 1024
    );
    // The sessions really ran side by side: their turns overlapped.
    assert!(most_under_way > SESSIONS / 2, "at most {most_under_way} turns were under way at once");
    assert!(peak > 0 && peak <= PEAK_RSS_MAX_KIB, "peak resident memory {peak} KiB, bound {PEAK_RSS_MAX_KIB} KiB");
}

/// The negotiation ids (`s-` and hex digits) a session's messages name, each once.
fn negotiation_ids(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.len() > 2 && word.starts_with("s-") && word[2..].chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}
