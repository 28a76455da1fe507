//! Package versions: the pins of `[packages] install` ("nginx=1.26.0-1", "curl=8.*"), how a
//! pin matches an installed or available version, and the version order of dpkg and rpm (their
//! own algorithms, so "the newest matching" and "upgrade or downgrade" agree with the tools).
//! Pure: no I/O.

use std::cmp::Ordering;

/// Longest version a pin may name (Debian's longest real versions are well under 100).
pub const MAX_PIN: usize = 128;

/// Which package manager's version rules apply on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// dpkg: `[epoch:]upstream[-revision]`, `~` sorts before everything.
    Deb,
    /// rpm: `[epoch:]version-release`, rpmvercmp on each part.
    Rpm,
}

impl Scheme {
    /// Orders two versions as dpkg (`dpkg --compare-versions`) or rpm (`rpmdev-vercmp`) would.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Deb => deb_compare(a, b),
            Scheme::Rpm => rpm_compare(a, b),
        }
    }
}

/// A `[packages] install` entry split into its name and version pin ("nginx=1.26.0-1" ->
/// ("nginx", Some("1.26.0-1"))). The name is checked by the caller; the pin is checked here.
pub fn split_entry(entry: &str) -> Result<(&str, Option<&str>), String> {
    let Some((name, pin)) = entry.split_once('=') else {
        return Ok((entry, None));
    };
    check_pin(pin).map_err(|e| {
        format!("{entry:?}: {e}: write NAME=VERSION (\"nginx=1.26.0-1\") or NAME=PATTERN (\"curl=8.*\"), or the bare name for any version")
    })?;
    Ok((name, Some(pin)))
}

/// The characters of Debian and rpm versions plus `*`; nothing a shell or an option parser could
/// take (no leading `-`), bounded in length.
pub fn check_pin(pin: &str) -> Result<(), String> {
    if pin.is_empty() {
        return Err("the version after `=` is empty".into());
    }
    if pin.len() > MAX_PIN {
        return Err(format!("the version is longer than {MAX_PIN} characters"));
    }
    if !pin.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '*') {
        return Err(format!(
            "the version {pin:?} must start with a letter, a digit or `*`"
        ));
    }
    if let Some(bad) = pin
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".+~:_*-".contains(*c)))
    {
        return Err(format!(
            "the version {pin:?} has {bad:?}: a version is made of letters, digits and . + ~ : _ - (and * as a wildcard)"
        ));
    }
    Ok(())
}

/// Whether the pin has a wildcard (the newest matching version is installed).
pub fn is_pattern(pin: &str) -> bool {
    pin.contains('*')
}

/// Whether `version` (as dpkg or rpm reports it) satisfies `pin`: equal, or matching the
/// pattern (`*` any run of characters). A pin without an epoch ignores the version's epoch
/// (`2.0-1` matches `1:2.0-1`); a pin with one must match it (`0:` and no epoch are the same).
pub fn pin_matches(pin: &str, version: &str) -> bool {
    let version = strip_zero_epoch(version);
    let pin = strip_zero_epoch(pin);
    let version = if has_epoch(pin) {
        version
    } else {
        without_epoch(version)
    };
    wildcard_match(pin.as_bytes(), version.as_bytes())
}

/// "0:1.0-1" -> "1.0-1"; rpm prints a missing epoch as "(none)" or "0".
pub fn strip_zero_epoch(v: &str) -> &str {
    for zero in ["0:", "(none):"] {
        if let Some(rest) = v.strip_prefix(zero) {
            return rest;
        }
    }
    v
}

fn has_epoch(v: &str) -> bool {
    v.split_once(':')
        .is_some_and(|(e, _)| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

fn without_epoch(v: &str) -> &str {
    if has_epoch(v) {
        v.split_once(':').map_or(v, |(_, rest)| rest)
    } else {
        v
    }
}

/// `*` matches any run (also empty); everything else itself. One backtrack point, so the cost is
/// at most pattern x text (both bounded by [`MAX_PIN`] and the package manager's own versions).
fn wildcard_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Of `versions`, the one `pin` names: for an exact pin the equal one, for a pattern the newest
/// matching (in `scheme`'s order).
pub fn pick<'a>(
    scheme: Scheme,
    pin: &str,
    versions: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    versions
        .into_iter()
        .filter(|v| pin_matches(pin, v))
        .max_by(|a, b| scheme.compare(a, b))
}

/// Splits `[epoch:]rest` into (epoch, rest); no or a non-numeric epoch is 0.
fn epoch(v: &str) -> (u64, &str) {
    match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    }
}

/// dpkg's order: epoch as a number, then the upstream version and the revision (after the last
/// `-`; none is "0"), each with `verrevcmp`.
fn deb_compare(a: &str, b: &str) -> Ordering {
    let (ea, a) = epoch(a);
    let (eb, b) = epoch(b);
    let split = |v: &str| -> (String, String) {
        match v.rsplit_once('-') {
            Some((up, rev)) => (up.to_string(), rev.to_string()),
            None => (v.to_string(), String::new()),
        }
    };
    let (ua, ra) = split(a);
    let (ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(&ua, &ub))
        .then_with(|| verrevcmp(&ra, &rb))
}

/// dpkg's character weight outside digit runs: `~` before the end, the end before letters,
/// letters before everything else.
fn deb_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp` (lib/dpkg/version.c): alternating non-digit and digit runs.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let ac = deb_order(a.get(i).copied());
            let bc = deb_order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// rpm's order of `[epoch:]version[-release]`: epoch, then version, then release (only when both
/// have one), each with `rpmvercmp`.
fn rpm_compare(a: &str, b: &str) -> Ordering {
    let (ea, a) = epoch(strip_zero_epoch(a));
    let (eb, b) = epoch(strip_zero_epoch(b));
    let (va, ra) = match a.rsplit_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (a, None),
    };
    let (vb, rb) = match b.rsplit_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (b, None),
    };
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(ra), Some(rb)) => rpmvercmp(ra, rb),
            _ => Ordering::Equal,
        })
}

/// rpm's `rpmvercmp` (rpmio/rpmver.c): segments of digits or letters, separators ignored, `~`
/// before anything (even the end), `^` after the end but before anything else.
fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(ca), Some(_)) = (ca, cb) else {
            break;
        };
        let numeric = ca.is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let ea = i + a[i..].iter().take_while(|c| class(c)).count();
        let eb = j + b[j..].iter().take_while(|c| class(c)).count();
        let (mut sa, mut sb) = (&a[i..ea], &b[j..eb]);
        if sb.is_empty() {
            // Different kinds of segment: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        if numeric {
            while sa.first() == Some(&b'0') {
                sa = &sa[1..];
            }
            while sb.first() == Some(&b'0') {
                sb = &sb[1..];
            }
            match sa.len().cmp(&sb.len()) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        match sa.cmp(sb) {
            Ordering::Equal => {}
            other => return other,
        }
        i = ea;
        j = eb;
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    /// Cases from dpkg's own test suite (t/t-version.c) and Debian policy's examples.
    #[test]
    fn deb_order() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0-1", "1.0-1", Equal),
            ("0:1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("1.00", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.0+b1", "1.0", Greater),
            ("1.26.0-1", "1.24.0-1", Greater),
            ("2.0-1", "2.0-10", Less),
            ("2.0-1~bpo1", "2.0-1", Less),
            ("8.14.1-2", "8.14.1-2+deb13u1", Less),
            ("1:0.9", "0:9.9", Greater),
            ("a", "b", Less),
            ("1.2-3-4", "1.2-3-5", Less),
            ("1.2-3-4", "1.2-4", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(Scheme::Deb.compare(a, b), want, "{a} vs {b}");
            assert_eq!(Scheme::Deb.compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// Cases from rpm's test suite (tests/rpmvercmp.at).
    #[test]
    fn rpm_order() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("2.0a", "2.0", Greater),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("1.0", "1", Greater),
            ("2.50", "2.5", Greater),
            ("fc4", "fc.4", Equal),
            ("FC5", "fc4", Less),
            ("2a", "2.0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.01", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("1.0-1", "1.0-2", Less),
            ("1:1.0-1", "2.0-1", Greater),
            ("0:1.0-1", "1.0-1", Equal),
            ("(none):1.0-1", "1.0-1", Equal),
            ("2.0-1.fc40", "2.0-10.fc40", Less),
            ("1.0", "1.0-5", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(Scheme::Rpm.compare(a, b), want, "{a} vs {b}");
            assert_eq!(Scheme::Rpm.compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn entries_split_and_checked() {
        assert_eq!(split_entry("curl"), Ok(("curl", None)));
        assert_eq!(
            split_entry("nginx=1.26.0-1"),
            Ok(("nginx", Some("1.26.0-1")))
        );
        assert_eq!(split_entry("curl=8.*"), Ok(("curl", Some("8.*"))));
        assert_eq!(
            split_entry("x=1:2.0~rc1+b2"),
            Ok(("x", Some("1:2.0~rc1+b2")))
        );
        for bad in [
            "nginx=",
            "nginx=-1",
            "nginx=1 2",
            "nginx=1;id",
            "nginx=$(id)",
            "nginx=1=2",
            "nginx=1\n",
            "nginx=é",
        ] {
            let e = split_entry(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("NAME=VERSION"),
                "{e}"
            );
        }
        assert!(split_entry(&format!("n={}", "1".repeat(MAX_PIN))).is_ok());
        assert!(split_entry(&format!("n={}", "1".repeat(MAX_PIN + 1)))
            .unwrap_err()
            .contains("longer"));
    }

    #[test]
    fn pins_match_versions() {
        let cases = [
            ("1.26.0-1", "1.26.0-1", true),
            ("1.26.0-1", "1.26.0-10", false),
            ("1.26.0-1", "1:1.26.0-1", true),
            ("1:1.26.0-1", "1.26.0-1", false),
            ("1:1.26.0-1", "1:1.26.0-1", true),
            ("0:1.0-1", "1.0-1", true),
            ("1.0-1", "(none):1.0-1", true),
            ("8.*", "8.14.1-2", true),
            ("8.*", "7.88.1-10", false),
            ("8.*", "18.1", false),
            ("2.*", "2.0", true),
            ("*", "0.1", true),
            ("1.*-1", "1.2.3-1", true),
            ("1.*-1", "1.2.3-2", false),
            ("*~rc*", "1.0~rc1", true),
            ("1.0", "1.0-1", false),
            ("1.0-*", "1.0-1.fc40", true),
        ];
        for (pin, v, want) in cases {
            assert_eq!(pin_matches(pin, v), want, "{pin} vs {v}");
        }
        assert!(is_pattern("8.*") && !is_pattern("8.1"));
    }

    #[test]
    fn picks_exact_or_newest_matching() {
        let v = ["1.0", "2.0", "2.10", "2.9~rc1", "3.0"];
        assert_eq!(pick(Scheme::Deb, "2.*", v), Some("2.10"));
        assert_eq!(pick(Scheme::Deb, "2.0", v), Some("2.0"));
        assert_eq!(pick(Scheme::Deb, "4.*", v), None);
        assert_eq!(
            pick(Scheme::Rpm, "*", ["1.0-1", "1.0-10", "1.0-9"]),
            Some("1.0-10")
        );
    }

    /// A long pattern against a long version stays quick (one backtrack point).
    #[test]
    fn wildcards_are_linear_enough() {
        let pin = "*a".repeat(MAX_PIN / 2);
        let v = "a".repeat(200);
        let t = std::time::Instant::now();
        assert!(pin_matches(&pin, &v));
        assert!(!pin_matches(&format!("{pin}b"), &v));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
