//! Two `pactum` processes with separate constellations negotiating over loopback
//! (`pactum provider serve` and a buyer whose directory lists it), and every network fault a
//! remote provider can cause, each with its failure code and nothing hanging.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use serde_json::Value;

use common::{Home, assert_ok, json, stdout};

const CLOCK: &str = "1700000000000";

/// A `pactum provider serve` child, stopped when dropped.
struct Server {
    child: Child,
    entry: String,
    public_key: String,
}

impl Server {
    fn start(home: &Home, constellation: &str, seed: &str) -> Self {
        Self::start_provider(home, constellation, seed, None)
    }

    fn start_provider(home: &Home, constellation: &str, seed: &str, provider: Option<&str>) -> Self {
        let mut command = home.command();
        command
            .args(["--constellation", constellation, "provider", "serve", "--listen", "127.0.0.1:0"])
            .args(["--seed", seed, "--json"]);
        if let Some(provider) = provider {
            command.args(["--provider", provider]);
        }
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start pactum provider serve");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut text = String::new();
        let document: Value = loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).expect("read the server's output");
            assert!(read > 0, "the server stopped before printing its endpoint: {text}");
            text.push_str(&line);
            if let Ok(document) = serde_json::from_str(&text) {
                break document;
            }
        };
        let entry = document["directory_entry"].as_str().expect("directory entry").to_owned();
        let public_key = document["identity"]["public_key"].as_str().expect("public key").to_owned();
        Self { child, entry, public_key }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn directory(home: &Home, name: &str, entries: &[String]) -> PathBuf {
    let mut text = String::from("format = \"pactum-directory/1\"\n");
    for entry in entries {
        text.push('\n');
        text.push_str(entry);
    }
    home.write_file(name, text.as_bytes())
}

/// A directory entry for the same provider at another endpoint.
fn moved(entry: &str, endpoint: &str) -> String {
    entry
        .lines()
        .map(
            |line| if line.starts_with("endpoint = ") { format!("endpoint = \"{endpoint}\"") } else { line.to_owned() },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn negotiate(home: &Home, directory: &std::path::Path, seed: &str, extra: &[&str]) -> Value {
    let output = home
        .command()
        .args(["--constellation", "buyer", "--directory", directory.to_str().expect("utf-8")])
        .args(["negotiate", "weather.data", "--max-price", "5", "--currency", "USD"])
        .args(["--seed", seed, "--clock", CLOCK, "--yes", "--json"])
        .args(extra)
        .output()
        .expect("run pactum negotiate");
    let document: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(&output)));
    assert!(!common::stderr(&output).contains("panicked"));
    document
}

fn export(home: &Home, constellation: &str, stream: &str) -> Vec<pactum_transcripts::Event> {
    let output = home.run(&["--constellation", constellation, "transcript", "export", stream]);
    assert_ok(&output);
    let (_, events) = pactum_transcripts::jsonl::read_file(&output.stdout[..]).expect("an exported transcript");
    events
}

fn streams(home: &Home, constellation: &str) -> Vec<String> {
    let output = home.run(&["--constellation", constellation, "transcript", "list", "--json"]);
    assert_ok(&output);
    json(&output).as_array().expect("a list").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

#[test]
fn two_processes_negotiate_over_loopback_and_their_transcripts_agree() {
    let home = Home::new();
    let server = Server::start(&home, "seller", "7");
    let directory = directory(&home, "remote.toml", std::slice::from_ref(&server.entry));
    let session = negotiate(&home, &directory, "4", &[]);
    assert_eq!(session["phase"], "completed", "{session}");
    let session_id = session["session_id"].as_str().expect("session id").to_owned();
    assert_eq!(session["receipt"]["issuer"]["public_key"], server.public_key.as_str());

    // Each side verifies on its own.
    let buyer_stream = format!("session:{session_id}");
    assert_ok(&home.run(&["--constellation", "buyer", "transcript", "verify", &buyer_stream]));
    let seller_streams = streams(&home, "seller");
    assert_eq!(seller_streams.len(), 1, "{seller_streams:?}");
    assert!(seller_streams[0].starts_with(&format!("remote:{session_id}:")));
    assert_ok(&home.run(&["--constellation", "seller", "transcript", "verify", &seller_streams[0]]));
    for constellation in ["buyer", "seller"] {
        let check = home.run(&["--constellation", constellation, "constellation", "check", "--json"]);
        assert_ok(&check);
    }
    let replay = home.run(&["--constellation", "buyer", "session", "replay", &session_id, "--json"]);
    assert_ok(&replay);
    assert_eq!(json(&replay)["consistent"], true);

    // They agree on every shared message: the buyer's intent, offer, accept and settlement
    // (same hashes) and the provider's ask (same seal).
    let buyer_events = export(&home, "buyer", &buyer_stream);
    let seller_events = export(&home, "seller", &seller_streams[0]);
    let shared = pactum_runtime::remote::host::shared_messages(&buyer_events, &seller_events).expect("they agree");
    assert!(shared >= 5, "{shared} shared messages");

    // The receipt, signed remotely, verifies on its own.
    let receipt = home.run(&["--constellation", "buyer", "receipt", "show", &session_id, "--json"]);
    let file = home.write_file("receipt.json", &receipt.stdout);
    assert_ok(&home.run(&["receipt", "verify", file.to_str().expect("utf-8")]));

    // As PACT v4, the provider's rounds are signed by the provider's seal: VALID, no findings.
    let v4 = home.run(&["--constellation", "buyer", "transcript", "export", &session_id, "--format", "pact-v4"]);
    assert_ok(&v4);
    let file = home.write_file("v4.json", &v4.stdout);
    let verified = home.run(&["transcript", "verify", file.to_str().expect("utf-8")]);
    assert_ok(&verified);
    assert!(stdout(&verified).contains("VALID"), "{}", stdout(&verified));
    assert!(!stdout(&verified).contains("ROUND_CONTENT_UNSIGNED"), "{}", stdout(&verified));
    let mut document: Value = serde_json::from_slice(&v4.stdout).expect("v4 JSON");
    let ask = document["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .position(|round| round["round_type"] == "ASK")
        .expect("an ASK round");
    assert_eq!(
        document["rounds"][ask]["public_key_b58"],
        document["rounds"][ask]["signature"]["signer_public_key_b58"]
    );
    document["metadata"]["pactum_envelopes"][ask]["body"]["price"]["amount_minor"] = Value::from(1);
    let file = home.write_file("v4-altered.json", serde_json::to_string(&document).expect("json").as_bytes());
    let altered = home.run(&["transcript", "verify", file.to_str().expect("utf-8")]);
    assert!(stdout(&altered).contains("ROUND_CONTENT_UNSIGNED"), "{}", stdout(&altered));

    // The same check from the command line, on the files each side exports.
    let export_file = |constellation: &str, stream: &str, name: &str| {
        let output = home.run(&["--constellation", constellation, "transcript", "export", stream]);
        assert_ok(&output);
        home.write_file(name, &output.stdout).to_str().expect("utf-8").to_owned()
    };
    let buyer_file = export_file("buyer", &buyer_stream, "buyer.jsonl");
    let seller_file = export_file("seller", &seller_streams[0], "seller.jsonl");
    let agree = home.run(&["transcript", "agree", &buyer_file, &seller_file, "--json"]);
    assert_ok(&agree);
    assert_eq!(json(&agree)["agree"], true);
    assert_eq!(
        json(&agree)["buyer_messages"].as_u64().unwrap_or(0) + json(&agree)["provider_messages"].as_u64().unwrap_or(0),
        shared as u64
    );

    // A second negotiation is a second stream on the provider's side; each agrees.
    let second = negotiate(&home, &directory, "5", &[]);
    assert!(matches!(second["phase"].as_str(), Some("completed" | "failed")), "{second}");
    let seller_streams = streams(&home, "seller");
    assert_eq!(seller_streams.len(), 2);
    let second_id = second["session_id"].as_str().expect("session id");
    let second_record = seller_streams.iter().find(|s| s.contains(second_id)).expect("its record");
    let second_file = export_file("seller", second_record, "second.jsonl");
    let mismatched = home.run(&["transcript", "agree", &buyer_file, &second_file]);
    let line = common::assert_fails(&mismatched, 1, "TRANSCRIPTS_DISAGREE");
    assert!(line.contains("session"), "{line}");
    let edited =
        std::fs::read_to_string(&seller_file).expect("read").replacen("\"amount_minor\":", "\"amount_minor\":1", 1);
    let edited_file = home.write_file("edited.jsonl", edited.as_bytes());
    let tampered_run = home.run(&["transcript", "agree", &buyer_file, edited_file.to_str().expect("utf-8")]);
    common::assert_fails(&tampered_run, 1, "TRANSCRIPT_TAMPERED");

    // An altered copy of the provider's message no longer agrees.
    let mut tampered = seller_events.clone();
    for event in &mut tampered {
        if event.kind.as_str() == "remote.sent" {
            event.body["answer"]["message"]["price"]["amount_minor"] = Value::from(1);
        }
    }
    assert!(pactum_runtime::remote::host::shared_messages(&buyer_events, &tampered).is_err());
}

#[test]
fn the_same_inputs_make_the_same_buyer_messages() {
    // Two buyers, two sellers, same seeds and clock: the buyers' transcripts differ only where
    // the provider's clock shows (its seal's time), never in what was asked or agreed.
    let home = Home::new();
    let server = Server::start(&home, "seller", "7");
    let directory = directory(&home, "remote.toml", std::slice::from_ref(&server.entry));
    let first = negotiate(&home, &directory, "4", &[]);
    let second_home = Home::new();
    let second_server = Server::start(&second_home, "seller", "7");
    let second_directory = directory_for(&second_home, &second_server);
    let second = negotiate(&second_home, &second_directory, "4", &[]);
    assert_eq!(first["session_id"], second["session_id"]);
    assert_eq!(first["agreement"]["price"], second["agreement"]["price"]);
    assert_eq!(first["rounds"], second["rounds"]);
}

fn directory_for(home: &Home, server: &Server) -> PathBuf {
    directory(home, "remote.toml", std::slice::from_ref(&server.entry))
}

/// A listener that answers every connection with `respond`, on a thread of its own.
fn fake_server(respond: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond(stream));
        }
    });
    endpoint
}

/// Reads the request's head and body (by Content-Length) so the client is not reset early;
/// returns the body.
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return Vec::new();
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return Vec::new();
    }
    body
}

fn failure_of(home: &Home, session: &Value) -> (String, Option<String>) {
    let code = session["failure"]["code"].as_str().unwrap_or_default().to_owned();
    let session_id = session["session_id"].as_str().expect("session id");
    let events = export(home, "buyer", &format!("session:{session_id}"));
    let reason = events
        .iter()
        .find(|e| e.kind.as_str() == "provider.invalid_answer")
        .and_then(|e| e.body["reason"].as_str().map(str::to_owned));
    (code, reason)
}

#[test]
fn each_network_fault_becomes_its_failure_code() {
    let home = Home::new();
    let server = Server::start(&home, "seller", "7");
    let entry = &server.entry;

    // Nothing listens: refused at once.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let unavailable = fake_server(|mut stream| {
        read_request(&mut stream);
        let body = r#"{"error":{"code":"BUSY","message":"busy"}}"#;
        let _ = write!(stream, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    });
    let silent = fake_server(|mut stream| {
        read_request(&mut stream);
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let not_http = fake_server(|mut stream| {
        read_request(&mut stream);
        let _ = stream.write_all(b"this is not HTTP at all\r\n\r\n");
    });
    let wrong_json = fake_server(|mut stream| {
        read_request(&mut stream);
        let body = r#"{"format":"pactum-remote/1","kind":"round.ask","message":{"price":"cheap"}}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let oversized = fake_server(|mut stream| {
        read_request(&mut stream);
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n");
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..8 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let oversized_chunked = fake_server(|mut stream| {
        read_request(&mut stream);
        let _ =
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..8 {
            if write!(stream, "{:x}\r\n", chunk.len()).is_err() || stream.write_all(&chunk).is_err() {
                return;
            }
            let _ = stream.write_all(b"\r\n");
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    });
    let error_status = fake_server(|mut stream| {
        read_request(&mut stream);
        let _ = write!(stream, "HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n");
    });
    // The real provider, but the buyer's directory pins another provider's key.
    let impostor = Server::start(&home, "impostor", "7");
    let forged_key = entry.replace(&server.public_key, &impostor.public_key);
    assert_ne!(&forged_key, entry);

    /// What was done, the directory entry, extra arguments, the failure code and the reason.
    type Case<'a> = (&'a str, String, &'a [&'a str], &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        ("connection refused", moved(entry, &closed), &[], "PACT-310", None),
        ("503 unavailable", moved(entry, &unavailable), &[], "PACT-310", None),
        ("no answer", moved(entry, &silent), &["--latency-ms", "300"], "PACT-311", None),
        ("not HTTP", moved(entry, &not_http), &[], "PACT-313", Some("MALFORMED")),
        ("wrong JSON", moved(entry, &wrong_json), &[], "PACT-313", Some("MALFORMED")),
        ("oversized body", moved(entry, &oversized), &[], "PACT-313", Some("BODY_TOO_LARGE")),
        ("oversized chunked body", moved(entry, &oversized_chunked), &[], "PACT-313", Some("BODY_TOO_LARGE")),
        ("error status", moved(entry, &error_status), &[], "PACT-313", Some("HTTP_STATUS")),
        ("another key", forged_key, &[], "PACT-313", Some("SIGNATURE_INVALID")),
    ];
    for (index, (name, entry, extra, code, reason)) in cases.into_iter().enumerate() {
        let directory = directory(&home, &format!("fault-{index}.toml"), &[entry]);
        let session = negotiate(&home, &directory, &format!("{}", 100 + index), extra);
        assert_eq!(session["phase"], "failed", "{name}: {session}");
        let (found_code, found_reason) = failure_of(&home, &session);
        assert_eq!(found_code, code, "{name}: {session}");
        assert_eq!(found_reason.as_deref(), reason, "{name}");
    }
    // Every failed session still verifies and replays; nothing was paid.
    let check = home.run(&["--constellation", "buyer", "constellation", "check", "--json"]);
    assert_ok(&check);
}

#[test]
fn bad_remote_entries_are_refused_with_the_line() {
    let home = Home::new();
    let cases = [
        ("endpoint = \"https://127.0.0.1:1\"", "only http://"),
        ("endpoint = \"http://127.0.0.1:1/path\"", "must not have a path"),
        ("endpoint = \"http://127.0.0.1\"", "a host and a port"),
        ("key_id = \"agent:someone-else#1\"", "key_id must be agent:acme#"),
        ("public_key = \"AAAA\"", "public_key"),
    ];
    for (index, (line, expected)) in cases.into_iter().enumerate() {
        let base = [
            "id = \"acme\"",
            "name = \"Acme\"",
            "intent_types = [\"weather.data\"]",
            "currency = \"USD\"",
            "endpoint = \"http://127.0.0.1:7301\"",
            "key_id = \"agent:acme#1\"",
            "public_key = \"50m0r7iJetdpvgqKOzVynG4CEI_znsUv7VexYZadHXo\"",
        ];
        let field = line.split(" = ").next().expect("field");
        let body: Vec<String> =
            base.iter().map(|l| if l.starts_with(field) { line.to_owned() } else { (*l).to_owned() }).collect();
        let entry = format!("[[remote]]\n{}\n", body.join("\n"));
        let file = directory(&home, &format!("bad-{index}.toml"), &[entry]);
        let output = home.run(&["--directory", file.to_str().expect("utf-8"), "providers", "list"]);
        let line = common::assert_fails(&output, 2, "DIRECTORY_INVALID");
        assert!(line.contains(expected), "{line}");
    }
}

#[test]
fn two_providers_served_from_one_constellation_keep_separate_records() {
    let home = Home::new();
    let nimbus = Server::start_provider(&home, "seller", "7", Some("nimbus-weather"));
    let stratus = Server::start_provider(&home, "seller", "7", Some("stratus-weather"));
    let directory = directory(&home, "two.toml", &[nimbus.entry.clone(), stratus.entry.clone()]);
    for seed in ["11", "12", "13"] {
        let session = negotiate(&home, &directory, seed, &[]);
        let session_id = session["session_id"].as_str().expect("session id");
        let events = export(&home, "buyer", &format!("session:{session_id}"));
        assert!(
            !events.iter().any(|e| e.kind.as_str() == "provider.invalid_answer"),
            "seed {seed}: {:?}",
            events.iter().map(|e| e.body.clone()).collect::<Vec<_>>()
        );
        let records: Vec<String> = streams(&home, "seller").into_iter().filter(|s| s.contains(session_id)).collect();
        assert_eq!(records.len(), 2, "one record per provider: {records:?}");
        for record in &records {
            let provider_events = export(&home, "seller", record);
            pactum_runtime::remote::host::agreement(&events, &provider_events).expect("agree");
        }
    }
    let check = home.run(&["--constellation", "seller", "constellation", "check", "--json"]);
    assert_ok(&check);
}

/// A provider that signs correctly but refuses with its own reason: the buyer cannot record
/// that message as the protocol's REJECT (whose reason is `refused`), so it records an invalid
/// answer and the session ends, rather than failing to record it again on every resume.
#[test]
fn a_sealed_refusal_with_another_reason_is_an_invalid_answer_not_a_stuck_session() {
    use pactum_transcripts::{Digest, Ed25519Signer, KeyId, public_key_to_base64url};
    let signer = Ed25519Signer::from_seed(KeyId::new("agent:odd-weather#1").expect("key id"), &[5; 32]);
    let public_key = public_key_to_base64url(&signer.verifying_key());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let body = read_request(&mut stream);
            if body.is_empty() {
                continue;
            }
            let request: Value = serde_json::from_slice(&body).expect("a quote request");
            let session_id = request["session_id"].as_str().expect("session").to_owned();
            let offer = request["events"].as_array().expect("events").last().expect("the offer").clone();
            let reply_to: Digest = offer["hash"].as_str().expect("hash").parse().expect("digest");
            let message = serde_json::json!({
                "round": request["round"], "round_type": "REJECT", "sender": "odd-weather",
                "receiver": request["buyer"]["agent_id"], "reason": "busy", "latency_ms": 5,
                "in_reply_to": offer["seq"],
            });
            let seal =
                pactum_runtime::remote::seal_message(&signer, &session_id, "round.reject", &message, &reply_to, 1)
                    .expect("seal");
            let mut sealed = message;
            sealed["envelope"] = serde_json::to_value(&seal).expect("seal json");
            let answer = serde_json::json!({ "format": "pactum-remote/1", "kind": "round.reject", "message": sealed });
            let text = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
        }
    });
    let entry = format!(
        "[[remote]]\nid = \"odd-weather\"\nname = \"Odd Weather\"\nintent_types = [\"weather.data\"]\ncurrency = \"USD\"\n\
         endpoint = \"{endpoint}\"\nkey_id = \"agent:odd-weather#1\"\npublic_key = \"{public_key}\"\n"
    );
    let home = Home::new();
    let directory = directory(&home, "odd.toml", &[entry]);
    let session = negotiate(&home, &directory, "3", &[]);
    assert_eq!(session["phase"], "failed", "{session}");
    let (code, reason) = failure_of(&home, &session);
    assert_eq!((code.as_str(), reason.as_deref()), ("PACT-313", Some("MESSAGE_MISMATCH")));
    let check = home.run(&["--constellation", "buyer", "constellation", "check", "--json"]);
    assert_ok(&check);
}
