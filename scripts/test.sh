#!/usr/bin/env bash
# The test command: lint, build, then every test (unit, integration with real git servers, and
# system tests in systemd-nspawn nodes). Needs root and a Debian-like host; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in git:git git-daemon:git-daemon-sysvinit ssh-keygen:openssh-client sshd:openssh-server \
           systemd-nspawn:systemd-container debootstrap:debootstrap ip:iproute2 dpkg-deb:dpkg \
           openssl:openssl python3:python3 lintian:lintian rpmlint:rpmlint chromium:chromium \
           jq:jq curl:curl docker-registry:docker-registry; do
  bin=${cmd%%:*}; pkg=${cmd#*:}
  if ! command -v "$bin" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$bin" ] && ! [ -x "/usr/lib/git-core/$bin" ]; then
    need+=("$pkg")
  fi
done
# The metrics tests parse plumb's textfile with Prometheus' own Python parser (system python).
if ! /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  need+=(python3-prometheus-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace -- "$@"
