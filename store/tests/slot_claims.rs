//! The slot rule as a property: random sequences of booking commands and partner, payment and operator
//! outcomes on a few shared rooms with overlapping stays, run through the store's one write path against
//! real PostgreSQL. After every step:
//! - a booking holds a `resource_claims` row if and only if its status holds the room;
//! - a new request is accepted if and only if no booking holding an overlapping stay of its room exists
//!   (so a room is never sold twice, and always sold again once every holder let go of it).
//!
//! The seed is printed; `TRAILBOOK_PROPERTY_SEED=<n>` replays one run, `TRAILBOOK_PROPERTY_CASES` sets
//! how many cases run (default 60).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::booking::{
    BookingCommand, BookingStatus, Customer, PartnerReportedStatus, PartnerSource, PaymentOutcome,
    RefundOutcome,
};
use domain::values::{Currency, Email, Money};
use domain::Booking;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::testing::TestDb;
use store::{CommandContext, CommandError, EventStore, ExecuteOptions, HookError, StoreConfig};

/// One booking of a case: its room and stay.
#[derive(Debug, Clone)]
struct Slot {
    room: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

impl Slot {
    fn overlaps(&self, other: &Slot) -> bool {
        self.room == other.room && self.starts_at < other.ends_at && other.starts_at < self.ends_at
    }
}

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 15, 0, 0).unwrap() + Duration::days(n)
}

fn request(id: &str, slot: &Slot) -> BookingCommand {
    BookingCommand::Request {
        booking_id: id.to_owned(),
        owner: "client-1".to_owned(),
        partner: "acme-hotels".to_owned(),
        resource: slot.room.clone(),
        starts_at: slot.starts_at,
        ends_at: slot.ends_at,
        guests: 2,
        amount: Money::new(25_000, Currency::parse("EUR").unwrap()),
        customer: Customer {
            name: "Ada Lovelace".to_owned(),
            email: Email::parse("ada@example.com").unwrap(),
        },
        at: Utc::now(),
    }
}

/// A random command for an existing booking: what the REST API, callbacks, jobs and operators send.
fn random_command(rng: &mut StdRng) -> BookingCommand {
    let index = rng.random_range(0..17);
    command_at(rng, index)
}

/// Command number `index` of the menu (0..17).
fn command_at(rng: &mut StdRng, index: u32) -> BookingCommand {
    use BookingCommand as C;
    let partner = |reported| C::ApplyPartnerStatus {
        reported,
        reservation_id: Some("res-1".to_owned()),
        source: PartnerSource::Callback,
        partner_time: Utc::now(),
        reason: None,
    };
    match index {
        0 | 1 => C::RecordReservationRequested {
            attempt: 1,
            at: Utc::now(),
        },
        2 => C::RecordReservationOutcomeUnknown {
            attempt: 1,
            reason: "timed out".to_owned(),
        },
        3 | 4 => partner(PartnerReportedStatus::Confirmed),
        5 => partner(PartnerReportedStatus::Rejected),
        6 => C::RequestPayment {
            payment_key: "key-1".to_owned(),
            method: "4242424242424242".to_owned(),
            at: Utc::now(),
        },
        7 => C::RecordPayment {
            outcome: PaymentOutcome::Captured {
                payment_id: "pay-1".to_owned(),
            },
        },
        8 => C::RecordPayment {
            outcome: PaymentOutcome::Declined {
                reason: "card declined".to_owned(),
            },
        },
        9 => C::CompleteCompensation,
        10 => C::FailCompensation {
            reason: "partner down".to_owned(),
        },
        11 => C::Fail {
            reason: "deadline passed".to_owned(),
        },
        12 => C::Cancel {
            reason: "plans changed".to_owned(),
            at: Utc::now(),
        },
        13 => C::RecordRefund {
            outcome: if rng.random_bool(0.6) {
                RefundOutcome::Refunded {
                    refund_id: "re-1".to_owned(),
                }
            } else {
                RefundOutcome::Failed {
                    reason: "provider refused".to_owned(),
                }
            },
        },
        14 => C::RecordReservationReleased {
            reservation_id: None,
        },
        15 => C::RecordPaymentOutcomeUnknown {
            attempt: 1,
            reason: "timed out".to_owned(),
        },
        _ => C::Resolve {
            status: [
                BookingStatus::Failed,
                BookingStatus::Cancelled,
                BookingStatus::Refunded,
            ][rng.random_range(0..3)],
            reason: "checked by phone".to_owned(),
        },
    }
}

/// A command that moves a booking in `status` on (half the steps use one, so long paths such as
/// paid → refunding → refund_failed → resolved are walked often).
fn progressing_command(rng: &mut StdRng, status: BookingStatus) -> BookingCommand {
    use BookingStatus as S;
    let pick = |rng: &mut StdRng, options: &[u32]| options[rng.random_range(0..options.len())];
    // Indices into the menu of `command_at`.
    let index = match status {
        S::Requested | S::PartnerPending => pick(rng, &[0, 3, 3, 5, 11, 12, 16]),
        S::Confirmed => pick(rng, &[6, 6, 7, 12]),
        S::PaymentPending => pick(rng, &[7, 8, 15, 16]),
        S::Paid => 12,
        S::Compensating => pick(rng, &[9, 10, 16]),
        S::Refunding => pick(rng, &[13, 13, 16]),
        _ => pick(rng, &[14, 16]),
    };
    command_at(rng, index)
}

/// The seed (printed; `TRAILBOOK_PROPERTY_SEED` replays one), the number of cases
/// (`TRAILBOOK_PROPERTY_CASES`, default 60) and the generator of a property run.
fn property_run() -> (u64, usize, StdRng) {
    let seed: u64 = std::env::var("TRAILBOOK_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases: usize = std::env::var("TRAILBOOK_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("TRAILBOOK_PROPERTY_SEED={seed}");
    (seed, cases, StdRng::seed_from_u64(seed))
}

async fn claimed(store: &EventStore) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("select booking_id from resource_claims")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// After every step of every case: claim ⇔ holds_slot, and a request is accepted ⇔ no live overlap.
#[tokio::test]
async fn a_booking_holds_a_claim_iff_its_status_holds_the_room() {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let (seed, cases, mut rng) = property_run();
    let context = CommandContext::system("property");
    let mut statuses_seen = BTreeSet::new();

    for case in 0..cases {
        // Two rooms, stays of 1 to 3 nights starting within 4 days: most pairs overlap.
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        let mut exists: BTreeSet<String> = BTreeSet::new();
        for step in 0..40 {
            let new = slots.len() < 6 && (exists.is_empty() || rng.random_bool(0.25));
            let (id, command) = if new {
                let id = format!("c{case}-b{}", slots.len());
                let start = rng.random_range(0..4);
                let slot = Slot {
                    room: format!("c{case}-room-{}", rng.random_range(0..2)),
                    starts_at: day(start),
                    ends_at: day(start + rng.random_range(1..4)),
                };
                slots.insert(id.clone(), slot);
                let command = request(&id, &slots[&id]);
                (id, command)
            } else {
                let ids: Vec<&String> = exists.iter().collect();
                let id = ids[rng.random_range(0..ids.len())].clone();
                let status = store.load::<Booking>(&id).await.unwrap().state.status;
                let command = if rng.random_bool(0.5) {
                    progressing_command(&mut rng, status)
                } else {
                    random_command(&mut rng)
                };
                (id, command)
            };

            // What the rule must decide for a request: free iff no holder overlaps.
            let mut holders = Vec::new();
            for other in &exists {
                if store
                    .load::<Booking>(other)
                    .await
                    .unwrap()
                    .state
                    .holds_slot()
                {
                    holders.push(other.clone());
                }
            }
            let free = !holders.iter().any(|h| slots[h].overlaps(&slots[&id]));

            let label = format!("seed {seed} case {case} step {step}: {id} {command:?}");
            let result = store
                .execute::<Booking>(&id, command, &(), &context, ExecuteOptions::default())
                .await;
            match (&result, new) {
                (Ok(_), true) => {
                    assert!(free, "{label}: accepted over a live booking of {holders:?}");
                    exists.insert(id.clone());
                }
                (
                    Err(CommandError::Refused(HookError::Refused {
                        code: "slot_taken", ..
                    })),
                    true,
                ) => assert!(!free, "{label}: refused although the room was free"),
                (Ok(_) | Err(CommandError::Rejected(_)), false) => {}
                (other, _) => panic!("{label}: unexpected outcome {other:?}"),
            }

            // The invariant, for every booking of every case so far.
            let claims = claimed(&store).await;
            for booking_id in &exists {
                let booking = store.load::<Booking>(booking_id).await.unwrap().state;
                statuses_seen.insert(booking.status.as_str());
                assert_eq!(
                    claims.contains(booking_id),
                    booking.holds_slot(),
                    "{label}: booking {booking_id} is {} but its claim is {}",
                    booking.status,
                    if claims.contains(booking_id) {
                        "held"
                    } else {
                        "absent"
                    }
                );
            }
        }
    }
    // The walk reached every status, so the property covered every way into and out of holding.
    let all: BTreeSet<&str> = BookingStatus::ALL.iter().map(|s| s.as_str()).collect();
    let missing: Vec<_> = all.difference(&statuses_seen).collect();
    assert!(
        cases < 60 || missing.is_empty(),
        "seed {seed}: statuses never reached: {missing:?}"
    );
}

/// An idempotency record beside a request's events, as the command API writes one.
struct KeyHook(String);

impl store::CommitHook<Booking> for KeyHook {
    fn writes(
        &self,
        _change: &store::Change<'_, Booking>,
        writes: &mut store::Writes,
    ) -> Result<(), HookError> {
        writes.record(store::KeyRecord {
            scope: "client-1".into(),
            key: self.0.clone(),
            request_hash: "hash".into(),
            ttl: Duration::hours(1),
            response: Box::new(|at| {
                Ok(serde_json::json!({ "version": at.version, "position": at.position }))
            }),
            position_in_answer: true,
        });
        Ok(())
    }
}

/// One command of a round of the group-commit property.
#[derive(Debug)]
struct Planned {
    id: String,
    command: BookingCommand,
    /// The idempotency key of a request (`None` for a command on an existing booking).
    key: Option<String>,
}

/// Group commit as a property: rounds of a dozen commands fired at once at two stores (two committers,
/// as two processes would be) on three rooms: requests with overlapping stays, requests repeating the id
/// or the idempotency key of another request of the round, and random commands on existing bookings. So
/// batches mix claims that overlap each other, streams raced by two batches, and records that collide.
/// After every round:
/// - a booking holds a claim iff its status holds the room;
/// - every command got its own outcome: a request with a free room (no holder at the round's start, no
///   other request of the round overlapping) is accepted unless its id or key was taken by another of
///   the round; a refusal names a reason that exists; a refused or rejected request left no event and a
///   refused key no record;
/// - every accepted command's events are stored at the version and position it was told.
///
/// And the rounds did commit commands of different bookings in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_keep_the_slot_rule_and_their_own_outcomes() {
    let db = TestDb::new().await.unwrap();
    let config = StoreConfig {
        group_commit: store::GroupCommit {
            committers: 1,
            max_batch: 64,
        },
        ..StoreConfig::default()
    };
    let stores = [
        EventStore::new(db.pool.clone(), config.clone()),
        EventStore::new(db.pool.clone(), config),
    ];
    let (seed, rounds, mut rng) = property_run();
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut exists: BTreeSet<String> = BTreeSet::new();

    for round in 0..rounds {
        let mut plan: Vec<Planned> = Vec::new();
        let mut new_ids: Vec<String> = Vec::new();
        for k in 0..12 {
            if exists.is_empty() || rng.random_bool(0.5) {
                let id = match new_ids.last() {
                    Some(previous) if rng.random_bool(0.25) => previous.clone(),
                    _ => {
                        let id = format!("r{round}-b{k}");
                        // Stays move on with the rounds, so rooms do not stay full for good.
                        let start = 2 * round as i64 + rng.random_range(0..6);
                        slots.insert(
                            id.clone(),
                            Slot {
                                room: format!("room-{}", rng.random_range(0..3)),
                                starts_at: day(start),
                                ends_at: day(start + rng.random_range(1..4)),
                            },
                        );
                        new_ids.push(id.clone());
                        id
                    }
                };
                let key = match plan.iter().rev().find_map(|p| p.key.clone()) {
                    Some(other) if rng.random_bool(0.25) => other,
                    _ => format!("key-{round}-{k}"),
                };
                let command = request(&id, &slots[&id]);
                plan.push(Planned {
                    id,
                    command,
                    key: Some(key),
                });
            } else {
                let ids: Vec<&String> = exists.iter().collect();
                let id = ids[rng.random_range(0..ids.len())].clone();
                let status = stores[0].load::<Booking>(&id).await.unwrap().state.status;
                let command = if rng.random_bool(0.6) {
                    progressing_command(&mut rng, status)
                } else {
                    random_command(&mut rng)
                };
                plan.push(Planned {
                    id,
                    command,
                    key: None,
                });
            }
        }
        let mut holders = Vec::new();
        for id in &exists {
            if stores[0]
                .load::<Booking>(id)
                .await
                .unwrap()
                .state
                .holds_slot()
            {
                holders.push(id.clone());
            }
        }

        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(plan.len()));
        let mut tasks = Vec::new();
        for (k, planned) in plan.iter().enumerate() {
            let (store, barrier) = (stores[k % 2].clone(), barrier.clone());
            let (id, command, key) = (
                planned.id.clone(),
                planned.command.clone(),
                planned.key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let context = CommandContext::system("property");
                barrier.wait().await;
                match key {
                    Some(key) => {
                        let options = ExecuteOptions {
                            new_stream: true,
                            ..ExecuteOptions::default()
                        };
                        store
                            .execute::<Booking>(&id, command, &(), &context, options)
                            .with_hook(&KeyHook(key))
                            .await
                    }
                    None => {
                        store
                            .execute::<Booking>(
                                &id,
                                command,
                                &(),
                                &context,
                                ExecuteOptions::default(),
                            )
                            .await
                    }
                }
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }

        let label = |k: usize| format!("seed {seed} round {round} command {k}: {:?}", plan[k]);
        let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, (planned, result)) in plan.iter().zip(&results).enumerate() {
            if let Ok(done) = result {
                // Stored where it was told.
                let history = stores[0].history("booking", &planned.id).await.unwrap();
                let last = usize::try_from(done.version).unwrap();
                if !done.events.is_empty() {
                    assert_eq!(
                        history.get(last - 1).map(|e| e.global_position),
                        done.position,
                        "{}: told {done:?}",
                        label(k)
                    );
                }
            }
            let Some(key) = &planned.key else {
                match result {
                    Ok(_) | Err(CommandError::Rejected(_)) => continue,
                    other => panic!("{}: unexpected outcome {other:?}", label(k)),
                }
            };
            let slot = &slots[&planned.id];
            let same_id = plan
                .iter()
                .filter(|p| p.key.is_some() && p.id == planned.id)
                .count()
                > 1;
            let same_key = plan.iter().filter(|p| p.key.as_ref() == Some(key)).count() > 1;
            let rival = plan
                .iter()
                .any(|p| p.key.is_some() && p.id != planned.id && slots[&p.id].overlaps(slot));
            let held = holders.iter().any(|h| slots[h].overlaps(slot));
            // A holder no command of the round touched holds the room throughout.
            let held_throughout = holders
                .iter()
                .any(|h| slots[h].overlaps(slot) && !plan.iter().any(|p| &p.id == h));
            match result {
                Ok(_) => {
                    *accepted.entry(planned.id.as_str()).or_default() += 1;
                    assert!(
                        !held_throughout,
                        "{}: accepted over a live booking",
                        label(k)
                    );
                }
                Err(CommandError::Refused(HookError::Refused {
                    code: "slot_taken",
                    related_id,
                    ..
                })) => {
                    assert!(held || rival, "{}: refused a free room", label(k));
                    if let Some(holder) = related_id {
                        assert!(
                            holder != &planned.id && slots[holder].overlaps(slot),
                            "{}: refused for {holder}, which does not overlap",
                            label(k)
                        );
                    }
                }
                Err(CommandError::Refused(HookError::Refused {
                    code: "idempotency_key_in_use",
                    ..
                })) => assert!(same_key, "{}: key refused though only it used it", label(k)),
                Err(CommandError::Rejected(_)) => {
                    assert!(same_id, "{}: rejected though only it used the id", label(k))
                }
                Err(other) => panic!("{}: unexpected outcome {other:?}", label(k)),
            }
        }
        for id in &new_ids {
            let written = !stores[0].history("booking", id).await.unwrap().is_empty();
            let times = accepted.get(id.as_str()).copied().unwrap_or_default();
            assert!(
                times <= 1,
                "seed {seed} round {round}: {id} accepted {times} times"
            );
            assert_eq!(
                written,
                times == 1,
                "seed {seed} round {round}: {id} has events iff a request for it was accepted"
            );
            if written {
                exists.insert(id.clone());
            }
        }
        // A record exists for a key iff a request with it was accepted, and names that request.
        for (planned, result) in plan.iter().zip(&results) {
            let Some(key) = &planned.key else { continue };
            let stored: Option<(String, serde_json::Value)> = sqlx::query_as(
                "select aggregate_id, response from idempotency_keys where idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            let owner = stored.as_ref().map(|(id, _)| id.clone());
            if let Ok(done) = result {
                assert_eq!(
                    owner.as_ref(),
                    Some(&planned.id),
                    "seed {seed} round {round}: {key}"
                );
                let answer = stored.map(|(_, answer)| answer).unwrap_or_default();
                assert_eq!(
                    (answer["version"].as_u64(), answer["position"].as_i64()),
                    (Some(done.version), done.position),
                    "seed {seed} round {round}: {key}: the stored answer is not the command's"
                );
            }
            if owner.is_none() {
                assert!(
                    result.is_err(),
                    "seed {seed} round {round}: {key} accepted, not recorded"
                );
            }
        }
        // The slot rule.
        let claims = claimed(&stores[0]).await;
        for id in &exists {
            let booking = stores[0].load::<Booking>(id).await.unwrap().state;
            assert_eq!(
                claims.contains(id),
                booking.holds_slot(),
                "seed {seed} round {round}: booking {id} is {} with claim {}",
                booking.status,
                claims.contains(id)
            );
        }
    }
    let shared: i64 = sqlx::query_scalar(
        "select count(*) from (select tx_id from events group by tx_id
                               having count(distinct aggregate_id) > 1) t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        shared > 0,
        "seed {seed}: no transaction committed two bookings"
    );
}
