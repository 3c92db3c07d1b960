//! A negotiation inside a turn. The runtime runs on a blocking thread; each event it makes
//! durable comes back here and is shown as a plan step and a tool call. When a payment needs
//! approval the editor is asked with `session/request_permission` (naming provider, amount and
//! rail); a cancel drops that question and aborts the session with an ABORT.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use agent_client_protocol::v1::schema as acp;
use serde_json::{Value, json};

use pactum_memory::ConversationMode;
use pactum_runtime::session::model::{Phase, SessionState, kind};
use pactum_runtime::session::shell::{Approver, OfferToApprove, SessionObserver};
use pactum_transcripts::{Clock, Event, ManualClock};

use crate::acp::record::Recorder;
use crate::acp::state::{CancelSignal, Conversation};
use crate::failure::Failure;
use crate::negotiate_cmd::{NegotiateArgs, build_request, runtime_on, summary};
use crate::session_view::describe;

/// The option ids of the payment question.
pub const ALLOW_ONCE: &str = "allow-once";
pub const REJECT_ONCE: &str = "reject-once";

/// What the reason of an abort requested from the editor says.
const CANCEL_REASON: &str = "cancelled from the editor";

enum TurnMessage {
    Event(Box<Event>),
    /// A payment to approve, and where to send the answer.
    Ask(OfferToApprove, SyncSender<bool>),
}

struct ChannelObserver(tokio::sync::mpsc::UnboundedSender<TurnMessage>);

impl SessionObserver for ChannelObserver {
    fn on_event(&mut self, _state: &SessionState, event: &Event) {
        let _ = self.0.send(TurnMessage::Event(Box::new(event.clone())));
    }
}

/// Asks the editor (through the async side) and blocks this negotiation's thread for the answer.
struct EditorApprover {
    sender: tokio::sync::mpsc::UnboundedSender<TurnMessage>,
    cancel: Arc<CancelSignal>,
    mode: ConversationMode,
    /// Why the turn must stop other than a cancel (the conversation could not be stored).
    stop: Arc<std::sync::Mutex<Option<String>>>,
}

impl Approver for EditorApprover {
    fn approve(&mut self, offer: &OfferToApprove) -> (bool, &'static str) {
        if self.mode == ConversationMode::ReadOnly {
            return (false, "read-only");
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self.sender.send(TurnMessage::Ask(offer.clone(), reply)).is_err() {
            return (false, "client");
        }
        (answer.recv().unwrap_or(false), "client")
    }

    fn abort_requested(&mut self) -> Option<String> {
        if self.cancel.is_cancelled() {
            return Some(CANCEL_REASON.to_owned());
        }
        self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The stages shown as the turn's plan.
const STAGES: [&str; 7] = [
    "Discover providers",
    "Negotiate",
    "Check the policy and choose the best offer",
    "Approve the payment",
    "Commit to the provider",
    "Settle on the ledger",
    "Receive the signed receipt",
];

/// The plan and tool calls of one negotiation, built from its events.
struct View {
    /// Prefix of tool call ids (the negotiation's session id once known).
    prefix: String,
    stages: [acp::PlanEntryStatus; 7],
    discover_call: Option<String>,
    payment_call: Option<String>,
    settle_call: Option<String>,
}

impl View {
    fn new() -> Self {
        Self {
            prefix: String::new(),
            stages: [const { acp::PlanEntryStatus::Pending }; 7],
            discover_call: None,
            payment_call: None,
            settle_call: None,
        }
    }

    fn plan(&self) -> acp::SessionUpdate {
        let entries = STAGES
            .iter()
            .zip(&self.stages)
            .map(|(content, status)| acp::PlanEntry::new(*content, acp::PlanEntryPriority::High, status.clone()))
            .collect();
        acp::SessionUpdate::Plan(acp::Plan::new(entries))
    }

    /// Marks stages `..done` completed and `active` in progress; sends the plan if it changed.
    fn advance(&mut self, recorder: &mut Recorder, done: usize, active: Option<usize>) {
        let before = self.stages.clone();
        for stage in self.stages.iter_mut().take(done) {
            *stage = acp::PlanEntryStatus::Completed;
        }
        if let Some(active) = active
            && self.stages[active] == acp::PlanEntryStatus::Pending
        {
            self.stages[active] = acp::PlanEntryStatus::InProgress;
        }
        if self.stages != before {
            recorder.send(self.plan());
        }
    }

    fn call_id(&self, seq: u64) -> String {
        format!("{}#{seq}", self.prefix)
    }

    fn start_call(
        recorder: &mut Recorder,
        id: &str,
        title: String,
        kind: acp::ToolKind,
        status: acp::ToolCallStatus,
        raw: Value,
        text: Option<String>,
    ) {
        let mut call = acp::ToolCall::new(id.to_owned(), title).kind(kind).status(status).raw_output(raw);
        if let Some(text) = text {
            call = call.content(vec![acp::ToolCallContent::from(text)]);
        }
        recorder.send(acp::SessionUpdate::ToolCall(call));
    }

    fn finish_call(recorder: &mut Recorder, id: &str, status: acp::ToolCallStatus, raw: Value, text: Option<String>) {
        let mut fields = acp::ToolCallUpdateFields::new().status(status).raw_output(raw);
        if let Some(text) = text {
            fields = fields.content(vec![acp::ToolCallContent::from(text)]);
        }
        recorder.send(acp::SessionUpdate::ToolCallUpdate(acp::ToolCallUpdate::new(id.to_owned(), fields)));
    }

    fn on_event(&mut self, recorder: &mut Recorder, event: &Event) {
        use acp::ToolCallStatus::{Completed, Failed, InProgress};
        let body = &event.body;
        let line = describe(event);
        if event.kind.as_str() == kind::CREATED {
            self.prefix = body.get("session_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        }
        let id = self.call_id(event.seq);
        let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        let price = |pointer: &str| {
            body.pointer(pointer)
                .and_then(|p| serde_json::from_value::<pactum_runtime::session::model::PriceBody>(p.clone()).ok())
                .and_then(|p| p.money().ok())
                .map(|m| m.to_string())
                .unwrap_or_default()
        };
        match event.kind.as_str() {
            kind::CREATED => {
                let intent = body.pointer("/intent/intent_type").and_then(Value::as_str).unwrap_or_default();
                self.discover_call = Some(id.clone());
                self.advance(recorder, 0, Some(0));
                Self::start_call(
                    recorder,
                    &id,
                    format!("Discover providers of {intent}"),
                    acp::ToolKind::Search,
                    InProgress,
                    body.clone(),
                    line,
                );
            }
            kind::DISCOVERY => {
                if let Some(call) = self.discover_call.take() {
                    Self::finish_call(recorder, &call, Completed, body.clone(), line);
                }
                self.advance(recorder, 1, Some(1));
            }
            kind::BID | kind::COUNTER => {
                let what = if event.kind.as_str() == kind::BID { "Bid" } else { "Counter" };
                let round = body.get("round").and_then(Value::as_u64).unwrap_or_default();
                let title = format!("{what} {} (round {round})", price("/price"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, Completed, body.clone(), line);
            }
            kind::ASK => {
                let round = body.get("round").and_then(Value::as_u64).unwrap_or_default();
                let title = format!("Quote from {}: {} (round {round})", text("sender"), price("/price"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Fetch, Completed, body.clone(), line);
            }
            kind::REJECT | kind::TIMEOUT | kind::UNREACHABLE | kind::INVALID_ANSWER => {
                let provider = if event.kind.as_str() == kind::REJECT { text("sender") } else { text("provider") };
                let title = format!("Quote from {provider}: no offer");
                Self::start_call(recorder, &id, title, acp::ToolKind::Fetch, Failed, body.clone(), line);
            }
            kind::SELECTED => {
                let title = format!("Policy check: {} at {} is within policy", text("provider"), price("/price"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Think, Completed, body.clone(), line);
                self.advance(recorder, 3, Some(3));
            }
            kind::APPROVAL => {
                let approved = body.get("approved").and_then(Value::as_bool).unwrap_or(false);
                let status = if approved { Completed } else { Failed };
                match self.payment_call.take() {
                    Some(call) => Self::finish_call(recorder, &call, status, body.clone(), line),
                    None => {
                        let title = if approved {
                            format!("Payment of {} approved ({})", price("/price"), text("by"))
                        } else {
                            format!("Payment of {} declined ({})", price("/price"), text("by"))
                        };
                        Self::start_call(recorder, &id, title, acp::ToolKind::Other, status, body.clone(), line);
                    }
                }
                if approved {
                    self.advance(recorder, 4, Some(4));
                }
            }
            kind::ACCEPT => {
                let title = format!("Accept {} from {}", price("/price"), text("receiver"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, Completed, body.clone(), line);
            }
            kind::COMMITTED => {
                let title = format!("Commit: pay {} to {}", price("/amount"), text("payee"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, Completed, body.clone(), line);
                self.advance(recorder, 5, Some(5));
            }
            kind::PREPARED => {
                let title = format!("Settle {} on the {} rail", price("/amount"), text("rail"));
                self.settle_call = Some(id.clone());
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, InProgress, body.clone(), line);
            }
            kind::RAIL_COMMITTED => {
                if let Some(call) = self.settle_call.take() {
                    Self::finish_call(recorder, &call, Completed, body.clone(), line);
                }
                self.advance(recorder, 6, Some(6));
            }
            kind::RAIL_ABORTED | kind::SETTLEMENT_FAILED => {
                let call = self.settle_call.take().unwrap_or(id);
                Self::finish_call(recorder, &call, Failed, body.clone(), line);
            }
            kind::RECEIPT => {
                let receipt = body.get("receipt").cloned().unwrap_or(Value::Null);
                let receipt_id = receipt.get("receipt_id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let title = format!("Receipt {receipt_id}");
                Self::start_call(recorder, &id, title, acp::ToolKind::Read, Completed, receipt, line);
            }
            kind::COMPLETED => self.advance(recorder, STAGES.len(), None),
            kind::ABORT_REQUESTED | kind::ABORT => {
                self.close_open_calls(recorder, body);
                let title = format!("Abort: {}", text("reason"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, Completed, body.clone(), line);
            }
            kind::FAILED => {
                self.close_open_calls(recorder, body);
                let title = format!("Failed: {} {}", text("code"), text("name"));
                Self::start_call(recorder, &id, title, acp::ToolKind::Other, Failed, body.clone(), line);
            }
            _ => {}
        }
    }

    /// Gives every step still open (discovery, an unanswered payment question, a settlement) its
    /// final status when the session stops: failed, with the stopping event as its output.
    fn close_open_calls(&mut self, recorder: &mut Recorder, body: &Value) {
        for call in [self.discover_call.take(), self.payment_call.take(), self.settle_call.take()].into_iter().flatten()
        {
            Self::finish_call(recorder, &call, acp::ToolCallStatus::Failed, body.clone(), None);
        }
    }

    /// Shows the payment question as a pending tool call; returns its update for the request.
    fn payment_question(&mut self, recorder: &mut Recorder, offer: &OfferToApprove, rail: &str) -> acp::ToolCallUpdate {
        let id = format!("{}#payment", self.prefix);
        let title = format!("Pay {} to {} ({}) on the {rail} rail", offer.price, offer.provider_name, offer.provider);
        let raw = json!({
            "session_id": offer.session_id,
            "provider": offer.provider,
            "provider_name": offer.provider_name,
            "amount": offer.price.to_string(),
            "amount_minor": offer.price.amount_minor(),
            "currency": offer.price.currency().code(),
            "rail": rail,
            "round": offer.round,
        });
        let call = acp::ToolCall::new(id.clone(), title.clone())
            .kind(acp::ToolKind::Other)
            .status(acp::ToolCallStatus::Pending)
            .raw_input(raw.clone());
        recorder.send(acp::SessionUpdate::ToolCall(call));
        self.payment_call = Some(id.clone());
        acp::ToolCallUpdate::new(id, acp::ToolCallUpdateFields::new().title(title).raw_input(raw))
    }
}

/// Asks the editor for permission (options: `allow` once, `reject` once). `None`: the question
/// was cancelled (and so is the turn).
pub async fn ask(
    recorder: &Recorder,
    question: acp::ToolCallUpdate,
    allow: String,
    reject: &str,
    cancel: &CancelSignal,
) -> Option<bool> {
    let options = vec![
        acp::PermissionOption::new(ALLOW_ONCE, allow, acp::PermissionOptionKind::AllowOnce),
        acp::PermissionOption::new(REJECT_ONCE, reject.to_owned(), acp::PermissionOptionKind::RejectOnce),
    ];
    if cancel.is_cancelled() {
        return None;
    }
    let request = acp::RequestPermissionRequest::new(recorder.session_id().clone(), question, options);
    let sent = recorder.connection().send_request(request);
    tokio::select! {
        // A cancel drops the pending question (the editor is told with $/cancel_request).
        () = cancel.cancelled() => None,
        answer = sent.block_task() => match answer {
            Ok(response) => match response.outcome {
                acp::RequestPermissionOutcome::Selected(selected) => Some(&*selected.option_id.0 == ALLOW_ONCE),
                _ => {
                    cancel.cancel();
                    None
                }
            },
            Err(error) => {
                tracing::warn!("the permission question failed: {error}; taking it as a refusal");
                Some(false)
            }
        },
    }
}

/// Runs one negotiation inside a turn and returns its final state; input the runtime refuses
/// before starting (an unknown intent type, a bad price) is an error and writes nothing.
pub async fn negotiate(
    recorder: &mut Recorder,
    conversation: &Arc<Conversation>,
    args: NegotiateArgs,
    cancel: &Arc<CancelSignal>,
) -> Result<SessionState, Failure> {
    if args.broker.is_some() || args.parallel.is_some() {
        return Err(Failure::new("USAGE", "--broker and --parallel are for the command line, not the editor"));
    }
    let workspace = Arc::clone(&conversation.workspace);
    let directory = workspace.directory.clone();
    let (mut request, starting_balance) = build_request(&args, &directory, Some(&workspace.db))?;
    let mode = conversation.mode();
    request.auto_approve = match mode {
        ConversationMode::Auto => true,
        ConversationMode::ReadOnly => false,
        ConversationMode::Ask => args.yes,
    };
    let clock: Arc<dyn Clock> = match args.clock {
        Some(start_ms) => Arc::new(ManualClock::new(start_ms)),
        None => Arc::new(crate::clock::SystemClock),
    };
    let runtime = runtime_on(&workspace.db, directory, clock).with_starting_balance(starting_balance);
    // The negotiation is an execution of the `negotiate` intent, recorded from here to its end.
    let execution = crate::intents::start(
        &workspace.db,
        "negotiate",
        crate::intents::negotiate_parameters(&args),
        None,
        &format!("acp:{}", conversation.id),
    )?;
    let rail = pactum_runtime::LedgerRail::ID.to_owned();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut observer = ChannelObserver(sender.clone());
    let stop = Arc::new(std::sync::Mutex::new(None));
    let mut approver = EditorApprover { sender, cancel: Arc::clone(cancel), mode, stop: Arc::clone(&stop) };
    let running = tokio::task::spawn_blocking(move || runtime.negotiate(request, &mut approver, &mut observer));
    let mut view = View::new();
    while let Some(message) = receiver.recv().await {
        match message {
            TurnMessage::Event(event) => {
                view.on_event(recorder, &event);
                // Money is about to move: what the editor has been shown is kept first.
                if event.kind.as_str() == kind::COMMITTED {
                    recorder.flush().await?;
                }
            }
            TurnMessage::Ask(offer, reply) => {
                let question = view.payment_question(recorder, &offer, &rail);
                // What led to the question is kept before waiting on a person. If it cannot be,
                // nobody is asked: the session is aborted (not recorded as a declined payment).
                if let Err(failure) = recorder.flush().await {
                    tracing::error!("the conversation could not be stored: {}", failure.message);
                    *stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some("the conversation could not be stored".to_owned());
                    let _ = reply.send(false);
                    continue;
                }
                let allow = format!("Pay {} to {}", offer.price, offer.provider_name);
                let answer = ask(recorder, question, allow, "Do not pay", cancel).await;
                let _ = reply.send(answer.unwrap_or(false));
            }
        }
    }
    let outcome = running
        .await
        .map_err(|error| Failure::new("INTERNAL", format!("the negotiation stopped: {error}")))
        .and_then(|outcome| outcome.map_err(Failure::from));
    let cancelled = cancel.is_cancelled();
    let recorded = outcome.as_ref().cloned().map_err(|f| Failure::new(f.code, f.message.clone()));
    tokio::task::spawn_blocking(move || crate::intents::finish_negotiation(execution, &recorded, cancelled))
        .await
        .map_err(|error| Failure::new("INTERNAL", format!("the execution's end was not recorded: {error}")))?;
    let state = outcome?;
    if mode == ConversationMode::ReadOnly && state.selection.is_some() && state.phase == Phase::Failed {
        recorder.say("Read-only mode: the best offer is above; nothing was paid.\n");
    }
    recorder.say(closing_message(&state));
    Ok(state)
}

/// The turn's last message: prices, outcome, session and transcript ids.
fn closing_message(state: &SessionState) -> String {
    let mut text = summary(state);
    if let Some(first) = state.asks.first() {
        let best = state.asks.iter().filter_map(|a| a.price.money().ok()).min_by_key(|m| m.amount_minor());
        if let (Ok(first_price), Some(best)) = (first.price.money(), best) {
            text.push_str(&format!(
                "\nRounds: {}; first ask {first_price} from {}, best ask {best}.",
                state.round, first.provider
            ));
        }
    }
    if let Some(failure) = &state.failure {
        text.push_str(&format!("\nWhy: {} ({}, {}).", failure.detail, failure.stage, failure.fault_domain));
    }
    text
}
