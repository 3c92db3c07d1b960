//! The stdio transport: newline-delimited frames, read and written by two threads of their own
//! (so neither the async runtime nor its blocking pool ever waits on the editor's pipes). Lines
//! are read as bytes, so a line that is not UTF-8 is answered like any other malformed frame
//! (-32700) instead of ending the connection.

use std::io::{BufRead, Write as _};

use agent_client_protocol::Lines;
use futures::{Sink, Stream};

/// The longest frame read, newline excluded: a prompt is at most 64 KiB, and the largest
/// request is a memory block's content (at most a million characters, escaped). A longer frame
/// is skipped to its end and answered with a parse error naming this bound.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Frames queued in each direction between the pipes and the protocol. A full queue holds the
/// reader (the editor's writes wait in the pipe) or the agent's sends (until the editor reads):
/// memory stays bounded whatever the peer does.
pub const FRAMES_QUEUED_MAX: usize = 32;

/// What a frame longer than [`FRAME_BYTES_MAX`] becomes: text that is not JSON, so the protocol
/// library answers it with a parse error that quotes it.
fn oversized(length: usize) -> String {
    format!("(frame of {length} bytes or more is longer than the limit of {FRAME_BYTES_MAX} bytes)")
}

/// One line read from `input`, at most `limit` bytes kept (the rest of a longer line is read and
/// dropped): `None` at the end of input, else the line without its line ending and the length
/// of the whole line.
fn read_frame(input: &mut impl BufRead, limit: usize) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut line = Vec::new();
    let mut length = 0;
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            return Ok((length > 0).then_some((line, length)));
        }
        let (taken, ended) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        let room = limit.saturating_sub(line.len());
        line.extend_from_slice(&buffer[..taken.min(room)]);
        length += taken;
        input.consume(taken);
        if ended {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(Some((line, length)));
        }
    }
}

/// What a line that is not UTF-8 becomes: text that is not JSON, so the protocol library answers
/// it with a parse error that quotes it (with the undecodable bytes shown as U+FFFD).
fn undecodable(bytes: &[u8]) -> String {
    format!("(not UTF-8) {}", String::from_utf8_lossy(bytes))
}

fn incoming() -> impl Stream<Item = std::io::Result<String>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(FRAMES_QUEUED_MAX);
    let reader = std::thread::Builder::new().name("pactum-stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        // A line ending is at most two bytes: a frame of exactly the limit is kept whole.
        loop {
            match read_frame(&mut stdin, FRAME_BYTES_MAX + 2) {
                Ok(None) => return,
                Ok(Some((line, length))) => {
                    let text = if line.len() > FRAME_BYTES_MAX {
                        tracing::warn!(
                            bytes = length,
                            limit = FRAME_BYTES_MAX,
                            "a frame longer than the limit was skipped"
                        );
                        oversized(length)
                    } else {
                        String::from_utf8(line).unwrap_or_else(|error| undecodable(error.as_bytes()))
                    };
                    if sender.blocking_send(Ok(text)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
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
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<String>(FRAMES_QUEUED_MAX);
    let writer = std::thread::Builder::new().name("pactum-stdout".into()).spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = receiver.blocking_recv() {
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
        sender.send(line).await.map_err(|_| std::io::Error::other("stdout is closed"))?;
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
    use super::read_frame;

    fn frames(input: &[u8], limit: usize) -> Vec<(Vec<u8>, usize)> {
        // A small buffer, so frames span several reads.
        let mut reader = std::io::BufReader::with_capacity(3, input);
        std::iter::from_fn(|| read_frame(&mut reader, limit).expect("read")).collect()
    }

    #[test]
    fn frames_are_split_at_newlines_without_their_line_endings() {
        let read = frames(b"{\"a\":1}\r\n\n{\"b\":2}\nlast", 64);
        let lines: Vec<&[u8]> = read.iter().map(|(line, _)| line.as_slice()).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"", b"{\"b\":2}", b"last"]);
        assert_eq!(read.iter().map(|(_, length)| *length).collect::<Vec<_>>(), [9, 1, 8, 4]);
    }

    #[test]
    fn a_frame_longer_than_the_limit_is_cut_and_the_next_one_read_whole() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\n{}\n");
        let read = frames(&input, 10);
        assert_eq!(read[0], (vec![b'x'; 10], 101));
        assert_eq!(read[1], (b"{}".to_vec(), 3));
        assert_eq!(read.len(), 2);
        let text = super::oversized(101);
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "{text}");
    }

    #[test]
    fn undecodable_lines_become_text_that_is_not_json() {
        let text = super::undecodable(b"\xff\xfe{\"x\"");
        assert!(text.starts_with("(not UTF-8)"));
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    }
}
