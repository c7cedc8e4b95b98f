//! Maintenance windows: named stretches of time, written in Alertmanager's `time_intervals`
//! syntax, during which the runbooks of some rules, of any rule acting on some services, or
//! of some rules on some services, are skipped (the incident still opens, is told and
//! escalates).
//!
//! Any rule file may hold a `maintenance_windows:` list, beside or instead of `rules:`:
//!
//! ```yaml
//! maintenance_windows:
//!   - name: db-upgrade
//!     rules: [postgres-down]        # these rules' runbooks (on these services, if given)
//!     services: [postgres]          # runbooks acting on these services
//!     time_intervals:               # in force while any interval matches
//!       - weekdays: ['saturday']
//!         times: [{ start_time: '02:00', end_time: '04:00' }]
//!         location: Europe/Berlin
//! ```
//!
//! An interval matches when every field it gives matches (an interval with no field matches
//! all the time), exactly as Alertmanager's `timeinterval.ContainsTime`: `times` are
//! `HH:MM` ranges, the end excluded (`24:00` is the end of the day); `weekdays`, `months`
//! (names or 1 to 12), `days_of_month` (1 to 31, negative from the end of the month: -1 is
//! the last day) and `years` are inclusive ranges written `a:b`, which never wrap around;
//! `location` is an IANA zone (UTC when not given). Unlike Alertmanager, `Local` is refused:
//! the host's zone is not where a window is planned. Empty lists are refused too: in
//! Alertmanager they silently make the interval match nothing.
//!
//! Pure: the zone database is built in (chrono-tz), and evaluation takes `now`.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::read::{self, Errors, Fields};
use super::yaml::Node;
use super::{name_problem, Names, Rule};
use crate::domain::WindowFact;

/// The key of a rule file that lists maintenance windows.
pub const WINDOWS_KEY: &str = "maintenance_windows";

/// A named window and what it holds back.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    pub name: String,
    pub file: std::path::PathBuf,
    pub line: u64,
    /// The rules whose runbooks it holds back.
    pub rules: Vec<String>,
    /// The services no runbook may act on while it is in force.
    pub services: Vec<String>,
    /// In force while any of them matches.
    pub intervals: Vec<TimeInterval>,
}

/// One of Alertmanager's `time_intervals` entries. An empty list means "any" (a list written
/// empty is refused when read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeInterval {
    pub times: Vec<TimeRange>,
    /// 0 = Sunday to 6 = Saturday.
    pub weekdays: Vec<Range>,
    /// 1 to 31, or -31 to -1 from the end of the month.
    pub days_of_month: Vec<Range>,
    /// 1 = January to 12.
    pub months: Vec<Range>,
    pub years: Vec<Range>,
    pub location: Tz,
}

/// Minutes of the day, `start` included, `end` excluded (1440 is the end of the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: u32,
    pub end: u32,
}

/// An inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub begin: i32,
    pub end: i32,
}

impl Range {
    fn has(self, v: i32) -> bool {
        v >= self.begin && v <= self.end
    }
}

/// How far ahead [`MaintenanceWindow::until`] looks for the window's end.
const UNTIL_HORIZON_DAYS: i64 = 366;

impl TimeInterval {
    /// Whether `t` is inside the interval: Alertmanager's `ContainsTime`, field for field.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.contains_local(t.with_timezone(&self.location).naive_local())
    }

    fn contains_local(&self, l: NaiveDateTime) -> bool {
        let minute = l.hour() * 60 + l.minute();
        let any = |ranges: &[Range], v: i32| ranges.is_empty() || ranges.iter().any(|r| r.has(v));
        (self.times.is_empty()
            || self
                .times
                .iter()
                .any(|r| minute >= r.start && minute < r.end))
            && (self.days_of_month.is_empty() || self.day_of_month_matches(l.date()))
            && any(&self.months, l.month() as i32)
            && any(&self.weekdays, l.weekday().num_days_from_sunday() as i32)
            && any(&self.years, l.year())
    }

    /// Negative days count from the end of the month; a range is clamped to the month, and
    /// one that starts after the month's last day does not match in it (as Alertmanager).
    fn day_of_month_matches(&self, d: NaiveDate) -> bool {
        let days = days_in_month(d.year(), d.month());
        let day = d.day() as i32;
        self.days_of_month.iter().any(|r| {
            let from_end = |v: i32| if v < 0 { days + v + 1 } else { v };
            let (begin, end) = (from_end(r.begin), from_end(r.end));
            if begin > days {
                return false;
            }
            let (begin, end) = (begin.clamp(-days, days), end.clamp(-days, days));
            day >= begin && day <= end
        })
    }

    /// When the stretch of this interval that holds `t` ends: the end of the time range that
    /// holds it, or the end of the day when the interval gives no times. `None` when `t` is
    /// outside.
    fn stretch_end(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.location).naive_local();
        if !self.contains_local(local) {
            return None;
        }
        let minute = local.hour() * 60 + local.minute();
        let end_minute = self
            .times
            .iter()
            .filter(|r| minute >= r.start && minute < r.end)
            .map(|r| r.end)
            .max()
            .unwrap_or(24 * 60);
        let end = local.date().and_hms_opt(0, 0, 0)? + Duration::minutes(i64::from(end_minute));
        let at = first_instant_at(self.location, end, t)?;
        // Always forward, however the zone's clock moved.
        Some(at.max(t + Duration::minutes(1)))
    }
}

/// The first instant after `after` at which the wall clock of `tz` reads `local`; when that
/// reading does not exist (the clock jumped over it), the first reading after the jump.
fn first_instant_at(tz: Tz, local: NaiveDateTime, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use chrono::LocalResult;
    // Zone transitions jump by at most a few hours.
    for minutes in 0..=24 * 60 {
        let reading = local + Duration::minutes(minutes);
        match tz.from_local_datetime(&reading) {
            LocalResult::Single(at) => return Some(at.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, second) => {
                let first = first.with_timezone(&Utc);
                return Some(if first > after {
                    first
                } else {
                    second.with_timezone(&Utc)
                });
            }
            LocalResult::None => continue,
        }
    }
    None
}

fn days_in_month(year: i32, month: u32) -> i32 {
    let first = NaiveDate::from_ymd_opt(year, month, 1);
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    match (first, next) {
        (Some(a), Some(b)) => (b - a).num_days() as i32,
        _ => 31,
    }
}

impl MaintenanceWindow {
    /// Whether any of its intervals holds `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.intervals.iter().any(|i| i.contains(now))
    }

    /// Whether the window holds back `rule`'s runbook on `service` (the target's service, if
    /// any). Each part of the scope that is given must hold, as for a pause: `rules` names
    /// the rule, `services` names the target's service or one the rule's steps act on; with
    /// both, the named rules on the named services only.
    pub fn covers(&self, rule: &Rule, service: Option<&str>) -> bool {
        let by_rule = self.rules.is_empty() || self.rules.contains(&rule.name);
        let by_service = self.services.is_empty()
            || self.services.iter().any(|s| {
                service == Some(s.as_str()) || rule.step_services().any(|named| named == s)
            });
        by_rule && by_service
    }

    /// When the window stops being in force, if it is at `now` and stops within a year:
    /// the first instant at which none of its intervals matches.
    pub fn until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = now + Duration::days(UNTIL_HORIZON_DAYS);
        let mut t = now;
        while t <= horizon {
            match self.intervals.iter().filter_map(|i| i.stretch_end(t)).max() {
                // Every interval holding `t` holds it up to its stretch's end, so the window
                // is in force until the latest; then look again there.
                Some(end) => t = end,
                None => return (t > now).then_some(t),
            }
        }
        None
    }

    /// The fact the guards judge, when the window is in force at `now`.
    pub fn fact(&self, now: DateTime<Utc>) -> Option<WindowFact> {
        self.in_force(now).then(|| WindowFact {
            name: self.name.clone(),
            until: self.until(now),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Reading: every problem recorded with its place, naming the field.

/// What a window's scope may name: every rule name written (even of a rule with problems,
/// which are reported at the rule), and the services the rules act on, when every rule
/// compiled (otherwise an unknown service cannot be told from one of a broken rule).
pub(super) struct Known<'a> {
    pub rules: &'a Names,
    pub services: Option<BTreeSet<String>>,
}

const WINDOW_KEYS: &[&str] = &["name", "rules", "services", "time_intervals"];
const INTERVAL_KEYS: &[&str] = &[
    "times",
    "weekdays",
    "days_of_month",
    "months",
    "years",
    "location",
];

/// Reads a file's `maintenance_windows:` list into `out`.
pub(super) fn read_windows(
    e: &mut Errors<'_>,
    list: &Node,
    file: &Path,
    known: &Known<'_>,
    names: &mut Names,
    out: &mut Vec<MaintenanceWindow>,
) {
    let Some(items) = read::list(e, list, WINDOWS_KEY) else {
        return;
    };
    if items.is_empty() {
        return e.at(
            list.pos,
            format!("{WINDOWS_KEY} is empty; list windows, or remove the key"),
        );
    }
    for (i, item) in items.iter().enumerate() {
        e.set_context(format!("maintenance window #{}", i + 1));
        if let Some(w) = read_window(e, item, file, known, names) {
            out.push(w);
        }
        e.set_context("");
    }
}

fn read_window(
    e: &mut Errors<'_>,
    node: &Node,
    file: &Path,
    known: &Known<'_>,
    names: &mut Names,
) -> Option<MaintenanceWindow> {
    let before = e.count();
    let f = Fields::of_named(
        e,
        node,
        "",
        "a maintenance window",
        " of name, rules and/or services, and time_intervals",
    )?;
    let name_node = f.require(e, "name", "");
    let name = name_node.and_then(|n| read::string(e, n, "name"));
    if let (Some(name), Some(n)) = (&name, name_node) {
        if name.trim().is_empty() {
            e.at(n.pos, "name is empty");
        } else {
            e.set_context(format!("maintenance window `{name}`"));
            match super::first_use(names, name) {
                Some(at) => e.at(
                    n.pos,
                    format!("the name is already used by the window at {at}; window names must be unique"),
                ),
                None => {
                    names.insert(name.clone(), (file.to_path_buf(), n.pos));
                }
            }
        }
    }
    f.check_keys(e, Some(WINDOW_KEYS));

    if !f.has("rules") && !f.has("services") {
        e.at(
            f.pos,
            "a maintenance window needs a scope: `rules:` (the rules whose runbooks it holds back), `services:` (the services no runbook may act on), or both",
        );
    }
    let rules = scope(e, &f, "rules", |e, rule, pos| {
        if !known.rules.contains_key(rule) {
            let names: Vec<&str> = known.rules.keys().map(String::as_str).collect();
            e.at(
                pos,
                format!(
                    "rules `{rule}` is not a rule in this directory {}",
                    known_list(&names, "there are no rules")
                ),
            );
        }
    });
    let services = scope(e, &f, "services", |e, service, pos| {
        if let Some(why) = name_problem(service) {
            return e.at(pos, format!("services `{service}` {why}"));
        }
        if let Some(services) = &known.services {
            if !services.contains(service) {
                let names: Vec<&str> = services.iter().map(String::as_str).collect();
                e.at(
                    pos,
                    format!(
                        "services `{service}` is not a service any rule acts on {}",
                        known_list(&names, "no rule acts on a service")
                    ),
                );
            }
        }
    });

    let mut intervals = Vec::new();
    if let Some(n) = f.require(
        e,
        "time_intervals",
        " (e.g. time_intervals: [ { weekdays: [saturday], times: [ { start_time: '02:00', end_time: '04:00' } ] } ])",
    ) {
        if let Some(items) = read::list(e, n, "time_intervals") {
            if items.is_empty() {
                e.at(
                    n.pos,
                    "time_intervals is empty, so the window would never be in force; list at least one interval ({} is all the time)",
                );
            }
            intervals = items.iter().filter_map(|i| read_interval(e, i)).collect();
        }
    }
    if e.count() > before {
        return None;
    }
    Some(MaintenanceWindow {
        name: name?,
        file: file.to_path_buf(),
        line: node.pos.map(|p| p.line).unwrap_or(1),
        rules,
        services,
        intervals,
    })
}

/// `(known: a, b)`, or `(none)` in words when there is nothing to list.
fn known_list(names: &[&str], none: &str) -> String {
    if names.is_empty() {
        format!("({none})")
    } else {
        format!("(known: {})", names.join(", "))
    }
}

/// A scope list (`rules`, `services`), each name checked by `check`.
fn scope(
    e: &mut Errors<'_>,
    f: &Fields<'_>,
    key: &str,
    check: impl Fn(&mut Errors<'_>, &str, Option<super::Pos>),
) -> Vec<String> {
    if !f.has(key) {
        return Vec::new();
    }
    let Some(n) = f.get(key) else {
        e.at(
            f.key_pos(key),
            format!("`{key}` has no value; name at least one, or remove the key"),
        );
        return Vec::new();
    };
    let Some(items) = read::strings(e, n, key) else {
        return Vec::new();
    };
    if items.is_empty() {
        e.at(
            n.pos,
            format!("{key} is empty; name at least one, or remove the key"),
        );
    }
    for (name, pos) in &items {
        check(e, name, *pos);
    }
    items.into_iter().map(|(s, _)| s).collect()
}

fn read_interval(e: &mut Errors<'_>, n: &Node) -> Option<TimeInterval> {
    let f = Fields::of(
        e,
        n,
        "time_intervals",
        " such as { weekdays: [saturday], times: [ { start_time: '02:00', end_time: '04:00' } ] }",
    )?;
    let before = e.count();
    f.check_keys(e, Some(INTERVAL_KEYS));
    let times = f
        .get("times")
        .map(|n| read_times(e, n, &f.child("times")))
        .unwrap_or_default();
    let weekdays = ranges(e, &f, "weekdays", "day", weekday_range);
    let days_of_month = ranges(e, &f, "days_of_month", "day", day_of_month_range);
    let months = ranges(e, &f, "months", "month", month_range);
    let years = ranges(e, &f, "years", "year", year_range);
    let location = match f.get("location") {
        None => Tz::UTC,
        Some(n) => {
            let what = f.child("location");
            let name = read::string(e, n, &what)?;
            match zone(&name) {
                Ok(tz) => tz,
                Err(why) => {
                    e.at(n.pos, format!("{what} `{name}` {why}"));
                    return None;
                }
            }
        }
    };
    (e.count() == before).then_some(TimeInterval {
        times,
        weekdays,
        days_of_month,
        months,
        years,
        location,
    })
}

/// A list of ranges at `key`, each parsed by `parse` (whose error follows the text).
fn ranges(
    e: &mut Errors<'_>,
    f: &Fields<'_>,
    key: &str,
    unit: &str,
    parse: fn(&str) -> Result<Range, String>,
) -> Vec<Range> {
    let Some(n) = f.get(key) else {
        return Vec::new();
    };
    let what = f.child(key);
    let Some(items) = read::strings(e, n, &what) else {
        return Vec::new();
    };
    if items.is_empty() {
        e.at(
            n.pos,
            format!("{what} is empty, so the interval would never match; remove the key to mean every {unit}"),
        );
    }
    items
        .iter()
        .filter_map(|(text, pos)| {
            parse(text.trim())
                .map_err(|why| e.at(*pos, format!("{what} `{text}` {why}")))
                .ok()
        })
        .collect()
}

fn read_times(e: &mut Errors<'_>, n: &Node, what: &str) -> Vec<TimeRange> {
    let Some(items) = read::list(e, n, what) else {
        return Vec::new();
    };
    if items.is_empty() {
        e.at(
            n.pos,
            format!("{what} is empty, so the interval would never match; remove the key to mean the whole day"),
        );
    }
    let mut out = Vec::new();
    for item in items {
        let Some(f) = Fields::of(
            e,
            item,
            what,
            " such as { start_time: '02:00', end_time: '04:00' }",
        ) else {
            continue;
        };
        f.check_keys(e, Some(&["start_time", "end_time"]));
        let mut time = |key: &str| {
            let n = f.require(e, key, " (HH:MM, e.g. '02:00')")?;
            let what = f.child(key);
            let text = read::string(e, n, &what)?;
            match minutes_of(text.trim()) {
                Some(m) => Some((m, text, n.pos)),
                None => {
                    e.at(
                        n.pos,
                        format!("{what} `{text}` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)"),
                    );
                    None
                }
            }
        };
        let start = time("start_time");
        let end = time("end_time");
        if let (Some((start, start_text, _)), Some((end, end_text, end_pos))) = (start, end) {
            if start >= end {
                e.at(
                    end_pos,
                    format!("{what}: end_time `{end_text}` is not after start_time `{start_text}`; a range ends on the day it starts: split one that crosses midnight in two, one ending at 24:00 and one starting at 00:00"),
                );
            } else {
                out.push(TimeRange { start, end });
            }
        }
    }
    out
}

/// `HH:MM` from 00:00 to 23:59, or 24:00: Alertmanager's
/// `^((([01][0-9])|(2[0-3])):[0-5][0-9])$|(^24:00$)`.
fn minutes_of(text: &str) -> Option<u32> {
    if text == "24:00" {
        return Some(24 * 60);
    }
    let (h, m) = text.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `a` or `a:b`, each end read by `member`; `None` when the text has more than one colon.
fn split_range<T: Copy>(text: &str, member: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let lower = text.to_ascii_lowercase();
    match lower.split(':').collect::<Vec<_>>()[..] {
        [one] => member(one).map(|v| (v, v)),
        [a, b] => Some((member(a)?, member(b)?)),
        _ => None,
    }
}

/// `a:b`, or `a` when both ends are one.
fn span(a: &str, b: &str) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}:{b}")
    }
}

fn weekday_range(text: &str) -> Result<Range, String> {
    let member = |s: &str| WEEKDAYS.iter().position(|d| *d == s).map(|i| i as i32);
    let (begin, end) = split_range(text, member).ok_or_else(|| {
        "is not a weekday (sunday to saturday, by name) or a range of them such as monday:friday"
            .to_string()
    })?;
    if begin > end {
        return Err(format!(
            "ends before it starts; a range does not wrap around the week: write `{}` and `{}`",
            span(WEEKDAYS[begin as usize], "saturday"),
            span("sunday", WEEKDAYS[end as usize])
        ));
    }
    Ok(Range { begin, end })
}

fn day_of_month_range(text: &str) -> Result<Range, String> {
    let (begin, end) = split_range(text, |s| s.parse::<i32>().ok()).ok_or_else(|| {
        "is not a day of the month (1 to 31, or -1 for the last day) or a range of them such as 1:7"
            .to_string()
    })?;
    let valid = |d: i32| d != 0 && (-31..=31).contains(&d);
    if !valid(begin) || !valid(end) {
        return Err(
            "is out of range: days of the month are 1 to 31, or -31 to -1 counted from the end (-1 is the last day)"
                .into(),
        );
    }
    if begin < 0 && end > 0 {
        return Err(
            "starts from the end of the month, so it must end there too: write a negative end such as -1"
                .into(),
        );
    }
    // As Alertmanager: negative days are placed in the shortest month, so that only ranges
    // that end before they start in every month are refused.
    let in_shortest = |d: i32| if d < 0 { 28 + d } else { d };
    if in_shortest(begin) > in_shortest(end) {
        return Err("ends before it starts, in every month".into());
    }
    Ok(Range { begin, end })
}

fn month_range(text: &str) -> Result<Range, String> {
    let member = |s: &str| match MONTHS.iter().position(|m| *m == s) {
        Some(i) => Some(i as i32 + 1),
        None => s.parse::<i32>().ok().filter(|m| (1..=12).contains(m)),
    };
    let (begin, end) = split_range(text, member).ok_or_else(|| {
        "is not a month (january to december, or 1 to 12) or a range of them such as march:may"
            .to_string()
    })?;
    if begin > end {
        return Err(format!(
            "ends before it starts; a range does not wrap around the year: write `{}` and `{}`",
            span(MONTHS[begin as usize - 1], "december"),
            span("january", MONTHS[end as usize - 1])
        ));
    }
    Ok(Range { begin, end })
}

fn year_range(text: &str) -> Result<Range, String> {
    let member = |s: &str| s.parse::<i32>().ok().filter(|y| (1..=9999).contains(y));
    let (begin, end) = split_range(text, member).ok_or_else(|| {
        "is not a year such as 2026 or a range of years such as 2026:2027".to_string()
    })?;
    if begin > end {
        return Err("ends before it starts".into());
    }
    Ok(Range { begin, end })
}

/// An IANA zone by its exact name.
fn zone(name: &str) -> Result<Tz, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err("is the host's zone, which a window does not use: write the IANA name of the zone the window is planned in, such as Europe/Berlin (UTC when not given)".into());
    }
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let near = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(name));
    Err(match near {
        Some(tz) => format!("is not a time zone; did you mean `{}`?", tz.name()),
        None => "is not a time zone of the IANA database, such as Europe/Berlin or UTC".into(),
    })
}

#[cfg(test)]
mod tests;
