#!/usr/bin/env bash
# A kubectl for the kustomize check of test/unit/manifests.test.ts (`kubectl kustomize deploy`,
# offline). Nothing is installed when a kubectl that renders kustomizations is already there
# (this development machine has Google Cloud SDK's, 1.32 with kustomize v5.5.0); otherwise
# Debian's kubernetes-client (bookworm: 1.20, kustomize v2.0.3 built in). The two packages
# conflict (both own /usr/bin/kubectl), so Debian's is never put over another.
set -euo pipefail
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  echo "install-kubectl: $(command -v kubectl) is there ($(kubectl version --client 2>/dev/null | tr '\n' ' '))" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client
