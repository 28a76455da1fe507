#!/bin/bash
# Adds Debian packages to a copy of the node image in $1 (tests/src/image.rs
# NodeImage::with_packages copies the default image there first): tools that only some users of
# the harness need (the benchmark's puppet), so the default image and its cache key stay as they are.
set -euo pipefail
G=${1:?usage: node-image-packages.sh ROOTFS PACKAGE...}
shift
SUITE=trixie

# The machine's own mirror, as configured for apt here; never a hardcoded host (as node-image.sh).
MIRROR=
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
    MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:/){print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$MIRROR" ] || { echo "node-image-packages.sh: no apt mirror found in /etc/apt" >&2; exit 1; }

# Sources only while installing: nothing in a node may reach a registry.
echo "deb $MIRROR $SUITE main" > "$G/etc/apt/sources.list"
systemd-nspawn -q -D "$G" --register=no --keep-unit --pipe /bin/bash -ec '
export DEBIAN_FRONTEND=noninteractive
enabled() { systemctl --root=/ list-unit-files --state=enabled --no-legend | cut -d" " -f1 | sort; }
before=$(enabled)
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
# Services the packages enabled (puppet.service) must not run in nodes that are for measuring.
new=$(comm -13 <(echo "$before") <(enabled))
[ -z "$new" ] || systemctl --root=/ disable $new
apt-get clean
rm -rf /var/lib/apt/lists/*
: > /etc/apt/sources.list
echo "node-image-packages.sh: installed $*; disabled: ${new:-nothing}"
' bash "$@" </dev/null
