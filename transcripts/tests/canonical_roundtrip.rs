//! Whatever canonicalization accepts must read back: `parse_strict(canon(v))` succeeds and
//! canonicalizes to the same text. (Regression: `1e19` was written as digits the parser refused.)

use pactum_transcripts::canonical::{parse_strict, to_canonical_string};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Every finite double, by bit pattern, plus whole numbers around the 2^53 and 1e21 edges.
        any::<u64>().prop_filter_map("finite", |bits| Number::from_f64(f64::from_bits(bits)).map(Value::Number)),
        (-1e22_f64..1e22_f64).prop_filter_map("finite", |f| Number::from_f64(f.trunc()).map(Value::Number)),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        any::<String>().prop_map(Value::String)
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonical_text_always_reads_back(value in json()) {
        if let Ok(text) = to_canonical_string(&value) {
            let parsed = parse_strict(&text);
            prop_assert!(parsed.is_ok(), "{text} does not parse back: {parsed:?}");
            let again = to_canonical_string(&parsed.expect("checked"));
            prop_assert_eq!(again.as_deref(), Ok(text.as_str()));
        }
    }
}
