#!/bin/sh
# Installs Debian's etcd-server (etcd 3.4) for launcher-bench's side-by-side runs, if missing.
# Prints the path of the etcd binary on its last line. Needs root (apt-get) when etcd is absent.
set -eu
if ! command -v etcd >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "etcd is not installed and this is not root: install Debian's etcd-server first" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # --no-install-recommends: the server binary only, no etcd-client tools needed.
    apt-get install -y -qq --no-install-recommends etcd-server >&2
    # Debian starts a single-member etcd service on 2379/2380: stop it, the bench runs its own.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
fi
command -v etcd
