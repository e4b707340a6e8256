#!/usr/bin/env bash
# Boots Debian's 6.1 kernel (prepared by scripts/vm/prepare.sh) in qemu and
# runs one command in it, in the repository, as root:
#
#   scripts/vm/run.sh [--out DIR] [--timeout SECS] [--mem MB] [--cpus N] [--quiet] -- CMD [ARG...]
#
# The VM's root is this machine's / (9p, read-only) under a tmpfs overlay, so
# node, node_modules, dist/, build/Release/ambient_native.node and
# bpf/ambient.bpf.o are the host's, and whatever the command writes stays in
# the VM's memory. The only host directory the VM writes is --out (default: a
# new temp dir), which ends up holding:
#   out.log      the command's stdout+stderr
#   rc           the command's exit code (124: it hit the in-VM timeout)
#   console.log  the VM's serial console (kernel + init messages + the output)
#   vm.env, cmd.sh  what was run
# The console is also copied to stdout unless --quiet.
#
# Exit status: the command's, or 125 if the VM did not report one (boot
# failure, crash, the hard timeout). The VM gets a hard timeout of --timeout
# (default 600 s; AMBIENTD_VM_TIMEOUT) plus 60 s for boot and power-off.
# Without a usable /dev/kvm it falls back to TCG emulation (slow; says so).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=""
TIMEOUT=${AMBIENTD_VM_TIMEOUT:-600}
MEM=${AMBIENTD_VM_MEM:-2048}
CPUS=${AMBIENTD_VM_CPUS:-2}
QUIET=0
EXTRA_ENV=()

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --quiet) QUIET=1; shift ;;
    --env) [[ "$2" == [A-Za-z_]*=* ]] || { echo "vm/run: --env takes NAME=VALUE" >&2; exit 2; }; EXTRA_ENV+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || { echo "vm/run: --timeout must be seconds" >&2; exit 2; }

command -v qemu-system-x86_64 >/dev/null || { echo "vm/run: qemu-system-x86_64 not found (make deps installs qemu-system-x86)" >&2; exit 125; }

"$HERE/prepare.sh" > /dev/null || { echo "vm/run: scripts/vm/prepare.sh failed" >&2; exit 125; }
# shellcheck disable=SC1091
. "${AMBIENTD_VM_CACHE:-/var/cache/ambientd-vm}/current.env"

if [ -z "$OUT" ]; then
  OUT=$(mktemp -d /tmp/ambientd-vm.XXXXXX)
else
  mkdir -p "$OUT"
  rm -f "$OUT/out.log" "$OUT/rc" "$OUT/console.log"
fi
OUT=$(cd "$OUT" && pwd)
# The VM writes here as root through 9p (security_model=none).
chmod 755 "$OUT"

{
  printf 'KVER=%q\n' "$KVER"
  printf 'MODDIR=%q\n' "$MODDIR"
  printf 'TIMEOUT=%q\n' "$TIMEOUT"
} > "$OUT/vm.env"
{
  echo '# written by scripts/vm/run.sh; run by /bin/bash inside the VM'
  printf 'export PATH=%q HOME=/root LANG=C.UTF-8 TERM=dumb AMBIENTD_VM=1\n' "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  [ -n "${CI:-}" ] && printf 'export CI=%q\n' "$CI"
  for kv in "${EXTRA_ENV[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
  printf 'cd %q || exit 126\n' "$REPO"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} > "$OUT/cmd.sh"

accel=(-enable-kvm -cpu host)
accel=(-accel tcg,thread=multi -cpu ${AMBIENTD_VM_TCG_CPU:-max}) # TEMP
hard=$((TIMEOUT + 60))
if ! { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
  echo "vm/run: /dev/kvm is not usable here: falling back to TCG emulation (10-50x slower)" >&2
  accel=(-accel tcg -cpu max)
  hard=$((TIMEOUT + 600))
fi

qemu=(qemu-system-x86_64 "${accel[@]}"
  -machine pc -m "$MEM" -smp "$CPUS"
  -nodefaults -no-user-config -nographic -no-reboot
  -serial stdio -monitor none
  -kernel "$KERNEL" -initrd "$INITRD"
  -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init ${AMBIENTD_VM_APPEND:-}"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$OUT,mount_tag=vmout,security_model=none"
  -device virtio-rng-pci)

echo "vm/run: booting $KVER ($KVERSION) for: $*" >&2
echo "vm/run: output in $OUT" >&2
start=$(date +%s)
set +e
if [ "$QUIET" = 1 ]; then
  timeout -k 10 "$hard" "${qemu[@]}" < /dev/null > "$OUT/console.log" 2>&1
  qrc=$?
else
  timeout -k 10 "$hard" "${qemu[@]}" < /dev/null 2>&1 | tee "$OUT/console.log"
  qrc=${PIPESTATUS[0]}
fi
set -e
secs=$(( $(date +%s) - start ))

if [ -s "$OUT/rc" ]; then
  rc=$(tr -dc 0-9 < "$OUT/rc")
elif rc=$(sed -n 's/^AMBIENTD-VM-EXIT=\([0-9]*\).*/\1/p' "$OUT/console.log" | tail -n1) && [ -n "$rc" ]; then
  :
else
  [ "$qrc" = 124 ] && why="hit the hard timeout of ${hard}s" || why="exited ($qrc) without reporting"
  echo "vm/run: the VM $why; see $OUT/console.log" >&2
  tail -n 20 "$OUT/console.log" >&2 || true
  exit 125
fi
echo "vm/run: VM done in ${secs}s, command exit code $rc" >&2
exit "$rc"
