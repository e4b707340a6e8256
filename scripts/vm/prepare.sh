#!/usr/bin/env bash
# Prepares what scripts/vm/run.sh boots: Debian 12's own 6.1 kernel (the
# linux-image-6.1.0-NN-amd64 package that linux-image-amd64 depends on,
# downloaded with `apt-get download` and unpacked with `dpkg-deb -x`: it is
# never installed on this machine) and a small initramfs (busybox-static,
# the modules for a 9p + overlayfs root and for the datapath tests, /init).
#
# Idempotent: everything is cached under $AMBIENTD_VM_CACHE
# (default /var/cache/ambientd-vm); a second run only checks and prints.
# Needs root for apt-get only when the kernel package is not cached yet.
#
# Prints the KEY=VALUE lines of $CACHE/current.env (KVER, KERNEL, INITRD,
# MODDIR, KPKG, KVERSION) and exits 0; exits 1 with a message on failure.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

CACHE=${AMBIENTD_VM_CACHE:-/var/cache/ambientd-vm}
HERE=$(cd "$(dirname "$0")" && pwd)
# Bump when the initramfs layout or init changes: forces a rebuild of it.
INITRD_FORMAT=3

# Modules loaded by /init, with their dependencies (resolved from modules.dep).
#  boot: virtio PCI transport, 9p over virtio (the host's root), overlayfs
#  (writable tmpfs layer over it), the virtio RNG.
#  tests: veth + bridge (sandbox topology), sock_diag for `ss -e` (fwmark),
#  and tc ingress/cls_bpf for anything that attaches sched_cls programs.
BOOT_MODULES=(virtio_pci 9pnet_virtio 9p overlay virtio_rng)
TEST_MODULES=(veth bridge inet_diag tcp_diag udp_diag unix_diag sch_ingress cls_bpf)

die() { echo "vm/prepare: $*" >&2; exit 1; }
log() { echo "vm/prepare: $*" >&2; }

for tool in apt-cache apt-get dpkg-deb depmod modprobe cpio gzip; do
  command -v "$tool" >/dev/null || die "$tool not found (make deps installs kmod, cpio, busybox-static, qemu-system-x86)"
done
BUSYBOX=/bin/busybox # from busybox-static: the initramfs has no libc
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' && [ -x "$BUSYBOX" ] \
  || die "busybox-static is not installed (make deps)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# --- which kernel package --------------------------------------------------
resolve_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$/ { print $2; exit }'
}
KPKG=${AMBIENTD_VM_KERNEL_PKG:-}
if [ -z "$KPKG" ]; then
  KPKG=$(resolve_pkg || true)
  if [ -z "$KPKG" ] && [ "$(id -u)" -eq 0 ]; then
    log "apt-get update (no linux-image-amd64 in the package lists)"
    apt-get update -qq >/dev/null 2>&1 || true
    KPKG=$(resolve_pkg || true)
  fi
  if [ -z "$KPKG" ] && [ -f "$CACHE/current.env" ]; then
    KPKG=$(sed -n 's/^KPKG=//p' "$CACHE/current.env")
    log "apt has no linux-image-amd64; using the cached $KPKG"
  fi
fi
[ -n "$KPKG" ] || die "cannot resolve the Debian 6.1 kernel package (apt-cache depends linux-image-amd64 found none; run apt-get update)"
KVER=${KPKG#linux-image-}
case "$KVER" in 6.1.*) ;; *) die "$KPKG is not a 6.1 kernel" ;; esac

KDIR="$CACHE/$KVER"
ROOT="$KDIR/root"
MODDIR="$ROOT/lib/modules/$KVER"
KERNEL="$ROOT/boot/vmlinuz-$KVER"
INITRD="$KDIR/initrd.img"

# --- download + unpack (once per kernel package version) -------------------
if [ ! -f "$KDIR/.unpacked" ]; then
  [ "$(id -u)" -eq 0 ] || die "$KPKG is not cached yet: run as root (apt-get download)"
  rm -rf "$KDIR"
  mkdir -p "$KDIR/deb"
  chmod 755 "$KDIR/deb"
  log "apt-get download $KPKG"
  # apt's sandbox user cannot write root-owned dirs: it warns and downloads as root.
  download() { (cd "$KDIR/deb" && apt-get download -q "$KPKG" 2>&1 | grep -v 'unsandboxed as root' >&2) || true; }
  download
  deb=$(ls "$KDIR"/deb/"$KPKG"_*.deb 2>/dev/null | head -n1)
  if [ -z "$deb" ]; then
    log "apt-get update (stale package lists?) and one more try"
    apt-get update -qq >/dev/null 2>&1 || true
    download
    deb=$(ls "$KDIR"/deb/"$KPKG"_*.deb 2>/dev/null | head -n1)
  fi
  [ -n "$deb" ] || die "apt-get download $KPKG failed"
  log "dpkg-deb -x $(basename "$deb")"
  dpkg-deb -x "$deb" "$ROOT"
  dpkg-deb -f "$deb" Version > "$KDIR/version"
  rm -rf "$KDIR/deb"
  [ -f "$KERNEL" ] || die "no $KERNEL in $KPKG"
  # The package has no modules.dep (its postinst runs depmod): make one here.
  depmod -b "$ROOT" "$KVER"
  touch "$KDIR/.unpacked"
  # Older kernels' caches (a Debian point release replaced the package).
  for old in "$CACHE"/6.1.*; do
    [ "$old" = "$KDIR" ] || { log "removing old $(basename "$old")"; rm -rf "$old"; }
  done
fi

# Kernel config checks: what the tests need must be built in or a module we load.
config="$ROOT/boot/config-$KVER"
for opt in BPF_SYSCALL CGROUP_BPF BPF_STREAM_PARSER NET_NS CGROUPS NET_CLS_ACT DEBUG_INFO_BTF DEVTMPFS TMPFS; do
  grep -q "^CONFIG_$opt=y" "$config" || die "CONFIG_$opt is not built into $KVER"
done

# --- initramfs -------------------------------------------------------------
stamp="format=$INITRD_FORMAT init=$(sha256sum "$HERE/init.sh" | cut -c1-16) busybox=$(sha256sum "$BUSYBOX" | cut -c1-16) mods=${BOOT_MODULES[*]}/${TEST_MODULES[*]}"
if [ ! -f "$INITRD" ] || [ "$(cat "$KDIR/initrd.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "building $INITRD"
  stage=$(mktemp -d "$KDIR/initrd.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,lib/modules,lower,rw,newroot}
  cp "$BUSYBOX" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  install -m 755 "$HERE/init.sh" "$stage/init"
  # insmod order: every module after its dependencies, each once.
  : > "$stage/modules.list"
  declare -A seen=()
  for m in "${BOOT_MODULES[@]}" "${TEST_MODULES[@]}"; do
    deps=$(modprobe -d "$ROOT" -S "$KVER" --show-depends "$m") || die "module $m: not in $KVER"
    while read -r kind path _; do
      [ "$kind" = insmod ] || continue # "builtin NAME": nothing to load
      name=$(basename "$path")
      [ -n "${seen[$name]:-}" ] && continue
      seen[$name]=1
      cp "$path" "$stage/lib/modules/$name"
      echo "$name" >> "$stage/modules.list"
    done <<< "$deps"
  done
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  echo "$stamp" > "$KDIR/initrd.stamp"
  rm -rf "$stage"
  trap - EXIT
fi

cat > "$CACHE/current.env.tmp" <<ENV
KPKG=$KPKG
KVERSION=$(cat "$KDIR/version")
KVER=$KVER
KERNEL=$KERNEL
INITRD=$INITRD
MODDIR=$MODDIR
ENV
mv "$CACHE/current.env.tmp" "$CACHE/current.env"
cat "$CACHE/current.env"
