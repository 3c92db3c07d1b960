//! A block's Loro document, by shape: text blocks keep a `LoroText` named `content`, map blocks
//! a `LoroMap` named `fields` (one entry per template field, so concurrent edits of different
//! fields both survive), list and log blocks a `LoroList` named `items` (one entry per task or log
//! entry, so appends never rewrite earlier entries). The rendered form of a block, which is what
//! people read and diff and what the character limit counts, is the text itself, the value as
//! pretty-printed JSON with sorted keys, or for a log one compact JSON entry per line.

use loro::{LoroDoc, LoroText, LoroValue};
use serde_json::Value;

use super::Shape;

const TEXT: &str = "content";
const FIELDS: &str = "fields";
const ITEMS: &str = "items";

/// The block's current rendered content.
pub(crate) fn render(doc: &LoroDoc, shape: Shape) -> String {
    match shape {
        Shape::Text => doc.get_text(TEXT).to_string(),
        Shape::Map => pretty(&to_json(&doc.get_map(FIELDS).get_deep_value())),
        Shape::List => pretty(&to_json(&doc.get_list(ITEMS).get_deep_value())),
        Shape::Log => doc.get_list(ITEMS).to_vec().iter().map(|entry| line(&to_json(entry))).collect(),
    }
}

/// One log entry as it renders: compact JSON with sorted keys, and a newline.
pub(crate) fn line(entry: &Value) -> String {
    let mut text = sorted(entry).to_string();
    text.push('\n');
    text
}

/// JSON as blocks render it: pretty, keys sorted, a final newline.
pub(crate) fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

/// Makes the document hold `value`: text for text blocks, an object for map blocks, an array
/// for list blocks (all validated by the caller). Only what differs becomes operations: a text
/// edit touches the changed characters, a map the changed fields, a list the changed items.
pub(crate) fn set(doc: &LoroDoc, shape: Shape, value: &Value) -> Result<(), String> {
    match (shape, value) {
        (Shape::Text, Value::String(text)) => set_text(&doc.get_text(TEXT), text),
        (Shape::Map, Value::Object(fields)) => {
            let map = doc.get_map(FIELDS);
            let current = match to_json(&map.get_deep_value()) {
                Value::Object(current) => current,
                _ => Default::default(),
            };
            for key in current.keys().filter(|key| !fields.contains_key(*key)) {
                map.delete(key).map_err(|e| e.to_string())?;
            }
            for (key, field) in fields {
                if current.get(key) != Some(field) {
                    map.insert(key, to_loro(field)).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        (Shape::List | Shape::Log, Value::Array(items)) => {
            let list = doc.get_list(ITEMS);
            let current: Vec<String> = match to_json(&list.get_deep_value()) {
                Value::Array(current) => current.iter().map(Value::to_string).collect(),
                _ => Vec::new(),
            };
            let wanted: Vec<String> = items.iter().map(|item| sorted(item).to_string()).collect();
            let mut position = 0;
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &current, &wanted) {
                let (_, old_range, new_range) = op.as_tag_tuple();
                let equal = matches!(op, similar::DiffOp::Equal { .. });
                if equal {
                    position += old_range.len();
                    continue;
                }
                if !old_range.is_empty() {
                    list.delete(position, old_range.len()).map_err(|e| e.to_string())?;
                }
                for item in &items[new_range] {
                    list.insert(position, to_loro(item)).map_err(|e| e.to_string())?;
                    position += 1;
                }
            }
            Ok(())
        }
        _ => Err(format!("a {} block cannot hold {value}", shape.as_str())),
    }
}

/// Hunks of changed lines up to this many bytes (old and new together) are diffed character by
/// character; larger ones are replaced line by line. Character diffs keep concurrent edits of one
/// line apart when they merge; their cost grows with the product of length and difference, so a
/// rewrite (a rollback across many versions, say) would otherwise take a tenth of a second.
const CHAR_DIFF_BYTES_MAX: usize = 2_048;

/// Turns the text into `new` with as few operations as a line diff refined by character diffs
/// finds, so that concurrent edits to different places (even of one line) both survive a merge.
fn set_text(text: &LoroText, new: &str) -> Result<(), String> {
    let old = text.to_string();
    if old == new {
        return Ok(());
    }
    let lines = similar::TextDiff::from_lines(old.as_str(), new);
    let old_lines: Vec<&str> = lines.iter_old_slices().collect();
    let new_lines: Vec<&str> = lines.iter_new_slices().collect();
    let mut position = 0; // in Unicode scalar values, as LoroText counts
    let chars = |parts: &[&str]| parts.iter().map(|part| part.chars().count()).sum::<usize>();
    for op in lines.ops() {
        let (tag, old_range, new_range) = op.as_tag_tuple();
        let removed = &old_lines[old_range];
        let added = &new_lines[new_range];
        match tag {
            similar::DiffTag::Equal => position += chars(removed),
            similar::DiffTag::Replace if removed.concat().len() + added.concat().len() <= CHAR_DIFF_BYTES_MAX => {
                let (before, after) = (removed.concat(), added.concat());
                let inner = similar::TextDiff::from_chars(before.as_str(), after.as_str());
                let old_chars: Vec<&str> = inner.iter_old_slices().collect();
                let new_chars: Vec<&str> = inner.iter_new_slices().collect();
                for op in inner.ops() {
                    let (tag, old_range, new_range) = op.as_tag_tuple();
                    if tag == similar::DiffTag::Equal {
                        position += chars(&old_chars[old_range]);
                        continue;
                    }
                    position =
                        splice_text(text, position, chars(&old_chars[old_range]), &new_chars[new_range].concat())?;
                }
            }
            _ => position = splice_text(text, position, chars(removed), &added.concat())?,
        }
    }
    Ok(())
}

/// Deletes `delete` characters at `position` and inserts `insert` there; returns the position
/// after the insertion.
fn splice_text(text: &LoroText, position: usize, delete: usize, insert: &str) -> Result<usize, String> {
    if delete > 0 {
        text.delete(position, delete).map_err(|e| e.to_string())?;
    }
    if !insert.is_empty() {
        text.insert(position, insert).map_err(|e| e.to_string())?;
    }
    Ok(position + insert.chars().count())
}

/// Appends to a text block (on a new line) or a list block (one item).
pub(crate) fn append(doc: &LoroDoc, shape: Shape, value: &Value) -> Result<(), String> {
    match (shape, value) {
        (Shape::Text, Value::String(text)) => {
            let content = doc.get_text(TEXT);
            let current = content.to_string();
            let separator = if current.is_empty() || current.ends_with('\n') { "" } else { "\n" };
            content.insert(content.len_unicode(), &format!("{separator}{text}")).map_err(|e| e.to_string())
        }
        (Shape::List | Shape::Log, item) => doc.get_list(ITEMS).push(to_loro(item)).map_err(|e| e.to_string()),
        _ => Err(format!("a {} block takes no appends; set the whole value instead", shape.as_str())),
    }
}

/// How many of a log's oldest lines to drop so that `rendered` plus `line` fit in `limit`
/// characters, and the byte offset where the kept lines start; `None` if `line` alone does not fit.
pub(crate) fn roll_lines(rendered: &str, line: &str, limit: usize) -> Option<(usize, usize)> {
    let mut total = rendered.chars().count() + line.chars().count();
    if line.chars().count() > limit {
        return None;
    }
    let (mut dropped, mut offset) = (0, 0);
    for old in rendered.split_inclusive('\n') {
        if total <= limit {
            break;
        }
        total -= old.chars().count();
        offset += old.len();
        dropped += 1;
    }
    Some((dropped, offset))
}

/// Removes the oldest entries of a log until its rendering has at most `limit` characters;
/// returns how many went, or `None` if the newest entry alone is too long.
pub(crate) fn roll(doc: &LoroDoc, limit: usize) -> Result<Option<usize>, String> {
    let list = doc.get_list(ITEMS);
    let sizes: Vec<usize> = list.to_vec().iter().map(|entry| line(&to_json(entry)).chars().count()).collect();
    let mut total: usize = sizes.iter().sum();
    let mut removed = 0;
    while total > limit {
        if removed + 1 >= sizes.len() {
            return Ok(None);
        }
        total -= sizes[removed];
        removed += 1;
    }
    if removed > 0 {
        list.delete(0, removed).map_err(|e| e.to_string())?;
    }
    Ok(Some(removed))
}

/// The value with every object's keys in sorted order. (`serde_json` keeps insertion order when
/// any crate in the build enables its `preserve_order` feature, so sorting is never assumed.)
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(entries) => {
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|key| (key.clone(), sorted(&entries[key]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A value as the document stores it and gives it back (JSON → Loro → JSON).
pub(crate) fn stored_form(value: &Value) -> Value {
    to_json(&to_loro(value))
}

/// A stored value as JSON (numbers stay integers; a double only appears in imported documents).
pub(crate) fn to_json(value: &LoroValue) -> Value {
    match value {
        LoroValue::Null | LoroValue::Container(_) => Value::Null,
        LoroValue::Bool(flag) => Value::Bool(*flag),
        LoroValue::Double(number) => serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number),
        LoroValue::I64(number) => Value::from(*number),
        LoroValue::Binary(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        LoroValue::String(text) => Value::String(text.to_string()),
        LoroValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
        LoroValue::Map(entries) => {
            let mut fields: Vec<(String, Value)> = entries.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(fields.into_iter().collect())
        }
    }
}

fn to_loro(value: &Value) -> LoroValue {
    match value {
        Value::Null => LoroValue::Null,
        Value::Bool(flag) => LoroValue::Bool(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => LoroValue::I64(integer),
            None => number.as_f64().map_or(LoroValue::Null, LoroValue::Double),
        },
        Value::String(text) => LoroValue::from(text.as_str()),
        Value::Array(items) => LoroValue::from(items.iter().map(to_loro).collect::<Vec<_>>()),
        Value::Object(entries) => LoroValue::from(
            entries.iter().map(|(k, v)| (k.clone(), to_loro(v))).collect::<std::collections::HashMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_shape_renders_what_was_set() {
        let doc = LoroDoc::new();
        set(&doc, Shape::Text, &json!("hello\nworld")).expect("text");
        assert_eq!(render(&doc, Shape::Text), "hello\nworld");
        set(&doc, Shape::Map, &json!({"b": 1, "a": ["x"]})).expect("map");
        assert_eq!(render(&doc, Shape::Map), "{\n  \"a\": [\n    \"x\"\n  ],\n  \"b\": 1\n}\n");
        set(&doc, Shape::Map, &json!({"a": ["y"]})).expect("map");
        assert_eq!(render(&doc, Shape::Map), pretty(&json!({"a": ["y"]})));
        set(&doc, Shape::List, &json!([1, 2, 3, 4])).expect("list");
        set(&doc, Shape::List, &json!([0, 2, 4, 5])).expect("list");
        assert_eq!(render(&doc, Shape::List), pretty(&json!([0, 2, 4, 5])));
    }

    proptest::proptest! {
        #[test]
        fn any_text_becomes_any_other(old in "[ab\\né]{0,40}", new in "[ab\\né]{0,40}") {
            let doc = LoroDoc::new();
            set(&doc, Shape::Text, &json!(old)).expect("old");
            set(&doc, Shape::Text, &json!(new.clone())).expect("new");
            proptest::prop_assert_eq!(render(&doc, Shape::Text), new);
        }
    }

    #[test]
    fn a_rewrite_far_larger_than_a_character_diff_is_replaced_by_lines() {
        let doc = LoroDoc::new();
        let old: String = (0..400).map(|n| format!("line {n} of the old text\n")).collect();
        let new: String = (0..400).map(|n| format!("another {} entirely\n", n * 7)).collect();
        set(&doc, Shape::Text, &json!(old)).expect("old");
        set(&doc, Shape::Text, &json!(new.clone())).expect("new");
        assert_eq!(render(&doc, Shape::Text), new);
    }

    #[test]
    fn a_rolling_list_drops_its_oldest_entries() {
        let doc = LoroDoc::new();
        for n in 0..10 {
            append(&doc, Shape::Log, &json!({ "n": n })).expect("append");
        }
        let limit = "{\"n\":7}\n{\"n\":8}\n{\"n\":9}\n".chars().count();
        assert_eq!(roll(&doc, limit), Ok(Some(7)));
        assert_eq!(render(&doc, Shape::Log), "{\"n\":7}\n{\"n\":8}\n{\"n\":9}\n");
        assert_eq!(roll(&doc, 3), Ok(None));
    }
}
