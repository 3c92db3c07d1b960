//! `pactum transcript bundle` and `pactum bundle verify` as a user or script runs them: every
//! view of a session verifies and carries the same signed commitments root; changing any one
//! file, adding one, forging a disclosed value or swapping a commitment is named by its code.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Home, assert_fails, assert_ok, json};
use pactum_transcripts::canonical::to_canonical_string;
use serde_json::Value;
use sha2::Digest as _;

const CLOCK: &str = "1700000000000";

/// A file, a name for the changed copy, the change, and the code that names it.
type FileChange = (&'static str, &'static str, fn(&str) -> String, &'static str);

/// A completed negotiation; returns its session id.
fn completed_session(home: &Home) -> String {
    negotiate(home, &[])
}

fn negotiate(home: &Home, extra: &[&str]) -> String {
    let output = home.run(&common::negotiate_args("4", extra));
    json(&output)["session_id"].as_str().expect("session id").to_owned()
}

fn bundle(home: &Home, session: &str, name: &str, view: &str) -> PathBuf {
    let dir = home.path().join(name);
    let output = home.run(&["transcript", "bundle", session, dir.to_str().expect("utf-8"), "--view", view, "--json"]);
    assert_ok(&output);
    assert_eq!(json(&output)["view"], view);
    dir
}

/// `bundle verify --json`: the exit code and the document.
fn verify(home: &Home, dir: &Path) -> (i32, Value) {
    let output = home.run(&["bundle", "verify", dir.to_str().expect("utf-8"), "--json"]);
    (output.status.code().expect("exit code"), json(&output))
}

#[track_caller]
fn assert_valid(home: &Home, dir: &Path) -> Value {
    let (code, report) = verify(home, dir);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["problems"], Value::Array(Vec::new()));
    report
}

/// The problem codes of an invalid bundle (exit 1), with the file each names.
#[track_caller]
fn problems(home: &Home, dir: &Path) -> BTreeSet<(String, String)> {
    let (code, report) = verify(home, dir);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["valid"], false);
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| (p["code"].as_str().expect("code").to_owned(), p["file"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[track_caller]
fn assert_problem(found: &BTreeSet<(String, String)>, code: &str, file: &str) {
    assert!(found.contains(&(code.to_owned(), file.to_owned())), "expected {code} in {file}, found {found:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read bundle") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// A copy of `dir` named `name`, with `file` rewritten by `change`.
fn changed(dir: &Path, name: &str, file: &str, change: impl FnOnce(&str) -> String) -> PathBuf {
    let copy = dir.with_file_name(name);
    copy_dir(dir, &copy);
    let path = copy.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    let new = change(&text);
    assert_ne!(new, text, "the change to {file} changed nothing");
    std::fs::write(&path, new).expect("write");
    copy
}

/// Makes the manifest list `file` as it now is, so the checks behind the file hashes are reached.
fn relist(dir: &Path, file: &str) {
    let bytes = std::fs::read(dir.join(file)).expect("read");
    let manifest_path = dir.join("MANIFEST.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    for entry in manifest["files"].as_array_mut().expect("files") {
        if entry["name"] == file {
            entry["sha256"] = Value::String(hex::encode(sha2::Sha256::digest(&bytes)));
            entry["bytes"] = Value::from(bytes.len());
        }
    }
    std::fs::write(&manifest_path, to_canonical_string(&manifest).expect("canonical")).expect("write");
}

/// Rewrites a JSON file through `change` and writes it back in canonical form.
fn edit_json(text: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(text).expect("json");
    change(&mut value);
    to_canonical_string(&value).expect("canonical")
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found");
    text.replacen(from, to, 1)
}

#[test]
fn a_full_bundle_verifies_and_a_change_to_any_one_file_is_named() {
    let home = Home::new();
    let session = completed_session(&home);
    let full = bundle(&home, &session, "full", "full");
    let names: BTreeSet<String> = std::fs::read_dir(&full)
        .expect("bundle")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    let expected = ["MANIFEST.json", "commitments.json", "policy.json", "receipt.json", "transcript.jsonl"];
    assert_eq!(names, expected.iter().map(|s| s.to_string()).collect());
    let report = assert_valid(&home, &full);
    assert_eq!(report["session"], session.as_str());
    assert_eq!(report["view"], "full");

    // The transcript is the session's export, byte for byte.
    let export = home.run(&["transcript", "export", &format!("session:{session}")]);
    assert_eq!(std::fs::read(full.join("transcript.jsonl")).expect("transcript"), export.stdout);
    // The policy file hashes to the recorded policy hash.
    let policy = std::fs::read(full.join("policy.json")).expect("policy");
    let receipt: Value =
        serde_json::from_slice(&std::fs::read(full.join("receipt.json")).expect("receipt")).expect("json");
    assert_eq!(receipt["policy_hash"], format!("sha256:{}", hex::encode(sha2::Sha256::digest(&policy))));

    // Each file changed alone: its hash no longer matches the manifest...
    let cases: [FileChange; 4] = [
        (
            "transcript.jsonl",
            "t",
            |t| replace_once(t, "\"amount_minor\":24", "\"amount_minor\":23"),
            "BUNDLE_TRANSCRIPT_INVALID",
        ),
        (
            "receipt.json",
            "r",
            |t| replace_once(t, "\"amount_minor\":24", "\"amount_minor\":2"),
            "BUNDLE_RECEIPT_INVALID",
        ),
        ("policy.json", "p", |t| replace_once(t, "\"rounds_max\":6", "\"rounds_max\":7"), "BUNDLE_POLICY_MISMATCH"),
        (
            "commitments.json",
            "c",
            |t| edit_json(t, |v| v["events"][3]["fields"]["price"]["salt"] = Value::String("00".repeat(32))),
            "BUNDLE_COMMITMENT_MISMATCH",
        ),
    ];
    for (file, tag, change, code) in cases {
        let copy = changed(&full, &format!("changed-{tag}"), file, change);
        assert_problem(&problems(&home, &copy), "BUNDLE_FILE_HASH_MISMATCH", file);
        // ...and with the manifest made to match, the content check behind it names the change.
        relist(&copy, file);
        let found = problems(&home, &copy);
        assert_problem(&found, code, file);
        assert!(!found.iter().any(|(c, _)| c == "BUNDLE_FILE_HASH_MISMATCH"), "{found:?}");
    }

    // The manifest: another root, another signature, a listed hash.
    let other_root = changed(&full, "m-root", "MANIFEST.json", |t| {
        edit_json(t, |v| v["commitments_root"] = Value::String("ab".repeat(32)))
    });
    let found = problems(&home, &other_root);
    assert_problem(&found, "BUNDLE_COMMITMENTS_ROOT_MISMATCH", "MANIFEST.json");
    assert_problem(&found, "BUNDLE_SIGNATURE_INVALID", "MANIFEST.json");
    let other_signature = changed(&full, "m-sig", "MANIFEST.json", |t| {
        edit_json(t, |v| {
            let signature = v["commitments_signature"]["signature"].as_str().expect("sig").to_owned();
            let flipped = if signature.starts_with('A') { "B" } else { "A" };
            v["commitments_signature"]["signature"] = Value::String(format!("{flipped}{}", &signature[1..]));
        })
    });
    assert_eq!(problems(&home, &other_signature), [("BUNDLE_SIGNATURE_INVALID".into(), "MANIFEST.json".into())].into());
    let other_hash = changed(&full, "m-hash", "MANIFEST.json", |t| {
        edit_json(t, |v| v["files"][1]["sha256"] = Value::String("00".repeat(32)))
    });
    assert_problem(&problems(&home, &other_hash), "BUNDLE_FILE_HASH_MISMATCH", "policy.json");
    let not_json = changed(&full, "m-garbage", "MANIFEST.json", |t| format!("{t}x"));
    assert_problem(&problems(&home, &not_json), "BUNDLE_MANIFEST_INVALID", "MANIFEST.json");
}

#[test]
fn extra_missing_and_path_trick_files_are_named() {
    let home = Home::new();
    let session = completed_session(&home);
    let full = bundle(&home, &session, "full", "full");

    let extra = full.with_file_name("extra");
    copy_dir(&full, &extra);
    std::fs::write(extra.join("notes.txt"), "hello").expect("write");
    assert_eq!(problems(&home, &extra), [("BUNDLE_FILE_UNLISTED".into(), "notes.txt".into())].into());

    let missing = full.with_file_name("missing");
    copy_dir(&full, &missing);
    std::fs::remove_file(missing.join("receipt.json")).expect("remove");
    assert_problem(&problems(&home, &missing), "BUNDLE_FILE_MISSING", "receipt.json");

    // Dropping the receipt from the manifest too does not hide that the session issued one.
    let unlisted = changed(&full, "unlisted", "MANIFEST.json", |t| {
        edit_json(t, |v| v["files"].as_array_mut().expect("files").retain(|f| f["name"] != "receipt.json"))
    });
    std::fs::remove_file(unlisted.join("receipt.json")).expect("remove");
    assert_problem(&problems(&home, &unlisted), "BUNDLE_RECEIPT_INVALID", "receipt.json");

    let trick = changed(&full, "trick", "MANIFEST.json", |t| {
        replace_once(t, "\"name\":\"policy.json\"", "\"name\":\"../policy.json\"")
    });
    let found = problems(&home, &trick);
    assert_problem(&found, "BUNDLE_FILE_NAME_INVALID", "MANIFEST.json");
    assert_problem(&found, "BUNDLE_FILE_UNLISTED", "policy.json");

    let sub = full.with_file_name("subdir");
    copy_dir(&full, &sub);
    std::fs::create_dir(sub.join("nested")).expect("mkdir");
    assert_problem(&problems(&home, &sub), "BUNDLE_FILE_NAME_INVALID", "nested");

    assert_fails(&home.run(&["bundle", "verify", "no-such-dir"]), 2, "BUNDLE_NOT_FOUND");
}

#[test]
fn partner_and_auditor_views_verify_and_share_the_full_views_root() {
    let home = Home::new();
    let session = completed_session(&home);
    let full = assert_valid(&home, &bundle(&home, &session, "full", "full"));
    let partner_dir = bundle(&home, &session, "partner", "partner");
    let auditor_dir = bundle(&home, &session, "auditor", "auditor");
    let partner = assert_valid(&home, &partner_dir);
    let auditor = assert_valid(&home, &auditor_dir);
    assert_eq!(partner["commitments_root"], full["commitments_root"]);
    assert_eq!(auditor["commitments_root"], full["commitments_root"]);
    assert_eq!(partner["view"], "partner");

    // The partner sees neither the policy nor the maximum price nor the seed; the auditor sees
    // the policy and the intent but not the seed.
    assert!(!partner_dir.join("policy.json").exists());
    assert!(auditor_dir.join("policy.json").exists());
    let created = |dir: &Path| -> Value {
        let text = std::fs::read_to_string(dir.join("transcript.redacted.json")).expect("redacted");
        let value: Value = serde_json::from_str(&text).expect("json");
        assert!(!text.contains("\"max_price\""), "a redacted view shows the maximum price");
        value["events"][0]["body"].clone()
    };
    let partner_created = created(&partner_dir);
    for field in ["intent", "policy", "policy_hash", "seed"] {
        assert!(partner_created[field]["redacted"].is_string(), "{field}: {partner_created:#}");
    }
    assert_eq!(partner_created["buyer"]["agent_id"], "buyer");
    let auditor_text = std::fs::read_to_string(auditor_dir.join("transcript.redacted.json")).expect("redacted");
    let auditor_created: Value =
        serde_json::from_str::<Value>(&auditor_text).expect("json")["events"][0]["body"].clone();
    assert!(auditor_created["seed"]["redacted"].is_string());
    assert!(auditor_created["intent"]["max_price"].is_object(), "{auditor_created:#}");
    assert!(auditor_created["policy"].is_object());

    // The same session bundled again gives the same bytes (salts are derived, not drawn).
    let again = bundle(&home, &session, "partner-again", "partner");
    for name in ["MANIFEST.json", "transcript.redacted.json", "receipt.json"] {
        assert_eq!(std::fs::read(partner_dir.join(name)).expect("a"), std::fs::read(again.join(name)).expect("b"));
    }
}

#[test]
fn a_forged_disclosed_field_or_a_swapped_commitment_in_a_redacted_view_fails() {
    let home = Home::new();
    let session = completed_session(&home);
    let partner = bundle(&home, &session, "partner", "partner");
    let file = "transcript.redacted.json";
    let event = |value: &mut Value, kind: &str| -> usize {
        let events = value["events"].as_array().expect("events");
        events.iter().position(|e| e["kind"] == kind).expect("kind present")
    };

    // The selected price, in an event with a redacted field: its commitment no longer recomputes.
    let forged = changed(&partner, "forged", file, |t| {
        edit_json(t, |v| {
            let index = event(v, "offer.selected");
            assert!(v["events"][index]["body"]["considered"]["redacted"].is_string());
            v["events"][index]["body"]["price"]["amount_minor"] = Value::from(1);
        })
    });
    relist(&forged, file);
    let found = problems(&home, &forged);
    assert_problem(&found, "BUNDLE_COMMITMENT_MISMATCH", file);
    assert_problem(&found, "BUNDLE_COMMITMENTS_ROOT_MISMATCH", "MANIFEST.json");

    // In an event with nothing redacted, its hash no longer recomputes either.
    let forged_plain = changed(&partner, "forged-plain", file, |t| {
        edit_json(t, |v| {
            let index = event(v, "round.accept");
            v["events"][index]["body"]["price"]["amount_minor"] = Value::from(1);
        })
    });
    relist(&forged_plain, file);
    let found = problems(&home, &forged_plain);
    assert_problem(&found, "BUNDLE_TRANSCRIPT_INVALID", file);
    assert_problem(&found, "BUNDLE_COMMITMENT_MISMATCH", file);

    // The kind and time of an event with redacted fields: its hash cannot be recomputed in a
    // redacted view, so the signed root binds them.
    let renamed = changed(&partner, "renamed", file, |t| {
        edit_json(t, |v| {
            let index = event(v, "offer.selected");
            v["events"][index]["kind"] = Value::from("offer.withdrawn");
        })
    });
    relist(&renamed, file);
    assert_problem(&problems(&home, &renamed), "BUNDLE_COMMITMENTS_ROOT_MISMATCH", "MANIFEST.json");
    let retimed = changed(&partner, "retimed", file, |t| {
        edit_json(t, |v| {
            let index = event(v, "offer.selected");
            let at = v["events"][index]["at_ms"].as_u64().expect("at_ms");
            v["events"][index]["at_ms"] = Value::from(at + 1);
        })
    });
    relist(&retimed, file);
    assert_problem(&problems(&home, &retimed), "BUNDLE_COMMITMENTS_ROOT_MISMATCH", "MANIFEST.json");

    // Two redacted fields' commitments swapped.
    let swapped = changed(&partner, "swapped", file, |t| {
        edit_json(t, |v| {
            let body = &mut v["events"][0]["body"];
            let intent = body["intent"].clone();
            body["intent"] = body["policy"].clone();
            body["policy"] = intent;
        })
    });
    relist(&swapped, file);
    let found = problems(&home, &swapped);
    assert_problem(&found, "BUNDLE_COMMITMENT_MISMATCH", file);
    assert_problem(&found, "BUNDLE_COMMITMENTS_ROOT_MISMATCH", "MANIFEST.json");

    // A redacted field disclosed with a made-up value and salt does not match the signed root.
    let disclosed = changed(&partner, "disclosed", file, |t| {
        edit_json(t, |v| {
            v["events"][0]["body"]["seed"] = Value::String("1".into());
            v["events"][0]["salts"]["seed"] = Value::String("00".repeat(32));
        })
    });
    relist(&disclosed, file);
    assert_problem(&problems(&home, &disclosed), "BUNDLE_COMMITMENT_MISMATCH", file);
}

#[test]
fn a_failed_session_bundles_and_verifies_without_a_receipt() {
    let home = Home::new();
    let args = [
        "negotiate",
        "compute.inference",
        "--max-price",
        "0.30",
        "--currency",
        "USD",
        "--seed",
        "4",
        "--clock",
        CLOCK,
        "--yes",
        "--latency-ms",
        "5",
        "--json",
    ];
    let output = home.run(&args);
    assert_eq!(output.status.code(), Some(3));
    let session = json(&output)["session_id"].as_str().expect("session id").to_owned();
    let mut roots = BTreeSet::new();
    for view in ["full", "partner", "auditor"] {
        let dir = bundle(&home, &session, view, view);
        assert!(!dir.join("receipt.json").exists());
        roots.insert(assert_valid(&home, &dir)["commitments_root"].as_str().expect("root").to_owned());
    }
    assert_eq!(roots.len(), 1, "one root for every view");
}

#[test]
fn an_existing_directory_is_replaced_only_with_force_and_never_half_written() {
    let home = Home::new();
    let session = completed_session(&home);
    let dir = home.path().join("out");
    std::fs::create_dir(&dir).expect("mkdir");
    // An empty directory is fine.
    assert_ok(&home.run(&["transcript", "bundle", &session, "out"]));
    let again = home.run(&["transcript", "bundle", &session, "out", "--view", "partner"]);
    assert_fails(&again, 2, "DESTINATION_EXISTS");
    assert!(dir.join("transcript.jsonl").exists(), "the refused run left the old bundle alone");
    assert_ok(&home.run(&["transcript", "bundle", &session, "out", "--view", "partner", "--force"]));
    assert!(dir.join("transcript.redacted.json").exists() && !dir.join("transcript.jsonl").exists());
    assert_valid(&home, &dir);
    let leftovers: Vec<_> = std::fs::read_dir(home.path())
        .expect("home")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".out"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    assert_fails(&home.run(&["transcript", "bundle", "s-0000000000000000", "x"]), 2, "SESSION_NOT_FOUND");
    assert!(!home.path().join("x").exists());
}
