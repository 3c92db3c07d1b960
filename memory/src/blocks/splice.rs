//! Rendered content of every version, stored so that reading any version costs a few row reads:
//! a version is either a keyframe (the whole content) or a splice against the previous version.
//! A chain of splices is cut by a new keyframe once it holds more bytes than the content itself
//! or [`KEYFRAME_EVERY`] versions, so rebuilding a version reads at most that many rows and
//! stores about twice the edits' size.
//!
//! A splice is a list of operations that build the new content: copy a range of the old content,
//! or insert bytes. It is found by trimming the common prefix and suffix and diffing what is left
//! by lines, so an edit in the middle, an append, and a rolling log's "drop the oldest line, add
//! a newest one" each cost about the size of what changed.

/// At most this many versions between two keyframes.
pub const KEYFRAME_EVERY: u64 = 64;

const COPY: u8 = 0;
const INSERT: u8 = 1;

enum Op<'a> {
    Copy { from: usize, len: usize },
    Insert(&'a [u8]),
}

/// The splice that turns `old` into `new`: the shorter of the one that trims the common prefix
/// and suffix to the byte (best inside one long line) and the one that trims them to whole lines
/// (best when lines move, as in a rolling log).
pub(crate) fn encode(old: &str, new: &str) -> Vec<u8> {
    let (old_bytes, new_bytes) = (old.as_bytes(), new.as_bytes());
    let mut prefix = old_bytes.iter().zip(new_bytes).take_while(|(a, b)| a == b).count();
    while !new.is_char_boundary(prefix) {
        prefix -= 1;
    }
    let room = old.len().min(new.len()) - prefix;
    let mut suffix = old_bytes.iter().rev().zip(new_bytes.iter().rev()).take(room).take_while(|(a, b)| a == b).count();
    while !new.is_char_boundary(new.len() - suffix) {
        suffix -= 1;
    }
    let exact = encode_trimmed(old, new, prefix, suffix);
    // Whole lines: the prefix ends after a newline, the suffix starts at a line's start.
    let line_prefix = new[..prefix].rfind('\n').map_or(0, |at| at + 1);
    let line_suffix = new[new.len() - suffix..].find('\n').map_or(0, |at| suffix - at - 1);
    if (line_prefix, line_suffix) == (prefix, suffix) {
        return exact;
    }
    let lines = encode_trimmed(old, new, line_prefix, line_suffix);
    if lines.len() < exact.len() { lines } else { exact }
}

fn encode_trimmed(old: &str, new: &str, prefix: usize, suffix: usize) -> Vec<u8> {
    let new_bytes = new.as_bytes();
    let (old_middle, new_middle) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);
    let mut ops = Vec::new();
    if prefix > 0 {
        ops.push(Op::Copy { from: 0, len: prefix });
    }
    if old_middle.is_empty() || new_middle.is_empty() {
        ops.push(Op::Insert(new_middle.as_bytes()));
    } else {
        let lines = similar::TextDiff::from_lines(old_middle, new_middle);
        let old_lines: Vec<&str> = lines.iter_old_slices().collect();
        let new_lines: Vec<&str> = lines.iter_new_slices().collect();
        let mut starts = Vec::with_capacity(old_lines.len() + 1);
        let mut offset = prefix;
        for line in &old_lines {
            starts.push(offset);
            offset += line.len();
        }
        starts.push(offset);
        let mut new_offset = prefix;
        for op in lines.ops() {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            let added: usize = new_lines[new_range].iter().map(|line| line.len()).sum();
            if tag == similar::DiffTag::Equal {
                let from = starts[old_range.start];
                ops.push(Op::Copy { from, len: starts[old_range.end] - from });
            } else if added > 0 {
                ops.push(Op::Insert(&new_bytes[new_offset..new_offset + added]));
            }
            new_offset += added;
        }
    }
    if suffix > 0 {
        ops.push(Op::Copy { from: old.len() - suffix, len: suffix });
    }
    let mut out = Vec::new();
    let mut pending: Option<(usize, usize)> = None;
    for op in ops {
        match op {
            Op::Copy { len: 0, .. } => {}
            Op::Copy { from, len } => match &mut pending {
                Some((start, length)) if *start + *length == from => *length += len,
                _ => {
                    if let Some((start, length)) = pending.take() {
                        put_copy(&mut out, start, length);
                    }
                    pending = Some((from, len));
                }
            },
            Op::Insert([]) => {}
            Op::Insert(bytes) => {
                if let Some((start, length)) = pending.take() {
                    put_copy(&mut out, start, length);
                }
                out.push(INSERT);
                put_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
    }
    if let Some((start, length)) = pending {
        put_copy(&mut out, start, length);
    }
    out
}

/// The splice that keeps `old[kept..]` (of `old_len` bytes) and appends `insert`: a rolling log
/// that dropped its oldest lines and added one.
pub(crate) fn keep_tail_then_insert(old_len: usize, kept: usize, insert: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insert.len() + 16);
    if kept < old_len {
        put_copy(&mut out, kept, old_len - kept);
    }
    if !insert.is_empty() {
        out.push(INSERT);
        put_varint(&mut out, insert.len() as u64);
        out.extend_from_slice(insert);
    }
    out
}

fn put_copy(out: &mut Vec<u8>, from: usize, len: usize) {
    out.push(COPY);
    put_varint(out, from as u64);
    put_varint(out, len as u64);
}

/// Applies a splice made by [`encode`]; `None` if it does not fit `old`.
pub(crate) fn apply(old: &[u8], splice: &[u8]) -> Option<Vec<u8>> {
    let mut rest = splice;
    let mut out = Vec::with_capacity(old.len() + splice.len());
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag {
            COPY => {
                let from = usize::try_from(take_varint(&mut rest)?).ok()?;
                let len = usize::try_from(take_varint(&mut rest)?).ok()?;
                out.extend_from_slice(old.get(from..from.checked_add(len)?)?);
            }
            INSERT => {
                let len = usize::try_from(take_varint(&mut rest)?).ok()?;
                let (bytes, tail) = (rest.get(..len)?, rest.get(len..)?);
                out.extend_from_slice(bytes);
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_splice_turns_old_into_new(old in "[ab\n€]{0,60}", new in "[ab\n€]{0,60}") {
            let splice = encode(&old, &new);
            prop_assert_eq!(apply(old.as_bytes(), &splice), Some(new.into_bytes()));
        }
    }

    #[test]
    fn a_small_edit_stores_only_the_edit() {
        let old = "a".repeat(5_000) + "middle" + &"z".repeat(5_000);
        let new = "a".repeat(5_000) + "MIDDLE!" + &"z".repeat(5_000);
        let splice = encode(&old, &new);
        assert!(splice.len() < 24, "{} bytes", splice.len());
    }

    #[test]
    fn a_rolling_log_stores_only_the_new_line() {
        let lines: Vec<String> =
            (0..200).map(|n| format!("{{\"entry\":{n},\"text\":\"something happened\"}}\n")).collect();
        let old = lines[..150].concat();
        let new = lines[1..151].concat();
        let splice = encode(&old, &new);
        assert!(splice.len() < lines[150].len() + 24, "{} bytes", splice.len());
        assert_eq!(apply(old.as_bytes(), &splice), Some(new.into_bytes()));
    }

    #[test]
    fn a_splice_that_does_not_fit_is_refused() {
        let splice = encode("hello world", "hello there world");
        assert_eq!(apply(b"hi", &splice), None);
        assert_eq!(apply(b"anything", &[0xff; 12]), None);
        assert_eq!(apply(b"anything", &[INSERT, 40, b'x']), None);
    }
}
