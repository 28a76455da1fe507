# plumb %postun: reload systemd; on upgrade restart the agent if it runs.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart plumb.service >/dev/null 2>&1 || :
    fi
fi
