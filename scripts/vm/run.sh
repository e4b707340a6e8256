#!/usr/bin/env bash
# Boots Debian's 6.1 kernel (prepared by scripts/vm/prepare.sh) in qemu and
# runs one command in it, in the repository, as root:
#
#   scripts/vm/run.sh [--out DIR] [--timeout SECS] [--mem MB] [--cpus N]
#                     [--env NAME=VALUE]... [--quiet] -- CMD [ARG...]
#
# The VM's root is this machine's / (9p, read-only) under a tmpfs overlay, so
# node, node_modules, dist/, build/Release/ambient_native.node and
# bpf/ambient.bpf.o are the host's, and whatever the command writes stays in
# the VM's memory. The only host directory the VM writes is --out (default: a
# new temp dir), which ends up holding:
#   out.log      the command's stdout+stderr
#   rc           the command's exit code (124: it hit the in-VM timeout)
#   console.log  the VM's serial console (kernel + init messages + the output)
#   qemu.log     qemu's own messages
#   accel        kvm or tcg;  seconds: wall time of the VM
#   vm.env, cmd.sh  what was run
# The console is also copied to stdout unless --quiet.
#
# Exit status: the command's, or 125 if the VM did not report one (boot
# failure, crash, the hard timeout). The command gets --timeout seconds
# (default 600; AMBIENTD_VM_TIMEOUT) inside the VM (then exit 124); qemu is
# killed 60 s (KVM) or 180 s (TCG) after that.
# Accelerator (AMBIENTD_VM_ACCEL=auto|kvm|tcg, default auto): KVM when it is
# usable, else TCG emulation, which is 10-30x slower (it says why).
# Other knobs: AMBIENTD_VM_MEM (MB, 2048), AMBIENTD_VM_CPUS (2),
# AMBIENTD_VM_CACHE (/var/cache/ambientd-vm), AMBIENTD_VM_APPEND (kernel args).
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

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
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

case "$REPO/" in
  /run/*|/proc/*|/sys/*|/dev/*) echo "vm/run: the repository ($REPO) must not be under /run, /proc, /sys or /dev: the VM mounts its own there" >&2; exit 2 ;;
esac
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
  printf 'export PATH=%q HOME=/root LANG=C.UTF-8 TERM=dumb AMBIENTD_VM=1 AMBIENTD_VM_SHARE=/mnt/ambientd-vm\n' "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  [ -n "${CI:-}" ] && printf 'export CI=%q\n' "$CI"
  # the sandbox's and the tests' waits (agent ready, until()) scale with it: emulation is 10-30x slower
  printf 'export AMBIENTD_TIME_SCALE=%q\n' "${AMBIENTD_TIME_SCALE:-4}"
  for kv in "${EXTRA_ENV[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
  printf 'cd %q || exit 126\n' "$REPO"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} > "$OUT/cmd.sh"

# --- accelerator -------------------------------------------------------------
# auto: KVM when /dev/kvm works, else TCG. A KVM that cannot boot a stock
# kernel is detected (PVM, the pagetable-based nested KVM of some cloud
# sandboxes, runs only PVM-enabled guest kernels), and a KVM boot that shows
# no sign of our /init within BOOT_WAIT seconds is retried with TCG.
ACCEL=${AMBIENTD_VM_ACCEL:-auto}
BOOT_WAIT=${AMBIENTD_VM_BOOT_WAIT:-30}
case "$ACCEL" in
  auto)
    if ! { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
      echo "vm/run: /dev/kvm is missing or not accessible: using TCG emulation (10-30x slower)" >&2
      ACCEL=tcg
    elif [ -d /sys/module/kvm_pvm ]; then
      echo "vm/run: this machine's KVM is PVM (kvm_pvm: nested virtualization without VT-x/AMD-V), which boots only PVM-enabled guest kernels; Debian's $KVER is not one: using TCG emulation (10-30x slower)" >&2
      ACCEL=tcg
    else
      ACCEL=kvm
    fi ;;
  kvm|tcg) ;;
  *) echo "vm/run: AMBIENTD_VM_ACCEL must be auto, kvm or tcg" >&2; exit 2 ;;
esac

qpid=""
tailpid=""
cleanup() {
  [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# boot ACCEL: starts qemu in the background (console -> $OUT/console.log).
boot() {
  local append="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init"
  local accel
  if [ "$1" = kvm ]; then
    accel=(-enable-kvm -cpu host)
    hard=$((TIMEOUT + 60))
  else
    # TCG's TSC is the host's clock, the same on every vCPU: without this the
    # kernel calls it unsynchronized and reads the HPET (an MMIO exit) for time.
    accel=(-accel tcg,thread=multi -cpu max)
    append="$append clocksource=tsc tsc=reliable"
    hard=$((TIMEOUT + 180))
  fi
  rm -f "$OUT/out.log" "$OUT/rc"
  : > "$OUT/console.log"
  echo "$1" > "$OUT/accel"
  timeout -k 10 "$hard" qemu-system-x86_64 "${accel[@]}" \
    -machine pc -m "$MEM" -smp "$CPUS" \
    -nodefaults -no-user-config -display none -no-reboot \
    -chardev "file,id=con,path=$OUT/console.log" -serial chardev:con -monitor none \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$append ${AMBIENTD_VM_APPEND:-}" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$OUT,mount_tag=vmout,security_model=none" \
    -device virtio-rng-pci \
    < /dev/null > "$OUT/qemu.log" 2>&1 &
  qpid=$!
  if [ "$QUIET" != 1 ]; then
    [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
    tail -n +1 -F "$OUT/console.log" 2>/dev/null &
    tailpid=$!
  fi
}

echo "vm/run: booting $KVER ($KVERSION, $ACCEL) for: $(printf '%s ' "$@" | tr '\n' ';' | cut -c1-400)" >&2
echo "vm/run: output in $OUT" >&2
start=$(date +%s)
boot "$ACCEL"
if [ "$ACCEL" = kvm ] && [ "${AMBIENTD_VM_ACCEL:-auto}" = auto ]; then
  for _ in $(seq $((BOOT_WAIT * 4))); do
    grep -q 'AMBIENTD-VM-INIT' "$OUT/console.log" 2>/dev/null && break
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.25
  done
  if ! grep -q 'AMBIENTD-VM-INIT' "$OUT/console.log" 2>/dev/null; then
    echo "vm/run: no sign of the VM's /init after ${BOOT_WAIT}s with KVM ($(head -c 300 "$OUT/qemu.log" | tr '\n' ' ')): retrying with TCG emulation" >&2
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    ACCEL=tcg
    boot tcg
  fi
fi
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
sleep 0.3 # let tail print the last lines
secs=$(( $(date +%s) - start ))
echo "$secs" > "$OUT/seconds"

if [ -s "$OUT/rc" ]; then
  rc=$(tr -dc 0-9 < "$OUT/rc")
elif rc=$(sed -n 's/^AMBIENTD-VM-EXIT=\([0-9]*\).*/\1/p' "$OUT/console.log" | tail -n1) && [ -n "$rc" ]; then
  :
else
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then why="hit the hard timeout of ${hard}s"; else why="exited ($qrc) without reporting an exit code"; fi
  echo "vm/run: the VM $why; see $OUT/console.log" >&2
  cat "$OUT/qemu.log" >&2
  tail -n 20 "$OUT/console.log" >&2 || true
  exit 125
fi
echo "vm/run: VM done in ${secs}s ($ACCEL), command exit code $rc" >&2
exit "$rc"
