#!/bin/sh
# Installs the Debian packages cerebras-proxy needs to build and run it
# (and, with the argument "test", to test it: cmocka, a headless Chromium
# for the cross-origin browser test, Apache with mod_fcgid, systemd-analyze,
# cgi-fcgi, clang-format, clang and its libFuzzer runtime for the fuzz
# targets, node and npm for the OpenAI SDK test), when run as root; otherwise
# prints the exact command to run.
set -eu

PKGS="gcc make pkg-config libfcgi-dev libcurl4-openssl-dev libhiredis-dev libssl-dev libjansson-dev \
nginx redis-server redis-tools python3 openssl ca-certificates"
if [ "${1:-}" = test ]; then
	PKGS="$PKGS libcmocka-dev chromium apache2 libapache2-mod-fcgid systemd libfcgi-bin iproute2 wrk faketime clang-format clang libclang-rt-14-dev python3-prometheus-client"
	# node and npm for the OpenAI Node SDK test (tests/sdk), unless an npm
	# is there: a NodeSource nodejs brings its own, which Debian's npm
	# package conflicts with.
	command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
fi

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "Installing missing packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	# Debian starts the packaged services; this project runs its own
	# private instances, so leave the system ones as they were.
	exit 0
fi
echo "Missing packages:$missing" >&2
echo "Install them with:" >&2
echo "  sudo apt-get install -y$missing" >&2
exit 1
