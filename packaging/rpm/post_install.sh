# plumb %post: enable per preset on first install (80-plumb.preset says enable); the unit stays
# skipped until /etc/plumb/agent.toml names a repo. The state directory as in the .deb.
install -d -m 0700 /var/lib/plumb
# The journal catalog (journalctl -x).
journalctl --update-catalog >/dev/null 2>&1 || :
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset plumb.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
