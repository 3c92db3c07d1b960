//! Helpers shared by the tests that run the real `pactum` program.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A private `PACTUM_HOME` with the program's environment controlled.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pactum-under-test"));
        command
            .env("PACTUM_HOME", self.path().join("home"))
            .env_remove("XDG_DATA_HOME")
            .env_remove("PACTUM_CONSTELLATION")
            .env_remove("PACTUM_DURABILITY")
            .env_remove("RUST_LOG")
            .current_dir(self.path());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run pactum")
    }

    pub fn default_db(&self) -> PathBuf {
        self.path().join("home/constellations/default.db")
    }

    /// The shipped sample transcript, copied into this home.
    pub fn sample_file(&self) -> PathBuf {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-transcript.jsonl");
        let copy = self.path().join("sample.jsonl");
        std::fs::copy(source, &copy).expect("copy sample");
        copy
    }

    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }
}

/// `pactum negotiate compute.inference --max-price 0.30 --currency USD --seed SEED --clock
/// 1700000000000 --yes --json` and `extra`: a reproducible negotiation.
pub fn negotiate_args<'a>(seed: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "negotiate",
        "compute.inference",
        "--max-price",
        "0.30",
        "--currency",
        "USD",
        "--seed",
        seed,
        "--clock",
        "1700000000000",
        "--yes",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

pub fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

/// The program failed with `exit`, printing exactly one line `error[CODE]: ...` and no panic.
#[track_caller]
pub fn assert_fails(output: &Output, exit: i32, code: &str) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(exit), "stderr: {err}\nstdout: {}", stdout(output));
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {err}");
    assert!(lines[0].starts_with(&format!("error[{code}]: ")), "expected {code}, got: {err}");
    lines[0].to_owned()
}

#[track_caller]
pub fn assert_ok(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "stderr: {}\nstdout: {}", stderr(output), stdout(output));
}
