//! Rendered content of every version, stored so that reading any version costs a few row reads:
//! a version is either a keyframe (the whole content) or a splice against the previous version
//! (common prefix and suffix lengths and the bytes between). A chain of splices is cut by a new
//! keyframe once it holds more bytes than the content itself or [`KEYFRAME_EVERY`] versions, so
//! rebuilding a version reads at most that many rows and stores about twice the edits' size.

/// At most this many versions between two keyframes.
pub const KEYFRAME_EVERY: u64 = 64;

/// The splice that turns `old` into `new`.
pub(crate) fn encode(old: &[u8], new: &[u8]) -> Vec<u8> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = old.len().min(new.len()) - prefix;
    let suffix = old.iter().rev().zip(new.iter().rev()).take(room).take_while(|(a, b)| a == b).count();
    let middle = &new[prefix..new.len() - suffix];
    let mut out = Vec::with_capacity(middle.len() + 10);
    put_varint(&mut out, prefix as u64);
    put_varint(&mut out, suffix as u64);
    out.extend_from_slice(middle);
    out
}

/// Applies a splice made by [`encode`]; `None` if it does not fit `old`.
pub(crate) fn apply(old: &[u8], splice: &[u8]) -> Option<Vec<u8>> {
    let mut rest = splice;
    let prefix = usize::try_from(take_varint(&mut rest)?).ok()?;
    let suffix = usize::try_from(take_varint(&mut rest)?).ok()?;
    if prefix.checked_add(suffix)? > old.len() {
        return None;
    }
    let mut out = Vec::with_capacity(prefix + rest.len() + suffix);
    out.extend_from_slice(&old[..prefix]);
    out.extend_from_slice(rest);
    out.extend_from_slice(&old[old.len() - suffix..]);
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
        fn a_splice_turns_old_into_new(old in proptest::collection::vec(0_u8..4, 0..64), new in proptest::collection::vec(0_u8..4, 0..64)) {
            let splice = encode(&old, &new);
            prop_assert_eq!(apply(&old, &splice), Some(new));
        }
    }

    #[test]
    fn a_small_edit_stores_only_the_edit() {
        let old = "a".repeat(5_000) + "middle" + &"z".repeat(5_000);
        let new = "a".repeat(5_000) + "MIDDLE!" + &"z".repeat(5_000);
        let splice = encode(old.as_bytes(), new.as_bytes());
        assert!(splice.len() < 16, "{} bytes", splice.len());
    }

    #[test]
    fn a_splice_that_does_not_fit_is_refused() {
        let splice = encode(b"hello world", b"hello there world");
        assert_eq!(apply(b"hi", &splice), None);
        assert_eq!(apply(b"anything", &[0xff; 12]), None);
    }
}
