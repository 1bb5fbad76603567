//! Periodic (cron) entries: when their ticks fall, and the job each tick enqueues. Parsing and
//! time math live here; every worker's scheduler (`maintenance::periodic`) has the store
//! enqueue each tick once across all workers (see `Store::enqueue_tick`).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};
use crate::job::{JobSpec, NewJob, Schedule};

/// A cron expression in a time zone: when the ticks of a periodic entry fall.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// As given (an alias such as `@hourly` stays one).
    expression: String,
    /// IANA name as given; None for UTC.
    timezone_name: Option<String>,
    timezone: Tz,
    cron: Cron,
}

impl CronSchedule {
    /// Parse a standard five-field expression (minute hour day-of-month month day-of-week), an
    /// alias (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`), or six
    /// fields whose first is the second (an extension). `timezone` is an IANA name (default
    /// UTC). An expression that never matches (`0 0 30 2 *`) is refused too.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule> {
        let zone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|err| {
                Error::Configuration(format!(
                    "unknown time zone {name:?} for periodic schedule {expression:?}: {err} \
                     (use an IANA name such as \"Europe/Paris\")"
                ))
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            // Seven fields (a year) is a croner extension nobody asked for: five or six only.
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|err| {
                Error::Configuration(format!(
                    "invalid periodic schedule {expression:?}: {err} (a cron expression has five \
                     fields, minute hour day-of-month month day-of-week, or six with seconds \
                     first; or is an alias such as @hourly)"
                ))
            })?;
        let schedule = CronSchedule {
            expression: expression.to_owned(),
            timezone_name: timezone.map(str::to_owned),
            timezone: zone,
            cron,
        };
        // Only a check that some tick exists: the worker computes ticks from the database clock.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(Error::Configuration(format!(
                "periodic schedule {expression:?} never matches a date"
            )));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA time zone as given; None for UTC.
    pub fn timezone(&self) -> Option<&str> {
        self.timezone_name.as_deref()
    }

    /// The first tick strictly after `time`.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&time.with_timezone(&self.timezone), false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The latest tick at or before `time`.
    pub fn latest_at_or_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&time.with_timezone(&self.timezone), true)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }
}

/// One entry as registered on an App: its name (its identity in the database), its schedule,
/// and the job each tick enqueues, whose options were checked at registration.
#[derive(Debug, Clone)]
pub struct PeriodicEntry {
    pub name: String,
    pub schedule: CronSchedule,
    pub spec: JobSpec,
}

impl PeriodicEntry {
    /// The name an entry gets when none is given: its action and schedule (and time zone),
    /// stable across restarts and deploys as long as these stay the same.
    pub fn default_name(action: &str, schedule: &CronSchedule) -> String {
        match schedule.timezone() {
            Some(zone) => format!("{action} {} {zone}", schedule.expression()),
            None => format!("{action} {}", schedule.expression()),
        }
    }
}

/// An entry and where its ticks stand, for operators.
#[derive(Debug, Clone)]
pub struct PeriodicStatus {
    pub entry: PeriodicEntry,
    /// The latest tick enqueued, or the entry's starting point; None until a worker started it.
    pub last_tick: Option<DateTime<Utc>>,
    /// The next tick after the database's now.
    pub next_tick: Option<DateTime<Utc>>,
}

/// An entry as a worker schedules it: the job checked and filled in with its defaults.
#[derive(Debug, Clone)]
pub struct PeriodicJob {
    pub name: String,
    pub schedule: CronSchedule,
    pub job: NewJob,
}

impl PeriodicJob {
    /// The job of one tick: scheduled at the tick itself, so that the ticks of a blocking queue
    /// keep their order and each job says which tick it is.
    pub fn job_at(&self, tick: DateTime<Utc>) -> NewJob {
        NewJob {
            schedule: Schedule::At(tick),
            ..self.job.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, s).unwrap()
    }

    #[test]
    fn five_fields_tick_on_minutes_and_six_on_seconds() {
        let every_5_min = CronSchedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(every_5_min.next_after(at(12, 3, 7)), Some(at(12, 5, 0)));
        assert_eq!(every_5_min.next_after(at(12, 5, 0)), Some(at(12, 10, 0)));
        assert_eq!(
            every_5_min.latest_at_or_before(at(12, 5, 0)),
            Some(at(12, 5, 0))
        );
        assert_eq!(
            every_5_min.latest_at_or_before(at(12, 9, 59)),
            Some(at(12, 5, 0))
        );
        let every_2_s = CronSchedule::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(every_2_s.next_after(at(12, 0, 1)), Some(at(12, 0, 2)));
        let mid_second = at(12, 0, 3) + chrono::Duration::milliseconds(500);
        assert_eq!(
            every_2_s.latest_at_or_before(mid_second),
            Some(at(12, 0, 2))
        );
        assert_eq!(every_2_s.next_after(mid_second), Some(at(12, 0, 4)));
    }

    #[test]
    fn aliases_are_accepted() {
        for alias in [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@hourly",
        ] {
            CronSchedule::parse(alias, None).unwrap();
        }
        let hourly = CronSchedule::parse("@hourly", None).unwrap();
        assert_eq!(hourly.next_after(at(12, 30, 0)), Some(at(13, 0, 0)));
    }

    #[test]
    fn a_time_zone_moves_the_ticks() {
        // 09:00 in Paris is 08:00 UTC in March before the switch to summer time.
        let paris = CronSchedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next_after(at(0, 0, 0)), Some(at(8, 0, 0)));
        assert_eq!(paris.timezone(), Some("Europe/Paris"));
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "@fortnightly",
            "0 0 30 2 *",
        ] {
            let err = CronSchedule::parse(bad, None).unwrap_err();
            assert!(
                matches!(&err, Error::Configuration(m) if m.contains(&format!("{bad:?}"))),
                "{bad:?}: {err}"
            );
        }
        let err = CronSchedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(matches!(&err, Error::Configuration(m) if m.contains("Mars/Olympus")));
    }

    #[test]
    fn the_default_name_is_the_action_and_schedule() {
        let utc = CronSchedule::parse("@daily", None).unwrap();
        assert_eq!(PeriodicEntry::default_name("report", &utc), "report @daily");
        let paris = CronSchedule::parse("@daily", Some("Europe/Paris")).unwrap();
        assert_eq!(
            PeriodicEntry::default_name("report", &paris),
            "report @daily Europe/Paris"
        );
    }
}
