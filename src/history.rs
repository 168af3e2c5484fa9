//! `trailbook history`: an aggregate's state and events, now or in the past, for support audits.

use std::fmt::Write as _;

use domain::{AggregateSchema, Booking, Visit};
use serde_json::json;
use store::{EventStore, Loaded, RecordedEvent};

use crate::cli::{AggregateKind, HistoryArgs};
use crate::{emit, Failure};

pub async fn print(store: &EventStore, args: &HistoryArgs) -> Result<(), Failure> {
    match args.kind {
        AggregateKind::Booking => show::<Booking>(store, args).await,
        AggregateKind::Visit => show::<Visit>(store, args).await,
    }
}

async fn show<A: AggregateSchema>(store: &EventStore, args: &HistoryArgs) -> Result<(), Failure> {
    let events = store.history(A::TYPE, &args.id).await?;
    if events.is_empty() {
        return Err(Failure::other(format!(
            "no {} with id `{}`",
            A::TYPE,
            args.id
        )));
    }
    let head = events.len() as u64;
    let loaded: Loaded<A> = match (args.at_version, args.as_of) {
        (Some(version), _) if version > head => {
            return Err(Failure::usage(format!(
                "{} `{}` has {head} versions; --at-version {version} is beyond its head",
                A::TYPE,
                args.id
            )))
        }
        (Some(version), _) => store.load_at_version(&args.id, version).await?,
        (None, Some(at)) => store.load_as_of(&args.id, at).await?,
        (None, None) => store.load(&args.id).await?,
    };
    let shown: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| u64::try_from(e.sequence).is_ok_and(|s| s <= loaded.version))
        .collect();
    let later = events.len() - shown.len();
    let state = serde_json::to_value(&loaded.state)
        .map_err(|e| Failure::other(format!("cannot render the state: {e}")))?;

    if args.json {
        let out = json!({
            "aggregate_type": A::TYPE,
            "id": args.id,
            "version": loaded.version,
            "head_version": head,
            "as_of": args.as_of,
            "at_version": args.at_version,
            "exists": loaded.version > 0,
            "state": if loaded.version > 0 { state } else { serde_json::Value::Null },
            "events": shown,
            "later_events": later,
        });
        return emit(&serde_json::to_string_pretty(&out).unwrap_or_default());
    }

    let mut out = String::new();
    let point = match (args.at_version, args.as_of) {
        (Some(v), _) => format!(" at version {v}"),
        (None, Some(t)) => format!(" as of {}", t.to_rfc3339()),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "{} {}{point}: version {} of {head}",
        A::TYPE,
        args.id,
        loaded.version
    );
    if loaded.version == 0 {
        let _ = writeln!(out, "state: (did not exist yet)");
    } else {
        let _ = writeln!(out, "state:");
        for line in serde_json::to_string_pretty(&state)
            .unwrap_or_default()
            .lines()
        {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "events:");
    for e in &shown {
        let _ = writeln!(out, "{}", describe(e));
        let _ = writeln!(out, "      {}", e.payload);
    }
    if later > 0 {
        let _ = writeln!(
            out,
            "({later} later event{} not shown)",
            if later == 1 { "" } else { "s" }
        );
    }
    emit(out.trim_end())
}

/// `#3  pos 17  2026-12-01T09:30:00Z  PaymentCaptured v1.0  by client:ada  correlation … causation …`
fn describe(e: &RecordedEvent) -> String {
    let meta = e.metadata.to_value();
    let text = |key: &str| {
        meta.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let actor = meta
        .get("actor")
        .and_then(|a| {
            Some(format!(
                "{}:{}",
                a.get("role")?.as_str()?,
                a.get("subject")?.as_str()?
            ))
        })
        .unwrap_or_else(|| "system".to_string());
    format!(
        "  #{:<3} pos {:<6} {}  {} v{}  by {actor}  correlation {}  causation {}  event {}",
        e.sequence,
        e.global_position,
        e.recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        e.event_type,
        e.event_version,
        text("correlation_id"),
        text("causation_id"),
        text("event_id"),
    )
}
