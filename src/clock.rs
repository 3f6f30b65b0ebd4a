//! Deadlines that cannot overflow.
//!
//! `Instant + Duration` panics when the sum does not fit the clock. Config
//! durations are bounded when the file is loaded (see
//! [`crate::config::duration_limit`]), but a panic in a deadline would strike
//! mid-deploy, possibly after the swap and before history or the retirement
//! of an old slot: so every deadline built from a duration someone could
//! choose is built here, and saturates instead.

use std::time::{Duration, Instant};

/// `wait` from now, or as far as the clock goes.
pub fn after(wait: Duration) -> Instant {
    deadline(Instant::now(), wait)
}

/// `from + wait`, or the farthest instant this side of it that the clock
/// can represent (the largest `from + wait / 2^n` that fits).
pub fn deadline(from: Instant, wait: Duration) -> Instant {
    let mut wait = wait;
    while !wait.is_zero() {
        if let Some(at) = from.checked_add(wait) {
            return at;
        }
        wait /= 2;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_wait_saturates_instead_of_panicking() {
        let now = Instant::now();
        let far = deadline(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(100 * 365 * 24 * 3600));
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
