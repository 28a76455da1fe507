mod support;

use anyhow::Result;
use plumb_systest::Registry;
use support::World;

#[test]
fn explore() -> Result<()> {
    if !plumb_systest::can_run() {
        return Ok(());
    }
    let w = World::new("cu1")?;
    let reg = Registry::start(w.net())?;
    let r = reg.host();
    w.node.write_file(
        "/etc/containers/registries.conf.d/50-plumb-test.conf",
        format!("[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"),
    )?;
    for v in ["v1", "v2"] {
        w.node.write_file(&format!("/srv/{v}/index.html"), format!("{v}\n"))?;
        w.node.write_file(&format!("/srv/{v}/Containerfile"), "FROM localhost/busybox\nCOPY index.html /var/www/index.html\n")?;
    }
    let s = w.node.sh(&format!("set -x; podman --version; podman build -t {r}/web:latest /srv/v1 && podman push {r}/web:latest && podman image inspect --format '{{{{.Id}}}} {{{{.Digest}}}}' {r}/web:latest"))?;
    eprintln!("{}\n{}", s.stdout, s.stderr);
    w.node.write_file("/etc/containers/systemd/web.container", format!("[Container]\nImage={r}/web:latest\nAutoUpdate=registry\nNetwork=host\nExec=httpd -f -p 8080 -h /var/www\nStopTimeout=1\n"))?;
    let s = w.node.sh(&format!("set -x; systemctl daemon-reload; systemctl start web.service; busybox wget -q -O- http://127.0.0.1:8080/; podman build -t {r}/web:latest /srv/v2 && podman push {r}/web:latest; podman tag $(podman container inspect --format '{{{{.Image}}}}' systemd-web) {r}/web:latest; podman images --digests; podman auto-update --dry-run --format json; podman manifest inspect {r}/web:latest; podman container inspect --format '{{{{.Image}}}} {{{{.ImageName}}}}' systemd-web; podman auto-update --format json; busybox wget -q -O- http://127.0.0.1:8080/; podman images --digests; podman auto-update --dry-run --format json"))?;
    eprintln!("{}\n{}", s.stdout, s.stderr);
    eprintln!("{}", reg.log());
    anyhow::bail!("explore")
}
