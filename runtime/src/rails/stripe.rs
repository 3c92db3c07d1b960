//! Stripe: evidence from a PaymentIntent object or a `payment_intent.*` webhook event.
//!
//! A PaymentIntent gives the amount in integer minor units (`amount`, and `amount_received` for
//! what was actually collected), the currency in lowercase ISO 4217, `livemode` (live or test
//! money), its id `pi_…` (the reference) and its `status`. A webhook event wraps one in
//! `data.object` and adds its own `type` and `livemode`, which must agree with the object.
//!
//! A refund is evidenced by a Charge (`object` `charge`, from the API or in a `charge.refunded`
//! webhook): `amount_refunded` of the charge's `amount`, and the PaymentIntent it belongs to
//! (`payment_intent`, the reference, so a refund names the payment it pays back).
//!
//! Webhook payloads are signed: the `Stripe-Signature` header holds `t=<unix seconds>` and one or
//! more `v1=<hex HMAC-SHA256 of "<t>.<payload>" under the endpoint secret>`. Check it with
//! [`verified_webhook_evidence`] before trusting an event that arrived over the network.

use serde_json::{Map, Value};

use super::mac::{decode_lower_hex, equal_in_constant_time, hmac_sha256};
use super::{
    Env, EvidenceReason, PaymentEvidence, PaymentStatus, RailEvidenceError, check_reference, parse_object, reject,
    required, required_bool, required_object, required_str,
};
use crate::money::{Currency, Money};

/// The rail id in evidence and receipts.
pub const RAIL: &str = "stripe";

/// The webhook signature header.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Longest object or event read, in bytes: a PaymentIntent event is a few KiB; expanded
/// sub-objects can add tens more. Anything larger is not a payment we read.
pub const PAYLOAD_BYTES_MAX: usize = 262_144;

/// Longest `Stripe-Signature` value read, in bytes: a timestamp and a few signatures (several
/// while an endpoint secret is being rolled).
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 4_096;

/// How far the signed timestamp may be from `now`, in seconds (Stripe's own default), against
/// replays of an old, validly signed event.
pub const SIGNATURE_TOLERANCE_S: u64 = 300;

/// Webhook types read, each with the PaymentIntent status it must carry and what that means.
pub const HANDLED_EVENTS: &[(&str, &str, PaymentStatus)] = &[
    ("payment_intent.succeeded", "succeeded", PaymentStatus::Settled),
    ("payment_intent.processing", "processing", PaymentStatus::Pending),
    ("payment_intent.amount_capturable_updated", "requires_capture", PaymentStatus::Pending),
    ("payment_intent.payment_failed", "requires_payment_method", PaymentStatus::Failed),
    ("payment_intent.canceled", "canceled", PaymentStatus::Failed),
];

/// The webhook type that evidences a refund (its object is a Charge).
pub const REFUND_EVENT: &str = "charge.refunded";

/// Currencies whose Stripe amounts are not in ISO 4217 minor units (Stripe counts ISK and UGX
/// in hundredths although they have none), so reading them would be off by a hundred.
const STRIPE_UNIT_EXCEPTIONS: &[&str] = &["isk", "ugx"];

/// Evidence from a PaymentIntent object (as the API returns it).
pub fn payment_intent_evidence(json: &[u8]) -> Result<PaymentEvidence, RailEvidenceError> {
    let object = parse_object(json, PAYLOAD_BYTES_MAX, "PaymentIntent")?;
    read_payment_intent(&object)
}

/// Evidence from an API object, by its `object`: a PaymentIntent (a payment) or a Charge (a
/// refund). A webhook event is refused here: it is evidence only with its signature
/// ([`verified_webhook_evidence`]).
pub fn object_evidence(json: &[u8]) -> Result<PaymentEvidence, RailEvidenceError> {
    let object = parse_object(json, PAYLOAD_BYTES_MAX, "Stripe object")?;
    match required_str(&object, "object")? {
        "payment_intent" => read_payment_intent(&object),
        "charge" => RefundedCharge::read(&object)?.evidence(None),
        "event" => reject(EvidenceReason::ObjectUnexpected, "a webhook event is evidence only with its signature"),
        other => {
            reject(EvidenceReason::ObjectUnexpected, format!("object {other:?} is not a payment_intent or charge"))
        }
    }
}

fn read_payment_intent(object: &Map<String, Value>) -> Result<PaymentEvidence, RailEvidenceError> {
    let intent = PaymentIntent::read(object)?;
    let status = match intent.status {
        "succeeded" => PaymentStatus::Settled,
        "processing" | "requires_capture" => PaymentStatus::Pending,
        "canceled" => PaymentStatus::Failed,
        other => return reject(EvidenceReason::StatusUnhandled, format!("PaymentIntent status {other:?}")),
    };
    intent.evidence(status, None)
}

/// Refund evidence from a Charge object (as the API returns it): `amount_refunded` of the charge,
/// referenced by its PaymentIntent. A charge that refunded nothing is refused.
pub fn charge_refund_evidence(json: &[u8]) -> Result<PaymentEvidence, RailEvidenceError> {
    let object = parse_object(json, PAYLOAD_BYTES_MAX, "Charge")?;
    RefundedCharge::read(&object)?.evidence(None)
}

/// Whether Stripe amounts in `currency` are in ISO 4217 minor units (so Pactum can read them).
pub fn currency_supported(currency: Currency) -> bool {
    !STRIPE_UNIT_EXCEPTIONS.contains(&currency.code().to_ascii_lowercase().as_str())
}

/// Evidence from a webhook event payload, without checking its signature: for payloads that
/// did not come over the network (or whose signature was checked elsewhere).
pub fn webhook_evidence(json: &[u8]) -> Result<PaymentEvidence, RailEvidenceError> {
    let event = parse_object(json, PAYLOAD_BYTES_MAX, "webhook event")?;
    let kind = required_str(&event, "object")?;
    if kind != "event" {
        return reject(EvidenceReason::ObjectUnexpected, format!("object {kind:?} is not an event"));
    }
    let id = required_str(&event, "id")?;
    if !stripe_id(id, "evt_") {
        return reject(EvidenceReason::FieldInvalid, format!("event id {id:?} is not evt_…"));
    }
    let event_type = required_str(&event, "type")?;
    if event_type == REFUND_EVENT {
        let livemode = required_bool(&event, "livemode")?;
        let charge = RefundedCharge::read(required_object(required_object(&event, "data")?, "object")?)?;
        if charge.livemode != livemode {
            return reject(EvidenceReason::LivemodeMismatch, "the event and its Charge disagree on livemode");
        }
        return charge.evidence(Some(event_type));
    }
    let Some(&(_, status_required, status)) = HANDLED_EVENTS.iter().find(|(name, _, _)| *name == event_type) else {
        return reject(EvidenceReason::EventUnhandled, format!("event type {event_type:?}"));
    };
    let livemode = required_bool(&event, "livemode")?;
    let data = required_object(&event, "data")?;
    let intent = PaymentIntent::read(required_object(data, "object")?)?;
    if intent.livemode != livemode {
        return reject(EvidenceReason::LivemodeMismatch, "the event and its PaymentIntent disagree on livemode");
    }
    if intent.status != status_required {
        return reject(
            EvidenceReason::EventStatusMismatch,
            format!("{event_type} carries a PaymentIntent in status {:?}", intent.status),
        );
    }
    intent.evidence(status, Some(event_type))
}

/// Checks a webhook's `Stripe-Signature` against its raw payload, then reads the event.
pub fn verified_webhook_evidence(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    now_s: u64,
) -> Result<PaymentEvidence, RailEvidenceError> {
    verify_signature(payload, signature_header, secret, now_s)?;
    webhook_evidence(payload)
}

/// Checks that one `v1` signature in the header is HMAC-SHA256 of `"<t>.<payload>"` under the
/// secret, and that `t` is within [`SIGNATURE_TOLERANCE_S`] of `now_s` either way.
pub fn verify_signature(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    now_s: u64,
) -> Result<(), RailEvidenceError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return reject(EvidenceReason::InputTooLarge, format!("payload is {} bytes", payload.len()));
    }
    let malformed = |why: &str| RailEvidenceError::new(EvidenceReason::SignatureHeaderInvalid, why.to_owned());
    if signature_header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(malformed("header too long"));
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in signature_header.split(',') {
        let Some((name, value)) = part.split_once('=') else { return Err(malformed("item without '='")) };
        match name {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(malformed("two timestamps")),
            "v1" => signatures.push(decode_lower_hex(value).ok_or_else(|| malformed("v1 is not lowercase hex"))?),
            _ => {}
        }
    }
    let timestamp_text = timestamp.ok_or_else(|| malformed("no timestamp"))?;
    let digits = !timestamp_text.is_empty() && timestamp_text.bytes().all(|b| b.is_ascii_digit());
    let timestamp_s: u64 = timestamp_text
        .parse()
        .ok()
        .filter(|_| digits && timestamp_text.len() <= 12)
        .ok_or_else(|| malformed("timestamp is not seconds"))?;
    if signatures.is_empty() {
        return Err(malformed("no v1 signature"));
    }
    let mut signed = Vec::with_capacity(timestamp_text.len() + 1 + payload.len());
    signed.extend_from_slice(timestamp_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(payload);
    let mac = hmac_sha256(secret.as_bytes(), &signed);
    // Every candidate is compared, so timing does not reveal which one matched.
    let matched = signatures.iter().fold(false, |found, candidate| found | equal_in_constant_time(&mac, candidate));
    if !matched {
        return reject(EvidenceReason::SignatureMismatch, "no v1 signature matches the payload");
    }
    if now_s.abs_diff(timestamp_s) > SIGNATURE_TOLERANCE_S {
        return reject(
            EvidenceReason::SignatureExpired,
            format!("signed at {timestamp_s}, now {now_s}: more than {SIGNATURE_TOLERANCE_S} s apart"),
        );
    }
    Ok(())
}

/// A Stripe id: the prefix then letters, digits and underscores.
fn stripe_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The fields of a PaymentIntent that evidence uses, checked.
struct PaymentIntent<'a> {
    id: &'a str,
    amount: u64,
    amount_received: u64,
    currency: Currency,
    livemode: bool,
    status: &'a str,
}

impl<'a> PaymentIntent<'a> {
    fn read(object: &'a Map<String, Value>) -> Result<Self, RailEvidenceError> {
        let kind = required_str(object, "object")?;
        if kind != "payment_intent" {
            return reject(EvidenceReason::ObjectUnexpected, format!("object {kind:?} is not a payment_intent"));
        }
        let id = required_str(object, "id")?;
        if !stripe_id(id, "pi_") {
            return reject(EvidenceReason::ReferenceInvalid, format!("PaymentIntent id {id:?} is not pi_…"));
        }
        check_reference(id)?;
        let amount = minor_units(object, "amount")?;
        if amount == 0 {
            return reject(EvidenceReason::AmountInvalid, "amount is zero");
        }
        let amount_received = minor_units(object, "amount_received")?;
        if amount_received > amount {
            return reject(EvidenceReason::AmountInvalid, "amount_received exceeds amount");
        }
        let currency = stripe_currency(object)?;
        let livemode = required_bool(object, "livemode")?;
        let status = required_str(object, "status")?;
        Ok(Self { id, amount, amount_received, currency, livemode, status })
    }

    /// Settled evidence is for what was collected; anything else for what was asked.
    fn evidence(&self, status: PaymentStatus, event: Option<&str>) -> Result<PaymentEvidence, RailEvidenceError> {
        let minor = if status == PaymentStatus::Settled { self.amount_received } else { self.amount };
        if minor == 0 {
            return reject(EvidenceReason::AmountInvalid, "a settled PaymentIntent received nothing");
        }
        let amount = Money::from_minor(minor, self.currency)
            .map_err(|error| RailEvidenceError::new(EvidenceReason::AmountInvalid, error.to_string()))?;
        Ok(PaymentEvidence {
            rail: RAIL.to_owned(),
            amount,
            reference: self.id.to_owned(),
            env: if self.livemode { Env::Live } else { Env::Test },
            event: event.map(str::to_owned),
            asset: None,
            status,
        })
    }
}

/// A Charge that has refunded some or all of what it collected, checked.
struct RefundedCharge<'a> {
    payment_intent: &'a str,
    amount_refunded: u64,
    currency: Currency,
    livemode: bool,
}

impl<'a> RefundedCharge<'a> {
    fn read(object: &'a Map<String, Value>) -> Result<Self, RailEvidenceError> {
        let kind = required_str(object, "object")?;
        if kind != "charge" {
            return reject(EvidenceReason::ObjectUnexpected, format!("object {kind:?} is not a charge"));
        }
        let id = required_str(object, "id")?;
        if !stripe_id(id, "ch_") && !stripe_id(id, "py_") {
            return reject(EvidenceReason::FieldInvalid, format!("charge id {id:?} is not ch_… or py_…"));
        }
        // The refund's reference is the payment it pays back; a charge without one cannot say.
        let payment_intent = required_str(object, "payment_intent")?;
        if !stripe_id(payment_intent, "pi_") {
            return reject(EvidenceReason::ReferenceInvalid, format!("payment_intent {payment_intent:?} is not pi_…"));
        }
        check_reference(payment_intent)?;
        let amount = minor_units(object, "amount")?;
        let amount_refunded = minor_units(object, "amount_refunded")?;
        if amount == 0 || amount_refunded > amount {
            return reject(EvidenceReason::AmountInvalid, "amount is zero or amount_refunded exceeds it");
        }
        let refunded = required_bool(object, "refunded")?;
        if refunded != (amount_refunded == amount) {
            return reject(EvidenceReason::FieldInvalid, "refunded disagrees with amount_refunded and amount");
        }
        if amount_refunded == 0 {
            return reject(EvidenceReason::StatusUnhandled, "the charge refunded nothing");
        }
        let currency = stripe_currency(object)?;
        let livemode = required_bool(object, "livemode")?;
        Ok(Self { payment_intent, amount_refunded, currency, livemode })
    }

    fn evidence(&self, event: Option<&str>) -> Result<PaymentEvidence, RailEvidenceError> {
        let amount = Money::from_minor(self.amount_refunded, self.currency)
            .map_err(|error| RailEvidenceError::new(EvidenceReason::AmountInvalid, error.to_string()))?;
        Ok(PaymentEvidence {
            rail: RAIL.to_owned(),
            amount,
            reference: self.payment_intent.to_owned(),
            env: if self.livemode { Env::Live } else { Env::Test },
            event: event.map(str::to_owned),
            asset: None,
            status: PaymentStatus::Refunded,
        })
    }
}

/// `currency`: lowercase ISO 4217 that Stripe counts in ISO minor units.
fn stripe_currency(object: &Map<String, Value>) -> Result<Currency, RailEvidenceError> {
    let currency_text = required_str(object, "currency")?;
    let lowercase = currency_text.len() == 3 && currency_text.bytes().all(|b| b.is_ascii_lowercase());
    if !lowercase || STRIPE_UNIT_EXCEPTIONS.contains(&currency_text) {
        return reject(EvidenceReason::CurrencyUnknown, format!("currency {currency_text:?}"));
    }
    Currency::parse(currency_text)
        .map_err(|error| RailEvidenceError::new(EvidenceReason::CurrencyUnknown, error.to_string()))
}

/// An integer number of minor units: a JSON integer, never a float or a string.
fn minor_units(object: &Map<String, Value>, name: &str) -> Result<u64, RailEvidenceError> {
    let value = required(object, name)?;
    match value {
        Value::Number(number) if number.is_u64() => number
            .as_u64()
            .ok_or_else(|| RailEvidenceError::new(EvidenceReason::AmountInvalid, format!("{name} {value}"))),
        _ => reject(EvidenceReason::AmountInvalid, format!("{name} {value} is not a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rails::ExpectedPayment;

    const SECRET: &str = "whsec_test_secret";
    const NOW_S: u64 = 1_750_000_000;

    fn intent() -> Value {
        json!({
            "id": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
            "object": "payment_intent",
            "amount": 2000,
            "amount_capturable": 0,
            "amount_received": 2000,
            "currency": "usd",
            "livemode": false,
            "status": "succeeded",
            "metadata": {}
        })
    }

    fn event(kind: &str, intent: Value) -> Value {
        json!({
            "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
            "object": "event",
            "api_version": "2024-06-20",
            "created": 1_750_000_000,
            "type": kind,
            "livemode": false,
            "data": {"object": intent}
        })
    }

    fn succeeded() -> Value {
        event("payment_intent.succeeded", intent())
    }

    fn with(mut value: Value, name: &str, field: Option<Value>) -> Value {
        let object = value.as_object_mut().expect("object");
        match field {
            Some(field) => object.insert(name.to_owned(), field),
            None => object.remove(name),
        };
        value
    }

    fn bytes(value: &Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    fn sign(payload: &[u8], timestamp_s: u64, secret: &str) -> String {
        let mut signed = format!("{timestamp_s}.").into_bytes();
        signed.extend_from_slice(payload);
        let mac: String = hmac_sha256(secret.as_bytes(), &signed).iter().map(|b| format!("{b:02x}")).collect();
        format!("t={timestamp_s},v1={mac}")
    }

    fn usd(minor: u64) -> Money {
        Money::from_minor(minor, Currency::parse("USD").expect("USD")).expect("amount")
    }

    #[test]
    fn payment_intents_and_events_round_trip_into_evidence() {
        let evidence = payment_intent_evidence(&bytes(&intent())).expect("valid");
        assert_eq!(evidence.amount, usd(2000));
        assert_eq!((evidence.env, evidence.status), (Env::Test, PaymentStatus::Settled));
        assert_eq!(evidence.reference, "pi_3MtwBwLkdIwHu7ix28a3tqPa");
        let expected =
            ExpectedPayment { amount: usd(2000), env: Env::Test, status: PaymentStatus::Settled, reference: None };
        assert_eq!(evidence.expect(&expected), Ok(()));

        let payload = bytes(&succeeded());
        let header = sign(&payload, NOW_S, SECRET);
        let evidence = verified_webhook_evidence(&payload, &header, SECRET, NOW_S + 10).expect("valid");
        assert_eq!(
            evidence.to_commerce_extension(),
            json!({
                "payment_rail": "stripe",
                "amount_minor": "2000",
                "currency": "USD",
                "reference": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
                "env": "test",
                "event": "payment_intent.succeeded"
            })
        );
        // Zero-decimal currencies stay in their own units; live mode is live money.
        let yen = with(with(intent(), "currency", Some(json!("jpy"))), "livemode", Some(json!(true)));
        let evidence = payment_intent_evidence(&bytes(&yen)).expect("valid");
        assert_eq!(evidence.amount.to_string(), "2000 JPY");
        assert_eq!(evidence.env, Env::Live);
        // Other handled events map to their statuses.
        let failed = with(intent(), "status", Some(json!("requires_payment_method")));
        let evidence = webhook_evidence(&bytes(&event("payment_intent.payment_failed", failed))).expect("valid");
        assert_eq!(evidence.status, PaymentStatus::Failed);
        let processing = with(with(intent(), "status", Some(json!("processing"))), "amount_received", Some(json!(0)));
        let evidence = payment_intent_evidence(&bytes(&processing)).expect("valid");
        assert_eq!((evidence.status, evidence.amount), (PaymentStatus::Pending, usd(2000)));
        // A second v1 (a secret being rolled) may be the one that matches.
        let header = format!("t={NOW_S},v1={},{}", "00".repeat(32), &sign(&payload, NOW_S, SECRET)[13..]);
        assert_eq!(verify_signature(&payload, &header, SECRET, NOW_S), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn every_amount_and_mode_round_trips(minor in 1_u64..=crate::money::AMOUNT_MINOR_MAX, live: bool) {
            let value = with(with(intent(), "amount", Some(json!(minor))), "amount_received", Some(json!(minor)));
            let value = with(value, "livemode", Some(json!(live)));
            let evidence = payment_intent_evidence(&bytes(&value)).expect("valid");
            proptest::prop_assert_eq!(evidence.amount, usd(minor));
            proptest::prop_assert_eq!(evidence.env, if live { Env::Live } else { Env::Test });
            proptest::prop_assert_eq!(&evidence.to_commerce_extension()["amount_minor"], &json!(minor.to_string()));
        }
    }

    #[track_caller]
    fn intent_rejected(value: Value, reason: EvidenceReason) {
        let error = payment_intent_evidence(&bytes(&value)).expect_err("must be rejected");
        assert_eq!(error.code(), "RAIL_EVIDENCE_INVALID");
        assert_eq!(error.reason(), reason, "{error}");
        // The same object inside an event is refused for the same reason.
        let wrapped = event("payment_intent.succeeded", value);
        assert_eq!(webhook_evidence(&bytes(&wrapped)).map_err(|e| e.reason()), Err(reason));
    }

    #[test]
    fn negative_vectors_for_payment_intents() {
        use EvidenceReason as R;
        for field in ["id", "object", "amount", "amount_received", "currency", "livemode", "status"] {
            intent_rejected(with(intent(), field, None), R::FieldMissing);
            intent_rejected(with(intent(), field, Some(Value::Null)), R::FieldMissing);
        }
        for amount in [json!(2000.0), json!(20.5), json!("2000"), json!(-2000), json!(0)] {
            intent_rejected(with(intent(), "amount", Some(amount)), R::AmountInvalid);
        }
        intent_rejected(with(intent(), "amount_received", Some(json!(2000.0))), R::AmountInvalid);
        intent_rejected(with(intent(), "amount_received", Some(json!(2001))), R::AmountInvalid);
        intent_rejected(with(intent(), "amount_received", Some(json!(0))), R::AmountInvalid);
        intent_rejected(
            with(with(intent(), "amount", Some(json!(1_u64 << 53))), "amount_received", Some(json!(0))),
            R::JsonNumberOutOfRange,
        );
        for currency in ["xyz", "USD", "usdc", "", "isk", "ugx"] {
            intent_rejected(with(intent(), "currency", Some(json!(currency))), R::CurrencyUnknown);
        }
        intent_rejected(with(intent(), "currency", Some(json!(840))), R::FieldInvalid);
        intent_rejected(with(intent(), "livemode", Some(json!("false"))), R::FieldInvalid);
        intent_rejected(with(intent(), "object", Some(json!("charge"))), R::ObjectUnexpected);
        for id in ["ch_3MtwBwLkdIwHu7ix28a3tqPa", "pi_", "pi_ spaces", "pi_x\n"] {
            intent_rejected(with(intent(), "id", Some(json!(id))), R::ReferenceInvalid);
        }
        let long_id = format!("pi_{}", "a".repeat(300));
        intent_rejected(with(intent(), "id", Some(json!(long_id))), R::ReferenceInvalid);
        for status in ["requires_payment_method", "requires_confirmation", "requires_action", "refunded"] {
            let error = payment_intent_evidence(&bytes(&with(intent(), "status", Some(json!(status)))));
            assert_eq!(error.map_err(|e| e.reason()), Err(R::StatusUnhandled), "{status}");
        }
    }

    #[track_caller]
    fn event_rejected(value: &Value, reason: EvidenceReason) {
        let error = webhook_evidence(&bytes(value)).expect_err("must be rejected");
        assert_eq!(error.reason(), reason, "{error}");
    }

    #[test]
    fn negative_vectors_for_webhook_events() {
        use EvidenceReason as R;
        for field in ["id", "object", "type", "livemode", "data"] {
            event_rejected(&with(succeeded(), field, None), R::FieldMissing);
        }
        event_rejected(&with(succeeded(), "data", Some(json!({}))), R::FieldMissing);
        event_rejected(&with(succeeded(), "data", Some(json!([]))), R::FieldInvalid);
        event_rejected(&with(succeeded(), "id", Some(json!("pi_123"))), R::FieldInvalid);
        event_rejected(&with(succeeded(), "object", Some(json!("payment_intent"))), R::ObjectUnexpected);
        for kind in ["charge.succeeded", "payment_intent.created", "charge.refund.updated", "payment_intent.SUCCEEDED"]
        {
            event_rejected(&with(succeeded(), "type", Some(json!(kind))), R::EventUnhandled);
        }
        event_rejected(&with(succeeded(), "livemode", Some(json!(true))), R::LivemodeMismatch);
        let canceled = with(intent(), "status", Some(json!("canceled")));
        event_rejected(&event("payment_intent.succeeded", canceled), R::EventStatusMismatch);
        event_rejected(&event("payment_intent.canceled", intent()), R::EventStatusMismatch);
        let reject_bytes = |bytes: &[u8], reason: EvidenceReason| {
            assert_eq!(webhook_evidence(bytes).map_err(|e| e.reason()), Err(reason));
            assert_eq!(payment_intent_evidence(bytes).map_err(|e| e.reason()), Err(reason));
        };
        reject_bytes(br#"{"object":"event","object":"event"}"#, R::JsonDuplicateMember);
        reject_bytes(br#"{"object":"payment_intent","#, R::JsonInvalid);
        reject_bytes(b"[]", R::JsonInvalid);
        reject_bytes(b"{\"id\":\"\xff\"}", R::EncodingInvalid);
        let mut oversized = bytes(&succeeded());
        oversized.resize(PAYLOAD_BYTES_MAX + 1, b' ');
        reject_bytes(&oversized, R::InputTooLarge);
    }

    #[test]
    fn expectation_mismatches_are_rejected() {
        use EvidenceReason as R;
        let evidence = payment_intent_evidence(&bytes(&intent())).expect("valid");
        let expected =
            ExpectedPayment { amount: usd(2000), env: Env::Test, status: PaymentStatus::Settled, reference: None };
        let check = |expected: ExpectedPayment| evidence.expect(&expected).map_err(|e| e.reason());
        assert_eq!(check(ExpectedPayment { amount: usd(1999), ..expected.clone() }), Err(R::AmountMismatch));
        let eur = Money::from_minor(2000, Currency::parse("EUR").expect("EUR")).expect("amount");
        assert_eq!(check(ExpectedPayment { amount: eur, ..expected.clone() }), Err(R::CurrencyMismatch));
        assert_eq!(check(ExpectedPayment { env: Env::Live, ..expected.clone() }), Err(R::EnvMismatch));
        let pending = ExpectedPayment { status: PaymentStatus::Pending, ..expected.clone() };
        assert_eq!(check(pending), Err(R::StatusMismatch));
        let other = ExpectedPayment { reference: Some("pi_other".into()), ..expected.clone() };
        assert_eq!(check(other), Err(R::ReferenceMismatch));
        // A partial capture settles for what was received, not what was asked.
        let partial = with(intent(), "amount_received", Some(json!(1500)));
        let evidence = payment_intent_evidence(&bytes(&partial)).expect("valid");
        assert_eq!(evidence.expect(&expected).map_err(|e| e.reason()), Err(R::AmountMismatch));
    }

    #[test]
    fn negative_vectors_for_signatures() {
        use EvidenceReason as R;
        let payload = bytes(&succeeded());
        let good = sign(&payload, NOW_S, SECRET);
        let check = |payload: &[u8], header: &str, now_s: u64| {
            verified_webhook_evidence(payload, header, SECRET, now_s).map(|_| ()).map_err(|e| e.reason())
        };
        assert_eq!(check(&payload, &good, NOW_S + SIGNATURE_TOLERANCE_S), Ok(()));
        assert_eq!(check(&payload, &good, NOW_S - SIGNATURE_TOLERANCE_S), Ok(()));
        assert_eq!(check(&payload, &good, NOW_S + SIGNATURE_TOLERANCE_S + 1), Err(R::SignatureExpired));
        assert_eq!(check(&payload, &good, NOW_S - SIGNATURE_TOLERANCE_S - 1), Err(R::SignatureExpired));
        let mut tampered = payload.clone();
        tampered.push(b' ');
        assert_eq!(check(&tampered, &good, NOW_S), Err(R::SignatureMismatch));
        assert_eq!(check(&payload, &sign(&payload, NOW_S, "whsec_other"), NOW_S), Err(R::SignatureMismatch));
        // The timestamp is signed: moving it breaks the signature.
        let moved = good.replacen(&format!("t={NOW_S}"), &format!("t={}", NOW_S + 1), 1);
        assert_eq!(check(&payload, &moved, NOW_S), Err(R::SignatureMismatch));
        let mac = &good[good.find("v1=").expect("v1") + 3..];
        for header in [
            String::new(),
            format!("v1={mac}"),
            format!("t={NOW_S}"),
            format!("t={NOW_S},v0={mac}"),
            format!("t={NOW_S},t={NOW_S},v1={mac}"),
            format!("t=-1,v1={mac}"),
            format!("t=+{NOW_S},v1={mac}"),
            format!("t={NOW_S},v1={}", mac.to_ascii_uppercase()),
            format!("t={NOW_S}, v1={mac}"),
            format!("t={NOW_S},v1={mac},{}", "x".repeat(SIGNATURE_HEADER_BYTES_MAX)),
        ] {
            assert_eq!(check(&payload, &header, NOW_S), Err(R::SignatureHeaderInvalid), "{header}");
        }
        let mut oversized = payload.clone();
        oversized.resize(PAYLOAD_BYTES_MAX + 1, b' ');
        assert_eq!(check(&oversized, &sign(&oversized, NOW_S, SECRET), NOW_S), Err(R::InputTooLarge));
    }

    fn charge() -> Value {
        json!({
            "id": "ch_3MtwBwLkdIwHu7ix28a3tqPa",
            "object": "charge",
            "amount": 2000,
            "amount_captured": 2000,
            "amount_refunded": 2000,
            "currency": "usd",
            "livemode": false,
            "paid": true,
            "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
            "refunded": true,
            "status": "succeeded"
        })
    }

    #[test]
    fn refunds_are_read_from_charges_and_charge_refunded_events() {
        let evidence = charge_refund_evidence(&bytes(&charge())).expect("valid");
        assert_eq!((evidence.amount, evidence.status), (usd(2000), PaymentStatus::Refunded));
        assert_eq!((evidence.reference.as_str(), evidence.env), ("pi_3MtwBwLkdIwHu7ix28a3tqPa", Env::Test));
        let refunded = with(event(REFUND_EVENT, charge()), "id", Some(json!("evt_1NG8Du2eZvKYlo2CrefundXy")));
        let evidence = webhook_evidence(&bytes(&refunded)).expect("valid");
        assert_eq!(evidence.event.as_deref(), Some(REFUND_EVENT));
        assert_eq!(evidence.status, PaymentStatus::Refunded);
        // A partial refund is evidence of what was refunded; `expect` then compares amounts.
        let partial = with(with(charge(), "amount_refunded", Some(json!(500))), "refunded", Some(json!(false)));
        assert_eq!(charge_refund_evidence(&bytes(&partial)).expect("valid").amount, usd(500));
    }

    #[test]
    fn negative_vectors_for_refunds() {
        use EvidenceReason as R;
        let rejected = |value: Value, reason: EvidenceReason| {
            let error = charge_refund_evidence(&bytes(&value)).expect_err("must be rejected");
            assert_eq!(error.reason(), reason, "{error}");
        };
        for field in ["id", "object", "amount", "amount_refunded", "currency", "livemode", "payment_intent", "refunded"]
        {
            rejected(with(charge(), field, None), R::FieldMissing);
        }
        rejected(with(charge(), "object", Some(json!("refund"))), R::ObjectUnexpected);
        rejected(with(charge(), "id", Some(json!("re_123"))), R::FieldInvalid);
        rejected(with(charge(), "payment_intent", Some(json!("ch_123"))), R::ReferenceInvalid);
        rejected(with(charge(), "amount_refunded", Some(json!(2001))), R::AmountInvalid);
        rejected(with(charge(), "amount_refunded", Some(json!(20.0))), R::AmountInvalid);
        rejected(with(charge(), "refunded", Some(json!(false))), R::FieldInvalid);
        let nothing = with(with(charge(), "amount_refunded", Some(json!(0))), "refunded", Some(json!(false)));
        rejected(nothing, R::StatusUnhandled);
        rejected(with(charge(), "currency", Some(json!("USD"))), R::CurrencyUnknown);
        rejected(with(charge(), "currency", Some(json!("isk"))), R::CurrencyUnknown);
        let live_event = with(event(REFUND_EVENT, charge()), "livemode", Some(json!(true)));
        event_rejected(&live_event, R::LivemodeMismatch);
        event_rejected(&event(REFUND_EVENT, intent()), R::ObjectUnexpected);
        event_rejected(&event("payment_intent.succeeded", charge()), R::ObjectUnexpected);
    }
}
