//! What the runtime gets from the operating system, at the edge: randomness for new keys and
//! seeds, and this process's identity as a session owner (and whether another owner still runs).

use pactum_runtime::session::shell::{KeyEntropy, OwnerLiveness};

/// Key seeds from the operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl KeyEntropy for OsEntropy {
    fn key_seed(&self) -> [u8; 32] {
        let mut seed = [0_u8; 32];
        // Without an OS random source no key can be made safely: stop rather than use a weak one.
        if let Err(error) = getrandom::fill(&mut seed) {
            tracing::error!("the operating system gave no randomness: {error}");
            std::process::abort();
        }
        seed
    }
}

/// A random simulation seed, for runs without `--seed`.
pub fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|error| {
        tracing::error!("the operating system gave no randomness: {error}");
        std::process::abort();
    })
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat`, field 22), so
/// that a reused pid is not mistaken for the process that claimed a session.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may contain spaces: fields after it are
    // counted from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process as a session owner: `pid:<pid>:<start ticks>`.
pub fn owner_identity() -> String {
    let pid = std::process::id();
    format!("pid:{pid}:{}", process_start_ticks(pid).unwrap_or(0))
}

/// Owners are processes on this machine; one is alive if its pid runs with the same start time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLiveness;

impl OwnerLiveness for ProcessLiveness {
    fn is_alive(&self, owner: &str) -> bool {
        let mut parts = owner.split(':');
        let (Some("pid"), Some(pid), Some(start), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // An owner this program does not know how to check is assumed alive: recovery never
            // takes a session it cannot prove abandoned.
            return true;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return true };
        match process_start_ticks(pid) {
            Some(ticks) => ticks == start,
            // /proc is readable and the pid is gone: the owner is dead.
            None => !std::path::Path::new("/proc/self/stat").exists(),
        }
    }
}
