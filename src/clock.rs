//! The clock: the one source of "now" for everything that decides by date or time
//! (schedules, opt-in end dates, retries, reports), injected so that tests can move it.

use std::sync::Arc;

/// The current time; injected so that tests can move it.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(chrono::Utc::now)
}

/// Today (UTC) on `clock`.
pub fn today(clock: &Clock) -> chrono::NaiveDate {
    clock().date_naive()
}
