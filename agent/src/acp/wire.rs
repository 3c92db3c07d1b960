//! The stdio transport: newline-delimited frames. Lines are read as bytes, so a line that is not
//! UTF-8 is answered like any other malformed frame (-32700) instead of ending the connection.

use agent_client_protocol::Lines;
use futures::{Sink, Stream};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// What a line that is not UTF-8 becomes: text that is not JSON, so the protocol library answers
/// it with a parse error that quotes it (with the undecodable bytes shown as U+FFFD).
fn undecodable(bytes: &[u8]) -> String {
    format!("(not UTF-8) {}", String::from_utf8_lossy(bytes))
}

fn incoming() -> impl Stream<Item = std::io::Result<String>> + Send + 'static {
    let reader = BufReader::new(tokio::io::stdin());
    futures::stream::unfold(reader, |mut reader| async move {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                let text = String::from_utf8(line).unwrap_or_else(|error| undecodable(error.as_bytes()));
                Some((Ok(text), reader))
            }
            Err(error) => Some((Err(error), reader)),
        }
    })
}

fn outgoing() -> impl Sink<String, Error = std::io::Error> + Send + 'static {
    futures::sink::unfold(tokio::io::stdout(), |mut stdout, line: String| async move {
        stdout.write_all(line.as_bytes()).await?;
        stdout.write_all(b"\n").await?;
        stdout.flush().await?;
        Ok::<_, std::io::Error>(stdout)
    })
}

/// stdin and stdout as a line transport for the protocol library.
pub fn stdio_lines()
-> Lines<impl Sink<String, Error = std::io::Error> + Send, impl Stream<Item = std::io::Result<String>> + Send> {
    Lines::new(Box::pin(outgoing()), Box::pin(incoming()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn undecodable_lines_become_text_that_is_not_json() {
        let text = super::undecodable(b"\xff\xfe{\"x\"");
        assert!(text.starts_with("(not UTF-8)"));
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    }
}
