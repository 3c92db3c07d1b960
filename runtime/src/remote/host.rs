//! The provider side of a remote negotiation: a provider of the directory, in its own
//! constellation, answering buyers' requests. Plain functions from request bytes to a
//! [`HostReply`]; the `pactum` program serves them over HTTP (`pactum provider serve`).
//!
//! Each buyer session gets a stream `remote:<session id>:<provider id>:<buyer key fingerprint>` in the
//! provider's constellation, signed by the provider: `remote.opened` (the buyer's identity,
//! pinned at first contact), `remote.received` (each of the buyer's sealed events, whole, once),
//! `remote.sent` (each answer, with its seal) and `remote.receipt_signed`. A repeated request
//! gets the answer already recorded, so a buyer retrying after a crash or a lost response
//! sees the same message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use pactum_memory::{AgentRole, Constellation, SecretSeed};
use pactum_transcripts::{
    Clock, Digest, Ed25519Signer, Event, EventKind, EventSigner, NewEvent, SignatureBytes, StreamId, TranscriptStream,
    public_key_bytes_to_base64url, verify_digest_signature,
};

use crate::directory::ProviderSpec;
use crate::error::RuntimeError;
use crate::event_store::ConstellationEventStore;
use crate::identities::{derive_agent_seed, ensure_agent, signer_for};
use crate::remote::{REMOTE_EVENTS_PER_REQUEST_MAX, REMOTE_FORMAT, REMOTE_SIMULATED_TIMEOUT_MS_MAX, seal_message};
use crate::session::model::{
    AcceptMessage, AskMessage, IntentMessage, OfferMessage, PartyBody, PriceBody, RejectMessage, kind,
};
use crate::session::receipt::{RECEIPT_FIELDS, RECEIPT_FORMAT, receipt_digest};
use crate::session::shell::check_session_id;
use crate::strategy::{ProviderAnswer, simulate_provider};

/// Stream ids of the provider's records of buyer sessions start with this.
pub const REMOTE_STREAM_PREFIX: &str = "remote:";

/// Event kinds of a provider's stream.
pub mod remote_kind {
    pub const OPENED: &str = "remote.opened";
    pub const RECEIVED: &str = "remote.received";
    pub const SENT: &str = "remote.sent";
    pub const RECEIPT_SIGNED: &str = "remote.receipt_signed";
}

/// Who a remote provider is (`GET /pactum/v1/identity`), and the directory entry that reaches it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub format: String,
    pub agent_id: String,
    pub name: String,
    pub key_id: String,
    pub public_key: String,
    pub intent_types: Vec<String>,
    pub currency: String,
}

/// `POST /pactum/v1/quote`: the buyer's sealed events for a round (its `round.intent` and the
/// round's offer), and how long it waits.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub format: String,
    pub session_id: String,
    pub buyer: PartyBody,
    pub round: u32,
    pub wait_ms: u32,
    pub events: Vec<Value>,
}

/// The provider's answer: a `round.ask` or `round.reject` message with its seal.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteResponse {
    pub format: String,
    pub kind: String,
    pub message: Value,
}

/// `POST /pactum/v1/receipt`: the buyer's accept and settlement events, and the receipt (and
/// PEAC signing input) to sign.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub format: String,
    pub session_id: String,
    pub buyer: PartyBody,
    pub events: Vec<Value>,
    pub receipt: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peac_input: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptResponse {
    pub format: String,
    pub key_id: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peac_signature: Option<String>,
}

/// What the HTTP layer sends back.
#[derive(Clone, PartialEq, Debug)]
pub enum HostReply {
    /// `200` with this JSON body.
    Ok(Value),
    /// An error status with `{"error": {"code", "message"}}`.
    Error { status: u16, code: &'static str, message: String },
    /// The simulated provider times out: answer `504` only after this many milliseconds.
    LateTimeout { after_ms: u64 },
}

impl HostReply {
    fn error(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::Error { status, code, message: message.into() }
    }

    /// The error body of an error reply.
    pub fn error_body(code: &str, message: &str) -> Value {
        json!({ "error": { "code": code, "message": message } })
    }
}

/// One provider of a directory, served from its own constellation.
pub struct ProviderHost {
    db: Arc<Constellation>,
    store: ConstellationEventStore,
    spec: ProviderSpec,
    signer: Arc<Ed25519Signer>,
    identity: Identity,
    seed: u64,
    clock: Arc<dyn Clock>,
    /// One request changes a stream at a time (reads, decisions and the append).
    lock: Mutex<()>,
    /// Buyer events whose signatures this process has verified, by hash, public key and
    /// signature: a buyer sends its intent again with every round's request.
    verified: Mutex<std::collections::HashSet<VerifiedEvent>>,
}

/// A buyer event checked once: its hash, the buyer's public key and the signature.
type VerifiedEvent = (Digest, [u8; 32], [u8; 64]);

/// Verified event hashes kept in memory before the set starts over.
const VERIFIED_EVENTS_MAX: usize = 65_536;

impl std::fmt::Debug for ProviderHost {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ProviderHost").field("provider", &self.spec.id).finish_non_exhaustive()
    }
}

impl ProviderHost {
    /// Opens the provider `spec` in `db`: its agent (created on first use, with a key derived
    /// from the constellation's key root, which `key_seed` creates if there is none) signs its
    /// answers; `seed` drives its simulated behaviour.
    pub fn open(
        db: Arc<Constellation>,
        spec: ProviderSpec,
        seed: u64,
        key_seed: [u8; 32],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RuntimeError> {
        let now = clock.now_ms();
        let root = db.ensure_key_root(&SecretSeed::new(key_seed), now)?;
        let agent = match db.agent(&spec.id)? {
            Some(agent) => agent,
            None => ensure_agent(
                &db,
                &spec.id,
                &spec.name,
                AgentRole::Provider,
                derive_agent_seed(&root, &spec.id, 1),
                now,
            )?,
        };
        if agent.role != AgentRole::Provider {
            return Err(RuntimeError::InvalidAgentId(format!("{} is not a provider in this constellation", spec.id)));
        }
        let signer = Arc::new(signer_for(&agent)?);
        let identity = Identity {
            format: REMOTE_FORMAT.to_owned(),
            agent_id: agent.agent_id.clone(),
            name: spec.name.clone(),
            key_id: agent.key_id.clone(),
            public_key: public_key_bytes_to_base64url(&agent.public_key),
            intent_types: spec.intent_types.iter().map(|t| t.as_str().to_owned()).collect(),
            currency: spec.reference_price.currency().code().to_owned(),
        };
        let store = ConstellationEventStore::new(db.clone());
        Ok(Self {
            db,
            store,
            spec,
            signer,
            identity,
            seed,
            clock,
            lock: Mutex::new(()),
            verified: Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn constellation(&self) -> &Arc<Constellation> {
        &self.db
    }

    /// The `[[remote]]` entry of a buyer's directory that reaches this provider at `endpoint`.
    pub fn directory_entry(&self, endpoint: &str) -> String {
        let quoted = |text: &str| Value::String(text.to_owned()).to_string();
        let intents: Vec<String> = self.identity.intent_types.iter().map(|t| quoted(t)).collect();
        format!(
            "[[remote]]\nid = {}\nname = {}\nintent_types = [{}]\ncurrency = {}\nendpoint = {}\nkey_id = {}\npublic_key = {}\n",
            quoted(&self.identity.agent_id),
            quoted(&self.identity.name),
            intents.join(", "),
            quoted(&self.identity.currency),
            quoted(endpoint),
            quoted(&self.identity.key_id),
            quoted(&self.identity.public_key),
        )
    }

    /// Answers a request for a quote.
    pub fn quote(&self, body: &[u8]) -> HostReply {
        let request: QuoteRequest = match parse_request(body) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        match self.quote_checked(&request) {
            Ok(reply) => reply,
            Err(reply) => reply,
        }
    }

    fn quote_checked(&self, request: &QuoteRequest) -> Result<HostReply, HostReply> {
        let events = self.check_events(&request.format, &request.session_id, &request.buyer, &request.events)?;
        let me = self.identity.agent_id.as_str();
        let intent = events
            .iter()
            .find(|e| e.kind.as_str() == kind::INTENT)
            .ok_or_else(|| HostReply::error(422, "REQUEST_INVALID", "the request carries no round.intent"))?;
        let intent_message: IntentMessage = serde_json::from_value(intent.body.clone())
            .map_err(|e| HostReply::error(422, "REQUEST_INVALID", format!("round.intent: {e}")))?;
        if !intent_message.receivers.iter().any(|r| r == me) {
            return Err(HostReply::error(422, "REQUEST_INVALID", format!("the intent is not addressed to {me}")));
        }
        let offer = events
            .iter()
            .filter(|e| matches!(e.kind.as_str(), kind::BID | kind::COUNTER))
            .find(|e| e.body.get("round").and_then(Value::as_u64) == Some(u64::from(request.round)))
            .ok_or_else(|| {
                HostReply::error(
                    422,
                    "REQUEST_INVALID",
                    format!("the request carries no offer for round {}", request.round),
                )
            })?;
        let offer_message: OfferMessage = serde_json::from_value(offer.body.clone())
            .map_err(|e| HostReply::error(422, "REQUEST_INVALID", format!("{}: {e}", offer.kind)))?;
        if !offer_message.receivers.iter().any(|r| r == me) {
            return Err(HostReply::error(422, "REQUEST_INVALID", format!("the offer is not addressed to {me}")));
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let record = self.record(&request.session_id, &request.buyer)?;
        if let Some(sent) = record.sent.get(&request.round) {
            return Ok(HostReply::Ok(serde_json::to_value(sent).map_err(internal)?));
        }
        let offers_intent = self.spec.intent_types.iter().any(|t| t.as_str() == intent_message.intent_type);
        let same_currency = self.spec.reference_price.currency().code() == intent_message.currency;
        let answer = if offers_intent && same_currency {
            simulate_provider(&self.spec, self.seed, &request.session_id, request.round, Some(request.wait_ms))
        } else {
            ProviderAnswer::Refuse { latency_ms: 0 }
        };
        let (message_kind, message) = match answer {
            ProviderAnswer::Unreachable => {
                return Ok(HostReply::error(503, "PROVIDER_UNAVAILABLE", "the provider is not taking requests"));
            }
            ProviderAnswer::Timeout => {
                let after_ms = u64::from(request.wait_ms).saturating_add(250).min(REMOTE_SIMULATED_TIMEOUT_MS_MAX);
                self.append(&record, &events, None)?;
                return Ok(HostReply::LateTimeout { after_ms });
            }
            ProviderAnswer::Ask { price, latency_ms } => {
                let message = AskMessage {
                    round: request.round,
                    round_type: "ASK".into(),
                    sender: me.to_owned(),
                    receiver: request.buyer.agent_id.clone(),
                    price: PriceBody::of(price),
                    latency_ms,
                    in_reply_to: offer.seq,
                    envelope: None,
                };
                (kind::ASK, serde_json::to_value(message).map_err(internal)?)
            }
            ProviderAnswer::Refuse { latency_ms } => {
                let message = RejectMessage {
                    round: request.round,
                    round_type: "REJECT".into(),
                    sender: me.to_owned(),
                    receiver: request.buyer.agent_id.clone(),
                    reason: "refused".into(),
                    latency_ms,
                    in_reply_to: offer.seq,
                    envelope: None,
                };
                (kind::REJECT, serde_json::to_value(message).map_err(internal)?)
            }
        };
        let seal = seal_message(
            self.signer.as_ref(),
            &request.session_id,
            message_kind,
            &message,
            &offer.hash,
            self.clock.now_ms(),
        )
        .map_err(|e| internal(std::io::Error::other(e)))?;
        let mut message = message;
        if let Value::Object(fields) = &mut message {
            fields.insert("envelope".into(), serde_json::to_value(&seal).map_err(internal)?);
        }
        let response = QuoteResponse { format: REMOTE_FORMAT.to_owned(), kind: message_kind.to_owned(), message };
        let response_json = serde_json::to_value(&response).map_err(internal)?;
        self.append(
            &record,
            &events,
            Some((remote_kind::SENT, json!({ "round": request.round, "answer": response_json }))),
        )?;
        Ok(HostReply::Ok(response_json))
    }

    /// Signs the receipt of a session this provider agreed to, once it is told of the
    /// settlement: the buyer's `round.accept` must accept this provider's last ask, and the
    /// receipt must name this provider, that price and that accept.
    pub fn receipt(&self, body: &[u8]) -> HostReply {
        let request: ReceiptRequest = match parse_request(body) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        match self.receipt_checked(&request) {
            Ok(reply) => reply,
            Err(reply) => reply,
        }
    }

    fn receipt_checked(&self, request: &ReceiptRequest) -> Result<HostReply, HostReply> {
        let events = self.check_events(&request.format, &request.session_id, &request.buyer, &request.events)?;
        let me = self.identity.agent_id.as_str();
        let accept = events
            .iter()
            .find(|e| e.kind.as_str() == kind::ACCEPT)
            .ok_or_else(|| HostReply::error(422, "REQUEST_INVALID", "the request carries no round.accept"))?;
        let accept_message: AcceptMessage = serde_json::from_value(accept.body.clone())
            .map_err(|e| HostReply::error(422, "REQUEST_INVALID", format!("round.accept: {e}")))?;
        if accept_message.receiver != me {
            return Err(HostReply::error(422, "REQUEST_INVALID", format!("the accept is not addressed to {me}")));
        }
        let settled =
            events.iter().find(|e| e.kind.as_str() == kind::RAIL_COMMITTED && e.seq > accept.seq).ok_or_else(|| {
                HostReply::error(422, "REQUEST_INVALID", "the request carries no settlement.committed after the accept")
            })?;
        let evidence: crate::session::model::EvidenceBody = serde_json::from_value(settled.body.clone())
            .map_err(|e| HostReply::error(422, "REQUEST_INVALID", format!("settlement.committed: {e}")))?;
        if evidence.amount != accept_message.price {
            return Err(HostReply::error(409, "RECEIPT_REFUSED", "the settlement is not of the accepted price"));
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let record = self.record(&request.session_id, &request.buyer)?;
        let asked = record
            .sent
            .get(&accept_message.round)
            .filter(|sent| sent.kind == kind::ASK)
            .and_then(|sent| sent.message.get("price").cloned())
            .and_then(|price| serde_json::from_value::<PriceBody>(price).ok());
        if asked.as_ref() != Some(&accept_message.price) {
            return Err(HostReply::error(
                409,
                "RECEIPT_REFUSED",
                format!("the accept is not of this provider's ask in round {}", accept_message.round),
            ));
        }
        let expect = |field: &str, value: Value| -> Result<(), HostReply> {
            let found = field.split('.').try_fold(&request.receipt, |v, key| v.get(key));
            if found != Some(&value) {
                return Err(HostReply::error(409, "RECEIPT_REFUSED", format!("the receipt's {field} is not {value}")));
            }
            Ok(())
        };
        // Exactly the fields of a receipt, each checked against what was agreed and settled.
        let fields = request
            .receipt
            .as_object()
            .ok_or_else(|| HostReply::error(422, "REQUEST_INVALID", "the receipt is not an object"))?;
        if let Some(unknown) =
            fields.keys().find(|k| !RECEIPT_FIELDS.contains(&k.as_str()) && k.as_str() != "signature")
        {
            return Err(HostReply::error(
                409,
                "RECEIPT_REFUSED",
                format!("the receipt has an unknown field {unknown:?}"),
            ));
        }
        expect("format", json!(RECEIPT_FORMAT))?;
        expect("receipt_id", json!(format!("rcpt-{}", request.session_id)))?;
        expect("transcript_id", json!(crate::session::shell::session_stream_id(&request.session_id)))?;
        expect("payment_id", json!(evidence.payment_id))?;
        expect("rail", json!(evidence.rail))?;
        expect("rail_reference", json!(evidence.reference))?;
        expect("issued_at_ms", json!(settled.at_ms))?;
        expect("agreement.event", json!(format!("event:{}", accept.seq)))?;
        expect("session_id", json!(request.session_id))?;
        expect("issuer.agent_id", json!(me))?;
        expect("issuer.key_id", json!(self.identity.key_id))?;
        expect("issuer.public_key", json!(self.identity.public_key))?;
        expect("payer", json!(request.buyer.agent_id))?;
        expect("payee", json!(me))?;
        expect("amount", serde_json::to_value(&accept_message.price).map_err(internal)?)?;
        expect("agreement.hash", json!(accept.hash.to_hex()))?;
        let digest = receipt_digest(&request.receipt).map_err(|e| HostReply::error(422, "REQUEST_INVALID", e.0))?;
        let signature = self.signer.sign_digest(&digest);
        let peac_signature = match &request.peac_input {
            None => None,
            Some(input) => {
                self.check_peac_input(input, &accept_message.price)?;
                Some(self.signer.sign_message(input.as_bytes()))
            }
        };
        let response = ReceiptResponse {
            format: REMOTE_FORMAT.to_owned(),
            key_id: self.identity.key_id.clone(),
            signature: signature.to_base64url(),
            peac_signature: peac_signature.map(|s| s.to_base64url()),
        };
        let response_json = serde_json::to_value(&response).map_err(internal)?;
        let signed = json!({ "receipt": request.receipt, "peac_input": request.peac_input, "answer": response_json });
        // One receipt per session: asked again, only the same receipt is signed again.
        if let Some(first) = &record.receipt_signed {
            if first != &request.receipt {
                return Err(HostReply::error(
                    409,
                    "RECEIPT_REFUSED",
                    "this session's receipt is signed already, with other content",
                ));
            }
            return Ok(HostReply::Ok(response_json));
        }
        self.append(&record, &events, Some((remote_kind::RECEIPT_SIGNED, signed)))?;
        Ok(HostReply::Ok(response_json))
    }

    /// A PEAC signing input names this provider (header `kid`, `iss`) and the accepted amount.
    fn check_peac_input(&self, input: &str, price: &PriceBody) -> Result<(), HostReply> {
        use base64::Engine as _;
        let refuse = |why: &str| HostReply::error(409, "RECEIPT_REFUSED", format!("the PEAC record {why}"));
        let (header, payload) = input.split_once('.').ok_or_else(|| refuse("is not a JWS signing input"))?;
        let decode = |part: &str| -> Option<Value> {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let header = decode(header).ok_or_else(|| refuse("header is not base64url JSON"))?;
        let payload = decode(payload).ok_or_else(|| refuse("payload is not base64url JSON"))?;
        if header.get("kid") != Some(&json!(self.identity.key_id)) {
            return Err(refuse("is not for this provider's key"));
        }
        let public_key = pactum_transcripts::public_key_from_base64url(&self.identity.public_key)
            .map_err(|e| internal(std::io::Error::other(e)))?;
        if payload.get("iss") != Some(&json!(pactum_transcripts::peac::did_key_for_ed25519(&public_key))) {
            return Err(refuse("is not issued by this provider"));
        }
        let commerce = payload.get("extensions").and_then(|e| e.get(pactum_transcripts::peac::COMMERCE_EXTENSION));
        let amount = commerce.and_then(|c| c.get("amount_minor"));
        let currency = commerce.and_then(|c| c.get("currency"));
        if amount != Some(&json!(price.amount_minor.to_string())) || currency != Some(&json!(price.currency)) {
            return Err(refuse("is not of the accepted amount"));
        }
        Ok(())
    }

    /// Parses and checks the buyer's events: each is of this session's stream, signed by the
    /// buyer's key, and its hash and signature verify.
    fn check_events(
        &self,
        format: &str,
        session_id: &str,
        buyer: &PartyBody,
        events: &[Value],
    ) -> Result<Vec<Event>, HostReply> {
        if format != REMOTE_FORMAT {
            return Err(HostReply::error(
                400,
                "FORMAT_UNSUPPORTED",
                format!("format {format:?} is not {REMOTE_FORMAT}"),
            ));
        }
        check_session_id(session_id).map_err(|e| HostReply::error(400, "REQUEST_INVALID", e.to_string()))?;
        if events.is_empty() || events.len() > REMOTE_EVENTS_PER_REQUEST_MAX {
            return Err(HostReply::error(
                400,
                "REQUEST_INVALID",
                format!("a request carries 1-{REMOTE_EVENTS_PER_REQUEST_MAX} events"),
            ));
        }
        let public_key = pactum_transcripts::public_key_from_base64url(&buyer.public_key)
            .map_err(|e| HostReply::error(400, "REQUEST_INVALID", format!("buyer public key: {e}")))?;
        let stream = crate::session::shell::session_stream_id(session_id);
        events
            .iter()
            .map(|value| {
                let event = Event::from_json(value.clone())
                    .map_err(|e| HostReply::error(400, "REQUEST_INVALID", format!("event: {e}")))?;
                let bad =
                    |why: String| HostReply::error(403, "SIGNATURE_INVALID", format!("event {}: {why}", event.seq));
                if event.stream.as_str() != stream {
                    return Err(bad(format!("is of stream {}, not {stream}", event.stream)));
                }
                if event.signer.as_ref().map(|k| k.as_str()) != Some(buyer.key_id.as_str()) {
                    return Err(bad(format!("is not signed by the buyer's key {}", buyer.key_id)));
                }
                let hash = event.compute_hash().map_err(|e| bad(e.to_string()))?;
                if hash != event.hash {
                    return Err(bad("its hash does not match its content".into()));
                }
                let signature: &SignatureBytes = event.sig.as_ref().ok_or_else(|| bad("is not signed".into()))?;
                // The same event (hash), key and signature verified before need not be again.
                let key = (hash, public_key, *signature.as_bytes());
                if self.verified.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
                    return Ok(event);
                }
                if !verify_digest_signature(&public_key, &hash, signature) {
                    return Err(bad("its signature does not verify under the buyer's key".into()));
                }
                let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
                if verified.len() >= VERIFIED_EVENTS_MAX {
                    verified.clear();
                }
                verified.insert(key);
                Ok(event)
            })
            .collect()
    }

    /// The provider's record of a buyer session (created with `remote.opened` on first contact).
    fn record(&self, session_id: &str, buyer: &PartyBody) -> Result<SessionRecord, HostReply> {
        let public_key = pactum_transcripts::public_key_from_base64url(&buyer.public_key)
            .map_err(|e| HostReply::error(400, "REQUEST_INVALID", format!("buyer public key: {e}")))?;
        let fingerprint = Digest::tagged(b"pactum-remote/1 buyer\0", &public_key).to_hex();
        let stream_id = StreamId::new(format!(
            "{REMOTE_STREAM_PREFIX}{session_id}:{}:{}",
            self.identity.agent_id,
            &fingerprint[..16]
        ))
        .map_err(|e| HostReply::error(400, "REQUEST_INVALID", e.to_string()))?;
        let stream = TranscriptStream::open(self.store.clone(), stream_id, self.clock.clone()).map_err(internal)?;
        // A stream is created by its first append: a new session has none yet.
        let existing = match stream.head().map_err(internal)? {
            None => Vec::new(),
            Some(_) => stream.events(0).map_err(internal)?,
        };
        let mut record = SessionRecord {
            stream,
            session_id: session_id.to_owned(),
            buyer: buyer.clone(),
            opened: !existing.is_empty(),
            received: BTreeMap::new(),
            sent: BTreeMap::new(),
            receipt_signed: None,
        };
        for event in existing {
            match event.kind.as_str() {
                remote_kind::OPENED => {
                    let pinned =
                        event.body.get("buyer").cloned().and_then(|b| serde_json::from_value::<PartyBody>(b).ok());
                    if pinned.as_ref() != Some(buyer) {
                        return Err(HostReply::error(
                            409,
                            "BUYER_MISMATCH",
                            "this session was opened by another buyer identity",
                        ));
                    }
                }
                remote_kind::RECEIVED => {
                    if let Some(hash) = event.body.get("event").and_then(|e| e.get("hash")).and_then(Value::as_str) {
                        record.received.insert(hash.to_owned(), ());
                    }
                }
                remote_kind::SENT => {
                    let round = event.body.get("round").and_then(Value::as_u64).and_then(|r| u32::try_from(r).ok());
                    let answer = event.body.get("answer").cloned().and_then(|a| serde_json::from_value(a).ok());
                    if let (Some(round), Some(answer)) = (round, answer) {
                        record.sent.insert(round, answer);
                    }
                }
                remote_kind::RECEIPT_SIGNED => record.receipt_signed = event.body.get("receipt").cloned(),
                _ => {}
            }
        }
        Ok(record)
    }

    /// Appends, in one transaction: `remote.opened` if this is the first contact, the buyer's
    /// events not recorded yet, and `extra`.
    fn append(&self, record: &SessionRecord, events: &[Event], extra: Option<(&str, Value)>) -> Result<(), HostReply> {
        let signer: &dyn EventSigner = self.signer.as_ref();
        let at_ms = self.clock.now_ms();
        let mut bodies: Vec<(&str, Value)> = Vec::new();
        if !record.opened {
            bodies.push((
                remote_kind::OPENED,
                json!({
                    "format": REMOTE_FORMAT,
                    "session_id": record.session_id,
                    "buyer": record.buyer,
                    "provider": {
                        "agent_id": self.identity.agent_id,
                        "key_id": self.identity.key_id,
                        "public_key": self.identity.public_key,
                    },
                }),
            ));
        }
        let mut seen = record.received.clone();
        for event in events {
            if seen.insert(event.hash.to_hex(), ()).is_none() {
                bodies.push((remote_kind::RECEIVED, json!({ "event": event.to_json() })));
            }
        }
        bodies.extend(extra);
        if bodies.is_empty() {
            return Ok(());
        }
        let new_events = bodies
            .into_iter()
            .map(|(kind, body)| {
                Ok(NewEvent {
                    kind: EventKind::new(kind).map_err(internal)?,
                    body,
                    signer: Some(signer),
                    at_ms: Some(at_ms),
                })
            })
            .collect::<Result<Vec<_>, HostReply>>()?;
        record.stream.append_batch(new_events).map_err(internal)?;
        Ok(())
    }
}

/// What the provider's stream says of one buyer session.
struct SessionRecord {
    stream: TranscriptStream<ConstellationEventStore>,
    session_id: String,
    buyer: PartyBody,
    opened: bool,
    received: BTreeMap<String, ()>,
    sent: BTreeMap<u32, QuoteResponse>,
    /// The receipt signed for this session, if any.
    receipt_signed: Option<Value>,
}

fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HostReply> {
    let text =
        std::str::from_utf8(body).map_err(|_| HostReply::error(400, "REQUEST_INVALID", "the body is not UTF-8"))?;
    let value = pactum_transcripts::canonical::parse_strict(text)
        .map_err(|e| HostReply::error(400, "REQUEST_INVALID", format!("the body is not I-JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| HostReply::error(400, "REQUEST_INVALID", e.to_string()))
}

fn internal(error: impl std::fmt::Display) -> HostReply {
    tracing::error!(%error, "a remote request failed inside the provider");
    HostReply::error(500, "INTERNAL", error.to_string())
}

/// What [`agreement`] found: the two records, and the messages they share.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Agreement {
    pub session_id: String,
    pub buyer_stream: String,
    pub provider_stream: String,
    pub provider: String,
    /// Buyer events the provider received, each in the buyer's stream with the same hash.
    pub buyer_messages: usize,
    /// Provider messages the buyer recorded, each with the same seal.
    pub provider_messages: usize,
}

/// Whether a buyer's session (`session:<id>`) and a provider's record of it
/// (`remote:<id>:<provider>:<buyer>`) are of the same negotiation between the same two keys, and agree on
/// every message they share. Both are assumed verified on their own (hashes, links,
/// signatures); this compares them. `Err` names the first disagreement.
pub fn agreement(buyer_events: &[Event], provider_events: &[Event]) -> Result<Agreement, String> {
    let first = |events: &[Event]| events.first().map(|e| e.stream.as_str().to_owned()).unwrap_or_default();
    let (buyer_stream, provider_stream) = (first(buyer_events), first(provider_events));
    let session_id = buyer_stream
        .strip_prefix(crate::session::model::SESSION_STREAM_PREFIX)
        .ok_or_else(|| format!("{buyer_stream:?} is not a session's transcript (session:<id>)"))?
        .to_owned();
    let provider_session = provider_stream
        .strip_prefix(REMOTE_STREAM_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .map(|(session, _)| session)
        .ok_or_else(|| {
            format!("{provider_stream:?} is not a provider's record (remote:<session>:<provider>:<buyer>)")
        })?;
    if provider_session != session_id {
        return Err(format!("the provider's record is of session {provider_session}, not {session_id}"));
    }
    let opened = provider_events
        .iter()
        .find(|e| e.kind.as_str() == remote_kind::OPENED)
        .ok_or("the provider's record has no remote.opened")?;
    let party = |field: &str| -> Result<PartyBody, String> {
        serde_json::from_value(opened.body.get(field).cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("remote.opened {field}: {e}"))
    };
    let (buyer, provider) = (party("buyer")?, party("provider")?);
    let named = provider_stream.strip_prefix(REMOTE_STREAM_PREFIX).and_then(|rest| rest.split(':').nth(1));
    if named != Some(provider.agent_id.as_str()) {
        return Err(format!("the provider's record {provider_stream} is not named for {}", provider.agent_id));
    }
    let created =
        buyer_events.iter().find(|e| e.kind.as_str() == kind::CREATED).ok_or("the session has no session.created")?;
    if created.body.get("buyer").cloned().and_then(|b| serde_json::from_value::<PartyBody>(b).ok()).as_ref()
        != Some(&buyer)
    {
        return Err("the provider's record names another buyer identity than the session".into());
    }
    let discovered = buyer_events
        .iter()
        .find(|e| e.kind.as_str() == kind::DISCOVERY)
        .and_then(|e| e.body.get("offering"))
        .and_then(Value::as_array)
        .and_then(|offering| offering.iter().find(|p| p.get("agent_id") == Some(&json!(provider.agent_id))))
        .ok_or_else(|| format!("the session did not discover {}", provider.agent_id))?;
    if discovered.get("key_id") != Some(&json!(provider.key_id))
        || discovered.get("public_key") != Some(&json!(provider.public_key))
    {
        return Err(format!("the session knows {} by another key than its record's", provider.agent_id));
    }
    if provider_events.iter().any(|e| e.signer.as_ref().map(|k| k.as_str()) != Some(provider.key_id.as_str())) {
        return Err(format!("the provider's record is not signed throughout by {}", provider.key_id));
    }
    let shared = shared_messages(buyer_events, provider_events)?;
    let buyer_messages = provider_events.iter().filter(|e| e.kind.as_str() == remote_kind::RECEIVED).count();
    Ok(Agreement {
        session_id,
        buyer_stream,
        provider_stream,
        provider: provider.agent_id,
        buyer_messages,
        provider_messages: shared - buyer_messages,
    })
}

/// How a buyer's session and a provider's record of it agree: every buyer event the provider
/// received is in the buyer's stream with the same hash, and every message the provider sent
/// is in the buyer's stream with the same seal. Returns the number of shared messages.
pub fn shared_messages(buyer_events: &[Event], provider_events: &[Event]) -> Result<usize, String> {
    let by_hash: BTreeMap<String, &Event> = buyer_events.iter().map(|e| (e.hash.to_hex(), e)).collect();
    let mut shared = 0;
    for event in provider_events {
        match event.kind.as_str() {
            remote_kind::RECEIVED => {
                let received = event.body.get("event").cloned().ok_or("remote.received without an event")?;
                let received = Event::from_json(received).map_err(|e| e.to_string())?;
                let Some(own) = by_hash.get(&received.hash.to_hex()) else {
                    return Err(format!("the buyer's stream lacks event {} ({})", received.seq, received.hash));
                };
                if own.to_json() != received.to_json() {
                    return Err(format!("event {} differs between the two records", received.seq));
                }
                shared += 1;
            }
            remote_kind::SENT => {
                let answer: QuoteResponse = event
                    .body
                    .get("answer")
                    .cloned()
                    .and_then(|a| serde_json::from_value(a).ok())
                    .ok_or("remote.sent without an answer")?;
                if !buyer_events.iter().any(|e| e.kind.as_str() == answer.kind && e.body == answer.message) {
                    let round = event.body.get("round").cloned().unwrap_or(Value::Null);
                    return Err(format!("the buyer's stream lacks the provider's {} of round {round}", answer.kind));
                }
                shared += 1;
            }
            _ => {}
        }
    }
    Ok(shared)
}
