#!/bin/bash
# Builds the golden Debian trixie node image for the system tests into $1 (an empty or missing dir).
# Run by the harness (tests/src/image.rs); the cache key is the hash of this file, so any change
# here rebuilds the image. See shared notes/system-testing.md for why each step is there.
set -euo pipefail
G=${1:?usage: node-image.sh OUT_DIR}
SUITE=trixie

# Host tools the harness needs (debootstrap, nspawn, bridge, git daemon, dpkg-deb).
need=()
for pair in debootstrap:debootstrap systemd-nspawn:systemd-container ip:iproute2 git:git \
            nsenter:util-linux dpkg-deb:dpkg; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# The machine's own mirror, as configured for apt here; never a hardcoded host.
MIRROR=
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
    MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:/){print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$MIRROR" ] || { echo "node-image.sh: no apt mirror found in /etc/apt" >&2; exit 1; }

mkdir -p "$G"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates "$SUITE" "$G" "$MIRROR"

in_image() { systemd-nspawn -q -D "$G" --register=no --keep-unit --pipe "$@" </dev/null; }

in_image /bin/sh -ec '
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
pkgs="podman crun conmon netavark aardvark-dns catatonit packagekit packagekit-tools iproute2 git
      busybox-static iptables nftables rpm"
# trixie ships networkd in its own package
if apt-cache show systemd-networkd >/dev/null 2>&1; then pkgs="$pkgs systemd-networkd"; fi
apt-get install -y -q --no-install-recommends $pkgs
# Real Debian packages for the service tests (nginx), downloaded, not installed: a test serves
# them to a node as a local apt repository (/srv/debian-debs, with its Packages index).
mkdir -p /srv/debian-debs/partial
apt-get install -y -q --no-install-recommends --download-only -o Dir::Cache::archives=/srv/debian-debs nginx
rm -rf /srv/debian-debs/partial /srv/debian-debs/lock
( cd /srv/debian-debs && for d in *.deb; do
    dpkg-deb -f "$d"
    echo "Filename: ./$d"
    echo "Size: $(stat -c %s "$d")"
    echo "SHA256: $(sha256sum "$d" | cut -d" " -f1)"
    echo
  done > Packages )
apt-get clean
rm -rf /var/lib/apt/lists/*
# No sources in nodes: nothing in a node may reach a registry; tests add local repos.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
: > /etc/apt/sources.list
systemctl enable systemd-networkd.service
# Quieter, faster boots: no timers that would try the network.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    dpkg-db-backup.timer systemd-timesyncd.service 2>/dev/null || true

# A tiny container image made from busybox-static: no registry is reachable from tests.
r=$(mktemp -d)
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/var/www" /srv/images
cp /bin/busybox "$r/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
echo "root:x:0:0:root:/:/bin/sh" > "$r/etc/passwd"
echo "root:x:0:" > "$r/etc/group"
tar -C "$r" -cf /srv/images/busybox.tar .
rm -rf "$r"
'

# Import at build time so nodes start with the image in their podman storage.
in_image podman import --change CMD=/bin/sh /srv/images/busybox.tar localhost/busybox:latest >/dev/null

# podman: only the hugetlb controller exists inside nodes here.
mkdir -p "$G/etc/containers"
printf '[containers]\npids_limit = 0\n' > "$G/etc/containers/containers.conf"
# Each clone gets its own identity.
rm -f "$G/etc/hostname" "$G/var/lib/dbus/machine-id"
: > "$G/etc/machine-id"
echo "node-image.sh: built $SUITE image in $G"
