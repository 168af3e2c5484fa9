//! Reading the status board: counts by aggregate type and status, and items stuck in a non-final status
//! for longer than a configurable age.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::catalog::{STATUS_COUNTS, STATUS_ITEMS};
use crate::error::{Error, Result};

/// When an item counts as stuck: it has been in `status` (and, for visits, its report or e-mail is in the
/// given side-effect status) for longer than `older_than`.
///
/// Text form (for configuration): `<aggregate_type>:<status>[:report_<s>|:email_<s>]=<age>` with the age
/// in `s`, `m` or `h`, e.g. `booking:partner_pending=5m` or `visit:completed:report_pending=10m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckRule {
    pub aggregate_type: String,
    pub status: String,
    /// Only items whose report is in this side-effect status (visits: not_required, pending, done, failed).
    pub report_status: Option<String>,
    /// Only items whose e-mail is in this side-effect status.
    pub email_status: Option<String>,
    pub older_than: Duration,
}

impl StuckRule {
    fn new(aggregate_type: &str, status: &str, minutes: u64) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            status: status.to_owned(),
            report_status: None,
            email_status: None,
            older_than: Duration::from_secs(minutes * 60),
        }
    }

    /// The default rules: bookings waiting for the partner (requested, partner_pending), the payment
    /// provider (payment_pending), a compensation or a refund for more than 5 minutes, and after a minute those
    /// that wait for a person (compensation_failed, refund_failed); completed visits whose report or
    /// e-mail is still pending after 10.
    pub fn defaults() -> Vec<StuckRule> {
        vec![
            Self::new("booking", "requested", 5),
            Self::new("booking", "partner_pending", 5),
            Self::new("booking", "payment_pending", 5),
            Self::new("booking", "compensating", 5),
            Self::new("booking", "refunding", 5),
            Self::new("booking", "compensation_failed", 1),
            Self::new("booking", "refund_failed", 1),
            Self {
                report_status: Some("pending".to_owned()),
                ..Self::new("visit", "completed", 10)
            },
            Self {
                email_status: Some("pending".to_owned()),
                ..Self::new("visit", "completed", 10)
            },
        ]
    }

    /// Parses a comma-separated list of rules (for an environment variable); empty gives no rules.
    pub fn parse_list(list: &str) -> Result<Vec<StuckRule>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl FromStr for StuckRule {
    type Err = Error;

    fn from_str(rule: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidRule {
            rule: rule.to_owned(),
            reason: reason.to_owned(),
        };
        let shape = "expected <aggregate_type>:<status>[:report_<s>|:email_<s>]=<age>, like booking:partner_pending=5m";
        let (selector, age) = rule.split_once('=').ok_or_else(|| invalid(shape))?;
        let parts: Vec<&str> = selector.split(':').map(str::trim).collect();
        let (aggregate_type, status, side) = match parts.as_slice() {
            [t, s] => (*t, *s, None),
            [t, s, side] => (*t, *s, Some(*side)),
            _ => return Err(invalid(shape)),
        };
        if aggregate_type.is_empty() || status.is_empty() {
            return Err(invalid(shape));
        }
        let mut parsed = Self {
            aggregate_type: aggregate_type.to_owned(),
            status: status.to_owned(),
            report_status: None,
            email_status: None,
            older_than: parse_age(age.trim()).ok_or_else(|| {
                invalid("the age must be a whole number followed by s, m or h, like 5m")
            })?,
        };
        match side {
            None => {}
            Some(side) => {
                if let Some(s) = side.strip_prefix("report_").filter(|s| !s.is_empty()) {
                    parsed.report_status = Some(s.to_owned());
                } else if let Some(s) = side.strip_prefix("email_").filter(|s| !s.is_empty()) {
                    parsed.email_status = Some(s.to_owned());
                } else {
                    return Err(invalid(
                        "the third part must be report_<status> or email_<status>",
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

impl fmt::Display for StuckRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.aggregate_type, self.status)?;
        if let Some(s) = &self.report_status {
            write!(f, ":report_{s}")?;
        }
        if let Some(s) = &self.email_status {
            write!(f, ":email_{s}")?;
        }
        write!(f, "={}s", self.older_than.as_secs())
    }
}

fn parse_age(age: &str) -> Option<Duration> {
    let unit = age.chars().last()?;
    let number: u64 = age[..age.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => number,
        'm' => number.checked_mul(60)?,
        'h' => number.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// How many aggregates of one type are in one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StatusCount {
    pub aggregate_type: String,
    pub status: String,
    pub count: i64,
}

/// An aggregate stuck in a status.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StuckItem {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub status: String,
    pub since: DateTime<Utc>,
    pub report_status: Option<String>,
    pub email_status: Option<String>,
    /// How long it has been in its status, at the `now` of the query.
    pub age_seconds: f64,
}

/// The status board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    /// Non-zero counts, by aggregate type then status.
    pub counts: Vec<StatusCount>,
    /// Stuck items, longest stuck first, at most `limit`.
    pub stuck: Vec<StuckItem>,
}

/// Reads the board as of `now` (pass `Utc::now()`; tests pass a later time): the counts, and the items
/// matched by any of `rules`, oldest first, at most `limit`.
pub async fn board(
    pool: &PgPool,
    rules: &[StuckRule],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Board> {
    let counts: Vec<StatusCount> = sqlx::query_as(&format!(
        "select aggregate_type, status, count from {}
         where count <> 0 order by aggregate_type, status",
        STATUS_COUNTS.name
    ))
    .fetch_all(pool)
    .await?;

    let types: Vec<&str> = rules.iter().map(|r| r.aggregate_type.as_str()).collect();
    let statuses: Vec<&str> = rules.iter().map(|r| r.status.as_str()).collect();
    let reports: Vec<Option<&str>> = rules.iter().map(|r| r.report_status.as_deref()).collect();
    let emails: Vec<Option<&str>> = rules.iter().map(|r| r.email_status.as_deref()).collect();
    let ages: Vec<f64> = rules.iter().map(|r| r.older_than.as_secs_f64()).collect();
    let stuck: Vec<StuckItem> = sqlx::query_as(&format!(
        "select i.aggregate_type, i.aggregate_id, i.status, i.since, i.report_status, i.email_status,
                extract(epoch from $6 - i.since)::float8 as age_seconds
         from {} i
         where exists (
             select 1 from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
                 as r(aggregate_type, status, report_status, email_status, older_than)
             where i.aggregate_type = r.aggregate_type and i.status = r.status
               and (r.report_status is null or i.report_status = r.report_status)
               and (r.email_status is null or i.email_status = r.email_status)
               and i.since < $6 - make_interval(secs => r.older_than))
         order by i.since, i.aggregate_type, i.aggregate_id
         limit $7",
        STATUS_ITEMS.name
    ))
    .bind(&types)
    .bind(&statuses)
    .bind(&reports)
    .bind(&emails)
    .bind(&ages)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(Board { counts, stuck })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented text forms parse into the rules they describe, and print back.
    #[test]
    fn stuck_rules_parse_from_their_text_form() {
        let rule: StuckRule = "booking:partner_pending=5m"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule, StuckRule::new("booking", "partner_pending", 5));
        let rule: StuckRule = "visit:completed:report_pending=600s"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule.report_status.as_deref(), Some("pending"));
        assert_eq!(rule.older_than, Duration::from_secs(600));
        assert_eq!(rule.to_string(), "visit:completed:report_pending=600s");
        let list =
            StuckRule::parse_list(" booking:compensating=1h, visit:completed:email_failed=1s ")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].older_than, Duration::from_secs(3600));
        assert_eq!(list[1].email_status.as_deref(), Some("failed"));
    }

    /// Malformed rules are refused with a message, never half-parsed.
    #[test]
    fn malformed_stuck_rules_are_refused() {
        for bad in [
            "",
            "booking",
            "booking:requested",
            "booking:requested=5",
            "booking:requested=m",
            "booking:requested=5d",
            ":requested=5m",
            "visit:completed:pdf_pending=5m",
            "a:b:c:d=5m",
        ] {
            assert!(
                matches!(bad.parse::<StuckRule>(), Err(Error::InvalidRule { .. })),
                "{bad:?}"
            );
        }
    }
}
