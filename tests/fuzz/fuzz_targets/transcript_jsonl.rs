//! Transcript files (`transcripts::jsonl`) and their import (`runtime::import_file`): any bytes
//! are refused with a line number or read; a file that reads is written back byte for byte; a
//! file that imports imports again as already present.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use libfuzzer_sys::fuzz_target;
use pactum_memory::Constellation;
use pactum_runtime::{ImportOutcome, ManualClock, import_file};
use pactum_transcripts::jsonl::{read_file, verify_file, write_file};

/// One constellation for the whole run, in a directory removed when the process ends normally.
struct Store {
    directory: tempfile::TempDir,
    db: Arc<Constellation>,
}

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(|| {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let db = Arc::new(Constellation::open(directory.path().join("fuzz.db")).expect("a constellation"));
        Mutex::new(Store { directory, db })
    })
}

fuzz_target!(|bytes: &[u8]| {
    let verification = verify_file(bytes, None);
    let read = read_file(bytes);
    if let Ok((header, events)) = &read {
        let mut written = Vec::new();
        write_file(&mut written, header, events).expect("writing to memory");
        assert_eq!(written, bytes, "a file that reads is not written back to the same bytes");
        let verification = verification.as_ref().expect("a file that reads also verifies (with or without a break)");
        assert_eq!(&verification.header, header);
    }
    let Ok(verification) = verification else { return };
    if verification.report.first_break.is_some() {
        return;
    }
    let store = store().lock().unwrap_or_else(PoisonError::into_inner);
    let path = store.directory.path().join("input.jsonl");
    std::fs::write(&path, bytes).expect("writing the input file");
    let clock = ManualClock::new(1_700_000_000_000);
    match import_file(&store.db, &path, &clock) {
        Ok(ImportOutcome::Imported { stream, events, .. }) | Ok(ImportOutcome::AlreadyPresent { stream, events }) => {
            assert_eq!(events, verification.header.event_count);
            match import_file(&store.db, &path, &clock) {
                Ok(ImportOutcome::AlreadyPresent { stream: again, events: count }) => {
                    assert_eq!((again, count), (stream, events));
                }
                other => panic!("a second import of the same file: {other:?}"),
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
