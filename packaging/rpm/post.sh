# The same as packaging/debian/postinst: /etc/tandem for the operator's
# configurations and keys, and a systemd reload; running agents are not restarted.
[ -d /etc/tandem ] || install -d -m 0755 /etc/tandem
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
