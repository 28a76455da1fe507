//! After plumb removes a package it installed, what that install brought goes too (Debian):
//! the dependencies it pulled in that nothing else needs now (autoremove, limited to plumb's own),
//! and the configuration files and enabled-unit state that `remove` keeps (purge of packages in
//! dpkg's "config-files" state). Nothing plumb did not install is touched. With dnf: the
//! dependencies its install brought that dnf now counts as unneeded (rpm keeps no config state).

use super::pkgcmd::{
    parse_apt_removals, run_checked, system_tool, Native, CHANGE_TIMEOUT, QUERY_TIMEOUT,
};
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Whether this host is a dpkg system (this cleanup is Debian's; plumb runs dnf's removals with
/// `clean_requirements_on_remove=False` and cleans up with [`remove_unneeded_dnf`]).
pub fn applies() -> bool {
    Path::new("/var/lib/dpkg/status").is_file()
}

/// Of `brought` (packages that plumb's installs pulled in), those apt would now autoremove.
pub fn orphans(brought: &BTreeSet<String>) -> Result<Vec<String>> {
    if brought.is_empty() {
        return Ok(vec![]);
    }
    let mut sim = system_tool("apt-get", &[("LC_ALL", "C")]);
    sim.args(["-s", "-q", "autoremove"]);
    let plan = run_checked(&mut sim, QUERY_TIMEOUT, "apt-get -s autoremove")?;
    Ok(parse_apt_removals(&plan)
        .into_iter()
        .filter(|n| brought.contains(n))
        .collect())
}

/// Removes `names` (plumb's orphans) and purges every name of `names` and `removed` that dpkg
/// keeps in the config-files state. Returns what was purged.
pub fn remove_and_purge(names: &[String], removed: &[String]) -> Result<Vec<String>> {
    for n in names.iter().chain(removed) {
        super::pkgcmd::check_name(n)?;
    }
    if !names.is_empty() {
        let mut c = system_tool(
            "apt-get",
            &[("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C")],
        );
        c.args(["-y", "-q", "remove", "--"]).args(names);
        run_checked(
            &mut c,
            CHANGE_TIMEOUT,
            "apt-get remove (unneeded dependencies)",
        )?;
    }
    let leftovers = config_files_only(names.iter().chain(removed))?;
    if !leftovers.is_empty() {
        let mut c = system_tool("dpkg", &[("LC_ALL", "C")]);
        c.args(["--purge", "--"]).args(&leftovers);
        run_checked(&mut c, CHANGE_TIMEOUT, "dpkg --purge")?;
    }
    Ok(leftovers)
}

/// dnf: removes those of `brought` (packages plumb's installs pulled in) that dnf counts as
/// unneeded now; returns them.
pub fn remove_unneeded_dnf(brought: &BTreeSet<String>) -> Result<Vec<String>> {
    if brought.is_empty() {
        return Ok(vec![]);
    }
    let unneeded = Native::Dnf.unneeded()?;
    let orphans: Vec<String> = brought.intersection(&unneeded).cloned().collect();
    if !orphans.is_empty() {
        Native::Dnf.remove(&orphans)?;
    }
    Ok(orphans)
}

/// Those of `names` that dpkg knows only by their configuration files ("rc").
fn config_files_only<'a>(names: impl Iterator<Item = &'a String>) -> Result<Vec<String>> {
    let names: Vec<&String> = names.collect();
    if names.is_empty() {
        return Ok(vec![]);
    }
    let mut c = Command::new("dpkg-query");
    c.args(["-W", "-f", "${Package}\t${db:Status-Abbrev}\n", "--"])
        .args(&names);
    // dpkg-query exits 1 when a name is unknown: read what it printed either way.
    let out = super::command::run(&mut c, QUERY_TIMEOUT)?;
    Ok(parse_config_files(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_config_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, st)| st.trim_end().starts_with("rc"))
        .map(|(n, _)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_state_is_read_from_dpkg_query() {
        let out = "nginx\trc \nnginx-common\trc \ncurl\tii \ngone\tun \n";
        assert_eq!(parse_config_files(out), ["nginx", "nginx-common"]);
    }
}
