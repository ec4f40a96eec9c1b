//! Waiting for something to become true: the one poll loop every test uses.

use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] and [`Poll`] look unless told otherwise.
pub const EVERY: Duration = Duration::from_millis(20);

/// A poll loop: look every `every` until the check holds or `limit` passes. The check runs at
/// least once, and once more at the limit, so a check that holds by then is not missed.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    limit: Duration,
    every: Duration,
}

impl Poll {
    /// Polls for at most `limit`, every [`EVERY`].
    pub fn within(limit: Duration) -> Self {
        Poll {
            limit,
            every: EVERY,
        }
    }

    /// Looks every `every` instead (a slow peer's HTTP API wants fewer looks; a measured time
    /// wants more).
    pub fn every(self, every: Duration) -> Self {
        Poll { every, ..self }
    }

    /// Runs `check` until it gives `Some`: that value and how long it took; `None` when `limit`
    /// passed first.
    pub async fn value<T>(
        self,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> Option<(T, Duration)> {
        let started = Instant::now();
        loop {
            if let Some(value) = check().await {
                return Some((value, started.elapsed()));
            }
            let elapsed = started.elapsed();
            if elapsed >= self.limit {
                return None;
            }
            tokio::time::sleep(self.every.min(self.limit - elapsed)).await;
        }
    }

    /// Runs `check` until it is true: how long that took; `None` when `limit` passed first.
    pub async fn until(self, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
        self.value(async || check().await.then_some(()))
            .await
            .map(|((), took)| took)
    }
}

/// Polls `check` every [`EVERY`] until it is true (how long that took) or `limit` passes
/// (`None`).
pub async fn eventually(limit: Duration, check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    Poll::within(limit).until(check).await
}

/// Polls `check` every 200 ms (a peer's HTTP API) until it returns `Some` or `limit` passes.
pub async fn poll<T>(limit: Duration, check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    Poll::within(limit)
        .every(Duration::from_millis(200))
        .value(check)
        .await
        .map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_value_and_the_time_or_none_at_the_limit() {
        let mut looks = 0;
        let found = Poll::within(Duration::from_secs(5))
            .every(Duration::from_millis(1))
            .value(async || {
                looks += 1;
                (looks == 3).then_some("third")
            })
            .await;
        assert_eq!(found.map(|(v, _)| v), Some("third"));

        let started = Instant::now();
        let never = eventually(Duration::from_millis(100), async || false).await;
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
