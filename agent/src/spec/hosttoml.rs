//! The raw `host.toml` format (every key optional, unknown keys rejected).

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostToml {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub packages: RawPackages,
    #[serde(default)]
    pub files: BTreeMap<String, RawFile>,
    #[serde(default)]
    pub units: BTreeMap<String, RawUnit>,
    #[serde(default)]
    pub containers: BTreeMap<String, RawContainer>,
    #[serde(default)]
    pub health: Vec<RawHealth>,
    /// `[reboot]`: whether plumb reboots the host when the OS says it needs one.
    #[serde(default)]
    pub reboot: Option<RawReboot>,
    /// Variables for templates, merged deeply across fleet.toml, roles and the host.
    #[serde(default)]
    pub vars: toml::Table,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPackages {
    #[serde(default)]
    pub install: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    /// "none" | "security" | "all": which available upgrades plumb applies (DESIGN section 13).
    pub upgrade: Option<String>,
}

/// `[reboot]` as written in host.toml.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReboot {
    #[serde(default)]
    pub when: super::RebootWhen,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// argv run on the staged file (`%s`) before it is put in place.
    pub validate: Option<Vec<String>>,
    /// `false`: a name ending in `.tmpl` is a literal file, not a template.
    pub template: Option<bool>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawUnit {
    pub enabled: Option<bool>,
    pub state: Option<String>,
    #[serde(default)]
    pub restart_on: Vec<String>,
    #[serde(default)]
    pub reload_on: Vec<String>,
    /// argv run after files changed, before this unit restarts or reloads (`nginx -t`).
    pub check: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawContainer {
    pub state: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub unit: Option<String>,
    pub command: Option<Vec<String>>,
    pub timeout: Option<String>,
}
