//! The one retry delay of the project: exponential backoff with jitter.
//!
//! Each delay is the previous one doubled, up to a maximum, times a random factor in
//! `[1, 1.25)` so that many clients that failed together do not retry together. The caller
//! sleeps (this module has no runtime): `tokio::time::sleep(backoff.next_delay()).await`.

use std::time::Duration;

/// Delays between the attempts of one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays from `first`, doubled each time up to `max` (both before jitter).
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            next: first,
            max,
        }
    }

    /// The delay before the next attempt (jittered); the one after it is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        jittered(base)
    }

    /// Starts over from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `base` times a random factor in `[1, 1.25)`.
#[must_use]
pub fn jittered(base: Duration) -> Duration {
    // Randomly keyed hashers (the standard library's) are randomness enough for jitter.
    let random = {
        use std::hash::{BuildHasher as _, Hasher as _};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let factor = 1.0 + f64::from((random >> 48) as u16) / 262_144.0;
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_a_quarter_of_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        for base in [100u64, 200, 400, 700, 700] {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(d >= base && d < base.mul_f64(1.25), "{d:?} from {base:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(125));
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let base = Duration::from_secs(10);
        let all: std::collections::BTreeSet<_> = (0..50).map(|_| jittered(base)).collect();
        assert!(all.len() > 40, "{} distinct delays of 50", all.len());
    }
}
