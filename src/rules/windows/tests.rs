//! Alertmanager's own cases (`timeinterval/timeinterval_test.go`: `timeIntervalTestCases`,
//! `timeStringTestCases`, `yamlUnmarshalTestCases`, `completeTestCases`), ported; then the
//! window's end (`until`) across the month, the week and daylight-saving changes.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::super::read::{self, Errors};
use super::super::yaml;
use super::*;

/// Go's `time.RFC822Z` (`02 Jan 06 15:04 -0700`), as the Alertmanager cases write times.
fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(text, "%d %b %y %H:%M %z")
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// A `time_intervals` list read as a window's would be: the intervals, or every problem as
/// `line:column: message`.
fn intervals(text: &str) -> Result<Vec<TimeInterval>, Vec<String>> {
    let doc = yaml::parse(text).unwrap().unwrap();
    let mut found = Vec::new();
    let mut e = Errors::new(Path::new("w.yaml"), text, &mut found);
    let items = read::list(&mut e, &doc, "time_intervals").unwrap();
    let got: Vec<TimeInterval> = items
        .iter()
        .filter_map(|i| read_interval(&mut e, i))
        .collect();
    if found.is_empty() {
        Ok(got)
    } else {
        found.sort_by_key(|e| e.pos);
        Err(found
            .iter()
            .map(|e| format!("{}: {}", e.pos.unwrap(), e.message))
            .collect())
    }
}

fn window(intervals: Vec<TimeInterval>) -> MaintenanceWindow {
    MaintenanceWindow {
        name: "w".into(),
        file: "w.yaml".into(),
        line: 1,
        rules: vec![],
        services: vec![],
        intervals,
    }
}

fn r(begin: i32, end: i32) -> Range {
    Range { begin, end }
}

fn any() -> TimeInterval {
    TimeInterval {
        times: vec![],
        weekdays: vec![],
        days_of_month: vec![],
        months: vec![],
        years: vec![],
        location: Tz::UTC,
    }
}

fn sydney() -> Tz {
    "Australia/Sydney".parse().unwrap()
}

/// `timeIntervalTestCases`, each interval built as the Go case builds its struct.
#[test]
fn contains_time_as_alertmanager() {
    let nine_to_five = vec![TimeRange {
        start: 540,
        end: 1020,
    }];
    let cases: Vec<(TimeInterval, &[&str], &[&str])> = vec![
        (
            any(),
            &[
                "02 Jan 06 15:04 +0000",
                "03 Jan 07 10:04 +0000",
                "04 Jan 06 09:04 +0000",
            ],
            &[],
        ),
        (
            // 9am to 5pm, monday to friday
            TimeInterval {
                times: nine_to_five.clone(),
                weekdays: vec![r(1, 5)],
                ..any()
            },
            &[
                "04 May 20 15:04 +0000",
                "05 May 20 10:04 +0000",
                "09 Jun 20 09:04 +0000",
            ],
            &[
                "03 May 20 15:04 +0000",
                "04 May 20 08:59 +0000",
                "05 May 20 05:00 +0000",
            ],
        ),
        (
            // Easter 2020
            TimeInterval {
                days_of_month: vec![r(4, 6)],
                months: vec![r(4, 4)],
                years: vec![r(2020, 2020)],
                ..any()
            },
            &[
                "04 Apr 20 15:04 +0000",
                "05 Apr 20 00:00 +0000",
                "06 Apr 20 23:05 +0000",
            ],
            &[
                "03 May 18 15:04 +0000",
                "03 Apr 20 23:59 +0000",
                "04 Jun 20 23:59 +0000",
                "06 Apr 19 23:59 +0000",
                "07 Apr 20 00:00 +0000",
            ],
        ),
        (
            // Negative days of month: the last 3 days of each month
            TimeInterval {
                days_of_month: vec![r(-3, -1)],
                ..any()
            },
            &[
                "31 Jan 20 15:04 +0000",
                "30 Jan 20 15:04 +0000",
                "29 Jan 20 15:04 +0000",
                "30 Jun 20 00:00 +0000",
                "29 Feb 20 23:05 +0000",
            ],
            &[
                "03 May 18 15:04 +0000",
                "27 Jan 20 15:04 +0000",
                "03 Apr 20 23:59 +0000",
                "04 Jun 20 23:59 +0000",
                "06 Apr 19 23:59 +0000",
                "07 Apr 20 00:00 +0000",
                "01 Mar 20 00:00 +0000",
            ],
        ),
        (
            // Out of bound days are clamped to month boundaries (a range the reader refuses,
            // built directly as the Go case does). The Go case's "1 Jul 20" does not parse
            // as RFC822Z there, so it tests the zero time; the 1st of July is meant.
            TimeInterval {
                months: vec![r(6, 6)],
                days_of_month: vec![r(-31, 31)],
                ..any()
            },
            &["30 Jun 20 00:00 +0000", "01 Jun 20 00:00 +0000"],
            &["31 May 20 00:00 +0000", "01 Jul 20 00:00 +0000"],
        ),
        (
            // Another zone: 9am to 5pm in Sydney, monday to friday
            TimeInterval {
                times: nine_to_five.clone(),
                weekdays: vec![r(1, 5)],
                location: sydney(),
                ..any()
            },
            &["06 Apr 21 13:00 +1000"],
            &["06 Apr 21 13:00 +0000"],
        ),
        (
            // The same during daylight-saving time
            TimeInterval {
                times: nine_to_five,
                weekdays: vec![r(1, 5)],
                months: vec![r(11, 11)],
                location: sydney(),
                ..any()
            },
            &["01 Nov 21 09:00 +1100", "31 Oct 21 22:00 +0000"],
            &["31 Oct 21 21:00 +0000"],
        ),
    ];
    for (interval, inside, outside) in cases {
        for t in inside {
            assert!(interval.contains(at(t)), "{interval:?} contains {t}");
        }
        for t in outside {
            assert!(!interval.contains(at(t)), "{interval:?} excludes {t}");
        }
    }
}

/// `timeStringTestCases`.
#[test]
fn time_ranges_as_alertmanager() {
    let range = |start: &str, end: &str| {
        intervals(&format!(
            "[ {{ times: [ {{ start_time: '{start}', end_time: '{end}' }} ] }} ]"
        ))
        .map(|i| i[0].times[0])
    };
    assert_eq!(
        range("00:00", "24:00"),
        Ok(TimeRange {
            start: 0,
            end: 1440
        })
    );
    assert_eq!(
        range("01:35", "17:39"),
        Ok(TimeRange {
            start: 95,
            end: 1059
        })
    );
    assert_eq!(
        range("09:35", "09:39"),
        Ok(TimeRange {
            start: 575,
            end: 579
        })
    );
    let split = "a range ends on the day it starts: split one that crosses midnight in two, one ending at 24:00 and one starting at 00:00";
    assert_eq!(
        range("17:31", "17:31"),
        Err(vec![format!(
            "1:47: time_intervals.times: end_time `17:31` is not after start_time `17:31`; {split}"
        )])
    );
    assert_eq!(
        range("12:30", "24:01"),
        Err(vec!["1:47: time_intervals.times.end_time `24:01` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)".to_string()])
    );
    assert_eq!(
        range("09:30", "07:41"),
        Err(vec![format!(
            "1:47: time_intervals.times: end_time `07:41` is not after start_time `09:30`; {split}"
        )])
    );
    assert_eq!(
        range("24:00", "17:41"),
        Err(vec![format!(
            "1:47: time_intervals.times: end_time `17:41` is not after start_time `24:00`; {split}"
        )])
    );
    assert_eq!(
        intervals("[ { times: [ { start_time: '14:03' } ] } ]"),
        Err(vec![
            "1:14: missing key `time_intervals.times.end_time` (HH:MM, e.g. '02:00')".to_string()
        ])
    );
    // Unquoted, as YAML people write it; hours need two digits, as in Alertmanager.
    assert_eq!(
        intervals("- times: [ { start_time: 09:00, end_time: 17:30 } ]").map(|i| i[0].times[0]),
        Ok(TimeRange {
            start: 540,
            end: 1050
        })
    );
    assert_eq!(
        intervals("- times: [ { start_time: '9:00', end_time: '17:00' } ]"),
        Err(vec!["1:26: time_intervals.times.start_time `9:00` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)".to_string()])
    );
}

/// `yamlUnmarshalTestCases`: what each reads to (or the problem, in our words, at its
/// place), and the times it contains and excludes.
#[test]
fn intervals_read_as_alertmanager_reads_them() {
    struct Case {
        text: &'static str,
        read: Result<Vec<TimeInterval>, Vec<&'static str>>,
        contains: &'static [&'static str],
        excludes: &'static [&'static str],
    }
    let ok = |read: Vec<TimeInterval>| Ok(read);
    let cases = [
        Case {
            // Simple business hours
            text: "
- weekdays: ['monday:friday']
  times:
    - start_time: '09:00'
      end_time: '17:00'
",
            read: ok(vec![TimeInterval {
                weekdays: vec![r(1, 5)],
                times: vec![TimeRange {
                    start: 540,
                    end: 1020,
                }],
                ..any()
            }]),
            contains: &["08 Jul 20 09:00 +0000", "08 Jul 20 16:59 +0000"],
            excludes: &["08 Jul 20 05:00 +0000", "08 Jul 20 08:59 +0000"],
        },
        Case {
            // Last week, excluding Saturday, of the first quarter of the year during business
            // hours from 2020 to 2025 and 2030-2035
            text: "
- weekdays: ['monday:friday', 'sunday']
  months: ['january:march']
  days_of_month: ['-7:-1']
  years: ['2020:2025', '2030:2035']
  times:
    - start_time: '09:00'
      end_time: '17:00'
",
            read: ok(vec![TimeInterval {
                weekdays: vec![r(1, 5), r(0, 0)],
                times: vec![TimeRange {
                    start: 540,
                    end: 1020,
                }],
                months: vec![r(1, 3)],
                days_of_month: vec![r(-7, -1)],
                years: vec![r(2020, 2025), r(2030, 2035)],
                ..any()
            }]),
            contains: &[
                "27 Jan 21 09:00 +0000",
                "28 Jan 21 16:59 +0000",
                "29 Jan 21 13:00 +0000",
                "31 Mar 25 13:00 +0000",
                "31 Jan 35 13:00 +0000",
            ],
            excludes: &[
                "30 Jan 21 13:00 +0000", // Saturday
                "01 Apr 21 13:00 +0000", // 4th month
                "30 Jan 26 13:00 +0000", // 2026
                "31 Jan 35 17:01 +0000", // After 5pm
            ],
        },
        Case {
            text: "
- weekdays: ['monday:friday']
  times:
    - start_time: '09:00'
      end_time: '17:00'",
            read: ok(vec![TimeInterval {
                weekdays: vec![r(1, 5)],
                times: vec![TimeRange {
                    start: 540,
                    end: 1020,
                }],
                ..any()
            }]),
            contains: &["01 Apr 21 13:00 +0000"],
            excludes: &[],
        },
        Case {
            text: "
- times:
    - start_time: '01:99'
      end_time: '23:59'",
            read: Err(vec!["3:19: time_intervals.times.start_time `01:99` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            text: "
- times:
    - start_time: '00:00'
      end_time: '99:99'",
            read: Err(vec!["4:17: time_intervals.times.end_time `99:99` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Start day after end day.
            text: "
- weekdays: ['friday:monday']",
            read: Err(vec!["2:14: time_intervals.weekdays `friday:monday` ends before it starts; a range does not wrap around the week: write `friday:saturday` and `sunday:monday`"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            text: "
- weekdays: ['blurgsday:flurgsday']
",
            read: Err(vec!["2:14: time_intervals.weekdays `blurgsday:flurgsday` is not a weekday (sunday to saturday, by name) or a range of them such as monday:friday"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Numeric weekdays aren't allowed.
            text: "
- weekdays: ['1:3']
",
            read: Err(vec!["2:14: time_intervals.weekdays `1:3` is not a weekday (sunday to saturday, by name) or a range of them such as monday:friday"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Negative numeric weekdays aren't allowed.
            text: "
- weekdays: ['-2:-1']
",
            read: Err(vec!["2:14: time_intervals.weekdays `-2:-1` is not a weekday (sunday to saturday, by name) or a range of them such as monday:friday"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // 0 day of month.
            text: "
- days_of_month: ['0']
",
            read: Err(vec!["2:19: time_intervals.days_of_month `0` is out of range: days of the month are 1 to 31, or -31 to -1 counted from the end (-1 is the last day)"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Start day of month < -31.
            text: "
- days_of_month: ['-50:-20']
",
            read: Err(vec!["2:19: time_intervals.days_of_month `-50:-20` is out of range: days of the month are 1 to 31, or -31 to -1 counted from the end (-1 is the last day)"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // End day of month > 31.
            text: "
- days_of_month: ['1:50']
",
            read: Err(vec!["2:19: time_intervals.days_of_month `1:50` is out of range: days of the month are 1 to 31, or -31 to -1 counted from the end (-1 is the last day)"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Negative indices should work.
            text: "
- days_of_month: ['1:-1']
",
            read: ok(vec![TimeInterval {
                days_of_month: vec![r(1, -1)],
                ..any()
            }]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // End day must be negative if begin day is negative.
            text: "
- days_of_month: ['-15:5']
",
            read: Err(vec!["2:19: time_intervals.days_of_month `-15:5` starts from the end of the month, so it must end there too: write a negative end such as -1"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Negative end date before positive start date.
            text: "
- days_of_month: ['10:-25']
",
            read: Err(vec!["2:19: time_intervals.days_of_month `10:-25` ends before it starts, in every month"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Months should work regardless of case
            text: "
- months: ['January:december']
",
            read: ok(vec![TimeInterval {
                months: vec![r(1, 12)],
                ..any()
            }]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Time zones may be specified by location.
            text: "
- years: ['2020:2022']
  location: 'Australia/Sydney'
",
            read: ok(vec![TimeInterval {
                years: vec![r(2020, 2022)],
                location: sydney(),
                ..any()
            }]),
            contains: &[],
            excludes: &[],
        },
        Case {
            text: "
- months: ['martius:june']
",
            read: Err(vec!["2:12: time_intervals.months `martius:june` is not a month (january to december, or 1 to 12) or a range of them such as march:may"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            text: "
- months: ['march:junius']
",
            read: Err(vec!["2:12: time_intervals.months `march:junius` is not a month (january to december, or 1 to 12) or a range of them such as march:may"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Start month after end month.
            text: "
- months: ['december:january']
",
            read: Err(vec!["2:12: time_intervals.months `december:january` ends before it starts; a range does not wrap around the year: write `december` and `january`"]),
            contains: &[],
            excludes: &[],
        },
        Case {
            // Start year after end year.
            text: "
- years: ['2022:2020']
",
            read: Err(vec!["2:11: time_intervals.years `2022:2020` ends before it starts"]),
            contains: &[],
            excludes: &[],
        },
    ];
    for c in cases {
        let got = intervals(c.text);
        let want = c
            .read
            .map_err(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, want, "{}", c.text);
        let w = window(got.unwrap_or_default());
        for t in c.contains {
            assert!(w.in_force(at(t)), "{} contains {t}", c.text);
        }
        for t in c.excludes {
            assert!(!w.in_force(at(t)), "{} excludes {t}", c.text);
        }
    }
}

/// `completeTestCases`: from the text to the times it holds.
#[test]
fn whole_intervals_as_alertmanager() {
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            "
- weekdays: ['monday:wednesday', 'saturday', 'sunday']
  times:
    - start_time: '13:00'
      end_time: '15:00'
  days_of_month: ['1', '10', '20:-1']
  years: ['2020:2023']
  months: ['january:march']
",
            &["10 Jan 21 13:00 +0000", "30 Jan 21 14:24 +0000"],
            &[
                "09 Jan 21 13:00 +0000",
                "20 Jan 21 12:59 +0000",
                "02 Feb 21 13:00 +0000",
            ],
        ),
        (
            // A range starting after the month's last day is not clamped into it.
            "
- days_of_month: ['30:31']
  years: ['2020:2023']
  months: ['february']
",
            &[],
            &["28 Feb 21 13:00 +0000"],
        ),
    ];
    for (text, inside, outside) in cases {
        let w = window(intervals(text).unwrap_or_else(|e| panic!("{e:?}")));
        for t in inside {
            assert!(w.in_force(at(t)), "{text} contains {t}");
        }
        for t in outside {
            assert!(!w.in_force(at(t)), "{text} excludes {t}");
        }
    }
}

#[test]
fn numbers_months_by_number_and_zones_are_read_as_written() {
    let got = intervals(
        "- { days_of_month: [1, -1], months: [3, '10:12'], years: [2026], location: Europe/Berlin }",
    )
    .unwrap();
    assert_eq!(got[0].days_of_month, [r(1, 1), r(-1, -1)]);
    assert_eq!(got[0].months, [r(3, 3), r(10, 12)]);
    assert_eq!(got[0].years, [r(2026, 2026)]);
    assert_eq!(got[0].location, "Europe/Berlin".parse::<Tz>().unwrap());
    assert_eq!(
        intervals("- {}").unwrap(),
        [any()],
        "no field: all the time"
    );

    assert_eq!(
        intervals("- { months: ['13'], years: ['0', 'soon'], weekdays: [], location: Local }"),
        Err(vec![
            "1:14: time_intervals.months `13` is not a month (january to december, or 1 to 12) or a range of them such as march:may".to_string(),
            "1:29: time_intervals.years `0` is not a year such as 2026 or a range of years such as 2026:2027".to_string(),
            "1:34: time_intervals.years `soon` is not a year such as 2026 or a range of years such as 2026:2027".to_string(),
            "1:53: time_intervals.weekdays is empty, so the interval would never match; remove the key to mean every day".to_string(),
            "1:67: time_intervals.location `Local` is the host's zone, which a window does not use: write the IANA name of the zone the window is planned in, such as Europe/Berlin (UTC when not given)".to_string(),
        ])
    );
    assert_eq!(
        intervals("- { location: europe/berlin }\n- { location: Mars/Olympus_Mons, hours: [1] }"),
        Err(vec![
            "1:15: time_intervals.location `europe/berlin` is not a time zone; did you mean `Europe/Berlin`?".to_string(),
            "2:15: time_intervals.location `Mars/Olympus_Mons` is not a time zone of the IANA database, such as Europe/Berlin or UTC".to_string(),
            "2:34: unknown key `time_intervals.hours` (expected one of: times, weekdays, days_of_month, months, years, location)".to_string(),
        ])
    );
}

fn berlin(text: &str) -> MaintenanceWindow {
    window(intervals(&format!("[ {{ {text}, location: Europe/Berlin }} ]")).unwrap())
}

#[test]
fn a_window_across_the_spring_daylight_saving_change() {
    // 2026-03-29 in Berlin: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
    let w = berlin("times: [ { start_time: '01:00', end_time: '02:30' } ]");
    let inside = utc(2026, 3, 29, 0, 30); // 01:30 CET
    assert!(w.in_force(inside));
    // 02:30 never shows on the clock that day: the window ends with the jump, at 03:00 CEST.
    assert_eq!(w.until(inside), Some(utc(2026, 3, 29, 1, 0)));
    assert!(!w.in_force(utc(2026, 3, 29, 1, 0)));

    // A range the clock jumps into: 02:00 to 04:00 is 03:00 CEST to 04:00 CEST that day.
    let w = berlin("times: [ { start_time: '02:00', end_time: '04:00' } ]");
    assert!(!w.in_force(utc(2026, 3, 29, 0, 59))); // 01:59 CET
    let start = utc(2026, 3, 29, 1, 0); // 03:00 CEST
    assert!(w.in_force(start));
    assert_eq!(w.until(start), Some(utc(2026, 3, 29, 2, 0)));
}

#[test]
fn a_window_across_the_autumn_daylight_saving_change() {
    // 2026-10-25 in Berlin: 03:00 CEST (01:00 UTC) becomes 02:00 CET; 02:00-03:00 is twice.
    let w = berlin("times: [ { start_time: '02:00', end_time: '02:30' } ]");
    let first = utc(2026, 10, 25, 0, 10); // 02:10 CEST
    assert!(w.in_force(first));
    assert_eq!(w.until(first), Some(utc(2026, 10, 25, 0, 30)), "02:30 CEST");
    assert!(!w.in_force(utc(2026, 10, 25, 0, 40))); // 02:40 CEST
    let second = utc(2026, 10, 25, 1, 10); // 02:10 CET, the second time
    assert!(w.in_force(second));
    assert_eq!(w.until(second), Some(utc(2026, 10, 25, 1, 30)), "02:30 CET");

    // A night window over the change lasts an hour longer in UTC.
    let w = berlin("times: [ { start_time: '01:00', end_time: '04:00' } ]");
    let start = utc(2026, 10, 24, 23, 0); // 01:00 CEST
    assert_eq!(w.until(start), Some(utc(2026, 10, 25, 3, 0)), "04:00 CET");
}

#[test]
fn until_follows_the_window_over_days_and_adjoining_intervals() {
    // Saturday and Sunday, no times: until Monday 00:00.
    let weekend = window(intervals("- weekdays: ['saturday', 'sunday']").unwrap());
    let saturday = utc(2026, 12, 5, 15, 7);
    assert!(weekend.in_force(saturday));
    assert_eq!(weekend.until(saturday), Some(utc(2026, 12, 7, 0, 0)));

    // Two intervals that meet at midnight are one stretch.
    let night = window(
        intervals(
            "
- times: [ { start_time: '22:00', end_time: '24:00' } ]
- times: [ { start_time: '00:00', end_time: '06:00' } ]
  weekdays: ['monday:friday']
",
        )
        .unwrap(),
    );
    let thursday = utc(2026, 12, 3, 23, 0);
    assert_eq!(night.until(thursday), Some(utc(2026, 12, 4, 6, 0)));
    // Friday night runs into Saturday, which the second interval leaves out.
    let friday = utc(2026, 12, 4, 23, 0);
    assert_eq!(night.until(friday), Some(utc(2026, 12, 5, 0, 0)));

    // The last three days of a leap February, then the 1st of March.
    let month_end = window(intervals("- days_of_month: ['-3:-1']").unwrap());
    assert_eq!(
        month_end.until(utc(2028, 2, 27, 8, 0)),
        Some(utc(2028, 3, 1, 0, 0))
    );
    assert!(!month_end.in_force(utc(2028, 2, 26, 23, 59)));

    // A month range, ending with the year's last month.
    let quarter = window(intervals("- { months: ['october:december'], years: ['2026'] }").unwrap());
    assert_eq!(
        quarter.until(utc(2026, 11, 1, 0, 0)),
        Some(utc(2027, 1, 1, 0, 0))
    );

    // All the time: no end within the year looked at.
    let always =
        window(intervals("- times: [ { start_time: '00:00', end_time: '24:00' } ]").unwrap());
    assert!(always.in_force(saturday));
    assert_eq!(always.until(saturday), None);

    // Out of force: no end, and no fact.
    let past = window(intervals("- years: ['2020:2021']").unwrap());
    assert_eq!(past.until(saturday), None);
    assert_eq!(past.fact(saturday), None);
    assert_eq!(
        weekend.fact(saturday),
        Some(WindowFact {
            name: "w".into(),
            until: Some(utc(2026, 12, 7, 0, 0))
        })
    );
}
