# systemd forgets the unit once it is gone; /etc/tandem and the state directories
# stay (packaging/debian/postrm).
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
# On erase, the package's own directories go too. rpm removes only the
# directories a package lists, and cargo-generate-rpm 0.21 cannot list one (its
# `dir = true` assets fail to build), so they are removed here, if empty.
if [ "$1" -eq 0 ]; then
    for d in /usr/share/doc/tandem/examples/postgres /usr/share/doc/tandem/examples/compose \
        /usr/share/doc/tandem/examples \
        /usr/share/doc/tandem/grafana /usr/share/doc/tandem /usr/share/licenses/tandem; do
        rmdir "$d" 2>/dev/null || :
    done
fi
