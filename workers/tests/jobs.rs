//! The job queue against real PostgreSQL (a fresh database per test).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use store::testing::TestDb;
use workers::jobs::{self, JobSpec};
use workers::{Backoff, Error, Handler, HandlerError, Job, QueueConfig, Worker, WorkerConfig};

fn config(worker_id: &str, lease: Duration) -> WorkerConfig {
    WorkerConfig {
        worker_id: worker_id.to_owned(),
        queues: vec![QueueConfig::new("default", 4)],
        lease,
        poll_interval: Duration::from_millis(20),
        reclaim_interval: Duration::from_millis(100),
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
    }
}

async fn wait_for_state(pool: &sqlx::PgPool, id: i64, state: &str, within: Duration) -> Job {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let detail = jobs::job(pool, id).await.unwrap().unwrap();
        if detail.job.state == state {
            return detail.job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not reach {state} in time; it is {} ({:?})",
            detail.job.state,
            detail.attempts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Eight workers claiming 200 jobs at once never get the same job twice, and together get all of them.
#[tokio::test]
async fn claim_under_concurrency_never_gives_one_job_to_two_workers() {
    let db = TestDb::new().await.unwrap();
    for i in 0..200 {
        jobs::enqueue(
            &db.pool,
            &JobSpec::new("k", format!("k:{i}"), json!({ "i": i })),
        )
        .await
        .unwrap();
    }

    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = jobs::claim(
                    &pool,
                    "default",
                    &[],
                    &format!("w{w}"),
                    Duration::from_secs(60),
                    3,
                )
                .await
                .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }

    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a job was claimed twice");
    assert_eq!(all.len(), 200);
    let attempts: i64 = sqlx::query_scalar("select count(*) from job_attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 200, "one execution-log row per claim");
}

/// Enqueueing twice with one dedupe key makes one job; an enqueue in a rolled-back transaction makes none.
#[tokio::test]
async fn dedupe_key_enqueues_once_and_enqueue_follows_the_transaction() {
    let db = TestDb::new().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    let first = jobs::enqueue(&mut *tx, &JobSpec::new("k", "same", json!({})))
        .await
        .unwrap();
    let second = jobs::enqueue(&mut *tx, &JobSpec::new("k", "same", json!({"other": 1})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    jobs::enqueue(&mut *tx, &JobSpec::new("k", "rolled-back", json!({})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert!(first.inserted);
    assert!(!second.inserted);
    assert_eq!(first.id, second.id);
    let all = jobs::list(&db.pool, &jobs::JobFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].dedupe_hits, 1);
    assert_eq!(all[0].payload, json!({}), "the first payload is kept");
}

/// A batch enqueue answers exactly as the same specs enqueued one by one: over random batches drawing on
/// a few dedupe keys (repeats inside a batch and across batches), the first spec of a key inserts its job
/// with its payload, every later one is a hit on the same id, and the hits are counted.
#[tokio::test]
async fn enqueue_all_answers_like_enqueueing_one_by_one() {
    use rand::{Rng, SeedableRng};
    let db = TestDb::new().await.unwrap();
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut model: std::collections::HashMap<String, (i64, i32, i64)> = Default::default();
    for batch in 0..20 {
        let specs: Vec<JobSpec> = (0..rng.random_range(0..12))
            .map(|i| {
                let key = format!("key:{}", rng.random_range(0..15));
                JobSpec::new("k", key, json!({ "batch": batch, "i": i }))
            })
            .collect();
        let answers = jobs::enqueue_all(&db.pool, &specs).await.unwrap();
        assert_eq!(answers.len(), specs.len(), "seed {seed}");
        for (spec, answer) in specs.iter().zip(&answers) {
            match model.get_mut(&spec.dedupe_key) {
                Some((id, hits, _)) => {
                    assert!(
                        !answer.inserted,
                        "seed {seed}: {} inserted twice",
                        spec.dedupe_key
                    );
                    assert_eq!(answer.id, *id, "seed {seed}");
                    *hits += 1;
                }
                None => {
                    assert!(
                        answer.inserted,
                        "seed {seed}: {} not inserted",
                        spec.dedupe_key
                    );
                    let first = spec.payload["batch"].as_i64().unwrap() * 100
                        + spec.payload["i"].as_i64().unwrap();
                    model.insert(spec.dedupe_key.clone(), (answer.id, 0, first));
                }
            }
        }
    }
    let all = jobs::list(&db.pool, &jobs::JobFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), model.len(), "seed {seed}");
    for job in all {
        let (id, hits, first) = model[&job.dedupe_key];
        assert_eq!(job.id, id, "seed {seed}");
        assert_eq!(
            job.dedupe_hits, hits,
            "seed {seed}: hits of {}",
            job.dedupe_key
        );
        let stored =
            job.payload["batch"].as_i64().unwrap() * 100 + job.payload["i"].as_i64().unwrap();
        assert_eq!(stored, first, "seed {seed}: the first payload is kept");
    }
}

/// Delays grow with each retry (each one at least the previous), stay under the cap, and are jittered.
#[test]
fn backoff_schedule_grows_and_has_jitter() {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(60),
    };
    for _ in 0..200 {
        let delays: Vec<Duration> = (1..=9).map(|n| backoff.delay(n)).collect();
        for pair in delays.windows(2) {
            assert!(pair[1] >= pair[0], "schedule shrank: {delays:?}");
        }
        assert!(delays[8] >= Duration::from_millis(12_800));
        assert!(delays.iter().all(|d| *d <= backoff.max));
    }
    let samples: HashSet<Duration> = (0..50).map(|_| backoff.delay(4)).collect();
    assert!(samples.len() > 10, "no jitter: {samples:?}");
    assert!(samples
        .iter()
        .all(|d| *d >= Duration::from_millis(400) && *d <= Duration::from_millis(800)));
}

struct FailUntil {
    fixed: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl Handler for FailUntil {
    async fn handle(&self, _job: &Job) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fixed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HandlerError::Retry("partner down".into()))
        }
    }
}

/// A job that keeps failing is dead after max_attempts (each attempt logged, retries spaced out); an
/// operator replay brings it back and it completes.
#[tokio::test]
async fn dead_after_n_attempts_then_replay_completes() {
    let db = TestDb::new().await.unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let id = jobs::enqueue(
        &db.pool,
        &JobSpec::new("flaky", "flaky:1", json!({})).max_attempts(3),
    )
    .await
    .unwrap()
    .id;
    let worker = Worker::new(db.pool.clone(), config("w1", Duration::from_secs(10))).register(
        "flaky",
        FailUntil {
            fixed: fixed.clone(),
            calls: calls.clone(),
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let dead = wait_for_state(&db.pool, id, "dead", Duration::from_secs(10)).await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(dead.last_error.as_deref(), Some("partner down"));
    let log = jobs::attempts(&db.pool, id).await.unwrap();
    let outcomes: Vec<&str> = log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["failed", "failed", "dead"]);
    assert!(log
        .iter()
        .all(|a| a.finished_at.is_some() && a.error.is_some()));
    let dead_letters = jobs::dead_letters(&db.pool, 10).await.unwrap();
    assert_eq!(
        dead_letters.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![id]
    );

    fixed.store(true, Ordering::SeqCst);
    let replayed = jobs::replay(&db.pool, id).await.unwrap();
    assert_eq!(replayed.state, "queued");
    assert_eq!(replayed.attempts, 0);
    let done = wait_for_state(&db.pool, id, "succeeded", Duration::from_secs(10)).await;

    assert_eq!(done.replays, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let log = jobs::attempts(&db.pool, id).await.unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[3].outcome, "succeeded");
    assert_eq!((log[3].attempt, log[3].replay_generation), (1, 1));
    assert!(jobs::dead_letters(&db.pool, 10).await.unwrap().is_empty());
    // A succeeded job cannot be replayed; an unknown one is not found.
    assert!(matches!(
        jobs::replay(&db.pool, id).await,
        Err(Error::NotReplayable { .. })
    ));
    assert!(matches!(
        jobs::replay(&db.pool, 999_999).await,
        Err(Error::JobNotFound(_))
    ));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// Hangs on its first call, succeeds afterwards; counts both.
struct HangOnce {
    started: Arc<AtomicU32>,
    completed: Arc<AtomicU32>,
}

#[async_trait]
impl Handler for HangOnce {
    async fn handle(&self, _job: &Job) -> Result<(), HandlerError> {
        if self.started.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A worker killed in the middle of a job (its task aborted) leaves the job running until the lease
/// expires; another worker then runs it again and it completes exactly once.
#[tokio::test]
async fn worker_killed_mid_job_runs_again_after_its_lease_and_completes_once() {
    let db = TestDb::new().await.unwrap();
    let started = Arc::new(AtomicU32::new(0));
    let completed = Arc::new(AtomicU32::new(0));
    let handler = || HangOnce {
        started: started.clone(),
        completed: completed.clone(),
    };
    let id = jobs::enqueue(&db.pool, &JobSpec::new("slow", "slow:1", json!({})))
        .await
        .unwrap()
        .id;
    let lease = Duration::from_millis(1500);

    let first = tokio::spawn(
        Worker::new(db.pool.clone(), config("doomed", lease))
            .register("slow", handler())
            .run(std::future::pending()),
    );
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    let _ = first.await;
    let held = jobs::job(&db.pool, id).await.unwrap().unwrap().job;
    assert_eq!(held.state, "running");
    assert_eq!(held.locked_by.as_deref(), Some("doomed"));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(
        Worker::new(db.pool.clone(), config("survivor", lease))
            .register("slow", handler())
            .run(async {
                let _ = stopped.await;
            }),
    );
    let done = wait_for_state(&db.pool, id, "succeeded", Duration::from_secs(10)).await;
    let _ = stop.send(());
    second.await.unwrap().unwrap();

    assert_eq!(completed.load(Ordering::SeqCst), 1);
    assert_eq!(done.attempts, 2);
    let log = jobs::attempts(&db.pool, id).await.unwrap();
    let summary: Vec<(&str, &str)> = log
        .iter()
        .map(|a| (a.worker_id.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![("doomed", "lease_expired"), ("survivor", "succeeded")]
    );
}

/// A worker whose claim went stale (lease expired and the job reclaimed) cannot record an outcome over
/// the newer attempt.
#[tokio::test]
async fn a_stale_claim_cannot_record_an_outcome() {
    let db = TestDb::new().await.unwrap();
    jobs::enqueue(&db.pool, &JobSpec::new("k", "k:1", json!({})))
        .await
        .unwrap();
    let stale = jobs::claim(&db.pool, "default", &[], "old", Duration::from_millis(1), 1)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let zero = Backoff {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
    assert_eq!(jobs::reclaim_expired(&db.pool, &zero).await.unwrap(), 1);
    let fresh = jobs::claim(&db.pool, "default", &[], "new", Duration::from_secs(60), 1)
        .await
        .unwrap()
        .remove(0);

    assert!(!jobs::complete(&db.pool, &stale).await.unwrap());
    assert_eq!(
        jobs::fail(&db.pool, &stale, "late", Duration::ZERO, true)
            .await
            .unwrap(),
        jobs::FailOutcome::Stale
    );
    assert!(jobs::complete(&db.pool, &fresh).await.unwrap());
    let job = jobs::job(&db.pool, fresh.job.id).await.unwrap().unwrap();
    assert_eq!(job.job.state, "succeeded");
    let outcomes: Vec<&str> = job.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["lease_expired", "succeeded"]);
}
