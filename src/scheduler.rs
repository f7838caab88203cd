//! Schedules: crontab expressions (5 fields, or 6 with seconds) with crontab semantics, in a time zone.
//!
//! The `cron` crate numbers days of the week 1-7 from Sunday and ANDs day-of-month with
//! day-of-week; crontab numbers them 0-7 (0 and 7 = Sunday) and ORs the two when both are
//! restricted. We translate: numeric days become names, and an OR becomes two schedules.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed schedule, ready to answer "when next?".
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub timezone: Tz,
    /// One schedule, or two whose union is the crontab meaning (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
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
        Ok(Self { expression: expression.trim().to_owned(), timezone, parts })
    }

    /// The next `n` fire times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let local = after.with_timezone(&self.timezone);
        let mut times: Vec<DateTime<Tz>> = self.parts.iter().flat_map(|p| p.after(&local).take(n)).collect();
        times.sort();
        times.dedup();
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
    fn bad_expressions_are_explained() {
        assert!(Schedule::parse("* * *", chrono_tz::UTC).unwrap_err().contains("expected 5 fields"));
        assert!(Schedule::parse("61 * * * *", chrono_tz::UTC).is_err());
        assert!(Schedule::parse("@sometimes", chrono_tz::UTC).is_err());
        assert!(Schedule::parse("@daily", chrono_tz::UTC).is_ok());
    }
}
