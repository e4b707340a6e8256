#!/usr/bin/env bash
# `make image`: builds the local bases if missing, then the Dockerfile into
# $IMAGE (localhost/ambientd:0.1.0, the DaemonSet's image). Prints the build
# time and the image's layer sizes.
# Usage: build.sh [--no-cache]
source "$(dirname "$0")/lib.sh"
"$IMAGE_DIR/install-tools.sh"
"$IMAGE_DIR/bases.sh"

args=(--pull=never --network=host --layers)
[ "${1:-}" = --no-cache ] && args+=(--no-cache)
# --network=host: npm ci and apt-get reach the registries as the host does
# (no CNI/netavark needed). The npm CA of this host, if any, is in the local
# build base (bases.sh), not in a build mount: buildah 1.28 leaves a build
# mount's target behind in the layer, which would ship in the runtime image.

log "podman build -t $IMAGE"
start=$(date +%s.%N)
# shellcheck disable=SC2046
podman build "${args[@]}" $(ulimit_flags) -t "$IMAGE" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT"
secs=$(echo "$(date +%s.%N) - $start" | bc)
log "built $IMAGE in ${secs%.*} s"
"$IMAGE_DIR/sizes.sh"
rm_podman_cgroups
