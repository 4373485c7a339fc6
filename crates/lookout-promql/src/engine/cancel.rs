//! Stopping a query from outside: its own deadline and a cancellation flag.
//!
//! The evaluator runs on a thread of its own, so the caller cannot interrupt it; instead it
//! polls a [`QueryControl`] in every loop whose cost grows with the input (steps, series,
//! samples, subquery steps). A caller that stops waiting — the API's `timeout=` fired, the
//! HTTP client went away, a rule group was stopped — sets the flag (directly, or by
//! dropping the guard of [`QueryControl::cancel_on_drop`]) and the evaluation ends within
//! one iteration of the loop it is in.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::QueryError;

/// One query's deadline and cancellation flag; clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct QueryControl {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
}

impl QueryControl {
    /// A control without deadline (the engine's `timeout` still applies).
    pub fn new() -> QueryControl {
        QueryControl::default()
    }

    /// A control that also stops the query at `deadline`.
    pub fn with_deadline(deadline: Instant) -> QueryControl {
        QueryControl {
            deadline: Some(deadline),
            cancelled: Arc::default(),
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Asks the query to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// A guard that cancels the query when dropped: held by the task waiting for the
    /// result, so that a waiter that goes away (a timeout, a disconnected client, a stopped
    /// rule group) stops the evaluation too.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// Cancels its query when dropped; see [`QueryControl::cancel_on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop(Option<QueryControl>);

impl CancelOnDrop {
    /// Lets the query run on after the guard is dropped.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.cancel();
        }
    }
}

/// How many polls share one look at the clock (the flag is read on every poll).
const CLOCK_EVERY: u32 = 64;

/// The evaluator's side: the earlier of the engine's and the query's deadline, the flag,
/// and a counter spacing out clock reads.
#[derive(Debug)]
pub(crate) struct Stop {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    polls: Cell<u32>,
}

impl Stop {
    /// Combines the engine's timeout (from now) with `control`.
    pub(crate) fn new(timeout: Option<std::time::Duration>, control: &QueryControl) -> Stop {
        let own = timeout.and_then(|t| Instant::now().checked_add(t));
        let deadline = match (own, control.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Stop {
            deadline,
            cancelled: control.cancelled.clone(),
            polls: Cell::new(0),
        }
    }

    /// The same deadline and flag for another thread working on the same query.
    pub(crate) fn fork(&self) -> Stop {
        Stop {
            deadline: self.deadline,
            cancelled: self.cancelled.clone(),
            polls: Cell::new(0),
        }
    }

    /// Fails once the query is cancelled or past its deadline. Cheap enough for inner
    /// loops: an atomic load, and a clock read every [`CLOCK_EVERY`] calls.
    pub(crate) fn check(&self) -> Result<(), QueryError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::eval(
                "query was canceled in expression evaluation",
            ));
        }
        let n = self.polls.get().wrapping_add(1);
        self.polls.set(n);
        if n % CLOCK_EVERY == 0 {
            self.check_clock()?;
        }
        Ok(())
    }

    /// Like [`check`](Self::check), reading the clock every time (for coarse loops: one
    /// call per step).
    pub(crate) fn check_now(&self) -> Result<(), QueryError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::eval(
                "query was canceled in expression evaluation",
            ));
        }
        self.check_clock()
    }

    fn check_clock(&self) -> Result<(), QueryError> {
        match self.deadline {
            Some(d) if Instant::now() > d => {
                Err(QueryError::eval("query timed out in expression evaluation"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_dropped_guard_cancels_and_the_earlier_deadline_wins() {
        let c = QueryControl::new();
        let stop = Stop::new(None, &c);
        assert!(stop.check().is_ok());
        drop(c.cancel_on_drop());
        assert!(stop.check().unwrap_err().to_string().contains("canceled"));

        let c = QueryControl::with_deadline(Instant::now());
        let stop = Stop::new(Some(Duration::from_secs(3600)), &c);
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            stop.check_now()
                .unwrap_err()
                .to_string()
                .contains("timed out")
        );
        let disarmed = QueryControl::new();
        disarmed.cancel_on_drop().disarm();
        assert!(!disarmed.is_cancelled());
    }
}
