#!/bin/sh
# /init of the initramfs that scripts/vm/prepare.sh builds; run by the
# kernel as PID 1 in the VM that scripts/vm/run.sh boots. Two stages:
#  1 (in the initramfs): load the modules, mount the host's / over 9p
#    read-only as the lower layer of an overlayfs whose upper layer is tmpfs,
#    mount the run's writable 9p share (tag vmout), switch_root into it.
#  2 (PID 1 on the overlay root): mount proc, sys, devpts, a fresh /run,
#    bpffs at /sys/fs/bpf and cgroup2 at /sys/fs/cgroup/unified, bind the
#    kernel's cached module tree to /lib/modules/$KVER, bring lo up, run the
#    command run.sh wrote to the share (/mnt/ambientd-vm/cmd.sh) with its
#    output to the console and out.log, write its exit code to the share
#    (rc) and the console (AMBIENTD-VM-EXIT=N), power off.
# Nothing on the host is written except the vmout share's directory.
B=/.ambientd-vm/busybox
SHARE=/mnt/ambientd-vm

say() { echo "ambientd-vm: $*" > /dev/console; }
die() {
  say "$*"
  echo "AMBIENTD-VM-EXIT=125" > /dev/console
  [ -d "$SHARE" ] && echo 125 > "$SHARE/rc" 2>/dev/null
  sync
  poweroff -f
  sleep 5
  reboot -f
}

if [ "$1" != stage2 ]; then
  export PATH=/bin
  /bin/busybox --install -s /bin 2>/dev/null
  echo "AMBIENTD-VM-INIT" > /dev/console
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  while read -r m; do
    insmod "/lib/modules/$m" || die "insmod $m failed"
  done < /modules.list
  # cache=loose: the host's files do not change under a test run.
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /lower || die "mount 9p hostroot failed"
  mount -t tmpfs -o mode=755 tmpfs /rw || die "mount tmpfs failed"
  mkdir -p /rw/upper /rw/work
  mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || die "mount overlay failed"
  mkdir -p "/newroot$SHARE" /newroot/.ambientd-vm
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 vmout "/newroot$SHARE" || die "mount 9p vmout failed"
  cp /bin/busybox /init /newroot/.ambientd-vm/
  mount --move /dev /newroot/dev
  umount /proc /sys
  exec switch_root /newroot /.ambientd-vm/busybox sh /.ambientd-vm/init stage2
  die "switch_root failed"
fi

# ---- stage 2: PID 1 on the overlay root -------------------------------------
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
for a in mount mkdir poweroff reboot sync cat hostname ip tee sleep; do
  eval "$a() { $B $a \"\$@\"; }"
done
mount -t proc proc /proc || die "mount proc failed"
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# A fresh /run (the host's holds its own netns files and sandbox state). /tmp
# stays the host's, under the overlay: the repository may be cloned there.
mount -t tmpfs -o mode=755 tmpfs /run
mount -t bpf -o mode=700 bpf /sys/fs/bpf || die "mount bpffs failed"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# The project's default cgroupRoot is /sys/fs/cgroup/unified (a hybrid host's
# layout); only cgroup v2 is mounted, so every controller is on it.
mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified || die "mount cgroup2 failed"

[ -f "$SHARE/vm.env" ] || die "no $SHARE/vm.env"
. "$SHARE/vm.env"
# The kernel's full module tree (cached on the host, seen through 9p) for
# modules the kernel asks modprobe for while the tests run.
if [ -n "$MODDIR" ] && [ -d "$MODDIR" ]; then
  mkdir -p "/lib/modules/$KVER"
  mount --bind "$MODDIR" "/lib/modules/$KVER"
fi
hostname ambientd-vm
ip link set lo up
echo "AMBIENTD-VM-READY kernel=$($B uname -r) uptime=$(cat /proc/uptime)" > /dev/console

set -o pipefail
# coreutils' timeout (the host's): exit 124 when the command ran out of time
timeout -k 10 "${TIMEOUT:-600}" /bin/bash "$SHARE/cmd.sh" < /dev/null 2>&1 | tee "$SHARE/out.log" > /dev/console
rc=$?
echo "$rc" > "$SHARE/rc"
sync
echo "AMBIENTD-VM-EXIT=$rc" > /dev/console
poweroff -f
sleep 5
reboot -f
