#!/usr/bin/env bash
# Builds plumb and runs it against the example fleet repo in config/fleet, as host "demo",
# writing under a temp root (nothing outside it is touched). Prints plan, apply, drift, status.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p plumb
plumb=$PWD/target/debug/plumb
work=$(mktemp -d /tmp/plumb-demo.XXXXXX)

# The fleet repo: config/fleet as a real Git repository.
cp -a config/fleet "$work/fleet"
git -C "$work/fleet" init -q -b main
git -C "$work/fleet" add -A
git -C "$work/fleet" -c user.name=demo -c user.email=demo@example.org commit -q -m "example fleet"

mkdir -p "$work/root"
cat > "$work/agent.toml" <<TOML
repo = "file://$work/fleet"
host = "demo"
root = "$work/root"
state_dir = "$work/state"
interval = "10s"
TOML

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || true; }
step "$plumb" --config "$work/agent.toml" plan
step "$plumb" --config "$work/agent.toml" apply
echo "drift: someone edits /etc/motd by hand" && echo "hand edit" > "$work/root/etc/motd"
step "$plumb" --config "$work/agent.toml" apply
step "$plumb" --config "$work/agent.toml" status
step find "$work/root" -printf '%M %u %p\n'
echo
echo "Work dir: $work (agent.toml, fleet/, root/, state/)."
echo "Keep it converging:  $plumb --config $work/agent.toml run"
