//! What `pactum acp` keeps while it runs: the constellations it has opened (one per project with
//! a `.pactum/` directory, plus the default) and the conversations attached in this process.
//! Everything durable is in the constellations; this is only the set of open handles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pactum_memory::{Constellation, ConversationMode};
use pactum_runtime::Directory;

use crate::cli::Context;
use crate::failure::Failure;

/// The directory whose presence in a project makes it use its own constellation.
pub const PROJECT_DIR: &str = ".pactum";
/// The constellation file inside [`PROJECT_DIR`].
pub const PROJECT_CONSTELLATION: &str = "constellation.db";

/// How `pactum acp` was started (`--constellation`, `--directory`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub constellation: Option<String>,
    pub directory: Option<PathBuf>,
}

/// An open constellation, the command context that names it, and the provider directory
/// (read once, when the constellation is opened).
#[derive(Debug)]
pub struct Workspace {
    pub db: Arc<Constellation>,
    pub context: Context,
    pub directory: Directory,
}

/// A person's request to stop the running turn: a flag the blocking negotiation polls and a
/// watch the async side awaits.
#[derive(Debug)]
pub struct CancelSignal {
    flag: AtomicBool,
    watch: tokio::sync::watch::Sender<bool>,
    /// Set when the turn has answered.
    ended: tokio::sync::watch::Sender<bool>,
}

impl CancelSignal {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            flag: AtomicBool::new(false),
            watch: tokio::sync::watch::Sender::new(false),
            ended: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.watch.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the turn has answered.
    pub async fn ended(&self) {
        let mut receiver = self.ended.subscribe();
        let _ = receiver.wait_for(|ended| *ended).await;
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        let mut receiver = self.watch.subscribe();
        let _ = receiver.wait_for(|cancelled| *cancelled).await;
    }
}

/// A conversation attached to this process (created, loaded or resumed here).
#[derive(Debug)]
pub struct Conversation {
    pub id: String,
    pub cwd: PathBuf,
    pub workspace: Arc<Workspace>,
    pub mode: Mutex<ConversationMode>,
    /// The running turn's cancel signal; `None` when idle.
    pub turn: Mutex<Option<Arc<CancelSignal>>>,
}

impl Conversation {
    pub fn mode(&self) -> ConversationMode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a turn; `None` if one is already running.
    pub fn begin_turn(&self) -> Option<Arc<CancelSignal>> {
        let mut turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        if turn.is_some() {
            return None;
        }
        let signal = CancelSignal::new();
        *turn = Some(Arc::clone(&signal));
        Some(signal)
    }

    pub fn end_turn(&self) {
        if let Some(signal) = self.turn.lock().unwrap_or_else(PoisonError::into_inner).take() {
            signal.ended.send_replace(true);
        }
    }

    /// Cancels the running turn, if any; returns its signal, to wait for its answer.
    pub fn cancel_turn(&self) -> Option<Arc<CancelSignal>> {
        let turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(signal) = &turn {
            signal.cancel();
        }
        turn
    }
}

/// The process's open handles.
#[derive(Debug, Default)]
pub struct Server {
    pub options: Options,
    workspaces: Mutex<HashMap<PathBuf, Arc<Workspace>>>,
    conversations: Mutex<HashMap<String, Arc<Conversation>>>,
}

impl Server {
    pub fn new(options: Options) -> Self {
        Self { options, ..Self::default() }
    }

    /// The constellation a session opened in `cwd` uses: `<cwd>/.pactum/constellation.db` if
    /// `<cwd>/.pactum/` exists, else the one `pactum acp` was started with (or the default).
    pub fn constellation_for(&self, cwd: &Path) -> String {
        let project = cwd.join(PROJECT_DIR);
        if project.is_dir() {
            return project.join(PROJECT_CONSTELLATION).display().to_string();
        }
        self.options.constellation.clone().unwrap_or_else(|| crate::home::DEFAULT_CONSTELLATION.to_owned())
    }

    /// Opens (once per process) the constellation for `cwd`, recovering sessions a stopped
    /// process left behind. Blocking: call from a blocking task.
    pub fn workspace(&self, cwd: &Path) -> Result<Arc<Workspace>, Failure> {
        self.workspace_named(&self.constellation_for(cwd))
    }

    /// The constellation `pactum acp` was started with (or the default one).
    pub fn default_workspace(&self) -> Result<Arc<Workspace>, Failure> {
        self.workspace_named(self.options.constellation.as_deref().unwrap_or(crate::home::DEFAULT_CONSTELLATION))
    }

    fn workspace_named(&self, name: &str) -> Result<Arc<Workspace>, Failure> {
        let path = crate::home::resolve(Some(name))?;
        if let Some(open) = self.workspaces.lock().unwrap_or_else(PoisonError::into_inner).get(&path) {
            return Ok(Arc::clone(open));
        }
        let context = Context::new(Some(path.display().to_string()), self.options.directory.clone());
        let directory = context.directory()?;
        let db = context.open()?;
        let workspace = Arc::new(Workspace { db, context, directory });
        let runtime = crate::negotiate_cmd::runtime_on(
            &workspace.db,
            workspace.directory.clone(),
            Arc::new(crate::clock::SystemClock),
        );
        crate::negotiate_cmd::recover(&runtime)?;
        let mut open = self.workspaces.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(open.entry(path).or_insert(workspace)))
    }

    /// The constellations to search for a conversation opened in `cwd`: its own, then the
    /// default one.
    pub fn workspaces_for(&self, cwd: Option<&Path>) -> Result<Vec<Arc<Workspace>>, Failure> {
        let mut found: Vec<Arc<Workspace>> = Vec::new();
        if let Some(cwd) = cwd {
            found.push(self.workspace(cwd)?);
        }
        let default = self.default_workspace()?;
        if !found.iter().any(|w| Arc::ptr_eq(w, &default)) {
            found.push(default);
        }
        Ok(found)
    }

    pub fn attach(&self, conversation: Conversation) -> Arc<Conversation> {
        let conversation = Arc::new(conversation);
        self.conversations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conversation.id.clone(), Arc::clone(&conversation));
        conversation
    }

    pub fn attached(&self, id: &str) -> Option<Arc<Conversation>> {
        self.conversations.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    pub fn detach(&self, id: &str) -> Option<Arc<Conversation>> {
        self.conversations.lock().unwrap_or_else(PoisonError::into_inner).remove(id)
    }
}
