#!/usr/bin/env bash
# Builds plumb and runs it against the example fleet repo in config/fleet, as host "demo",
# writing under a temp root (nothing outside it is touched). Prints plan, apply, drift, status.
#
# Needs no root: run as a normal user, plumb keeps that user's ownership on the files Git names
# no owner for (and says so). Set PLUMB=/path/to/plumb to use a built binary instead of
# `cargo build`. Stops at the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PLUMB:-}" ]; then
    cargo build -q -p plumb
    PLUMB=$PWD/target/debug/plumb
fi
plumb=$PLUMB
work=$(mktemp -d "${TMPDIR:-/tmp}/plumb-demo.XXXXXX")

fail() {
    printf '\ndemo.sh: %s\nWork dir kept for a look: %s\n' "$*" "$work" >&2
    exit 1
}

# One shell word, quoted when it needs to be ('%M %u %p\n'), so a printed command can be pasted.
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf ' %s' "$1"
    else
        printf " '%s'" "${1//\'/\'\\\'\'}"
    fi
}

# One demo step: prints the command, runs it, and stops the demo unless it exits with one of the
# codes expected (`plumb plan` exits 2 when there are changes).
step() {
    local ok=$1 code=0 word
    shift
    printf '\n\033[1m$'
    for word in "$@"; do quote "$word"; done
    printf '\033[0m\n'
    "$@" || code=$?
    [[ " $ok " == *" $code "* ]] || fail "this step exited $code (expected ${ok// / or }): $*"
}

# The fleet repo: config/fleet as a real Git repository.
cp -a config/fleet "$work/fleet"
git -C "$work/fleet" init -q -b main
git -C "$work/fleet" add -A
git -C "$work/fleet" -c user.name=demo -c user.email=demo@example.org commit -q -m "example fleet" ||
    fail "could not make the example fleet repo in $work/fleet"

mkdir -p "$work/root"
cat > "$work/agent.toml" <<TOML
repo = "file://$work/fleet"
host = "demo"
root = "$work/root"
state_dir = "$work/state"
interval = "10s"
TOML

step "2" "$plumb" --config "$work/agent.toml" plan
step "0" "$plumb" --config "$work/agent.toml" apply
echo
echo "drift: someone edits /etc/motd by hand"
echo "hand edit" > "$work/root/etc/motd"
step "0" "$plumb" --config "$work/agent.toml" apply
[ "$(cat "$work/root/etc/motd")" != "hand edit" ] || fail "the hand edit of /etc/motd was not corrected"
step "0" "$plumb" --config "$work/agent.toml" status
step "0" find "$work/root" -printf '%M %u %p\n'
echo
echo "Work dir: $work (agent.toml, fleet/, root/, state/)."
printf 'Keep it converging:'
for word in "$plumb" --config "$work/agent.toml" run; do quote "$word"; done
echo
