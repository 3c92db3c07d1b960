//! Evidence from payment rails, in one rail-neutral shape. Each adapter reads the rail's own
//! payload (bytes from outside: an x402 settlement header, a Stripe object or webhook) and
//! returns a [`PaymentEvidence`] or refuses it with [`RailEvidenceError`], whose stable code is
//! always `RAIL_EVIDENCE_INVALID` and whose [`EvidenceReason`] says which rule failed.
//!
//! Adapters fail closed: a field the rail should have sent and did not is a rejection, never a
//! default. Amounts are exact integers from the payload's digits, never floats. Every adapter's
//! evidence is then checked against what the caller expected with [`PaymentEvidence::expect`].
//!
//! [`external::ExternalRail`] is the [`crate::rail::Rail`] over this evidence for rails whose
//! money moves outside Pactum. The [`http`] module reads and writes the `PEAC-Receipt` header that carries a receipt.

pub mod external;
pub mod http;
mod mac;
pub mod stripe;
pub mod x402;

use pactum_transcripts::canonical::{StrictJsonError, parse_strict};
use pactum_transcripts::peac::Commerce;
use serde_json::{Map, Value};

use crate::money::{Currency, Money};
use crate::rail::{RailEvidence, RailPhase};

/// Longest reference (transaction hash, PaymentIntent id, transfer id) evidence may carry, in
/// bytes: Stripe ids are at most 255 characters and a transaction hash far fewer.
pub const REFERENCE_BYTES_MAX: usize = 255;

/// Whether the money is real.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Env {
    Live,
    Test,
}

impl Env {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// Where the payment stands according to the rail.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PaymentStatus {
    /// The money reached the payee.
    Settled,
    /// Authorized or in flight; not yet the payee's.
    Pending,
    /// The payment did not happen (declined, canceled, aborted).
    Failed,
    /// The payment happened and was paid back.
    Refunded,
}

impl PaymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }
}

/// One payment as a rail reports it, whichever the rail.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PaymentEvidence {
    /// The rail's id: `ledger`, `x402` or `stripe`.
    pub rail: String,
    pub amount: Money,
    /// The rail's own id for the payment (transfer id, transaction hash, PaymentIntent id).
    pub reference: String,
    pub env: Env,
    /// The rail event the evidence came from (a Stripe webhook type), if any.
    pub event: Option<String>,
    /// The rail's asset when it is not the currency itself (an x402 token contract).
    pub asset: Option<String>,
    pub status: PaymentStatus,
}

/// What the caller expects a rail to have done. Every field is compared; nothing is optional
/// but the reference, which a caller may not know before the rail names it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExpectedPayment {
    pub amount: Money,
    pub env: Env,
    pub status: PaymentStatus,
    pub reference: Option<String>,
}

impl PaymentEvidence {
    /// The facts for a PEAC receipt's commerce extension.
    pub fn to_commerce(&self) -> Commerce {
        Commerce {
            payment_rail: self.rail.clone(),
            amount_minor: self.amount.amount_minor(),
            currency: self.amount.currency().code().to_owned(),
            reference: Some(self.reference.clone()),
            asset: self.asset.clone(),
            env: Some(self.env.as_str().to_owned()),
            event: self.event.clone(),
        }
    }

    /// The PEAC commerce extension value (`payment_rail`, `amount_minor` as a decimal string,
    /// `currency`, `reference`, `env`, and `event` and `asset` when known).
    pub fn to_commerce_extension(&self) -> Value {
        self.to_commerce().to_value()
    }

    /// Checks the evidence against the expected payment; any difference is a rejection.
    pub fn expect(&self, expected: &ExpectedPayment) -> Result<(), RailEvidenceError> {
        if self.amount.currency() != expected.amount.currency() {
            return Err(RailEvidenceError::new(
                EvidenceReason::CurrencyMismatch,
                format!("rail paid in {}, expected {}", self.amount.currency(), expected.amount.currency()),
            ));
        }
        if self.amount.amount_minor() != expected.amount.amount_minor() {
            return Err(RailEvidenceError::new(
                EvidenceReason::AmountMismatch,
                format!("rail paid {}, expected {}", self.amount, expected.amount),
            ));
        }
        if self.env != expected.env {
            return Err(RailEvidenceError::new(
                EvidenceReason::EnvMismatch,
                format!("rail evidence is {}, expected {}", self.env.as_str(), expected.env.as_str()),
            ));
        }
        if self.status != expected.status {
            return Err(RailEvidenceError::new(
                EvidenceReason::StatusMismatch,
                format!("payment is {}, expected {}", self.status.as_str(), expected.status.as_str()),
            ));
        }
        if let Some(reference) = &expected.reference
            && *reference != self.reference
        {
            return Err(RailEvidenceError::new(
                EvidenceReason::ReferenceMismatch,
                format!("rail reference {:?}, expected {reference:?}", self.reference),
            ));
        }
        Ok(())
    }

    /// Evidence for a step of the constellation's own ledger. The ledger cannot tell whether its
    /// money is real, so the caller says.
    pub fn from_ledger(evidence: &RailEvidence, env: Env) -> Result<Self, RailEvidenceError> {
        let currency = Currency::parse(evidence.currency)
            .map_err(|error| RailEvidenceError::new(EvidenceReason::CurrencyUnknown, error.to_string()))?;
        let amount = Money::from_minor(evidence.amount_minor, currency)
            .map_err(|error| RailEvidenceError::new(EvidenceReason::AmountInvalid, error.to_string()))?;
        check_reference(&evidence.reference)?;
        let status = match evidence.phase {
            RailPhase::Prepare => PaymentStatus::Pending,
            RailPhase::Commit => PaymentStatus::Settled,
            RailPhase::Abort => PaymentStatus::Failed,
            RailPhase::Refund => PaymentStatus::Refunded,
        };
        Ok(Self {
            rail: evidence.rail.to_owned(),
            amount,
            reference: evidence.reference.clone(),
            env,
            event: None,
            asset: None,
            status,
        })
    }
}

/// Which rule a rail payload broke. The names (`as_str`) are stable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EvidenceReason {
    /// More bytes than the adapter reads.
    InputTooLarge,
    /// Not the transport encoding the rail uses (base64 for the x402 header, UTF-8 text).
    EncodingInvalid,
    /// Not JSON, or not an object where one is needed.
    JsonInvalid,
    /// The same member name twice in one object.
    JsonDuplicateMember,
    /// An integer a double cannot hold exactly.
    JsonNumberOutOfRange,
    /// A required field is absent (or JSON null). Nothing is ever filled in.
    FieldMissing,
    /// A field has the wrong JSON type or form.
    FieldInvalid,
    /// The amount is not a positive integer of minor units (a float, a string where the rail
    /// sends a number, leading zeros, zero, too large, or not a whole number of minor units).
    AmountInvalid,
    /// Not a currency the rail and Pactum both know.
    CurrencyUnknown,
    /// The x402 asset is not a token Pactum maps to a currency on that network.
    AssetUnknown,
    /// The x402 network is not one Pactum knows, so neither its asset nor its environment is.
    NetworkUnknown,
    /// Two parts of the evidence name different networks.
    NetworkMismatch,
    /// The x402 payment scheme is not `exact`.
    SchemeUnsupported,
    /// The reference is empty, too long, or not in the rail's form.
    ReferenceInvalid,
    /// The rail says the payment did not go through, or its status is one adapters do not map.
    StatusUnhandled,
    /// A webhook type the adapter does not handle.
    EventUnhandled,
    /// The webhook's type and its object's status disagree.
    EventStatusMismatch,
    /// The webhook and its object disagree on live mode.
    LivemodeMismatch,
    /// The object is not the kind the adapter reads (a Stripe `object` other than expected).
    ObjectUnexpected,
    /// The webhook signature header is malformed.
    SignatureHeaderInvalid,
    /// No signature in the header matches the payload under the secret.
    SignatureMismatch,
    /// The signed timestamp is outside the tolerance window around `now`.
    SignatureExpired,
    /// A rail step needs evidence and none was handed to the rail.
    EvidenceMissing,
    /// The rail's own record of a step differs from the step asked for (the ledger's transfer).
    RecordMismatch,
    AmountMismatch,
    CurrencyMismatch,
    EnvMismatch,
    StatusMismatch,
    ReferenceMismatch,
}

impl EvidenceReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InputTooLarge => "input_too_large",
            Self::EncodingInvalid => "encoding_invalid",
            Self::JsonInvalid => "json_invalid",
            Self::JsonDuplicateMember => "json_duplicate_member",
            Self::JsonNumberOutOfRange => "json_number_out_of_range",
            Self::FieldMissing => "field_missing",
            Self::FieldInvalid => "field_invalid",
            Self::AmountInvalid => "amount_invalid",
            Self::CurrencyUnknown => "currency_unknown",
            Self::AssetUnknown => "asset_unknown",
            Self::NetworkUnknown => "network_unknown",
            Self::NetworkMismatch => "network_mismatch",
            Self::SchemeUnsupported => "scheme_unsupported",
            Self::ReferenceInvalid => "reference_invalid",
            Self::StatusUnhandled => "status_unhandled",
            Self::EventUnhandled => "event_unhandled",
            Self::EventStatusMismatch => "event_status_mismatch",
            Self::LivemodeMismatch => "livemode_mismatch",
            Self::ObjectUnexpected => "object_unexpected",
            Self::SignatureHeaderInvalid => "signature_header_invalid",
            Self::SignatureMismatch => "signature_mismatch",
            Self::SignatureExpired => "signature_expired",
            Self::EvidenceMissing => "evidence_missing",
            Self::RecordMismatch => "record_mismatch",
            Self::AmountMismatch => "amount_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::EnvMismatch => "env_mismatch",
            Self::StatusMismatch => "status_mismatch",
            Self::ReferenceMismatch => "reference_mismatch",
        }
    }
}

/// A rail payload that is not acceptable evidence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rail evidence is invalid ({}): {detail}", reason.as_str())]
pub struct RailEvidenceError {
    pub reason: EvidenceReason,
    pub detail: String,
}

impl RailEvidenceError {
    pub fn new(reason: EvidenceReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }

    /// Stable code (specs/error-codes.toml); the reason refines it.
    pub fn code(&self) -> &'static str {
        "RAIL_EVIDENCE_INVALID"
    }

    pub fn reason(&self) -> EvidenceReason {
        self.reason
    }
}

impl From<RailEvidenceError> for crate::rail::RailError {
    fn from(error: RailEvidenceError) -> Self {
        Self::EvidenceInvalid(error)
    }
}

fn reject<T>(reason: EvidenceReason, detail: impl Into<String>) -> Result<T, RailEvidenceError> {
    Err(RailEvidenceError::new(reason, detail))
}

/// Parses outside bytes as strict I-JSON, bounded, into an object.
fn parse_object(bytes: &[u8], bytes_max: usize, what: &str) -> Result<Map<String, Value>, RailEvidenceError> {
    if bytes.len() > bytes_max {
        return reject(EvidenceReason::InputTooLarge, format!("{what} is {} bytes, at most {bytes_max}", bytes.len()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| RailEvidenceError::new(EvidenceReason::EncodingInvalid, format!("{what} is not UTF-8")))?;
    match parse_strict(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => reject(EvidenceReason::JsonInvalid, format!("{what} is not a JSON object")),
        Err(StrictJsonError::DuplicateMember(name)) => {
            reject(EvidenceReason::JsonDuplicateMember, format!("{what}: member {name:?} twice"))
        }
        Err(StrictJsonError::IntegerOutOfRange(number)) => {
            reject(EvidenceReason::JsonNumberOutOfRange, format!("{what}: integer {number} out of range"))
        }
        Err(StrictJsonError::Syntax(error)) => reject(EvidenceReason::JsonInvalid, format!("{what}: {error}")),
    }
}

/// A field that must be present and not null.
fn required<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a Value, RailEvidenceError> {
    match object.get(name) {
        None | Some(Value::Null) => reject(EvidenceReason::FieldMissing, format!("{name} is missing")),
        Some(value) => Ok(value),
    }
}

fn required_str<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, RailEvidenceError> {
    required(object, name)?
        .as_str()
        .ok_or_else(|| RailEvidenceError::new(EvidenceReason::FieldInvalid, format!("{name} is not a string")))
}

fn required_bool(object: &Map<String, Value>, name: &str) -> Result<bool, RailEvidenceError> {
    required(object, name)?
        .as_bool()
        .ok_or_else(|| RailEvidenceError::new(EvidenceReason::FieldInvalid, format!("{name} is not a boolean")))
}

fn required_object<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a Map<String, Value>, RailEvidenceError> {
    required(object, name)?
        .as_object()
        .ok_or_else(|| RailEvidenceError::new(EvidenceReason::FieldInvalid, format!("{name} is not an object")))
}

/// A reference is printable ASCII without spaces, 1 to [`REFERENCE_BYTES_MAX`] bytes.
fn check_reference(reference: &str) -> Result<(), RailEvidenceError> {
    let printable = reference.bytes().all(|b| b.is_ascii_graphic());
    if reference.is_empty() || reference.len() > REFERENCE_BYTES_MAX || !printable {
        return reject(EvidenceReason::ReferenceInvalid, format!("reference {reference:?} is not acceptable"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ledger_evidence(phase: RailPhase, reference: &str) -> RailEvidence {
        RailEvidence {
            rail: "ledger",
            phase,
            payment_id: "pay-1".into(),
            reference: reference.into(),
            amount_minor: 250,
            currency: "EUR",
            applied_now: true,
        }
    }

    #[test]
    fn ledger_steps_become_evidence_with_the_callers_environment() {
        let statuses = [
            (RailPhase::Prepare, PaymentStatus::Pending),
            (RailPhase::Commit, PaymentStatus::Settled),
            (RailPhase::Abort, PaymentStatus::Failed),
            (RailPhase::Refund, PaymentStatus::Refunded),
        ];
        for (phase, status) in statuses {
            let evidence = PaymentEvidence::from_ledger(&ledger_evidence(phase, "transfer:7"), Env::Test).expect("ok");
            assert_eq!(evidence.status, status);
        }
        let evidence =
            PaymentEvidence::from_ledger(&ledger_evidence(RailPhase::Commit, "transfer:7"), Env::Live).expect("ok");
        assert_eq!(
            evidence.to_commerce_extension(),
            json!({"payment_rail": "ledger", "amount_minor": "250", "currency": "EUR", "reference": "transfer:7", "env": "live"})
        );
        let error = PaymentEvidence::from_ledger(&ledger_evidence(RailPhase::Commit, ""), Env::Live);
        assert_eq!(error.map_err(|e| e.reason()), Err(EvidenceReason::ReferenceInvalid));
        let rail_error: crate::rail::RailError = RailEvidenceError::new(EvidenceReason::AmountMismatch, "x").into();
        assert_eq!(rail_error.failure_code(RailPhase::Commit), crate::failure::FailureCode::RailEvidenceInvalid);
    }

    #[test]
    fn reason_names_are_distinct() {
        use EvidenceReason as R;
        let all = [
            R::InputTooLarge,
            R::EncodingInvalid,
            R::JsonInvalid,
            R::JsonDuplicateMember,
            R::JsonNumberOutOfRange,
            R::FieldMissing,
            R::FieldInvalid,
            R::AmountInvalid,
            R::CurrencyUnknown,
            R::AssetUnknown,
            R::NetworkUnknown,
            R::NetworkMismatch,
            R::SchemeUnsupported,
            R::ReferenceInvalid,
            R::StatusUnhandled,
            R::EventUnhandled,
            R::EventStatusMismatch,
            R::LivemodeMismatch,
            R::ObjectUnexpected,
            R::SignatureHeaderInvalid,
            R::SignatureMismatch,
            R::SignatureExpired,
            R::EvidenceMissing,
            R::RecordMismatch,
            R::AmountMismatch,
            R::CurrencyMismatch,
            R::EnvMismatch,
            R::StatusMismatch,
            R::ReferenceMismatch,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|reason| reason.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
