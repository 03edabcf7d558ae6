#!/bin/busybox sh
# /init of the cgroup v2 test VM (scripts/cgroupv2-vm.sh copies it into the
# initramfs). It runs as PID 1 from the initramfs, with busybox as its only
# userland: it mounts a pure cgroup2 hierarchy at /sys/fs/cgroup, enables
# the memory, cpu and pids controllers for the root's children, brings up
# loopback, runs the e2e test binary with the arguments in /rbee/args, and
# reports the verdict through qemu's isa-debug-exit device (I/O port 0xf4):
# 0x10 for pass (qemu exits 33), 0x11 for fail (qemu exits 35). A guest that
# ends any other way (a panic, a hang) gives no verdict, which the host
# counts as a failure.
/bin/busybox --install -s /bin
export PATH=/bin
verdict() {
	printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
	# Not reached when the device is there.
	echo "rbee-vm: no isa-debug-exit device; powering off without a verdict"
	poweroff -f
}
fail() { echo "rbee-vm: FAIL: $*"; verdict 17; }

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"

# The probe boot (cgroupv2-vm.sh checks that KVM works) stops here.
if grep -qw rbee.probe /proc/cmdline; then
	echo "rbee-vm: probe boot reached /init"
	verdict 16
fi

# A pure cgroup v2 host: only the cgroup2 hierarchy is mounted (the kernel is
# booted with cgroup_no_v1=all, so no v1 hierarchy can appear either).
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo "+memory +cpu +pids" > /sys/fs/cgroup/cgroup.subtree_control || fail "enable controllers"
echo "rbee-vm: $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
echo "rbee-vm: cgroup2 at /sys/fs/cgroup: controllers [$(cat /sys/fs/cgroup/cgroup.controllers)], subtree_control [$(cat /sys/fs/cgroup/cgroup.subtree_control)], init in $(cut -d: -f3 /proc/self/cgroup)"
grep -E ' cgroup2? ' /proc/mounts | sed 's/^/rbee-vm: mount: /'

ip link set lo up || fail "loopback"
hostname rbee-vm
ulimit -n 65536

cd /rbee || fail "no /rbee"
export HOME=/root TMPDIR=/tmp RBEE_TEST_BIN_DIR=/rbee/bin
start=$(date +%s)
# The e2e binary's arguments, one a line (set -f: no globbing of the regexp).
set -f
IFS='
'
./e2e.test $(cat /rbee/args)
rc=$?
unset IFS
secs=$(( $(date +%s) - start ))
# The summary line go test prints for a package.
if [ $rc -eq 0 ]; then
	printf 'ok  \tgithub.com/rbee/rbee-hive/e2e\t%ss (cgroup v2 VM)\n' "$secs"
	verdict 16
fi
printf 'FAIL\tgithub.com/rbee/rbee-hive/e2e\t%ss (cgroup v2 VM)\n' "$secs"
verdict 17
