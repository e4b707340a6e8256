#!/usr/bin/env bash
# One sandbox node (from the checkout's dist/) whose agent runs from the image
# the way the DaemonSet runs it. The capabilities (not --privileged), host pid,
# read-only root, mounts and command are read from deploy/ambientd.yaml
# (podmanRunFlags/manifestContainerRun of dist/tools/sandbox/container.js, as
# the sandbox's AMBIENTD_SANDBOX_IMAGE runs use), with a private cgroup
# namespace as kubelet gives on cgroup v2. Differences from the DaemonSet, all
# forced by the sandbox or this host:
#  - network: the sandbox node's netns (ns:/run/netns/ambs-n1), not the host's
#  - /run/ambientd-sandbox mounted too (the node's agent.yaml, workload file,
#    ready file); the ca and run hostPaths are scratch dirs
#  - the command's /proc/1/ns/cgroup is /proc/<helper>/ns/cgroup:
#    PID 1 of this machine refuses even root's access to its /proc/1/ns/*;
#    the helper is a `sleep` in the host (initial) cgroup namespace
# Variations (for the bad-input cases; test/privileged/container.test.ts runs
# each of them), all optional:
#   TRY_DROP_CAPS=SYS_ADMIN,...   capabilities of the manifest left out
#   TRY_DROP_VOLUMES=bpffs,...    volumes of the manifest (by name) left out
#   TRY_NO_NSENTER=1              start node directly: the container's own cgroup namespace
#   TRY_ARGS="--cgroup-root /sys/fs/cgroup"   more agent flags
# Must run under the machine-wide lock: flock /tmp/ambientd-privileged.lock.
# Leaves nothing behind (container, sandbox, helper).
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
CLI="node dist/src/cli.js"
T=$CACHE/try
NAME=ambientd-try-n1
helper=""
cleanup() {
  podman logs "$NAME" >"$T/agent.log" 2>&1 || true
  podman rm -f -t 10 "$NAME" >/dev/null 2>&1 || true
  [ -n "$helper" ] && kill "$helper" 2>/dev/null
  $CLI sandbox down >/dev/null 2>&1 || true
  rm -rf "$T/ca" "$T/run"
  rm_podman_cgroups
}
trap cleanup EXIT
mkdir -p "$T/ca" "$T/run"
$CLI sandbox up --nodes 1 --pods 2 --no-agents
read -r netns config ready < <(node -e '
  const s = JSON.parse(require("fs").readFileSync("/run/ambientd-sandbox/state.json", "utf8"));
  const n = s.nodes[0]; console.log(n.netnsPath, n.config, n.readyFile);')
sleep 3600 &
helper=$!
# the manifest's flags and command (one per line), with the variations
manifest() {
  TRY_T=$T node --input-type=module -e '
    import { manifestContainerRun, podmanRunFlags } from "'"$REPO_ROOT"'/dist/tools/sandbox/container.js";
    const list = (v) => (v ? v.split(",") : []);
    const run = manifestContainerRun("ambientd.yaml");
    const out = process.argv[1] === "command" ? run.command
      : podmanRunFlags(run, { hostPaths: { ca: process.env.TRY_T + "/ca", run: process.env.TRY_T + "/run" },
          dropCapabilities: list(process.env.TRY_DROP_CAPS), dropVolumes: list(process.env.TRY_DROP_VOLUMES),
          extraMounts: ["/run/ambientd-sandbox"] });
    console.log(out.join("\n"));' "$1"
}
mapfile -t flags < <(manifest flags)
mapfile -t command < <(manifest command)
# enter-host-cgroupns /proc/1/ns/cgroup node cli.js -> the helper's namespace
entry=(--entrypoint "${command[0]}" "$IMAGE" "/proc/$helper/ns/cgroup" "${command[@]:2}")
[ -n "${TRY_NO_NSENTER:-}" ] && entry=(--entrypoint "${command[2]}" "$IMAGE" "${command[@]:3}")
start=$(date +%s%N)
# shellcheck disable=SC2046,SC2086
podman run -d --name "$NAME" --network "ns:$netns" --cgroupns private $(ulimit_flags) "${flags[@]}" \
  -e AMBIENTD_SANDBOX_NODE=n1 -e "AMBIENTD_READY_FILE=$ready" \
  "${entry[@]}" agent --config "$config" ${TRY_ARGS:-} >/dev/null
for _ in $(seq 1 300); do
  [ -f "$ready" ] && break
  [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 0.1
done
if [ -f "$ready" ]; then
  echo "try: agent in the container ready after $((($(date +%s%N) - start) / 1000000)) ms"
  pid=$(podman inspect -f '{{.State.Pid}}' "$NAME")
  echo "try: agent pid $pid: $(tr '\0' ' ' </proc/$pid/cmdline)"
  grep -E '^Cap(Eff|Bnd)' "/proc/$pid/status"
  echo "try: cgroup ns $(readlink /proc/$pid/ns/cgroup) (host: $(readlink /proc/self/ns/cgroup)); $(grep -E '^0::' /proc/$pid/cgroup)"
  $CLI sandbox status || true
else
  echo "try: agent in the container NOT ready; state $(podman inspect -f '{{.State.Status}} exit {{.State.ExitCode}}' "$NAME")"
fi
podman logs "$NAME" 2>&1 | tail -25
