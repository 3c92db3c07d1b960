//! Every rail, end to end: the rail's evidence becomes rail-neutral `PaymentEvidence`, a PEAC
//! receipt is issued with its commerce extension and signed with Ed25519, `peac::verify` accepts
//! it under a JWKS, and the verified commerce facts are the evidence's. For the external rails
//! (x402, Stripe objects, Stripe webhooks), negative vectors: missing or tampered evidence makes
//! `Rail::commit` (or `refund`) fail closed with `RailError::EvidenceInvalid` and the reason.
//! Property tests: any amount in either mode round-trips; any altered byte of a signed webhook
//! is refused.
//!
//! Fixtures are in tests/fixtures/rails/: x402 payment requirements and an `X-PAYMENT-RESPONSE`
//! value on base-sepolia, a Stripe PaymentIntent, and `payment_intent.succeeded` and
//! `charge.refunded` webhook events, all for 12.34 USD in test mode.

use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::rails::external::{EvidenceInbox, ExternalRail, InboundEvidence, MemoryInbox, WebhookSecret};
use pactum_runtime::rails::{Env, EvidenceReason, PaymentEvidence, PaymentStatus};
use pactum_runtime::{
    Currency, LedgerRail, Money, PaymentRequest, Rail, RailError, RailEvidence, RailPhase, fund_wallet,
};
use pactum_transcripts::peac::{self, Claims, Jwks, RecordKind, VerifyOptions, did_key_for_ed25519, uuid_v7};
use pactum_transcripts::{Ed25519Signer, KeyId};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rails");
/// The fixtures' time: webhooks are signed at it, and receipts issued at it.
const NOW_S: u64 = 1_763_874_001;
const KID: &str = "agent:nimbus-weather#1";
const WEBHOOK_SECRET: &str = "whsec_5f1c2d7e9a0b4c3d8e6f1a2b";
const PAYMENT_INTENT: &str = "pi_3QkR2vLkdIwHu7ix0Wn8Zr4T";
const X402_TRANSACTION: &str = "0x5e1d1b7b3f2c8a4f9e0d6c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

fn usd(minor: u64) -> Money {
    Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
}

fn payment(id: &str, amount: Money) -> PaymentRequest {
    PaymentRequest { payment_id: id.into(), payer: "buyer".into(), payee: "nimbus-weather".into(), amount }
}

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(KeyId::new(KID).expect("kid"), &[11; 32])
}

/// Issues the PEAC record of `evidence`, verifies it, and checks that the verified commerce
/// extension carries exactly the evidence's facts.
#[track_caller]
fn round_trip(evidence: &PaymentEvidence) {
    let signer = signer();
    let public_key = *signer.verifying_key().as_bytes();
    let claims = Claims::new(
        RecordKind::Evidence,
        "org.peacprotocol/payment",
        did_key_for_ed25519(&public_key),
        NOW_S,
        uuid_v7(NOW_S * 1_000, [3; 10]),
    )
    .with_commerce(&evidence.to_commerce());
    let jws = peac::issue(&claims, &signer, KID).expect("issues");
    let mut jwks = Jwks::new();
    jwks.insert(KID, public_key).expect("key");
    let issuer = did_key_for_ed25519(&public_key);
    let options = VerifyOptions { now_s: NOW_S, issuer: Some(&issuer), revoked_kids: &[] };
    let verified = peac::verify(&jws, &jwks, &options).expect("verifies");
    let commerce = &verified.claims["extensions"][peac::COMMERCE_EXTENSION];
    assert_eq!(commerce["payment_rail"], evidence.rail.as_str());
    assert_eq!(commerce["amount_minor"], evidence.amount.amount_minor().to_string());
    assert_eq!(commerce["currency"], evidence.amount.currency().code());
    assert_eq!(commerce["reference"], evidence.reference.as_str());
    assert_eq!(commerce["env"], evidence.env.as_str());
    assert_eq!(*commerce, evidence.to_commerce_extension());
    assert_eq!(verified.receipt_ref, peac::receipt_ref(&jws));
}

/// HMAC-SHA256 written here, so the test does not lean on the adapter's own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0_u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new().chain_update(block.map(|k| k ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(block.map(|k| k ^ 0x5c)).chain_update(inner).finalize().to_vec()
}

fn stripe_signature(payload: &[u8], timestamp_s: u64, secret: &str) -> String {
    let mut signed = format!("{timestamp_s}.").into_bytes();
    signed.extend_from_slice(payload);
    let mac: String = hmac_sha256(secret.as_bytes(), &signed).iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp_s},v1={mac}")
}

fn signed_webhook(payload: Vec<u8>) -> InboundEvidence {
    let signature_header = stripe_signature(&payload, NOW_S, WEBHOOK_SECRET);
    InboundEvidence::StripeWebhook { payload, signature_header }
}

fn x402_evidence(requirements: &Value) -> InboundEvidence {
    let payment_response = fixture("x402-payment-response.txt").trim_ascii().to_vec();
    InboundEvidence::X402 { requirements: requirements.to_string().into_bytes(), payment_response }
}

fn x402_rail(env: Env) -> (Arc<MemoryInbox>, ExternalRail<Arc<MemoryInbox>>) {
    let inbox = Arc::new(MemoryInbox::new());
    (Arc::clone(&inbox), ExternalRail::x402(env, inbox))
}

fn stripe_rail(env: Env, secret: Option<&str>) -> (Arc<MemoryInbox>, ExternalRail<Arc<MemoryInbox>>) {
    let inbox = Arc::new(MemoryInbox::new());
    (Arc::clone(&inbox), ExternalRail::stripe(env, secret.map(WebhookSecret::new), inbox))
}

/// The `data.object` of a webhook fixture: the API object it carries.
fn api_object(event_fixture: &str) -> Value {
    fixture_json(event_fixture)["data"]["object"].clone()
}

/// Sets `path` (members separated by '/') in a JSON value; `None` removes the member.
fn tampered(mut value: Value, path: &str, field: Option<Value>) -> Value {
    let (parents, name) = path.rsplit_once('/').map_or(("", path), |(parents, name)| (parents, name));
    let mut target = &mut value;
    for parent in parents.split('/').filter(|part| !part.is_empty()) {
        target = &mut target[parent];
    }
    let object = target.as_object_mut().expect("object");
    match field {
        Some(field) => object.insert(name.to_owned(), field),
        None => object.remove(name),
    };
    value
}

fn at_ms(seconds: u64) -> u64 {
    seconds * 1_000
}

/// Commits and expects `EvidenceInvalid` with `reason`.
#[track_caller]
fn commit_refused<I: EvidenceInbox>(rail: &ExternalRail<I>, request: &PaymentRequest, reason: EvidenceReason) {
    let error = rail.commit(request, at_ms(NOW_S)).expect_err("must fail closed");
    assert!(matches!(error, RailError::EvidenceInvalid(_)), "{error}");
    assert_eq!(error.evidence_reason(), Some(reason), "{error}");
    assert!(error.to_string().contains(reason.as_str()), "{error}");
}

#[test]
fn ledger_round_trip() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(Constellation::open(dir.path().join("c.db")).expect("open"));
    fund_wallet(&db, "buyer", usd(5_000), "funding:buyer", 1).expect("fund");
    let rail = LedgerRail::new(Arc::clone(&db));
    let request = payment("ses-ledger", usd(1_234));
    rail.prepare(&request, 2).expect("prepare");
    let committed = rail.commit(&request, 3).expect("commit");
    let evidence = PaymentEvidence::from_ledger(&committed, Env::Test).expect("evidence");
    assert_eq!((evidence.status, evidence.amount), (PaymentStatus::Settled, usd(1_234)));
    assert_eq!(evidence.reference, committed.reference);
    round_trip(&evidence);
    let refunded = rail.refund(&request, 4).expect("refund");
    let evidence = PaymentEvidence::from_ledger(&refunded, Env::Live).expect("evidence");
    assert_eq!(evidence.status, PaymentStatus::Refunded);
    round_trip(&evidence);
}

#[test]
fn x402_round_trip() {
    let (inbox, rail) = x402_rail(Env::Test);
    let request = payment("ses-x402", usd(1_234));
    let prepared = rail.prepare(&request, at_ms(NOW_S)).expect("prepare");
    assert_eq!(prepared.reference, "ses-x402:prepare");
    inbox.deliver("ses-x402", RailPhase::Commit, x402_evidence(&fixture_json("x402-requirements.json")));
    let committed = rail.commit(&request, at_ms(NOW_S)).expect("commit");
    assert_eq!((committed.rail, committed.reference.as_str()), ("x402", X402_TRANSACTION));
    assert_eq!((committed.amount_minor, committed.currency, committed.applied_now), (1_234, "USD", true));
    // Idempotent: the same evidence again gives the same evidence; nothing is accepted twice.
    let again = rail.commit(&request, at_ms(NOW_S + 60)).expect("commit again");
    assert_eq!(again, RailEvidence { applied_now: false, ..committed.clone() });
    let evidence = rail.accepted("ses-x402", RailPhase::Commit).expect("accepted");
    assert_eq!(evidence.asset.as_deref(), Some("eip155:84532/erc20:0x036cbd53842c5426634e7929541ec2318f3dcf7e"));
    assert_eq!((evidence.reference.as_str(), evidence.env), (X402_TRANSACTION, Env::Test));
    round_trip(&evidence);
    assert_eq!(evidence.to_commerce_extension()["asset"], evidence.asset.as_deref().expect("asset"));
}

#[test]
fn stripe_payment_intent_round_trip() {
    let (inbox, rail) = stripe_rail(Env::Test, None);
    let request = payment("ses-stripe", usd(1_234));
    rail.prepare(&request, at_ms(NOW_S)).expect("prepare");
    inbox.deliver(
        "ses-stripe",
        RailPhase::Commit,
        InboundEvidence::StripeObject(fixture("stripe-payment-intent.json")),
    );
    let committed = rail.commit(&request, at_ms(NOW_S)).expect("commit");
    assert_eq!((committed.rail, committed.reference.as_str()), ("stripe", PAYMENT_INTENT));
    assert_eq!(rail.commit(&request, at_ms(NOW_S)).expect("again").reference, committed.reference);
    let evidence = rail.accepted("ses-stripe", RailPhase::Commit).expect("accepted");
    assert_eq!((evidence.status, evidence.event.as_deref()), (PaymentStatus::Settled, None));
    round_trip(&evidence);

    // The refund: the Charge of the same PaymentIntent, as the API returns it after a refund.
    let charge = api_object("stripe-webhook-charge-refunded.json");
    inbox.deliver("ses-stripe", RailPhase::Refund, InboundEvidence::StripeObject(charge.to_string().into_bytes()));
    let refunded = rail.refund(&request, at_ms(NOW_S + 3_600)).expect("refund");
    assert_eq!((refunded.phase, refunded.reference.as_str()), (RailPhase::Refund, PAYMENT_INTENT));
    let evidence = rail.accepted("ses-stripe", RailPhase::Refund).expect("accepted");
    assert_eq!(evidence.status, PaymentStatus::Refunded);
    round_trip(&evidence);
}

#[test]
fn stripe_webhook_round_trip() {
    let (inbox, rail) = stripe_rail(Env::Test, Some(WEBHOOK_SECRET));
    let request = payment("ses-hook", usd(1_234));
    rail.prepare(&request, at_ms(NOW_S)).expect("prepare");
    let succeeded = signed_webhook(fixture("stripe-webhook-payment-intent-succeeded.json"));
    inbox.deliver("ses-hook", RailPhase::Commit, succeeded);
    let committed = rail.commit(&request, at_ms(NOW_S + 5)).expect("commit");
    assert_eq!(committed.reference, PAYMENT_INTENT);
    // A retry long after the signature's tolerance still returns the accepted step.
    let again = rail.commit(&request, at_ms(NOW_S + 86_400)).expect("retry");
    assert_eq!(again.reference, committed.reference);
    let evidence = rail.accepted("ses-hook", RailPhase::Commit).expect("accepted");
    assert_eq!(evidence.event.as_deref(), Some("payment_intent.succeeded"));
    round_trip(&evidence);

    let refund = signed_webhook(fixture("stripe-webhook-charge-refunded.json"));
    inbox.deliver("ses-hook", RailPhase::Refund, refund);
    rail.refund(&request, at_ms(NOW_S + 10)).expect("refund");
    let evidence = rail.accepted("ses-hook", RailPhase::Refund).expect("accepted");
    assert_eq!((evidence.status, evidence.event.as_deref()), (PaymentStatus::Refunded, Some("charge.refunded")));
    round_trip(&evidence);
}

#[test]
fn abort_before_commit_needs_no_evidence_and_after_commit_is_refused() {
    let (inbox, rail) = x402_rail(Env::Test);
    let request = payment("ses-abort", usd(1_234));
    rail.prepare(&request, 1).expect("prepare");
    let aborted = rail.abort(&request, 2).expect("abort");
    assert_eq!((aborted.phase, aborted.reference.as_str()), (RailPhase::Abort, "ses-abort:abort"));
    assert!(!rail.abort(&request, 3).expect("abort again").applied_now);
    inbox.deliver("ses-abort", RailPhase::Commit, x402_evidence(&fixture_json("x402-requirements.json")));
    assert!(matches!(rail.commit(&request, 4), Err(RailError::Refused(_))), "no commit after abort");

    let (inbox, rail) = x402_rail(Env::Test);
    let request = payment("ses-paid", usd(1_234));
    inbox.deliver("ses-paid", RailPhase::Commit, x402_evidence(&fixture_json("x402-requirements.json")));
    assert!(matches!(rail.abort(&request, 1), Err(RailError::Refused(_))), "commit evidence: refund instead");
    rail.commit(&request, 2).expect("commit");
    assert!(matches!(rail.abort(&request, 3), Err(RailError::Refused(_))), "no abort after commit");
}

#[test]
fn prepare_refuses_what_the_rail_cannot_pay() {
    let euro = Money::from_minor(1_234, Currency::parse("EUR").expect("EUR")).expect("amount");
    let (_, rail) = x402_rail(Env::Live);
    assert!(matches!(rail.prepare(&payment("p", euro), 1), Err(RailError::Refused(_))), "x402 pays USDC only");
    let (_, rail) = stripe_rail(Env::Live, None);
    rail.prepare(&payment("p", euro), 1).expect("Stripe pays in EUR");
    let krona = Money::from_minor(1_234, Currency::parse("ISK").expect("ISK")).expect("amount");
    assert!(matches!(rail.prepare(&payment("p", krona), 1), Err(RailError::Refused(_))), "ISK is not in minor units");
    let mut to_self = payment("p", usd(5));
    to_self.payee = to_self.payer.clone();
    assert!(matches!(rail.prepare(&to_self, 1), Err(RailError::Refused(_))));
}

#[test]
fn negative_vectors_for_the_x402_rail() {
    use EvidenceReason as R;
    let requirements = fixture_json("x402-requirements.json");
    let request = payment("ses-x", usd(1_234));
    let check = |env: Env, inbound: Option<InboundEvidence>, request: &PaymentRequest, reason: R| {
        let (inbox, rail) = x402_rail(env);
        if let Some(inbound) = inbound {
            inbox.deliver(&request.payment_id, RailPhase::Commit, inbound);
        }
        commit_refused(&rail, request, reason);
    };
    check(Env::Test, None, &request, R::EvidenceMissing);
    check(Env::Live, Some(x402_evidence(&requirements)), &request, R::EnvMismatch);
    check(Env::Test, Some(x402_evidence(&requirements)), &payment("ses-x", usd(1_235)), R::AmountMismatch);
    let euro = Money::from_minor(1_234, Currency::parse("EUR").expect("EUR")).expect("amount");
    check(Env::Test, Some(x402_evidence(&requirements)), &payment("ses-x", euro), R::CurrencyMismatch);
    let cheaper = tampered(requirements.clone(), "maxAmountRequired", Some(json!("12330000")));
    check(Env::Test, Some(x402_evidence(&cheaper)), &request, R::AmountMismatch);
    let as_number = tampered(requirements.clone(), "maxAmountRequired", Some(json!(12_340_000)));
    check(Env::Test, Some(x402_evidence(&as_number)), &request, R::AmountInvalid);
    for field in ["maxAmountRequired", "network", "asset", "scheme", "payTo"] {
        let missing = tampered(requirements.clone(), field, None);
        check(Env::Test, Some(x402_evidence(&missing)), &request, R::FieldMissing);
    }
    let mainnet = tampered(requirements.clone(), "network", Some(json!("base")));
    check(Env::Live, Some(x402_evidence(&mainnet)), &request, R::AssetUnknown);
    let upto = tampered(requirements.clone(), "scheme", Some(json!("upto")));
    check(Env::Test, Some(x402_evidence(&upto)), &request, R::SchemeUnsupported);
    let mut header = fixture("x402-payment-response.txt").trim_ascii().to_vec();
    header[10] = b'!';
    let garbled =
        InboundEvidence::X402 { requirements: requirements.to_string().into_bytes(), payment_response: header };
    check(Env::Test, Some(garbled), &request, R::EncodingInvalid);
    let stripe = InboundEvidence::StripeObject(fixture("stripe-payment-intent.json"));
    check(Env::Test, Some(stripe), &request, R::ObjectUnexpected);

    // A refund needs refund evidence, and x402 has none: the settlement itself is not one.
    let (inbox, rail) = x402_rail(Env::Test);
    inbox.deliver("ses-x", RailPhase::Commit, x402_evidence(&requirements));
    rail.commit(&request, 1).expect("commit");
    let error = rail.refund(&request, 2).expect_err("no refund evidence");
    assert_eq!(error.evidence_reason(), Some(R::EvidenceMissing), "{error}");
    inbox.deliver("ses-x", RailPhase::Refund, x402_evidence(&requirements));
    let error = rail.refund(&request, 2).expect_err("a settlement is not a refund");
    assert_eq!(error.evidence_reason(), Some(R::StatusMismatch), "{error}");
}

#[test]
fn negative_vectors_for_the_stripe_object_rail() {
    use EvidenceReason as R;
    let intent = fixture_json("stripe-payment-intent.json");
    let request = payment("ses-s", usd(1_234));
    let check = |env: Env, object: Option<Value>, reason: R| {
        let (inbox, rail) = stripe_rail(env, None);
        if let Some(object) = object {
            inbox.deliver("ses-s", RailPhase::Commit, InboundEvidence::StripeObject(object.to_string().into_bytes()));
        }
        commit_refused(&rail, &request, reason);
    };
    check(Env::Test, None, R::EvidenceMissing);
    check(Env::Live, Some(intent.clone()), R::EnvMismatch);
    check(Env::Test, Some(tampered(intent.clone(), "livemode", Some(json!(true)))), R::EnvMismatch);
    check(Env::Test, Some(tampered(intent.clone(), "currency", Some(json!("eur")))), R::CurrencyMismatch);
    check(Env::Test, Some(tampered(intent.clone(), "amount_received", Some(json!(1_000)))), R::AmountMismatch);
    check(Env::Test, Some(tampered(intent.clone(), "amount_received", Some(json!(1234.0)))), R::AmountInvalid);
    for field in ["currency", "amount", "amount_received", "livemode", "status", "id"] {
        check(Env::Test, Some(tampered(intent.clone(), field, None)), R::FieldMissing);
    }
    check(Env::Test, Some(tampered(intent.clone(), "currency", Some(Value::Null))), R::FieldMissing);
    check(Env::Test, Some(tampered(intent.clone(), "status", Some(json!("processing")))), R::StatusMismatch);
    check(Env::Test, Some(tampered(intent.clone(), "status", Some(json!("requires_action")))), R::StatusUnhandled);
    check(Env::Test, Some(fixture_json("stripe-webhook-payment-intent-succeeded.json")), R::ObjectUnexpected);
    let (inbox, rail) = stripe_rail(Env::Test, None);
    let duplicated = br#"{"id":"pi_1","id":"pi_2"}"#.to_vec();
    inbox.deliver("ses-s", RailPhase::Commit, InboundEvidence::StripeObject(duplicated));
    commit_refused(&rail, &request, R::JsonDuplicateMember);

    // Once a commit is accepted, other bytes for it must name the same PaymentIntent.
    let (inbox, rail) = stripe_rail(Env::Test, None);
    inbox.deliver("ses-s", RailPhase::Commit, InboundEvidence::StripeObject(intent.to_string().into_bytes()));
    rail.commit(&request, 1).expect("commit");
    let other = tampered(intent.clone(), "id", Some(json!("pi_3QkR2vLkdIwHu7ix0Other00")));
    inbox.deliver("ses-s", RailPhase::Commit, InboundEvidence::StripeObject(other.to_string().into_bytes()));
    commit_refused(&rail, &request, R::ReferenceMismatch);

    // A refund of another PaymentIntent, or of part of the payment, is not this refund.
    let charge = api_object("stripe-webhook-charge-refunded.json");
    let refund_refused = |charge: Value, reason: R| {
        let (inbox, rail) = stripe_rail(Env::Test, None);
        inbox.deliver("ses-s", RailPhase::Commit, InboundEvidence::StripeObject(intent.to_string().into_bytes()));
        inbox.deliver("ses-s", RailPhase::Refund, InboundEvidence::StripeObject(charge.to_string().into_bytes()));
        let error = rail.refund(&request, 1).expect_err("must fail closed");
        assert_eq!(error.evidence_reason(), Some(reason), "{error}");
    };
    refund_refused(
        tampered(charge.clone(), "payment_intent", Some(json!("pi_3QkR2vLkdIwHu7ix0Other00"))),
        R::ReferenceMismatch,
    );
    let partial =
        tampered(tampered(charge.clone(), "amount_refunded", Some(json!(600))), "refunded", Some(json!(false)));
    refund_refused(partial, R::AmountMismatch);
    refund_refused(tampered(charge.clone(), "refunded", Some(json!(false))), R::FieldInvalid);
    refund_refused(intent.clone(), R::StatusMismatch);
}

#[test]
fn negative_vectors_for_the_stripe_webhook_rail() {
    use EvidenceReason as R;
    let payload = fixture("stripe-webhook-payment-intent-succeeded.json");
    let request = payment("ses-w", usd(1_234));
    let check = |secret: Option<&str>, inbound: InboundEvidence, commit_at_s: u64, reason: R| {
        let (inbox, rail) = stripe_rail(Env::Test, secret);
        inbox.deliver("ses-w", RailPhase::Commit, inbound);
        let error = rail.commit(&request, at_ms(commit_at_s)).expect_err("must fail closed");
        assert_eq!(error.evidence_reason(), Some(reason), "{error}");
    };
    // Signed, then altered: the amount received changed after signing.
    let mut altered = payload.clone();
    let signature_header = stripe_signature(&payload, NOW_S, WEBHOOK_SECRET);
    let text = String::from_utf8(altered.clone())
        .expect("UTF-8")
        .replace("\"amount_received\": 1234", "\"amount_received\": 1000");
    assert_ne!(text.as_bytes(), payload.as_slice(), "the fixture has the field to alter");
    altered = text.into_bytes();
    check(
        Some(WEBHOOK_SECRET),
        InboundEvidence::StripeWebhook { payload: altered, signature_header },
        NOW_S,
        R::SignatureMismatch,
    );
    let wrong_secret = stripe_signature(&payload, NOW_S, "whsec_other");
    let inbound = InboundEvidence::StripeWebhook { payload: payload.clone(), signature_header: wrong_secret };
    check(Some(WEBHOOK_SECRET), inbound, NOW_S, R::SignatureMismatch);
    check(Some(WEBHOOK_SECRET), signed_webhook(payload.clone()), NOW_S + 301, R::SignatureExpired);
    check(None, signed_webhook(payload.clone()), NOW_S, R::SignatureMismatch);
    let inbound = InboundEvidence::StripeWebhook { payload: payload.clone(), signature_header: "v1=00".into() };
    check(Some(WEBHOOK_SECRET), inbound, NOW_S, R::SignatureHeaderInvalid);
    // Validly signed but not this payment: other currency, no currency, a pending payment.
    let event = fixture_json("stripe-webhook-payment-intent-succeeded.json");
    let resigned = |value: Value| signed_webhook(value.to_string().into_bytes());
    check(
        Some(WEBHOOK_SECRET),
        resigned(tampered(event.clone(), "data/object/currency", Some(json!("eur")))),
        NOW_S,
        R::CurrencyMismatch,
    );
    check(
        Some(WEBHOOK_SECRET),
        resigned(tampered(event.clone(), "data/object/currency", None)),
        NOW_S,
        R::FieldMissing,
    );
    check(Some(WEBHOOK_SECRET), resigned(tampered(event.clone(), "livemode", None)), NOW_S, R::FieldMissing);
    let processing = tampered(
        tampered(event.clone(), "type", Some(json!("payment_intent.processing"))),
        "data/object/status",
        Some(json!("processing")),
    );
    check(Some(WEBHOOK_SECRET), resigned(processing), NOW_S, R::StatusMismatch);
    check(
        Some(WEBHOOK_SECRET),
        resigned(tampered(event.clone(), "type", Some(json!("charge.succeeded")))),
        NOW_S,
        R::EventUnhandled,
    );
    let live = tampered(tampered(event, "livemode", Some(json!(true))), "data/object/livemode", Some(json!(true)));
    check(Some(WEBHOOK_SECRET), resigned(live), NOW_S, R::EnvMismatch);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, failure_persistence: None, ..Default::default() })]

    /// Any amount in either mode, delivered as a signed webhook, round-trips into a verified
    /// receipt; the payment asked for in the other mode is refused.
    #[test]
    fn any_signed_payment_round_trips(minor in 1_u64..=pactum_runtime::AMOUNT_MINOR_MAX, live: bool) {
        let mut event = fixture_json("stripe-webhook-payment-intent-succeeded.json");
        for field in ["amount", "amount_received"] {
            event["data"]["object"][field] = json!(minor);
        }
        event["livemode"] = json!(live);
        event["data"]["object"]["livemode"] = json!(live);
        let env = if live { Env::Live } else { Env::Test };
        let request = payment("ses-any", usd(minor));
        let (inbox, rail) = stripe_rail(env, Some(WEBHOOK_SECRET));
        inbox.deliver("ses-any", RailPhase::Commit, signed_webhook(event.to_string().into_bytes()));
        let committed = rail.commit(&request, at_ms(NOW_S)).expect("commit");
        proptest::prop_assert_eq!(committed.amount_minor, minor);
        round_trip(&rail.accepted("ses-any", RailPhase::Commit).expect("accepted"));
        let other_env = if live { Env::Test } else { Env::Live };
        let (inbox, rail) = stripe_rail(other_env, Some(WEBHOOK_SECRET));
        inbox.deliver("ses-any", RailPhase::Commit, signed_webhook(event.to_string().into_bytes()));
        let error = rail.commit(&request, at_ms(NOW_S)).expect_err("other environment");
        proptest::prop_assert_eq!(error.evidence_reason(), Some(EvidenceReason::EnvMismatch));
    }

    /// Changing any byte of a signed webhook after signing fails closed on the signature.
    #[test]
    fn any_altered_byte_of_a_signed_webhook_is_refused(index in 0_usize..4_096, delta in 1_u8..=255) {
        let payload = fixture("stripe-webhook-payment-intent-succeeded.json");
        let signature_header = stripe_signature(&payload, NOW_S, WEBHOOK_SECRET);
        let mut altered = payload.clone();
        let index = index % altered.len();
        altered[index] = altered[index].wrapping_add(delta);
        let (inbox, rail) = stripe_rail(Env::Test, Some(WEBHOOK_SECRET));
        let inbound = InboundEvidence::StripeWebhook { payload: altered, signature_header };
        inbox.deliver("ses-alt", RailPhase::Commit, inbound);
        let error = rail.commit(&payment("ses-alt", usd(1_234)), at_ms(NOW_S)).expect_err("altered");
        proptest::prop_assert_eq!(error.evidence_reason(), Some(EvidenceReason::SignatureMismatch));
    }

    /// Any whole number of cents paid over x402 round-trips; a payment of anything else than
    /// the required amount is refused.
    #[test]
    fn any_x402_amount_round_trips(cents in 1_u64..=1_000_000_000_000) {
        let mut requirements = fixture_json("x402-requirements.json");
        requirements["maxAmountRequired"] = json!((u128::from(cents) * 10_000).to_string());
        let (inbox, rail) = x402_rail(Env::Test);
        inbox.deliver("ses-any", RailPhase::Commit, x402_evidence(&requirements));
        rail.commit(&payment("ses-any", usd(cents)), at_ms(NOW_S)).expect("commit");
        round_trip(&rail.accepted("ses-any", RailPhase::Commit).expect("accepted"));
        let (inbox, rail) = x402_rail(Env::Test);
        inbox.deliver("ses-any", RailPhase::Commit, x402_evidence(&requirements));
        let error = rail.commit(&payment("ses-any", usd(cents + 1)), at_ms(NOW_S)).expect_err("other amount");
        proptest::prop_assert_eq!(error.evidence_reason(), Some(EvidenceReason::AmountMismatch));
    }
}
