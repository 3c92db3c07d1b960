//! `pactum acp`: the Agent Client Protocol (v1) server editors and scripts talk to over stdio.
//!
//! `initialize` is answered at once (nothing is opened before it). Conversations are durable
//! (`memory::conversations`): `session/list`, `session/load` (which replays what the editor was
//! shown), `session/resume`, `session/close`. Prompts are slash commands or plain requests
//! (`commands`); a negotiation runs inside the turn (`turn`), asks before any money moves, and
//! stops on `session/cancel`. Extension methods (`_pactum/...`, `ext`) serve scripts. stdout
//! carries protocol frames only (`output`); logs go to stderr.

pub mod commands;
pub mod ext;
pub mod memory;
pub mod plain;
pub mod record;
pub mod state;
pub mod turn;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema as acp;
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, Error, Lines, UntypedMessage};
use futures::{Sink, Stream};

use pactum_memory::ConversationMode;

use crate::acp::commands::Request;
use crate::acp::record::Recorder;
use crate::acp::state::{CancelSignal, Conversation, Options, Server};
use crate::acp::wire::stdio_lines;
use crate::failure::Failure;

/// The id of the approval-mode session option.
pub const MODE_OPTION: &str = "mode";
/// Most conversations one `session/list` page returns.
const LIST_PAGE_MAX: u32 = 100;
/// Longest prompt read; a longer one is answered with this limit (and kept shortened).
pub const PROMPT_BYTES_MAX: usize = 64 * 1024;

/// Runs the server until stdin closes; returns the process's exit code.
pub fn serve_code(options: Options) -> u8 {
    match serve(options) {
        Ok(()) => crate::EXIT_OK,
        Err(code) => code,
    }
}

fn serve(options: Options) -> Result<(), u8> {
    crate::output::protocol_owns_stdout();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return Err(crate::EXIT_USAGE);
        }
    };
    let server = Arc::new(Server::new(options));
    let (transport, writer) = stdio_lines();
    let result = runtime.block_on(connect(server, transport));
    // Every frame queued before the connection ended reaches the editor.
    writer.finish();
    // Turns still running when the editor went away are abandoned; their sessions are resumed
    // (or their held payments released) by the next process that opens the constellation.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result.map_err(|error| {
        tracing::error!("the connection failed: {error}");
        crate::EXIT_INVALID
    })
}

/// Serves the protocol over any line transport until `incoming` ends: each item of `incoming`
/// is one frame without its newline, each item sent to `outgoing` is one frame to write. The
/// stdio server ([`serve_code`]) is this over stdin and stdout; the in-process fuzzer drives it
/// over in-memory channels.
pub async fn serve_lines(
    options: Options,
    outgoing: impl Sink<String, Error = std::io::Error> + Send + 'static,
    incoming: impl Stream<Item = std::io::Result<String>> + Send + 'static,
) -> Result<(), Error> {
    crate::output::protocol_owns_stdout();
    connect(Arc::new(Server::new(options)), Lines::new(Box::pin(outgoing), Box::pin(incoming))).await
}

fn mode_option(mode: ConversationMode) -> acp::SessionConfigOption {
    acp::SessionConfigOption::select(
        MODE_OPTION,
        "Approval",
        mode.as_str().to_owned(),
        vec![
            acp::SessionConfigSelectOption::new("ask", "Ask before paying"),
            acp::SessionConfigSelectOption::new("auto", "Pay automatically within policy"),
            acp::SessionConfigSelectOption::new("read-only", "Never pay (negotiate only)"),
        ],
    )
    .category(acp::SessionConfigOptionCategory::Mode)
}

fn not_found(session_id: acp::SessionId) -> Error {
    acp::Error::session_not_found(session_id).into()
}

fn failure_error(failure: &Failure) -> Error {
    Error::internal_error().data(serde_json::json!({ "code": failure.code, "message": failure.message }))
}

/// Answers a request from a task, so the connection keeps reading (a cancel, a permission
/// answer) while the work waits for the database; a failure to answer is logged.
fn answer<T: agent_client_protocol::JsonRpcResponse + Send + 'static>(
    cx: &ConnectionTo<Client>,
    responder: Responder<T>,
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<(), Error> {
    cx.spawn(async move {
        if let Err(error) = responder.respond_with_result(work.await) {
            tracing::warn!("a request could not be answered: {error}");
        }
        Ok(())
    })
}

/// Like [`answer`], for requests that open a session: once answered, the session's commands
/// are announced (`available_commands_update`).
fn answer_announcing<T: agent_client_protocol::JsonRpcResponse + Send + 'static>(
    cx: &ConnectionTo<Client>,
    responder: Responder<T>,
    work: impl std::future::Future<Output = Result<(T, acp::SessionId), Error>> + Send + 'static,
) -> Result<(), Error> {
    let task_cx = cx.clone();
    cx.spawn(async move {
        let (result, session_id) = match work.await {
            Ok((response, session_id)) => (Ok(response), Some(session_id)),
            Err(error) => (Err(error), None),
        };
        let answered = responder.respond_with_result(result);
        if let Err(error) = answered.and_then(|()| session_id.map_or(Ok(()), |id| announce_commands(&task_cx, &id))) {
            tracing::warn!("a request could not be answered: {error}");
        }
        Ok(())
    })
}

/// Runs blocking work (the database) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Failure::new("INTERNAL", format!("a background task failed: {error}")))?
}

fn new_conversation_id() -> String {
    format!("c-{:016x}", crate::edge::random_seed())
}

fn check_cwd(cwd: &Path) -> Result<(), Error> {
    if cwd.is_absolute() {
        Ok(())
    } else {
        Err(Error::invalid_params().data(format!("cwd must be an absolute path, got {}", cwd.display())))
    }
}

fn announce_commands(cx: &ConnectionTo<Client>, session_id: &acp::SessionId) -> Result<(), Error> {
    cx.send_notification(acp::SessionNotification::new(
        session_id.clone(),
        acp::SessionUpdate::AvailableCommandsUpdate(acp::AvailableCommandsUpdate::new(commands::available())),
    ))
}

/// Attaches a stored conversation (load or resume), searching the constellation of `cwd` and
/// the default one. Returns it with its stored updates if `with_history`.
async fn reattach(
    server: &Arc<Server>,
    id: &acp::SessionId,
    cwd: PathBuf,
    with_history: bool,
) -> Result<Option<(Arc<Conversation>, Vec<String>)>, Failure> {
    let server = Arc::clone(server);
    let id = id.0.to_string();
    blocking(move || {
        for workspace in server.workspaces_for(Some(&cwd))? {
            let Some(row) = workspace.db.conversation(&id)? else { continue };
            let history = if with_history {
                workspace.db.conversation_updates(&id)?.into_iter().map(|u| u.body).collect()
            } else {
                Vec::new()
            };
            let conversation = match server.attached(&id) {
                Some(attached) => attached,
                None => server.attach(Conversation {
                    id: id.clone(),
                    cwd: PathBuf::from(&row.cwd),
                    workspace,
                    mode: Mutex::new(row.mode),
                    turn: Mutex::new(None),
                }),
            };
            return Ok(Some((conversation, history)));
        }
        Ok(None)
    })
    .await
}

/// The prompt as text: text blocks as they are, resource links and embedded text resources by
/// their URI (Pactum reads no files), other content left out.
fn prompt_text(prompt: &[acp::ContentBlock]) -> String {
    prompt
        .iter()
        .filter_map(|block| match block {
            acp::ContentBlock::Text(text) => Some(text.text.clone()),
            acp::ContentBlock::ResourceLink(link) => Some(link.uri.clone()),
            acp::ContentBlock::Resource(resource) => match &resource.resource {
                acp::EmbeddedResourceResource::TextResourceContents(text) => Some(text.uri.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pactum <argv>` against the conversation's constellation and returns its output.
pub(crate) async fn run_cli(conversation: &Arc<Conversation>, argv: Vec<String>) -> String {
    let context = conversation.workspace.context.clone();
    let solution_id = format!("acp:{}", conversation.id);
    let result = blocking(move || {
        let mut full = vec!["pactum".to_owned()];
        full.extend(context.global_args());
        full.extend(argv);
        let (code, text) = crate::output::capture(|| match <crate::cli::Cli as clap::Parser>::try_parse_from(&full) {
            Ok(cli) => match crate::cli::run_as(cli, full[1..].to_vec(), &solution_id) {
                Ok(code) => code,
                Err(failure) => {
                    let code = crate::failure::exit_code_of(failure.code);
                    crate::output::write_stderr_line(&format!("error[{}]: {}", failure.code, failure.message));
                    code
                }
            },
            Err(error) => {
                crate::output::write_stdout(&error.render().to_string());
                crate::EXIT_USAGE
            }
        });
        Ok((code, text))
    })
    .await;
    match result {
        Ok((_, text)) => format!("```\n{}\n```\n", text.trim_end()),
        Err(failure) => format!("error[{}]: {}\n", failure.code, failure.message),
    }
}

async fn status(conversation: &Arc<Conversation>) -> String {
    let db = Arc::clone(&conversation.workspace.db);
    let latest = blocking(move || {
        Ok(db.session_streams(pactum_runtime::session::model::SESSION_STREAM_PREFIX)?.into_iter().last())
    })
    .await;
    let mut text = format!(
        "Constellation: {}\nApproval mode: {}\n",
        conversation.workspace.db.path().display(),
        conversation.mode().as_str()
    );
    match latest {
        Ok(Some(row)) => {
            let id = commands::session_id_of(&row.stream_id);
            text.push_str(&format!("Latest negotiation: {id}\n"));
            text.push_str(&run_cli(conversation, vec!["session".into(), "show".into(), id]).await);
        }
        Ok(None) => text.push_str("No negotiation yet: try /negotiate or /help.\n"),
        Err(failure) => text.push_str(&format!("error[{}]: {}\n", failure.code, failure.message)),
    }
    text
}

/// One turn: reads the prompt, does what it asks, keeps everything shown, and says how it ended.
async fn run_turn(
    conversation: Arc<Conversation>,
    cx: ConnectionTo<Client>,
    text: String,
    cancel: Arc<CancelSignal>,
) -> Result<acp::StopReason, Failure> {
    let mut recorder = Recorder::new(cx, Arc::clone(&conversation));
    if text.len() > PROMPT_BYTES_MAX {
        recorder.user_prompt(record::cut(&text, PROMPT_BYTES_MAX));
        recorder.say(format!(
            "That prompt is {} bytes; Pactum reads prompts of up to {PROMPT_BYTES_MAX} bytes.\n\n{}",
            text.len(),
            commands::help()
        ));
        recorder.flush().await?;
        return Ok(acp::StopReason::EndTurn);
    }
    recorder.user_prompt(&text);
    let request = commands::parse(&text, &conversation.cwd, &conversation.workspace.directory.intent_types());
    match request {
        Request::Answer(answer) => recorder.say(answer),
        Request::Cli(argv) => {
            let output = run_cli(&conversation, argv).await;
            recorder.say(output);
        }
        Request::Memory(words) => memory::turn(&mut recorder, &conversation, words, &cancel).await,
        Request::Status => {
            let text = status(&conversation).await;
            recorder.say(text);
        }
        Request::Negotiate(args) => {
            if let Err(failure) = turn::negotiate(&mut recorder, &conversation, *args, &cancel).await {
                recorder.say(format!("error[{}]: {}\n", failure.code, failure.message));
            }
        }
    }
    recorder.flush().await?;
    Ok(if cancel.is_cancelled() { acp::StopReason::Cancelled } else { acp::StopReason::EndTurn })
}

async fn new_session(
    server: Arc<Server>,
    _cx: ConnectionTo<Client>,
    request: acp::NewSessionRequest,
) -> Result<(acp::NewSessionResponse, acp::SessionId), Error> {
    check_cwd(&request.cwd)?;
    let cwd = request.cwd;
    let conversation = blocking(move || {
        let workspace = server.workspace(&cwd)?;
        let id = new_conversation_id();
        workspace.db.create_conversation(&id, &cwd.display().to_string(), crate::clock::now_ms())?;
        Ok(server.attach(Conversation {
            id,
            cwd,
            workspace,
            mode: Mutex::new(ConversationMode::Ask),
            turn: Mutex::new(None),
        }))
    })
    .await
    .map_err(|failure| failure_error(&failure))?;
    let session_id = acp::SessionId::new(conversation.id.clone());
    Ok((
        acp::NewSessionResponse::new(session_id.clone()).config_options(vec![mode_option(conversation.mode())]),
        session_id,
    ))
}

async fn load_session(
    server: Arc<Server>,
    cx: ConnectionTo<Client>,
    request: acp::LoadSessionRequest,
) -> Result<(acp::LoadSessionResponse, acp::SessionId), Error> {
    check_cwd(&request.cwd)?;
    let (conversation, history) = reattach(&server, &request.session_id, request.cwd.clone(), true)
        .await
        .map_err(|failure| failure_error(&failure))?
        .ok_or_else(|| not_found(request.session_id.clone()))?;
    // The history (the person's prompts included) is replayed before the answer.
    for body in history {
        match serde_json::from_str::<acp::SessionUpdate>(&body) {
            Ok(update) => cx.send_notification(acp::SessionNotification::new(request.session_id.clone(), update))?,
            Err(error) => tracing::warn!("a stored update could not be read back: {error}"),
        }
    }
    Ok((acp::LoadSessionResponse::new().config_options(vec![mode_option(conversation.mode())]), request.session_id))
}

async fn resume_session(
    server: Arc<Server>,
    _cx: ConnectionTo<Client>,
    request: acp::ResumeSessionRequest,
) -> Result<(acp::ResumeSessionResponse, acp::SessionId), Error> {
    check_cwd(&request.cwd)?;
    let (conversation, _) = reattach(&server, &request.session_id, request.cwd.clone(), false)
        .await
        .map_err(|failure| failure_error(&failure))?
        .ok_or_else(|| not_found(request.session_id.clone()))?;
    Ok((acp::ResumeSessionResponse::new().config_options(vec![mode_option(conversation.mode())]), request.session_id))
}

async fn list_sessions(
    server: Arc<Server>,
    _cx: ConnectionTo<Client>,
    request: acp::ListSessionsRequest,
) -> Result<acp::ListSessionsResponse, Error> {
    blocking(move || list(&server, request.cwd.as_deref(), request.cursor.as_deref())).await.map_err(|failure| {
        if failure.code == "USAGE" { Error::invalid_params().data(failure.message) } else { failure_error(&failure) }
    })
}

async fn close_session(
    server: Arc<Server>,
    _cx: ConnectionTo<Client>,
    request: acp::CloseSessionRequest,
) -> Result<acp::CloseSessionResponse, Error> {
    let conversation = server.attached(&request.session_id.0).ok_or_else(|| not_found(request.session_id.clone()))?;
    // A running turn is cancelled and answered before the close is, and the conversation stays
    // attached until then (no second turn can start).
    if let Some(running) = conversation.cancel_turn() {
        running.ended().await;
    }
    server.detach(&conversation.id);
    blocking(move || {
        conversation.workspace.db.close_conversation(&conversation.id, crate::clock::now_ms())?;
        Ok(())
    })
    .await
    .map_err(|failure| failure_error(&failure))?;
    Ok(acp::CloseSessionResponse::new())
}

async fn set_config_option(
    server: Arc<Server>,
    _cx: ConnectionTo<Client>,
    request: acp::SetSessionConfigOptionRequest,
) -> Result<acp::SetSessionConfigOptionResponse, Error> {
    let conversation = server.attached(&request.session_id.0).ok_or_else(|| not_found(request.session_id.clone()))?;
    let value = request.value.as_value_id().map(|v| v.0.to_string());
    let mode = match (&*request.config_id.0, value.as_deref().and_then(ConversationMode::parse)) {
        (MODE_OPTION, Some(mode)) => mode,
        (MODE_OPTION, None) => return Err(Error::invalid_params().data("mode is one of ask, auto, read-only")),
        (other, _) => return Err(Error::invalid_params().data(format!("unknown session option {other:?}"))),
    };
    let stored = Arc::clone(&conversation);
    blocking(move || {
        stored.workspace.db.set_conversation_mode(&stored.id, mode, crate::clock::now_ms())?;
        Ok(())
    })
    .await
    .map_err(|failure| failure_error(&failure))?;
    *conversation.mode.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    Ok(acp::SetSessionConfigOptionResponse::new(vec![mode_option(mode)]))
}

async fn connect(
    server: Arc<Server>,
    transport: impl agent_client_protocol::ConnectTo<Agent> + 'static,
) -> Result<(), Error> {
    Agent
        .v1()
        .name("pactum")
        .on_receive_request(
            async |request: acp::InitializeRequest,
                   responder: Responder<acp::InitializeResponse>,
                   _cx: ConnectionTo<Client>| {
                let _ = request;
                responder.respond(
                    acp::InitializeResponse::new(ProtocolVersion::V1)
                        .agent_capabilities(
                            acp::AgentCapabilities::new()
                                .load_session(true)
                                .prompt_capabilities(acp::PromptCapabilities::new())
                                .session_capabilities(
                                    acp::SessionCapabilities::new()
                                        .list(acp::SessionListCapabilities::new())
                                        .resume(acp::SessionResumeCapabilities::new())
                                        .close(acp::SessionCloseCapabilities::new()),
                                ),
                        )
                        .agent_info(acp::Implementation::new("pactum", env!("CARGO_PKG_VERSION")).title("Pactum")),
                )
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::NewSessionRequest,
                            responder: Responder<acp::NewSessionResponse>,
                            cx: ConnectionTo<Client>| {
                    answer_announcing(&cx, responder, new_session(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::LoadSessionRequest,
                            responder: Responder<acp::LoadSessionResponse>,
                            cx: ConnectionTo<Client>| {
                    answer_announcing(&cx, responder, load_session(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::ResumeSessionRequest,
                            responder: Responder<acp::ResumeSessionResponse>,
                            cx: ConnectionTo<Client>| {
                    answer_announcing(&cx, responder, resume_session(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::ListSessionsRequest,
                            responder: Responder<acp::ListSessionsResponse>,
                            cx: ConnectionTo<Client>| {
                    answer(&cx, responder, list_sessions(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::CloseSessionRequest,
                            responder: Responder<acp::CloseSessionResponse>,
                            cx: ConnectionTo<Client>| {
                    answer(&cx, responder, close_session(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::SetSessionConfigOptionRequest,
                            responder: Responder<acp::SetSessionConfigOptionResponse>,
                            cx: ConnectionTo<Client>| {
                    answer(&cx, responder, set_config_option(Arc::clone(&server), cx.clone(), request))
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: acp::PromptRequest,
                            responder: Responder<acp::PromptResponse>,
                            cx: ConnectionTo<Client>| {
                    let Some(conversation) = server.attached(&request.session_id.0) else {
                        return responder.respond_with_error(not_found(request.session_id));
                    };
                    let Some(cancel) = conversation.begin_turn() else {
                        return responder.respond_with_error(
                            Error::invalid_request().data("a turn is already running in this session"),
                        );
                    };
                    let text = prompt_text(&request.prompt);
                    let task_cx = cx.clone();
                    // The turn runs as a task: handlers run one at a time, and this one must
                    // not hold the connection while it waits for the editor.
                    cx.spawn(async move {
                        let result = run_turn(Arc::clone(&conversation), task_cx, text, Arc::clone(&cancel)).await;
                        conversation.end_turn();
                        let response = result.map(acp::PromptResponse::new).map_err(|failure| failure_error(&failure));
                        if let Err(error) = responder.respond_with_result(response) {
                            tracing::warn!("the turn's answer could not be sent: {error}");
                        }
                        Ok(())
                    })
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            {
                let server = Arc::clone(&server);
                async move |notification: acp::CancelNotification, _cx: ConnectionTo<Client>| {
                    if let Some(conversation) = server.attached(&notification.session_id.0) {
                        let _running = conversation.cancel_turn();
                    }
                    Ok(())
                }
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_notification(
            async |notification: UntypedMessage, _cx: ConnectionTo<Client>| {
                tracing::debug!(method = notification.method(), "notification ignored");
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        // Extension methods; registered last, since handlers are tried in order.
        .on_receive_request(
            {
                let server = Arc::clone(&server);
                async move |request: UntypedMessage,
                            responder: Responder<serde_json::Value>,
                            cx: ConnectionTo<Client>| {
                    let server = Arc::clone(&server);
                    let task_cx = cx.clone();
                    cx.spawn(async move {
                        let result = ext::handle(&server, &task_cx, request.method(), request.params().clone()).await;
                        if let Err(error) = responder.respond_with_result(result) {
                            tracing::warn!("an extension method's answer could not be sent: {error}");
                        }
                        Ok(())
                    })
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_to(transport)
        .await
}

/// `session/list`: conversations of the constellations for `cwd` (or the default one), newest
/// first, a page at a time. The cursor is `<updated ms>:<conversation id>` of the last one shown.
fn list(server: &Server, cwd: Option<&Path>, cursor: Option<&str>) -> Result<acp::ListSessionsResponse, Failure> {
    let before = match cursor {
        None => None,
        Some(cursor) => {
            let parsed = cursor
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<u64>().ok().filter(|&at| i64::try_from(at).is_ok())?, id)))
                .filter(|(_, id)| !id.is_empty())
                .map(|(at, id)| (at, id.to_owned()));
            Some(
                parsed
                    .ok_or_else(|| Failure::new("USAGE", format!("cursor {cursor:?} was not given by session/list")))?,
            )
        }
    };
    if let Some(cwd) = cwd
        && !cwd.is_absolute()
    {
        return Err(Failure::new("USAGE", format!("cwd must be an absolute path, got {}", cwd.display())));
    }
    let cwd_text = cwd.map(|c| c.display().to_string());
    let mut rows = Vec::new();
    for workspace in server.workspaces_for(cwd)? {
        let before = before.as_ref().map(|(at, id)| (*at, id.as_str()));
        rows.extend(workspace.db.conversations(cwd_text.as_deref(), before, LIST_PAGE_MAX + 1)?);
    }
    rows.sort_by(|a, b| (b.updated_at_ms, &b.conversation_id).cmp(&(a.updated_at_ms, &a.conversation_id)));
    rows.dedup_by(|a, b| a.conversation_id == b.conversation_id);
    let more = rows.len() > LIST_PAGE_MAX as usize;
    rows.truncate(LIST_PAGE_MAX as usize);
    let next = more.then(|| rows.last().map(|r| format!("{}:{}", r.updated_at_ms, r.conversation_id))).flatten();
    let sessions = rows
        .into_iter()
        .map(|row| {
            let mut info =
                acp::SessionInfo::new(acp::SessionId::new(row.conversation_id.clone()), PathBuf::from(&row.cwd))
                    .updated_at(crate::clock::format_ms(row.updated_at_ms));
            if let Some(title) = row.title {
                info = info.title(title);
            }
            info
        })
        .collect();
    let mut response = acp::ListSessionsResponse::new(sessions);
    if let Some(next) = next {
        response = response.next_cursor(next);
    }
    Ok(response)
}
