//! PEAC receipts: the kernel constants against specs/peac-kernel.toml, an issue → verify round
//! trip, and the negative vectors in tests/peac-vectors/manifest.json, each refused with its code.
//!
//! The vectors are built here from fixed seeds; `vectors_file_matches_the_generator` fails when the
//! file drifts; with `PACTUM_UPDATE_GOLDEN=1` it rewrites the file first.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pactum_transcripts::canonical::to_canonical_string;
use pactum_transcripts::peac::{
    self, Claims, Commerce, ErrorCode, Jwks, Policy, RecordKind, VerifyOptions, did_key_for_ed25519, issue,
    policy_digest, receipt_ref, uuid_v7, verify,
};
use pactum_transcripts::{Ed25519Signer, KeyId};
use serde_json::{Value, json};

const NOW_S: u64 = 1_760_000_000;
const ISSUER: &str = "https://issuer.example";
const KID: &str = "k1";
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peac-vectors/manifest.json");

fn spec() -> toml::Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/peac-kernel.toml");
    std::fs::read_to_string(path).expect("spec file").parse().expect("spec is TOML")
}

#[test]
fn constants_match_the_spec() {
    let spec = spec();
    let text = |name: &str| spec[name].as_str().expect("string").to_owned();
    assert_eq!(text("http_header"), peac::HTTP_HEADER);
    assert_eq!(text("typ"), peac::TYP);
    assert_eq!(text("alg"), peac::ALG);
    assert_eq!(text("peac_version"), peac::PEAC_VERSION);
    assert_eq!(text("commerce_extension"), peac::COMMERCE_EXTENSION);
    let pillars: Vec<&str> =
        spec["pillars"].as_array().expect("pillars").iter().map(|p| p.as_str().expect("pillar")).collect();
    assert_eq!(pillars, peac::PILLARS);
    let limit = |name: &str| spec["limits"][name].as_integer().expect("limit") as u64;
    assert_eq!(limit("jws_bytes_max"), peac::JWS_BYTES_MAX as u64);
    assert_eq!(limit("json_depth_max"), peac::JSON_DEPTH_MAX as u64);
    assert_eq!(limit("json_array_length_max"), peac::JSON_ARRAY_LENGTH_MAX as u64);
    assert_eq!(limit("json_object_keys_max"), peac::JSON_OBJECT_KEYS_MAX as u64);
    assert_eq!(limit("json_string_bytes_max"), peac::JSON_STRING_BYTES_MAX as u64);
    assert_eq!(limit("json_nodes_max"), peac::JSON_NODES_MAX as u64);
    assert_eq!(limit("kid_bytes_max"), peac::KID_BYTES_MAX as u64);
    assert_eq!(limit("clock_skew_s"), peac::CLOCK_SKEW_S);
    assert_eq!(limit("jti_chars_min"), peac::JTI_CHARS_MIN as u64);
    assert_eq!(limit("jti_chars_max"), peac::JTI_CHARS_MAX as u64);
    assert_eq!(limit("type_chars_max"), peac::TYPE_CHARS_MAX as u64);
    assert_eq!(limit("jwks_bytes_max"), peac::JWKS_BYTES_MAX as u64);
    assert_eq!(limit("jwks_keys_max"), peac::JWKS_KEYS_MAX as u64);
}

#[test]
fn error_codes_match_the_spec_in_order() {
    let spec = spec();
    let listed: Vec<(String, String)> = spec["error"]
        .as_array()
        .expect("error list")
        .iter()
        .map(|entry| {
            (
                entry["code"].as_str().expect("code").to_owned(),
                entry["description"].as_str().expect("description").to_owned(),
            )
        })
        .collect();
    let coded: Vec<(String, String)> =
        ErrorCode::ALL.iter().map(|code| (code.code().to_owned(), code.describe().to_owned())).collect();
    assert_eq!(coded, listed);
}

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(KeyId::new(KID).expect("kid"), &[7u8; 32])
}

fn public_key_x() -> String {
    URL_SAFE_NO_PAD.encode(signer().verifying_key().as_bytes())
}

fn jwks_json() -> Value {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "x": public_key_x()}]})
}

fn payment_claims() -> Claims {
    let policy = json!({"allow": ["payment"], "max_amount_minor": 5000});
    let mut claims = Claims::new(
        RecordKind::Evidence,
        "org.peacprotocol/payment",
        ISSUER,
        NOW_S,
        uuid_v7(NOW_S * 1000, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    )
    .with_commerce(&Commerce {
        payment_rail: "card".into(),
        amount_minor: 1250,
        currency: "USD".into(),
        reference: Some("order-42".into()),
        asset: None,
        env: Some("test".into()),
        event: Some("settled".into()),
    });
    claims.sub = Some("https://shop.example/orders/42".into());
    claims.pillars = vec!["commerce".into(), "purpose".into()];
    claims.policy = Some(Policy {
        digest: policy_digest(&policy).expect("digest"),
        uri: Some("https://issuer.example/policy.json".into()),
        version: Some("1".into()),
    });
    claims.occurred_at = Some("2025-10-09T08:53:20Z".into());
    claims.purpose_declared = Some("purchase".into());
    claims
}

fn options() -> VerifyOptions<'static> {
    VerifyOptions { now_s: NOW_S, issuer: Some(ISSUER), revoked_kids: &[] }
}

#[test]
fn issue_then_verify_an_evidence_payment_receipt() {
    let claims = payment_claims();
    let jws = issue(&claims, &signer(), KID).expect("issues");
    let jwks = Jwks::parse(&jwks_json().to_string()).expect("jwks");
    let verified = verify(&jws, &jwks, &options()).expect("verifies");
    assert_eq!(verified.claims, claims.to_value());
    assert_eq!(verified.header, json!({"typ": peac::TYP, "alg": peac::ALG, "kid": KID}));
    assert_eq!(verified.receipt_ref, receipt_ref(&jws));
    let header = URL_SAFE_NO_PAD.decode(jws.split('.').next().expect("header")).expect("base64url");
    assert_eq!(header, br#"{"typ":"interaction-record+jwt","alg":"EdDSA","kid":"k1"}"#);
    assert_eq!(verified.claims["extensions"][peac::COMMERCE_EXTENSION]["amount_minor"], "1250");
    // Deterministic: the same claims and key give the same receipt.
    assert_eq!(issue(&claims, &signer(), KID).expect("issues"), jws);
    assert!(did_key_for_ed25519(signer().verifying_key().as_bytes()).starts_with("did:key:z6Mk"));
}

#[test]
fn issue_refuses_what_verify_would_refuse() {
    let mut claims = payment_claims();
    claims.kind = RecordKind::Challenge;
    let error = issue(&claims, &signer(), KID).expect_err("occurred_at on a challenge");
    assert_eq!(error.code, ErrorCode::InvalidClaims);
    let error = issue(&payment_claims(), &signer(), "").expect_err("empty kid");
    assert_eq!(error.code, ErrorCode::JwsMissingKid);
}

/// `b64(header).b64(payload).b64(sig)` signed over the given texts, whatever they contain.
fn sign_raw(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature = signer().sign_message(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
}

fn header_with(extra: &[(&str, Value)]) -> String {
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), json!(peac::TYP));
    header.insert("alg".into(), json!(peac::ALG));
    header.insert("kid".into(), json!(KID));
    for (name, value) in extra {
        if value.is_null() {
            header.remove(*name);
        } else {
            header.insert((*name).into(), value.clone());
        }
    }
    to_canonical_string(&Value::Object(header)).expect("canonical")
}

fn claims_with(extra: &[(&str, Value)]) -> String {
    let mut claims = payment_claims().to_value();
    let map = claims.as_object_mut().expect("object");
    for (name, value) in extra {
        map.insert((*name).into(), value.clone());
    }
    to_canonical_string(&claims).expect("canonical")
}

fn good_header() -> String {
    header_with(&[])
}

fn good_claims() -> String {
    claims_with(&[])
}

/// Replaces the signature segment's bytes.
fn with_signature(jws: &str, edit: impl FnOnce(&mut [u8; 64])) -> String {
    let (input, signature) = jws.rsplit_once('.').expect("three segments");
    let mut bytes: [u8; 64] = URL_SAFE_NO_PAD.decode(signature).expect("sig").try_into().expect("64 bytes");
    edit(&mut bytes);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// A non-canonical encoding (y + p, y < 19) of a point that is not of small order.
fn non_canonical_point() -> [u8; 32] {
    (2u8..19)
        .map(|y| {
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + y;
            bytes[31] = 0x7f;
            bytes
        })
        .find(|bytes| {
            curve25519_dalek::edwards::CompressedEdwardsY(*bytes)
                .decompress()
                .is_some_and(|point| !point.is_small_order())
        })
        .expect("some y below 19 is on the curve")
}

fn vector(name: &str, jws: String, jwks: Value, now_s: u64, issuer: Option<&str>, expect: Option<ErrorCode>) -> Value {
    json!({
        "name": name,
        "jws": jws,
        "jwks": jwks,
        "now_s": now_s,
        "issuer": issuer,
        "expect_code": expect.map(ErrorCode::code),
    })
}

fn generate_vectors() -> Value {
    let good = sign_raw(&good_header(), &good_claims());
    let jwks = jwks_json();
    let mut list = Vec::new();
    let mut add = |name: &str, jws: String, expect: Option<ErrorCode>| {
        list.push(vector(name, jws, jwks_json(), NOW_S, None, expect));
    };
    add("valid_evidence_payment", issue(&payment_claims(), &signer(), KID).expect("issues"), None);
    add(
        "oversized_jws",
        format!("{good}{}", "A".repeat(peac::JWS_BYTES_MAX + 1 - good.len())),
        Some(ErrorCode::ReceiptTooLarge),
    );
    add("two_segments", good.rsplit_once('.').expect("dot").0.to_owned(), Some(ErrorCode::InvalidFormat));
    let (input, signature) = good.rsplit_once('.').expect("dot");
    let signature_bytes = URL_SAFE_NO_PAD.decode(signature).expect("sig");
    add(
        "base64url_padding",
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature_bytes) + "=="),
        Some(ErrorCode::InvalidFormat),
    );
    add("base64url_plus", format!("{input}.+{}", &signature[1..]), Some(ErrorCode::InvalidFormat));
    let standard = STANDARD.encode(&signature_bytes);
    assert_eq!(standard.len(), 88, "64 bytes pad to 88 characters");
    let last = signature.as_bytes()[signature.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.iter().position(|c| *c == last).expect("alphabet");
    let noisy = alphabet[index | 1] as char;
    add(
        "base64url_noncanonical_trailing_bits",
        format!("{input}.{}{noisy}", &signature[..signature.len() - 1]),
        Some(ErrorCode::InvalidFormat),
    );
    let canonical = good_claims();
    add(
        "duplicate_member_name",
        sign_raw(&good_header(), &format!("{{\"jti\":\"dup\",{}", &canonical[1..])),
        Some(ErrorCode::IJsonDuplicateMemberName),
    );
    add(
        "integer_2_pow_53",
        sign_raw(&good_header(), &canonical.replace(&format!("\"iat\":{NOW_S}"), "\"iat\":9007199254740992")),
        Some(ErrorCode::IJsonNumberOutOfRange),
    );
    add(
        "lone_surrogate",
        sign_raw(
            &good_header(),
            &format!("{{\"sub\":\"\\ud800\",{}", &canonical[1..])
                .replace(",\"sub\":\"https://shop.example/orders/42\"", ""),
        ),
        Some(ErrorCode::IJsonInvalidString),
    );
    {
        let header = URL_SAFE_NO_PAD.encode(good_header());
        let payload = URL_SAFE_NO_PAD.encode([b'{', 0xff, b'}']);
        let signature = signer().sign_message(format!("{header}.{payload}").as_bytes());
        add(
            "invalid_utf8",
            format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes())),
            Some(ErrorCode::IJsonInvalidString),
        );
    }
    add("not_json", sign_raw(&good_header(), "receipt"), Some(ErrorCode::IJsonSyntax));
    add("header_not_object", sign_raw("[]", &canonical), Some(ErrorCode::InvalidFormat));
    add("alg_none", sign_raw(&header_with(&[("alg", json!("none"))]), &canonical), Some(ErrorCode::JwsAlgRejected));
    add("alg_hs256", sign_raw(&header_with(&[("alg", json!("HS256"))]), &canonical), Some(ErrorCode::JwsAlgRejected));
    let embedded = json!({"kty": "OKP", "crv": "Ed25519", "x": public_key_x()});
    add("jwk_embedded", sign_raw(&header_with(&[("jwk", embedded)]), &canonical), Some(ErrorCode::JwsEmbeddedKey));
    add(
        "jku_embedded",
        sign_raw(&header_with(&[("jku", json!("https://evil.example/jwks.json"))]), &canonical),
        Some(ErrorCode::JwsEmbeddedKey),
    );
    add("crit", sign_raw(&header_with(&[("crit", json!(["exp"]))]), &canonical), Some(ErrorCode::JwsCritRejected));
    add("b64_false", sign_raw(&header_with(&[("b64", json!(false))]), &canonical), Some(ErrorCode::JwsB64Rejected));
    add("zip", sign_raw(&header_with(&[("zip", json!("DEF"))]), &canonical), Some(ErrorCode::JwsZipRejected));
    add("unknown_typ", sign_raw(&header_with(&[("typ", json!("JWT"))]), &canonical), Some(ErrorCode::JwsTypUnknown));
    add("missing_kid", sign_raw(&header_with(&[("kid", Value::Null)]), &canonical), Some(ErrorCode::JwsMissingKid));
    add(
        "kid_too_long",
        sign_raw(&header_with(&[("kid", json!("k".repeat(peac::KID_BYTES_MAX + 1)))]), &canonical),
        Some(ErrorCode::JwsKidTooLong),
    );
    add(
        "unknown_header",
        sign_raw(&header_with(&[("cty", json!("json"))]), &canonical),
        Some(ErrorCode::JwsUnknownHeader),
    );
    add(
        "version_mismatch",
        sign_raw(&good_header(), &claims_with(&[("peac_version", json!("0.1"))])),
        Some(ErrorCode::WireVersionMismatch),
    );
    add("unknown_kid", sign_raw(&header_with(&[("kid", json!("k9"))]), &canonical), Some(ErrorCode::KeyNotFound));
    add(
        "non_canonical_s",
        with_signature(&good, |bytes| {
            let mut carry = 0u16;
            for (byte, l) in bytes[32..].iter_mut().zip(L) {
                let sum = u16::from(*byte) + u16::from(l) + carry;
                *byte = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }),
        Some(ErrorCode::InvalidSignature),
    );
    add(
        "small_order_r",
        with_signature(&good, |bytes| {
            bytes[..32].fill(0);
            bytes[0] = 1;
        }),
        Some(ErrorCode::InvalidSignature),
    );
    add("signature_mismatch", with_signature(&good, |bytes| bytes[40] ^= 1), Some(ErrorCode::InvalidSignature));
    add(
        "signed_by_another_key",
        {
            let other = Ed25519Signer::from_seed(KeyId::new(KID).expect("kid"), &[8u8; 32]);
            issue(&payment_claims(), &other, KID).expect("issues")
        },
        Some(ErrorCode::InvalidSignature),
    );
    let mut deep = json!([]);
    for _ in 0..30 {
        deep = json!([deep]);
    }
    let mut extensions = BTreeMap::new();
    extensions.insert("org.example/deep", deep);
    add(
        "depth_33",
        sign_raw(&good_header(), &claims_with(&[("extensions", json!(extensions))])),
        Some(ErrorCode::JsonLimitExceeded),
    );
    add(
        "array_10001",
        sign_raw(&good_header(), &claims_with(&[("extensions", json!({"org.example/list": vec![0; 10_001]}))])),
        Some(ErrorCode::JsonLimitExceeded),
    );
    let wide: serde_json::Map<String, Value> =
        (0..=peac::JSON_OBJECT_KEYS_MAX).map(|i| (format!("m{i}"), json!(0))).collect();
    add(
        "object_1001_members",
        sign_raw(&good_header(), &claims_with(&[("extensions", json!({"org.example/wide": wide}))])),
        Some(ErrorCode::JsonLimitExceeded),
    );
    add("kid_not_string", sign_raw(&header_with(&[("kid", json!(1))]), &canonical), Some(ErrorCode::JwsMissingKid));
    add(
        "string_65537",
        sign_raw(&good_header(), &claims_with(&[("purpose_declared", json!("p".repeat(65_537)))])),
        Some(ErrorCode::JsonLimitExceeded),
    );
    add(
        "aud_claim",
        sign_raw(&good_header(), &claims_with(&[("aud", json!("https://rp.example"))])),
        Some(ErrorCode::ForbiddenClaim),
    );
    add(
        "exp_claim",
        sign_raw(&good_header(), &claims_with(&[("exp", json!(NOW_S + 60))])),
        Some(ErrorCode::ForbiddenClaim),
    );
    add("unknown_claim", sign_raw(&good_header(), &claims_with(&[("foo", json!(1))])), Some(ErrorCode::UnknownClaim));
    add(
        "jti_renamed",
        sign_raw(&good_header(), &canonical.replace(r#""jti":"#, r#""jtx":"#)),
        Some(ErrorCode::UnknownClaim),
    );
    add(
        "iss_with_path",
        sign_raw(&good_header(), &claims_with(&[("iss", json!("https://issuer.example/"))])),
        Some(ErrorCode::InvalidClaims),
    );
    add(
        "occurred_at_on_challenge",
        sign_raw(&good_header(), &claims_with(&[("kind", json!("challenge"))])),
        Some(ErrorCode::InvalidClaims),
    );
    let commerce = |field: &str, value: Value| {
        let mut commerce = payment_claims().extensions[peac::COMMERCE_EXTENSION].clone();
        commerce[field] = value;
        sign_raw(&good_header(), &claims_with(&[("extensions", json!({ peac::COMMERCE_EXTENSION: commerce }))]))
    };
    add("amount_minor_leading_zero", commerce("amount_minor", json!("01250")), Some(ErrorCode::InvalidClaims));
    add("amount_minor_number", commerce("amount_minor", json!(1250)), Some(ErrorCode::InvalidClaims));
    add("currency_lowercase", commerce("currency", json!("usd")), Some(ErrorCode::InvalidClaims));
    add(
        "extension_key_uppercase",
        sign_raw(&good_header(), &claims_with(&[("extensions", json!({"Org.example/x": 1}))])),
        Some(ErrorCode::InvalidClaims),
    );
    add(
        "iat_in_the_future",
        sign_raw(&good_header(), &claims_with(&[("iat", json!(NOW_S + peac::CLOCK_SKEW_S + 1))])),
        Some(ErrorCode::NotYetValid),
    );

    let mut revoked = jwks.clone();
    revoked["revoked_keys"] = json!([{"kid": KID, "revoked_at": NOW_S - 10}]);
    list.push(vector("revoked_kid", good.clone(), revoked, NOW_S, None, Some(ErrorCode::KeyRevoked)));
    let bad_key = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "x": URL_SAFE_NO_PAD.encode(non_canonical_point())}]});
    list.push(vector("non_canonical_a", good.clone(), bad_key, NOW_S, None, Some(ErrorCode::InvalidSignature)));
    let small_key = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "x": URL_SAFE_NO_PAD.encode({
        let mut identity = [0u8; 32];
        identity[0] = 1;
        identity
    })}]});
    list.push(vector("small_order_a", good.clone(), small_key, NOW_S, None, Some(ErrorCode::InvalidSignature)));
    list.push(vector(
        "wrong_issuer",
        good,
        jwks,
        NOW_S,
        Some("https://other.example"),
        Some(ErrorCode::IssuerMismatch),
    ));
    json!({"vectors": list})
}

/// Object members in sorted order, whether or not serde_json keeps insertion order (the workspace
/// turns `preserve_order` on for other crates; this crate alone does not): the file's bytes must
/// not depend on how the test was built.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(key, value)| (key, sorted(value))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn manifest_text() -> String {
    serde_json::to_string_pretty(&sorted(generate_vectors())).expect("serializes") + "\n"
}

/// The committed vectors are the generator's output. Regenerate deliberately with
/// `PACTUM_UPDATE_GOLDEN=1 cargo test -p pactum-transcripts --test peac`.
#[test]
fn vectors_file_matches_the_generator() {
    if std::env::var_os("PACTUM_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(std::path::Path::new(MANIFEST).parent().expect("dir")).expect("mkdir");
        std::fs::write(MANIFEST, manifest_text()).expect("write");
    }
    let on_disk = std::fs::read_to_string(MANIFEST).expect("manifest (PACTUM_UPDATE_GOLDEN=1 writes it)");
    assert!(
        on_disk == manifest_text(),
        "tests/peac-vectors/manifest.json is stale; regenerate with PACTUM_UPDATE_GOLDEN=1"
    );
}

#[test]
fn every_vector_gives_its_code() {
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(MANIFEST).expect("manifest")).expect("JSON");
    let vectors = manifest["vectors"].as_array().expect("vectors");
    let mut seen = std::collections::BTreeSet::new();
    for vector in vectors {
        let name = vector["name"].as_str().expect("name");
        let jwks = Jwks::parse(&vector["jwks"].to_string()).unwrap_or_else(|error| panic!("{name}: {error}"));
        let options = VerifyOptions {
            now_s: vector["now_s"].as_u64().expect("now_s"),
            issuer: vector["issuer"].as_str(),
            revoked_kids: &[],
        };
        let outcome = verify(vector["jws"].as_str().expect("jws"), &jwks, &options);
        let got = outcome.as_ref().err().map(|error| error.code.code());
        assert_eq!(got, vector["expect_code"].as_str(), "{name}: {outcome:?}");
        // The strict Ed25519 vectors share one code; make sure the intended check fired, not
        // the final signature equation.
        let reason = match name {
            "non_canonical_s" => Some("S is not below"),
            "small_order_r" => Some("R is not canonically encoded or is of small order"),
            "non_canonical_a" | "small_order_a" => Some("public key A is not canonically encoded"),
            _ => None,
        };
        if let (Some(reason), Err(error)) = (reason, &outcome) {
            assert!(error.message.contains(reason), "{name}: {error}");
        }
        if let Some(code) = got {
            seen.insert(code);
        }
    }
    let untested: Vec<&str> = ErrorCode::ALL
        .iter()
        .map(|code| code.code())
        .filter(|code| !seen.contains(code) && *code != ErrorCode::InvalidJwks.code())
        .collect();
    assert!(untested.is_empty(), "codes without a vector: {untested:?}");
}

#[test]
fn revoked_kids_from_the_options_are_refused() {
    let jws = issue(&payment_claims(), &signer(), KID).expect("issues");
    let jwks = Jwks::parse(&jwks_json().to_string()).expect("jwks");
    let options = VerifyOptions { revoked_kids: &[KID], ..options() };
    assert_eq!(verify(&jws, &jwks, &options).expect_err("revoked").code, ErrorCode::KeyRevoked);
}

#[test]
fn jwks_limits() {
    let key = |index: usize| json!({"kty": "OKP", "crv": "Ed25519", "kid": format!("k{index}"), "x": public_key_x()});
    let keys: Vec<Value> = (0..=peac::JWKS_KEYS_MAX).map(key).collect();
    assert_eq!(Jwks::parse(&json!({"keys": keys}).to_string()).expect_err("21 keys").code, ErrorCode::InvalidJwks);
    let duplicate = r#"{"keys":[],"keys":[]}"#;
    assert_eq!(Jwks::parse(duplicate).expect_err("duplicate").code, ErrorCode::InvalidJwks);
    let rsa = json!({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]});
    assert_eq!(Jwks::parse(&rsa.to_string()).expect_err("rsa").code, ErrorCode::InvalidJwks);
}
