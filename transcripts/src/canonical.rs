//! RFC 8785 JSON Canonicalization Scheme (JCS) and a strict I-JSON parser.
//!
//! Canonical form: object members sorted by the UTF-16 code units of their names, no insignificant
//! whitespace, strings escaped minimally (only `"`, `\` and C0 controls; everything else raw UTF-8),
//! numbers formatted as ECMAScript's `Number.prototype.toString` does.
//!
//! JCS models every number as an IEEE 754 double. An integer beyond ±(2^53 − 1) cannot be represented
//! exactly, so two different integers could canonicalize to the same text and therefore the same hash.
//! Rather than let a tampered value verify, canonicalization refuses such integers
//! ([`CanonicalError::IntegerOutOfRange`]). Money is integer minor units and always fits.

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest integer magnitude a JSON number may carry and still be exact in a double (2^53 − 1).
pub const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// An integer outside ±(2^53 − 1); it would lose precision as a double.
    #[error("integer {0} is outside the exact range of a JSON number (±(2^53 - 1))")]
    IntegerOutOfRange(String),
    /// NaN or an infinity (serde_json cannot parse these, but a caller can build them).
    #[error("number {0} is not finite")]
    NonFiniteNumber(String),
}

/// Returns the canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical JSON text of `value` to `out`.
///
/// On error, `out` may hold a partial prefix; callers discard it.
pub fn write_canonical(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => write_object(members, out)?,
    }
    Ok(())
}

fn write_object(members: &Map<String, Value>, out: &mut String) -> Result<(), CanonicalError> {
    // serde_json's map iterates in UTF-8 byte order, which equals UTF-16 order when no name holds
    // a character at or above U+E000 (UTF-8 lead byte 0xEE or more). One pass over the names
    // decides whether map order can be written as is; otherwise (such a name, or a map not in
    // byte order because some crate enabled serde_json's `preserve_order`) the members are
    // sorted by UTF-16 code units first.
    let mut previous: Option<&str> = None;
    let map_order_is_canonical = members.keys().all(|name| {
        let in_order =
            !name.bytes().any(|byte| byte >= 0xEE) && previous.is_none_or(|p| p.as_bytes() < name.as_bytes());
        previous = Some(name);
        in_order
    });
    out.push('{');
    if map_order_is_canonical {
        write_members(members.iter(), out)?;
    } else {
        let mut entries: Vec<(&String, &Value)> = members.iter().collect();
        entries.sort_by(|a, b| compare_utf16(a.0, b.0));
        write_members(entries.into_iter(), out)?;
    }
    out.push('}');
    Ok(())
}

fn write_members<'v>(
    members: impl Iterator<Item = (&'v String, &'v Value)>,
    out: &mut String,
) -> Result<(), CanonicalError> {
    for (index, (name, member)) in members.enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        write_canonical(member, out)?;
    }
    Ok(())
}

/// Orders two strings by their UTF-16 code units, as RFC 8785 §3.2.3 requires.
pub fn compare_utf16(left: &str, right: &str) -> Ordering {
    if left.is_ascii() && right.is_ascii() {
        return left.as_bytes().cmp(right.as_bytes());
    }
    left.encode_utf16().cmp(right.encode_utf16())
}

fn write_number(number: &Number, out: &mut String) -> Result<(), CanonicalError> {
    if let Some(unsigned) = number.as_u64() {
        if unsigned > SAFE_INTEGER_MAX {
            return Err(CanonicalError::IntegerOutOfRange(unsigned.to_string()));
        }
        write_integer(unsigned, out);
        return Ok(());
    }
    if let Some(signed) = number.as_i64() {
        if signed.unsigned_abs() > SAFE_INTEGER_MAX {
            return Err(CanonicalError::IntegerOutOfRange(signed.to_string()));
        }
        write_integer(signed, out);
        return Ok(());
    }
    let float = number.as_f64().ok_or_else(|| CanonicalError::NonFiniteNumber(number.to_string()))?;
    write_double(float, out)
}

/// Formats a double the way ECMAScript's `Number.prototype.toString` does (-0 prints as `0`).
pub fn write_double(float: f64, out: &mut String) -> Result<(), CanonicalError> {
    if !float.is_finite() {
        return Err(CanonicalError::NonFiniteNumber(float.to_string()));
    }
    if prints_as_unsafe_integer(float) {
        return Err(CanonicalError::IntegerOutOfRange(format!("{float:.0}")));
    }
    out.push_str(&format_ecmascript(float));
    Ok(())
}

/// A finite double as ECMAScript's `Number.prototype.toString` prints it (-0 prints as `0`).
/// [`write_double`] adds Pactum's range rule on top.
pub fn format_ecmascript(float: f64) -> String {
    if float == 0.0 {
        return "0".to_owned();
    }
    ryu_js::Buffer::new().format_finite(float).to_owned()
}

/// ECMAScript prints a whole number below 10^21 as plain digits. From 2^53 up, those digits are an
/// integer that I-JSON (and [`parse_strict`]) refuses, so such a double has no canonical form that
/// reads back: `1e19` would be written as `10000000000000000000` and then be unreadable.
fn prints_as_unsafe_integer(float: f64) -> bool {
    const SAFE_INTEGER_MAX_F64: f64 = SAFE_INTEGER_MAX as f64;
    const DIGITS_LIMIT: f64 = 1e21;
    let magnitude = float.abs();
    magnitude > SAFE_INTEGER_MAX_F64 && magnitude < DIGITS_LIMIT && float.fract() == 0.0
}

/// Bytes that must be escaped in a JSON string: `"`, `\\` and the C0 controls.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Writes `text` as a JSON string, escaping only what RFC 8785 requires.
pub fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[usize::from(byte)] {
            continue;
        }
        out.push_str(&text[run_start..index]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x09 => out.push_str("\\t"),
            0x0A => out.push_str("\\n"),
            0x0C => out.push_str("\\f"),
            0x0D => out.push_str("\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0F)]));
            }
        }
        run_start = index + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

/// Writes an integer without allocating.
pub fn write_integer(value: impl std::fmt::Display, out: &mut String) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

/// Why outside bytes are not acceptable JSON for Pactum (I-JSON, RFC 7493, plus serde_json's
/// own syntax errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON at all, or JSON with invalid UTF-8, lone surrogates, trailing data, or nesting
    /// deeper than serde_json's recursion limit.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// The same member name twice in one object: a reader could see either value.
    #[error("duplicate member name {0:?}")]
    DuplicateMember(String),
    /// An integer that a double cannot hold exactly.
    #[error("integer {0} is outside ±(2^53 - 1)")]
    IntegerOutOfRange(String),
}

/// Parses JSON text under I-JSON rules: no duplicate member names and no integers beyond ±(2^53 − 1).
/// Invalid UTF-8 and lone surrogate escapes are rejected by serde_json itself.
pub fn parse_strict(text: &str) -> Result<Value, StrictJsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut deserializer).map_err(|error| classify(&error))?;
    deserializer.end().map_err(|error| classify(&error))?;
    Ok(value)
}

// The custom errors below travel through serde_json's error type as text; these prefixes let
// `classify` recover the typed variant without string-matching serde_json's own messages.
const DUPLICATE_PREFIX: &str = "pactum:duplicate:";
const RANGE_PREFIX: &str = "pactum:range:";

fn classify(error: &serde_json::Error) -> StrictJsonError {
    let message = error.to_string();
    if let Some(rest) = message.strip_prefix(DUPLICATE_PREFIX) {
        return StrictJsonError::DuplicateMember(strip_position(rest));
    }
    if let Some(rest) = message.strip_prefix(RANGE_PREFIX) {
        return StrictJsonError::IntegerOutOfRange(strip_position(rest));
    }
    StrictJsonError::Syntax(message)
}

/// serde_json appends " at line L column C" to custom errors; keep only our payload.
fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any I-JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        if value.unsigned_abs() > SAFE_INTEGER_MAX {
            return Err(E::custom(format_args!("{RANGE_PREFIX}{value}")));
        }
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        if value > SAFE_INTEGER_MAX {
            return Err(E::custom(format_args!("{RANGE_PREFIX}{value}")));
        }
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        // Integer text too wide for 64 bits arrives here as a double, as does `1e19`: both are
        // integers beyond the exact range once canonical, and refused like wide integer text.
        if prints_as_unsafe_integer(value) {
            return Err(E::custom(format_args!("{RANGE_PREFIX}{value:.0}")));
        }
        Number::from_f64(value).map(Value::Number).ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = access.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            match members.entry(name) {
                serde_json::map::Entry::Occupied(entry) => {
                    return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}{}", entry.key())));
                }
                serde_json::map::Entry::Vacant(entry) => {
                    entry.insert(access.next_value_seed(StrictValue)?);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` strictly and checks its canonical form.
    fn check(input: &str, expected: &str) {
        let value = parse_strict(input).expect("test input parses");
        assert_eq!(to_canonical_string(&value).expect("canonicalizes"), expected, "input: {input}");
    }

    fn check_double(bits: u64, expected: &str) {
        assert_eq!(format_ecmascript(f64::from_bits(bits)), expected, "bits {bits:016x}");
        // Whole numbers printed as digits beyond 2^53 - 1 have no canonical form in Pactum.
        let unsafe_integer =
            expected.len() >= 16 && expected.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit());
        let mut out = String::new();
        match write_double(f64::from_bits(bits), &mut out) {
            Ok(()) => assert_eq!(out, expected),
            Err(CanonicalError::IntegerOutOfRange(_)) => assert!(unsafe_integer, "{expected} refused"),
            Err(other) => panic!("{expected}: {other}"),
        }
    }

    #[test]
    fn rfc8785_section_3_2_2_example() {
        // RFC 8785 §3.2.2: whitespace removed, numbers in ES6 form, strings minimally escaped.
        check(
            r#"{
              "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }"#,
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
             \"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}",
        );
    }

    #[test]
    fn rfc8785_section_3_2_3_sorting_example() {
        // RFC 8785 §3.2.3: names sorted by UTF-16 code units, so U+1F600 (surrogates D83D DE00)
        // sorts before U+FB33, although its UTF-8 bytes sort after.
        check(
            "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\
             \"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\
             \"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}",
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
             \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
        );
    }

    #[test]
    fn rfc8785_appendix_b_number_samples() {
        // IEEE 754 bit patterns and their ES6 serializations from RFC 8785 Appendix B.
        let samples: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in samples {
            check_double(bits, expected);
        }
    }

    #[test]
    fn numbers_in_text_form() {
        check("-0", "0");
        check("-0.0", "0");
        check("1e21", "1e+21");
        check("5e-324", "5e-324");
        check("1.0", "1");
        check("0.1", "0.1");
        check("-1.5E-7", "-1.5e-7");
        check("9007199254740991", "9007199254740991");
        check("-9007199254740991", "-9007199254740991");
    }

    #[test]
    fn escapes_and_raw_characters() {
        check(r#""\u0000\u001f\u007f""#, "\"\\u0000\\u001f\u{7f}\"");
        check(r#""\b\f\n\r\t\/""#, r#""\b\f\n\r\t/""#);
        check(r#""\u2028\u2029""#, "\"\u{2028}\u{2029}\"");
        // A surrogate pair in escapes becomes the raw 4-byte character.
        check(r#""\ud834\udd1e""#, "\"𝄞\"");
    }

    #[test]
    fn utf16_ordering_of_supplementary_characters() {
        assert_eq!(compare_utf16("\u{1F600}", "\u{FB33}"), Ordering::Less);
        assert_eq!(compare_utf16("\u{FB33}", "\u{1F600}"), Ordering::Greater);
        assert_eq!(compare_utf16("a", "ab"), Ordering::Less);
        assert_eq!(compare_utf16("", ""), Ordering::Equal);
    }

    #[test]
    fn strict_parser_rejects_what_ijson_forbids() {
        assert_eq!(parse_strict(r#"{"a":1,"a":2}"#), Err(StrictJsonError::DuplicateMember("a".into())));
        assert_eq!(parse_strict(r#"{"x":{"b":true,"b":true}}"#), Err(StrictJsonError::DuplicateMember("b".into())));
        assert_eq!(
            parse_strict("9007199254740992"),
            Err(StrictJsonError::IntegerOutOfRange("9007199254740992".into()))
        );
        assert_eq!(
            parse_strict("[-9007199254740992]"),
            Err(StrictJsonError::IntegerOutOfRange("-9007199254740992".into()))
        );
        for bad in [r#""\ud800""#, r#""\udc00x""#, "{", "[1,]", "1 2", "", "NaN", "1e400"] {
            assert!(
                matches!(parse_strict(bad), Err(StrictJsonError::Syntax(_))),
                "{bad:?} must be a syntax error, got {:?}",
                parse_strict(bad)
            );
        }
    }

    #[test]
    fn whole_doubles_that_would_print_as_unsafe_integers_are_refused_both_ways() {
        // Regression: 1e19 was written as 10000000000000000000, which the strict parser then
        // refused, making an acknowledged event unreadable.
        for text in ["1e19", "-1e19", "9007199254740993.0", "100000000000000000000", "18446744073709551616"] {
            assert!(
                matches!(parse_strict(text), Err(StrictJsonError::IntegerOutOfRange(_))),
                "{text}: {:?}",
                parse_strict(text)
            );
        }
        let value = serde_json::json!({ "score": 1e19 });
        assert!(matches!(to_canonical_string(&value), Err(CanonicalError::IntegerOutOfRange(_))));
        // 2^53 itself is exact and 1e21 prints in exponent form: both round-trip.
        assert!(parse_strict("9007199254740992.0").is_err(), "2^53 prints as an out-of-range integer");
        check("9007199254740991.0", "9007199254740991");
        check("1e21", "1e+21");
        check("1.5e300", "1.5e+300");
    }

    #[test]
    fn canonicalization_refuses_inexact_integers_built_in_code() {
        let value = serde_json::json!({ "amount": 9_007_199_254_740_993_u64 });
        assert_eq!(to_canonical_string(&value), Err(CanonicalError::IntegerOutOfRange("9007199254740993".into())));
        let value = serde_json::json!([i64::MIN]);
        assert!(to_canonical_string(&value).is_err());
    }
}
