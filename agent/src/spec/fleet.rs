//! `fleet.toml` at the root of the fleet repo: settings that concern many hosts. Today only
//! `[[assign]]` (roles and vars for hosts matched by a name pattern); later sections ([rollout],
//! [[windows]], [disruption], [secrets]) are fields added to `FleetToml`, and until then a key
//! plumb does not know is an error, like everywhere else.

use serde::Deserialize;

pub const FLEET_TOML: &str = "fleet.toml";
/// Patterns are short; matching is linear in pattern x name with this bound.
const MAX_PATTERN: usize = 256;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FleetToml {
    #[serde(default)]
    pub assign: Vec<Assign>,
    #[serde(default)]
    pub secrets: FleetSecrets,
}

/// `[secrets]`: who besides the hosts can read every secret (DESIGN section 10).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FleetSecrets {
    /// Recipients (`age1...`, `ssh-ed25519 AAAA...`) `plumb secret` always adds.
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Shell-style patterns on the host name: `*`, `?`, `[a-z]`, `[!0-9]`.
    pub hosts: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub vars: toml::Table,
}

impl FleetToml {
    /// Parses fleet.toml; the error names the file and the key.
    pub fn parse(text: &str) -> Result<FleetToml, String> {
        let f: FleetToml = toml::from_str(text).map_err(|e| format!("{FLEET_TOML}: {e}"))?;
        for a in &f.secrets.admins {
            super::secret::parse_recipient(a)
                .map_err(|e| format!("{FLEET_TOML}: [secrets] admins: {e}"))?;
        }
        for (i, a) in f.assign.iter().enumerate() {
            if a.hosts.is_empty() {
                return Err(format!(
                    "{FLEET_TOML}: [[assign]] #{}: `hosts` is empty: give at least one pattern",
                    i + 1
                ));
            }
            for p in &a.hosts {
                check_pattern(p)
                    .map_err(|e| format!("{FLEET_TOML}: [[assign]] #{}: {e}", i + 1))?;
            }
        }
        Ok(f)
    }

    /// The entries whose patterns match `host`, in file order.
    pub fn matching<'a>(&'a self, host: &'a str) -> impl Iterator<Item = (usize, &'a Assign)> {
        self.assign
            .iter()
            .enumerate()
            .filter(move |(_, a)| a.hosts.iter().any(|p| glob_match(p, host)))
    }
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > MAX_PATTERN {
        return Err(format!(
            "host pattern {p:?} must be 1 to {MAX_PATTERN} characters"
        ));
    }
    // Every `[` must close.
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '[' && !chars.by_ref().skip(1).any(|c| c == ']') {
            return Err(format!("host pattern {p:?}: `[` without a closing `]`"));
        }
    }
    Ok(())
}

/// Shell-style glob on a whole name: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!x]`.
/// Iterative with one backtrack point (the last `*`), so the cost is at most pattern x name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(&p[pi..], n[ni]),
            Some(c) if *c == n[ni] => Some(1),
            _ => None,
        };
        match (step, star) {
            (Some(len), _) => {
                pi += len;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` class at the start of `p`: its length when `c` is in it, `None` otherwise.
fn class(p: &[char], c: char) -> Option<usize> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&x) = p.get(i) {
        if x == ']' && !first {
            return (hit != negate).then_some(i + 1);
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
            hit |= x <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= x == c;
            i += 1;
        }
    }
    None // unclosed: matches nothing (check_pattern refuses it first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("store-*", "store-042", true),
            ("store-*", "store-", true),
            ("store-*", "stor", false),
            ("store-*", "web-01", false),
            ("*", "anything", true),
            ("web-0?", "web-01", true),
            ("web-0?", "web-010", false),
            ("web-[0-2]*", "web-17", true),
            ("web-[0-2]*", "web-37", false),
            ("web-[!0-2]*", "web-37", true),
            ("web-[!0-2]*", "web-17", false),
            ("[ab]x", "bx", true),
            ("[ab]x", "cx", false),
            ("*-01", "web-01", true),
            ("*-01", "web-011", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("**", "", true),
            ("?", "", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("[]]x", "]x", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
        // No exponential backtracking.
        let start = std::time::Instant::now();
        assert!(!glob_match(
            &"*a".repeat(100),
            &format!("{}b", "a".repeat(300))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn parse_and_match() {
        let f = FleetToml::parse(
            "[[assign]]\nhosts = [\"store-*\"]\ninclude = [\"roles/store\"]\nvars = { region = \"eu\" }\n\
             [[assign]]\nhosts = [\"web-*\", \"store-1*\"]\n",
        )
        .unwrap();
        let m: Vec<usize> = f.matching("store-12").map(|(i, _)| i).collect();
        assert_eq!(m, [0, 1]);
        assert_eq!(f.matching("db-1").count(), 0);
        for (text, needle) in [
            ("[rollout]\n", "unknown field `rollout`"),
            ("[[assign]]\nhosts = []\n", "`hosts` is empty"),
            ("[[assign]]\nhosts = [\"a[\"]\n", "without a closing"),
            (
                "[[assign]]\nhosts = [\"a\"]\nroles = []\n",
                "unknown field `roles`",
            ),
        ] {
            let e = FleetToml::parse(text).unwrap_err();
            assert!(e.contains(needle) && e.contains("fleet.toml"), "{e}");
        }
    }
}
