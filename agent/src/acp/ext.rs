//! Extension methods for scripts (`_pactum/...`), with structured JSON results. Documented with
//! examples in docs/PROTOCOL.md.

use std::sync::Arc;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::{Client, Error};
use serde_json::Value;

use crate::acp::state::Server;

pub async fn handle(
    _server: &Arc<Server>,
    _cx: &ConnectionTo<Client>,
    method: &str,
    _params: Value,
) -> Result<Value, Error> {
    Err(Error::method_not_found().data(method.to_owned()))
}
