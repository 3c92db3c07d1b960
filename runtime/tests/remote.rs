//! The remote protocol without the network: envelope seals, and the provider host's checks of
//! what buyers send it (each refusal with its status and code), its idempotent answers and its
//! record of each buyer session.

use std::sync::Arc;

use serde_json::{Value, json};

use pactum_memory::Constellation;
use pactum_runtime::remote::host::{HostReply, ProviderHost, QuoteResponse, remote_kind};
use pactum_runtime::remote::{REMOTE_FORMAT, seal_message, verify_seal};
use pactum_runtime::{Directory, ManualClock};
use pactum_transcripts::{
    Digest, Ed25519Signer, Event, EventKind, EventSigner, KeyId, StreamId, public_key_to_base64url,
};

const NOW: u64 = 1_700_000_000_000;
const SESSION: &str = "s-0123456789abcdef";

fn signer(agent: &str, seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed(KeyId::new(format!("agent:{agent}#1")).expect("key id"), &[seed; 32])
}

#[test]
fn a_seal_covers_the_session_the_kind_every_field_and_the_offer_it_answers() {
    let provider = signer("acme", 1);
    let public_key = public_key_to_base64url(&provider.verifying_key());
    let message = json!({ "round": 1, "round_type": "ASK", "sender": "acme", "receiver": "buyer",
        "price": { "amount_minor": 42, "currency": "USD" }, "latency_ms": 10, "in_reply_to": 3 });
    let offer = Digest::tagged(b"test\0", b"offer");
    let seal = seal_message(&provider, SESSION, "round.ask", &message, &offer, NOW).expect("seal");
    let key_id = "agent:acme#1";
    verify_seal(&seal, &public_key, key_id, SESSION, "round.ask", &message).expect("verifies");
    // The seal inside the message is not part of what is signed.
    let mut with_seal = message.clone();
    with_seal["envelope"] = serde_json::to_value(&seal).expect("json");
    verify_seal(&seal, &public_key, key_id, SESSION, "round.ask", &with_seal).expect("verifies with itself inside");

    let mut cheaper = message.clone();
    cheaper["price"]["amount_minor"] = json!(41);
    assert!(verify_seal(&seal, &public_key, key_id, SESSION, "round.ask", &cheaper).is_err());
    assert!(verify_seal(&seal, &public_key, key_id, "s-ffffffffffffffff", "round.ask", &message).is_err());
    assert!(verify_seal(&seal, &public_key, key_id, SESSION, "round.reject", &message).is_err());
    let mut other_offer = seal.clone();
    other_offer.reply_to = Digest::tagged(b"test\0", b"another offer").to_hex();
    assert!(verify_seal(&other_offer, &public_key, key_id, SESSION, "round.ask", &message).is_err());
    let stranger = public_key_to_base64url(&signer("acme", 2).verifying_key());
    assert!(verify_seal(&seal, &stranger, key_id, SESSION, "round.ask", &message).is_err());
    assert!(verify_seal(&seal, &public_key, "agent:acme#2", SESSION, "round.ask", &message).is_err());
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<Constellation>,
    host: ProviderHost,
    buyer: Ed25519Signer,
    provider: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp");
    let db = Arc::new(Constellation::open(dir.path().join("seller.db")).expect("open"));
    let directory = Directory::builtin().expect("built-in directory");
    let spec = directory
        .providers()
        .iter()
        .find(|p| {
            p.failures.timeout_percent == 0 && p.failures.unreachable_percent == 0 && p.failures.refusal_percent == 0
        })
        .or_else(|| directory.providers().first())
        .expect("a provider")
        .clone();
    let provider = spec.id.clone();
    let host = ProviderHost::open(db.clone(), spec, 7, [9; 32], Arc::new(ManualClock::new(NOW))).expect("host");
    Fixture { _dir: dir, db, host, buyer: signer("buyer", 3), provider }
}

impl Fixture {
    fn buyer_body(&self) -> Value {
        json!({ "agent_id": "buyer", "key_id": "agent:buyer#1",
            "public_key": public_key_to_base64url(&self.buyer.verifying_key()) })
    }

    /// The buyer's `round.intent` and `round.bid`, sealed as in its session stream.
    fn buyer_events(&self) -> Vec<Event> {
        let stream = StreamId::new(format!("session:{SESSION}")).expect("stream");
        let intent_type = self.host.identity().intent_types[0].clone();
        let currency = self.host.identity().currency.clone();
        let intent = json!({ "round": 1, "round_type": "INTENT", "sender": "buyer", "receivers": [self.provider],
            "intent_type": intent_type, "scope": "test", "currency": currency, "latency_ms_max": null,
            "deadline_ms": null, "settlement_mode": "escrow", "nonce": "n1" });
        let bid = json!({ "round": 1, "round_type": "BID", "sender": "buyer", "receivers": [self.provider],
            "price": { "amount_minor": 1, "currency": currency }, "nonce": "n2" });
        let signer: &dyn EventSigner = &self.buyer;
        let first = Event::seal(
            stream.clone(),
            2,
            EventKind::new("round.intent").expect("kind"),
            intent,
            NOW,
            Digest::tagged(b"test\0", b"head"),
            Some(signer),
        )
        .expect("seal");
        let second =
            Event::seal(stream, 3, EventKind::new("round.bid").expect("kind"), bid, NOW, first.hash, Some(signer))
                .expect("seal");
        vec![first, second]
    }

    fn quote(&self, events: &[Event], buyer: Value) -> HostReply {
        let request = json!({ "format": REMOTE_FORMAT, "session_id": SESSION, "buyer": buyer, "round": 1,
            "wait_ms": 2000, "events": events.iter().map(Event::to_json).collect::<Vec<_>>() });
        self.host.quote(serde_json::to_vec(&request).expect("json").as_slice())
    }

    fn stream_kinds(&self) -> Vec<String> {
        let streams = pactum_runtime::list_streams(&self.db).expect("streams");
        let stream = streams.iter().find(|s| s.stream.as_str().starts_with("remote:")).expect("a remote stream");
        let (_, events) = pactum_runtime::stream_events(&self.db, stream.stream.as_str()).expect("events");
        events.iter().map(|e| e.kind.as_str().to_owned()).collect()
    }
}

#[track_caller]
fn assert_refused(reply: &HostReply, status: u16, code: &str) {
    match reply {
        HostReply::Error { status: found, code: found_code, message } => {
            assert_eq!((*found, *found_code), (status, code), "{message}");
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

#[test]
fn the_host_answers_once_and_records_both_sides() {
    let fixture = fixture();
    let events = fixture.buyer_events();
    let first = fixture.quote(&events, fixture.buyer_body());
    let HostReply::Ok(answer) = &first else { panic!("{first:?}") };
    let response: QuoteResponse = serde_json::from_value(answer.clone()).expect("a quote response");
    assert!(matches!(response.kind.as_str(), "round.ask" | "round.reject"), "{}", response.kind);
    let seal = serde_json::from_value(response.message["envelope"].clone()).expect("sealed");
    let identity = fixture.host.identity();
    verify_seal(&seal, &identity.public_key, &identity.key_id, SESSION, &response.kind, &response.message)
        .expect("the seal verifies under the provider's key");
    assert_eq!(seal.reply_to, events[1].hash.to_hex(), "it answers the bid");

    // Asked again (a retry after a lost response): the same message, nothing recorded twice.
    assert_eq!(fixture.quote(&events, fixture.buyer_body()), first);
    assert_eq!(
        fixture.stream_kinds(),
        [remote_kind::OPENED, remote_kind::RECEIVED, remote_kind::RECEIVED, remote_kind::SENT]
    );
    // The provider's stream verifies with its own keys.
    let streams = pactum_runtime::list_streams(&fixture.db).expect("streams");
    let report = pactum_runtime::verify_stream(&fixture.db, streams[0].stream.as_str()).expect("verify");
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
}

#[test]
fn the_host_refuses_what_it_cannot_check() {
    let fixture = fixture();
    let events = fixture.buyer_events();

    assert_refused(&fixture.host.quote(b"not json"), 400, "REQUEST_INVALID");
    assert_refused(&fixture.host.quote(&[0xff, 0xfe]), 400, "REQUEST_INVALID");
    assert_refused(&fixture.host.quote(br#"{"format":"pactum-remote/1"}"#), 400, "REQUEST_INVALID");

    // A body changed after sealing: the hash no longer matches.
    let mut tampered = events.clone();
    tampered[1].body["price"]["amount_minor"] = json!(2);
    assert_refused(&fixture.quote(&tampered, fixture.buyer_body()), 403, "SIGNATURE_INVALID");

    // Events sealed by someone else than the buyer named.
    let mut impostor = fixture.buyer_body();
    impostor["public_key"] = json!(public_key_to_base64url(&signer("buyer", 4).verifying_key()));
    assert_refused(&fixture.quote(&events, impostor), 403, "SIGNATURE_INVALID");

    // No offer for the round asked about.
    assert_refused(&fixture.quote(&events[..1], fixture.buyer_body()), 422, "REQUEST_INVALID");

    // The same buyer key under another agent id, once the session is opened.
    let HostReply::Ok(_) = fixture.quote(&events, fixture.buyer_body()) else { panic!("a valid request") };
    let mut renamed = fixture.buyer_body();
    renamed["agent_id"] = json!("someone-else");
    renamed["key_id"] = json!("agent:buyer#1");
    assert_refused(&fixture.quote(&events, renamed), 409, "BUYER_MISMATCH");

    // A receipt for a price the provider never asked.
    let request = json!({ "format": REMOTE_FORMAT, "session_id": SESSION, "buyer": fixture.buyer_body(),
        "events": events.iter().map(Event::to_json).collect::<Vec<_>>(), "receipt": {} });
    assert_refused(
        &fixture.host.receipt(serde_json::to_vec(&request).expect("json").as_slice()),
        422,
        "REQUEST_INVALID",
    );
}
