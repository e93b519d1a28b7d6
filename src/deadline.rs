//! The moment an invocation must have answered by, from the Lambda context.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a Lambda invocation can run.
const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);
/// 2000-01-01T00:00:00Z in epoch milliseconds: no real deadline is earlier.
const EPOCH_MS_2000: u64 = 946_684_800_000;

/// The moment the invocation must have answered by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The invocation's deadline, from the Lambda context.
    pub fn from_context(context: &lambda_runtime::Context) -> Deadline {
        Deadline::from_epoch_ms(context.deadline, SystemTime::now())
    }

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
        SystemTime::now() + self.remaining()
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
