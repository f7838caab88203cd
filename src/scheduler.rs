//! Schedules: crontab expressions (5 fields, or 6 with seconds) with crontab semantics, in a time zone.
//!
//! The `cron` crate numbers days of the week 1-7 from Sunday and ANDs day-of-month with
//! day-of-week; crontab numbers them 0-7 (0 and 7 = Sunday) and ORs the two when both are
//! restricted. We translate: numeric days become names, and an OR becomes two schedules.
//!
//! Daylight saving time follows crontab (cronie): the expression is evaluated on the local wall
//! clock; a fire time that falls into the hour skipped in spring runs once, right after the gap;
//! a fixed-time job in the hour repeated in autumn runs once (the first time), while a job whose
//! hour field is a wildcard or a step runs in both repetitions, as every real hour passes.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// What to do when a run of a source is due while its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Skip the new run (default).
    #[default]
    Forbid,
    /// Stop the running one (its deliveries are reconciled) and start anew.
    Replace,
    /// Start the new run once the running one ended (one writer per source: never both at once).
    Allow,
}

/// What to do at start about runs missed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Run once right away if at least one scheduled run was missed (default).
    #[default]
    CatchUpOnce,
    /// Wait for the next scheduled time.
    Skip,
}

/// Whether a source missed a scheduled run: its last scheduled run started at `last_run`, and a
/// fire time came after that and before `now`.
pub fn missed_run(schedule: &Schedule, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match last_run {
        None => false,
        Some(last) => schedule.upcoming(last, 1).first().is_some_and(|next| next.with_timezone(&Utc) < now),
    }
}

/// Refuses a number outside `low..=high` in a field (lists, ranges and the start of steps are
/// looked into; names such as `MON` are left to the parser), naming the field and its real range
/// (the cron crate's own message for an hour of 24 says "less than 23").
fn check_range(name: &str, field: &str, low: u32, high: u32) -> Result<(), String> {
    for part in field.split(',') {
        let range = part.split('/').next().unwrap_or(part);
        for value in range.split('-') {
            if let Ok(number) = value.parse::<u32>()
                && !(low..=high).contains(&number)
            {
                return Err(format!("the {name} field `{field}` has {number}, outside its range {low}–{high}"));
            }
        }
    }
    Ok(())
}

/// A parsed schedule, ready to answer "when next?".
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub timezone: Tz,
    /// One schedule, or two whose union is the crontab meaning (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
    /// The hour field is `*` or a step: such a job runs in both repetitions of an autumn hour.
    hourly: bool,
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// Parses a crontab expression: `m h dom mon dow`, `s m h dom mon dow`, or `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`.
    pub fn parse(expression: &str, timezone: Tz) -> Result<Self, String> {
        let expanded = match expression.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!("unknown schedule macro `{other}`"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, got {n}"
                ));
            }
        };
        let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        for (name, field, low, high) in [
            ("second", seconds, 0, 59),
            ("minute", minute, 0, 59),
            ("hour", hour, 0, 23),
            ("day-of-month", dom, 1, 31),
            ("month", month, 1, 12),
            ("day-of-week", dow, 0, 7),
        ] {
            check_range(name, field, low, high)?;
        }
        let days = translate_day_of_week(dow)?;
        let build = |dom: &str, dow: &str| -> Result<cron::Schedule, String> {
            let text = format!("{seconds} {minute} {hour} {dom} {month} {dow}");
            cron::Schedule::from_str(&text).map_err(|e| e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let restricted = |f: &str| f != "*" && f != "?";
        let parts = if restricted(dom) && restricted(dow) {
            vec![build(dom, "*")?, build("*", &days)?]
        } else {
            vec![build(dom, &days)?]
        };
        let hourly = hour.contains('*');
        Ok(Self { expression: expression.trim().to_owned(), timezone, parts, hourly })
    }

    /// The next `n` fire times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        use chrono::{LocalResult, TimeZone};
        // Evaluate the expression on the local wall clock (a naive timeline, written as UTC).
        let wall = Utc.from_utc_datetime(&after.with_timezone(&self.timezone).naive_local());
        let mut walls: Vec<DateTime<Utc>> = self.parts.iter().flat_map(|p| p.after(&wall).take(n + 2)).collect();
        walls.sort();
        walls.dedup();
        let mut times: Vec<DateTime<Tz>> = Vec::new();
        for wall in walls {
            let naive = wall.naive_utc();
            let candidates: Vec<DateTime<Tz>> = match self.timezone.from_local_datetime(&naive) {
                LocalResult::Single(t) => vec![t],
                LocalResult::Ambiguous(first, second) if self.hourly => vec![first, second],
                LocalResult::Ambiguous(first, _) => vec![first],
                // In the spring gap: run once, at the first instant after it.
                LocalResult::None => (1..=180)
                    .map(|m| naive + chrono::Duration::minutes(m))
                    .find_map(|later| self.timezone.from_local_datetime(&later).earliest())
                    .into_iter()
                    .collect(),
            };
            for time in candidates {
                if time.with_timezone(&Utc) > after && !times.contains(&time) {
                    times.push(time);
                }
            }
            if times.len() >= n {
                break;
            }
        }
        times.sort();
        times.truncate(n);
        times
    }
}

/// Turns a crontab day-of-week field into the `cron` crate's form by naming every day.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let day = |text: &str| -> Result<usize, String> {
        if let Some(i) = DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(text)) {
            return Ok(i);
        }
        match text.parse::<usize>() {
            Ok(n @ 0..=7) => Ok(n % 7),
            _ => Err(format!("day of week `{text}` is not 0-7 or SUN-SAT")),
        }
    };
    let mut selected = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().ok().filter(|s| *s > 0).ok_or(format!("bad step in `{item}`"))?),
            None => (item, 1),
        };
        let (start, end) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b_raw) = (day(a)?, b);
                    // `5-7` and `MON-SUN` run up to Sunday at the end of the week.
                    let b = if b_raw == "7" || (b_raw.eq_ignore_ascii_case("SUN") && a > 0) { 7 } else { day(b_raw)? };
                    if b < a {
                        return Err(format!("day-of-week range `{r}` runs backwards"));
                    }
                    (a, b)
                }
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        for d in (start..=end).step_by(step) {
            selected[d % 7] = true;
        }
    }
    if selected.iter().all(|s| *s) {
        return Ok("*".into());
    }
    Ok(DAY_NAMES.iter().zip(selected).filter(|(_, s)| *s).map(|(d, _)| *d).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    use super::*;

    #[test]
    fn a_number_out_of_range_names_the_field_and_its_real_range() {
        let tz = chrono_tz::Europe::Berlin;
        assert_eq!(
            Schedule::parse("0 24 * * *", tz).unwrap_err(),
            "the hour field `24` has 24, outside its range 0–23"
        );
        assert_eq!(
            Schedule::parse("0 8-25 * * *", tz).unwrap_err(),
            "the hour field `8-25` has 25, outside its range 0–23"
        );
        assert!(Schedule::parse("60 * * * *", tz).unwrap_err().contains("minute field `60`"));
        assert!(Schedule::parse("0 0 32 * *", tz).unwrap_err().contains("range 1–31"));
        assert!(Schedule::parse("0 23 * * *", tz).is_ok());
        assert!(Schedule::parse("*/15 0-23 1,15 1-12 MON-FRI", tz).is_ok());
    }

    fn berlin(expr: &str) -> Schedule {
        Schedule::parse(expr, chrono_tz::Europe::Berlin).unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn numeric_days_follow_crontab_numbering() {
        assert_eq!(translate_day_of_week("0").unwrap(), "SUN");
        assert_eq!(translate_day_of_week("7").unwrap(), "SUN");
        assert_eq!(translate_day_of_week("1-5").unwrap(), "MON,TUE,WED,THU,FRI");
        assert_eq!(translate_day_of_week("5-7").unwrap(), "SUN,FRI,SAT");
        assert_eq!(translate_day_of_week("MON-SUN").unwrap(), "*");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(translate_day_of_week("1-5/2").unwrap(), "MON,WED,FRI");
        assert!(translate_day_of_week("8").is_err());
    }

    #[test]
    fn sunday_as_zero_fires_on_sunday() {
        // 2026-11-27 is a Friday.
        let next = berlin("30 6 * * 0").upcoming(at(2026, 11, 27, 12, 0), 2);
        assert_eq!(next[0].weekday(), Weekday::Sun);
        assert_eq!((next[0].day(), next[0].hour(), next[0].minute()), (29, 6, 30));
        assert_eq!(next[1].day(), 6);
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // crontab: the 1st of the month OR any Monday.
        let next = berlin("0 8 1 * 1").upcoming(at(2026, 11, 27, 12, 0), 3);
        let days: Vec<_> = next.iter().map(|t| (t.month(), t.day())).collect();
        assert_eq!(days, vec![(11, 30), (12, 1), (12, 7)]);
    }

    #[test]
    fn six_fields_carry_seconds_and_times_are_local() {
        let next = berlin("15 0 3 * * *").upcoming(at(2026, 7, 1, 0, 0), 1);
        assert_eq!((next[0].hour(), next[0].minute(), next[0].second()), (3, 0, 15));
        assert_eq!(next[0].with_timezone(&Utc).hour(), 1, "Berlin is UTC+2 in July");
    }

    #[test]
    fn spring_forward_runs_a_skipped_job_once_right_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let next = berlin("30 2 * * *").upcoming(at(2026, 3, 28, 12, 0), 3);
        let local: Vec<String> = next.iter().map(|t| t.format("%m-%d %H:%M %Z").to_string()).collect();
        assert_eq!(local, vec!["03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]);
    }

    #[test]
    fn fall_back_runs_a_fixed_time_job_once_and_hourly_jobs_every_real_hour() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let next = berlin("30 2 * * *").upcoming(at(2026, 10, 24, 12, 0), 2);
        let local: Vec<String> = next.iter().map(|t| t.format("%m-%d %H:%M %Z").to_string()).collect();
        assert_eq!(local, vec!["10-25 02:30 CEST", "10-26 02:30 CET"]);
        let hourly = berlin("0 * * * *").upcoming(at(2026, 10, 24, 23, 30), 4);
        let utc: Vec<u32> = hourly.iter().map(|t| t.with_timezone(&Utc).hour()).collect();
        assert_eq!(utc, vec![0, 1, 2, 3], "02:00 CEST and 02:00 CET are both real hours");
    }

    #[test]
    fn a_missed_run_is_one_that_should_have_started_since_the_last() {
        let hourly = berlin("0 * * * *");
        let now = at(2026, 11, 27, 12, 30);
        assert!(missed_run(&hourly, Some(at(2026, 11, 27, 10, 0)), now), "11:00 was missed");
        assert!(!missed_run(&hourly, Some(at(2026, 11, 27, 12, 0)), now), "13:00 is still ahead");
        assert!(!missed_run(&hourly, None, now), "a source that never ran missed nothing");
    }

    #[test]
    fn bad_expressions_are_explained() {
        assert!(Schedule::parse("* * *", chrono_tz::UTC).unwrap_err().contains("expected 5 fields"));
        assert!(Schedule::parse("61 * * * *", chrono_tz::UTC).is_err());
        assert!(Schedule::parse("@sometimes", chrono_tz::UTC).is_err());
        assert!(Schedule::parse("@daily", chrono_tz::UTC).is_ok());
    }
}
