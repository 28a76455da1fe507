# plumb %preun: on removal (not upgrade) stop and disable; state and an edited config stay.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now plumb.service >/dev/null 2>&1 || :
fi
