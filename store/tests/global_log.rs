//! The global log reader never skips an event of a transaction that commits late.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Counter, CounterCommand, Gate};
use store::log::{read_after, Checkpoint};
use store::testing::TestDb;
use store::{CommandContext, EventStore, ExecuteOptions, StoreConfig};

async fn add(store: &EventStore, id: &str, n: i64) {
    store
        .execute::<Counter>(
            id,
            CounterCommand::Add(vec![n]),
            &Gate::default(),
            &CommandContext::system("add"),
            ExecuteOptions::default(),
        )
        .await
        .unwrap();
}

async fn read_all(db: &TestDb, after: Checkpoint) -> Vec<store::RecordedEvent> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = read_after(&db.pool, cursor, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.checkpoint();
        out.extend(page);
    }
    out
}

/// Reads until `n` events arrived after `after`, or 10 s passed. `pg_snapshot_xmin` is cluster-wide, so an
/// open transaction of another test (in another database of the same server) may briefly hold the log
/// back: readers wait, they never skip.
async fn read_until(db: &TestDb, after: Checkpoint, n: usize) -> Vec<store::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut out = Vec::new();
    let mut cursor = after;
    while out.len() < n && std::time::Instant::now() < deadline {
        let page = read_all(db, cursor).await;
        match page.last() {
            Some(last) => cursor = last.checkpoint(),
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
        out.extend(page);
    }
    out
}

/// A transaction that took a global position but has not committed holds back every later event; once
/// it commits, the reader delivers it and then the later ones, in (tx, position) order, each once.
#[tokio::test]
async fn reader_waits_for_a_slow_transaction_then_delivers_everything_in_order() {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    add(&store, "before", 1).await;
    let seen = read_until(&db, Checkpoint::default(), 1).await;
    assert_eq!(seen.len(), 1);
    let cursor = seen[0].checkpoint();

    // A slow writer: inserts (taking a position and an xid) but does not commit yet.
    let mut slow = db.pool.begin().await.unwrap();
    sqlx::query("insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 values ('counter', 'slow', 1, 'Added', '1.0', '{\"Added\":{\"n\":100}}', '{}')")
        .execute(&mut *slow)
        .await
        .unwrap();

    // Faster writers commit after it.
    for i in 0..3 {
        add(&store, &format!("fast-{i}"), i).await;
    }
    let committed: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(committed, 4, "the fast events are committed and visible");
    assert!(
        read_all(&db, cursor).await.is_empty(),
        "nothing after the slow transaction's position may be delivered while it is open"
    );

    slow.commit().await.unwrap();
    let delivered = read_until(&db, cursor, 4).await;
    let ids: Vec<&str> = delivered.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["slow", "fast-0", "fast-1", "fast-2"]);
    let mut keys: Vec<_> = delivered
        .iter()
        .map(|e| (e.tx_id, e.global_position))
        .collect();
    let sorted = {
        let mut k = keys.clone();
        k.sort();
        k
    };
    assert_eq!(keys, sorted);
    keys.dedup();
    assert_eq!(keys.len(), 4);
    assert!(read_all(&db, delivered[3].checkpoint()).await.is_empty());
}

/// A rolled-back transaction leaves no event behind and does not block the reader afterwards.
#[tokio::test]
async fn rolled_back_transactions_leave_no_gap_and_no_event() {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let mut aborted = db.pool.begin().await.unwrap();
    sqlx::query("insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 values ('counter', 'gone', 1, 'Added', '1.0', '{\"Added\":{\"n\":1}}', '{}')")
        .execute(&mut *aborted)
        .await
        .unwrap();
    add(&store, "kept", 1).await;
    aborted.rollback().await.unwrap();
    let mut delivered = read_until(&db, Checkpoint::default(), 1).await;
    delivered.extend(
        read_all(
            &db,
            delivered.last().map(|e| e.checkpoint()).unwrap_or_default(),
        )
        .await,
    );
    assert_eq!(
        delivered
            .iter()
            .map(|e| e.aggregate_id.as_str())
            .collect::<Vec<_>>(),
        ["kept"]
    );
}

/// Many concurrent writers: reading the log in pages delivers every committed event exactly once.
#[tokio::test]
async fn concurrent_writers_are_read_completely_and_once() {
    let db = TestDb::new().await.unwrap();
    let store = EventStore::new(db.pool.clone(), StoreConfig::default());
    let mut cursor = Checkpoint::default();
    let mut delivered = Vec::new();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    add(&store, &format!("w{w}-{}", i % 5), i).await;
                }
            })
        })
        .collect();
    // read while they write
    for _ in 0..50 {
        let page = read_after(&db.pool, cursor, 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = last.checkpoint();
        }
        delivered.extend(page);
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let missing = 200 - delivered.len();
    delivered.extend(read_until(&db, cursor, missing).await);
    let mut positions: Vec<i64> = delivered.iter().map(|e| e.global_position).collect();
    assert_eq!(positions.len(), 200);
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 200, "no event delivered twice");
}
