//! x402 (HTTP 402 payments, protocol version 1): evidence from a settled payment.
//!
//! A settlement says which transaction paid and on which network, but not how much or in what:
//! those are in the payment requirements the server answered the 402 with. So evidence is read
//! from both, and both must agree on the network:
//!
//! - the payment requirements the payment was made against, as JSON (`scheme` `exact`,
//!   `network`, `maxAmountRequired` as a string of digits in the token's atomic units, `asset`
//!   the token contract, `payTo`);
//! - the `X-PAYMENT-RESPONSE` header value: base64 (standard alphabet, padded) of a JSON object
//!   `{"success": true, "transaction": "0x…", "network": "…", "payer": "0x…"}`.
//!
//! Only networks and tokens in [`NETWORKS`] are accepted: the network gives the environment
//! (mainnet is live, testnet is test) and the token gives the currency and its decimals. A token
//! amount that is not a whole number of the currency's minor units is refused, never rounded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::{
    EvidenceReason, PaymentEvidence, PaymentStatus, RailEvidenceError, check_reference, parse_object, reject,
    required_bool, required_str,
};
use crate::money::{Currency, Money};
use crate::rails::Env;

/// The rail id in evidence and receipts.
pub const RAIL: &str = "x402";

/// The response header carrying the settlement.
pub const PAYMENT_RESPONSE_HEADER: &str = "X-PAYMENT-RESPONSE";

/// Longest `X-PAYMENT-RESPONSE` value read, in bytes: a settlement is four short fields, and
/// common HTTP servers cap a header near 8 KiB.
pub const PAYMENT_RESPONSE_BYTES_MAX: usize = 8_192;

/// Longest payment requirements read, in bytes: room for a description and an output schema.
pub const REQUIREMENTS_BYTES_MAX: usize = 65_536;

/// Longest token amount read, in decimal digits: more than any amount Pactum can hold, few
/// enough that parsing cannot overflow `u128`.
const TOKEN_AMOUNT_DIGITS_MAX: usize = 30;

/// A network x402 settles on, with its stablecoin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Network {
    /// The x402 v1 network name.
    pub name: &'static str,
    /// The CAIP-2 chain id (accepted as a network name too).
    pub caip2: &'static str,
    pub env: Env,
    /// The USDC contract on this network, lowercase.
    pub usdc: &'static str,
}

/// USDC's decimals on every network below.
const USDC_DECIMALS: u8 = 6;

/// Networks Pactum accepts x402 evidence from. Anything else is refused.
pub const NETWORKS: &[Network] = &[
    Network { name: "base", caip2: "eip155:8453", env: Env::Live, usdc: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913" },
    Network {
        name: "base-sepolia",
        caip2: "eip155:84532",
        env: Env::Test,
        usdc: "0x036cbd53842c5426634e7929541ec2318f3dcf7e",
    },
    Network {
        name: "avalanche",
        caip2: "eip155:43114",
        env: Env::Live,
        usdc: "0xb97ef9ef8734c71904d8002f8b6bc66dd9c48a6e",
    },
    Network {
        name: "avalanche-fuji",
        caip2: "eip155:43113",
        env: Env::Test,
        usdc: "0x5425890298aed601595a70ab815c96711a31bc65",
    },
];

fn network_named(name: &str) -> Result<&'static Network, RailEvidenceError> {
    NETWORKS
        .iter()
        .find(|network| network.name == name || network.caip2 == name)
        .ok_or_else(|| RailEvidenceError::new(EvidenceReason::NetworkUnknown, format!("network {name:?} is unknown")))
}

/// `0x` and `hex_digits` hex digits (either case), returned lowercase.
fn hex_id(text: &str, hex_digits: usize) -> Option<String> {
    let digits = text.strip_prefix("0x")?;
    (digits.len() == hex_digits && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("0x{}", digits.to_ascii_lowercase()))
}

/// The settlement an x402 server reports in `X-PAYMENT-RESPONSE`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Settlement {
    /// The transaction hash, lowercase.
    pub transaction: String,
    pub network: &'static Network,
    pub payer: Option<String>,
}

/// Decodes and checks an `X-PAYMENT-RESPONSE` header value. A failed settlement (`success`
/// false) is refused: it evidences no payment.
pub fn parse_payment_response(header_value: &[u8]) -> Result<Settlement, RailEvidenceError> {
    if header_value.len() > PAYMENT_RESPONSE_BYTES_MAX {
        return reject(
            EvidenceReason::InputTooLarge,
            format!("{PAYMENT_RESPONSE_HEADER} is {} bytes, at most {PAYMENT_RESPONSE_BYTES_MAX}", header_value.len()),
        );
    }
    let json = STANDARD.decode(header_value).map_err(|error| {
        RailEvidenceError::new(EvidenceReason::EncodingInvalid, format!("{PAYMENT_RESPONSE_HEADER}: {error}"))
    })?;
    let object = parse_object(&json, PAYMENT_RESPONSE_BYTES_MAX, PAYMENT_RESPONSE_HEADER)?;
    let success = required_bool(&object, "success")?;
    if !success {
        let why = object.get("errorReason").and_then(Value::as_str).unwrap_or("no reason given");
        let why: String = why.chars().take(200).collect();
        return reject(EvidenceReason::StatusUnhandled, format!("settlement failed: {why}"));
    }
    let network = network_named(required_str(&object, "network")?)?;
    let transaction = required_str(&object, "transaction")?;
    let transaction = hex_id(transaction, 64).ok_or_else(|| {
        RailEvidenceError::new(EvidenceReason::ReferenceInvalid, format!("transaction {transaction:?} is not a hash"))
    })?;
    let payer = match object.get("payer") {
        None => None,
        Some(Value::String(payer)) => Some(hex_id(payer, 40).ok_or_else(|| {
            RailEvidenceError::new(EvidenceReason::FieldInvalid, format!("payer {payer:?} is not an address"))
        })?),
        Some(_) => return reject(EvidenceReason::FieldInvalid, "payer is not a string"),
    };
    Ok(Settlement { transaction, network, payer })
}

/// Payment requirements, checked: what a settlement against them paid.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Requirements {
    pub network: &'static Network,
    pub amount: Money,
    /// The token as a CAIP-19 asset id (`eip155:8453/erc20:0x…`).
    pub asset: String,
    pub pay_to: String,
}

/// Checks x402 v1 payment requirements (one entry of a 402 response's `accepts`).
pub fn parse_requirements(json: &[u8]) -> Result<Requirements, RailEvidenceError> {
    let object = parse_object(json, REQUIREMENTS_BYTES_MAX, "payment requirements")?;
    let scheme = required_str(&object, "scheme")?;
    if scheme != "exact" {
        return reject(EvidenceReason::SchemeUnsupported, format!("scheme {scheme:?} is not exact"));
    }
    let network = network_named(required_str(&object, "network")?)?;
    let asset = required_str(&object, "asset")?;
    if hex_id(asset, 40).as_deref() != Some(network.usdc) {
        return reject(EvidenceReason::AssetUnknown, format!("asset {asset:?} is not USDC on {}", network.name));
    }
    let pay_to = required_str(&object, "payTo")?;
    let pay_to = hex_id(pay_to, 40).ok_or_else(|| {
        RailEvidenceError::new(EvidenceReason::FieldInvalid, format!("payTo {pay_to:?} is not an address"))
    })?;
    let amount = usdc_amount(&object)?;
    Ok(Requirements { network, amount, asset: format!("{}/erc20:{}", network.caip2, network.usdc), pay_to })
}

/// `maxAmountRequired` in USDC's atomic units, as US cents: a string of digits without leading
/// zeros, positive, and a whole number of cents.
fn usdc_amount(object: &Map<String, Value>) -> Result<Money, RailEvidenceError> {
    let text = match object.get("maxAmountRequired") {
        None | Some(Value::Null) => return reject(EvidenceReason::FieldMissing, "maxAmountRequired is missing"),
        Some(Value::String(text)) => text,
        Some(other) => {
            return reject(
                EvidenceReason::AmountInvalid,
                format!("maxAmountRequired {other} is not a string of digits"),
            );
        }
    };
    let invalid = |why: &str| RailEvidenceError::new(EvidenceReason::AmountInvalid, format!("{text:?} {why}"));
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || text.len() > TOKEN_AMOUNT_DIGITS_MAX {
        return Err(invalid("is not a string of at most 30 digits"));
    }
    if text.starts_with('0') {
        return Err(invalid("is zero or has a leading zero"));
    }
    let atomic: u128 = text.parse().map_err(|_| invalid("is not an integer"))?;
    let usd = Currency::parse("USD").map_err(|error| invalid(&error.to_string()))?;
    let per_minor = 10_u128.pow(u32::from(USDC_DECIMALS - usd.exponent()));
    if !atomic.is_multiple_of(per_minor) {
        return Err(invalid("is not a whole number of cents"));
    }
    let minor = u64::try_from(atomic / per_minor).map_err(|_| invalid("is too large"))?;
    Money::from_minor(minor, usd).map_err(|_| invalid("is too large"))
}

/// Evidence for an x402 payment: the requirements it was made against and the settlement header.
pub fn evidence(requirements_json: &[u8], payment_response: &[u8]) -> Result<PaymentEvidence, RailEvidenceError> {
    let requirements = parse_requirements(requirements_json)?;
    let settlement = parse_payment_response(payment_response)?;
    if settlement.network != requirements.network {
        return reject(
            EvidenceReason::NetworkMismatch,
            format!("settled on {}, required {}", settlement.network.name, requirements.network.name),
        );
    }
    check_reference(&settlement.transaction)?;
    Ok(PaymentEvidence {
        rail: RAIL.to_owned(),
        amount: requirements.amount,
        reference: settlement.transaction,
        env: requirements.network.env,
        event: None,
        asset: Some(requirements.asset),
        status: PaymentStatus::Settled,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rails::ExpectedPayment;

    const TX: &str = "0xabcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";
    const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    const BASE_SEPOLIA_USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

    fn requirements() -> Value {
        json!({
            "scheme": "exact",
            "network": "base-sepolia",
            "maxAmountRequired": "10000",
            "resource": "https://api.example.com/premium",
            "description": "premium data",
            "mimeType": "application/json",
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": BASE_SEPOLIA_USDC,
            "extra": {"name": "USDC", "version": "2"}
        })
    }

    fn settlement() -> Value {
        json!({"success": true, "transaction": TX, "network": "base-sepolia", "payer": PAYER})
    }

    fn header(value: &Value) -> Vec<u8> {
        STANDARD.encode(value.to_string()).into_bytes()
    }

    fn bytes(value: &Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    fn with(mut value: Value, name: &str, field: Option<Value>) -> Value {
        let object = value.as_object_mut().expect("object");
        match field {
            Some(field) => object.insert(name.to_owned(), field),
            None => object.remove(name),
        };
        value
    }

    #[test]
    fn settlement_round_trips_into_evidence_and_the_commerce_extension() {
        let evidence = evidence(&bytes(&requirements()), &header(&settlement())).expect("valid evidence");
        let usd = Currency::parse("USD").expect("USD");
        assert_eq!(evidence.amount, Money::from_minor(1, usd).expect("amount"));
        assert_eq!(evidence.env, Env::Test);
        assert_eq!(evidence.status, PaymentStatus::Settled);
        assert_eq!(evidence.reference, TX);
        assert_eq!(
            evidence.to_commerce_extension(),
            json!({
                "payment_rail": "x402",
                "amount_minor": "1",
                "currency": "USD",
                "reference": TX,
                "asset": "eip155:84532/erc20:0x036cbd53842c5426634e7929541ec2318f3dcf7e",
                "env": "test"
            })
        );
        let expected = ExpectedPayment {
            amount: Money::from_minor(1, usd).expect("amount"),
            env: Env::Test,
            status: PaymentStatus::Settled,
            reference: Some(TX.to_owned()),
        };
        assert_eq!(evidence.expect(&expected), Ok(()));
        // CAIP-2 network names are the same networks.
        let caip = with(settlement(), "network", Some(json!("eip155:84532")));
        assert!(evidence_from(requirements(), caip).is_ok());
        let live = with(
            with(requirements(), "network", Some(json!("base"))),
            "asset",
            Some(json!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")),
        );
        let settled = evidence_from(live, with(settlement(), "network", Some(json!("base")))).expect("live");
        assert_eq!(settled.env, Env::Live);
    }

    fn evidence_from(requirements: Value, settlement: Value) -> Result<PaymentEvidence, RailEvidenceError> {
        evidence(&bytes(&requirements), &header(&settlement))
    }

    #[track_caller]
    fn rejects(requirements: Value, settlement: Value, reason: EvidenceReason) {
        let error = evidence_from(requirements, settlement).expect_err("must be rejected");
        assert_eq!(error.code(), "RAIL_EVIDENCE_INVALID");
        assert_eq!(error.reason(), reason, "{error}");
    }

    #[test]
    fn negative_vectors_each_fire_their_own_rule() {
        use EvidenceReason as R;
        let (req, set) = (requirements, settlement);
        // Never a default: every required field, absent or null, is a rejection.
        for field in ["scheme", "network", "asset", "payTo", "maxAmountRequired"] {
            rejects(with(req(), field, None), set(), R::FieldMissing);
            rejects(with(req(), field, Some(Value::Null)), set(), R::FieldMissing);
        }
        for field in ["success", "transaction", "network"] {
            rejects(req(), with(set(), field, None), R::FieldMissing);
        }
        // Amounts: exact digit strings only.
        for amount in
            [json!(10000), json!(10000.0), json!("1e4"), json!("010000"), json!("0"), json!(""), json!("-10000")]
        {
            rejects(with(req(), "maxAmountRequired", Some(amount)), set(), R::AmountInvalid);
        }
        rejects(with(req(), "maxAmountRequired", Some(json!("10001"))), set(), R::AmountInvalid);
        rejects(with(req(), "maxAmountRequired", Some(json!("9".repeat(31)))), set(), R::AmountInvalid);
        // Whole cents, but more than Pactum's largest amount.
        let too_large = format!("1{}", "0".repeat(29));
        rejects(with(req(), "maxAmountRequired", Some(json!(too_large))), set(), R::AmountInvalid);
        rejects(with(req(), "scheme", Some(json!("upto"))), set(), R::SchemeUnsupported);
        rejects(with(req(), "network", Some(json!("base-goerli"))), set(), R::NetworkUnknown);
        rejects(req(), with(set(), "network", Some(json!("solana"))), R::NetworkUnknown);
        rejects(req(), with(set(), "network", Some(json!("base"))), R::NetworkMismatch);
        // Base mainnet USDC is not the Base Sepolia token.
        let mainnet_usdc = json!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        rejects(with(req(), "asset", Some(mainnet_usdc)), set(), R::AssetUnknown);
        rejects(with(req(), "asset", Some(json!("USDC"))), set(), R::AssetUnknown);
        rejects(with(req(), "payTo", Some(json!("0x1234"))), set(), R::FieldInvalid);
        rejects(with(req(), "scheme", Some(json!(1))), set(), R::FieldInvalid);
        rejects(req(), with(set(), "success", Some(json!("true"))), R::FieldInvalid);
        rejects(req(), with(set(), "success", Some(json!(false))), R::StatusUnhandled);
        rejects(req(), with(set(), "transaction", Some(json!(""))), R::ReferenceInvalid);
        rejects(req(), with(set(), "transaction", Some(json!("0xabc"))), R::ReferenceInvalid);
        rejects(req(), with(set(), "payer", Some(json!(7))), R::FieldInvalid);
    }

    proptest::proptest! {
        #[test]
        fn every_whole_cent_amount_round_trips(cents in 1_u64..=crate::money::AMOUNT_MINOR_MAX) {
            let atomic = (u128::from(cents) * 10_000).to_string();
            let required = with(requirements(), "maxAmountRequired", Some(json!(atomic)));
            let evidence = evidence_from(required, settlement()).expect("valid");
            proptest::prop_assert_eq!(evidence.amount.amount_minor(), cents);
            proptest::prop_assert_eq!(&evidence.to_commerce_extension()["amount_minor"], &json!(cents.to_string()));
        }
    }

    #[track_caller]
    fn header_rejected(value: &[u8], reason: EvidenceReason) {
        let error = evidence(&bytes(&requirements()), value).expect_err("must be rejected");
        assert_eq!(error.reason(), reason, "{error}");
    }

    #[test]
    fn negative_vectors_for_the_header_bytes() {
        use EvidenceReason as R;
        let good = STANDARD.encode(settlement().to_string());
        // Padding is required: a text whose length is not a multiple of 3, encoded without it.
        let mut text = settlement().to_string();
        if text.len().is_multiple_of(3) {
            text.push(' ');
        }
        header_rejected(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&text).as_bytes(), R::EncodingInvalid);
        header_rejected(format!(" {good}").as_bytes(), R::EncodingInvalid);
        header_rejected(b"not base64!", R::EncodingInvalid);
        header_rejected(STANDARD.encode([0xff, 0xfe]).as_bytes(), R::EncodingInvalid);
        header_rejected(STANDARD.encode("[1]").as_bytes(), R::JsonInvalid);
        header_rejected(STANDARD.encode("{\"success\":true,").as_bytes(), R::JsonInvalid);
        let duplicate = format!(r#"{{"success":true,"success":true,"transaction":"{TX}","network":"base-sepolia"}}"#);
        header_rejected(STANDARD.encode(duplicate).as_bytes(), R::JsonDuplicateMember);
        let huge = r#"{"success":true,"nonce":9007199254740993}"#;
        header_rejected(STANDARD.encode(huge).as_bytes(), R::JsonNumberOutOfRange);
        header_rejected(&vec![b'A'; PAYMENT_RESPONSE_BYTES_MAX + 4], R::InputTooLarge);
        let oversized = vec![b' '; REQUIREMENTS_BYTES_MAX + 1];
        let error = evidence(&oversized, good.as_bytes()).expect_err("too large");
        assert_eq!(error.reason(), R::InputTooLarge);
    }
}
