#!/usr/bin/env bash
# Installs headless Chromium and its driver from Debian's packages for the
# kitchen page's browser test (examples/kitchen). Idempotent: does nothing
# when both are already installed.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Fonts, so that a screenshot shows text rather than boxes.
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)

if [ ${#need[@]} -eq 0 ]; then
	echo "install-browser: chromium and chromium-driver already installed"
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing ${need[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
chromium --version
