//! The sample transcript's bytes are fixed: any change to hashing, canonical JSON, signing or the
//! file layout shows up here. Regenerate deliberately with PACTUM_UPDATE_GOLDEN=1.

use std::path::PathBuf;

use pactum_tests::{SAMPLE_STREAM, write_sample_transcript};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-transcript.jsonl")
}

#[test]
fn sample_transcript_bytes_are_stable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = write_sample_transcript(&dir.path().join("sample.db"));
    let mut exported = Vec::new();
    let summary = pactum_runtime::export_stream(&db, SAMPLE_STREAM, &mut exported).expect("export");
    assert!(summary.report.is_valid(), "{:?}", summary.report);
    assert_eq!((summary.events, summary.report.signatures_verified), (7, 7));

    let path = golden_path();
    if std::env::var_os("PACTUM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &exported).expect("write golden file");
    }
    let golden = std::fs::read(&path).expect("golden file exists (PACTUM_UPDATE_GOLDEN=1 creates it)");
    assert_eq!(
        String::from_utf8_lossy(&exported),
        String::from_utf8_lossy(&golden),
        "exported sample differs from {}",
        path.display()
    );
}

#[test]
fn sample_transcript_verifies_without_a_database() {
    let file = std::fs::File::open(golden_path()).expect("golden file");
    let verification =
        pactum_transcripts::jsonl::verify_file(std::io::BufReader::new(file), None).expect("well-formed");
    assert!(verification.report.is_valid(), "{:?}", verification.report);
    assert_eq!(verification.header.keys.len(), 2);
}

#[test]
fn an_independent_implementation_of_the_documented_recipe_accepts_the_sample() {
    // docs/verify_transcript_hashes.py follows docs/TRANSCRIPT-FORMAT.md with Python's standard
    // library only; if the recipe in the docs and the code drift apart, this fails.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new("python3")
        .arg(root.join("docs/verify_transcript_hashes.py"))
        .arg(golden_path())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("7 events, chain and hashes OK"), "{stdout}");

    // And it rejects a tampered copy.
    let dir = tempfile::tempdir().expect("dir");
    let tampered = dir.path().join("t.jsonl");
    let text = std::fs::read_to_string(golden_path()).expect("read");
    std::fs::write(&tampered, text.replacen("\"amount_minor\":7", "\"amount_minor\":6", 1)).expect("write");
    let output = std::process::Command::new("python3")
        .arg(root.join("docs/verify_transcript_hashes.py"))
        .arg(&tampered)
        .output()
        .expect("python3 runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("hash mismatch at 2"));
}
