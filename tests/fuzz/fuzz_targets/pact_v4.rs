//! PACT v4 transcripts (`transcripts::pact_v4::verify_v4_bytes`): any bytes get a report; a
//! document that parses gets the same report from its parsed value and from its canonical text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pactum_transcripts::canonical::{parse_strict, to_canonical_string};
use pactum_transcripts::{verify_v4, verify_v4_bytes, verify_v4_text};

fuzz_target!(|bytes: &[u8]| {
    let report = verify_v4_bytes(bytes);
    assert!(report.is_valid() || !report.errors.is_empty(), "an invalid report without an error");
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    assert_eq!(report, verify_v4_text(text));
    let Ok(document) = parse_strict(text) else { return };
    assert_eq!(report, verify_v4(&document), "the text and its parsed value verify differently");
    if let Ok(canonical) = to_canonical_string(&document) {
        // Canonical JSON is a fixed point (JCS writes -0 as 0, so the values may differ).
        let again = parse_strict(&canonical).expect("canonical JSON parses again");
        assert_eq!(to_canonical_string(&again).ok(), Some(canonical.clone()), "canonical JSON is not canonical");
        assert_eq!(report, verify_v4_text(&canonical), "the canonical text verifies differently");
    }
});
