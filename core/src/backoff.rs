//! `Backoff`: the one schedule of delays between retries (reconnects, database writes), growing
//! from an initial delay by a multiplier up to a cap, with jitter drawn from `rand` so that
//! several processes that failed together do not retry together.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

/// How much of a delay is left to chance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// The delay as scheduled: for a single task whose retries cannot fall in step with
    /// others'.
    None,
    /// Uniform in `[0, delay]` ("full jitter"): the widest spread, the shortest mean wait.
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]` ("equal jitter"): spread, with a floor.
    Equal,
    /// `delay` plus uniform in `[0, fraction · delay)`: never shorter than the schedule.
    /// The fraction is clamped to `[0, 1]`.
    Extra(f64),
}

/// Exponential backoff with a cap: `next()` gives `initial`, then `initial · multiplier`, and
/// so on up to `max`, each jittered; `reset()` starts over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: u32,
    jitter: Jitter,
    /// The delay before jitter that `next()` hands out next.
    current: Duration,
    /// A seeded generator (tests, reproducible schedules); otherwise the thread's own.
    rng: Option<StdRng>,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, without jitter. A `max` below `initial` is raised
    /// to it.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            multiplier: 2,
            jitter: Jitter::None,
            current: initial,
            rng: None,
        }
    }

    /// Grows each delay by `multiplier` (1 keeps it constant; 0 is read as 1).
    pub fn multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier.max(1);
        self
    }

    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = match jitter {
            Jitter::Extra(fraction) if fraction.is_nan() => Jitter::Extra(0.0),
            Jitter::Extra(fraction) => Jitter::Extra(fraction.clamp(0.0, 1.0)),
            other => other,
        };
        self
    }

    /// Draws the jitter from a generator seeded with `seed`, so the schedule is reproducible.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = Some(StdRng::seed_from_u64(seed));
        self
    }

    /// The delay to wait before the next try; the one after it grows by the multiplier.
    #[allow(
        clippy::should_implement_trait,
        reason = "a schedule that never ends: an Iterator's None would be a case to handle for nothing"
    )]
    pub fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = delay
            .checked_mul(self.multiplier)
            .unwrap_or(self.max)
            .min(self.max);
        self.jittered(delay)
    }

    /// Starts the schedule over: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => scaled(delay, self.fraction()),
            Jitter::Equal => {
                let half = delay / 2;
                half.saturating_add(scaled(half, self.fraction()))
            }
            Jitter::Extra(fraction) => {
                delay.saturating_add(scaled(delay, fraction * self.fraction()))
            }
        }
    }

    /// Uniform in `[0, 1]`.
    fn fraction(&mut self) -> f64 {
        match &mut self.rng {
            Some(rng) => rng.gen_range(0.0..=1.0),
            None => rand::thread_rng().gen_range(0.0..=1.0),
        }
    }
}

/// `delay · factor` for a factor in `[0, 1]`, never above `delay`. (`Duration::mul_f64` panics
/// where the float rounds past `Duration::MAX`.)
fn scaled(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor)
        .unwrap_or(delay)
        .min(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn schedule(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| backoff.next()).collect()
    }

    #[test]
    fn grows_by_the_multiplier_up_to_the_cap() {
        let mut doubling = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(
            schedule(&mut doubling, 6),
            [100, 200, 400, 800, 1000, 1000].map(|n| n * MS)
        );
        let mut tripling = Backoff::new(10 * MS, 100 * MS).multiplier(3);
        assert_eq!(
            schedule(&mut tripling, 4),
            [10, 30, 90, 100].map(|n| n * MS)
        );
        let mut constant = Backoff::new(50 * MS, 1000 * MS).multiplier(0);
        assert_eq!(schedule(&mut constant, 3), [50, 50, 50].map(|n| n * MS));
    }

    #[test]
    fn the_cap_holds_where_the_arithmetic_would_overflow() {
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX).multiplier(u32::MAX);
        assert_eq!(huge.next(), Duration::MAX / 2);
        assert_eq!(huge.next(), Duration::MAX);
        assert_eq!(huge.next(), Duration::MAX);
        // Jitter on the largest delays neither panics nor leaves its range.
        let mut equal = Backoff::new(Duration::MAX, Duration::MAX)
            .jitter(Jitter::Equal)
            .seeded(1);
        assert!(equal.next() >= Duration::MAX / 2);
        let mut extra = Backoff::new(Duration::MAX, Duration::MAX)
            .jitter(Jitter::Extra(0.5))
            .seeded(1);
        assert_eq!(extra.next(), Duration::MAX);
        // A cap below the initial delay is raised to it rather than shrinking the first delay.
        let mut inverted = Backoff::new(300 * MS, 100 * MS);
        assert_eq!(schedule(&mut inverted, 2), [300, 300].map(|n| n * MS));
    }

    #[test]
    fn reset_starts_the_schedule_over() {
        let mut backoff = Backoff::new(100 * MS, 5000 * MS);
        schedule(&mut backoff, 5);
        backoff.reset();
        assert_eq!(schedule(&mut backoff, 2), [100, 200].map(|n| n * MS));
    }

    #[test]
    fn jitter_stays_in_its_range_around_the_schedule() {
        let unjittered = schedule(&mut Backoff::new(100 * MS, 3000 * MS), 40);
        for (jitter, low, high) in [
            (Jitter::Full, 0.0, 1.0),
            (Jitter::Equal, 0.5, 1.0),
            (Jitter::Extra(0.25), 1.0, 1.25),
            // Clamped to a whole delay extra.
            (Jitter::Extra(7.0), 1.0, 2.0),
            (Jitter::Extra(f64::NAN), 1.0, 1.0),
        ] {
            let mut backoff = Backoff::new(100 * MS, 3000 * MS).jitter(jitter).seeded(7);
            for (i, base) in unjittered.iter().enumerate() {
                let got = backoff.next();
                assert!(
                    got >= base.mul_f64(low) && got <= base.mul_f64(high),
                    "{jitter:?} step {i}: {got:?} outside [{low}, {high}] x {base:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_and_a_seed_reproduces_it() {
        let draw = |seed| {
            let mut backoff = Backoff::new(MS, MS).jitter(Jitter::Full).seeded(seed);
            schedule(&mut backoff, 20)
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        // Twenty draws of a uniform delay are not all the same.
        let first = draw(3);
        assert!(first.iter().any(|d| *d != first[0]), "{first:?}");
        // The thread's generator is used when no seed is given, and stays in range too.
        let mut unseeded = Backoff::new(MS, MS).jitter(Jitter::Equal);
        for _ in 0..20 {
            let d = unseeded.next();
            assert!(d >= MS / 2 && d <= MS, "{d:?}");
        }
    }
}
