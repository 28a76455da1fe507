//! Window math (pure): is a window open at a moment, and when does it open next. Times are
//! seconds since the epoch; `offset` is the host's UTC offset in seconds for `timezone = "local"`.

use super::{Window, DAYS};
use crate::spec::fleet::glob_match;

const DAY: i64 = 86400;

/// Monday = 0 of the day `days` days after 1970-01-01 (a Thursday).
fn weekday(days: i64) -> u8 {
    (days + 3).rem_euclid(7) as u8
}

/// The start (in the window's clock) of the occurrence open at `t`, if one is.
fn open_since(w: &Window, t: i64) -> Option<i64> {
    let today = t.div_euclid(DAY);
    let len = w.duration.as_secs() as i64;
    // A window may start up to 7 days before (it lasts at most a week).
    (0..=7).find_map(|back| {
        let day = today - back;
        let start = day * DAY + i64::from(w.start);
        (w.days.contains(&weekday(day)) && start <= t && t < start + len).then_some(start)
    })
}

/// The next start (in the window's clock) after `t`.
fn next_start(w: &Window, t: i64) -> i64 {
    let today = t.div_euclid(DAY);
    (0..=8)
        .map(|ahead| (today + ahead) * DAY + i64::from(w.start))
        .find(|s| *s > t && w.days.contains(&weekday(s.div_euclid(DAY))))
        .unwrap_or(t)
}

/// Whether `w` is open at `now` (UTC seconds), with `offset` for local windows.
pub fn is_open(w: &Window, now: i64, offset: i64) -> bool {
    let t = if w.local { now + offset } else { now };
    open_since(w, t).is_some()
}

/// "mon 02:00 UTC": when `w` opens next after `now`.
pub fn opens(w: &Window, now: i64, offset: i64) -> String {
    let t = if w.local { now + offset } else { now };
    let s = next_start(w, t);
    let day = DAYS[weekday(s.div_euclid(DAY)) as usize];
    let secs = s.rem_euclid(DAY);
    format!(
        "{day} {:02}:{:02} {}",
        secs / 3600,
        secs % 3600 / 60,
        if w.local { "local time" } else { "UTC" }
    )
}

/// Whether `host` may move now: no window matches it, or one of those that match is open.
/// `Err` says when the first of them opens.
pub fn check(windows: &[Window], host: &str, now: i64, offset: i64) -> Result<(), String> {
    let mine: Vec<&Window> = windows
        .iter()
        .filter(|w| w.hosts.iter().any(|p| glob_match(p, host)))
        .collect();
    if mine.is_empty() || mine.iter().any(|w| is_open(w, now, offset)) {
        return Ok(());
    }
    let next = mine
        .iter()
        .min_by_key(|w| {
            let t = if w.local { now + offset } else { now };
            next_start(w, t) - t
        })
        .expect("not empty");
    Err(format!("window opens {}", opens(next, now, offset)))
}

/// Where `now` falls for `host` (maintenance runs once per window occurrence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occurrence {
    /// No window matches the host.
    NoWindow,
    /// A matching window is open: the occurrence's start (UTC seconds, its key), and when the
    /// next one opens ("tue 02:00 UTC", and in UTC seconds).
    Open {
        start: i64,
        next: String,
        next_at: i64,
    },
    /// Matching windows, all closed: "window opens mon 02:00 UTC", and when (UTC seconds).
    Closed { why: String, opens_at: i64 },
}

/// The occurrence of `host`'s windows open at `now`, if any.
pub fn occurrence(windows: &[Window], host: &str, now: i64, offset: i64) -> Occurrence {
    let mine: Vec<&Window> = windows
        .iter()
        .filter(|w| w.hosts.iter().any(|p| glob_match(p, host)))
        .collect();
    if mine.is_empty() {
        return Occurrence::NoWindow;
    }
    for w in &mine {
        let shift = if w.local { offset } else { 0 };
        if let Some(start) = open_since(w, now + shift) {
            return Occurrence::Open {
                start: start - shift,
                next: opens(w, now, offset),
                next_at: next_start(w, now + shift) - shift,
            };
        }
    }
    let opens_at = mine
        .iter()
        .map(|w| {
            let shift = if w.local { offset } else { 0 };
            next_start(w, now + shift) - shift
        })
        .min()
        .unwrap_or(now);
    match check(windows, host, now, offset) {
        Err(why) => Occurrence::Closed { why, opens_at },
        Ok(()) => Occurrence::NoWindow, // not reached: none of them is open
    }
}

/// The start (UTC seconds) of the occurrence of `host`'s windows open at `now`; 0 when no window matches the host (it is always "open") or none
/// is open. Work done "at most once per window" keys on it.
pub fn occurrence_start(windows: &[Window], host: &str, now: i64, offset: i64) -> i64 {
    match occurrence(windows, host, now, offset) {
        Occurrence::Open { start, .. } => start,
        _ => 0,
    }
}

/// The host's UTC offset now, in seconds (for `timezone = "local"`), from the C library's
/// idea of the local time zone (TZ, /etc/localtime).
#[allow(unsafe_code)]
pub fn local_offset(now: i64) -> i64 {
    let t: nix::libc::time_t = now as nix::libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass; both pointers are valid.
    unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: &str) -> i64 {
        humantime::parse_rfc3339(s)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn window(days: &[u8], start: u32, hours: u64, local: bool) -> Window {
        Window {
            hosts: vec!["store-*".into()],
            days: days.to_vec(),
            start,
            duration: Duration::from_secs(hours * 3600),
            local,
        }
    }

    #[test]
    fn open_or_not() {
        // 2026-11-30 is a Monday.
        let weekdays = window(&[0, 1, 2, 3, 4], 2 * 3600, 2, false);
        let overnight = window(&[4], 22 * 3600, 6, false); // fri 22:00 to sat 04:00
        let cases = [
            (&weekdays, "2026-11-30T01:59:59Z", false),
            (&weekdays, "2026-11-30T02:00:00Z", true),
            (&weekdays, "2026-11-30T03:59:59Z", true),
            (&weekdays, "2026-11-30T04:00:00Z", false),
            (&weekdays, "2026-12-05T02:30:00Z", false), // saturday
            (&weekdays, "2026-12-04T02:30:00Z", true),  // friday
            (&overnight, "2026-12-04T23:00:00Z", true),
            (&overnight, "2026-12-05T03:59:00Z", true), // saturday, from friday's start
            (&overnight, "2026-12-05T04:00:00Z", false),
            (&overnight, "2026-12-05T23:00:00Z", false), // saturday's own start: not a day
        ];
        for (w, t, want) in cases {
            assert_eq!(is_open(w, at(t), 0), want, "{t}");
        }
        // Local: 02:00 at UTC+1 is 01:00 UTC.
        let local = window(&[0], 2 * 3600, 1, true);
        assert!(is_open(&local, at("2026-11-30T01:30:00Z"), 3600));
        assert!(!is_open(&local, at("2026-11-30T02:30:00Z"), 3600));
    }

    #[test]
    fn occurrences_have_one_key_while_open() {
        let ws = [window(&[0, 1, 2, 3, 4], 2 * 3600, 2, false)];
        let open = |t| occurrence(&ws, "store-1", at(t), 0);
        let start = at("2026-11-30T02:00:00Z");
        let want = Occurrence::Open {
            start,
            next: "tue 02:00 UTC".into(),
            next_at: start + 86400,
        };
        assert_eq!(open("2026-11-30T02:00:00Z"), want);
        assert_eq!(open("2026-11-30T03:59:00Z"), want);
        assert_eq!(
            open("2026-11-30T04:00:00Z"),
            Occurrence::Closed {
                why: "window opens tue 02:00 UTC".into(),
                opens_at: start + 86400
            }
        );
        assert!(matches!(
            open("2026-12-01T02:30:00Z"),
            Occurrence::Open { start: s, .. } if s == start + 86400
        ));
        assert_eq!(
            occurrence(&ws, "web-1", at("2026-11-30T03:00:00Z"), 0),
            Occurrence::NoWindow
        );
        // A local window's key is in UTC: 02:00 at UTC+1 started at 01:00 UTC.
        let local = [window(&[0], 2 * 3600, 1, true)];
        assert!(matches!(
            occurrence(&local, "store-1", at("2026-11-30T01:30:00Z"), 3600),
            Occurrence::Open { start: s, .. } if s == at("2026-11-30T01:00:00Z")
        ));
    }

    #[test]
    fn when_it_opens() {
        let weekdays = window(&[0, 1, 2, 3, 4], 2 * 3600, 2, false);
        for (t, want) in [
            ("2026-11-30T01:00:00Z", "mon 02:00 UTC"),
            ("2026-11-30T05:00:00Z", "tue 02:00 UTC"),
            ("2026-12-04T05:00:00Z", "mon 02:00 UTC"),
            ("2026-12-05T12:00:00Z", "mon 02:00 UTC"),
        ] {
            assert_eq!(opens(&weekdays, at(t), 0), want, "{t}");
        }
        let ws = [weekdays.clone(), window(&[5], 12 * 3600, 1, false)];
        assert_eq!(check(&ws, "web-1", at("2026-12-05T05:00:00Z"), 0), Ok(()));
        assert_eq!(
            check(&ws, "store-1", at("2026-12-05T05:00:00Z"), 0),
            Err("window opens sat 12:00 UTC".into())
        );
        assert_eq!(check(&ws, "store-1", at("2026-12-05T12:10:00Z"), 0), Ok(()));
        // Two passes in one occurrence share its key; the next day's is another.
        let occ = |t: &str| occurrence_start(&ws, "store-1", at(t), 0);
        assert_eq!(occ("2026-11-30T02:10:00Z"), occ("2026-11-30T03:50:00Z"));
        assert_ne!(occ("2026-11-30T02:10:00Z"), occ("2026-12-01T02:10:00Z"));
        assert_eq!(occ("2026-11-30T05:00:00Z"), 0);
        assert_eq!(
            occurrence_start(&ws, "web-1", at("2026-11-30T02:10:00Z"), 0),
            0
        );
        let local = window(&[0], 2 * 3600, 1, true);
        assert_eq!(
            opens(&local, at("2026-11-30T05:00:00Z"), -3600),
            "mon 02:00 local time"
        );
    }
}
