//! Background jobs: sweepers, admission and delivery loops. One shape for
//! all of them, so every service stops its jobs the same way and logs a
//! failed round the same way, then tries again on the next one.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Sleeps for `pause` unless the service stops first; false when stopping.
pub async fn pause(stop: &CancellationToken, pause: Duration) -> bool {
    stop.run_until_cancelled(tokio::time::sleep(pause))
        .await
        .is_some()
}

/// Runs `round` now and then every `interval` until `stop`. A failed round
/// is logged and the job goes on: every job here is driven by the
/// database, so the next round picks up whatever this one left.
pub async fn every<F, Fut, E>(
    job: &'static str,
    interval: Duration,
    stop: CancellationToken,
    round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    every_or_woken(job, interval, Arc::new(Notify::new()), stop, round).await
}

/// As [`every`], and also as soon as `wake` is notified: for work that
/// another part of the service knows has just become due.
pub async fn every_or_woken<F, Fut, E>(
    job: &'static str,
    interval: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    // A zero interval would spin a core; ten milliseconds is below any
    // deadline the services keep.
    let interval = interval.max(Duration::from_millis(10));
    while !stop.is_cancelled() {
        if let Err(error) = round().await {
            tracing::warn!(job, %error, "background job failed; will retry");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failed_round_does_not_end_the_job_and_stop_does() {
        let rounds = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let job = tokio::spawn({
            let (rounds, stop) = (rounds.clone(), stop.clone());
            async move {
                every("test", Duration::from_millis(10), stop, || {
                    let n = rounds.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n % 2 == 0 {
                            Err("odd luck")
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
            }
        });
        while rounds.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), job)
            .await
            .expect("the job stops when told")
            .expect("the job does not panic");
    }
}
