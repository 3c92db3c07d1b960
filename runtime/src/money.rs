//! Money: integer minor units of an ISO 4217 currency. Never floats: amounts are parsed from
//! decimal text digit by digit and printed back the same way.

use std::fmt;

/// Largest amount in minor units: the largest integer exact in a JSON number (RFC 8785 / I-JSON),
/// so every amount survives canonical JSON and the transcript.
pub const AMOUNT_MINOR_MAX: u64 = (1 << 53) - 1;

/// ISO 4217 currencies Pactum accepts, with their minor-unit exponent (digits after the point).
/// Active currencies only; funds codes, precious metals and testing codes are not money here.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency with its minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// Why a price or currency was refused (stable codes in specs/error-codes.toml).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 currency Pactum knows (for example USD, EUR, JPY)")]
    UnknownCurrency(String),
    #[error("{0:?} is not an amount: write digits with an optional decimal point, like 0.05")]
    Malformed(String),
    #[error("{0:?} is negative: amounts are never below zero")]
    Negative(String),
    #[error("{text:?} has more decimals than {currency} has ({exponent})")]
    TooPrecise { text: String, currency: &'static str, exponent: u8 },
    #[error("{0:?} is too large (at most {AMOUNT_MINOR_MAX} minor units)")]
    TooLarge(String),
}

impl MoneyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownCurrency(_) => "CURRENCY_UNKNOWN",
            _ => "AMOUNT_INVALID",
        }
    }
}

impl Currency {
    /// Parses a currency code (case-insensitive: `usd` is USD).
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let upper = text.to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == upper)
            .map(|&(code, exponent)| Self { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(text.to_owned()))
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point in the major unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

/// An amount of money in integer minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Money {
    amount_minor: u64,
    currency: Currency,
}

impl Money {
    pub fn from_minor(amount_minor: u64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor > AMOUNT_MINOR_MAX {
            return Err(MoneyError::TooLarge(amount_minor.to_string()));
        }
        Ok(Self { amount_minor, currency })
    }

    /// Parses an amount in major units (`0.05` USD is 5 minor units). Exact: no floating point.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(MoneyError::Negative(text.to_owned()));
        }
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !digits_only(whole)
            || !digits_only(fraction)
            || (trimmed.contains('.') && fraction.is_empty())
        {
            return Err(MoneyError::Malformed(text.to_owned()));
        }
        let exponent = usize::from(currency.exponent);
        let significant_fraction = fraction.trim_end_matches('0');
        if significant_fraction.len() > exponent {
            return Err(MoneyError::TooPrecise {
                text: text.to_owned(),
                currency: currency.code,
                exponent: currency.exponent,
            });
        }
        let too_large = || MoneyError::TooLarge(text.to_owned());
        let mut amount: u64 = 0;
        let padded_fraction = format!("{significant_fraction:0<exponent$}");
        for byte in whole.bytes().chain(padded_fraction.bytes()) {
            amount =
                amount.checked_mul(10).and_then(|a| a.checked_add(u64::from(byte - b'0'))).ok_or_else(too_large)?;
        }
        if amount > AMOUNT_MINOR_MAX {
            return Err(too_large());
        }
        Ok(Self { amount_minor: amount, currency })
    }

    pub fn amount_minor(self) -> u64 {
        self.amount_minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The amount in major units, exactly (`0.05`, `100`, `1.500`).
    pub fn major_text(self) -> String {
        let exponent = u32::from(self.currency.exponent);
        if exponent == 0 {
            return self.amount_minor.to_string();
        }
        let scale = 10_u64.pow(exponent);
        format!("{}.{:0width$}", self.amount_minor / scale, self.amount_minor % scale, width = exponent as usize)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.major_text(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, currency: &str, expected: Result<u64, &str>) {
        let currency = Currency::parse(currency).expect("known currency");
        let parsed = Money::parse_major(text, currency);
        match (parsed, expected) {
            (Ok(money), Ok(minor)) => assert_eq!(money.amount_minor(), minor, "{text} {currency}"),
            (Err(error), Err(code)) => assert_eq!(error.code(), code, "{text} {currency}: {error}"),
            (other, expected) => panic!("{text} {currency}: got {other:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn amounts_parse_exactly_into_minor_units() {
        check("0.05", "USD", Ok(5));
        check("5", "USD", Ok(500));
        check("5.", "USD", Err("AMOUNT_INVALID"));
        check(".5", "USD", Ok(50));
        check("0.10", "EUR", Ok(10));
        check("0.100", "EUR", Ok(10));
        check("1234.56", "GBP", Ok(123_456));
        check("500", "JPY", Ok(500));
        check("0.5", "JPY", Err("AMOUNT_INVALID"));
        check("1.234", "KWD", Ok(1_234));
        check("0.001", "USD", Err("AMOUNT_INVALID"));
        check("-0.05", "USD", Err("AMOUNT_INVALID"));
        check("1e3", "USD", Err("AMOUNT_INVALID"));
        check("", "USD", Err("AMOUNT_INVALID"));
        check(".", "USD", Err("AMOUNT_INVALID"));
        check("0x10", "USD", Err("AMOUNT_INVALID"));
        check("90071992547409.91", "USD", Ok(AMOUNT_MINOR_MAX));
        check("90071992547409.92", "USD", Err("AMOUNT_INVALID"));
        check("99999999999999999999999", "USD", Err("AMOUNT_INVALID"));
    }

    #[test]
    fn amounts_print_back_exactly() {
        let usd = Currency::parse("usd").expect("known");
        assert_eq!(Money::parse_major("0.05", usd).expect("ok").to_string(), "0.05 USD");
        assert_eq!(Money::parse_major("12", usd).expect("ok").to_string(), "12.00 USD");
        let jpy = Currency::parse("JPY").expect("known");
        assert_eq!(Money::parse_major("500", jpy).expect("ok").to_string(), "500 JPY");
        let kwd = Currency::parse("KWD").expect("known");
        assert_eq!(Money::from_minor(1_005, kwd).expect("ok").to_string(), "1.005 KWD");
    }

    #[test]
    fn unknown_currencies_are_refused() {
        for text in ["XYZ", "US", "DOLLARS", "", "XAU"] {
            assert_eq!(Currency::parse(text).map_err(|e| e.code()), Err("CURRENCY_UNKNOWN"), "{text}");
        }
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0), "table sorted, no duplicates");
    }
}
