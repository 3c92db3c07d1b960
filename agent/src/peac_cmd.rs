//! `pactum receipt verify` for PEAC receipts (compact JWS): reading the input, choosing the keys
//! (`--jwks`, `--public-key`, or the constellation's agent keys and revocation list) and printing
//! the verdict. The checks themselves are `pactum_transcripts::peac::verify`'s.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use pactum_runtime::session::receipt::RECEIPT_BYTES_MAX;
use pactum_transcripts::peac::{self, COMMERCE_EXTENSION, JWKS_BYTES_MAX, JWS_BYTES_MAX, Jwks, VerifyOptions};

use crate::cli::Context;
use crate::clock::{format_ms, now_ms};
use crate::constellation_cmd::{print_json, print_lines};
use crate::failure::{EXIT_INVALID, EXIT_OK, Failure};

/// Largest receipt file read, in bytes: the larger of the two formats' limits (each format then
/// applies its own). Bounds memory before the content is known.
const RECEIPT_INPUT_BYTES_MAX: usize =
    if RECEIPT_BYTES_MAX > JWS_BYTES_MAX { RECEIPT_BYTES_MAX } else { JWS_BYTES_MAX };

/// Where the verification keys of a PEAC receipt come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file.
    Jwks(PathBuf),
    /// One public key (unpadded base64url), trusted for the receipt's own kid.
    PublicKey(String),
    /// The constellation's agent keys, with its revocation list.
    Constellation,
}

impl KeySource {
    /// From the command-line options (clap refuses both at once).
    pub fn from_options(jwks: Option<PathBuf>, public_key: Option<String>) -> Self {
        match (jwks, public_key) {
            (Some(path), _) => Self::Jwks(path),
            (None, Some(key)) => Self::PublicKey(key),
            (None, None) => Self::Constellation,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Jwks(path) => format!("--jwks {}", path.display()),
            Self::PublicKey(_) => "--public-key".to_owned(),
            Self::Constellation => "the constellation's agent keys and revocation list".to_owned(),
        }
    }
}

/// Whether `text` has the shape of a compact JWS: three base64url segments.
fn looks_like_compact_jws(text: &str) -> bool {
    text.bytes().filter(|&byte| byte == b'.').count() == 2
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Reads the receipt argument: an existing file, else an inline compact JWS. Returns a label for
/// messages and the text.
pub fn read_receipt_input(input: &str) -> Result<(String, String), Failure> {
    let path = Path::new(input);
    if path.is_file() {
        let label = path.display().to_string();
        let too_large =
            || Failure::new("RECEIPT_INVALID", format!("{label}: larger than {RECEIPT_INPUT_BYTES_MAX} bytes"));
        let length = std::fs::metadata(path).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?.len();
        if usize::try_from(length).map_or(true, |length| length > RECEIPT_INPUT_BYTES_MAX) {
            return Err(too_large());
        }
        let bytes = std::fs::read(path).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?;
        if bytes.len() > RECEIPT_INPUT_BYTES_MAX {
            return Err(too_large());
        }
        let text =
            String::from_utf8(bytes).map_err(|_| Failure::new("RECEIPT_INVALID", format!("{label}: not UTF-8")))?;
        return Ok((label, text));
    }
    if looks_like_compact_jws(input) {
        return Ok(("the receipt given inline".to_owned(), input.to_owned()));
    }
    Err(Failure::new("IO_ERROR", format!("{input}: no such file, and not a compact JWS (header.payload.signature)")))
}

fn read_jwks(path: &Path) -> Result<Jwks, Failure> {
    let label = path.display();
    let length = std::fs::metadata(path).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?.len();
    if usize::try_from(length).map_or(true, |length| length > JWKS_BYTES_MAX) {
        return Err(Failure::new("JWKS_INVALID", format!("{label}: larger than {JWKS_BYTES_MAX} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| Failure::new("IO_ERROR", format!("{label}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| Failure::new("JWKS_INVALID", format!("{label}: not UTF-8")))?;
    Jwks::parse(&text).map_err(|error| Failure::new("JWKS_INVALID", format!("{label}: {error}")))
}

/// The key set to verify against. `kid` is the receipt's own (unverified) key id: a single
/// public key is trusted for it, and of the constellation's keys only that one is loaded (a JWKS
/// holds at most `JWKS_KEYS_MAX` keys; a constellation may have more).
fn load_keys(context: &Context, source: &KeySource, kid: Option<&str>) -> Result<Jwks, Failure> {
    match source {
        KeySource::Jwks(path) => read_jwks(path),
        KeySource::PublicKey(text) => {
            let public_key = pactum_transcripts::public_key_from_base64url(text)
                .map_err(|problem| Failure::new("KEY_INVALID", format!("--public-key: {problem}")))?;
            let mut jwks = Jwks::new();
            if let Some(kid) = kid {
                // A kid the verifier refuses (too long) is reported by `verify` with its code.
                let _ = jwks.insert(kid, public_key);
            }
            Ok(jwks)
        }
        KeySource::Constellation => {
            let db = context.open_existing()?.map_err(|path| {
                Failure::new(
                    "RECEIPT_KEY_REQUIRED",
                    format!(
                        "no constellation at {} to take keys from: give --jwks FILE or --public-key KEY",
                        path.display()
                    ),
                )
            })?;
            let mut jwks = Jwks::new();
            if let Some(kid) = kid
                && let Some(key) = db.agent_keys()?.into_iter().find(|key| key.key_id == kid)
            {
                let _ = jwks.insert(key.key_id, key.public_key);
            }
            for revocation in db.key_revocations()? {
                jwks.revoke(revocation.key_id);
            }
            Ok(jwks)
        }
    }
}

/// "1.23 USD via rail (reference ...)" from the commerce extension, if the claims carry one.
fn commerce_text(claims: &Value) -> Option<String> {
    let commerce = claims.get("extensions")?.get(COMMERCE_EXTENSION)?;
    let field = |name: &str| commerce.get(name).and_then(Value::as_str);
    let amount_minor = field("amount_minor")?;
    let currency = field("currency")?;
    let amount = amount_minor
        .parse::<u64>()
        .ok()
        .and_then(|minor| {
            let currency = pactum_runtime::Currency::parse(currency).ok()?;
            pactum_runtime::Money::from_minor(minor, currency).ok()
        })
        .map_or_else(|| format!("{amount_minor} (minor units) {currency}"), |money| money.to_string());
    let mut text = format!("{amount} via {}", field("payment_rail").unwrap_or("-"));
    if let Some(reference) = field("reference") {
        text.push_str(&format!(" (reference {reference})"));
    }
    Some(text)
}

/// Verifies a PEAC receipt and prints the verdict: exit 0 valid, 1 refused (with its `E_*` code).
pub fn verify(
    context: &Context,
    label: &str,
    jws: &str,
    source: &KeySource,
    issuer: Option<&str>,
    json: bool,
) -> Result<u8, Failure> {
    let header = peac::unverified_header(jws);
    let kid = header.as_ref().and_then(|header| header.get("kid")).and_then(Value::as_str).map(str::to_owned);
    let jwks = load_keys(context, source, kid.as_deref())?;
    let options = VerifyOptions { now_s: now_ms() / 1000, issuer, revoked_kids: &[] };
    let outcome = peac::verify(jws, &jwks, &options);
    if json {
        let document = match &outcome {
            Ok(verified) => json!({
                "valid": true,
                "format": "peac",
                "code": null,
                "message": null,
                "claims": verified.claims,
                "receipt_ref": verified.receipt_ref,
                "header": verified.header,
                "key_source": source.describe(),
            }),
            Err(error) => json!({
                "valid": false,
                "format": "peac",
                "code": error.code.code(),
                "message": error.message,
                "claims": null,
                "receipt_ref": null,
                "header": header,
                "key_source": source.describe(),
            }),
        };
        print_json(&document);
    }
    match outcome {
        Ok(verified) => {
            if !json {
                let claim = |name: &str| verified.claims.get(name).and_then(Value::as_str).unwrap_or("-").to_owned();
                let iat = verified.claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
                let mut lines = vec![
                    format!("VALID        PEAC receipt {label}: signature, header and claims verified"),
                    format!("issuer       {}", claim("iss")),
                    format!("type         {} ({})", claim("type"), claim("kind")),
                    format!("jti          {}", claim("jti")),
                    format!("issued       {} (iat {iat})", format_ms(iat.saturating_mul(1000))),
                ];
                if let Some(subject) = verified.claims.get("sub").and_then(Value::as_str) {
                    lines.push(format!("subject      {subject}"));
                }
                if let Some(commerce) = commerce_text(&verified.claims) {
                    lines.push(format!("amount       {commerce}"));
                }
                lines.push(format!("key          {} (from {})", kid.as_deref().unwrap_or("-"), source.describe()));
                lines.push(format!("receipt_ref  {}", verified.receipt_ref));
                print_lines(&lines);
            }
            Ok(EXIT_OK)
        }
        Err(error) => {
            if !json {
                print_lines(&[
                    format!("INVALID      PEAC receipt {label}: {}: {}", error.code.code(), error.message),
                    format!("key          {} (from {})", kid.as_deref().unwrap_or("-"), source.describe()),
                ]);
            }
            Ok(EXIT_INVALID)
        }
    }
}
