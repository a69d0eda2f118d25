# On erase ($1 counts the versions left: 0), not on an upgrade, the agents stop
# before their binary goes (packaging/debian/prerm).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop 'tandem@*.service' >/dev/null 2>&1 || :
fi
