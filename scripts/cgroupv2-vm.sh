#!/usr/bin/env bash
# cgroupv2-vm.sh — run the cgroup-heavy e2e tests (limits, OOM, tree-kill,
# restart, adoption) on a pure cgroup v2 host: a small qemu virtual machine.
#
# The machines we develop on have hybrid cgroups (v1 controllers + a cgroup2
# mount without controllers); most users' machines are pure v2. This boots a
# Debian 6.1 kernel with an initramfs holding busybox, the static test
# binaries and a tiny /init (scripts/cgroupv2-vm-init.sh) that mounts only
# cgroup2 at /sys/fs/cgroup with +memory +cpu +pids enabled, then runs the
# e2e test binary there and hands its verdict back as qemu's exit code.
#
# Steps:
#   1. qemu-system-x86 and busybox-static, from Debian packages (installed
#      with apt-get when missing; needs root).
#   2. The kernel: the pinned linux-image package, downloaded (not installed)
#      and unpacked with dpkg-deb; the uncompressed vmlinux is cut out of the
#      bzImage so qemu boots it straight through its PVH entry (no firmware,
#      no decompression under emulation). Cached in bin/cgroupv2-vm.
#   3. Static binaries (CGO_ENABLED=0): rbee-hive, llm-worker-rbee, the
#      generic test worker, and the e2e test binary. No race detector in the
#      guest: it needs cgo, and the guest has no C library.
#   4. The initramfs (busybox cpio, uncompressed: decompressing under
#      emulation costs more than loading).
#   5. qemu with KVM when /dev/kvm works (a short probe boot decides),
#      otherwise plain emulation (TCG, ~25x slower for CPU-bound code).
#
# Usage: scripts/cgroupv2-vm.sh  (make test-cgroupv2). Environment:
#   CGV2_RUN      the -test.run regexp (default: the tests listed below)
#   CGV2_FULL=1   the longer list below
#   CGV2_ACCEL    kvm or tcg to skip the probe
#   CGV2_TIMEOUT  the whole VM run's limit in seconds (default 300, 900 with
#                 CGV2_FULL; a run that hits it with no verdict is booted once more)
# Exit status 0 only when the guest reported that every test passed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

# The kernel, pinned: the security pocket replaces ABI-numbered packages as
# it moves, so when this one is gone from the archive the newest
# linux-image-6.1.0-*-amd64 is used instead, with a warning (a CI that broke
# on Debian's schedule would be worse than a newer 6.1 kernel; the version
# used is printed). Update the pin then.
KERNEL_PKG=linux-image-6.1.0-50-amd64
KERNEL_VER=6.1.176-1

# The tests, by what they exercise on the cgroup v2 path. The default set
# keeps the run to a few minutes under emulation (each e2e test costs 5-20 s
# there); CGV2_FULL=1 adds the rest of the limits, tree-kill, restart and
# adoption tests that pass there (~5 min of guest time). Left out of both:
# TestHiveSIGKILLAdoptsWorkersInEveryState, whose worker with a 3 s idle
# timeout idles out under emulation before its five siblings have loaded
# (a timing assumption of the test, not a cgroup matter; it runs on the host).
LIMITS='TestMemoryLimitOOMKillIsReportedAsOOMKilled|TestPidsLimitContainsForkBomb|TestCPULimitCapsBusyLoop|TestLimitsUnsupportedWithoutCgroupAccess|TestSpareCgroupIsTheNextWorkersWithItsLimitsAndGoesAtExit'
TREEKILL='TestSetsidGrandchildKilledOnStopThroughCgroup|TestGrandchildHoldingPipesIsKilledOnStop|TestEscapedChildHandedToHiveIsKilled'
RESTART='TestSIGKILLRestartsSameIDNewPIDAfterBaseDelay|TestCrashLoopEndsAtMaxFailures|TestStopDuringRestartEndsTheWorker'
ADOPTION='TestKeepWorkersOnExitUpgradeRoundTrip|TestAdoptedWorkerKeepsItsSetsidGrandchild|TestWorkerKilledWhileHiveDownIsFailedAndRestarted|TestOrphanCarryingMarkerIsKilled'
if [ "${CGV2_FULL:-}" = 1 ]; then
	LIMITS+='|TestNofileLimitApplies|TestMemoryPreflightRefusesWithNumbers'
	TREEKILL+='|TestStopEscalatesToSIGKILLForWorkerIgnoringSIGTERM'
	RESTART+='|TestFailureCountResetsAfterStableRunning|TestAlwaysRestartsCleanExitOnFailureDoesNot|TestAskedEndingsNeverRestart|TestStopDuringBackoffCancelsRestart|TestRestartKeepsIDWithNewPID'
	ADOPTION+='|TestRecordedPIDReusedByAnotherProcessIsNeverSignalled|TestAdoptionNeedsTheMarkerNotJustTheStartTime'
fi
RUN=${CGV2_RUN:-"^($LIMITS|$TREEKILL|$RESTART|$ADOPTION)\$"}
DEFAULT_TIMEOUT=300
[ "${CGV2_FULL:-}" = 1 ] && DEFAULT_TIMEOUT=900
TIMEOUT=${CGV2_TIMEOUT:-$DEFAULT_TIMEOUT}

say() { echo "cgroupv2-vm: $*"; }
die() { echo "cgroupv2-vm: FAIL: $*" >&2; exit 1; }

work=bin/cgroupv2-vm
mkdir -p "$work"

# 1. Tools.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# busybox must be static: it is the guest's whole userland.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then need+=(busybox-static); fi
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this needs a Debian or Ubuntu host"
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. The kernel.
# (apt-cache show PKG=VER exits 0 for a missing version; madison lists.)
kernel_available() { apt-cache madison "$1" 2>/dev/null | awk -F' *[|] *' -v v="$2" '$2 == v {f = 1} END {exit !f}'; }
vmlinux=$work/vmlinux-$KERNEL_PKG-$KERNEL_VER
if ! [ -e "$vmlinux" ]; then
	pkg=$KERNEL_PKG ver=$KERNEL_VER
	if ! kernel_available "$pkg" "$ver"; then
		apt-get update -qq
	fi
	if ! kernel_available "$pkg" "$ver"; then
		pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -t- -k4,4n | tail -1)
		[ -n "$pkg" ] || die "no linux-image-6.1.0-*-amd64 package in the apt sources (the pinned $KERNEL_PKG=$KERNEL_VER is gone too)"
		ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
		say "WARNING: pinned kernel $KERNEL_PKG=$KERNEL_VER is no longer in the archive; using $pkg=$ver (update KERNEL_PKG/KERNEL_VER in $0)"
	fi
	vmlinux=$work/vmlinux-$pkg-$ver
	if ! [ -e "$vmlinux" ]; then
		say "fetching $pkg=$ver"
		dl=$(mktemp -d)
		(cd "$dl" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || die "apt-get download $pkg=$ver failed"
		dpkg-deb --fsys-tarfile "$dl"/*.deb | tar -x -C "$dl" --wildcards './boot/vmlinuz-*'
		bz=$(ls "$dl"/boot/vmlinuz-*)
		# The bzImage's payload is an xz stream (CONFIG_KERNEL_XZ): cut it
		# at its magic and decompress; xz stops at the end of the stream.
		for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | cut -d: -f1); do
			tail -c +$((off + 1)) "$bz" | xz -dc 2>/dev/null > "$vmlinux.tmp" || true
			if [ "$(head -c 4 "$vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
				mv "$vmlinux.tmp" "$vmlinux"
				break
			fi
		done
		rm -rf "$dl" "$vmlinux.tmp"
		[ -e "$vmlinux" ] || die "could not extract an ELF vmlinux from $bz"
	fi
fi
say "kernel $(basename "$vmlinux")"

# 3. Static binaries.
root=$work/root
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,root,rbee/bin}
say "building static binaries"
export CGO_ENABLED=0
go build -trimpath -ldflags='-s -w' -o "$root/rbee/bin/" ./cmd/rbee-hive ./cmd/llm-worker-rbee ./internal/testutil/genericworker
go test -c -trimpath -ldflags='-s -w' -o "$root/rbee/e2e.test" ./e2e

# 4. The initramfs.
cp /bin/busybox "$root/bin/busybox"
cp scripts/cgroupv2-vm-init.sh "$root/init"
chmod 755 "$root/init"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
# The test binary's arguments, one a line.
printf '%s\n' -test.v -test.count=1 -test.timeout=$((TIMEOUT - 60))s "-test.run=$RUN" > "$root/rbee/args"
(cd "$root" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null) > "$work/initramfs.cpio"
rm -rf "$root"
say "initramfs $(du -m "$work/initramfs.cpio" | cut -f1) MiB"

# 5. Boot.
vm() { # vm ACCEL TIMEOUT [extra kernel args]
	local accel=$1 limit=$2
	shift 2
	local rc=0
	timeout --foreground "$limit" qemu-system-x86_64 \
		-accel "$accel" -cpu max -smp 2 -m 2048 \
		-nodefaults -no-user-config -display none -no-reboot \
		-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-kernel "$vmlinux" -initrd "$work/initramfs.cpio" \
		-append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all $*" || rc=$?
	return $rc
}
accel=${CGV2_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		rc=0
		vm kvm 20 rbee.probe >"$work/kvm-probe.log" 2>&1 || rc=$?
		if [ $rc -eq 33 ]; then
			accel=kvm
		else
			say "/dev/kvm is there but a KVM boot did not reach /init (qemu exit $rc, $work/kvm-probe.log): plain emulation"
		fi
	fi
fi
[ "$accel" = tcg ] && accel=tcg,thread=multi
say "booting ($accel), limit ${TIMEOUT}s"
rc=0
vm "$accel" "$TIMEOUT" || rc=$?
if [ $rc -eq 124 ]; then
	# The guest hung without a word: the test binary's own timeout (60 s
	# earlier) would have printed its goroutines and failed. Seen once in
	# many runs under emulation (tcg), with two CPU-limited busy loops
	# spinning on both virtual CPUs. Not a verdict on the code: once more.
	say "the VM hung past ${TIMEOUT}s with no verdict from the tests (an emulation hang): booting it once more"
	rc=0
	vm "$accel" "$TIMEOUT" || rc=$?
fi
case $rc in
33) say "PASS (pure cgroup v2 guest)"; exit 0 ;;
35) die "the tests failed in the guest" ;;
124) die "the VM did not finish within ${TIMEOUT}s" ;;
*) die "the VM ended without a verdict (qemu exit $rc)" ;;
esac
