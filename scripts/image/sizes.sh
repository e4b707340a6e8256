#!/usr/bin/env bash
# The image's size and the size of each layer (podman history), newest first.
source "$(dirname "$0")/lib.sh"
img=${1:-$IMAGE}
echo "$img: $(podman image inspect --format '{{.Size}}' "$img" | numfmt --to=si)B"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$img" | cut -c1-150
