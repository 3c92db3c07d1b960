//! Sends `session/update` notifications and keeps them: each update the editor is shown is also
//! stored in the conversation (in order, as sent), so that `session/load` replays it unchanged.
//! Updates are written in batches, always before the agent waits on the editor (a permission
//! question) and before a turn is answered: an acknowledged turn is never lost.

use std::sync::Arc;

use agent_client_protocol::Client;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema as acp;

use crate::acp::state::Conversation;
use crate::failure::Failure;

/// Longest title kept for a conversation (from its first prompt); also cut to the store's byte
/// limit.
const TITLE_CHARS_MAX: usize = 80;
/// Largest piece of agent text in one update: longer messages (a big command output) are sent
/// in several chunks, each well under the store's limit on one update.
const MESSAGE_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// The longest prefix of `text` within `bytes`, cut at a character boundary.
pub fn cut(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub struct Recorder {
    cx: ConnectionTo<Client>,
    session_id: acp::SessionId,
    conversation: Arc<Conversation>,
    pending: Vec<String>,
    title: Option<String>,
}

impl Recorder {
    pub fn new(cx: ConnectionTo<Client>, conversation: Arc<Conversation>) -> Self {
        let session_id = acp::SessionId::new(conversation.id.clone());
        Self { cx, session_id, conversation, pending: Vec::new(), title: None }
    }

    pub fn session_id(&self) -> &acp::SessionId {
        &self.session_id
    }

    pub fn connection(&self) -> &ConnectionTo<Client> {
        &self.cx
    }

    /// Keeps the person's prompt (not sent back: the editor shows it already) and names the
    /// conversation after it if it has no title yet.
    pub fn user_prompt(&mut self, text: &str) {
        let title: String =
            text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(TITLE_CHARS_MAX).collect();
        let title = cut(&title, pactum_memory::CONVERSATION_TITLE_BYTES_MAX);
        if !title.is_empty() {
            self.title.get_or_insert_with(|| title.to_owned());
        }
        self.keep(&acp::SessionUpdate::UserMessageChunk(acp::ContentChunk::new(text.to_owned().into())));
    }

    fn keep(&mut self, update: &acp::SessionUpdate) {
        match serde_json::to_string(update) {
            Ok(text) => self.pending.push(text),
            Err(error) => tracing::error!("a session update could not be serialized: {error}"),
        }
    }

    /// Sends an update and keeps it.
    pub fn send(&mut self, update: acp::SessionUpdate) {
        self.keep(&update);
        if let Err(error) = self.cx.send_notification(acp::SessionNotification::new(self.session_id.clone(), update)) {
            tracing::warn!("a session update could not be sent: {error}");
        }
    }

    /// A message from the agent (in chunks, if it is long).
    pub fn say(&mut self, text: impl Into<String>) {
        let text = text.into();
        let mut rest = text.as_str();
        loop {
            let piece = cut(rest, MESSAGE_CHUNK_BYTES_MAX);
            self.send(acp::SessionUpdate::AgentMessageChunk(acp::ContentChunk::new(piece.to_owned().into())));
            rest = &rest[piece.len()..];
            if rest.is_empty() {
                break;
            }
        }
    }

    /// Writes the kept updates to the constellation.
    pub async fn flush(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() && self.title.is_none() {
            return Ok(());
        }
        let bodies = std::mem::take(&mut self.pending);
        let title = self.title.take();
        let conversation = Arc::clone(&self.conversation);
        tokio::task::spawn_blocking(move || {
            conversation.workspace.db.append_conversation_updates(
                &conversation.id,
                &bodies,
                title.as_deref(),
                crate::clock::now_ms(),
            )
        })
        .await
        .map_err(|error| Failure::new("INTERNAL", format!("storing the conversation: {error}")))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(super::cut("héllo", 2), "h");
        assert_eq!(super::cut("héllo", 3), "hé");
        assert_eq!(super::cut("abc", 10), "abc");
        assert_eq!(super::cut(&"😀".repeat(100), 256).len(), 256);
    }
}
