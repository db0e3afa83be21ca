#!/usr/bin/env bash
# Installs the Debian packages the lab, the tests and the demo need (root; only what is missing).
set -euo pipefail
PACKAGES=(iproute2 iputils-ping nftables procps curl wireguard-go wireguard-tools dnsmasq openssh-server
          openssh-client putty-tools dnsutils iperf3 netcat-openbsd rsync man-db python3)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Only the binaries are needed: keep the distribution's services from starting on the host.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "==> Debian packages already installed"
fi
