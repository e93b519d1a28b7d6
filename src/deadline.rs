//! The moment an invocation must have answered by, from the Lambda context, and the wall clock
//! that goes with it.
//!
//! Time is tokio's ([`tokio::time::Instant`]): the same as the system's monotonic clock in
//! production, and exact and fast under a paused clock in tests. [`wall_now`] is the wall clock
//! read through it, so that leases and cooldowns written to the guard agree with the deadline.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The wall clock and the monotonic clock, read once together.
static ANCHOR: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();

/// The wall-clock time now, as the monotonic clock (tokio's, paused in tests) advances it.
pub fn wall_now() -> SystemTime {
    let (wall, mono) = *ANCHOR.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let now = Instant::now().into_std();
    match now.checked_duration_since(mono) {
        Some(ahead) => wall + ahead,
        None => wall - mono.duration_since(now),
    }
}

/// The longest a Lambda invocation can run.
const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);
/// 2000-01-01T00:00:00Z in epoch milliseconds: no real deadline is earlier.
const EPOCH_MS_2000: u64 = 946_684_800_000;

/// Milliseconds since the epoch (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    since_epoch(t).as_millis() as u64
}

/// Whole seconds since the epoch, rounded down.
pub fn epoch_secs_floor(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

/// Whole seconds since the epoch, rounded up.
pub fn epoch_secs_ceil(t: SystemTime) -> u64 {
    secs_ceil(since_epoch(t))
}

/// A duration in whole seconds, rounded up.
pub fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A `Retry-After` until `until` on the wall clock: whole seconds, rounded up, so that a request
/// sent after it passes; at least 1.
pub fn retry_after_secs(until: SystemTime) -> u64 {
    secs_ceil(until.duration_since(wall_now()).unwrap_or_default()).max(1)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// The moment the invocation must have answered by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline given as epoch milliseconds, seen at `now`.
    ///
    /// Lambda always sends a wall-clock deadline. A value before the year 2000 cannot be one
    /// (cargo-lambda's emulator sends its timeout, e.g. `600000`, instead); it is treated as the
    /// longest possible invocation, so that no record is refused for a deadline that isn't.
    pub fn from_epoch_ms(deadline_ms: u64, now: SystemTime) -> Deadline {
        let remaining = if deadline_ms < EPOCH_MS_2000 {
            tracing::debug!(
                deadline_ms,
                "implausible invocation deadline; assuming 15 minutes"
            );
            MAX_INVOCATION
        } else {
            (UNIX_EPOCH + Duration::from_millis(deadline_ms))
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
        };
        Deadline(Instant::now() + remaining)
    }

    /// Time left until the deadline.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// True when less than `margin` is left.
    pub fn too_close(&self, margin: Duration) -> bool {
        self.remaining() < margin
    }

    /// The deadline on the wall clock (what other invocations can compare against).
    pub fn wall_clock(&self) -> SystemTime {
        wall_now() + self.remaining()
    }

    /// The moment `before` ahead of the deadline (or the deadline, if that is too early to say).
    pub fn less(&self, before: Duration) -> Instant {
        self.0.checked_sub(before).unwrap_or(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_deadline_leaves_the_time_until_it() {
        let now = SystemTime::now();
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let deadline = Deadline::from_epoch_ms(ms + 3_000, now);
        assert!(!deadline.too_close(Duration::from_millis(2_000)));
        assert!(deadline.too_close(Duration::from_millis(3_500)));
        // A passed deadline leaves nothing.
        assert!(Deadline::from_epoch_ms(ms - 1_000, now).too_close(Duration::from_millis(1)));
    }

    #[test]
    fn an_emulator_timeout_in_place_of_a_deadline_is_not_a_1970_deadline() {
        // cargo-lambda's emulator sends `lambda-runtime-deadline-ms: 600000`.
        let deadline = Deadline::from_epoch_ms(600_000, SystemTime::now());
        assert!(!deadline.too_close(Duration::from_secs(600)));
    }
}
