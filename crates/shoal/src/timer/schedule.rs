//! When a timer fires: [`Schedule`] (every N, a minute/hour/day boundary plus an offset, or a
//! cron expression with seconds), its string form, and the next firing time in a [`Zone`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{
    DateTime, Local, MappedLocalTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};

/// When a timer fires. Parse one from the grammar in the [module docs](super), or build one
/// directly and check it with [`Schedule::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every period, in phase with the moment the timers started: start + N, start + 2N, ...
    Every(Duration),
    /// At each `unit` boundary of the zone's clock plus `offset`: `Unit::Hour` with a 5 minute
    /// offset fires at 00:05, 01:05, ... The offset is shorter than the unit.
    Boundary {
        /// The boundary: the start of each minute, hour or day.
        unit: Unit,
        /// How long after the boundary the timer fires.
        offset: Duration,
    },
    /// A cron expression with a seconds field.
    Cron(CronExpr),
}

/// The boundaries of a [`Schedule::Boundary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// The start of each minute (second 0).
    Minute,
    /// The start of each hour (minute 0).
    Hour,
    /// The start of each day (midnight).
    Day,
}

/// The clock boundaries and cron expressions are read in. Every periods do not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// Coordinated universal time.
    Utc,
    /// The process's local time zone (`TZ`, else the system's), as cron does.
    #[default]
    Local,
}

/// A parsed cron expression: 6 fields `SEC MIN HOUR DOM MON DOW`, or 5 with seconds 0.
///
/// Two expressions are equal when their text is (whitespace between fields aside), since
/// `croner` offers no structural comparison.
#[derive(Debug, Clone)]
pub struct CronExpr {
    /// The expression as written, fields separated by single spaces; what `Display` shows.
    text: String,
    /// Shared: croner's parsed form is large, and schedules are cloned into stats and timers.
    cron: Arc<croner::Cron>,
    /// Whether the hour field is a wildcard (`*`, `*/N`, `@hourly`). Such expressions follow
    /// the clock through a repeated hour (when clocks go back), as Vixie cron does; the others
    /// fire once at the first occurrence of their time.
    hourly: bool,
}

/// Why a schedule string (or a schedule built by hand) was rejected; each names the input.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The string matches none of the forms.
    #[error("`{input}`: expected `every DURATION`, `minute|hour|day[+OFFSET]` or `cron: EXPR`")]
    Unrecognized {
        /// The string as given.
        input: String,
    },
    /// A period or offset that humantime cannot read.
    #[error("`{input}`: invalid duration `{duration}`: {source}")]
    Duration {
        /// The string as given.
        input: String,
        /// The part that should have been a duration.
        duration: String,
        /// What humantime found wrong.
        source: humantime::DurationError,
    },
    /// `every 0s`: a timer would never stop firing.
    #[error("`{input}`: the period must be more than zero")]
    ZeroPeriod {
        /// The string as given.
        input: String,
    },
    /// `hour+1h`: the offset would move the firing into the next unit.
    #[error("`{input}`: the offset must be shorter than one {unit}")]
    OffsetTooLong {
        /// The string as given.
        input: String,
        /// The unit the offset is counted in.
        unit: Unit,
    },
    /// `croner` rejected the expression.
    #[error("`{input}`: invalid cron expression: {source}")]
    Cron {
        /// The string as given.
        input: String,
        /// What croner found wrong.
        source: croner::errors::CronError,
    },
}

impl Schedule {
    /// A cron schedule from an expression without the `cron:` prefix.
    pub fn cron(expr: &str) -> Result<Schedule, ScheduleError> {
        CronExpr::parse(expr).map(Schedule::Cron)
    }

    /// The first firing time strictly after `now`, evaluated in `zone`.
    ///
    /// For [`Schedule::Every`] this is `now` + the period (the runner keeps the phase of its own
    /// start instead). `None` when the schedule never fires again, or is invalid (a zero period,
    /// an offset as long as its unit).
    ///
    /// Local times that occur twice (clocks going back) fire at their first occurrence; minute
    /// and hour boundaries, and cron expressions whose hour field is a wildcard, fire at both.
    /// Local times that do not exist (clocks going forward) fire later by the length of the gap
    /// (02:30 becomes 03:30).
    pub fn next_after(&self, now: DateTime<Utc>, zone: Zone) -> Option<DateTime<Utc>> {
        match zone {
            Zone::Utc => self.next_in(now, &Utc),
            Zone::Local => self.next_in(now, &Local),
        }
    }

    /// Checks what the grammar checks, for schedules built by hand.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Every(period) if period.is_zero() => Err(ScheduleError::ZeroPeriod {
                input: self.to_string(),
            }),
            Schedule::Boundary { unit, offset } if *offset >= unit.duration() => {
                Err(ScheduleError::OffsetTooLong {
                    input: self.to_string(),
                    unit: *unit,
                })
            }
            _ => Ok(()),
        }
    }

    /// `next_after` in any time zone, so that tests can use zones with daylight saving time.
    pub(super) fn next_in<Tz: TimeZone>(
        &self,
        now: DateTime<Utc>,
        tz: &Tz,
    ) -> Option<DateTime<Utc>> {
        if self.validate().is_err() {
            return None;
        }
        let both = match self {
            Schedule::Every(period) => {
                return now.checked_add_signed(TimeDelta::from_std(*period).ok()?)
            }
            Schedule::Boundary { unit, .. } => *unit != Unit::Day,
            Schedule::Cron(expr) => expr.hourly,
        };
        // Walk the local (naive) times the schedule names, from a little before now's local
        // time, and keep the earliest instant after now that they denote. Local order is not
        // instant order when clocks go back: the repeated hour's second pass has local times
        // earlier than those just before the change.
        let window = Window::around(now, tz);
        let mut max_offset = window.max_offset;
        let mut candidate = self.first_local(window.start)?;
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_CANDIDATES {
            if let Some(best) = best {
                // Later local times denote instants after `best` (see `Window::max_offset`).
                if candidate >= best.naive_utc() + max_offset {
                    break;
                }
            }
            for instant in instants(tz, candidate, both).into_iter().flatten() {
                if instant > now && best.is_none_or(|best| instant < best) {
                    best = Some(instant);
                    // `best` may lie past a clock change that `Window::around` did not see.
                    max_offset = max_offset.max(offset_at(tz, instant.naive_utc()));
                }
            }
            match self.local_after(candidate) {
                Some(next) => candidate = next,
                None => break,
            }
        }
        best
    }

    /// A local time the schedule names, no later than the first one at or after `local`.
    fn first_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Schedule::Every(_) => None,
            Schedule::Boundary { unit, offset } => {
                Some(unit.start_of(local)? + TimeDelta::from_std(*offset).ok()?)
            }
            Schedule::Cron(expr) => cron_next(&expr.cron, local.with_nanosecond(0)?, true),
        }
    }

    /// The local time the schedule names after `local`, itself one it names.
    fn local_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Schedule::Every(_) => None,
            Schedule::Boundary { unit, .. } => Some(local + unit.delta()),
            Schedule::Cron(expr) => cron_next(&expr.cron, local, false),
        }
    }
}

/// How many local times `next_in` tries before giving up. Only a repeated hour needs more
/// than two: a per-second cron expression walks at most the hour's 3600 seconds (7200 in the
/// rare zones that go back two hours).
const MAX_CANDIDATES: usize = 10_000;

/// The local times worth looking at for instants after `now`.
struct Window {
    /// Now's local time, moved back when the zone's offset drops in the next hours (the hour
    /// that repeats then has local times before now's).
    start: NaiveDateTime,
    /// The largest offset in force around now: an instant `t` has local time `t + offset`, so
    /// no local time at or after `best + max_offset` denotes an instant before `best`.
    max_offset: TimeDelta,
}

impl Window {
    fn around<Tz: TimeZone>(now: DateTime<Utc>, tz: &Tz) -> Window {
        let offset_now = offset_at(tz, now.naive_utc());
        // Clock changes move the offset by two hours at most.
        let offset_later = offset_at(tz, now.naive_utc() + TimeDelta::hours(3));
        Window {
            start: now.naive_utc() + offset_now.min(offset_later),
            max_offset: offset_now.max(offset_later),
        }
    }
}

/// The zone's offset from UTC at the instant `utc`.
fn offset_at<Tz: TimeZone>(tz: &Tz, utc: NaiveDateTime) -> TimeDelta {
    TimeDelta::seconds(
        tz.offset_from_utc_datetime(&utc)
            .fix()
            .local_minus_utc()
            .into(),
    )
}

/// The instants a local time denotes: one; two in a repeated hour (the second only if `both`);
/// and for a time in a gap, the instant the time names in the offset before the gap.
fn instants<Tz: TimeZone>(tz: &Tz, local: NaiveDateTime, both: bool) -> [Option<DateTime<Utc>>; 2] {
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) => [Some(t.with_timezone(&Utc)), None],
        MappedLocalTime::Ambiguous(first, second) => [
            Some(first.with_timezone(&Utc)),
            both.then(|| second.with_timezone(&Utc)),
        ],
        MappedLocalTime::None => {
            let before = offset_at(tz, local - TimeDelta::days(1));
            [Some(Utc.from_utc_datetime(&(local - before))), None]
        }
    }
}

/// The next local time (whole seconds) matching `cron` after `local`, or at it if `inclusive`.
/// croner runs on UTC here so that it sees plain local times; the zone is applied after.
fn cron_next(cron: &croner::Cron, local: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
    let start = Utc.from_utc_datetime(&local);
    let next = cron.find_next_occurrence(&start, inclusive).ok()?;
    Some(next.naive_utc())
}

impl Unit {
    /// How long the unit is.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        })
    }

    fn delta(self) -> TimeDelta {
        match self {
            Unit::Minute => TimeDelta::minutes(1),
            Unit::Hour => TimeDelta::hours(1),
            Unit::Day => TimeDelta::days(1),
        }
    }

    /// The start of the minute, hour or day `local` falls in.
    fn start_of(self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let minute = local.with_nanosecond(0)?.with_second(0)?;
        match self {
            Unit::Minute => Some(minute),
            Unit::Hour => minute.with_minute(0),
            Unit::Day => Some(local.date().and_hms_opt(0, 0, 0)?),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl CronExpr {
    /// Parses `SEC MIN HOUR DOM MON DOW` or `MIN HOUR DOM MON DOW` (croner's syntax: `*/N`,
    /// ranges, lists, names, `L`, `#`, `@daily` and friends; day of month and day of week are
    /// OR-ed when both are restricted, as in Vixie cron).
    pub fn parse(expr: &str) -> Result<CronExpr, ScheduleError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let text = fields.join(" ");
        let cron = croner::Cron::new(&text)
            .with_seconds_optional()
            .parse()
            .map_err(|source| ScheduleError::Cron {
                input: format!("cron: {text}").trim_end().to_owned(),
                source,
            })?;
        let hourly = match fields.as_slice() {
            [nickname] => nickname.eq_ignore_ascii_case("@hourly"),
            [_, _, hour, _, _, _] | [_, hour, _, _, _] => hour.starts_with(['*', '?']),
            _ => false,
        };
        Ok(CronExpr {
            text,
            cron: Arc::new(cron),
            hourly,
        })
    }

    /// The expression as written (fields separated by single spaces).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &CronExpr) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronExpr {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<CronExpr, ScheduleError> {
        CronExpr::parse(s)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Schedule, ScheduleError> {
        let input = s.trim();
        let unrecognized = || ScheduleError::Unrecognized {
            input: input.to_owned(),
        };
        let duration = |text: &str| {
            humantime::parse_duration(text).map_err(|source| ScheduleError::Duration {
                input: input.to_owned(),
                duration: text.to_owned(),
                source,
            })
        };

        if let Some(expr) = strip_keyword(input, "cron:") {
            return Schedule::cron(expr);
        }
        if let Some(period) = strip_keyword(input, "every") {
            // `every` must be a word of its own: `everyday` is not `every day`.
            if !input[5..].starts_with(char::is_whitespace) || period.trim().is_empty() {
                return Err(unrecognized());
            }
            let schedule = Schedule::Every(duration(period.trim())?);
            schedule.validate().map_err(|_| ScheduleError::ZeroPeriod {
                input: input.to_owned(),
            })?;
            return Ok(schedule);
        }

        let (unit, offset) = match input.split_once('+') {
            Some((unit, offset)) => (unit.trim(), Some(offset.trim())),
            None => (input, None),
        };
        let unit = [Unit::Minute, Unit::Hour, Unit::Day]
            .into_iter()
            .find(|u| unit.eq_ignore_ascii_case(u.name()))
            .ok_or_else(unrecognized)?;
        let offset = offset.map(duration).transpose()?.unwrap_or_default();
        if offset >= unit.duration() {
            return Err(ScheduleError::OffsetTooLong {
                input: input.to_owned(),
                unit,
            });
        }
        Ok(Schedule::Boundary { unit, offset })
    }
}

/// `input` after `keyword` (matched ignoring ASCII case), if it starts with it.
fn strip_keyword<'a>(input: &'a str, keyword: &str) -> Option<&'a str> {
    let head = input.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &input[keyword.len()..])
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(period) => write!(f, "every {}", humantime::format_duration(*period)),
            Schedule::Boundary { unit, offset } if offset.is_zero() => write!(f, "{unit}"),
            Schedule::Boundary { unit, offset } => {
                write!(f, "{unit}+{}", humantime::format_duration(*offset))
            }
            Schedule::Cron(expr) => write!(f, "cron: {expr}"),
        }
    }
}

/// Schedules travel through configuration as their string form.
impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Schedule, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, NaiveDate};

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn boundary(unit: Unit, offset: Duration) -> Schedule {
        Schedule::Boundary { unit, offset }
    }

    #[test]
    fn parses_good_strings() {
        let cron = |expr: &str| Schedule::cron(expr).unwrap();
        let cases = [
            ("every 30s", Schedule::Every(secs(30)), "every 30s"),
            ("every 1h 30m", Schedule::Every(secs(5400)), "every 1h 30m"),
            ("every 1h30m", Schedule::Every(secs(5400)), "every 1h 30m"),
            (
                "every 500ms",
                Schedule::Every(Duration::from_millis(500)),
                "every 500ms",
            ),
            ("  EVERY 2min ", Schedule::Every(secs(120)), "every 2m"),
            ("every 1day", Schedule::Every(secs(86_400)), "every 1day"),
            ("minute", boundary(Unit::Minute, Duration::ZERO), "minute"),
            ("hour+0s", boundary(Unit::Hour, Duration::ZERO), "hour"),
            ("Hour+5m", boundary(Unit::Hour, secs(300)), "hour+5m"),
            ("minute+15s", boundary(Unit::Minute, secs(15)), "minute+15s"),
            ("day+2h30m", boundary(Unit::Day, secs(9000)), "day+2h 30m"),
            (
                "day + 2h 30m",
                boundary(Unit::Day, secs(9000)),
                "day+2h 30m",
            ),
            (
                "day+23h 59m 59s",
                boundary(Unit::Day, secs(86_399)),
                "day+23h 59m 59s",
            ),
            (
                "cron: */20 * * * * *",
                cron("*/20 * * * * *"),
                "cron: */20 * * * * *",
            ),
            ("cron:0 3 * * *", cron("0 3 * * *"), "cron: 0 3 * * *"),
            (
                "CRON:  0  30 2 * * MON-FRI ",
                cron("0 30 2 * * MON-FRI"),
                "cron: 0 30 2 * * MON-FRI",
            ),
            ("cron: @daily", cron("@daily"), "cron: @daily"),
        ];
        for (input, expected, display) in cases {
            let parsed: Schedule = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parsed, expected, "{input:?}");
            assert_eq!(parsed.to_string(), display, "{input:?}");
            let again: Schedule = display.parse().unwrap();
            assert_eq!(again, parsed, "{display:?} does not round-trip");
        }
    }

    #[test]
    fn rejects_bad_strings() {
        let expected_forms =
            "expected `every DURATION`, `minute|hour|day[+OFFSET]` or `cron: EXPR`";
        let cases = [
            (
                "every 0s",
                "`every 0s`: the period must be more than zero".to_owned(),
            ),
            (
                "every 0",
                "`every 0`: the period must be more than zero".to_owned(),
            ),
            ("weekly", format!("`weekly`: {expected_forms}")),
            ("", format!("``: {expected_forms}")),
            ("every", format!("`every`: {expected_forms}")),
            ("everyday", format!("`everyday`: {expected_forms}")),
            ("hour-5m", format!("`hour-5m`: {expected_forms}")),
            (
                "every 5 parsecs",
                "`every 5 parsecs`: invalid duration `5 parsecs`: ".to_owned(),
            ),
            ("hour+", "`hour+`: invalid duration ``: ".to_owned()),
            (
                "hour+1h",
                "`hour+1h`: the offset must be shorter than one hour".to_owned(),
            ),
            (
                "minute+60s",
                "`minute+60s`: the offset must be shorter than one minute".to_owned(),
            ),
            (
                "day+24h",
                "`day+24h`: the offset must be shorter than one day".to_owned(),
            ),
            (
                "cron: * * *",
                "`cron: * * *`: invalid cron expression: ".to_owned(),
            ),
            (
                "cron: 61 * * * * *",
                "`cron: 61 * * * * *`: invalid cron expression: ".to_owned(),
            ),
            ("cron:", "`cron:`: invalid cron expression: ".to_owned()),
        ];
        for (input, message) in cases {
            let error = input.parse::<Schedule>().unwrap_err().to_string();
            assert!(
                error.starts_with(&message),
                "{input:?}: got {error:?}, want it to start with {message:?}"
            );
        }
    }

    #[test]
    fn validates_schedules_built_by_hand() {
        assert!(Schedule::Every(Duration::ZERO).validate().is_err());
        assert!(boundary(Unit::Minute, secs(60)).validate().is_err());
        assert!(boundary(Unit::Minute, secs(59)).validate().is_ok());
        assert_eq!(
            Schedule::Every(Duration::ZERO).next_after(utc("2024-05-01T12:00:00Z"), Zone::Utc),
            None
        );
    }

    /// `(schedule, now, expected next)`, all in UTC.
    fn check_next(cases: &[(&str, &str, &str)]) {
        for (schedule, now, expected) in cases {
            let parsed: Schedule = schedule.parse().unwrap();
            let next = parsed.next_after(utc(now), Zone::Utc);
            assert_eq!(next, Some(utc(expected)), "{schedule:?} after {now}");
        }
    }

    #[test]
    fn next_after_every() {
        check_next(&[
            ("every 30s", "2024-05-01T12:00:00Z", "2024-05-01T12:00:30Z"),
            (
                "every 1h 30m",
                "2024-05-01T23:00:00Z",
                "2024-05-02T00:30:00Z",
            ),
            (
                "every 500ms",
                "2024-05-01T12:00:00.250Z",
                "2024-05-01T12:00:00.750Z",
            ),
        ]);
    }

    #[test]
    fn next_after_boundaries() {
        check_next(&[
            ("minute", "2024-05-01T12:00:00Z", "2024-05-01T12:01:00Z"),
            ("minute", "2024-05-01T12:00:59.999Z", "2024-05-01T12:01:00Z"),
            ("minute+15s", "2024-05-01T12:00:10Z", "2024-05-01T12:00:15Z"),
            ("minute+15s", "2024-05-01T12:00:15Z", "2024-05-01T12:01:15Z"),
            (
                "minute+15s",
                "2024-05-01T12:00:14.999Z",
                "2024-05-01T12:00:15Z",
            ),
            ("hour", "2024-05-01T12:30:00Z", "2024-05-01T13:00:00Z"),
            ("hour+5m", "2024-05-01T12:04:59Z", "2024-05-01T12:05:00Z"),
            ("hour+5m", "2024-05-01T12:05:00Z", "2024-05-01T13:05:00Z"),
            ("hour+5m", "2024-05-01T23:10:00Z", "2024-05-02T00:05:00Z"),
            ("day", "2024-05-01T23:59:59Z", "2024-05-02T00:00:00Z"),
            ("day", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"),
            ("day+2h30m", "2024-05-01T01:00:00Z", "2024-05-01T02:30:00Z"),
            ("day+2h30m", "2024-05-01T02:30:00Z", "2024-05-02T02:30:00Z"),
            ("day+2h30m", "2024-02-28T03:00:00Z", "2024-02-29T02:30:00Z"),
            ("day+2h30m", "2024-12-31T23:59:00Z", "2025-01-01T02:30:00Z"),
        ]);
    }

    #[test]
    fn next_after_cron() {
        check_next(&[
            (
                "cron: */20 * * * * *",
                "2024-05-01T12:00:05Z",
                "2024-05-01T12:00:20Z",
            ),
            (
                "cron: */20 * * * * *",
                "2024-05-01T12:00:20Z",
                "2024-05-01T12:00:40Z",
            ),
            (
                "cron: */20 * * * * *",
                "2024-05-01T12:00:19.500Z",
                "2024-05-01T12:00:20Z",
            ),
            (
                "cron: */20 * * * * *",
                "2024-05-01T12:00:20.001Z",
                "2024-05-01T12:00:40Z",
            ),
            (
                "cron: */20 * * * * *",
                "2024-05-01T12:59:50Z",
                "2024-05-01T13:00:00Z",
            ),
            (
                "cron: 30 2 * * *",
                "2024-05-01T02:29:59Z",
                "2024-05-01T02:30:00Z",
            ),
            (
                "cron: 30 2 * * *",
                "2024-05-01T02:30:00Z",
                "2024-05-02T02:30:00Z",
            ),
            (
                "cron: 15 0 0 1 1 *",
                "2024-06-01T00:00:00Z",
                "2025-01-01T00:00:15Z",
            ),
            // 2024-05-01 is a Wednesday.
            (
                "cron: 0 0 9 * * MON",
                "2024-05-01T10:00:00Z",
                "2024-05-06T09:00:00Z",
            ),
            (
                "cron: 0 0 0 29 2 *",
                "2025-01-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
        ]);
    }

    #[test]
    fn boundaries_follow_the_zone() {
        // India is UTC+05:30, so its hours start at half past UTC hours.
        let india = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        let hour: Schedule = "hour".parse().unwrap();
        assert_eq!(
            hour.next_in(utc("2024-05-01T12:00:00Z"), &india),
            Some(utc("2024-05-01T12:30:00Z"))
        );
        let day: Schedule = "day+1h".parse().unwrap();
        assert_eq!(
            day.next_in(utc("2024-05-01T12:00:00Z"), &india),
            Some(utc("2024-05-01T19:30:00Z"))
        );
    }

    /// Central European time in 2024: UTC+1, and UTC+2 from 31 March 01:00 UTC (local 02:00
    /// jumps to 03:00) to 27 October 01:00 UTC (local 03:00 goes back to 02:00).
    #[derive(Debug, Clone, Copy)]
    struct Cet2024;

    impl Cet2024 {
        fn offset_at(utc: &NaiveDateTime) -> FixedOffset {
            let spring = NaiveDate::from_ymd_opt(2024, 3, 31)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            let fall = NaiveDate::from_ymd_opt(2024, 10, 27)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            let hours = if (spring..fall).contains(utc) { 2 } else { 1 };
            FixedOffset::east_opt(hours * 3600).unwrap()
        }
    }

    impl TimeZone for Cet2024 {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Cet2024 {
            Cet2024
        }

        fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_local_datetime(
            &self,
            local: &NaiveDateTime,
        ) -> MappedLocalTime<FixedOffset> {
            // The summer offset first: it gives the earlier instant.
            let valid: Vec<FixedOffset> = [2, 1]
                .into_iter()
                .map(|h| FixedOffset::east_opt(h * 3600).unwrap())
                .filter(|off| {
                    Cet2024::offset_at(&(*local - TimeDelta::seconds(off.local_minus_utc().into())))
                        == *off
                })
                .collect();
            match valid[..] {
                [] => MappedLocalTime::None,
                [one] => MappedLocalTime::Single(one),
                [first, second] => MappedLocalTime::Ambiguous(first, second),
                _ => unreachable!(),
            }
        }

        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            Cet2024::offset_at(&utc.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            Cet2024::offset_at(utc)
        }
    }

    /// Follows `schedule` from `start` for `count` firings in [`Cet2024`].
    fn firings(schedule: &str, start: &str, count: usize) -> Vec<DateTime<Utc>> {
        let schedule: Schedule = schedule.parse().unwrap();
        let mut now = utc(start);
        let mut out = Vec::new();
        for _ in 0..count {
            now = schedule.next_in(now, &Cet2024).unwrap();
            out.push(now);
        }
        out
    }

    fn utcs(texts: &[&str]) -> Vec<DateTime<Utc>> {
        texts.iter().map(|t| utc(t)).collect()
    }

    #[test]
    fn clocks_going_forward() {
        // Local 02:00 does not exist on 31 March; 02:00 and 03:00 local both name 01:00 UTC,
        // which fires once.
        assert_eq!(
            firings("hour", "2024-03-30T23:30:00Z", 3),
            utcs(&[
                "2024-03-31T00:00:00Z",
                "2024-03-31T01:00:00Z",
                "2024-03-31T02:00:00Z"
            ])
        );
        // 02:30 local becomes 03:30 CEST (01:30 UTC); the next day is back to 02:30 CEST.
        assert_eq!(
            firings("day+2h30m", "2024-03-30T12:00:00Z", 2),
            utcs(&["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"])
        );
        assert_eq!(
            firings("cron: 0 30 2 * * *", "2024-03-30T12:00:00Z", 2),
            utcs(&["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"])
        );
    }

    #[test]
    fn clocks_going_back() {
        // 02:00 to 03:00 local happens twice on 27 October (00:00-01:00 and 01:00-02:00 UTC).
        // Hourly schedules keep firing every hour through it.
        assert_eq!(
            firings("hour+30m", "2024-10-26T23:45:00Z", 4),
            utcs(&[
                "2024-10-27T00:30:00Z",
                "2024-10-27T01:30:00Z",
                "2024-10-27T02:30:00Z",
                "2024-10-27T03:30:00Z",
            ])
        );
        assert_eq!(
            firings("cron: 0 */30 * * * *", "2024-10-26T23:45:00Z", 5),
            utcs(&[
                "2024-10-27T00:00:00Z",
                "2024-10-27T00:30:00Z",
                "2024-10-27T01:00:00Z",
                "2024-10-27T01:30:00Z",
                "2024-10-27T02:00:00Z",
            ])
        );
        // A daily time fires once, at its first occurrence.
        assert_eq!(
            firings("day+2h30m", "2024-10-26T12:00:00Z", 2),
            utcs(&["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"])
        );
        assert_eq!(
            firings("cron: 0 30 2 * * *", "2024-10-26T12:00:00Z", 2),
            utcs(&["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"])
        );
        // Starting inside the second pass of the hour: a fixed time already had its turn.
        assert_eq!(
            firings("cron: 0 45 2 * * *", "2024-10-27T01:10:00Z", 1),
            utcs(&["2024-10-28T01:45:00Z"])
        );
    }
}
