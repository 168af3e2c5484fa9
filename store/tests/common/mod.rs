//! A deliberately non-idempotent test aggregate: applying an event twice gives a different state, so any
//! double application (the cqrs-es 0.5 snapshot bug) shows up as a wrong total or a longer list.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cqrs_es::persist::EventUpcaster;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub total: i64,
    pub adds: Vec<i64>,
    pub applied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CounterCommand {
    /// Adds each number as its own event (one command, several events).
    Add(Vec<i64>),
    /// Fails unless the total is below the limit.
    AddBelow { n: i64, limit: i64 },
    /// Produces no event.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { n: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("limit reached")]
pub struct LimitReached;

/// Lets tests hold the first `hold` handlers at a barrier, so they all load the same version.
#[derive(Debug, Default)]
pub struct Gate {
    pub barrier: Option<Arc<Barrier>>,
    pub hold: usize,
    pub seen: AtomicUsize,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = LimitReached;
    type Services = Gate;

    async fn handle(
        &mut self,
        command: Self::Command,
        gate: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(barrier) = &gate.barrier {
            if gate.seen.fetch_add(1, Ordering::SeqCst) < gate.hold {
                barrier.wait().await;
            }
        }
        match command {
            CounterCommand::Add(ns) => {
                for n in ns {
                    sink.write(CounterEvent::Added { n }, self).await;
                }
            }
            CounterCommand::AddBelow { n, limit } => {
                if self.total >= limit {
                    return Err(LimitReached);
                }
                sink.write(CounterEvent::Added { n }, self).await;
            }
            CounterCommand::Nothing => {}
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CounterEvent::Added { n } => {
                self.total += n;
                self.adds.push(n);
                self.applied += 1;
            }
        }
    }
}

impl domain::AggregateSchema for Counter {
    const STATE_VERSION: i32 = 1;
    fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
        Vec::new()
    }
}

/// The state a plain fold of `events` gives, for comparison with what the store loads.
pub fn fold(events: &[store::RecordedEvent]) -> Counter {
    let mut state = Counter::default();
    for e in events {
        state.apply(e.decode::<Counter>().expect("decodes"));
    }
    state
}

/// The counter has no write rules of its own.
impl store::WriteRules for Counter {
    type Rules = store::NoHook;
    fn write_rules() -> store::NoHook {
        store::NoHook
    }
}
