//! The OpenAPI document as the truth: what the handlers' annotations cannot say by themselves.
//!
//! - Field rules ([`Rule`]: [`name`], [`reason`], [`email`], [`instant`], …) are each one pattern and
//!   one length bound, checked when a body is parsed (400 naming the field, before any state is looked
//!   at) and stated as they are in the document, so a request the document calls valid is never refused
//!   for its shape and one it calls invalid always is (the schemathesis contract run, `tests/contract.rs`).
//!   The domain keeps its own checks (422) for callers that do not come through HTTP.
//! - [`finish`] adds to every operation the answers its shape implies, which no handler lists because
//!   the shared extractors and layers give them: 400 for a malformed header, path or body, 401/403 where a
//!   token is required, 404 where a path names an aggregate, 413/415 where a body is read, 429 and 503
//!   with `Retry-After` from the limits, 500 (a bug, with an error id); every error body is the
//!   [`Problem`](crate::error::Problem) schema. It adds the links of the create → read → act flows and the
//!   two routes served outside the annotated router (`/metrics`, `/openapi.json`).

use std::sync::LazyLock;

use domain::booking::MAX_GUESTS;
use domain::visit::MAX_DIAGNOSIS_CODES;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};

/// How every rule's refusal begins. `extract::parse` answers such a refusal with 422 `invalid_value`
/// naming the field (a value the rules refuse), any other parse error with 400 (malformed JSON, a wrong
/// type, an unknown or missing field).
pub const BROKEN_RULE: &str = "must ";

/// Whitespace as Rust's `char::is_whitespace` (the Unicode `White_Space` property), as a regex class body.
const WHITESPACE: &str =
    "\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// Control characters as Rust's `char::is_control` (general category `Cc`), as a regex class body.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// One rule on a string field: a pattern (ECMA and Rust regex syntax alike) and a length in characters
/// (JSON Schema's `minLength`/`maxLength` count code points, as `chars()` does).
pub struct Rule {
    pattern: String,
    regex: Regex,
    max_chars: Option<usize>,
    description: String,
}

impl Rule {
    fn new(pattern: String, max_chars: Option<usize>, description: impl Into<String>) -> Self {
        let regex = Regex::new(&pattern).unwrap_or_else(|e| {
            // The patterns are constants of this module; a test compiles every one.
            tracing::error!(error = %e, "a field pattern does not compile");
            Regex::new("^$").unwrap_or_else(|_| unreachable!("a trivial pattern compiles"))
        });
        Self {
            pattern,
            regex,
            max_chars,
            description: description.into(),
        }
    }

    /// Text as `domain::values::check_text` accepts it and PostgreSQL can store it: a character that is
    /// not whitespace, no NUL, at most `max` characters.
    fn text(max: usize) -> Self {
        Self::new(
            format!("^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"),
            Some(max),
            format!("1 to {max} characters, not only whitespace, no NUL"),
        )
    }

    /// Whether `value` keeps the rule.
    pub fn allows(&self, value: &str) -> bool {
        self.regex.is_match(value)
            && self
                .max_chars
                .is_none_or(|max| value.chars().count() <= max)
    }

    /// `value`, or a message saying what the field must be (never echoing the value: it may be personal).
    pub fn check(&self, value: String) -> Result<String, String> {
        if self.allows(&value) {
            Ok(value)
        } else {
            Err(format!("must be {}", self.description))
        }
    }

    /// The rule as a JSON Schema.
    pub fn schema(&self) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(self.description.clone()))
            .pattern(Some(self.pattern.clone()))
            .max_length(self.max_chars)
    }

    fn deserialize<'de, D: serde::Deserializer<'de>>(&self, d: D) -> Result<String, D::Error> {
        self.check(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

static NAME: LazyLock<Rule> = LazyLock::new(|| Rule::text(domain::values::MAX_NAME_CHARS));
static REASON: LazyLock<Rule> = LazyLock::new(|| Rule::text(domain::values::MAX_REASON_CHARS));
static SUMMARY: LazyLock<Rule> = LazyLock::new(|| Rule::text(domain::visit::MAX_SUMMARY_CHARS));
static EMAIL: LazyLock<Rule> = LazyLock::new(|| {
    let other = format!("[^@{CONTROL}{WHITESPACE}]");
    let edge = format!("[^.@{CONTROL}{WHITESPACE}]");
    Rule::new(
        format!("^{other}+@{edge}{other}*\\.{other}*{edge}$"),
        Some(domain::values::Email::MAX_LEN),
        "an e-mail address: one `@`, a domain with a dot, no whitespace or control characters, at \
         most 254 characters",
    )
});
static CURRENCY: LazyLock<Rule> = LazyLock::new(|| {
    Rule::new(
        "^[A-Z]{3}$".into(),
        None,
        "an ISO 4217 code: three uppercase letters, e.g. `EUR`",
    )
});
/// RFC 3339 (`T` and `Z` upper case, no leap second) with a real calendar date in 2000–2099.
static INSTANT: LazyLock<Rule> = LazyLock::new(|| {
    let leap = "20(0[048]|[2468][048]|[13579][26])-02-29";
    let any_month = "(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])";
    let thirty = "(0[13-9]|1[0-2])-(29|30)";
    let thirty_one = "(0[13578]|1[02])-31";
    let date = format!("(20[0-9]{{2}}-({any_month}|{thirty}|{thirty_one})|{leap})");
    let time = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?";
    let offset = "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
    Rule::new(
        format!("^{date}T{time}{offset}$"),
        None,
        "an RFC 3339 date-time in the years 2000 to 2099, like `2026-12-01T15:00:00Z`",
    )
});
/// 12 to 19 digits with spaces or dashes anywhere (`bookings::payment` strips them). The check digit
/// (Luhn) is checked too, which no pattern can say: a wrong one is 422.
static CARD: LazyLock<Rule> = LazyLock::new(|| {
    Rule::new(
        "^[ -]*([0-9][ -]*){12,19}$".into(),
        Some(200),
        "a card number: 12 to 19 digits (spaces and dashes ignored) with a valid check digit; the \
         simulator declines `4000000000000002`",
    )
});
/// One ICD-10 code as `domain::visit` checks it: a letter, two digits, optionally a dot and 1 to 4
/// letters or digits.
static ICD10: LazyLock<Rule> = LazyLock::new(|| {
    Rule::new(
        "^[A-Z][0-9]{2}(\\.[0-9A-Za-z]{1,4})?$".into(),
        None,
        "an ICD-10 code like `J06.9`",
    )
});

/// Every rule, for the test that compiles them.
#[cfg(test)]
fn rules() -> [&'static Rule; 8] {
    [
        &NAME, &REASON, &SUMMARY, &EMAIL, &CURRENCY, &INSTANT, &CARD, &ICD10,
    ]
}

/// A name or id (1 to 200 characters): deserialize with [`name`], document with [`name_schema`].
pub fn name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    NAME.deserialize(d)
}
pub fn name_schema() -> ObjectBuilder {
    NAME.schema()
}

/// A reason for the history (1 to 500 characters).
pub fn reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    REASON.deserialize(d)
}
pub fn reason_schema() -> ObjectBuilder {
    REASON.schema()
}

/// An optional reason: absent or `null` for none.
pub fn optional_reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| REASON.check(text))
        .transpose()
        .map_err(serde::de::Error::custom)
}
pub fn optional_reason_schema() -> ObjectBuilder {
    REASON
        .schema()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// A consultation summary (1 to 10,000 characters).
pub fn summary<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    SUMMARY.deserialize(d)
}
pub fn summary_schema() -> ObjectBuilder {
    SUMMARY.schema()
}

/// An e-mail address as `domain::values::Email` accepts it.
pub fn email<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    EMAIL.deserialize(d)
}
pub fn email_schema() -> ObjectBuilder {
    EMAIL.schema()
}

/// A currency code as `domain::values::Currency` accepts it.
pub fn currency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    CURRENCY.deserialize(d)
}
pub fn currency_schema() -> ObjectBuilder {
    CURRENCY.schema()
}

/// A card number (see [`CARD`]).
pub fn card<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    CARD.deserialize(d)
}
pub fn card_schema() -> ObjectBuilder {
    CARD.schema()
}

/// An RFC 3339 date-time written in the years 2000 to 2099 (dates outside are refused as absurd; the
/// rule is on the text as written, offset included, so that the pattern states it exactly).
pub fn instant<'de, D>(d: D) -> Result<chrono::DateTime<chrono::Utc>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = INSTANT.deserialize(d)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|_| serde::de::Error::custom(format!("must be {}", INSTANT.description)))
}
pub fn instant_schema() -> ObjectBuilder {
    INSTANT.schema()
}

/// A whole number from `min` to `max`. JSON Schema counts `97.0` as the integer 97, so it is taken as
/// such; a fraction or a number outside the bounds is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
    min: i64,
    max: i64,
) -> Result<i64, D::Error> {
    let refuse = || serde::de::Error::custom(format!("must be a whole number from {min} to {max}"));
    let number = serde_json::Number::deserialize(d)?;
    let value = if let Some(value) = number.as_i64() {
        value
    } else if let Some(value) = number.as_f64() {
        // Exact only within ±2^53, which every bound here is.
        if value.fract() != 0.0 || value.abs() > 9_007_199_254_740_992.0 {
            return Err(refuse());
        }
        value as i64
    } else {
        return Err(refuse());
    };
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(refuse())
    }
}

/// Guests: 1 to 100.
pub fn guests<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let guests = whole_number(d, 1, i64::from(MAX_GUESTS))?;
    u32::try_from(guests)
        .map_err(|_| serde::de::Error::custom(format!("must be from 1 to {MAX_GUESTS}")))
}
pub fn guests_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(1))
        .maximum(Some(MAX_GUESTS))
        .description(Some(format!("1 to {MAX_GUESTS}")))
}

/// The largest amount in minor units: 2^53 - 1, so that every JSON parser reads it exactly.
pub const MAX_MINOR: i64 = 9_007_199_254_740_991;

/// An amount in minor units: positive, at most [`MAX_MINOR`].
pub fn minor_units<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole_number(d, 1, MAX_MINOR)
}
pub fn minor_units_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(1))
        .maximum(Some(MAX_MINOR))
        .description(Some("positive, in minor units (cents), at most 2^53 - 1"))
}

/// At most 20 ICD-10 codes; absent is none.
pub fn diagnosis_codes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let codes = Vec::<String>::deserialize(d)?;
    if codes.len() > MAX_DIAGNOSIS_CODES {
        return Err(serde::de::Error::custom(format!(
            "must hold at most {MAX_DIAGNOSIS_CODES} codes"
        )));
    }
    match codes.iter().position(|code| !ICD10.allows(code)) {
        Some(index) => Err(serde::de::Error::custom(format!(
            "must be ICD-10 codes like `J06.9`; the one at position {index} is not"
        ))),
        None => Ok(codes),
    }
}
pub fn diagnosis_codes_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ICD10.schema())
        .max_items(Some(MAX_DIAGNOSIS_CODES))
        .description(Some(format!(
            "ICD-10 codes like `J06.9`, at most {MAX_DIAGNOSIS_CODES}"
        )))
}

/// The pattern of `Idempotency-Key` (`extract::IdempotencyKey`): 1 to 200 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,200}$";
/// The pattern of `If-Match` (`extract::IfMatch`): a version, bare or quoted, optionally weak.
pub const IF_MATCH_PATTERN: &str = "^(W/)?(\"[0-9]{1,19}\"|[0-9]{1,19})$";

/// Routes no limit applies to (`middleware::exempt`), and which answer without the database.
const PROBES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The finished document: `api` with the answers, links and routes described in the module docs.
pub fn finish(api: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        add_probe_routes(paths);
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                add_command_key(operation);
                constrain_headers(operation);
                add_implied_answers(path, operation);
                add_links(operation);
            }
        }
    }
    doc
}

/// `/metrics` and `/openapi.json`, served outside the annotated router.
fn add_probe_routes(paths: &mut Map<String, Value>) {
    paths.insert(
        "/metrics".into(),
        json!({"get": {
            "tags": ["operations"], "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {"200": {"description": "the metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "tags": ["operations"], "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI 3.1 document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
}

fn problem_answer(description: &str, headers: &[(&str, &str)]) -> Value {
    let mut answer = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    });
    if !headers.is_empty() {
        let headers: Map<String, Value> = headers
            .iter()
            .map(|(name, description)| {
                (
                    (*name).to_string(),
                    json!({"description": description, "schema": {"type": "string"}}),
                )
            })
            .collect();
        answer["headers"] = Value::Object(headers);
    }
    answer
}

/// The answers every route of this shape can give (see the module docs), each added unless the route
/// documents it itself; every error answer gets the `Problem` body.
fn add_implied_answers(path: &str, operation: &mut Map<String, Value>) {
    let params: Vec<(String, String)> = operation
        .get("parameters")
        .and_then(Value::as_array)
        .map(|params| {
            params
                .iter()
                .map(|p| {
                    let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                    (field("in"), field("name"))
                })
                .collect()
        })
        .unwrap_or_default();
    let secured = operation.contains_key("security");
    let has_body = operation.contains_key("requestBody");
    let signed = params
        .iter()
        .any(|(_, name)| name == "X-Trailbook-Signature");
    let probe = PROBES.contains(&path);

    let mut implied: Vec<(&str, Value)> = Vec::new();
    if has_body || !params.is_empty() {
        implied.push((
            "400",
            problem_answer("malformed: a header, the path or the body", &[]),
        ));
    }
    if secured {
        implied.push((
            "401",
            problem_answer(
                "no token, or an invalid or expired one",
                &[("WWW-Authenticate", "Bearer")],
            ),
        ));
        implied.push((
            "403",
            problem_answer("the token's role may not do this", &[]),
        ));
    }
    if signed {
        implied.push((
            "401",
            problem_answer("a missing, stale or wrong signature", &[]),
        ));
    }
    if params.iter().any(|(place, _)| place == "path") {
        implied.push((
            "404",
            problem_answer("no such aggregate, or not the caller's", &[]),
        ));
    }
    if has_body {
        let too_large = format!(
            "the body is larger than {} KiB",
            crate::extract::BODY_LIMIT / 1024
        );
        implied.push(("413", problem_answer(&too_large, &[])));
        implied.push((
            "415",
            problem_answer("the body is not `application/json`", &[]),
        ));
    }
    if !probe {
        implied.push((
            "429",
            problem_answer(
                "rate limited",
                &[("Retry-After", "seconds to wait before retrying")],
            ),
        ));
        implied.push((
            "500",
            problem_answer(
                "an internal error (a bug); the body has the error id to quote",
                &[],
            ),
        ));
        implied.push((
            "503",
            problem_answer(
                "overloaded or the database is unavailable",
                &[("Retry-After", "seconds to wait before retrying")],
            ),
        ));
    }

    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, answer) in implied {
        responses.entry(status).or_insert(answer);
    }
    for (status, answer) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, Some(answer)) = (is_error, answer.as_object_mut()) {
            answer.entry("content").or_insert_with(|| {
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
            });
        }
    }
}

/// The commands on each kind of aggregate, its read first.
const FLOWS: [(&str, &str, &[&str]); 2] = [
    (
        "booking",
        "create_booking",
        &[
            "get_booking",
            "cancel_booking",
            "pay_for_booking",
            "resolve_booking",
        ],
    ),
    (
        "visit",
        "create_visit",
        &[
            "get_visit",
            "check_in_visit",
            "start_visit",
            "complete_visit",
            "cancel_visit",
            "mark_visit_no_show",
        ],
    ),
];

/// The flows an aggregate's answers lead to: a create's 202 to its read and every command on it (the id
/// from the answer's `<kind>_id`), a command's answer to the read and every command on the same id.
fn add_links(operation: &mut Map<String, Value>) {
    let Some(id) = operation
        .get("operationId")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    let id = id.as_str();
    let Some((kind, create, targets)) = FLOWS
        .iter()
        .find(|(_, create, targets)| *create == id || targets.contains(&id))
    else {
        return;
    };
    let (status, source) = if *create == id {
        ("202", format!("$response.body#/{kind}_id"))
    } else {
        ("2XX", "$request.path.id".to_string())
    };
    let links: Map<String, Value> = targets
        .iter()
        .filter(|target| **target != id)
        .map(|target| {
            (
                (*target).to_string(),
                json!({"operationId": target, "parameters": {"id": source}}),
            )
        })
        .collect();
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (code, answer) in responses.iter_mut() {
        let matches = if status == "202" {
            code == "202"
        } else {
            code.starts_with('2') && id != "get_booking" && id != "get_visit"
        };
        if matches {
            answer["links"] = Value::Object(links.clone());
        }
    }
}

/// The optional `Idempotency-Key` every command on an existing aggregate takes (`resource::CommandRequest`).
fn add_command_key(operation: &mut Map<String, Value>) {
    let Some(id) = operation.get("operationId").and_then(Value::as_str) else {
        return;
    };
    let is_command = FLOWS
        .iter()
        .any(|(_, _, targets)| targets.contains(&id) && !id.starts_with("get_"));
    if !is_command {
        return;
    }
    let param = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "optional: the same key and request again get the first answer \
            (`Idempotent-Replayed: true`); the key with another route, aggregate or body is 422",
    });
    if let Some(params) = operation
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        params.push(param);
    }
}

/// The patterns of the shared headers (`extract::IdempotencyKey`, `extract::IfMatch`).
fn constrain_headers(operation: &mut Map<String, Value>) {
    let Some(params) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for param in params {
        let pattern = match param["name"].as_str() {
            Some("Idempotency-Key") => IDEMPOTENCY_KEY_PATTERN,
            Some("If-Match") => IF_MATCH_PATTERN,
            _ => continue,
        };
        param["schema"] = json!({"type": "string", "pattern": pattern});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule's pattern compiles (a broken one would refuse everything).
    #[test]
    fn every_pattern_compiles() {
        for rule in rules() {
            assert!(Regex::new(&rule.pattern).is_ok(), "{}", rule.pattern);
        }
    }

    /// The date rule takes real calendar dates (leap days of leap years only) and refuses the rest.
    #[test]
    fn instants_are_real_dates_in_range() {
        for ok in [
            "2026-12-01T15:00:00Z",
            "2024-02-29T00:00:00+01:00",
            "2000-02-29T23:59:59.123456789-23:59",
            "2099-12-31T23:59:59Z",
        ] {
            assert!(INSTANT.allows(ok), "{ok}");
            assert!(chrono::DateTime::parse_from_rfc3339(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2025-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "2026-12-01 15:00:00Z",
            "2026-12-01T15:00:60Z",
            "2026-12-01t15:00:00z",
            "2026-12-01T15:00:00Z\n",
        ] {
            assert!(!INSTANT.allows(bad), "{bad}");
        }
    }

    /// The text rule agrees with the domain's: blank is refused, any non-whitespace character will do.
    #[test]
    fn text_is_blank_exactly_when_the_domain_says_so() {
        for text in ["a", " a ", "\u{3000}x", "\u{feff}", "0"] {
            assert!(NAME.allows(text), "{text:?}");
        }
        for text in ["", " ", "\t\n", "\u{85}", "\u{3000}\u{2028}", "a\u{0}"] {
            assert!(!NAME.allows(text), "{text:?}");
        }
        assert!(NAME.allows(&"é".repeat(200)));
        assert!(!NAME.allows(&"é".repeat(201)));
    }

    /// The e-mail rule agrees with `domain::values::Email::parse`.
    #[test]
    fn email_rule_matches_the_domain() {
        for raw in [
            "ada@example.com",
            "a.b+tag@mail.example.org",
            "x@y.io",
            "a@b..c",
            "",
            "ada@localhost",
            "@example.com",
            "ada@.com",
            "ada@example.",
            "a da@example.com",
            " ada@example.com",
            "ada@example.com\u{0}",
            "ada@exa\u{85}mple.com",
            "a@b@c.d",
        ] {
            assert_eq!(
                EMAIL.allows(raw),
                domain::values::Email::parse(raw).is_ok(),
                "{raw:?}"
            );
        }
    }
}
