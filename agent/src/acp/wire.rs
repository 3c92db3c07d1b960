//! The stdio transport: newline-delimited frames, read and written by two threads of their own
//! (so neither the async runtime nor its blocking pool ever waits on the editor's pipes). Lines
//! are read as bytes, so a line that is not UTF-8 is answered like any other malformed frame
//! (-32700) instead of ending the connection.

use std::io::{BufRead as _, Write as _};

use agent_client_protocol::Lines;
use futures::{Sink, Stream};

/// What a line that is not UTF-8 becomes: text that is not JSON, so the protocol library answers
/// it with a parse error that quotes it (with the undecodable bytes shown as U+FFFD).
fn undecodable(bytes: &[u8]) -> String {
    format!("(not UTF-8) {}", String::from_utf8_lossy(bytes))
}

fn incoming() -> impl Stream<Item = std::io::Result<String>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::Builder::new().name("pactum-stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    while matches!(line.last(), Some(b'\n' | b'\r')) {
                        line.pop();
                    }
                    let text = String::from_utf8(line).unwrap_or_else(|error| undecodable(error.as_bytes()));
                    if sender.send(Ok(text)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            }
        }
    });
    if let Err(error) = reader {
        tracing::error!("cannot start the stdin reader: {error}");
    }
    futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|line| (line, receiver)) })
}

/// The writer thread: every line queued is written, in order, before it ends.
pub struct Writer(Option<std::thread::JoinHandle<()>>);

impl Writer {
    /// Waits until everything queued has been written (the sink must be dropped first).
    pub fn finish(mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

fn outgoing() -> (impl Sink<String, Error = std::io::Error> + Send + 'static, Writer) {
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::Builder::new().name("pactum-stdout".into()).spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Ok(line) = receiver.recv() {
            let mut ok = stdout.write_all(line.as_bytes()).and_then(|()| stdout.write_all(b"\n")).is_ok();
            // Write what else is queued, then flush once.
            while ok && let Ok(next) = receiver.try_recv() {
                ok = stdout.write_all(next.as_bytes()).and_then(|()| stdout.write_all(b"\n")).is_ok();
            }
            if !ok || stdout.flush().is_err() {
                tracing::warn!("stdout is closed; the editor has gone");
                return;
            }
        }
    });
    let writer = match writer {
        Ok(thread) => Writer(Some(thread)),
        Err(error) => {
            tracing::error!("cannot start the stdout writer: {error}");
            Writer(None)
        }
    };
    let sink = futures::sink::unfold(sender, |sender, line: String| async move {
        sender.send(line).map_err(|_| std::io::Error::other("stdout is closed"))?;
        Ok::<_, std::io::Error>(sender)
    });
    (sink, writer)
}

/// stdin and stdout as a line transport for the protocol library, and the writer to wait for
/// once the connection has ended.
pub fn stdio_lines()
-> (Lines<impl Sink<String, Error = std::io::Error> + Send, impl Stream<Item = std::io::Result<String>> + Send>, Writer)
{
    let (sink, writer) = outgoing();
    (Lines::new(Box::pin(sink), Box::pin(incoming())), writer)
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
