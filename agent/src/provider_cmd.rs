//! `pactum provider serve`: one provider of the directory, in its own constellation, answering
//! remote buyers over HTTP/1.1 (axum on hyper). The protocol and every decision are the
//! runtime's (`pactum_runtime::remote::host`); this is the HTTP edge: routes, the body limit,
//! a bound on requests served at once, and a clean stop on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use pactum_runtime::remote::host::{HostReply, ProviderHost};
use pactum_runtime::remote::{REMOTE_BODY_BYTES_MAX, REMOTE_CONCURRENT_REQUESTS_MAX, path};

use crate::cli::Context;
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_OK, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum ProviderCommand {
    /// Serve one provider of the directory to remote buyers over HTTP, from this constellation
    /// (its own keys and transcripts). Prints the `[[remote]]` entry a buyer adds to its
    /// directory file, then serves until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the entry printed names the real one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7301")]
    pub listen: SocketAddr,
    /// Which provider of the directory to serve (default: the first one).
    #[arg(long, value_name = "ID")]
    pub provider: Option<String>,
    /// Seed of the provider's simulated behaviour (asks, concessions, refusals); random if absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the endpoint, identity and directory entry as one JSON document.
    #[arg(long)]
    pub json: bool,
}

impl ProviderCommand {
    pub fn json(&self) -> bool {
        match self {
            Self::Serve(args) => args.json,
        }
    }
}

pub fn run(context: &Context, command: ProviderCommand) -> Result<u8, Failure> {
    let ProviderCommand::Serve(args) = command;
    let directory = context.directory()?;
    let spec =
        match &args.provider {
            None => directory.providers().first().cloned().ok_or_else(|| {
                Failure::new("PROVIDER_NOT_FOUND", "the directory has no simulated provider to serve")
            })?,
            Some(id) => directory.providers().iter().find(|p| &p.id == id).cloned().ok_or_else(|| {
                Failure::new(
                    "PROVIDER_NOT_FOUND",
                    format!("the directory has no provider {id:?} (see `pactum providers list`)"),
                )
            })?,
        };
    let db = context.open()?;
    let seed = args.seed.unwrap_or_else(crate::edge::random_seed);
    let key_seed = pactum_runtime::session::shell::KeyEntropy::key_seed(&crate::edge::OsEntropy);
    let host = ProviderHost::open(db, spec, seed, key_seed, Arc::new(crate::clock::SystemClock))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new("IO_ERROR", format!("cannot start the HTTP runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::new("LISTEN_FAILED", format!("cannot listen on {}: {e}", args.listen)))?;
        let address = listener
            .local_addr()
            .map_err(|e| Failure::new("LISTEN_FAILED", format!("cannot read the bound address: {e}")))?;
        let endpoint = format!("http://{address}");
        let entry = host.directory_entry(&endpoint);
        if args.json {
            print_json(&json!({ "endpoint": endpoint, "identity": host.identity(), "directory_entry": entry }));
        } else {
            print_lines(&[
                format!("serving {} at {endpoint} (Ctrl-C stops)", host.identity().agent_id),
                "add this to the buyer's directory file:".to_owned(),
                String::new(),
                entry,
            ]);
        }
        serve(Arc::new(host), listener, shutdown_signal())
            .await
            .map_err(|e| Failure::new("IO_ERROR", format!("the HTTP server stopped: {e}")))
    })?;
    Ok(EXIT_OK)
}

#[derive(Clone)]
struct AppState {
    host: Arc<ProviderHost>,
    permits: Arc<Semaphore>,
}

/// Serves `host` on `listener` until `shutdown` completes (then lets requests in flight finish).
pub async fn serve(
    host: Arc<ProviderHost>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState { host, permits: Arc::new(Semaphore::new(REMOTE_CONCURRENT_REQUESTS_MAX)) };
    let app = axum::Router::new()
        .route(path::IDENTITY, get(identity))
        .route(path::QUOTE, post(quote))
        .route(path::RECEIPT, post(receipt))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(REMOTE_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(state.clone(), bounded))
        .with_state(state);
    // Answers are small and sent whole: no waiting to coalesce them (Nagle).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Every request, its body included, is served within the bound on requests at once and
/// within `REMOTE_REQUEST_TIME_MS`: a slow or stalled client cannot hold a slot longer.
async fn bounded(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        let body = HostReply::error_body("BUSY", "too many requests at once; try again");
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    };
    let limit = std::time::Duration::from_millis(pactum_runtime::remote::REMOTE_REQUEST_TIME_MS);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let body = HostReply::error_body("REQUEST_TIMEOUT", "the request took too long to arrive or to serve");
            json_response(StatusCode::REQUEST_TIMEOUT, &body)
        }
    }
}

async fn identity(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!(state.host.identity()))
}

async fn quote(State(state): State<AppState>, body: Bytes) -> Response {
    answer(state, body, |host, body| host.quote(body)).await
}

async fn receipt(State(state): State<AppState>, body: Bytes) -> Response {
    answer(state, body, |host, body| host.receipt(body)).await
}

async fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &HostReply::error_body("NOT_FOUND", "no such route"))
}

/// Runs a host function on a blocking thread (it writes to SQLite).
async fn answer(state: AppState, body: Bytes, handle: fn(&ProviderHost, &[u8]) -> HostReply) -> Response {
    let host = state.host.clone();
    let reply = match tokio::task::spawn_blocking(move || handle(&host, &body)).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(%error, "a request handler stopped");
            let body = HostReply::error_body("INTERNAL", "the request handler stopped");
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
    };
    match reply {
        HostReply::Ok(value) => json_response(StatusCode::OK, &value),
        HostReply::Error { status, code, message } => {
            tracing::info!(code, %message, "refused a request");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, &HostReply::error_body(code, &message))
        }
        HostReply::LateTimeout { after_ms } => {
            // The simulated provider is slow: the buyer has stopped waiting by now.
            tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
            json_response(StatusCode::GATEWAY_TIMEOUT, &HostReply::error_body("TIMEOUT", "the provider was too slow"))
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot watch for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("stopping: letting requests in flight finish");
}
