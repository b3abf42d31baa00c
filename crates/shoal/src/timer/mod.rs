//! Timers: jobs that run every N, at day/hour/minute boundaries with an offset, or on cron
//! expressions with seconds; an app's timers run one at a time unless one asks for its own task.
//!
//! # Schedule strings
//!
//! | Form | Meaning |
//! | ---- | ------- |
//! | `every DURATION` | every period, counted from when the timers start: `every 30s`, `every 1h 30m`, `every 500ms` ([humantime] durations, more than zero) |
//! | `minute`, `hour`, `day` | at the start of each minute, hour or day of the zone's clock |
//! | `UNIT+OFFSET` | that long after each boundary: `minute+15s` (:15 of each minute), `hour+5m` (every hour at :05), `day+2h30m` (02:30 daily); the offset is shorter than the unit |
//! | `cron: EXPR` | `SEC MIN HOUR DOM MON DOW` (6 fields) or `MIN HOUR DOM MON DOW` (5 fields, second 0): `cron: */20 * * * * *`, `cron: 0 30 2 * * MON-FRI`, `cron: 0 3 * * *` |
//!
//! Keywords ignore case and spaces around them; [`Schedule`]'s `Display` gives the canonical
//! form, which parses back to the same schedule. Boundaries and cron expressions are read in
//! the [`Zone`] given to [`Timers::new`] (local time by default, as cron does); see
//! [`Schedule::next_after`] for clock changes.
//!
//! ```
//! use std::time::Duration;
//! use shoal::timer::{Schedule, Unit};
//!
//! let schedule: Schedule = "hour+5m".parse().unwrap();
//! assert_eq!(schedule, Schedule::Boundary { unit: Unit::Hour, offset: Duration::from_secs(300) });
//! assert_eq!("every 90m".parse::<Schedule>().unwrap().to_string(), "every 1h 30m");
//! assert_eq!(
//!     "every 0s".parse::<Schedule>().unwrap_err().to_string(),
//!     "`every 0s`: the period must be more than zero"
//! );
//! ```
//!
//! # Running
//!
//! [`Timers`] holds an app's [`Timer`]s. Those not marked [`Timer::on_own_task`] run in turn on
//! one task, so they never overlap and need no locks between them; a timer never overlaps
//! itself. A run that outlasts its period skips the ticks it covered (counted in
//! [`TimerStats::skipped`]) rather than running them in a burst. A run that fails (returns an
//! error or panics) is logged, counted and reported; it stops neither the app nor other timers.

mod clock;
mod runner;
mod schedule;

pub use clock::{Clock, SystemClock, TestClock};
pub use runner::{OnFailure, Timer, TimerFailure, TimerResult, TimerStats, Timers};
pub use schedule::{CronExpr, Schedule, ScheduleError, Unit, Zone};

#[cfg(test)]
mod tests;
