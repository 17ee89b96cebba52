package packaging

// What the packages install besides the binary and the unit. The configuration is a
// template the administrator completes: the package cannot know the hub, the site or the
// token, so it installs the service but does not enable it (postinstall says what to do).

const configTemplate = `# outpost-bridge configuration (flags and OUTPOST_BRIDGE_* override it); any
# outpost-bridge flag has a key of the same meaning (allow, pools, outbox_max, kinds...).
# Set hub and site, put the enrollment token in bridge.env (0600), then:
#   systemctl enable --now outpost-bridge
# (or run ` + "`outpost-bridge service install --force --hub ... --site ...`" + `, which writes both)
hub: ""    # tls://hub.example.com:4222 or wss://hub.example.com:443
site: ""
data: /var/lib/outpost-bridge
# ca: /etc/outpost-bridge/ca.pem    # the hub's CA when it uses its own (<hub data>/tls/ca.pem)
# apps: [discovery, orchestration]  # default: every application
`

const secretsTemplate = `# Read by systemd before the bridge drops its privileges; keep it 0600 root.
# OUTPOST_BRIDGE_TOKEN=<the site's enrollment token from ` + "`outpost site tokens add SITE`" + `>
`

// postinstall creates the bridge's system user and hands it its data dir and (by group) its
// configuration. It works on a real system and in a staging root (dpkg --root/--instdir with
// chrootless scripts sets DPKG_ROOT): user and group are read from the root's own
// /etc/passwd, and ownership is set by number, so nothing of the host is used or changed.
const postinstall = `#!/bin/sh
set -e
root="${DPKG_ROOT:-}"
user=outpost-bridge
if ! grep -q "^$user:" "$root/etc/passwd" 2>/dev/null; then
	if [ -n "$root" ]; then
		useradd --prefix "$root" --system --user-group --no-create-home --home-dir /var/lib/outpost-bridge \
			--shell /usr/sbin/nologin --comment "Outpost Bridge" "$user"
	else
		useradd --system --user-group --no-create-home --home-dir /var/lib/outpost-bridge \
			--shell /usr/sbin/nologin --comment "Outpost Bridge" "$user"
	fi
fi
uid=$(awk -F: -v u="$user" '$1 == u { print $3 }' "$root/etc/passwd")
gid=$(awk -F: -v u="$user" '$1 == u { print $4 }' "$root/etc/passwd")
mkdir -p "$root/var/lib/outpost-bridge"
chown "$uid:$gid" "$root/var/lib/outpost-bridge"
chmod 0700 "$root/var/lib/outpost-bridge"
chown "0:$gid" "$root/etc/outpost-bridge/bridge.yaml"
chmod 0640 "$root/etc/outpost-bridge/bridge.yaml"
chown 0:0 "$root/etc/outpost-bridge/bridge.env"
chmod 0600 "$root/etc/outpost-bridge/bridge.env"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet outpost-bridge; then
		systemctl restart outpost-bridge || true
	fi
fi
if ! grep -q '^hub: *"*[a-z]' "$root/etc/outpost-bridge/bridge.yaml"; then
	echo "outpost-bridge: set hub and site in /etc/outpost-bridge/bridge.yaml and the token in /etc/outpost-bridge/bridge.env, then: systemctl enable --now outpost-bridge"
fi
`

// preremove stops the service on removal (not on an upgrade: deb passes "upgrade", rpm 1).
const preremove = `#!/bin/sh
set -e
case "$1" in upgrade|1) exit 0 ;; esac
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now outpost-bridge || true
fi
`

// postremove reloads systemd; the configuration and the data dir (the bridge's identity
// and results not yet sent) stay, as dpkg keeps conffiles until a purge.
const postremove = `#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
	rm -rf "${DPKG_ROOT:-}/var/lib/outpost-bridge"
fi
`

// installCmd is the Windows zip's installer: the service installer is in the binary.
const installCmd = "@echo off\r\n" +
	"rem Installs outpost-bridge as the Windows service OutpostBridge (run in an Administrator prompt).\r\n" +
	"rem The enrollment token comes from the environment, never the command line:\r\n" +
	"rem   set OUTPOST_BRIDGE_TOKEN=...\r\n" +
	"rem   install.cmd --hub tls://hub.example.com:4222 --ca hub-ca.pem --site dc1 [--apps discovery,import]\r\n" +
	"if \"%OUTPOST_BRIDGE_TOKEN%\"==\"\" (\r\n" +
	"  echo Set OUTPOST_BRIDGE_TOKEN to the site's enrollment token first.\r\n" +
	"  exit /b 2\r\n" +
	")\r\n" +
	"\"%~dp0outpost-bridge.exe\" service install %*\r\n"

const uninstallCmd = "@echo off\r\n" +
	"rem Removes the OutpostBridge service; the configuration and data stay unless --purge.\r\n" +
	"\"%~dp0outpost-bridge.exe\" service uninstall %*\r\n"
