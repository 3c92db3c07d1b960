//! Fixtures shared by the integration tests: keys, JSON body strategies and stream building.
#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use pactum_transcripts::canonical::{SAFE_INTEGER_MAX, to_canonical_string};
use pactum_transcripts::{
    Anchor, Ed25519Signer, Event, EventKind, EventSigner, Head, KeyId, KeyRing, ManualClock, MemoryStore, StreamId,
    TranscriptStream,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
use serde_json::Value;

/// Where every test clock starts (2023-11-14, well inside the exact range of a JSON number).
pub const START_MS: u64 = 1_700_000_000_000;
/// Kinds the generated events use.
pub const KINDS: [&str; 4] = ["session.created", "round.bid", "round.counter", "note"];

/// Two trusted signers (A, B) and one untrusted (C), plus the ring trusting exactly A and B.
pub struct Keys {
    pub a: Ed25519Signer,
    pub b: Ed25519Signer,
    pub c: Ed25519Signer,
    pub trusted: KeyRing,
}

pub static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let a = Ed25519Signer::from_seed(key_id("agent:a#1"), &[1; 32]);
    let b = Ed25519Signer::from_seed(key_id("agent:b#1"), &[2; 32]);
    let c = Ed25519Signer::from_seed(key_id("agent:c#1"), &[3; 32]);
    let mut trusted = KeyRing::new();
    trusted.insert(a.key_id().clone(), a.verifying_key()).expect("key A is acceptable");
    trusted.insert(b.key_id().clone(), b.verifying_key()).expect("key B is acceptable");
    Keys { a, b, c, trusted }
});

pub fn key_id(text: &str) -> KeyId {
    KeyId::new(text).expect("valid key id")
}

pub fn kind(text: &str) -> EventKind {
    EventKind::new(text).expect("valid kind")
}

pub fn stream_id() -> StreamId {
    StreamId::new("ses_test:01").expect("valid stream id")
}

/// A proptest config with a fixed seed (deterministic runs) and no regression files. XorShift
/// because ChaCha, unoptimised in debug builds, would take most of the run time.
pub fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_algorithm: RngAlgorithm::XorShift,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Who signs a generated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Nobody,
    A,
    B,
}

impl Who {
    pub fn signer(self) -> Option<&'static Ed25519Signer> {
        match self {
            Who::Nobody => None,
            Who::A => Some(&KEYS.a),
            Who::B => Some(&KEYS.b),
        }
    }

    pub fn dyn_signer(self) -> Option<&'static dyn EventSigner> {
        self.signer().map(|signer| signer as &dyn EventSigner)
    }
}

/// A third of the events signed: enough mixing, while keeping debug-build Ed25519 verification
/// (several milliseconds per signature) affordable.
pub fn who() -> impl Strategy<Value = Who> {
    prop_oneof![4 => Just(Who::Nobody), 1 => Just(Who::A), 1 => Just(Who::B)]
}

/// Fewer signatures (a fifth), for properties whose break makes the verifier re-check pending
/// signatures one by one.
pub fn sparse_who() -> impl Strategy<Value = Who> {
    prop_oneof![8 => Just(Who::Nobody), 1 => Just(Who::A), 1 => Just(Who::B)]
}

pub fn signed_who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::A), Just(Who::B)]
}

/// Short strings mixing ASCII, non-ASCII (incl. astral and above-U+E000), escapes and controls.
pub fn text() -> impl Strategy<Value = String> {
    let special = vec![
        'é', 'ö', '€', '😀', '\u{fb33}', '\u{80}', '\u{2028}', '"', '\\', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}', ' ',
    ];
    prop::collection::vec(
        prop_oneof![4 => prop::char::range('a', 'z'), 2 => prop::sample::select(special), 1 => any::<char>()],
        0..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

pub fn nonempty_text() -> impl Strategy<Value = String> {
    (any::<char>(), text()).prop_map(|(first, rest)| format!("{first}{rest}"))
}

/// An integer a JSON number holds exactly (±(2^53 − 1)).
pub fn safe_int() -> impl Strategy<Value = i64> {
    let max = i64::try_from(SAFE_INTEGER_MAX).expect("fits");
    prop_oneof![-1000_i64..1000, -max..=max, Just(max), Just(-max)]
}

pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        safe_int().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A small JSON object body.
pub fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), json_value(), 0..5).prop_map(|map| Value::Object(map.into_iter().collect()))
}

pub fn canonical(value: &Value) -> String {
    to_canonical_string(value).expect("generated values are canonicalizable")
}

/// One event to append: what, signed by whom, and how far the clock moves before it.
#[derive(Clone, Debug)]
pub struct EventSpec {
    pub kind: &'static str,
    pub body: Value,
    pub who: Who,
    pub delta_ms: u64,
}

pub fn event_spec(who: impl Strategy<Value = Who>) -> impl Strategy<Value = EventSpec> {
    (prop::sample::select(KINDS.to_vec()), json_object(), who, 0_u64..1000)
        .prop_map(|(kind, body, who, delta_ms)| EventSpec { kind, body, who, delta_ms })
}

pub fn specs(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<EventSpec>> {
    prop::collection::vec(event_spec(who()), len)
}

pub fn sparse_specs(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<EventSpec>> {
    prop::collection::vec(event_spec(sparse_who()), len)
}

/// The events of a freshly built stream and the anchor its store recorded.
#[derive(Debug)]
pub struct Fixture {
    pub events: Vec<Event>,
    pub anchor: Anchor,
}

/// Appends `specs` one by one to a new in-memory stream, moving a manual clock between appends.
pub fn build(specs: &[EventSpec]) -> Fixture {
    let clock = Arc::new(ManualClock::new(START_MS));
    let stream = TranscriptStream::open(MemoryStore::new(), stream_id(), clock.clone()).expect("open stream");
    for spec in specs {
        clock.advance(spec.delta_ms);
        stream.append(kind(spec.kind), spec.body.clone(), spec.who.dyn_signer()).expect("append");
    }
    let anchor = Head::anchor(stream.head().expect("head"));
    let events = stream.events(0).expect("read events");
    assert_eq!(events.len(), specs.len());
    Fixture { events, anchor }
}

/// Events carrying a signature.
pub fn signed_count(events: &[Event]) -> u64 {
    events.iter().filter(|event| event.sig.is_some()).count() as u64
}
