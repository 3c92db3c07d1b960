//! The `PEAC-Receipt` HTTP header: one compact JWS, in exactly one header field.

use pactum_transcripts::peac::{HTTP_HEADER, JWS_BYTES_MAX};

/// Why a request or response does not carry exactly one usable receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptHeaderError {
    #[error("no {HTTP_HEADER} header")]
    Missing,
    /// Several fields, which a reader could pick from or join differently.
    #[error("{0} {HTTP_HEADER} headers; exactly one is allowed")]
    Multiple(usize),
    #[error("the {HTTP_HEADER} header is empty")]
    Empty,
    /// Whitespace or a comma: a padded, folded or joined value is not one compact JWS.
    #[error("the {HTTP_HEADER} header contains whitespace or a comma")]
    Malformed,
    #[error("the {HTTP_HEADER} header is longer than {JWS_BYTES_MAX} bytes")]
    TooLarge,
}

impl ReceiptHeaderError {
    /// A stable name for the rule that failed.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Multiple(_) => "multiple",
            Self::Empty => "empty",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
        }
    }
}

/// The header field carrying `jws`.
pub fn peac_receipt_header(jws: &str) -> (&'static str, String) {
    (HTTP_HEADER, jws.to_owned())
}

/// The receipt from a message's header fields: exactly one `PEAC-Receipt` (the name compared
/// without regard to case), non-empty, at most [`JWS_BYTES_MAX`] bytes, with no whitespace or
/// comma anywhere in it. The JWS itself is checked by `peac::verify`.
pub fn parse_peac_receipt_header(headers: &[(String, String)]) -> Result<&str, ReceiptHeaderError> {
    let mut found = headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case(HTTP_HEADER));
    let Some((_, value)) = found.next() else { return Err(ReceiptHeaderError::Missing) };
    let others = found.count();
    if others > 0 {
        return Err(ReceiptHeaderError::Multiple(others + 1));
    }
    if value.is_empty() {
        return Err(ReceiptHeaderError::Empty);
    }
    if value.len() > JWS_BYTES_MAX {
        return Err(ReceiptHeaderError::TooLarge);
    }
    if value.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(ReceiptHeaderError::Malformed);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWS: &str = "eyJhbGciOiJFZERTQSJ9.eyJwZWFjX3ZlcnNpb24iOiIwLjIifQ.c2lnbmF0dXJl";

    fn headers(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn one_header_round_trips() {
        let (name, value) = peac_receipt_header(JWS);
        assert_eq!(name, "PEAC-Receipt");
        let fields = headers(&[("Content-Type", "application/json"), (name, &value)]);
        assert_eq!(parse_peac_receipt_header(&fields), Ok(JWS));
        for name in ["peac-receipt", "PEAC-RECEIPT", "Peac-Receipt"] {
            assert_eq!(parse_peac_receipt_header(&headers(&[(name, JWS)])), Ok(JWS), "{name}");
        }
    }

    #[test]
    fn negative_vectors() {
        use ReceiptHeaderError as E;
        let check = |fields: &[(&str, &str)]| {
            parse_peac_receipt_header(&headers(fields)).map(str::to_owned).map_err(|e| e.reason())
        };
        assert_eq!(check(&[("PEAC-Receipt", JWS)]), Ok(JWS.to_owned()));
        assert_eq!(check(&[]), Err(E::Missing.reason()));
        assert_eq!(check(&[("PEAC-Receipts", JWS), ("X-PEAC-Receipt", JWS)]), Err("missing"));
        assert_eq!(check(&[("PEAC-Receipt", JWS), ("peac-receipt", JWS)]), Err("multiple"));
        assert_eq!(check(&[("PEAC-Receipt", "")]), Err("empty"));
        for value in [" ", "a b", " a", "a\t", "a\r\nb", "a,b", "a\u{a0}b"] {
            assert_eq!(check(&[("PEAC-Receipt", value)]), Err("malformed"), "{value:?}");
        }
        let long = "a".repeat(JWS_BYTES_MAX + 1);
        assert_eq!(check(&[("PEAC-Receipt", &long)]), Err("too_large"));
        assert_eq!(E::Multiple(3).to_string(), "3 PEAC-Receipt headers; exactly one is allowed");
    }
}
