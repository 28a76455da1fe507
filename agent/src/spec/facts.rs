//! Host facts: what templates may ask about the machine (DESIGN section 9). host/facts.rs reads
//! them once per pass; `plumb render --facts FILE` takes them from a file; the report publishes
//! them under `[facts]`. A fact the host does not have is absent, so a template that uses it fails
//! (strict undefined) instead of rendering an empty string.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Os::is_empty")]
    pub os: Os,
    /// Keyed by interface name ("eth0"); the loopback interface is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<String, Interface>,
}

/// From os-release(5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Os {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

impl Os {
    fn is_empty(&self) -> bool {
        *self == Os::default()
    }
}

/// One network interface: its MAC and its first IPv4 and (global) IPv6 address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

impl Facts {
    /// A facts file for `plumb render --facts` / `validate --facts`: the `[facts]` table of a
    /// status.toml, or a file holding only the facts' keys.
    pub fn from_toml(text: &str) -> anyhow::Result<Facts> {
        let table: toml::Table = toml::from_str(text)?;
        let facts = match table.get("facts") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => table,
        };
        Ok(facts.try_into()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_files_roundtrip_and_reject_unknown_keys() {
        let mut f = Facts {
            hostname: Some("web-01".into()),
            cpus: Some(2),
            ..Facts::default()
        };
        f.os.id = Some("debian".into());
        f.interfaces.insert(
            "eth0".into(),
            Interface {
                ipv4: Some("10.0.0.5".into()),
                ..Interface::default()
            },
        );
        let text = toml::to_string(&f).unwrap();
        assert_eq!(Facts::from_toml(&text).unwrap(), f);
        // The [facts] table of a status.toml works too.
        #[derive(Serialize)]
        struct Status<'a> {
            host: &'a str,
            facts: &'a Facts,
        }
        let status = toml::to_string(&Status {
            host: "web-01",
            facts: &f,
        })
        .unwrap();
        assert_eq!(Facts::from_toml(&status).unwrap(), f);
        let e = Facts::from_toml("hostnme = \"x\"").unwrap_err();
        assert!(format!("{e:#}").contains("hostnme"), "{e:#}");
    }
}
