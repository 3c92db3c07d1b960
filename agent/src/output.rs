//! Where command output goes. On the command line, stdout and stderr. In `pactum acp`, stdout
//! carries protocol frames only, so a command run from the editor (`/sessions`, `/balance`, ...)
//! writes into a capture that becomes the agent's message; anything written outside a capture
//! in that mode is kept off stdout and logged instead.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static CAPTURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Set once `pactum acp` starts: stdout belongs to the protocol from then on.
static PROTOCOL_OWNS_STDOUT: AtomicBool = AtomicBool::new(false);

/// Marks stdout as the protocol's.
pub fn protocol_owns_stdout() {
    PROTOCOL_OWNS_STDOUT.store(true, Ordering::SeqCst);
}

/// Runs `work` with everything it writes to stdout or stderr through this module captured;
/// returns its result and the text.
pub fn capture<T>(work: impl FnOnce() -> T) -> (T, String) {
    let previous = CAPTURE.with(|capture| capture.replace(Some(String::new())));
    let value = work();
    let text = CAPTURE.with(|capture| capture.replace(previous)).unwrap_or_default();
    (value, text)
}

/// Whether output is being captured (a command running inside `pactum acp`, where stdin carries
/// the protocol and must never be read by a command).
pub fn capturing() -> bool {
    CAPTURE.with(|capture| capture.borrow().is_some())
}

fn captured(text: &str) -> bool {
    CAPTURE.with(|capture| match capture.borrow_mut().as_mut() {
        Some(buffer) => {
            buffer.push_str(text);
            true
        }
        None => false,
    })
}

/// Writes to stdout (or the capture). A reader that went away (`| head`) is not an error worth
/// a panic.
pub fn write_stdout(text: &str) {
    if captured(text) {
        return;
    }
    if PROTOCOL_OWNS_STDOUT.load(Ordering::SeqCst) {
        tracing::error!("output outside a command kept off the protocol stream: {}", text.trim_end());
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// Writes one line to stderr (or the capture).
pub fn write_stderr_line(line: &str) {
    if captured(&format!("{line}\n")) {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// An `io::Write` over [`write_stdout`], for output produced in pieces (transcript export).
pub struct Stdout;

impl std::io::Write for Stdout {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        write_stdout(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_nest_and_restore() {
        let ((), outer) = capture(|| {
            write_stdout("a\n");
            let ((), inner) = capture(|| write_stderr_line("b"));
            assert_eq!(inner, "b\n");
            write_stdout("c\n");
        });
        assert_eq!(outer, "a\nc\n");
    }
}
