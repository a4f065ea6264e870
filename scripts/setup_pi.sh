#!/usr/bin/env bash
# Set up this project on a Raspberry Pi 4 or 5 running Raspberry Pi OS (bookworm, 64-bit).
# Safe to run again: every step checks what is already there.
#
#   1. apt packages: python3-venv, python3-picamera2 (the Pi camera), and the GL/EGL/X libraries
#      that the OpenCV and MediaPipe wheels load
#   2. a virtual environment made with --system-site-packages, so apt's picamera2 is importable
#   3. the pinned runtime requirements (requirements.txt, binary wheels only) plus the Pi extras;
#      with --with-mediapipe also the [mediapipe] extra (requirements-mediapipe.txt), on a Pi 5 only
#   4. a self-check: the pipeline on the demo clip, without a window; prints OK or what failed
#
# Usage: scripts/setup_pi.sh [options]
#   --dry-run          print the steps and commands, change nothing
#   --force            continue on a machine that is not 64-bit Arm Linux
#   --venv DIR         where to make the venv (default: .venv in the repository)
#   --skip-apt         do not install system packages (no sudo needed)
#   --skip-check       do not run the self-check
#   --with-mediapipe   also install MediaPipe (--detector-backend mediapipe; not needed by default).
#                      Skipped with a warning on a CPU without ARMv8.1 atomics (Pi 4): it cannot run there
#   --print-pip-extras print the Pi-only pip requirements and exit (used by check_aarch64.sh)
#   -h, --help         this help
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_CLIP="assets/face-demographics-walking-and-pause.mp4"
MODEL="models/gender_vgg16_int8.tflite"
APT_PACKAGES=(python3-venv python3-pip python3-picamera2 libgl1 libegl1 libgles2 libglib2.0-0 libx11-6 libxcb1)
# Pi-only pip packages, pinned. apt's python3-simplejpeg (imported by picamera2) is built for
# bookworm's numpy 1.24 and fails to import next to the numpy 2 of requirements.txt; the PyPI wheel
# is built for numpy 2 and shadows it inside the venv (raspberrypi/picamera2 issues #1088, #1211).
PIP_EXTRAS=(simplejpeg==1.8.2)

dry_run=0
force=0
skip_apt=0
skip_check=0
venv="$ROOT/.venv"

with_mediapipe=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }
step() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
# Run a command, or only show it with --dry-run.
run() {
  if [ "$dry_run" -eq 1 ]; then
    printf '   $'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --force) force=1 ;;
    --skip-apt) skip_apt=1 ;;
    --skip-check) skip_check=1 ;;
    --with-mediapipe) with_mediapipe=1 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv="$2"; shift ;;
    --venv=*) venv="${1#--venv=}" ;;
    --print-pip-extras) printf '%s\n' "${PIP_EXTRAS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
cd "$ROOT"

# --- 0. the machine -------------------------------------------------------------------------
step "0/4 checking the machine"
os="$(uname -s)"
arch="$(uname -m)"
model="$(tr -d '\0' 2>/dev/null </proc/device-tree/model || true)"
codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"' || true)"
info "system: $os $arch${model:+, $model}${codename:+, $codename}"
if [ "$os" != "Linux" ] || [ "$arch" != "aarch64" ]; then
  if [ "$force" -eq 1 ] || [ "$dry_run" -eq 1 ]; then
    reason="--force"
    if [ "$force" -eq 0 ]; then reason="--dry-run"; fi
    warn "this is $os/$arch, not 64-bit Arm Linux (aarch64); continuing because of $reason"
  else
    echo "error: this script is for 64-bit Raspberry Pi OS (Linux aarch64), but this is $os/$arch." >&2
    echo "       32-bit Raspberry Pi OS (armv7l) is not supported: LiteRT ships no wheels for it." >&2
    echo "       Run with --force to try anyway, or --dry-run to see the steps." >&2
    exit 2
  fi
fi
if [ -n "$codename" ] && [ "$codename" != "bookworm" ]; then
  warn "tested for Raspberry Pi OS bookworm, this is $codename; package names may differ"
fi
[ -f requirements.txt ] || die "requirements.txt not found in $ROOT"
[ "$with_mediapipe" -eq 0 ] || [ -f requirements-mediapipe.txt ] || die "requirements-mediapipe.txt not found in $ROOT"

# --- 1. apt ---------------------------------------------------------------------------------
step "1/4 system packages"
if [ "$skip_apt" -eq 1 ]; then
  info "skipped (--skip-apt)"
elif ! command -v apt-get >/dev/null 2>&1; then
  warn "no apt-get on this system; install the equivalents of: ${APT_PACKAGES[*]}"
else
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    info "all installed: ${APT_PACKAGES[*]}"
  else
    info "installing: ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    run "${sudo_cmd[@]}" apt-get update
    # --no-install-recommends: picamera2's recommends pull in the Qt/OpenGL preview stack.
    if ! run "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
      if [[ " ${missing[*]} " == *" python3-picamera2 "* ]]; then
        warn "apt could not install everything; retrying without python3-picamera2 (it comes from the" \
             "Raspberry Pi OS archive; without it --source picam is unavailable, files and USB cameras work)"
        rest=()
        for pkg in "${missing[@]}"; do [ "$pkg" = python3-picamera2 ] || rest+=("$pkg"); done
        if [ ${#rest[@]} -gt 0 ]; then run "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${rest[@]}"; fi
      else
        die "apt-get install failed"
      fi
    fi
  fi
fi

# --- 2. venv --------------------------------------------------------------------------------
step "2/4 virtual environment $venv"
python_bin="${PYTHON:-python3}"
command -v "$python_bin" >/dev/null 2>&1 || die "$python_bin not found (apt install python3)"
pyver="$("$python_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$pyver" in
  3.11|3.12) info "Python $pyver" ;;
  *) warn "Python $pyver: requirements.txt is checked for 3.11 and 3.12 (scripts/check_aarch64.sh)" ;;
esac
cfg="$venv/pyvenv.cfg"
if [ -f "$cfg" ] && grep -qi '^include-system-site-packages *= *true' "$cfg"; then
  info "exists, with system site packages"
elif [ -f "$cfg" ]; then
  info "exists without system site packages: turning them on (picamera2 lives there)"
  run "$python_bin" -m venv --system-site-packages --upgrade "$venv"
else
  run "$python_bin" -m venv --system-site-packages "$venv"
fi
vpy="$venv/bin/python"

# --- 3. pip ---------------------------------------------------------------------------------
reqs=requirements.txt
if [ "$with_mediapipe" -eq 1 ]; then
  # MediaPipe's aarch64 wheel is built for ARMv8.1 atomics: on a CPU without them (Pi 4) it dies
  # with SIGILL, so it is not installed there (the LiteRT detector is the default everywhere).
  features="$(sed -n 's/^Features[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1)"
  if [ "$arch" = aarch64 ] && [ -n "$features" ] && [[ " $features " != *" atomics "* ]]; then
    warn "--with-mediapipe: this CPU lacks the ARMv8.1 atomics MediaPipe's wheel needs (a Pi 4?): not installing it"
  else
    reqs=requirements-mediapipe.txt
  fi
fi
step "3/4 Python packages ($reqs, pinned; binary wheels only)"
run "$vpy" -m pip install --disable-pip-version-check --upgrade pip
# --only-binary: a missing aarch64 wheel fails here in seconds instead of compiling for an hour.
run "$vpy" -m pip install --disable-pip-version-check --only-binary=:all: -r "$reqs" "${PIP_EXTRAS[@]}"
if [ "$dry_run" -eq 0 ]; then
  "$vpy" -m pip check || warn "pip check reports conflicts (see above)"
fi

# --- 4. self-check --------------------------------------------------------------------------
step "4/4 self-check"
if [ "$skip_check" -eq 1 ]; then
  info "skipped (--skip-check)"
  exit 0
fi
picam_check=("$vpy" -c "from picamera2 import Picamera2")
if [ "$dry_run" -eq 1 ]; then
  run "${picam_check[@]}"
else
  if out="$("${picam_check[@]}" 2>&1)"; then
    info "picamera2 imports in the venv: --source picam is available"
  else
    warn "picamera2 does not import in the venv, so --source picam is unavailable ($(tail -n 1 <<<"$out"))"
  fi
fi
[ -f "$MODEL" ] || [ "$dry_run" -eq 1 ] || die "the gender model $MODEL is missing (copy it from the release or train and export it)"
[ -f "$DEMO_CLIP" ] || [ "$dry_run" -eq 1 ] || die "the demo clip $DEMO_CLIP is missing"
out_dir="$(mktemp -d "${TMPDIR:-/tmp}/face-gender-selfcheck.XXXXXX")"
trap 'rm -rf "$out_dir"' EXIT
if ! run "$vpy" -m realtime --source "$DEMO_CLIP" --output "$out_dir/demo.mp4" --jsonl "$out_dir/demo.jsonl" \
    --no-display --no-progress; then
  die "self-check failed: the pipeline did not run on $DEMO_CLIP (see above)"
fi
if [ "$dry_run" -eq 1 ]; then
  info "dry run: nothing was changed"
  exit 0
fi
frames="$(wc -l <"$out_dir/demo.jsonl")"
faces="$(grep -o '"track_id"' "$out_dir/demo.jsonl" | wc -l)"
if [ ! -s "$out_dir/demo.mp4" ] || [ "$frames" -eq 0 ]; then
  die "self-check failed: no annotated video or predictions"
fi
info "demo clip: $frames frames, $faces faces labelled"
echo
echo "OK: set up in $venv. Try:"
echo "  $venv/bin/python -m realtime --source picam            # Pi camera (window on the desktop)"
echo "  $venv/bin/python scripts/benchmark.py --source $DEMO_CLIP --loop --frames 300 --threads 4"
