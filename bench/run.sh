#!/usr/bin/env bash
# The benchmark command (docs/benchmarks.md): installs the peer tools it compares against
# (ansible-core from PyPI into a venv, Debian's puppet), builds plumb's release binary, and runs
# plumb-bench, which prints a Markdown results table. Needs root and a Debian-like host.
# Arguments go to plumb-bench (`bench/run.sh --help`); e.g. `bench/run.sh --units 50 --ansible-files 100`.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${PLUMB_BENCH_CACHE:-/var/cache/plumb-bench}
mkdir -p "$cache"

need=()
# systemd-nspawn and debootstrap: for --units (plumb in a Debian node, the system-test harness).
for cmd in git:git git-daemon:git-daemon-sysvinit puppet:puppet python3:python3 \
           systemd-nspawn:systemd-container debootstrap:debootstrap nsenter:util-linux; do
  bin=${cmd%%:*}; pkg=${cmd#*:}
  if ! command -v "$bin" >/dev/null 2>&1 && ! [ -x "/usr/lib/git-core/$bin" ]; then
    need+=("$pkg")
  fi
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv=$cache/ansible-venv
if ! [ -x "$venv/bin/ansible-pull" ]; then
  echo "installing ansible-core into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ansible-core
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p plumb
cargo build -q -p plumb-bench
exec "$CARGO_TARGET_DIR/debug/plumb-bench" \
  --plumb "$CARGO_TARGET_DIR/release/plumb" \
  --ansible-pull "$venv/bin/ansible-pull" \
  "$@"
