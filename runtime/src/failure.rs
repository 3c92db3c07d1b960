//! The PACT failure taxonomy (specs/failure-codes.toml): every failed negotiation ends with one
//! FailureEvent carrying one of these codes. The table below must agree with the spec file;
//! `runtime/tests/specs.rs` checks it entry by entry.

use std::fmt;

/// Where in a negotiation a failure is raised.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Stage {
    Admission,
    Discovery,
    Negotiation,
    Commitment,
    Settlement,
    Storage,
}

/// Whose fault a failure is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FaultDomain {
    Policy,
    Identity,
    Provider,
    Buyer,
    Rail,
    Runtime,
}

/// Whether a session can continue (or a retry succeed) after the failure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Terminality {
    Terminal,
    NonTerminal,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Discovery => "discovery",
            Self::Negotiation => "negotiation",
            Self::Commitment => "commitment",
            Self::Settlement => "settlement",
            Self::Storage => "storage",
        }
    }
}

impl FaultDomain {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Identity => "identity",
            Self::Provider => "provider",
            Self::Buyer => "buyer",
            Self::Rail => "rail",
            Self::Runtime => "runtime",
        }
    }
}

impl Terminality {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::NonTerminal => "non_terminal",
        }
    }
}

macro_rules! failure_codes {
    ($($variant:ident = $code:literal, $stage:ident, $domain:ident, $terminality:ident, $description:literal;)*) => {
        /// A PACT failure code.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum FailureCode {
            $($variant,)*
        }

        impl FailureCode {
            /// Every code, in the order of the spec file.
            pub const ALL: &'static [FailureCode] = &[$(FailureCode::$variant,)*];

            /// `PACT-xxx`.
            pub const fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The stable name, `SCREAMING_SNAKE_CASE` of the variant.
            pub fn name(self) -> String {
                let debug = format!("{self:?}");
                let mut name = String::with_capacity(debug.len() + 8);
                for (index, character) in debug.char_indices() {
                    if character.is_ascii_uppercase() && index > 0 {
                        name.push('_');
                    }
                    name.push(character.to_ascii_uppercase());
                }
                name
            }

            pub const fn stage(self) -> Stage {
                match self { $(Self::$variant => Stage::$stage,)* }
            }

            pub const fn fault_domain(self) -> FaultDomain {
                match self { $(Self::$variant => FaultDomain::$domain,)* }
            }

            pub const fn terminality(self) -> Terminality {
                match self { $(Self::$variant => Terminality::$terminality,)* }
            }

            pub const fn description(self) -> &'static str {
                match self { $(Self::$variant => $description,)* }
            }
        }
    };
}

failure_codes! {
    PolicyViolation = "PACT-101", Admission, Policy, Terminal, "A policy rule refused the negotiation.";
    ProviderNotAllowed = "PACT-102", Admission, Policy, Terminal, "Policy blocks every provider that offers the intent.";
    RailNotAllowed = "PACT-103", Admission, Policy, Terminal, "Policy does not allow the payment rail the intent asks for.";
    SettlementModeNotAllowed = "PACT-104", Admission, Policy, Terminal, "Policy does not allow the settlement mode the intent asks for.";
    MaxPriceExceeded = "PACT-105", Admission, Policy, Terminal, "The intent's maximum price is above the policy's price cap.";
    RoundLimitExceeded = "PACT-106", Negotiation, Policy, Terminal, "The round limit was reached without agreement.";
    DeadlineExceeded = "PACT-107", Negotiation, Policy, Terminal, "The intent's deadline passed without agreement.";
    SettlementPolicyViolation = "PACT-108", Settlement, Policy, Terminal, "The policy check before settlement refused the payment.";
    ConstraintViolation = "PACT-109", Settlement, Policy, Terminal, "A spending constraint on the buyer or the session refused the payment.";
    IdentityInvalid = "PACT-201", Admission, Identity, Terminal, "A counterparty's identity or signature did not verify.";
    CredentialExpired = "PACT-202", Admission, Identity, Terminal, "A counterparty's credential has expired.";
    PassportDenied = "PACT-203", Admission, Identity, Terminal, "The passport gate denied every provider that offers the intent.";
    ProviderRefused = "PACT-301", Negotiation, Provider, Terminal, "Every provider refused the intent.";
    NegotiationDeadlock = "PACT-303", Negotiation, Provider, Terminal, "Offers stayed out of band: the parties stopped converging.";
    NoProviders = "PACT-309", Discovery, Provider, Terminal, "No provider in the directory offers the intent type.";
    ProviderUnavailable = "PACT-310", Discovery, Provider, NonTerminal, "Every provider that offers the intent was unreachable.";
    ProviderTimeout = "PACT-311", Negotiation, Provider, NonTerminal, "Providers did not answer within the latency limit.";
    AbortedByBuyer = "PACT-312", Negotiation, Buyer, Terminal, "The buyer aborted the negotiation (or declined to pay).";
    ProviderAnswerInvalid = "PACT-313", Negotiation, Provider, NonTerminal, "A remote provider's answer was not a valid signed message (error status, oversized or malformed body, bad signature).";
    SettlementPrepareFailed = "PACT-401", Settlement, Rail, NonTerminal, "The payment rail could not prepare the transfer.";
    SettlementCommitFailed = "PACT-402", Settlement, Rail, NonTerminal, "The payment rail could not commit a prepared transfer; it was aborted.";
    InsufficientFunds = "PACT-404", Settlement, Buyer, NonTerminal, "The buyer's account cannot cover the agreed price.";
    SettlementTimeout = "PACT-405", Settlement, Rail, NonTerminal, "The payment rail did not confirm in time.";
    RailEvidenceInvalid = "PACT-406", Settlement, Rail, NonTerminal, "The payment rail's evidence failed validation (fail closed).";
    DependencyFailed = "PACT-501", Negotiation, Runtime, NonTerminal, "A negotiation this one depends on failed.";
    TranscriptStorageFailed = "PACT-505", Storage, Runtime, Terminal, "The transcript could not be written durably.";
}

impl fmt::Display for FailureCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.code(), self.name())
    }
}
