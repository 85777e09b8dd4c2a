//! The server's clock, behind a trait so tests can move time (session expiry, link expiry).

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

use builtiful_core::Timestamp;

/// Tells the time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The real time shifted by an offset that tests advance.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_micros: AtomicI64,
}

impl ShiftedClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        let offset = self.offset_micros.load(Ordering::SeqCst);
        Timestamp::from_micros(Timestamp::now().as_micros().saturating_add(offset))
    }
}
