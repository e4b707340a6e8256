#!/usr/bin/env bash
# Exploratory (not yet `make test-image`): one sandbox node (from the checkout's
# dist/) whose agent runs from the image the way the DaemonSet runs it: the
# manifest's capabilities (not --privileged), host pid, a private cgroup
# namespace (as kubelet on cgroup v2 gives), read-only root, the hostPath
# mounts, the nsenter entrypoint. Differences from the DaemonSet, all forced by
# the sandbox or this host:
#  - network: the sandbox node's netns (ns:/run/netns/ambs-n1), not the host's
#  - /run/ambientd-sandbox mounted too (the node's agent.yaml, workload file,
#    ready file); /var/lib/ambientd/ca and /run/ambientd are scratch dirs
#  - nsenter --cgroup=/proc/<helper>/ns/cgroup instead of /proc/1/ns/cgroup:
#    PID 1 of this machine refuses even root's access to its /proc/1/ns/*;
#    the helper is a `sleep` in the host (initial) cgroup namespace
# Variations (for the bad-input cases), all optional:
#   TRY_CAPS=BPF,NET_ADMIN,...   capabilities added (default: the manifest's five)
#   TRY_NO_MOUNT=/sys/fs/bpf     leave out the mount with this target
#   TRY_NO_NSENTER=1             start node directly: the container's own cgroup namespace
#   TRY_ARGS="--cgroup-root /sys/fs/cgroup"   more agent flags
# Must run under the machine-wide lock: flock /tmp/ambientd-privileged.lock.
# Leaves nothing behind (container, sandbox, helper).
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
CLI="node dist/src/cli.js"
T=$CACHE/try
NAME=ambientd-try-n1
CAPS=${TRY_CAPS:-BPF,NET_ADMIN,SYS_ADMIN,SYS_PTRACE,SYS_RESOURCE}
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
mounts=()
for m in /sys/fs/bpf:/sys/fs/bpf /sys/fs/cgroup:/sys/fs/cgroup /run/netns:/run/netns:ro,rslave \
  "$T/ca:/var/lib/ambientd/ca" "$T/run:/run/ambientd" /run/ambientd-sandbox:/run/ambientd-sandbox; do
  target=${m#*:}
  target=${target%%:*}
  [ "$target" = "${TRY_NO_MOUNT:-}" ] || mounts+=(-v "$m")
done
entry=(--entrypoint nsenter "$IMAGE" "--cgroup=/proc/$helper/ns/cgroup" -- node)
[ -n "${TRY_NO_NSENTER:-}" ] && entry=(--entrypoint node "$IMAGE")
start=$(date +%s%N)
# shellcheck disable=SC2046,SC2086
podman run -d --name "$NAME" --network "ns:$netns" --pid host --cgroupns private --read-only $(ulimit_flags) \
  --cap-drop all ${CAPS:+--cap-add "$CAPS"} "${mounts[@]}" --tmpfs /tmp:size=16m \
  -e AMBIENTD_SANDBOX_NODE=n1 -e "AMBIENTD_READY_FILE=$ready" \
  "${entry[@]}" /opt/ambientd/dist/src/cli.js agent --config "$config" ${TRY_ARGS:-} >/dev/null
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
