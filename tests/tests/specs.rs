//! specs/error-codes.toml lists every error code the pactum program prints. This test scans the
//! places codes are defined and fails if one is emitted but not specified, or specified but never
//! emitted.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn specified_codes() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("specs/error-codes.toml")).expect("spec");
    let table: toml::Table = text.parse().expect("TOML");
    table["error"]
        .as_array()
        .expect("error list")
        .iter()
        .map(|entry| entry["code"].as_str().expect("code").to_owned())
        .collect()
}

/// String literals that follow `marker` in `text` and look like codes (`UPPER_SNAKE`).
fn codes_after(text: &str, marker: &str, found: &mut BTreeSet<String>) {
    for (index, _) in text.match_indices(marker) {
        let rest = &text[index + marker.len()..];
        let Some(rest) = rest.trim_start().strip_prefix('"') else { continue };
        let Some(end) = rest.find('"') else { continue };
        let literal = &rest[..end];
        let looks_like_code =
            literal.len() >= 4 && literal.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if looks_like_code {
            found.insert(literal.to_owned());
        }
    }
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn emitted_codes() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut files = Vec::new();
    for crate_dir in ["agent", "runtime", "memory", "transcripts"] {
        sources(&root().join(crate_dir).join("src"), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        // Error types map variants to codes in `fn code(&self) -> &'static str`.
        for (start, _) in text.match_indices("fn code(&self) -> &'static str {") {
            let body = &text[start..];
            let end = body.find("\n    }\n").unwrap_or(body.len());
            codes_after(&body[..end], "=> ", &mut found);
            codes_after(&body[..end], "str {", &mut found);
        }
        // The program's own failures.
        codes_after(&text, "Failure::new(", &mut found);
    }
    // Transcript break reasons are report codes, not error codes (specs/transcript-v1.toml).
    for reason in pactum_transcripts::BreakReason::ALL {
        found.remove(reason.code());
    }
    found
}

#[test]
fn every_emitted_code_is_specified_and_every_specified_code_is_emitted() {
    let specified = specified_codes();
    let emitted = emitted_codes();
    let unspecified: Vec<_> = emitted.difference(&specified).collect();
    let unused: Vec<_> = specified.difference(&emitted).collect();
    assert!(unspecified.is_empty(), "emitted but not in specs/error-codes.toml: {unspecified:?}");
    assert!(unused.is_empty(), "in specs/error-codes.toml but never emitted: {unused:?}");
}
