#!/usr/bin/env bash
# Run this project on an emulated Raspberry Pi 4 or 5 (arm64 Debian bookworm under QEMU user mode)
# and check that it works the same as on this x86-64 machine. Needs root on an x86-64 Debian host.
#
#   1. apt: qemu-user-static binfmt-support mmdebstrap arch-test (only when missing)
#   2. binfmt_misc mounted, the qemu-aarch64 handler registered (flag F), `arch-test arm64`
#   3. the reference: the demo clip through python -m realtime on this machine (x86)
#   4. an arm64 bookworm root file system (mmdebstrap), built once and reused from the cache
#   5. the aarch64 wheels of requirements.txt (requirements-mediapipe.txt with the [mediapipe] extra),
#      downloaded natively into a wheelhouse in the cache
#   6. the project copied into it (git ls-files + models), /proc, /sys, /dev mounted, and a
#      synthetic /proc/cpuinfo of the chosen core bound over /proc/cpuinfo
#   7. scripts/setup_pi.sh inside (apt step, fresh venv, pinned wheels, self-check; --with-mediapipe
#      when the [mediapipe] extra is on)
#   8. the demo clip with --detector-backend auto; the demo with --serve on loopback, one frame and one
#      event fetched inside; then the mediapipe backend: with the extra on the cortex-a76 it must match
#      the x86 run; without it (the lean runtime, and always on the cortex-a72, where setup_pi.sh
#      does not install it: no atomics) it must refuse with one error line naming the extra
#   9. checks: every frame written, valid JSONL, labels agree with the x86 run on >= 95 % of faces
#
# Every arm64 process runs with QEMU_CPU set to the chosen core, never QEMU's default `max`.
# It proves function, not speed: emulated timings say nothing about a real Pi.
#
# Usage: sudo scripts/pi_emulation.sh --cpu cortex-a72|cortex-a76 [options]
#   --cpu CORE          cortex-a72 (Raspberry Pi 4) or cortex-a76 (Raspberry Pi 5); required
#   --json PATH         write the JSON summary there (default: print it on stdout)
#   --cache DIR         rootfs, pip cache and outputs (default $FACE_GENDER_PI_CACHE or
#                       /var/cache/face-gender-pi)
#   --mirror URL        Debian mirror (default $FACE_GENDER_PI_MIRROR or http://deb.debian.org/debian)
#   --host-python PY    Python of the x86 reference run (default .venv/bin/python of the repo)
#   --min-agreement F   share of faces whose labels must agree with the x86 run (default 0.95)
#   --mediapipe yes|no  install the [mediapipe] extra (setup_pi.sh --with-mediapipe); default: yes on
#                       the cortex-a76, no on the cortex-a72 (the lean runtime)
#   --skip-setup-apt    run setup_pi.sh with --skip-apt (the rootfs has its packages except picamera2)
#   --rebuild-rootfs    build the root file system again even when the cached one is complete
#   --skip-unsupported  when this host cannot emulate arm64 (not root, tools not installable,
#                       binfmt_misc not mountable) print one warning line instead of an error
#   -h, --help          this help
# Exit status: 0 when every check holds; 1 when one fails (one `error:` line); 2 on bad use;
# 3 when this host cannot emulate arm64 at all (see --skip-unsupported).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_CLIP="assets/face-demographics-walking-and-pause.mp4"
SUITE=bookworm
HOST_TOOLS=(qemu-user-static binfmt-support mmdebstrap arch-test)
# The Pi's packages as Debian has them: setup_pi.sh's list (read from it below, minus the Raspberry
# Pi OS-only python3-picamera2) plus these.
BASE_PACKAGES=(python3 python3-venv python3-pip libegl1 libgles2 libgl1 libglib2.0-0 ca-certificates)
PROJECT_DIR=/opt/face-gender        # inside the rootfs
OUT_DIR=/opt/face-gender-out        # inside the rootfs
SETUP_TIMEOUT_S=2400                # seconds for setup_pi.sh, then for each demo run
RUN_TIMEOUT_S=900
# bash -c program for the chroot: cd into $1, then run the rest of the arguments.
# shellcheck disable=SC2016
CD_AND_RUN='cd "$1" && shift && exec "$@"'

cpu=""
json_out=""
cache="${FACE_GENDER_PI_CACHE:-/var/cache/face-gender-pi}"
mirror="${FACE_GENDER_PI_MIRROR:-http://deb.debian.org/debian}"
host_python=""
min_agreement=0.95
skip_setup_apt=0
with_mediapipe=""
rebuild=0
skip_unsupported=0

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '%s\n' "$*" >&2; }
step_title() { printf '\n== pi_emulation %s: %s\n' "$cpu" "$*" >&2; }
reported=0   # set once an error or warning line has been printed
fail() { echo "error: $*" >&2; reported=1; exit 1; }
bad_use() { echo "error: $*" >&2; reported=1; exit 2; }
unsupported() {
  reported=1
  if [ "$skip_unsupported" -eq 1 ]; then
    echo "warning: Raspberry Pi emulation skipped: $*" >&2
  else
    echo "error: this host cannot emulate arm64: $*" >&2
  fi
  exit 3
}

while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) [ $# -ge 2 ] || bad_use "--cpu needs cortex-a72 or cortex-a76"; cpu="$2"; shift ;;
    --cpu=*) cpu="${1#--cpu=}" ;;
    --json) [ $# -ge 2 ] || bad_use "--json needs a path"; json_out="$2"; shift ;;
    --json=*) json_out="${1#--json=}" ;;
    --cache) [ $# -ge 2 ] || bad_use "--cache needs a folder"; cache="$2"; shift ;;
    --cache=*) cache="${1#--cache=}" ;;
    --mirror) [ $# -ge 2 ] || bad_use "--mirror needs a URL"; mirror="$2"; shift ;;
    --mirror=*) mirror="${1#--mirror=}" ;;
    --host-python) [ $# -ge 2 ] || bad_use "--host-python needs a path"; host_python="$2"; shift ;;
    --host-python=*) host_python="${1#--host-python=}" ;;
    --min-agreement) [ $# -ge 2 ] || bad_use "--min-agreement needs a number"; min_agreement="$2"; shift ;;
    --min-agreement=*) min_agreement="${1#--min-agreement=}" ;;
    --mediapipe) [ $# -ge 2 ] || bad_use "--mediapipe needs yes or no"; with_mediapipe="$2"; shift ;;
    --mediapipe=*) with_mediapipe="${1#--mediapipe=}" ;;
    --skip-setup-apt) skip_setup_apt=1 ;;
    --rebuild-rootfs) rebuild=1 ;;
    --skip-unsupported) skip_unsupported=1 ;;
    -h|--help) usage; exit 0 ;;
    *) bad_use "unknown option $1 (see --help)" ;;
  esac
  shift
done

case "$cpu" in
  cortex-a72) board="Raspberry Pi 4 Model B" ;;
  cortex-a76) board="Raspberry Pi 5 Model B" ;;
  "") bad_use "--cpu is required: cortex-a72 (Pi 4) or cortex-a76 (Pi 5)" ;;
  *) bad_use "--cpu must be cortex-a72 or cortex-a76, not $cpu (QEMU's default max CPU breaks XNNPACK)" ;;
esac
case "${with_mediapipe:-default}" in
  yes|no) ;;
  default) with_mediapipe=no; if [ "$cpu" = cortex-a76 ]; then with_mediapipe=yes; fi ;;
  *) bad_use "--mediapipe must be yes or no, not $with_mediapipe" ;;
esac
# MediaPipe runs only where it is installed and the CPU has the atomics (setup_pi.sh skips it otherwise).
mp_expect=refusal
if [ "$with_mediapipe" = yes ] && [ "$cpu" = cortex-a76 ]; then mp_expect=run; fi
reqs_file=requirements.txt
if [ "$with_mediapipe" = yes ]; then reqs_file=requirements-mediapipe.txt; fi
[[ "$min_agreement" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || bad_use "--min-agreement must be between 0 and 1"
case "$cache" in /*) ;; *) cache="$PWD/$cache" ;; esac
if [ -n "$json_out" ]; then case "$json_out" in /*) ;; *) json_out="$PWD/$json_out" ;; esac; fi
host_python="${host_python:-$ROOT/.venv/bin/python}"
case "$host_python" in
  /*) ;;
  */*) host_python="$PWD/$host_python" ;;
  *) host_python="$(command -v "$host_python" || echo "$host_python")" ;;
esac
cd "$ROOT"
[ -f "$DEMO_CLIP" ] || fail "the demo clip $DEMO_CLIP is missing"
[ -f scripts/setup_pi.sh ] || fail "scripts/setup_pi.sh is missing"

# Every arm64 process started from here (mmdebstrap's maintainer scripts included) runs on this core.
export QEMU_CPU="$cpu"

rootfs="$cache/$SUITE-arm64"
pip_cache="$cache/pip"
wheels="$cache/wheels"
host_out="$cache/out/$cpu"

# --- timing, mounts, cleanup ------------------------------------------------------------------
declare -A step_s=()
step_names=()
step_t0=0
begin() { step_title "$1"; current_step="$2"; step_t0="$(date +%s.%N)"; }
end() {
  local t1
  t1="$(date +%s.%N)"
  step_s[$current_step]="$(awk -v a="$step_t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
  step_names+=("$current_step")
  say "   ($current_step: ${step_s[$current_step]} s)"
}
current_step=""
mounted=()   # mount points, in the order they were mounted

unmount_all() {
  local i target
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    target="${mounted[i]}"
    if mountpoint -q "$target" 2>/dev/null; then
      umount -R "$target" 2>/dev/null || umount -R -l "$target" || say "warning: could not unmount $target"
    fi
  done
  mounted=()
}
# Long commands run in the background while this shell waits, so that a signal is handled at
# once: the trap stops the command (timeout passes the signal on to everything it started).
child=""
run_waiting() {
  local rc=0
  "$@" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}
# The same with the output into the log $1 and, while it runs, onto stderr.
run_logged() {
  local log="$1" rc=0 follower
  shift
  "$@" >"$log" 2>&1 &
  child=$!
  tail -n +1 -f --pid="$child" "$log" | sed -u 's/^/   | /' >&2 &
  follower=$!
  wait "$child" || rc=$?
  child=""
  wait "$follower" 2>/dev/null || true
  return "$rc"
}
stop_child() {
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  child=""
}
signalled=""
on_signal() {
  signalled="$1"
  stop_child
  if [ "$1" = INT ]; then exit 130; fi
  exit 143
}
cleanup() {
  local rc=$?
  trap - INT TERM
  stop_child
  unmount_all
  if [ "$rc" -ne 0 ] && [ "$reported" -eq 0 ]; then
    if [ -n "$signalled" ]; then
      echo "error: stopped by SIG$signalled during step ${current_step:-start}; everything was unmounted" >&2
    else
      echo "error: step ${current_step:-start} failed: \`${failed_command:-?}\` (line ${failed_line:-?}, exit $rc)" >&2
    fi
  fi
  exit "$rc"
}
failed_command=""
failed_line=""
trap 'failed_command="$BASH_COMMAND"; failed_line="$LINENO"' ERR
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# Anything mounted at or below $1? (Never delete a folder that still has /dev or /proc bound in it.)
has_mounts_below() {
  findmnt -rn -o TARGET | awk -v p="$1" '$0 == p || index($0, p "/") == 1 { found = 1 } END { exit !found }'
}

mount_in_rootfs() {  # TARGET then mount(8) arguments (source last)
  local target="$1"
  shift
  [ -e "$target" ] || mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

# A clean environment for the chroot: nothing of the host's PIP_*/PYTHON* settings leaks in.
chroot_env=()
in_rootfs() {
  env -i "${chroot_env[@]}" chroot "$rootfs" "$@"
}

# The /proc/cpuinfo of the board: QEMU 7.2 shows arm64 programs the host's x86 file, on which
# XNNPACK's CPU detection crashes, and realtime.face_detector decides on MediaPipe from `Features`.
write_cpuinfo() {
  local features implementer=0x41 variant part revision bogomips=108.00 hardware revision_code i
  if [ "$cpu" = cortex-a72 ]; then
    features="fp asimd evtstrm crc32 cpuid"; variant=0x0; part=0xd08; revision=3; revision_code=c03115
  else
    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
    variant=0x4; part=0xd0b; revision=1; revision_code=d04170
  fi
  hardware=BCM2835
  for i in 0 1 2 3; do
    printf 'processor\t: %d\nBogoMIPS\t: %s\nFeatures\t: %s\nCPU implementer\t: %s\n' "$i" "$bogomips" "$features" "$implementer"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
  done
  printf 'Hardware\t: %s\nRevision\t: %s\nSerial\t\t: 10000000emulated\nModel\t\t: %s (QEMU %s)\n' \
    "$hardware" "$revision_code" "$board" "$cpu"
}

# --- 1. host tools ----------------------------------------------------------------------------
begin "1/9 host tools (${HOST_TOOLS[*]})" tools
[ "$(uname -m)" = x86_64 ] || say "warning: this host is $(uname -m), the script is written for x86-64"
[ "$(id -u)" -eq 0 ] || unsupported "it needs root (chroot, mount, binfmt_misc); run it with sudo"
command -v apt-get >/dev/null 2>&1 || unsupported "no apt-get: install ${HOST_TOOLS[*]} yourself"
missing=()
for pkg in "${HOST_TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "   all installed"
else
  say "   installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Without package lists (or with stale ones) the first try fails: update, then try again.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2 || unsupported "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
      || unsupported "apt-get could not install ${missing[*]}"
  fi
fi
for tool in qemu-aarch64-static mmdebstrap arch-test update-binfmts chroot findmnt; do
  command -v "$tool" >/dev/null 2>&1 || unsupported "$tool is not available after installing ${HOST_TOOLS[*]}"
done
qemu_version="$(qemu-aarch64-static --version | head -n 1)"
say "   $qemu_version"
end

# --- 2. binfmt_misc ---------------------------------------------------------------------------
begin "2/9 binfmt_misc and the qemu-aarch64 handler" binfmt
binfmt=/proc/sys/fs/binfmt_misc
if ! mountpoint -q "$binfmt"; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || unsupported "cannot mount binfmt_misc at $binfmt"
  say "   mounted $binfmt"
fi
handler="$binfmt/qemu-aarch64"
if [ ! -e "$handler" ]; then
  if update-binfmts --enable qemu-aarch64 >/dev/null 2>&1; then say "   enabled qemu-aarch64 (update-binfmts)"; fi
fi
if [ -e "$handler" ] && ! grep -q '^flags:.*F' "$handler"; then
  # Without F the kernel looks for the interpreter inside the chroot; register it again with F.
  say "   the qemu-aarch64 handler lacks the F (fix binary) flag: registering it again"
  echo -1 >"$handler" || unsupported "cannot change the binfmt_misc handler $handler"
fi
if [ ! -e "$handler" ]; then
  magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  interpreter="$(command -v qemu-aarch64-static)"
  printf ':qemu-aarch64:M::%s:%s:%s:F\n' "$magic" "$mask" "$interpreter" >"$binfmt/register" 2>/dev/null \
    || unsupported "cannot register the qemu-aarch64 handler in $binfmt"
  say "   registered qemu-aarch64 by hand ($interpreter, flag F)"
fi
if [ "$(head -n 1 "$handler")" != enabled ]; then
  echo 1 >"$handler" || unsupported "cannot enable $handler"
fi
say "   $(tr '\n' ' ' <"$handler" | sed 's/ magic.*//')"
arch_test="$(arch-test arm64 2>&1 || true)"
say "   arch-test: $arch_test"
[ "$arch_test" = "arm64: ok" ] || fail "arch-test arm64 says '$arch_test': arm64 binaries do not run here"
end

# --- 3. the x86 reference ---------------------------------------------------------------------
begin "3/9 x86 reference run ($host_python)" reference
[ -x "$host_python" ] || fail "no Python for the x86 reference run at $host_python (make install, or --host-python)"
mkdir -p "$cache" "$pip_cache"
exec 9>"$cache/.lock"
flock -n 9 || fail "another pi_emulation.sh run is using $cache"
rm -rf "$host_out"
mkdir -p "$host_out"
reference() {  # $1 = backend
  env -u QEMU_CPU "$host_python" -m realtime --source "$DEMO_CLIP" --output "$host_out/x86_$1.mp4" \
    --jsonl "$host_out/x86_$1.jsonl" --no-display --no-progress --detector-backend "$1" \
    >"$host_out/x86_$1.log" 2>&1 || { cat "$host_out/x86_$1.log" >&2; fail "the x86 reference run ($1) failed"; }
  sed 's/^/   /' "$host_out/x86_$1.log" >&2
}
reference auto
if [ "$mp_expect" = run ]; then reference mediapipe; fi
end

# --- 4. the root file system ------------------------------------------------------------------
begin "4/9 arm64 $SUITE root file system ($rootfs)" rootfs
mapfile -t setup_apt < <(sed -n 's/^APT_PACKAGES=(\(.*\))$/\1/p' scripts/setup_pi.sh | tr ' ' '\n' | sed '/^$/d')
[ ${#setup_apt[@]} -gt 0 ] || fail "could not read APT_PACKAGES from scripts/setup_pi.sh"
mapfile -t rootfs_packages < <(printf '%s\n' "${BASE_PACKAGES[@]}" "${setup_apt[@]}" | grep -vx python3-picamera2 | sort -u)
security="${mirror%/debian}/debian-security"
sources=("deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" "deb $security $SUITE-security main")
stamp="$SUITE arm64 ${rootfs_packages[*]} | ${sources[*]}"
marker="$rootfs/.face-gender-pi-rootfs"
has_mounts_below "$rootfs" && fail "something is still mounted below $rootfs (an interrupted run?): unmount it first"
if [ "$rebuild" -eq 0 ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$stamp" ] && [ -x "$rootfs/usr/bin/python3" ]; then
  say "   reusing the complete rootfs from $(date -r "$marker" '+%F %T')"
  rootfs_built=false
else
  say "   building with mmdebstrap: ${rootfs_packages[*]}"
  has_mounts_below "$rootfs.partial" && fail "something is still mounted below $rootfs.partial: unmount it first"
  rm -rf --one-file-system "$rootfs" "$rootfs.partial"
  include="$(IFS=,; echo "${rootfs_packages[*]}")"
  run_waiting mmdebstrap --arch=arm64 --variant=apt --include="$include" \
    "$SUITE" "$rootfs.partial" "${sources[@]}" >&2 || fail "mmdebstrap could not build the arm64 rootfs"
  printf '%s\n' "$stamp" >"$rootfs.partial/.face-gender-pi-rootfs"
  mv "$rootfs.partial" "$rootfs"
  rootfs_built=true
fi
debian_version="$(cat "$rootfs/etc/debian_version")"
end

# --- 5. wheels --------------------------------------------------------------------------------
# pip's HTTP cache keeps only what the index lets it keep (a proxy that sends no cache headers
# defeats it), and pip prefers the index to --find-links for the same file. So the aarch64 wheels
# of requirements.txt and the Pi extras are downloaded here, natively, into a wheelhouse in the
# cache, and pip in the chroot installs from it alone (PIP_NO_INDEX); the other core reuses it.
# Online resolution for aarch64 is what scripts/check_aarch64.sh checks.
begin "5/9 aarch64 wheels for $reqs_file ($wheels)" wheels
rootfs_pyver="$(basename "$(readlink -f "$rootfs/usr/bin/python3")")"
rootfs_pyver="${rootfs_pyver#python}"
mapfile -t pip_extras < <(bash scripts/setup_pi.sh --print-pip-extras)
platform_args=(--platform manylinux2014_aarch64)
for glibc in 2_17 2_24 2_26 2_27 2_28 2_31 2_34 2_35 2_36; do platform_args+=(--platform "manylinux_${glibc}_aarch64"); done
mkdir -p "$wheels"
host_ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
cert_args=()
if [ -f "$host_ca" ]; then cert_args=(--cert "$host_ca"); fi
pip_source="index"
if env -u QEMU_CPU "$host_python" -m pip --isolated download --disable-pip-version-check --only-binary=:all: \
    "${platform_args[@]}" --python-version "$rootfs_pyver" --implementation cp --abi "cp${rootfs_pyver/./}" \
    "${cert_args[@]}" -d "$wheels" -r "$reqs_file" "${pip_extras[@]}" pip >"$host_out/wheels.log" 2>&1; then
  # Keep only this download set (older pins would otherwise pile up).
  mapfile -t wanted < <(sed -n -E 's/^ *(Saved|File was already downloaded) (.*)$/\2/p' "$host_out/wheels.log" | xargs -r -n 1 basename)
  for whl in "$wheels"/*; do
    printf '%s\n' "${wanted[@]}" | grep -qxF "$(basename "$whl")" || rm -f "$whl"
  done
  pip_source="wheelhouse of ${#wanted[@]} wheels (no index)"
  say "   ${#wanted[@]} wheels for CPython $rootfs_pyver aarch64 ($(du -sh "$wheels" | cut -f1))"
else
  sed 's/^/   /' "$host_out/wheels.log" >&2
  say "   warning: could not download the wheels here; pip in the chroot will use the index"
fi
end

# --- 6. project, mounts -----------------------------------------------------------------------
begin "6/9 project copy and mounts" copy
has_mounts_below "$rootfs" && fail "something is still mounted below $rootfs"
rm -rf --one-file-system "${rootfs:?}$PROJECT_DIR" "${rootfs:?}$OUT_DIR"
mkdir -p "$rootfs$PROJECT_DIR" "$rootfs$OUT_DIR"
# The working tree as git sees it (tracked and new files, not ignored ones) plus the models.
list_project_files() {
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard
  else
    find . -path ./.git -prune -o -type f -printf '%P\0'
  fi
  find models -type f -print0
}
while IFS= read -r -d '' f; do
  case "$f" in .venv/*|data_cache/*|runs/*|out/*|.git/*) continue ;; esac
  [ -f "$f" ] || continue
  printf '%s\0' "$f"
done < <(list_project_files | sort -zu) >"$host_out/files.list"
tar --null -T "$host_out/files.list" -cf - | tar -xf - -C "$rootfs$PROJECT_DIR"
say "   copied $(tr -cd '\0' <"$host_out/files.list" | wc -c) files to $PROJECT_DIR ($(du -sh "$rootfs$PROJECT_DIR" | cut -f1))"

write_cpuinfo >"$host_out/cpuinfo"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
chroot_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
            QEMU_CPU="$cpu" DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180)
# pip in the chroot trusts the CA bundle this host trusts (a TLS-inspecting proxy's CA included).
if [ -f "$host_ca" ]; then
  cp "$host_ca" "$rootfs/etc/ssl/certs/host-ca-bundle.crt"
  chroot_env+=(PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
fi
mount_in_rootfs "$rootfs/proc" -t proc proc
mount_in_rootfs "$rootfs/proc/cpuinfo" --bind "$host_out/cpuinfo"
mount_in_rootfs "$rootfs/sys" -t sysfs sysfs
mount_in_rootfs "$rootfs/dev" --rbind /dev
mount --make-rslave "$rootfs/dev"
mount_in_rootfs "$rootfs/root/.cache/pip" --bind "$pip_cache"
if [ "$pip_source" != index ]; then
  mount_in_rootfs "$rootfs/root/wheels" --bind "$wheels"
  chroot_env+=(PIP_NO_INDEX=1 PIP_FIND_LINKS=/root/wheels)
fi
say "   mounted: ${mounted[*]#"$rootfs"}"
in_rootfs grep -m 1 Features /proc/cpuinfo | sed 's/^/   inside: /' >&2
end

# --- 7. setup_pi.sh ---------------------------------------------------------------------------
setup_args=()
if [ "$skip_setup_apt" -eq 1 ]; then setup_args+=(--skip-apt); fi
if [ "$with_mediapipe" = yes ]; then setup_args+=(--with-mediapipe); fi
begin "7/9 scripts/setup_pi.sh ${setup_args[*]} (QEMU_CPU=$cpu)" setup
setup_rc=0
run_logged "$host_out/setup.log" timeout --kill-after=30 "$SETUP_TIMEOUT_S" env -i "${chroot_env[@]}" \
  chroot "$rootfs" bash -c "$CD_AND_RUN" setup "$PROJECT_DIR" bash scripts/setup_pi.sh "${setup_args[@]}" \
  || setup_rc=$?
[ "$setup_rc" -eq 0 ] || fail "scripts/setup_pi.sh failed in the emulated $cpu (exit $setup_rc; log: $host_out/setup.log)"
grep -q '^OK: set up in' "$host_out/setup.log" || fail "scripts/setup_pi.sh did not print OK (log: $host_out/setup.log)"
end

# --- 8. the demo --------------------------------------------------------------------------------
vpy="$PROJECT_DIR/.venv/bin/python"
demo() {  # $1 = backend, then extra arguments; output and log named after the backend
  local backend="$1"
  shift
  run_waiting timeout --kill-after=30 "$RUN_TIMEOUT_S" env -i "${chroot_env[@]}" chroot "$rootfs" \
    bash -c "$CD_AND_RUN" demo "$PROJECT_DIR" "$vpy" -m realtime --source "$DEMO_CLIP" \
    --output "$OUT_DIR/demo_$backend.mp4" --jsonl "$OUT_DIR/demo_$backend.jsonl" --no-display --no-progress \
    --detector-backend "$backend" "$@" >"$host_out/demo_$backend.log" 2>&1
}
begin "8/9 demo clip, --detector-backend auto (QEMU_CPU=$cpu)" demo
demo_rc=0
demo auto || demo_rc=$?
sed 's/^/   | /' "$host_out/demo_auto.log" >&2
[ "$demo_rc" -eq 0 ] || fail "python -m realtime failed in the emulated $cpu (exit $demo_rc; log: $host_out/demo_auto.log)"
end

# The live view a headless Pi serves (--serve on loopback): one frame and one event, fetched inside.
begin "8/9 demo clip with --serve 127.0.0.1 (QEMU_CPU=$cpu)" serve
serve_rc=0
# (Not through run_waiting: a job started with & would read /dev/null instead of the script below.)
timeout --kill-after=30 "$RUN_TIMEOUT_S" env -i "${chroot_env[@]}" chroot "$rootfs" \
  bash -c "$CD_AND_RUN" serve "$PROJECT_DIR" "$vpy" - "$DEMO_CLIP" >"$host_out/serve.json" 2>"$host_out/serve.log" <<'PY' \
  || serve_rc=$?
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
proc = subprocess.Popen([sys.executable, "-m", "realtime", "--source", sys.argv[1], "--loop", "--no-display",
                         "--no-progress", "--serve", f"127.0.0.1:{port}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
base, result, started = f"http://127.0.0.1:{port}", {"ok": False}, time.monotonic()
try:
    while time.monotonic() - started < 600:
        if proc.poll() is not None:
            result["error"] = "the run ended early"
            break
        try:
            with urllib.request.urlopen(base + "/frame.jpg", timeout=60) as resp:
                jpeg = resp.read()
        except OSError:
            time.sleep(1)
            continue
        event = {}
        with urllib.request.urlopen(base + "/events", timeout=300) as resp:
            for line in resp:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    break
        result.update(seconds_to_first_frame=round(time.monotonic() - started, 1), frame_bytes=len(jpeg),
                      frame_is_jpeg=jpeg[:2] == b"\xff\xd8", event_keys=sorted(event),
                      event_faces=len(event.get("faces", [])))
        result["ok"] = result["frame_is_jpeg"] and {"frame", "faces", "live"} <= set(event)
        break
finally:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    result["exit_status_after_ctrl_c"] = proc.returncode
    sys.stderr.write(proc.stderr.read()[-2000:])
print(json.dumps(result))
PY
sed 's/^/   | /' "$host_out/serve.log" >&2
sed 's/^/   serve: /' "$host_out/serve.json" >&2
end

if [ "$mp_expect" = refusal ]; then
  begin "8/9 --detector-backend mediapipe must refuse (not installed: --mediapipe $with_mediapipe)" mediapipe
  mp_rc=0
  demo mediapipe --max-frames 1 || mp_rc=$?
else
  begin "8/9 demo clip, --detector-backend mediapipe (QEMU_CPU=$cpu)" mediapipe
  mp_rc=0
  demo mediapipe || mp_rc=$?
fi
sed 's/^/   | /' "$host_out/demo_mediapipe.log" >&2
end

in_rootfs "$vpy" - >"$host_out/versions.json" 2>"$host_out/versions.log" <<'PY' || fail "could not read the versions in the rootfs"
import importlib.metadata as md
import json
import platform
import struct

aux = {}
with open("/proc/self/auxv", "rb") as fh:   # QEMU shows the guest's auxiliary vector
    data = fh.read()
for i in range(0, len(data) - 15, 16):
    key, value = struct.unpack("<QQ", data[i:i + 16])
    aux[key] = value
hwcap, hwcap2 = aux.get(16, 0), aux.get(26, 0)
packages = {}
for name in ("mediapipe", "ai-edge-litert", "opencv-contrib-python", "numpy", "matplotlib"):
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        packages[name] = None
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "packages": packages,
                  "hwcap_atomics": bool(hwcap >> 8 & 1), "hwcap_asimddp": bool(hwcap >> 20 & 1),
                  "hwcap2_sme": bool(hwcap2 >> 23 & 1)}))
PY
cp "$rootfs$OUT_DIR"/demo_* "$host_out/" 2>/dev/null || true
unmount_all

# --- 9. checks and the summary ----------------------------------------------------------------
begin "9/9 checks against the x86 run" check
summary="$host_out/summary.json"
check_rc=0
"$host_python" - "$summary" "$min_agreement" "$DEMO_CLIP" "$host_out" "$cpu" "$mp_rc" "$mp_expect" \
  "$with_mediapipe" <<'PY' || check_rc=$?
import json
import re
import sys
from pathlib import Path

import cv2

summary_path, min_agreement, clip, out, cpu, mp_rc, mp_expect, with_mediapipe = sys.argv[1:9]
min_agreement, out, mp_rc = float(min_agreement), Path(out), int(mp_rc)
P_TOLERANCE = 0.05
errors = []


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return 0
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def read_jsonl(path, name):
    frames = []
    if not path.is_file():
        errors.append(f"{name}: {path.name} is missing")
        return frames
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except ValueError as exc:
            errors.append(f"{name}: line {i + 1} of {path.name} is not JSON ({exc})")
            return frames
        faces = record.get("faces") if isinstance(record, dict) else None
        if not isinstance(faces, list) or any(not isinstance(f, dict) or "label" not in f or "box" not in f
                                              for f in faces):
            errors.append(f"{name}: line {i + 1} of {path.name} has no 'faces' list of labelled boxes")
            return frames
        if record.get("frame") != i:
            errors.append(f"{name}: line {i + 1} of {path.name} is frame {record.get('frame')}, expected {i}")
            return frames
        frames.append(faces)
    return frames


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - ix * iy
    return ix * iy / union if union > 0 else 0.0


def compare(ref, emu):
    """Faces matched per frame (same track_id and IoU >= 0.5 first, then the best IoU >= 0.5);
    a face without a partner on the other side counts as a disagreement. A label that differs
    while both p_female are within P_TOLERANCE (one side just across a threshold of the label)
    is counted apart as borderline."""
    pairs = agree = unmatched = borderline = 0
    ious = []
    for ref_faces, emu_faces in zip(ref, emu):
        left, right = list(ref_faces), list(emu_faces)
        matched = []
        for a in list(left):
            for b in right:
                if a.get("track_id") == b.get("track_id") and iou(a["box"], b["box"]) >= 0.5:
                    matched.append((a, b))
                    left.remove(a)
                    right.remove(b)
                    break
        for a, b in sorted(((a, b) for a in left for b in right), key=lambda p: -iou(p[0]["box"], p[1]["box"])):
            if a in left and b in right and iou(a["box"], b["box"]) >= 0.5:
                matched.append((a, b))
                left.remove(a)
                right.remove(b)
        pairs += len(matched)
        agree += sum(a["label"] == b["label"] for a, b in matched)
        borderline += sum(a["label"] != b["label"] and abs(a.get("p_female", 9) - b.get("p_female", -9)) <= P_TOLERANCE
                          for a, b in matched)
        unmatched += len(left) + len(right)
        ious += [iou(a["box"], b["box"]) for a, b in matched]
    total = pairs + unmatched
    return {"faces_compared": total, "matched": pairs, "unmatched": unmatched, "same_label": agree,
            "agreement": round(agree / total, 4) if total else 0.0,
            "borderline_label": borderline,
            "agreement_with_borderline": round((agree + borderline) / total, 4) if total else 0.0,
            "mean_iou": round(sum(ious) / len(ious), 4) if ious else 0.0}


def run_result(backend, reference, borderline_ok=False):
    """The checks of one emulated run against the x86 run of the same backend. LiteRT runs the
    same int8/float kernels on both: its labels must agree strictly. MediaPipe's float detector
    puts boxes a pixel apart on Arm and x86, and a face whose probability sits at a threshold can
    change label (borderline_ok: such faces count as agreeing)."""
    log = (out / f"demo_{backend}.log").read_text(errors="replace") if (out / f"demo_{backend}.log").is_file() else ""
    video, jsonl = out / f"demo_{backend}.mp4", out / f"demo_{backend}.jsonl"
    frames = read_jsonl(jsonl, backend)
    written = count_frames(video)
    ref = read_jsonl(out / f"x86_{reference}.jsonl", f"x86 {reference}")
    chosen = re.search(r"^info: detector \S+ on (\w+)", log, re.M)
    result = {"frames_written": written, "jsonl_lines": len(frames), "faces": sum(map(len, frames)),
              "backend": chosen.group(1) if chosen else None,
              "x86_reference": {"backend": reference, "faces": sum(map(len, ref))},
              **compare(ref, frames)}
    why = re.search(r"face detector on LiteRT \((.*)\)", log)
    if why:
        result["backend_reason"] = why.group(1)
    speed = re.search(r"(\d+) frames, (\d+) faces in ([\d.]+) s \(([\d.]+) FPS\)", log)
    if speed:
        result["emulated_fps"] = float(speed.group(4))
    if written != input_frames:
        errors.append(f"{backend}: the output video has {written} frames, the input {input_frames}")
    if len(frames) != input_frames:
        errors.append(f"{backend}: the JSONL has {len(frames)} frames, the input {input_frames}")
    if len(ref) != input_frames:
        errors.append(f"x86 {reference}: the reference JSONL has {len(ref)} frames, the input {input_frames}")
    if not result["faces"]:
        errors.append(f"{backend}: no faces found in the demo clip")
    share = result["agreement_with_borderline" if borderline_ok else "agreement"]
    if share < min_agreement:
        errors.append(f"{backend}: labels agree with the x86 run on {share:.1%} of faces "
                      f"(< {min_agreement:.0%}{', borderline faces included' if borderline_ok else ''})")
    if result["unmatched"] > (1 - min_agreement) * max(result["faces_compared"], 1):
        errors.append(f"{backend}: {result['unmatched']} faces have no partner in the x86 run")
    return result


input_frames = count_frames(clip)
if not input_frames:
    errors.append(f"cannot read {clip}")
versions = json.loads((out / "versions.json").read_text())
mp_installed = bool(versions.get("packages", {}).get("mediapipe"))
auto = run_result("auto", "auto")
if auto["backend"] != "litert":
    errors.append(f"auto: expected the LiteRT backend, the log says {auto['backend']}")
# Why auto took LiteRT where MediaPipe cannot start: it is not installed, or (installed) no atomics.
reason = "not installed" if not mp_installed else "atomics" if cpu == "cortex-a72" else None
if reason and reason not in auto.get("backend_reason", ""):
    errors.append(f"auto: the log does not say that LiteRT was chosen because of {reason!r} "
                  f"(it says {auto.get('backend_reason')!r})")
if mp_installed != (mp_expect == "run"):
    errors.append(f"mediapipe is {'' if mp_installed else 'not '}installed in the rootfs (--mediapipe "
                  f"{with_mediapipe} on the {cpu})")
mp_log = (out / "demo_mediapipe.log").read_text(errors="replace") if (out / "demo_mediapipe.log").is_file() else ""
if mp_expect == "refusal":
    error_lines = [line for line in mp_log.splitlines() if line.startswith("error:")]
    needle = "atomics" if mp_installed else "face-gender-realtime[mediapipe]"
    mediapipe = {"expected": "refusal", "reason": "atomics" if mp_installed else "not installed",
                 "exit_status": mp_rc, "error_lines": error_lines}
    if mp_rc != 2 or len(error_lines) != 1 or needle not in error_lines[0] or "Traceback" in mp_log:
        errors.append(f"--detector-backend mediapipe on the {cpu}: expected exit status 2 and one "
                      f"'error:' line naming {needle}, got exit status {mp_rc} and {mp_log.strip()[-300:]!r}")
else:
    mediapipe = {"expected": "run", "exit_status": mp_rc}
    if mp_rc != 0:
        errors.append(f"--detector-backend mediapipe failed on the {cpu} (exit status {mp_rc})")
    else:
        mediapipe.update(run_result("mediapipe", "mediapipe", borderline_ok=True))
        if mediapipe["backend"] != "mediapipe":
            errors.append(f"mediapipe: the log says the backend was {mediapipe['backend']}")
try:
    serve = json.loads((out / "serve.json").read_text())
except (OSError, ValueError):
    serve = {"ok": False, "error": "no result"}
if not serve.get("ok") or serve.get("exit_status_after_ctrl_c") != 130:
    errors.append(f"--serve: expected a JPEG frame, a JSON event and exit status 130 after Ctrl-C, got {serve}")
expect_atomics = cpu != "cortex-a72"
if versions.get("hwcap_atomics") != expect_atomics or versions.get("hwcap2_sme"):
    errors.append(f"the emulated CPU is not a {cpu} (HWCAP atomics={versions.get('hwcap_atomics')}, "
                  f"SME={versions.get('hwcap2_sme')}): is QEMU_CPU ignored?")
summary = {"cpu": cpu, "mediapipe_extra": with_mediapipe == "yes", "input_frames": input_frames, "auto": auto,
           "mediapipe_backend": mediapipe,
           "serve": serve, "arm64": versions, "ok": not errors, "errors": errors}
Path(summary_path).write_text(json.dumps(summary, indent=2) + "\n")
for e in errors:
    print(f"   check failed: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
[ -f "$summary" ] || fail "the checks did not run (exit $check_rc)"
end

# Add what bash knows (steps, tools, versions) and write or print the summary.
host_commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then host_commit="$host_commit+dirty"; fi
steps=()
for name in "${step_names[@]}"; do steps+=("$name=${step_s[$name]}"); done
final="$("$host_python" - "$summary" "$board" "$SUITE" "$debian_version" "$rootfs_built" "$rootfs" \
  "${setup_args[*]}" "$pip_source" "$qemu_version" "$(uname -r)" "$(uname -m)" "$host_commit" "$SECONDS" "${steps[@]}" <<'PY'
import json
import sys

(path, board, suite, debian_version, built, rootfs, setup_args, pip_source, qemu, kernel, machine, commit,
 total) = sys.argv[1:14]
s = json.load(open(path))
seconds = {name: float(value) for name, value in (arg.split("=", 1) for arg in sys.argv[14:])}
s.update({
    "board": board,
    "qemu_cpu": s["cpu"],
    "seconds": {**seconds, "total": float(total)},
    "rootfs": {"suite": suite, "debian_version": debian_version, "built_this_run": built == "true",
               "path": rootfs},
    "setup_pi_args": setup_args,
    "pip_source": pip_source,
    "host": {"qemu": qemu, "kernel": kernel, "machine": machine, "commit": commit},
})
order = ["cpu", "board", "qemu_cpu", "mediapipe_extra", "ok", "errors", "seconds", "input_frames", "auto",
         "mediapipe_backend",
         "serve", "arm64", "rootfs", "setup_pi_args", "pip_source", "host"]
print(json.dumps({k: s[k] for k in order if k in s}, indent=2))
PY
)"
printf '%s\n' "$final" >"$summary"
if [ -n "$json_out" ]; then
  mkdir -p "$(dirname "$json_out")"
  printf '%s\n' "$final" >"$json_out"
  say "   summary: $json_out"
else
  printf '%s\n' "$final"
fi
if [ "$check_rc" -ne 0 ]; then
  fail "the emulated $cpu run differs from the x86 run: $("$host_python" -c 'import json,sys; print("; ".join(json.load(open(sys.argv[1]))["errors"]))' "$summary")"
fi
say "OK: the emulated $board ($cpu) runs setup_pi.sh and the demo clip like x86 (outputs: $host_out)"
