//! Client-side pacing of Cognito calls: one limiter per region and per quota category, per
//! function instance, so that instances × rate stays inside the account's quota.
//!
//! Each limiter hands out start times spaced `SPACING / rate` apart, in the order asked (no
//! bursts). `SPACING` is 5% over a second: the calls reach Cognito a little after their start,
//! by a time that varies (scheduling, signing, the network), and the slack absorbs up to 50 ms of
//! that variation, so that in any one-second window Cognito sees at most `rate` calls. Saturated,
//! a limiter runs at 95% of its rate. A caller whose turn would come after
//! its latest start time gets no turn (and reserves nothing): the record is RETRY `deadline`
//! rather than timing out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Cognito's quota categories, as its quota page names them, as far as this function calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// `UserRead` (120/s by default): `AdminGetUser`.
    UserRead,
    /// `UserResourceRead` (50/s by default): `AdminListGroupsForUser`.
    UserResourceRead,
    /// `UserAccountRecovery` (30/s by default): `AdminResetUserPassword`.
    UserAccountRecovery,
}

/// The turn would come too late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no turn within the time left: the rate limit's queue is longer than the deadline")]
pub struct TooLate;

/// The spacing of `rate` calls: a second plus the slack for timing variation.
const SPACING: Duration = Duration::from_millis(1050);

/// The longest spacing: one call a day.
const SLOWEST: Duration = Duration::from_secs(86_400);

/// Start times spaced `interval` apart.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter of `per_second` calls a second. The configuration admits rates from 0.001;
    /// anything slower (or not a positive number) is one call a day, never a panic.
    pub fn new(per_second: f64) -> RateLimiter {
        let interval = Duration::try_from_secs_f64(SPACING.as_secs_f64() / per_second)
            .ok()
            .filter(|_| per_second > 0.0)
            .map_or(SLOWEST, |interval| interval.min(SLOWEST));
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this call's turn, or says at once that it would come after `latest`.
    pub async fn acquire(&self, latest: Instant) -> Result<(), TooLate> {
        let start = {
            // A poisoned lock only means another caller panicked while holding it; the slot
            // time inside is still valid.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            if start > latest {
                return Err(TooLate);
            }
            *next = Some(start + self.interval);
            start
        };
        tokio::time::sleep_until(start).await;
        Ok(())
    }
}

/// Per-instance rates; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// `COGNITO_READ_RPS`.
    pub read: Option<f64>,
    /// `COGNITO_RESOURCE_READ_RPS`.
    pub resource_read: Option<f64>,
    /// `COGNITO_RESET_RPS`.
    pub account_recovery: Option<f64>,
}

impl Rates {
    /// No limits at all.
    pub const OFF: Rates = Rates {
        read: None,
        resource_read: None,
        account_recovery: None,
    };
}

/// One limiter per (region, category), created on first use.
#[derive(Debug)]
pub struct Limiters {
    rates: Rates,
    limiters: Mutex<HashMap<(String, Category), Arc<RateLimiter>>>,
}

impl Limiters {
    pub fn new(rates: Rates) -> Limiters {
        Limiters {
            rates,
            limiters: Mutex::default(),
        }
    }

    /// Waits for a turn for a call of `category` in `region`, starting no later than `latest`.
    pub async fn acquire(
        &self,
        region: &str,
        category: Category,
        latest: Instant,
    ) -> Result<(), TooLate> {
        let rate = match category {
            Category::UserRead => self.rates.read,
            Category::UserResourceRead => self.rates.resource_read,
            Category::UserAccountRecovery => self.rates.account_recovery,
        };
        let Some(rate) = rate else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                limiters
                    .entry((region.to_owned(), category))
                    .or_insert_with(|| Arc::new(RateLimiter::new(rate))),
            )
        };
        limiter.acquire(latest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_and_a_late_turn_is_refused_without_reserving() {
        let limiter = RateLimiter::new(10.0);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            limiter.acquire(far).await.unwrap();
        }
        // Three turns: at 0, 105 and 210 ms.
        assert_eq!(Instant::now() - t0, Duration::from_millis(210));
        // The next turn is at 315 ms: refused when the latest start is earlier...
        assert_eq!(
            limiter.acquire(t0 + Duration::from_millis(300)).await,
            Err(TooLate)
        );
        // ...and the refusal took no turn.
        limiter.acquire(far).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_millis(315));
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanishing_or_invalid_rate_is_one_call_a_day_not_a_panic() {
        for rate in [1e-20, 0.0, -1.0, f64::NAN, f64::MIN_POSITIVE] {
            let limiter = RateLimiter::new(rate);
            let t0 = Instant::now();
            limiter.acquire(t0).await.unwrap();
            assert_eq!(
                limiter.acquire(t0 + Duration::from_secs(3600)).await,
                Err(TooLate),
                "{rate}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn regions_and_categories_have_their_own_limiters() {
        let limiters = Limiters::new(Rates {
            read: Some(1.0),
            resource_read: Some(1.0),
            account_recovery: Some(1.0),
        });
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(10);
        limiters
            .acquire("us-west-2", Category::UserRead, far)
            .await
            .unwrap();
        limiters
            .acquire("eu-west-1", Category::UserRead, far)
            .await
            .unwrap();
        limiters
            .acquire("us-west-2", Category::UserAccountRecovery, far)
            .await
            .unwrap();
        assert_eq!(Instant::now(), t0, "no one waited");
        limiters
            .acquire("us-west-2", Category::UserRead, far)
            .await
            .unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_millis(1050));
    }
}
