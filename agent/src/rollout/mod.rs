//! Rollouts without a server (DESIGN section 11): every host decides for itself, from the status
//! branches of the others, whether it may move to a new commit now. fleet.toml's `[rollout]`,
//! `[[windows]]` and `[disruption]` are checked here (`Policy::of`), the decision is pure
//! (`gate::decide`), and the only I/O is reading the status branches (`read`) and taking a
//! disruption slot (`lock`).

pub mod gate;
pub mod lock;
pub mod progress;
pub mod quarantine;
pub mod read;
pub mod trust;
pub mod window;

use crate::spec::fleet::{check_pattern, glob_match, FleetToml};
use serde::Deserialize;
use std::time::Duration;

/// `[rollout]` as written in fleet.toml.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RolloutToml {
    /// Host patterns per wave; a host is in the first wave it matches.
    pub waves: Vec<Vec<String>>,
    #[serde(default)]
    pub soak: Option<String>,
    #[serde(default)]
    pub success: Option<ShareToml>,
    #[serde(default)]
    pub max_failed: Option<u32>,
}

/// "95%" or a count.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum ShareToml {
    Count(u32),
    Text(String),
}

/// `[[windows]]` as written in fleet.toml.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WindowToml {
    pub hosts: Vec<String>,
    /// mon..sun; every day when left out.
    #[serde(default)]
    pub days: Vec<String>,
    /// "HH:MM".
    pub start: String,
    pub duration: String,
    /// "UTC" (default) or "local".
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `[disruption]` as written in fleet.toml.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DisruptionToml {
    /// A count or "10%" of the fleet's hosts.
    pub max_parallel: ShareToml,
    #[serde(default)]
    pub lock_ttl: Option<String>,
}

/// A share of a group of hosts: a count, or a percentage (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Count(u32),
    Percent(u32),
}

impl Share {
    fn parse(s: &ShareToml, key: &str) -> Result<Share, String> {
        match s {
            ShareToml::Count(n) => Ok(Share::Count(*n)),
            ShareToml::Text(t) => {
                let bad = || {
                    format!(
                        "{key} = {t:?}: give a count (2) or a percentage from 0% to 100% (\"50%\")"
                    )
                };
                let p = t.trim().strip_suffix('%').ok_or_else(bad)?;
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(bad());
                }
                Ok(Share::Percent(p))
            }
        }
    }

    /// How many of `n` hosts this is (a percentage rounded up; never more than `n`).
    pub fn of(&self, n: usize) -> usize {
        match *self {
            Share::Count(c) => (c as usize).min(n),
            Share::Percent(p) => (n * p as usize).div_ceil(100),
        }
    }
}

/// When, in the week, a host may move to a new commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub hosts: Vec<String>,
    /// Days as 0 = Monday .. 6 = Sunday.
    pub days: Vec<u8>,
    /// Seconds after midnight.
    pub start: u32,
    pub duration: Duration,
    /// Local time of the host rather than UTC.
    pub local: bool,
}

/// The checked rollout settings of one fleet.toml.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub waves: Vec<Vec<String>>,
    pub soak: Duration,
    pub success: Option<Share>,
    pub max_failed: u32,
    pub windows: Vec<Window>,
    /// Slots and their time to live.
    pub disruption: Option<(Share, Duration)>,
}

/// Longest window: a week (a window that is always open is no window).
const MAX_WINDOW: Duration = Duration::from_secs(7 * 86400);
/// Longest soak and lock_ttl.
const MAX_SOAK: Duration = Duration::from_secs(30 * 86400);
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn duration(s: &str, key: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{key} = {s:?}: {e}: give a duration like \"10m\" or \"2h\""))?;
    if d > max {
        return Err(format!(
            "{key} = {s:?}: at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// "HH:MM" -> seconds after midnight.
pub fn parse_start(s: &str) -> Result<u32, String> {
    let bad = || format!("start = {s:?}: give a time of day as \"HH:MM\", 00:00 to 23:59");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

impl Policy {
    /// Checks fleet.toml's rollout sections; the error names the section and the key.
    pub fn of(f: &FleetToml) -> Result<Policy, String> {
        let mut p = Policy::default();
        if let Some(r) = &f.rollout {
            let at = |e: String| format!("[rollout] {e}");
            if r.waves.is_empty() || r.waves.iter().any(|w| w.is_empty()) {
                return Err(at(
                    "waves: give at least one wave, each a list of host patterns".into(),
                ));
            }
            for (i, w) in r.waves.iter().enumerate() {
                for pat in w {
                    check_pattern(pat).map_err(|e| at(format!("waves #{}: {e}", i + 1)))?;
                }
            }
            p.waves = r.waves.clone();
            if let Some(s) = &r.soak {
                p.soak = duration(s, "soak", MAX_SOAK).map_err(at)?;
            }
            p.success = match &r.success {
                Some(s) => Some(Share::parse(s, "success").map_err(at)?),
                None => Some(Share::Percent(100)),
            };
            p.max_failed = r.max_failed.unwrap_or(0);
        }
        for (i, w) in f.windows.iter().enumerate() {
            let at = |e: String| format!("[[windows]] #{}: {e}", i + 1);
            if w.hosts.is_empty() {
                return Err(at("`hosts` is empty: give at least one pattern".into()));
            }
            for pat in &w.hosts {
                check_pattern(pat).map_err(at)?;
            }
            let mut days = Vec::new();
            for d in &w.days {
                let i = DAYS
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(d.trim()))
                    .ok_or_else(|| {
                        at(format!(
                            "days: unknown day {d:?}: use mon, tue, wed, thu, fri, sat, sun"
                        ))
                    })?;
                days.push(i as u8);
            }
            if days.is_empty() {
                days = (0..7).collect();
            }
            let start = parse_start(&w.start).map_err(at)?;
            let dur = duration(&w.duration, "duration", MAX_WINDOW).map_err(at)?;
            if dur.is_zero() {
                return Err(at(format!(
                    "duration = {:?}: must be longer than 0",
                    w.duration
                )));
            }
            let local = match w.timezone.as_deref().map(str::trim) {
                None | Some("UTC") | Some("utc") => false,
                Some("local") => true,
                Some(other) => {
                    return Err(at(format!(
                        "timezone = {other:?}: use \"UTC\" or \"local\" (the host's own time zone)"
                    )))
                }
            };
            p.windows.push(Window {
                hosts: w.hosts.clone(),
                days,
                start,
                duration: dur,
                local,
            });
        }
        if let Some(d) = &f.disruption {
            let at = |e: String| format!("[disruption] {e}");
            let share = Share::parse(&d.max_parallel, "max_parallel").map_err(at)?;
            if share == Share::Count(0) || share == Share::Percent(0) {
                return Err(at("max_parallel must be at least 1 (or 1%)".into()));
            }
            let ttl = duration(d.lock_ttl.as_deref().unwrap_or("30m"), "lock_ttl", MAX_SOAK)
                .map_err(at)?;
            if ttl.is_zero() {
                return Err(at("lock_ttl must be longer than 0".into()));
            }
            p.disruption = Some((share, ttl));
        }
        Ok(p)
    }

    /// Whether any rollout setting is present (without one, a host moves at once, as before).
    pub fn is_empty(&self) -> bool {
        self.waves.is_empty() && self.windows.is_empty() && self.disruption.is_none()
    }

    /// The wave of `host`: the first whose patterns match; hosts matching none come after the
    /// last wave. `None` without `[rollout]`.
    pub fn wave_of(&self, host: &str) -> Option<usize> {
        if self.waves.is_empty() {
            return None;
        }
        Some(
            self.waves
                .iter()
                .position(|w| w.iter().any(|p| glob_match(p, host)))
                .unwrap_or(self.waves.len()),
        )
    }

    /// Wave patterns that match none of `hosts` (a typo would hold every later wave forever).
    pub fn unmatched_patterns<'a>(&'a self, hosts: &[String]) -> Vec<&'a str> {
        self.waves
            .iter()
            .flatten()
            .filter(|p| !hosts.iter().any(|h| glob_match(p, h)))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        FleetToml::parse(text).and_then(|f| Policy::of(&f))
    }

    #[test]
    fn parses_the_design_example() {
        let p = policy(
            r#"
[rollout]
waves = [["canary-*"], ["store-0*", "store-1*"], ["*"]]
soak = "10m"
success = "95%"
max_failed = 1

[[windows]]
hosts = ["store-*"]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "02:00"
duration = "2h"
timezone = "UTC"

[disruption]
max_parallel = "10%"
lock_ttl = "30m"
"#,
        )
        .unwrap();
        assert_eq!(p.waves.len(), 3);
        assert_eq!(p.soak, Duration::from_secs(600));
        assert_eq!(p.success, Some(Share::Percent(95)));
        assert_eq!(p.max_failed, 1);
        assert_eq!(p.windows[0].days, [0, 1, 2, 3, 4]);
        assert_eq!(p.windows[0].start, 7200);
        assert_eq!(
            p.disruption,
            Some((Share::Percent(10), Duration::from_secs(1800)))
        );
        assert_eq!(p.wave_of("canary-1"), Some(0));
        assert_eq!(p.wave_of("store-12"), Some(1));
        assert_eq!(p.wave_of("store-22"), Some(2));
        assert_eq!(policy("").unwrap().wave_of("x"), None);
    }

    #[test]
    fn shares() {
        assert_eq!(Share::Percent(50).of(3), 2);
        assert_eq!(Share::Percent(100).of(4), 4);
        assert_eq!(Share::Percent(0).of(4), 0);
        assert_eq!(Share::Count(2).of(1), 1);
        assert_eq!(Share::Percent(10).of(0), 0);
    }

    #[test]
    fn bad_input_names_the_key() {
        for (text, needle) in [
            ("[rollout]\nwaves = []\n", "[rollout] waves"),
            ("[rollout]\nwaves = [[\"a\"]]\nsoak = \"soon\"\n", "soak = \"soon\""),
            ("[rollout]\nwaves = [[\"a\"]]\nsuccess = \"150%\"\n", "success = \"150%\""),
            ("[rollout]\nwaves = [[\"a\"]]\nspeed = 1\n", "unknown field `speed`"),
            ("[rollout]\nwaves = [[\"a[\"]]\n", "without a closing"),
            (
                "[[windows]]\nhosts = [\"a\"]\nstart = \"25:00\"\nduration = \"1h\"\n",
                "[[windows]] #1: start = \"25:00\"",
            ),
            (
                "[[windows]]\nhosts = [\"a\"]\nstart = \"02:60\"\nduration = \"1h\"\n",
                "start = \"02:60\"",
            ),
            (
                "[[windows]]\nhosts = [\"a\"]\nstart = \"02:00\"\nduration = \"8d\"\n",
                "duration = \"8d\": at most 7days",
            ),
            (
                "[[windows]]\nhosts = [\"a\"]\ndays = [\"funday\"]\nstart = \"02:00\"\nduration = \"1h\"\n",
                "unknown day \"funday\"",
            ),
            (
                "[[windows]]\nhosts = [\"a\"]\nstart = \"02:00\"\nduration = \"1h\"\ntimezone = \"CET\"\n",
                "timezone = \"CET\"",
            ),
            ("[disruption]\nmax_parallel = 0\n", "at least 1"),
            ("[disruption]\nmax_parallel = \"x\"\n", "max_parallel = \"x\""),
        ] {
            let e = policy(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let p = policy("[rollout]\nwaves = [[\"canary-*\"], [\"stor-*\"]]\n").unwrap();
        let hosts = vec!["canary-1".to_string(), "store-1".to_string()];
        assert_eq!(p.unmatched_patterns(&hosts), ["stor-*"]);
    }
}
