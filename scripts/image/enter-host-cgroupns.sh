#!/bin/sh
# The image's entrypoint in deploy/ambientd.yaml (installed as
# /opt/ambientd/bin/enter-host-cgroupns):  enter-host-cgroupns NS COMMAND [ARGS...]
# runs COMMAND in the cgroup namespace NS (/proc/1/ns/cgroup: the host's, with
# hostPID). Kubernetes gives a container a private cgroup namespace on cgroup
# v2, in which pods' and the agent's own cgroup paths are not paths under the
# host's cgroup root.
# When nsenter cannot (no CAP_SYS_ADMIN or CAP_SYS_PTRACE, no host pid), COMMAND
# still runs, where it is, with AMBIENTD_CGROUPNS_ERROR set to nsenter's
# message: the agent's start-up checks (src/agent/preflight.ts) then name what
# is missing and the manifest line to fix, and exit non-zero without starting.
# (nsenter alone would only say "Operation not permitted".)
set -u
ns=$1
shift
if err=$(nsenter --cgroup="$ns" -- true 2>&1); then
  exec nsenter --cgroup="$ns" -- "$@"
fi
AMBIENTD_CGROUPNS_ERROR="nsenter --cgroup=$ns: ${err:-failed}" exec "$@"
