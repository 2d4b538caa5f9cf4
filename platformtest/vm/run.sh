#!/usr/bin/env bash
# Runs the platform tests (package ./platformtest) against real OpenZFS.
#
# With ZFS on this host (root, /dev/zfs, zfs and zpool on PATH) the test binary
# runs here. Otherwise a throwaway QEMU VM is booted: Debian's generic kernel,
# OpenZFS modules built for it from Debian's zfs-dkms source, and an initramfs
# carrying busybox, the zfs userland and the statically linked test binary.
# Everything but the test binary and its small initramfs part is cached, keyed
# by kernel and zfs package versions. See platformtest/vm/README.md.
#
# Environment:
#   PLATFORMTEST_ARGS              test binary flags (default: -test.v), shell-quoted
#   ZREPL_PLATFORMTEST_CACHE       cache dir (default: $HOME/.cache/zrepl-platformtest)
#   ZREPL_PLATFORMTEST_MEM         VM memory in MiB (default: 3000)
#   ZREPL_PLATFORMTEST_CPUS        VM cpus (default: 2)
#   ZREPL_PLATFORMTEST_TIMEOUT     seconds before the VM is killed (default: 1800)
#   ZREPL_PLATFORMTEST_APT_MAX_AGE seconds the apt lists are trusted before
#                                  `apt-get update` re-checks versions (default: 86400)
#   ZREPL_PLATFORMTEST_FORCE_VM=1  use the VM even where ZFS is present
#   ZREPL_UPSTREAM                 zrepl v0.7.0 binary for the interop tests
#                                  (default: ../shared/upstream/zrepl from the repo)
#   ZREPL_PLATFORMTEST_ZFS         OpenZFS line(s) the VM runs: 2.1 (bookworm's
#                                  2.1.11), 2.3 (trixie's newest 2.3.x, built for
#                                  bookworm's kernel) or all (2.1, then 2.3; the
#                                  run fails if either does). Default 2.1, one
#                                  line for a quick run; .ci/run runs both
set -euo pipefail

# Everything runs inside main, which bash parses completely before running:
# editing this file then cannot derail a run already in progress.
main() {

log() { printf 'platformtest: %s\n' "$*" >&2; }
die() {
	printf 'platformtest: FAILED: %s\n' "$*" >&2
	exit 1
}
now() { date +%s; }
phase_start=0
phase() {
	phase_start=$(now)
	log "$*"
}
phase_done() { log "  ... done in $(($(now) - phase_start)) s"; }

(($# == 0)) || die "run.sh takes no arguments; pass test binary flags in PLATFORMTEST_ARGS"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GO=${GO:-go}
ARGS=${PLATFORMTEST_ARGS--test.v}
CACHE=${ZREPL_PLATFORMTEST_CACHE:-$HOME/.cache/zrepl-platformtest}
MEM=${ZREPL_PLATFORMTEST_MEM:-3000}
CPUS=${ZREPL_PLATFORMTEST_CPUS:-2}
TIMEOUT=${ZREPL_PLATFORMTEST_TIMEOUT:-1800}
APT_MAX_AGE=${ZREPL_PLATFORMTEST_APT_MAX_AGE:-86400}
# The interop tests run zrepl v0.7.0 against this project; where the binary
# is absent they skip, saying so.
UPSTREAM=${ZREPL_UPSTREAM:-$REPO/../shared/upstream/zrepl}
if [[ -x $UPSTREAM ]]; then
	UPSTREAM=$(cd "$(dirname "$UPSTREAM")" && pwd)/$(basename "$UPSTREAM")
else
	log "no zrepl binary at $UPSTREAM (ZREPL_UPSTREAM): the interop tests will skip"
	UPSTREAM=
fi
# Bump when the layout of the cached base changes, so old caches are rebuilt.
BASE_FORMAT=1
MARKER=ZREPL-PLATFORMTEST-EXIT-STATUS

for v in MEM CPUS TIMEOUT APT_MAX_AGE; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "ZREPL_PLATFORMTEST_$v must be a number, got '${!v}'"
done
ZFSLINE=${ZREPL_PLATFORMTEST_ZFS:-2.1}
case $ZFSLINE in
2.1 | 2.3 | all) ;;
*) die "ZREPL_PLATFORMTEST_ZFS must be 2.1, 2.3 or all, got '$ZFSLINE'" ;;
esac

t_total=$(now)

build_test_binary() { # $1: output path
	phase "building the test binary (CGO_ENABLED=0 go test -c ./platformtest)"
	(cd "$REPO" && CGO_ENABLED=0 "$GO" test -c -o "$1" ./platformtest) || die "go test -c ./platformtest failed"
	phase_done
}

# --- Host with ZFS: no VM. ---------------------------------------------------
if [[ ${ZREPL_PLATFORMTEST_FORCE_VM:-} != 1 && -e /dev/zfs && $(id -u) == 0 ]] &&
	command -v zfs >/dev/null && command -v zpool >/dev/null; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	build_test_binary "$tmp/platformtest.test"
	log "ZFS present on this host: running the tests here ($(zfs version 2>/dev/null | tr '\n' ' '))"
	[[ $ZFSLINE == all ]] || log "ZREPL_PLATFORMTEST_ZFS=$ZFSLINE has no effect: the host's ZFS is what runs"
	eval "set -- $ARGS"
	rc=0
	(cd "$tmp" && ZREPL_PLATFORMTEST=host ZREPL_UPSTREAM=$UPSTREAM "$tmp/platformtest.test" "$@") || rc=$?
	log "exit status $rc (host run, $(($(now) - t_total)) s)"
	exit "$rc"
fi

# --- VM. ---------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "building the VM needs root (apt-get installs); run as root or on a host with ZFS"
command -v apt-get >/dev/null || die "the VM is built from Debian packages: apt-get is required"

if [[ $ZFSLINE == all ]]; then
	# Each line is a run of its own (own base, own VM); both always run, so
	# one failing still reports the other.
	local line t rc summary="" worst=0
	for line in 2.1 2.3; do
		t=$(now)
		rc=0
		ZREPL_PLATFORMTEST_ZFS=$line "${BASH_SOURCE[0]}" || rc=$?
		summary+="zfs $line: exit status $rc ($(($(now) - t)) s); "
		((rc == 0)) || worst=$rc
	done
	log "${summary}$(($(now) - t_total)) s in all"
	exit "$worst"
fi

# What differs between the OpenZFS lines. The kernel is bookworm's either way
# (the one this host's headers and compiler build for); 2.3 comes from trixie,
# whose 2.3.x builds against 6.1, and its userland needs trixie's glibc (2.38
# or later), so its libraries, the loader included, come from trixie too.
case $ZFSLINE in
2.1)
	SUITE=bookworm
	APTDIR=$CACHE/apt
	ZFS_DEBS="zfs-dkms zfsutils-linux libzfs4linux libzpool5linux libnvpair3linux libuutil3linux"
	# From the host's (bookworm) sources, beside the kernel and busybox.
	MAIN_DEBS="libssl3 libudev1 libblkid1 libuuid1 zlib1g libgcc-s1"
	# Load order: each module depends only on those before it.
	MODULES="spl znvpair zcommon zunicode zavl icp zlua zzstd zfs"
	;;
2.3)
	SUITE=trixie
	APTDIR=$CACHE/apt-trixie
	ZFS_DEBS="zfs-dkms zfsutils-linux libzfs6linux libzpool6linux libnvpair3linux libuutil3linux"
	# From trixie, with the zfs packages: every library ldd lists must be
	# among them (checked below), so none silently comes from the host.
	ZFS_DEBS+=" libc6 libssl3t64 libudev1 libblkid1 libuuid1 zlib1g libgcc-s1 libtirpc3t64 libgssapi-krb5-2"
	ZFS_DEBS+=" libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1 libcap2 libzstd1"
	MAIN_DEBS=""
	# Since 2.2 everything but spl is one module.
	MODULES="spl zfs"
	;;
esac

mkdir -p "$CACHE"
# Runs hold the lock shared, so warm runs overlap and no run loses its base;
# refreshing the apt lists or building a base takes it exclusive.
exec 9>"$CACHE/lock"
if ! flock -n -s 9; then
	log "waiting for another run that is updating the cache ($CACHE/lock)"
	flock -s 9 || die "cannot lock $CACHE/lock"
fi
exclusive=0
lock_exclusive() {
	((exclusive == 0)) || return 0
	# Converting the lock drops the shared one first (flock(2)), so two runs
	# upgrading at once cannot deadlock.
	if ! flock -n 9; then
		log "waiting for other runs to release the cache ($CACHE/lock)"
		flock 9 || die "cannot lock $CACHE/lock"
	fi
	exclusive=1
}

# Debian's zfs packages are in `contrib`; rather than editing the host's apt
# sources, a private apt configuration inside the cache sees contrib only
# (bookworm) or trixie's main and contrib, and is used just to download (never
# install) those packages.
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ $SUITE == bookworm ]]; then
	cat >"$APTDIR/sources.list.$$" <<EOF
deb [signed-by=$KEYRING] http://deb.debian.org/debian bookworm contrib
deb [signed-by=$KEYRING] http://deb.debian.org/debian bookworm-updates contrib
deb [signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security contrib
EOF
else
	cat >"$APTDIR/sources.list.$$" <<EOF
deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie main contrib
deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie-updates main contrib
deb [signed-by=$KEYRING] http://deb.debian.org/debian-security trixie-security main contrib
EOF
fi
mv "$APTDIR/sources.list.$$" "$APTDIR/sources.list" # atomic: other runs may be reading it
CONTRIB=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o "Dir::Etc::SourceParts=$APTDIR/none"
	-o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o APT::Sandbox::User=root)
export DEBIAN_FRONTEND=noninteractive

apt_update() {
	lock_exclusive
	phase "apt-get update (host lists, and $SUITE's zfs lists in the cache)"
	apt-get -qq -o DPkg::Lock::Timeout=600 update >/dev/null || die "apt-get update failed"
	apt-get -qq "${CONTRIB[@]}" update >/dev/null || die "apt-get update ($SUITE, private lists) failed"
	touch "$APTDIR/updated"
	phase_done
}
updated=0
apt_stale() { (($(now) - $(stat -c %Y "$APTDIR/updated" 2>/dev/null || echo 0) > APT_MAX_AGE)); }
if apt_stale; then
	lock_exclusive
	# Another run may have refreshed the lists while this one waited.
	if apt_stale; then
		apt_update
		updated=1
	fi
fi

candidate() { # [apt options...] package: the version apt would install, or empty
	apt-cache "${@:1:$#-1}" policy "${!#}" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)' || true
}

resolve() {
	# The generic kernel's ABI name moves (6.1.0-56-amd64 today): ask the metapackage.
	KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	KVER=${KPKG#linux-image-}
	KPKGVER=$(candidate "$KPKG")
	ZVER=$(candidate "${CONTRIB[@]}" zfs-dkms)
}
resolve
if [[ -z $KVER || -z $KPKGVER || -z $ZVER ]] && ((updated == 0)); then
	apt_update
	resolve
fi
[[ -n $KVER && -n $KPKGVER ]] || die "cannot resolve the kernel: apt-cache depends linux-image-amd64 gave nothing"
[[ -n $ZVER ]] || die "cannot resolve zfs-dkms in Debian $SUITE contrib"
[[ $ZVER == "$ZFSLINE".* ]] || die "zfs-dkms in Debian $SUITE contrib is $ZVER, not OpenZFS $ZFSLINE"
log "kernel $KVER ($KPKGVER), zfs $ZVER (ZREPL_PLATFORMTEST_ZFS=$ZFSLINE, $SUITE)"

install_host() { # packages...
	phase "apt-get install --no-install-recommends $*"
	apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
	phase_done
}
if ! command -v qemu-system-x86_64 >/dev/null; then
	lock_exclusive
	command -v qemu-system-x86_64 >/dev/null || install_host qemu-system-x86
fi

BASE=$CACHE/base-v$BASE_FORMAT-$KVER-$KPKGVER-zfs-$ZVER
build_base() {
	local work=$BASE.partial
	rm -rf "$work"
	mkdir -p "$work/debs" "$work/x" "$work/root"
	cd "$work/debs"

	phase "downloading Debian packages into the cache"
	# shellcheck disable=SC2086 # the package lists are words
	apt-get -qq -o APT::Sandbox::User=root download "$KPKG=$KPKGVER" busybox-static $MAIN_DEBS ||
		die "apt-get download (main) failed"
	# shellcheck disable=SC2086
	apt-get -qq "${CONTRIB[@]}" download $ZFS_DEBS || die "apt-get download ($SUITE) failed"
	for d in *.deb; do dpkg-deb -x "$d" "$work/x"; done
	phase_done

	# Kernel headers are the one build dependency that must live on the host:
	# they come with the kbuild tools and the compiler the kernel was built with.
	local hdr=/usr/src/linux-headers-$KVER
	[[ -d $hdr ]] || install_host "linux-headers-$KVER"
	local common
	common=$(ls -d /usr/src/linux-headers-"${KVER%-amd64}"-common 2>/dev/null) ||
		die "linux-headers-$KVER installed but ${KVER%-amd64}-common headers missing"

	phase "configuring the OpenZFS kernel modules for $KVER (probes the kernel API: minutes)"
	local src
	src=$(ls -d "$work"/x/usr/src/zfs-*/ | head -1) || die "no source in zfs-dkms"
	(cd "$src" && ./configure --with-config=kernel --with-linux="$common" --with-linux-obj="$hdr" \
		>"$work/configure.log" 2>&1) || die "zfs configure failed, see $work/configure.log"
	phase_done
	phase "building the OpenZFS kernel modules (minutes)"
	(cd "$src" && make -j"$(nproc)" -C module >"$work/make.log" 2>&1) || die "zfs module build failed, see $work/make.log"
	mkdir -p "$work/root/lib/modules/zfs"
	local m ko
	for m in $MODULES; do
		ko=$(find "$src/module" -name "$m.ko" | head -1)
		[[ -n $ko ]] || die "module $m.ko not built"
		# Debug info would make the initramfs several times larger.
		strip --strip-debug -o "$work/root/lib/modules/zfs/$m.ko" "$ko"
	done
	phase_done

	phase "assembling the base initramfs (busybox, zfs userland and libraries, modules)"
	local r=$work/root
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,tmp,root,etc}
	cp "$work/x/bin/busybox" "$r/bin/busybox"
	cp "$work/x/boot/vmlinuz-$KVER" "$work/vmlinuz"
	local libpath=$work/x/lib/x86_64-linux-gnu:$work/x/usr/lib/x86_64-linux-gnu
	# The loader that lists a binary's libraries must be the one it runs with:
	# the host's (bookworm) for 2.1, trixie's (downloaded) for 2.3.
	local ldso=$work/x/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
	list_libs() { # binary
		if [[ $SUITE == bookworm ]]; then
			LD_LIBRARY_PATH=$libpath ldd "$1"
		else
			"$ldso" --library-path "$libpath" --list "$1"
		fi
	}
	local bin line lib path
	for bin in zfs zpool zdb; do
		# bookworm has them in /sbin, trixie (merged /usr) in /usr/sbin.
		path=$work/x/sbin/$bin
		[[ -e $path ]] || path=$work/x/usr/sbin/$bin
		[[ -e $path ]] || die "$bin not in zfsutils-linux"
		cp "$path" "$r/sbin/$bin"
		# Every library ldd lists, found in the downloaded packages first.
		while read -r line; do
			case $line in
			*"not found"*) die "$bin: library missing: $line" ;;
			*"=> /"*) lib=$(awk '{print $3}' <<<"$line") ;;
			/*) lib=$(awk '{print $1}' <<<"$line") ;;
			*) continue ;;
			esac
			if [[ $SUITE != bookworm && $lib != "$work"/x/* && $lib != /lib64/ld-linux-x86-64.so.2 ]]; then
				die "$bin: $lib is the host's, not $SUITE's: add its package to ZFS_DEBS in run.sh"
			fi
			if [[ $lib == */ld-linux-x86-64.so.2 ]]; then
				[[ $SUITE == bookworm ]] || lib=$ldso
				cp -L "$lib" "$r/lib64/ld-linux-x86-64.so.2"
			else
				cp -L "$lib" "$r/lib/x86_64-linux-gnu/$(basename "$lib")"
			fi
		done < <(list_libs "$path")
	done
	# libgcc_s is dlopen()ed by glibc for pthread_cancel (zfs send -nv aborts without it).
	lib=$(find "$work/x" -name libgcc_s.so.1 | head -1)
	[[ -n $lib ]] || die "libgcc_s.so.1 not in libgcc-s1"
	cp -L "$lib" "$r/lib/x86_64-linux-gnu/libgcc_s.so.1"
	(cd "$REPO" && "$GO" run ./platformtest/vm/mkcpio -gzip -o "$work/base.cpio.gz" "$r") || die "mkcpio failed"
	phase_done

	# Only the results stay; sources, packages and build trees go.
	rm -rf "$work/x" "$work/debs" "$work/root"
	touch "$work/complete"
	rm -rf "$BASE"
	mv "$work" "$BASE"
	# Older bases of this OpenZFS line go; the other line's base stays.
	local old
	for old in "$CACHE"/base-*-zfs-"$ZFSLINE".*; do
		[[ $old == "$BASE" || ! -e $old ]] || { log "removing stale cache $old" && rm -rf "$old"; }
	done
	cd "$REPO"
}
base_ok() { [[ -f $BASE/complete && -f $BASE/vmlinuz && -f $BASE/base.cpio.gz ]]; }
if base_ok; then
	log "reusing cached kernel, modules and base initramfs: $BASE"
else
	lock_exclusive
	if base_ok; then
		log "another run built the base meanwhile: $BASE"
	else
		t_cold=$(now)
		build_base
		log "cold build took $(($(now) - t_cold)) s"
	fi
fi

# --- Per run: test binary, /init, arguments. --------------------------------
((exclusive == 0)) || flock -s 9 || die "cannot lock $CACHE/lock (shared)"
mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
mkdir -p "$RUN/root"
TEST_TIMEOUT=$((TIMEOUT > 120 ? TIMEOUT - 60 : TIMEOUT))
build_test_binary "$RUN/root/platformtest.test"
printf '%s\n' "$ARGS" >"$RUN/root/platformtest.args"
[[ -z $UPSTREAM ]] || cp "$UPSTREAM" "$RUN/root/zrepl-upstream"
cat >"$RUN/root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% tmp /tmp
# Loopback for the tests that talk tcp (interop with zrepl): a fresh kernel has it down.
ip link set lo up || ifconfig lo 127.0.0.1 up
finish() {
	echo "$MARKER=\$1"
	sync
	poweroff -f
	# Not reached unless poweroff failed: init exiting panics the kernel,
	# which with panic=-1 and -no-reboot also ends qemu.
	exit 1
}
for m in $MODULES; do
	insmod /lib/modules/zfs/\$m.ko || { echo "platformtest: insmod \$m failed"; finish 125; }
done
[ -e /dev/zfs ] || { echo "platformtest: /dev/zfs missing after loading the modules"; finish 125; }
echo "platformtest: zfs modules loaded (\$(zfs version | tr '\\n' ' ')), running the tests"
export ZREPL_PLATFORMTEST=vm HOME=/root TMPDIR=/tmp
[ -x /zrepl-upstream ] && export ZREPL_UPSTREAM=/zrepl-upstream
cd /tmp
eval "set -- \$(cat /platformtest.args)"
# The test binary's own deadline comes first (a later -test.timeout in the
# arguments wins): a hung test then dumps its goroutines before qemu is killed.
/platformtest.test -test.timeout=${TEST_TIMEOUT}s "\$@"
finish \$?
EOF
chmod 755 "$RUN/root/init"
phase "assembling the initramfs"
(cd "$REPO" && "$GO" run ./platformtest/vm/mkcpio -prepend "$BASE/base.cpio.gz" -o "$RUN/initrd" "$RUN/root") ||
	die "mkcpio failed"
phase_done

# KVM hangs on these machines; TCG is slower but works everywhere.
phase "booting the VM (qemu tcg, ${MEM} MiB, $CPUS cpus, timeout ${TIMEOUT} s); test output follows"
rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -m "$MEM" -smp "$CPUS" \
	-nodefaults -display none -serial stdio -no-reboot \
	-kernel "$BASE/vmlinuz" -initrd "$RUN/initrd" \
	-append "console=ttyS0 quiet panic=-1" </dev/null |
	tr -d '\r' | tee "$RUN/console.log" || rc=$?
phase_done
if ((rc == 124 || rc == 137)); then
	die "the VM did not finish within ${TIMEOUT} s and was killed (ZREPL_PLATFORMTEST_TIMEOUT)"
fi
status=$(sed -n "s/^$MARKER=\([0-9]*\)\$/\1/p" "$RUN/console.log" | tail -1)
if [[ -z $status ]]; then
	die "the VM exited (qemu status $rc) without printing $MARKER: see the console output above"
fi
log "exit status $status (zfs $ZVER, VM run, $(($(now) - t_total)) s in all)"
exit "$status"
}

main "$@"
