//! The broker's timers under paused tokio time: retry due times (and the
//! pulls that wait for them) and transaction check-backs, on a broker whose
//! [`Clock`] moves with tokio's. Nothing sleeps for real and nothing is
//! timed: time moves only by `advance` or by tokio's auto-advance when the
//! test waits on a timer.
//!
//! The store flushes asynchronously: a sync-flush send waits for the fsync
//! thread, a real thread, while paused tokio time would auto-advance to
//! `sync_flush_timeout` and answer `FLUSH_DISK_TIMEOUT`.

use std::sync::Arc;
use std::time::Duration;

use waybill_client::protocol::{TransactionState, PROP_DELAY_UNTIL};

use super::retry::{retry_topic, RetryPolicy};
use super::transaction::{Ended, TxOptions};
use super::{Broker, BrokerOptions, Outgoing, SendStatus};
use crate::storage::faultfs::FaultFs;
use crate::storage::{Flush, Store, StoreOptions};
use crate::time::{now_ms, Clock};

/// A broker over an in-memory store whose clock starts at the wall clock's
/// now (stored times are the wall clock's) and then moves with tokio's.
fn broker(opts: BrokerOptions) -> anyhow::Result<Broker> {
    let store_opts = StoreOptions::new(
        "/data",
        Flush::Async {
            interval: Duration::from_millis(10),
        },
    );
    let store = Arc::new(Store::open(Arc::new(FaultFs::new()), store_opts)?);
    let clock = Clock::tokio_from(now_ms());
    Ok(Broker::new(store, BrokerOptions { clock, ..opts })?)
}

async fn send(b: &Broker, body: &str) -> anyhow::Result<String> {
    let r = b
        .send(Outgoing {
            topic: "orders".into(),
            body: body.as_bytes().to_vec(),
            ..Outgoing::default()
        })
        .await?;
    assert_eq!(r.status, SendStatus::SendOk);
    Ok(r.id.to_string())
}

#[tokio::test(start_paused = true)]
async fn a_retry_comes_due_after_its_delay_on_the_broker_clock() -> anyhow::Result<()> {
    let ten = Duration::from_secs(10);
    let minute = Duration::from_secs(60);
    let b = broker(BrokerOptions {
        retry: RetryPolicy::with_delays(vec![ten, minute], 5),
        ..BrokerOptions::default()
    })?;
    let clock = b.options().clock;
    let origin = send(&b, "pay 7").await?;
    let retry = retry_topic("g");
    let start = clock.now_ms();
    b.send_back("g", &origin, "handler failed").await?;

    // Level 1 (queue 0): due ten seconds after the failure, not a
    // millisecond earlier.
    let (got, next) = b.pull("g", &retry, 0, 0, 32, Duration::ZERO).await?;
    assert!(got.is_empty(), "a retry must not be delivered before its delay");
    assert_eq!(next, 0);
    tokio::time::advance(ten - Duration::from_millis(1)).await;
    let (got, _) = b.pull("g", &retry, 0, 0, 32, Duration::ZERO).await?;
    assert!(got.is_empty(), "still 1 ms early");
    tokio::time::advance(Duration::from_millis(1)).await;
    let (got, next) = b.pull("g", &retry, 0, 0, 32, Duration::ZERO).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(next, 1);
    let first = &got[0];
    assert_eq!(first.id, origin, "a retry keeps its message's id");
    assert_eq!(first.reconsume_times, 1);
    assert_eq!(first.message.body, b"pay 7");
    assert_eq!(
        first.message.properties.get(PROP_DELAY_UNTIL),
        Some(&(start + 10_000).to_string())
    );

    // Failed again: level 2 (queue 1), a minute. A long poll sleeps until
    // it is due (tokio auto-advances the paused clock to that sleep) and
    // returns it then, well before its two-minute wait ends.
    b.send_back("g", &first.record_id, "failed again").await?;
    let failed_at = clock.now_ms();
    let (got, _) = b.pull("g", &retry, 1, 0, 32, 2 * minute).await?;
    assert_eq!(got.len(), 1);
    let second = &got[0];
    assert_eq!((second.id.as_str(), second.reconsume_times), (origin.as_str(), 2));
    let due: i64 = second
        .message
        .properties
        .get(PROP_DELAY_UNTIL)
        .map(|d| d.parse())
        .transpose()?
        .unwrap_or_default();
    assert_eq!(due, failed_at + 60_000);
    let woke = clock.now_ms();
    assert!(due <= woke && woke < failed_at + 120_000, "woke at {woke}, due {due}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_open_transaction_is_checked_back_after_check_after() -> anyhow::Result<()> {
    // An hour, so the half's stored time (the wall clock's, a few real
    // milliseconds after the broker clock started) cannot matter.
    let hour = Duration::from_secs(3600);
    let minute = Duration::from_secs(60);
    let b = broker(BrokerOptions {
        transactions: TxOptions {
            check_after: hour,
            max_checks: 15,
        },
        ..BrokerOptions::default()
    })?;
    let half = b
        .send_half(
            "orders",
            "pg",
            Outgoing {
                body: b"tx 1".to_vec(),
                ..Outgoing::default()
            },
        )
        .await?;
    let id = half.id.to_string();

    tokio::time::advance(hour - minute).await;
    b.check_transactions().await;
    assert!(
        b.poll_checks("pg", Duration::ZERO).await.is_empty(),
        "checked back too early"
    );

    tokio::time::advance(2 * minute).await;
    b.check_transactions().await;
    let checks = b.poll_checks("pg", Duration::ZERO).await;
    assert_eq!(checks.len(), 1);
    assert_eq!((checks[0].id.as_str(), checks[0].check_times), (id.as_str(), 1));
    assert_eq!(checks[0].message.body, b"tx 1");

    // Unanswered: the next check is due an hour after this one.
    tokio::time::advance(hour - minute).await;
    b.check_transactions().await;
    assert!(
        b.poll_checks("pg", Duration::ZERO).await.is_empty(),
        "checked again too early"
    );
    tokio::time::advance(2 * minute).await;
    b.check_transactions().await;
    let checks = b.poll_checks("pg", Duration::ZERO).await;
    assert_eq!(checks.len(), 1);
    assert_eq!((checks[0].id.as_str(), checks[0].check_times), (id.as_str(), 2));

    // The producer answers: committed, and no more checks.
    let ended = b.end_transaction("pg", &id, TransactionState::Commit, true).await?;
    assert!(matches!(ended, Ended::Committed(_)), "{ended:?}");
    tokio::time::advance(2 * hour).await;
    b.check_transactions().await;
    assert!(b.poll_checks("pg", Duration::ZERO).await.is_empty());
    assert_eq!(b.transactions().open_count(), 0);
    Ok(())
}
