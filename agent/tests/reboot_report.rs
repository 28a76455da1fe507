//! Issue 17: `reboot_required` is in every report, whatever `[reboot] when` says and in every
//! mode, read from /run/reboot-required under the agent's root. Under another root than `/`
//! plumb never reboots (the host it runs on is not the one it configures).

mod common;

use common::trust::*;

#[test]
fn reboot_required_is_reported_on_every_pass_whatever_when_says() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    let host = Host::new(tmp.path(), &fleet.url(), "");
    fleet.write("hosts/h1/files/etc/motd", "hi\n");
    fleet.write("hosts/h1/host.toml", "[reboot]\nwhen = \"never\"\n");
    fleet.commit("never", None);
    let r = host.converge();
    assert_eq!(r.reboot_required, Some(false));
    assert!(r.last_reboot.is_none());

    // A package's postinst asked for a reboot.
    std::fs::create_dir_all(host.root.join("run")).unwrap();
    std::fs::write(
        host.root.join("run/reboot-required"),
        "*** System restart required ***\n",
    )
    .unwrap();
    std::fs::write(
        host.root.join("run/reboot-required.pkgs"),
        "linux-image-x\n",
    )
    .unwrap();
    let r = host.converge();
    assert_eq!(r.reboot_required, Some(true), "{r:?}");
    assert!(r.waiting.is_empty(), "{r:?}");
    let toml = std::fs::read_to_string(host.state.join("report.toml")).unwrap();
    assert!(toml.contains("reboot_required = true"), "{toml}");

    // `when = "required"` under a root other than /: reported, never acted on.
    fleet.write("hosts/h1/host.toml", "[reboot]\nwhen = \"required\"\n");
    fleet.commit("required", None);
    let r = host.converge();
    assert_eq!(r.reboot_required, Some(true), "{r:?}");
    assert!(r.waiting.is_empty() && r.message.is_empty(), "{r:?}");
    assert!(!host.state.join("maintenance-hold").exists());
    assert!(!host.state.join("reboot.json").exists());

    // detect mode reports it too; so does a pass on a commit that is rejected.
    host.configure(&fleet.url(), "mode = \"detect\"\n");
    assert_eq!(host.converge().reboot_required, Some(true));
    host.configure(&fleet.url(), "");
    fleet.write("hosts/h1/host.toml", "[reboot]\nwhen = \"sometimes\"\n");
    fleet.commit("typo", None);
    let a = host.apply(&[]);
    let r = a.report.unwrap();
    assert_eq!(r.outcome.as_str(), "rejected");
    assert!(
        r.message.contains("hosts/h1/host.toml") && r.message.contains("sometimes"),
        "{}",
        r.message
    );
    assert_eq!(r.reboot_required, Some(true));

    std::fs::remove_file(host.root.join("run/reboot-required")).unwrap();
    fleet.write("hosts/h1/host.toml", "");
    fleet.commit("fixed", None);
    assert_eq!(host.converge().reboot_required, Some(false));
}
