//! Upcasters: rewrite stored booking events of older versions into the current shape, one event at a time,
//! while they are loaded. Stored rows are never changed.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::{Map, Value};

/// `BookingRequested` 1.0 → 2.0: the flat `amount_minor`, `currency`, `customer_name` and `customer_email`
/// fields become `amount: {minor, currency}` and `customer: {name, email}`.
///
/// Written by hand rather than with `SemanticVersionEventUpcaster`, which panics on a version string that is
/// not numeric. This one never panics: an unparsable version is not upcast, and a payload that is not the
/// expected 1.0 shape is returned unchanged, so deserialization reports it as an error later.
#[derive(Debug, Clone, Copy, Default)]
pub struct BookingRequestedV1ToV2;

impl BookingRequestedV1ToV2 {
    const EVENT_TYPE: &'static str = "BookingRequested";
    const TARGET_VERSION: &'static str = "2.0";

    /// The 2.0 payload for a 1.0 payload, or `None` if `payload` is not the 1.0 shape.
    fn upcast_payload(payload: &Value) -> Option<Value> {
        let fields = payload.get(Self::EVENT_TYPE)?.as_object()?;
        let minor = fields.get("amount_minor").filter(|v| v.is_i64())?;
        let currency = fields.get("currency").filter(|v| v.is_string())?;
        let name = fields.get("customer_name").filter(|v| v.is_string())?;
        let email = fields.get("customer_email").filter(|v| v.is_string())?;

        let mut amount = Map::new();
        amount.insert("minor".to_owned(), minor.clone());
        amount.insert("currency".to_owned(), currency.clone());
        let mut customer = Map::new();
        customer.insert("name".to_owned(), name.clone());
        customer.insert("email".to_owned(), email.clone());

        let mut upcast: Map<String, Value> = fields
            .iter()
            .filter(|(key, _)| {
                !matches!(
                    key.as_str(),
                    "amount_minor" | "currency" | "customer_name" | "customer_email"
                )
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        upcast.insert("amount".to_owned(), Value::Object(amount));
        upcast.insert("customer".to_owned(), Value::Object(customer));

        let mut tagged = Map::new();
        tagged.insert(Self::EVENT_TYPE.to_owned(), Value::Object(upcast));
        Some(Value::Object(tagged))
    }
}

impl EventUpcaster for BookingRequestedV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == Self::EVENT_TYPE
            && parse_version(event_version).is_some_and(|version| version < (2, 0, 0))
    }

    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        match Self::upcast_payload(&event.payload) {
            Some(payload) => SerializedEvent {
                event_version: Self::TARGET_VERSION.to_owned(),
                payload,
                ..event
            },
            None => event,
        }
    }
}

/// Parses `"1"`, `"1.0"` or `"1.0.0"` into (major, minor, patch); anything else is `None`.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.trim().split('.');
    let mut next = |required: bool| match parts.next() {
        Some(part) => part.parse::<u64>().ok(),
        None if required => None,
        None => Some(0),
    };
    let version = (next(true)?, next(false)?, next(false)?);
    match parts.next() {
        Some(_) => None,
        None => Some(version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::{BookingEvent, Customer};
    use crate::values::{Currency, Email, Money};
    use chrono::{DateTime, Utc};
    use cqrs_es::DomainEvent;
    use serde_json::json;

    /// A `BookingRequested` payload exactly as trailbook 1.0 stored it in the events table.
    const STORED_V1_PAYLOAD: &str = r#"{"BookingRequested":{"booking_id":"b-1","owner":"user-1","partner":"acme-hotels","resource":"room-42","starts_at":"2026-12-01T15:00:00Z","ends_at":"2026-12-03T11:00:00Z","guests":2,"amount_minor":25000,"currency":"EUR","customer_name":"Ada","customer_email":"ada@example.com","at":"2026-11-01T10:00:00Z"}}"#;

    fn stored(event_version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "b-1".to_owned(),
            sequence: 1,
            aggregate_type: "booking".to_owned(),
            event_type: "BookingRequested".to_owned(),
            event_version: event_version.to_owned(),
            payload,
            metadata: json!({"actor": {"subject": "user-1", "role": "client"}}),
        }
    }

    fn time(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().expect("test timestamps are valid RFC 3339")
    }

    /// A stored 1.0 row upcasts to a 2.0 payload that deserializes into today's `BookingRequested`, with the
    /// version bumped and everything else (ids, sequence, metadata) kept.
    #[test]
    fn stored_v1_booking_requested_upcasts_to_the_current_event() {
        let payload = serde_json::from_str(STORED_V1_PAYLOAD).expect("the stored row is JSON");
        let row = stored("1.0", payload);
        let upcaster = BookingRequestedV1ToV2;
        assert!(upcaster.can_upcast(&row.event_type, &row.event_version));

        let upcast = upcaster.upcast(row.clone());

        assert_eq!(upcast.event_version, "2.0");
        assert_eq!(
            (
                &upcast.aggregate_id,
                upcast.sequence,
                &upcast.aggregate_type,
                &upcast.metadata
            ),
            (
                &row.aggregate_id,
                row.sequence,
                &row.aggregate_type,
                &row.metadata
            )
        );
        let event: BookingEvent =
            serde_json::from_value(upcast.payload).expect("the upcast payload is a 2.0 event");
        let expected = BookingEvent::BookingRequested {
            booking_id: "b-1".to_owned(),
            owner: "user-1".to_owned(),
            partner: "acme-hotels".to_owned(),
            resource: "room-42".to_owned(),
            starts_at: time("2026-12-01T15:00:00Z"),
            ends_at: time("2026-12-03T11:00:00Z"),
            guests: 2,
            amount: Money::new(25000, Currency::parse("EUR").expect("valid code")),
            customer: Customer {
                name: "Ada".to_owned(),
                email: Email::parse("ada@example.com").expect("valid address"),
            },
            at: time("2026-11-01T10:00:00Z"),
        };
        assert_eq!(event, expected);
        assert_eq!(event.event_version(), upcast.event_version);
    }

    /// A 1.0 row that is not the expected shape comes back unchanged (version included) instead of panicking.
    #[test]
    fn malformed_v1_payload_is_returned_unchanged() {
        let malformed = [
            json!({"BookingRequested": {"booking_id": "b-1", "amount_minor": "25000", "currency": "EUR",
                "customer_name": "Ada", "customer_email": "ada@example.com"}}),
            json!({"BookingRequested": {"booking_id": "b-1"}}),
            json!({"BookingRequested": "not an object"}),
            json!({"SomethingElse": {}}),
            json!([1, 2, 3]),
            Value::Null,
        ];
        for payload in malformed {
            let row = stored("1.0", payload);
            assert_eq!(BookingRequestedV1ToV2.upcast(row.clone()), row);
        }
    }

    /// Only `BookingRequested` rows whose version parses below 2.0 are upcast; current, newer, garbage and
    /// empty versions and other event types are left alone.
    #[test]
    fn only_booking_requested_below_version_2_is_upcast() {
        let upcaster = BookingRequestedV1ToV2;
        for version in ["1.0", "1", "1.9", "0.1.2", " 1.0 "] {
            assert!(
                upcaster.can_upcast("BookingRequested", version),
                "{version:?}"
            );
        }
        for version in [
            "2.0", "2", "2.0.0", "3.1", "garbage", "", "1.0-beta", "1..0", "1.0.0.0", "-1",
        ] {
            assert!(
                !upcaster.can_upcast("BookingRequested", version),
                "{version:?}"
            );
        }
        assert!(!upcaster.can_upcast("BookingCancelled", "1.0"));
    }

    /// The Booking schema registers this upcaster.
    #[test]
    fn booking_schema_ships_the_v1_upcaster() {
        use crate::{AggregateSchema, Booking};
        let upcasters = Booking::upcasters();
        assert_eq!(upcasters.len(), 1);
        assert!(upcasters
            .iter()
            .any(|u| u.can_upcast("BookingRequested", "1.0")));
    }
}
