//! The `pactum-transcript/1` file: round trips, and exactly how each kind of damage is reported
//! (a malformed line is a `FileError`, a well-formed file with a broken chain is a report).

mod common;

use common::{EventSpec, Fixture, KEYS, Who, build, config, signed_count, specs, stream_id};
use pactum_transcripts::canonical::StrictJsonError;
use pactum_transcripts::jsonl::{
    FileError, FileErrorKind, FileHeader, FileVerification, KeySource, read_file, verify_file, write_file,
};
use pactum_transcripts::{BreakReason, EventSigner, FormatError, KeyError, KeyRing};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

fn header(fixture: &Fixture, keys: KeyRing) -> FileHeader {
    FileHeader {
        stream: stream_id(),
        event_count: fixture.anchor.event_count,
        head_hash: fixture.anchor.head_hash,
        keys,
    }
}

/// The file of a fixture, with A's and B's public keys embedded.
fn export(fixture: &Fixture) -> Vec<u8> {
    let mut out = Vec::new();
    write_file(&mut out, &header(fixture, KEYS.trusted.clone()), &fixture.events).expect("write");
    out
}

fn verify(bytes: &[u8]) -> Result<FileVerification, FileError> {
    verify_file(bytes, None)
}

/// Asserts the file parsed and its report breaks at exactly `(seq, reason)`.
fn assert_break(result: Result<FileVerification, FileError>, seq: u64, reason: BreakReason) -> FileVerification {
    let verification = result.unwrap_or_else(|error| panic!("expected {reason} at {seq}, got file error {error}"));
    let Some(broken) = verification.report.first_break.as_ref() else {
        panic!("expected {reason} at {seq}, but the file verified");
    };
    assert_eq!((broken.seq, broken.reason), (seq, reason), "found {broken}");
    verification
}

/// Asserts the file was refused at `line` with `code`; returns the kind for closer checks.
fn assert_file_error(result: Result<FileVerification, FileError>, line: u64, code: &str) -> FileErrorKind {
    match result {
        Err(error) => {
            assert_eq!((error.line, error.code()), (line, code), "found {error}");
            error.kind
        }
        Ok(verification) => panic!("expected {code} at line {line}, got a report {:?}", verification.report),
    }
}

/// Byte offsets where each line starts (line 1 is the header).
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    std::iter::once(0).chain(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1)).collect()
}

proptest! {
    #![proptest_config(config(64, 0x5eed_1501_0003))]

    #[test]
    fn written_file_verifies_and_reads_back(specs in specs(0..=24)) {
        let fixture = build(&specs);
        let bytes = export(&fixture);
        prop_assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), fixture.events.len() + 1);
        prop_assert!(bytes.ends_with(b"\n"));

        let verification = verify(&bytes).expect("well-formed");
        prop_assert_eq!(verification.key_source, KeySource::Embedded);
        prop_assert_eq!(&verification.header, &header(&fixture, KEYS.trusted.clone()));
        let report = &verification.report;
        prop_assert!(report.is_valid(), "{:?}", report.first_break);
        prop_assert_eq!(report.events_verified, fixture.events.len() as u64);
        prop_assert_eq!(report.signatures_verified, signed_count(&fixture.events));
        prop_assert_eq!(report.head_hash, fixture.anchor.head_hash);

        // Reading gives back the same events, and writing them again the same bytes.
        let (read_header, events) = read_file(&bytes[..]).expect("read");
        prop_assert_eq!(&events, &fixture.events);
        let mut again = Vec::new();
        write_file(&mut again, &read_header, &events).expect("write");
        prop_assert_eq!(again, bytes);
    }

    /// With a trusted ring, a signer missing from it is unknown even though the file embeds its key.
    #[test]
    fn trusted_ring_without_a_signer_is_signer_unknown(specs in specs(1..=24)) {
        let fixture = build(&specs);
        let bytes = export(&fixture);
        let mut only_a = KeyRing::new();
        only_a.insert(KEYS.a.key_id().clone(), KEYS.a.verifying_key()).expect("key");
        let result = verify_file(&bytes[..], Some(&only_a));
        match specs.iter().position(|spec| spec.who == Who::B) {
            Some(first_b) => {
                let verification = assert_break(result, first_b as u64, BreakReason::SignerUnknown);
                prop_assert_eq!(verification.key_source, KeySource::Trusted);
            }
            None => {
                let verification = result.expect("well-formed");
                prop_assert!(verification.report.is_valid());
                prop_assert_eq!(verification.key_source, KeySource::Trusted);
            }
        }
    }

    /// Cut after a complete line: the header still counts the missing events.
    #[test]
    fn file_cut_at_a_line_boundary_is_truncated(specs in specs(1..=24), at in any::<Index>()) {
        let fixture = build(&specs);
        let bytes = export(&fixture);
        let kept = at.index(fixture.events.len());
        let cut = line_starts(&bytes)[kept + 1];
        let verification = assert_break(verify(&bytes[..cut]), kept as u64, BreakReason::Truncated);
        prop_assert_eq!(verification.report.events_verified, kept as u64);
    }

    /// Cut anywhere: empty, truncated, or an incomplete line with its number.
    #[test]
    fn file_cut_anywhere(specs in specs(1..=24), at in any::<Index>()) {
        let fixture = build(&specs);
        let bytes = export(&fixture);
        let cut = at.index(bytes.len());
        let complete_lines = bytes[..cut].iter().filter(|b| **b == b'\n').count() as u64;
        let result = verify(&bytes[..cut]);
        if cut == 0 {
            let kind = assert_file_error(result, 1, "FILE_EMPTY");
            prop_assert!(matches!(kind, FileErrorKind::Empty), "{:?}", kind);
        } else if bytes[cut - 1] == b'\n' {
            assert_break(result, complete_lines - 1, BreakReason::Truncated);
        } else {
            let kind = assert_file_error(result, complete_lines + 1, "FILE_MALFORMED");
            prop_assert!(matches!(kind, FileErrorKind::Incomplete), "{:?}", kind);
        }
    }

    /// No single-byte change to an event line goes unnoticed: the line is refused or the chain
    /// breaks at or before that event.
    #[test]
    fn any_changed_byte_in_an_event_line_is_detected(specs in specs(1..=24), at in any::<Index>(), new_byte in any::<u8>()) {
        let fixture = build(&specs);
        let mut bytes = export(&fixture);
        let starts = line_starts(&bytes);
        let position = starts[1] + at.index(bytes.len() - starts[1]);
        prop_assume!(bytes[position] != new_byte);
        bytes[position] = new_byte;
        let event = starts.iter().filter(|start| **start <= position).count() - 2;
        match verify(&bytes) {
            Err(error) => prop_assert_eq!(error.code(), "FILE_MALFORMED", "{}", error),
            Ok(verification) => {
                let broken = verification.report.first_break.expect("the change must be detected");
                prop_assert!(broken.seq <= event as u64, "{} for a change in event {}", broken, event);
            }
        }
    }
}

/// A fixed four-event file for exact, hand-picked damage.
fn sample() -> Vec<u8> {
    let specs = [
        EventSpec {
            kind: "session.created",
            body: json!({"amount": 5, "memo": "hello world"}),
            who: Who::A,
            delta_ms: 1,
        },
        EventSpec { kind: "note", body: json!({"a": 1, "b": 2}), who: Who::Nobody, delta_ms: 2 },
        EventSpec { kind: "round.bid", body: json!({"amount": 7, "memo": "été 😀"}), who: Who::B, delta_ms: 3 },
        EventSpec { kind: "note", body: json!({}), who: Who::Nobody, delta_ms: 4 },
    ];
    export(&build(&specs))
}

/// Replaces the byte `offset` bytes into the first `needle` on line `line` (1-based).
fn garble(bytes: &[u8], line: usize, needle: &str, offset: usize, new_byte: u8) -> Vec<u8> {
    let starts = line_starts(bytes);
    let (start, end) = (starts[line - 1], starts[line]);
    let found = bytes[start..end]
        .windows(needle.len())
        .position(|window| window == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle:?} not on line {line}"));
    let mut out = bytes.to_vec();
    let position = start + found + offset;
    assert_ne!(out[position], new_byte, "the garble must change the byte");
    out[position] = new_byte;
    out
}

/// The value of `"name":"..."` on `line`, as text.
fn string_field(bytes: &[u8], line: usize, name: &str) -> String {
    let starts = line_starts(bytes);
    let text = std::str::from_utf8(&bytes[starts[line - 1]..starts[line]]).expect("utf-8");
    let needle = format!("\"{name}\":\"");
    let from = text.find(&needle).expect("field") + needle.len();
    text[from..].split('"').next().expect("value").to_owned()
}

#[test]
fn sample_verifies() {
    let bytes = sample();
    let verification = verify(&bytes).expect("well-formed");
    assert!(verification.report.is_valid());
    assert_eq!((verification.report.events_verified, verification.report.signatures_verified), (4, 2));
    assert_eq!(line_starts(&bytes).len(), 6, "header, four events, end of file");
}

/// Garbled bytes inside lines: which ones make a malformed file and which a broken chain.
#[test]
fn garbled_bytes_are_reported_exactly() {
    let bytes = sample();

    // A letter inside a body string: still canonical JSON, so the hash catches it.
    assert_break(verify(&garble(&bytes, 2, "hello", 4, b'p')), 0, BreakReason::HashMismatch);
    // Non-ASCII inside a string (é is C3 A9; C3 A8 is è): still valid UTF-8, a hash mismatch.
    assert_break(verify(&garble(&bytes, 4, "été", 1, 0xA8)), 2, BreakReason::HashMismatch);
    // The kind, at_ms: hashed fields.
    assert_break(verify(&garble(&bytes, 2, "session.created", 14, b'e')), 0, BreakReason::HashMismatch);
    assert_break(verify(&garble(&bytes, 3, "\"at_ms\":17", 9, b'8')), 1, BreakReason::HashMismatch);
    // The seq and the stream are checked before the hash.
    let verification = assert_break(verify(&garble(&bytes, 4, "\"seq\":2", 6, b'9')), 2, BreakReason::SeqMismatch);
    let broken = verification.report.first_break.expect("broken");
    assert_eq!((broken.expected.as_str(), broken.found.as_str()), ("2", "9"));
    assert_break(verify(&garble(&bytes, 5, "ses_test:01", 10, b'2')), 3, BreakReason::StreamMismatch);

    // A hash digit changed to another lowercase hex digit: a hash mismatch at that event.
    let hash = string_field(&bytes, 4, "hash");
    let other_digit = if hash.as_bytes()[0] == b'0' { b'1' } else { b'0' };
    assert_break(verify(&garble(&bytes, 4, &hash, 0, other_digit)), 2, BreakReason::HashMismatch);
    // ... to an uppercase one: not the single text form of a digest, so the line is malformed.
    let kind = assert_file_error(verify(&garble(&bytes, 4, &hash, 0, b'G')), 4, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "hash"), "{kind:?}");
    // The prev of the next event: a prev mismatch there.
    let prev = string_field(&bytes, 5, "prev");
    let other_digit = if prev.as_bytes()[63] == b'a' { b'b' } else { b'a' };
    assert_break(verify(&garble(&bytes, 5, &prev, 63, other_digit)), 3, BreakReason::PrevMismatch);

    // The first signature character: still base64url, no longer a valid signature.
    let sig = string_field(&bytes, 2, "sig");
    assert_eq!(sig.len(), 86);
    let other_char = if sig.as_bytes()[0] == b'A' { b'B' } else { b'A' };
    assert_break(verify(&garble(&bytes, 2, &sig, 0, other_char)), 0, BreakReason::SignatureInvalid);
    // The last one with non-zero trailing bits: not strict base64url, so the line is malformed.
    let last = sig.as_bytes()[85];
    let set_low_bit = match last {
        b'A' => b'B',
        b'Q' => b'R',
        b'g' => b'h',
        b'w' => b'x',
        other => panic!("the last char of 64 bytes in base64url encodes 2 bits, found {}", other as char),
    };
    let kind = assert_file_error(verify(&garble(&bytes, 2, &sig, 85, set_low_bit)), 2, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "sig"), "{kind:?}");

    // A kind that is no longer an identifier.
    let kind = assert_file_error(verify(&garble(&bytes, 2, "session.created", 7, b' ')), 2, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "kind"), "{kind:?}");
    // Structure: not JSON at all.
    let kind = assert_file_error(verify(&garble(&bytes, 3, "{", 0, b'x')), 3, "FILE_MALFORMED");
    assert!(matches!(kind, FileErrorKind::Json(StrictJsonError::Syntax(_))), "{kind:?}");
    // A member name changed so the members are no longer sorted: JSON, but not canonical.
    let kind = assert_file_error(verify(&garble(&bytes, 3, "\"b\":2", 1, b'0')), 3, "FILE_MALFORMED");
    assert!(matches!(kind, FileErrorKind::NotCanonical), "{kind:?}");
    // A field name changed: the event lacks a field.
    let kind = assert_file_error(verify(&garble(&bytes, 3, "\"body\"", 4, b'z')), 3, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "body"), "{kind:?}");

    // The header's anchor: one event more or fewer than the file holds, or another head.
    assert_break(verify(&garble(&bytes, 1, "\"event_count\":4", 14, b'5')), 4, BreakReason::Truncated);
    assert_break(verify(&garble(&bytes, 1, "\"event_count\":4", 14, b'3')), 3, BreakReason::HeadMismatch);
    let head = string_field(&bytes, 1, "head_hash");
    let other_digit = if head.as_bytes()[10] == b'f' { b'e' } else { b'f' };
    assert_break(verify(&garble(&bytes, 1, &head, 10, other_digit)), 3, BreakReason::HeadMismatch);
    // The header's key id for A renamed (still sorted first): A's signature has no key.
    assert_break(verify(&garble(&bytes, 1, "agent:a#1", 8, b'2')), 0, BreakReason::SignerUnknown);
}

#[test]
fn malformed_files_are_refused_with_their_line() {
    let bytes = sample();
    let starts = line_starts(&bytes);
    let line_text = |line: usize| std::str::from_utf8(&bytes[starts[line - 1]..starts[line] - 1]).expect("utf-8");
    let with_line = |line: usize, text: &str| {
        let mut out = bytes[..starts[line - 1]].to_vec();
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&bytes[starts[line]..]);
        out
    };

    // Empty file.
    let kind = assert_file_error(verify(b""), 1, "FILE_EMPTY");
    assert!(matches!(kind, FileErrorKind::Empty), "{kind:?}");

    // Another format version.
    let v2 = line_text(1).replace("\"format\":\"pactum-transcript/1\"", "\"format\":\"pactum-transcript/2\"");
    assert_ne!(v2, line_text(1));
    let kind = assert_file_error(verify(&with_line(1, &v2)), 1, "FORMAT_UNSUPPORTED");
    assert!(matches!(&kind, FileErrorKind::UnsupportedFormat(format) if format == "pactum-transcript/2"), "{kind:?}");

    // A duplicate member name in an event line.
    let event = line_text(3);
    let at_ms_member = event.split(',').next().expect("first member").trim_start_matches('{');
    assert!(at_ms_member.starts_with("\"at_ms\":"), "{at_ms_member}");
    let duplicated = event.replacen('{', &format!("{{{at_ms_member},"), 1);
    let kind = assert_file_error(verify(&with_line(3, &duplicated)), 3, "FILE_MALFORMED");
    assert!(
        matches!(&kind, FileErrorKind::Json(StrictJsonError::DuplicateMember(name)) if name == "at_ms"),
        "{kind:?}"
    );

    // An extra unknown field, placed where canonical order puts it.
    let extra = format!("{},\"zzz\":1}}", event.strip_suffix('}').expect("object"));
    let kind = assert_file_error(verify(&with_line(3, &extra)), 3, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "zzz"), "{kind:?}");
    // ... and in the header.
    let extra = format!("{},\"zzz\":1}}", line_text(1).strip_suffix('}').expect("object"));
    let kind = assert_file_error(verify(&with_line(1, &extra)), 1, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "zzz"), "{kind:?}");

    // Bytes that are not UTF-8 inside a string.
    let kind = assert_file_error(verify(&garble(&bytes, 2, "hello", 0, 0xFF)), 2, "FILE_MALFORMED");
    assert!(matches!(kind, FileErrorKind::NotUtf8), "{kind:?}");

    // Valid JSON, but not the one canonical form: spacing, CRLF, an escaped letter.
    for variant in [event.replacen(':', ": ", 1), format!("{event}\r"), event.replacen("\"note\"", "\"no\\u0074e\"", 1)]
    {
        let kind = assert_file_error(verify(&with_line(3, &variant)), 3, "FILE_MALFORMED");
        assert!(matches!(kind, FileErrorKind::NotCanonical), "{variant}: {kind:?}");
    }

    // A blank line between events.
    let mut blank = bytes[..starts[2]].to_vec();
    blank.push(b'\n');
    blank.extend_from_slice(&bytes[starts[2]..]);
    let kind = assert_file_error(verify(&blank), 3, "FILE_MALFORMED");
    assert!(matches!(kind, FileErrorKind::Blank), "{kind:?}");

    // A header that is not a Pactum header, and one with a weak key.
    let kind = assert_file_error(verify(b"{\"hello\":1}\n"), 1, "FILE_MALFORMED");
    assert!(matches!(&kind, FileErrorKind::Format(FormatError { field, .. }) if field == "format"), "{kind:?}");
    let identity_point = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let weak = format!(
        "{{\"event_count\":0,\"format\":\"pactum-transcript/1\",\"head_hash\":null,\"keys\":{{\"agent:x#1\":\"{identity_point}\"}},\"stream\":\"s\"}}\n"
    );
    let kind = assert_file_error(verify(weak.as_bytes()), 1, "FILE_MALFORMED");
    assert!(matches!(kind, FileErrorKind::Key(KeyError::Weak(_))), "{kind:?}");
}

/// An empty stream is a header-only file; it verifies, and one event more breaks its head.
#[test]
fn header_only_file() {
    let empty = build(&[]);
    let bytes = export(&empty);
    assert!(bytes.starts_with(b"{\"event_count\":0,\"format\":\"pactum-transcript/1\",\"head_hash\":null,"));
    let verification = verify(&bytes).expect("well-formed");
    assert!(verification.report.is_valid());
    assert_eq!(verification.report.events_verified, 0);

    let one = build(&[EventSpec { kind: "note", body: json!({}), who: Who::Nobody, delta_ms: 0 }]);
    let mut appended = bytes.clone();
    appended.extend_from_slice(&export(&one)[line_starts(&export(&one))[1]..]);
    assert_break(verify(&appended), 0, BreakReason::HeadMismatch);
}
