//! Whether an endpoint may take calls: ejection after a failure with a backoff that doubles,
//! and one probe call once the backoff has passed.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Backoff after the first failure.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest backoff, reached after seven consecutive failures.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Consecutive failures of an endpoint, when it may be tried again, and whether its probe is
/// out.
#[derive(Debug, Default, Clone)]
pub(crate) struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    probing: bool,
}

/// How a call was let through to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The endpoint is healthy.
    Normal,
    /// The endpoint is ejected and its backoff has passed: this call is its one probe.
    Probe,
    /// Nothing else was usable, so the call goes here although the endpoint is ejected.
    Forced,
}

impl Health {
    /// Lets a call through when the endpoint is healthy, or as its probe when the backoff has
    /// passed and no other probe is out.
    pub(crate) fn admit(&mut self, now: &Now) -> Option<Admission> {
        match self.retry_at {
            None => Some(Admission::Normal),
            Some(at) if now.get() >= at && !self.probing => {
                self.probing = true;
                Some(Admission::Probe)
            }
            Some(_) => None,
        }
    }

    /// [`Health::admit`] would let a call through.
    pub(crate) fn usable(&self, now: &Now) -> bool {
        self.retry_at
            .is_none_or(|at| now.get() >= at && !self.probing)
    }

    /// Ejects the endpoint until a backoff that doubles with each consecutive failure. Calls
    /// that were already in flight when it was ejected and fail afterwards do not lengthen the
    /// backoff: one outage counts once, however many calls it broke.
    pub(crate) fn failed(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_MIN.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
        let backoff = exp.min(BACKOFF_MAX);
        // Jitter keeps many clients from probing a recovering server in lockstep.
        let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
        self.retry_at = Some(now + backoff + jitter);
        self.probing = false;
    }

    /// The endpoint answered: back in service.
    pub(crate) fn ok(&mut self) {
        *self = Health::default();
    }

    /// The probe ended without telling whether the endpoint works (its caller gave up or its
    /// deadline passed): the next call may probe again.
    pub(crate) fn release_probe(&mut self) {
        self.probing = false;
    }

    /// Consecutive failures, 0 when healthy.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// When the ejected endpoint may be probed; `None` when it is in service.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

/// An endpoint's [`Health`] behind a lock, with whether it is ejected mirrored outside it:
/// while the endpoint is in service (the usual case) a call's admission and its success
/// read one flag and take no lock.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    health: Mutex<Health>,
    /// `health.retry_at.is_some()`, written under the lock by every change.
    ejected: AtomicBool,
}

impl HealthCell {
    pub(crate) fn lock(&self) -> HealthGuard<'_> {
        HealthGuard {
            guard: self.health.lock().unwrap(),
            ejected: &self.ejected,
        }
    }

    /// [`Health::admit`].
    pub(crate) fn admit(&self, now: &Now) -> Option<Admission> {
        if !self.ejected.load(Ordering::Acquire) {
            return Some(Admission::Normal);
        }
        self.lock().admit(now)
    }

    /// [`Health::usable`].
    pub(crate) fn usable(&self, now: &Now) -> bool {
        !self.ejected.load(Ordering::Acquire) || self.lock().usable(now)
    }

    /// [`Health::ok`]. In service, health is already as `ok` leaves it: only an ejected
    /// endpoint (with failures counted, perhaps a probe out) has anything to reset.
    pub(crate) fn ok(&self) {
        if self.ejected.load(Ordering::Acquire) {
            self.lock().ok();
        }
    }
}

/// The locked [`Health`]; when let go, it leaves whether the endpoint is ejected in the flag.
pub(crate) struct HealthGuard<'a> {
    guard: MutexGuard<'a, Health>,
    ejected: &'a AtomicBool,
}

impl Deref for HealthGuard<'_> {
    type Target = Health;

    fn deref(&self) -> &Health {
        &self.guard
    }
}

impl DerefMut for HealthGuard<'_> {
    fn deref_mut(&mut self) -> &mut Health {
        &mut self.guard
    }
}

impl Drop for HealthGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: the guard's own field is let go after this.
        self.ejected
            .store(self.guard.retry_at.is_some(), Ordering::Release);
    }
}

/// The time of one pick, read from the clock only if some endpoint's backoff needs it:
/// while every endpoint is healthy a call reads no clock here.
#[derive(Debug, Default)]
pub(crate) struct Now(std::cell::OnceCell<Instant>);

impl Now {
    /// A reading the caller already has.
    pub(crate) fn at(instant: Instant) -> Self {
        Self(std::cell::OnceCell::from(instant))
    }

    pub(crate) fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}
