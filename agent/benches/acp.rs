//! `pactum acp` as an editor sees it: the real binary, spawned and driven over stdio with
//! newline-delimited JSON-RPC.
//!
//! `cargo bench -p pactum --bench acp`
//!
//! Cases:
//! - spawn → `initialize` answered (a new process each time);
//! - `session/new` on an existing constellation (the first in a new process: it opens the file);
//! - a full `/negotiate` turn, the payment allowed (one process, one conversation);
//! - `session/cancel` while the payment question is open → the turn answered `cancelled`;
//! - resident memory of an idle agent after `session/new`, and after the negotiation turns.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SPAWNS: usize = 60;
const NEW_SESSIONS: usize = 40;
const TURNS: usize = 100;
const CANCELS: usize = 30;
const NEGOTIATE: &str = "/negotiate bench.item --max-price 0.85 --currency USD";

/// The negotiation benchmark's directory (runtime/benches/negotiation.rs): three providers that
/// never fail, so every turn negotiates five rounds and asks once before paying.
const DIRECTORY: &str = include_str!("../../runtime/benches/bench-directory.toml");

struct Agent {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
    /// The agent's last message.
    said: String,
}

impl Agent {
    fn spawn(home: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pactum"))
            .arg("--directory")
            .arg(home.with_file_name("directory.toml"))
            .arg("acp")
            .env("PACTUM_HOME", home)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Self { child, input, output, next_id: 1, said: String::new() }
    }

    fn send(&mut self, frame: &Value) {
        writeln!(self.input, "{frame}").unwrap();
        self.input.flush().unwrap();
    }

    /// Sends a request; answers payment questions with `answer`; returns the response. With
    /// `cancel_on_question`, a question is answered by `session/cancel` instead.
    fn request(&mut self, method: &str, params: Value, cancel_on_question: Option<&str>) -> (Value, Option<Instant>) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut cancelled_at = None;
        loop {
            let mut line = String::new();
            assert!(self.output.read_line(&mut line).unwrap() > 0, "the agent stopped");
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame["method"] == "session/update"
                && frame["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
            {
                self.said = frame["params"]["update"]["content"]["text"].as_str().unwrap_or_default().to_owned();
            }
            if frame["method"] == "session/request_permission" {
                if let Some(session) = cancel_on_question {
                    cancelled_at = Some(Instant::now());
                    self.send(&json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": session}}));
                } else {
                    let answer = json!({"outcome": {"outcome": "selected", "optionId": "allow-once"}});
                    self.send(&json!({"jsonrpc": "2.0", "id": frame["id"], "result": answer}));
                }
                continue;
            }
            if frame.get("method").is_none() && frame["id"] == id {
                assert!(frame.get("error").is_none(), "{method}: {frame}");
                return (frame["result"].clone(), cancelled_at);
            }
        }
    }

    fn initialize(&mut self) {
        self.request("initialize", json!({"protocolVersion": 1, "clientCapabilities": {}}), None);
    }

    fn new_session(&mut self, cwd: &Path) -> String {
        let (result, _) = self.request("session/new", json!({"cwd": cwd, "mcpServers": []}), None);
        result["sessionId"].as_str().unwrap().to_owned()
    }

    fn prompt(&mut self, session: &str, text: &str, cancel: bool) -> (Value, Option<Instant>) {
        let params = json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]});
        self.request("session/prompt", params, cancel.then_some(session))
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn finish(mut self) {
        drop(self.input);
        self.child.wait().unwrap();
    }
}

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, target: Option<(Duration, &str)>) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 500), percentile(&samples, 990));
    let verdict = match target {
        Some((limit, _)) if p50 <= limit => "pass",
        Some(_) => "MISS",
        None => "",
    };
    let target = target.map_or_else(String::new, |(_, text)| format!("target {text}"));
    println!(
        "{name:<52} n={:<4} p50 {:>8.2} ms  p99 {:>8.2} ms  {target:<18} {verdict}",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cwd = dir.path().to_path_buf();
    std::fs::write(dir.path().join("directory.toml"), DIRECTORY).unwrap();
    println!("pactum acp over stdio (release build, one 2-core machine)");

    // A constellation that exists, with a conversation and negotiations in it.
    let mut setup = Agent::spawn(&home);
    setup.initialize();
    let session = setup.new_session(&cwd);
    setup.prompt(&session, NEGOTIATE, false);
    setup.finish();

    if wanted("initialize") {
        let samples = (0..SPAWNS)
            .map(|_| {
                let started = Instant::now();
                let mut agent = Agent::spawn(&home);
                agent.initialize();
                let elapsed = started.elapsed();
                agent.finish();
                elapsed
            })
            .collect();
        report("spawn → initialize answered", samples, Some((Duration::from_millis(5), "p50 ≤ 5 ms")));
    }

    if wanted("session/new") {
        let samples = (0..NEW_SESSIONS)
            .map(|_| {
                let mut agent = Agent::spawn(&home);
                agent.initialize();
                let started = Instant::now();
                agent.new_session(&cwd);
                let elapsed = started.elapsed();
                agent.finish();
                elapsed
            })
            .collect();
        report(
            "session/new, existing constellation, new process",
            samples,
            Some((Duration::from_millis(20), "p50 ≤ 20 ms")),
        );
    }

    if wanted("turn") || wanted("rss") {
        let mut agent = Agent::spawn(&home);
        agent.initialize();
        let session = agent.new_session(&cwd);
        std::thread::sleep(Duration::from_millis(200));
        let idle = agent.rss_kib();
        let samples: Vec<Duration> = (0..TURNS)
            .map(|_| {
                let started = Instant::now();
                let (result, _) = agent.prompt(&session, NEGOTIATE, false);
                assert_eq!(result["stopReason"], "end_turn", "{}", agent.said);
                started.elapsed()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let after = agent.rss_kib();
        if wanted("turn") {
            report("/negotiate turn: 5 rounds, payment allowed, receipt", samples, None);
        }
        let verdict = |kib: u64| if kib <= 30 * 1024 { "pass" } else { "MISS" };
        println!(
            "{:<52} {:>8.1} MiB  target ≤ 30 MB       {}",
            "idle RSS after session/new",
            idle as f64 / 1024.0,
            verdict(idle)
        );
        println!(
            "{:<52} {:>8.1} MiB  target ≤ 30 MB       {}",
            format!("idle RSS after {TURNS} negotiation turns"),
            after as f64 / 1024.0,
            verdict(after)
        );
        agent.finish();
    }

    if wanted("cancel") {
        let mut agent = Agent::spawn(&home);
        agent.initialize();
        let session = agent.new_session(&cwd);
        let samples = (0..CANCELS)
            .map(|_| {
                let (result, cancelled_at) = agent.prompt(&session, NEGOTIATE, true);
                assert_eq!(result["stopReason"], "cancelled", "{}", agent.said);
                cancelled_at.unwrap().elapsed()
            })
            .collect();
        report("session/cancel → turn answered cancelled", samples, Some((Duration::from_millis(100), "≤ 100 ms")));
        agent.finish();
    }
}
