//! The provider directory: simulated providers described in a TOML file (`pactum-directory/1`).
//! The default directory is compiled into the binary (`runtime/directory/default.toml`); a user's
//! own file has the same format. Wire types (serde, unknown fields refused) are converted into
//! checked domain types at the boundary.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::money::{Currency, Money, MoneyError};

/// Name and version of the directory format.
pub const DIRECTORY_FORMAT: &str = "pactum-directory/1";
/// The directory shipped with the binary.
pub const DEFAULT_DIRECTORY: &str = include_str!("../directory/default.toml");
/// Largest directory file read: a directory lists tens of providers.
pub const DIRECTORY_BYTES_MAX: u64 = 1024 * 1024;
/// Most providers in one directory; negotiation asks every matching one for a quote.
pub const PROVIDERS_MAX: usize = 64;
/// Most intent types one provider may offer.
const INTENT_TYPES_PER_PROVIDER_MAX: usize = 16;
/// Longest simulated latency: beyond a minute a provider is simply unreachable.
const LATENCY_MS_MAX: u32 = 60_000;
/// Longest id, name and intent type.
const ID_BYTES_MAX: usize = 64;
const NAME_BYTES_MAX: usize = 128;

/// Why a directory was refused. Its message names the provider and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {detail}")]
pub struct DirectoryError {
    pub source_name: String,
    pub detail: String,
}

impl DirectoryError {
    /// Stable code (specs/error-codes.toml).
    pub fn code(&self) -> &'static str {
        "DIRECTORY_INVALID"
    }
}

/// What a provider sells, such as `weather.data`: lowercase dotted segments.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct IntentType(String);

impl IntentType {
    pub fn new(text: &str) -> Result<Self, String> {
        let segment_ok = |segment: &str| {
            !segment.is_empty()
                && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        let segments: Vec<&str> = text.split('.').collect();
        if text.len() > ID_BYTES_MAX || segments.len() < 2 || !segments.iter().all(|s| segment_ok(s)) {
            return Err(format!(
                "{text:?} is not an intent type (lowercase dotted segments such as weather.data, at most {ID_BYTES_MAX} bytes)"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntentType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// How a simulated provider moves its price between rounds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Concession {
    /// Moves the full step every round.
    Eager,
    /// Moves the full step every round until near its floor, then half steps.
    Steady,
    /// Moves only every other round.
    Stubborn,
}

impl Concession {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Steady => "steady",
            Self::Stubborn => "stubborn",
        }
    }
}

/// Percent chances, per request, of each simulated failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FailureRates {
    pub timeout_percent: u8,
    pub refusal_percent: u8,
    pub unreachable_percent: u8,
}

/// One simulated provider, checked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProviderSpec {
    pub id: String,
    pub name: String,
    pub intent_types: Vec<IntentType>,
    pub reference_price: Money,
    pub floor_percent: u8,
    pub concession: Concession,
    pub concession_percent: u8,
    pub latency_base_ms: u32,
    pub latency_jitter_ms: u32,
    pub failures: FailureRates,
}

impl ProviderSpec {
    /// The lowest price this provider accepts, in minor units (rounded up: it never sells below
    /// its floor).
    pub fn floor_price(&self) -> Money {
        let reference = u128::from(self.reference_price.amount_minor());
        let floor = (reference * u128::from(self.floor_percent)).div_ceil(100);
        // floor <= reference <= AMOUNT_MINOR_MAX, so this cannot fail.
        Money::from_minor(u64::try_from(floor).unwrap_or(u64::MAX), self.reference_price.currency())
            .unwrap_or(self.reference_price)
    }
}

/// A provider in another process (`pactum provider serve`), reached over HTTP. Its key is
/// pinned here: the buyer accepts only messages sealed with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteSpec {
    pub id: String,
    pub name: String,
    pub intent_types: Vec<IntentType>,
    /// The currency it quotes in.
    pub currency: Currency,
    /// `http://host:port` (no path, query or user info).
    pub endpoint: String,
    pub key_id: String,
    /// Its Ed25519 public key, base64url.
    pub public_key: String,
}

/// A checked directory of providers, in file order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Directory {
    providers: Vec<ProviderSpec>,
    remotes: Vec<RemoteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryWire {
    format: String,
    #[serde(default)]
    provider: Vec<ProviderWire>,
    #[serde(default)]
    remote: Vec<RemoteWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteWire {
    id: String,
    name: String,
    intent_types: Vec<String>,
    currency: String,
    endpoint: String,
    key_id: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderWire {
    id: String,
    name: String,
    intent_types: Vec<String>,
    reference_price: PriceWire,
    floor_percent: u8,
    concession: String,
    concession_percent: u8,
    latency_ms: LatencyWire,
    failures: FailuresWire,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceWire {
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyWire {
    base: u32,
    jitter: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailuresWire {
    timeout_percent: u8,
    refusal_percent: u8,
    unreachable_percent: u8,
}

impl Directory {
    /// The directory compiled into the binary (a test keeps it valid).
    pub fn builtin() -> Result<Self, DirectoryError> {
        Self::parse(DEFAULT_DIRECTORY, "built-in directory")
    }

    /// Reads a directory file.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let source_name = path.display().to_string();
        let fail = |detail: String| DirectoryError { source_name: source_name.clone(), detail };
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, DIRECTORY_BYTES_MAX + 1), &mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > DIRECTORY_BYTES_MAX {
            return Err(fail(format!("larger than {DIRECTORY_BYTES_MAX} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        Self::parse(&text, &source_name)
    }

    /// Parses and checks a directory; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, DirectoryError> {
        let fail = |detail: String| DirectoryError { source_name: source_name.to_owned(), detail };
        let wire: DirectoryWire = toml::from_str(text).map_err(|error| {
            let message = error.message().trim_end().replace('\n', " ");
            fail(match error.span() {
                None => message,
                Some(span) => {
                    // Name the line and show it, so the field is obvious.
                    let start = span.start.min(text.len());
                    let number = text[..start].matches('\n').count() + 1;
                    let line_text: String =
                        text.lines().nth(number - 1).unwrap_or("").trim().chars().take(80).collect();
                    format!("line {number} ({line_text:?}): {message}")
                }
            })
        })?;
        if wire.format != DIRECTORY_FORMAT {
            return Err(fail(format!(
                "format {:?} is not supported; this build reads {DIRECTORY_FORMAT}",
                wire.format
            )));
        }
        if wire.provider.len() + wire.remote.len() > PROVIDERS_MAX {
            return Err(fail(format!(
                "{} providers; at most {PROVIDERS_MAX}",
                wire.provider.len() + wire.remote.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut providers = Vec::with_capacity(wire.provider.len());
        for provider in wire.provider {
            let id = provider.id.clone();
            let spec = check_provider(provider).map_err(|detail| fail(format!("provider {id:?}: {detail}")))?;
            if !seen.insert(spec.id.clone()) {
                return Err(fail(format!("provider {:?} is listed twice", spec.id)));
            }
            providers.push(spec);
        }
        let mut remotes = Vec::with_capacity(wire.remote.len());
        for remote in wire.remote {
            let id = remote.id.clone();
            let spec = check_remote(remote).map_err(|detail| fail(format!("remote {id:?}: {detail}")))?;
            if !seen.insert(spec.id.clone()) {
                return Err(fail(format!("provider {:?} is listed twice", spec.id)));
            }
            remotes.push(spec);
        }
        Ok(Self { providers, remotes })
    }

    /// The remote providers, in file order.
    pub fn remotes(&self) -> &[RemoteSpec] {
        &self.remotes
    }

    /// The remote providers offering `intent_type`, in file order.
    pub fn remote_offering<'d>(&'d self, intent_type: &'d IntentType) -> impl Iterator<Item = &'d RemoteSpec> {
        self.remotes.iter().filter(move |p| p.intent_types.contains(intent_type))
    }

    pub fn providers(&self) -> &[ProviderSpec] {
        &self.providers
    }

    /// The providers offering `intent_type`, in directory order.
    pub fn offering<'d>(&'d self, intent_type: &'d IntentType) -> impl Iterator<Item = &'d ProviderSpec> {
        self.providers.iter().filter(move |p| p.intent_types.contains(intent_type))
    }

    /// Every intent type some provider offers, sorted.
    pub fn intent_types(&self) -> BTreeSet<&IntentType> {
        self.providers
            .iter()
            .flat_map(|p| p.intent_types.iter())
            .chain(self.remotes.iter().flat_map(|p| p.intent_types.iter()))
            .collect()
    }
}

fn check_id_name_intents(id: &str, name: &str, intent_types: &[String]) -> Result<Vec<IntentType>, String> {
    let id_ok = !id.is_empty()
        && id.len() <= ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(format!("id must be 1-{ID_BYTES_MAX} lowercase letters, digits or '-'"));
    }
    if name.trim().is_empty() || name.len() > NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(format!("name must be 1-{NAME_BYTES_MAX} bytes of printable text"));
    }
    if intent_types.is_empty() || intent_types.len() > INTENT_TYPES_PER_PROVIDER_MAX {
        return Err(format!("intent_types must list 1-{INTENT_TYPES_PER_PROVIDER_MAX} intent types"));
    }
    intent_types.iter().map(|t| IntentType::new(t)).collect::<Result<Vec<_>, _>>()
}

fn check_remote(wire: RemoteWire) -> Result<RemoteSpec, String> {
    let intent_types = check_id_name_intents(&wire.id, &wire.name, &wire.intent_types)?;
    let currency = Currency::parse(&wire.currency).map_err(|e| format!("currency: {e}"))?;
    let endpoint = check_endpoint(&wire.endpoint).map_err(|e| format!("endpoint {:?}: {e}", wire.endpoint))?;
    let expected_prefix = format!("agent:{}#", wire.id);
    let generation = wire.key_id.strip_prefix(&expected_prefix);
    if !generation.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("key_id must be {expected_prefix}<generation>"));
    }
    pactum_transcripts::public_key_from_base64url(&wire.public_key).map_err(|e| format!("public_key: {e}"))?;
    Ok(RemoteSpec {
        id: wire.id,
        name: wire.name,
        intent_types,
        currency,
        endpoint,
        key_id: wire.key_id,
        public_key: wire.public_key,
    })
}

/// A remote provider's endpoint: `http://host:port` with nothing after it (a trailing `/` is
/// dropped). Plain HTTP only: remote providers are meant for loopback and local networks.
pub fn check_endpoint(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    if url.scheme() != "http" {
        return Err("only http:// endpoints are supported".into());
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err("must name a host and a port".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry user info, a query or a fragment".into());
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err("must not have a path".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn check_provider(wire: ProviderWire) -> Result<ProviderSpec, String> {
    let intent_types = check_id_name_intents(&wire.id, &wire.name, &wire.intent_types)?;
    let price_error = |e: MoneyError| format!("reference_price: {e}");
    let currency = Currency::parse(&wire.reference_price.currency).map_err(price_error)?;
    let reference_price = Money::parse_major(&wire.reference_price.amount, currency).map_err(price_error)?;
    if reference_price.amount_minor() == 0 {
        return Err("reference_price must be above zero".into());
    }
    if wire.floor_percent == 0 || wire.floor_percent > 100 {
        return Err("floor_percent must be 1-100".into());
    }
    let concession = match wire.concession.as_str() {
        "eager" => Concession::Eager,
        "steady" => Concession::Steady,
        "stubborn" => Concession::Stubborn,
        other => return Err(format!("concession {other:?} is not eager, steady or stubborn")),
    };
    if wire.concession_percent > 100 {
        return Err("concession_percent must be 0-100".into());
    }
    if wire.latency_ms.base > LATENCY_MS_MAX || wire.latency_ms.jitter > LATENCY_MS_MAX {
        return Err(format!("latency_ms base and jitter must be at most {LATENCY_MS_MAX}"));
    }
    let failures = FailureRates {
        timeout_percent: wire.failures.timeout_percent,
        refusal_percent: wire.failures.refusal_percent,
        unreachable_percent: wire.failures.unreachable_percent,
    };
    let total = u16::from(failures.timeout_percent)
        + u16::from(failures.refusal_percent)
        + u16::from(failures.unreachable_percent);
    if total > 100 {
        return Err(format!("failure percentages add up to {total}; at most 100"));
    }
    Ok(ProviderSpec {
        id: wire.id,
        name: wire.name,
        intent_types,
        reference_price,
        floor_percent: wire.floor_percent,
        concession,
        concession_percent: wire.concession_percent,
        latency_base_ms: wire.latency_ms.base,
        latency_jitter_ms: wire.latency_ms.jitter,
        failures,
    })
}
