//! Validated value types shared by both aggregates.
//!
//! Each type is parsed once at the edge (`TryFrom<String>`, also used by serde on deserialization), so a value
//! that exists is valid: `Currency` is three uppercase letters, `Email` has one `@` and a dotted domain.
//! Parse errors are [`ValueError`]s, which name the field and the problem but never echo the rejected input
//! (e-mail addresses are personal data and must not end up in logs or error bodies).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value failed to parse. The message names the field and what is wrong, never the rejected input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `currency` is not a three-letter code; the caller should send an ISO 4217 code such as `"EUR"`.
    #[error("currency must be exactly 3 uppercase ASCII letters, like \"EUR\"")]
    Currency,
    /// `email` is not a plausible address; the caller should correct it. `reason` says which rule failed.
    #[error("email {reason}")]
    Email {
        /// The rule that failed, phrased to follow the word "email".
        reason: &'static str,
    },
    /// `role` is not one of the known roles; the caller should send one of the listed words.
    #[error("role must be one of client, operator, support, partner, system")]
    Role,
}

impl ValueError {
    /// The name of the field that failed to parse, for problem+json bodies.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Currency => "currency",
            Self::Email { .. } => "email",
            Self::Role => "role",
        }
    }
}

/// An amount of money in minor units (cents) of a currency. Never a float.
///
/// JSON: `{"minor":25000,"currency":"EUR"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's minor unit (25000 = 250.00 EUR).
    pub minor: i64,
    /// The currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// An amount of `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }
}

/// A currency code: exactly three ASCII uppercase letters (ISO 4217 shape, e.g. `EUR`).
///
/// JSON: the code as a string; deserialization rejects anything else.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a currency code; only three ASCII uppercase letters are accepted (no trimming, no case folding).
    pub fn parse(code: &str) -> Result<Self, ValueError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(ValueError::Currency)
        }
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl FromStr for Currency {
    type Err = ValueError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address checked for a plausible shape (not deliverability).
///
/// Rules: at most 254 characters, no whitespace or control characters anywhere (surrounding whitespace
/// is refused, not trimmed: the API's document states the same rule as a pattern), exactly one `@`, a
/// non-empty local part, and a domain that contains a dot and neither starts nor ends with one.
/// JSON: the address as a string; deserialization applies the same rules.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Longest accepted address, in characters (the SMTP path limit).
    pub const MAX_LEN: usize = 254;

    /// Parses an address as given.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let email = raw;
        let fail = |reason| Err(ValueError::Email { reason });
        if email.is_empty() {
            return fail("is empty");
        }
        if email.chars().count() > Self::MAX_LEN {
            return fail("is longer than 254 characters");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail("contains whitespace or control characters");
        }
        let mut parts = email.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return fail("must contain exactly one '@'");
        };
        if local.is_empty() {
            return fail("has an empty part before the '@'");
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return fail("needs a domain with a dot after the '@', like example.com");
        }
        Ok(Self(email.to_owned()))
    }

    /// The address as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ValueError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl FromStr for Email {
    type Err = ValueError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused something: the subject of a bearer token and its role. Stored in event metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The token's subject (a user id, a partner name, or a worker name for `System`).
    pub subject: String,
    /// What the subject is allowed to do.
    pub role: Role,
}

impl Actor {
    /// An actor with the given subject and role.
    pub fn new(subject: impl Into<String>, role: Role) -> Self {
        Self {
            subject: subject.into(),
            role,
        }
    }

    /// trailbook itself (a worker, the projector, reconciliation), named by `subject`.
    pub fn system(subject: impl Into<String>) -> Self {
        Self::new(subject, Role::System)
    }
}

/// The role of an [`Actor`]. JSON: snake_case (`"client"`, `"operator"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An end user's app: creates and cancels its own bookings and visits.
    Client,
    /// Operations staff: replays jobs, rebuilds projections.
    Operator,
    /// Support staff: reads history and time travel.
    Support,
    /// An external partner: sends callbacks.
    Partner,
    /// trailbook's own workers and reactors.
    System,
}

impl Role {
    /// The snake_case name, as in JSON and tokens.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Operator => "operator",
            Self::Support => "support",
            Self::Partner => "partner",
            Self::System => "system",
        }
    }
}

impl FromStr for Role {
    type Err = ValueError;

    fn from_str(role: &str) -> Result<Self, Self::Err> {
        match role {
            "client" => Ok(Self::Client),
            "operator" => Ok(Self::Operator),
            "support" => Ok(Self::Support),
            "partner" => Ok(Self::Partner),
            "system" => Ok(Self::System),
            _ => Err(ValueError::Role),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest accepted id or name of either aggregate (ids, owner, partner, resource, names), in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted reason (cancellation, resolution), in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Checks a required free-text field: not blank and at most `max_chars` characters.
///
/// Returns the reason for `Invalid { field, reason }` errors of the aggregates.
pub(crate) fn check_text(value: &str, max_chars: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Three uppercase ASCII letters parse and keep their spelling.
    #[test]
    fn three_uppercase_letters_are_a_currency() {
        for code in ["EUR", "USD", "JPY", "XXX"] {
            assert_eq!(
                Currency::parse(code).map(|c| c.to_string()),
                Ok(code.to_owned())
            );
        }
    }

    /// Lowercase, wrong length, digits, padding and non-ASCII letters are all refused.
    #[test]
    fn anything_but_three_uppercase_letters_is_not_a_currency() {
        for code in [
            "", "eur", "Eur", "EU", "EURO", "E1R", " EUR", "EUR ", "ÉUR", "€",
        ] {
            assert_eq!(Currency::parse(code), Err(ValueError::Currency), "{code:?}");
        }
    }

    /// Money serializes to the documented shape and back.
    #[test]
    fn money_serializes_as_minor_units_and_a_currency_code() {
        let money = Money::new(25000, Currency::parse("EUR").expect("valid code"));
        let value = serde_json::to_value(&money).expect("serializes");
        assert_eq!(value, json!({"minor": 25000, "currency": "EUR"}));
        assert_eq!(
            serde_json::from_value::<Money>(value).expect("deserializes"),
            money
        );
    }

    /// Deserialization goes through the parser, so a stored or posted bad currency is refused.
    #[test]
    fn money_with_an_invalid_currency_does_not_deserialize() {
        let err = serde_json::from_value::<Money>(json!({"minor": 1, "currency": "eur"}))
            .expect_err("lowercase currency must be refused");
        assert!(
            err.to_string()
                .contains("currency must be exactly 3 uppercase"),
            "{err}"
        );
    }

    /// Ordinary addresses parse as given; surrounding whitespace is refused, not trimmed away.
    #[test]
    fn plausible_addresses_are_emails_and_whitespace_is_not_trimmed() {
        for raw in ["ada@example.com", "a.b+tag@mail.example.org", "x@y.io"] {
            assert_eq!(Email::parse(raw).map(String::from), Ok(raw.to_owned()));
        }
        assert_eq!(
            Email::parse("  ada@example.com \n"),
            Err(ValueError::Email {
                reason: "contains whitespace or control characters"
            })
        );
    }

    /// Each shape rule refuses its own kind of bad address, with a reason naming the rule.
    #[test]
    fn implausible_addresses_are_refused_with_the_rule_that_failed() {
        let cases = [
            ("", "is empty"),
            ("   ", "contains whitespace or control characters"),
            ("ada.example.com", "must contain exactly one '@'"),
            ("ada@@example.com", "must contain exactly one '@'"),
            ("a@b@example.com", "must contain exactly one '@'"),
            ("@example.com", "has an empty part before the '@'"),
            (
                "ada@localhost",
                "needs a domain with a dot after the '@', like example.com",
            ),
            (
                "ada@",
                "needs a domain with a dot after the '@', like example.com",
            ),
            (
                "ada@.com",
                "needs a domain with a dot after the '@', like example.com",
            ),
            (
                "ada@example.",
                "needs a domain with a dot after the '@', like example.com",
            ),
            (
                "ada@exa mple.com",
                "contains whitespace or control characters",
            ),
            (
                "a da@example.com",
                "contains whitespace or control characters",
            ),
            (
                "ada@example.com\u{0}",
                "contains whitespace or control characters",
            ),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                Email::parse(raw),
                Err(ValueError::Email { reason }),
                "{raw:?}"
            );
        }
    }

    /// The length limit counts characters: 254 pass, 255 fail.
    #[test]
    fn addresses_longer_than_254_characters_are_refused() {
        let domain = "@example.com";
        let at_limit = format!("{}{domain}", "a".repeat(254 - domain.len()));
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("a{at_limit}");
        assert_eq!(
            Email::parse(&over),
            Err(ValueError::Email {
                reason: "is longer than 254 characters"
            })
        );
    }

    /// An e-mail error message never contains the rejected address (it is personal data).
    #[test]
    fn email_errors_do_not_echo_the_address() {
        let err = serde_json::from_value::<Email>(json!("secret-person@localhost"))
            .expect_err("no dot in the domain");
        assert!(!err.to_string().contains("secret-person"), "{err}");
        assert_eq!(ValueError::Email { reason: "is empty" }.field(), "email");
    }

    /// Roles parse from and serialize to their snake_case names; unknown names are refused.
    #[test]
    fn roles_round_trip_through_their_snake_case_names() {
        for role in [
            Role::Client,
            Role::Operator,
            Role::Support,
            Role::Partner,
            Role::System,
        ] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).expect("serializes"),
                json!(role.as_str())
            );
        }
        for bad in ["", "admin", "Client", "CLIENT"] {
            assert_eq!(bad.parse::<Role>(), Err(ValueError::Role), "{bad:?}");
        }
    }

    /// An actor serializes as a subject and a snake_case role.
    #[test]
    fn actor_serializes_as_subject_and_role() {
        let actor = Actor::new("user-1", Role::Client);
        assert_eq!(
            serde_json::to_value(&actor).expect("serializes"),
            json!({"subject": "user-1", "role": "client"})
        );
        assert_eq!(Actor::system("reconciler").role, Role::System);
    }

    /// Required text must have a non-blank character and respect its limit in characters, not bytes.
    #[test]
    fn required_text_must_be_non_blank_and_within_its_limit() {
        assert_eq!(check_text("ok", 2), Ok(()));
        assert_eq!(check_text("éé", 2), Ok(()));
        assert_eq!(check_text(" \t", 5), Err("must not be empty".to_owned()));
        assert_eq!(
            check_text("abc", 2),
            Err("must be at most 2 characters".to_owned())
        );
    }
}
