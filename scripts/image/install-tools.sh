#!/usr/bin/env bash
# Installs the container tools the image scripts use, only those missing:
# podman, buildah, runc (not crun: see containers.conf), debootstrap.
# --no-install-recommends: no rootless helpers (slirp4netns, fuse-overlayfs,
# uidmap); everything here runs as root with host networking.
source "$(dirname "$0")/lib.sh"
PKGS=(podman buildah runc debootstrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  log "missing packages ${missing[*]}; run as root (apt-get install)"
  exit 1
fi
log "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
