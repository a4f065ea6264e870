#!/usr/bin/env bash
# Prove that the pinned runtime requirements install from binary wheels on 64-bit Raspberry Pi OS:
# Linux aarch64, CPython 3.11 (bookworm) and 3.12, glibc up to 2.36. Nothing is installed: pip
# downloads the wheels for that platform into a temporary folder (--only-binary=:all:, so a
# package that would have to be compiled on the Pi counts as a failure).
#
# Usage: scripts/check_aarch64.sh [--isolated] [--keep] [REQUIREMENTS_FILE...]
#   REQUIREMENTS_FILE  default: requirements.txt and requirements-mediapipe.txt (the runtime and the
#                      extra that setup_pi.sh --with-mediapipe adds), resolved together, their -r
#                      includes followed; the Pi-only extras of scripts/setup_pi.sh are checked with them
#   --isolated         ignore pip config files and PIP_* variables (ask PyPI only)
#   --keep             keep the downloaded wheels (the folder is printed)
# Exit status: 0 when every requirement resolves for every Python version, 1 otherwise, 2 on bad use.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY_VERSIONS=(3.11 3.12)
# manylinux tags a Pi OS bookworm (glibc 2.36) can install; pip takes any of them.
PLATFORMS=(manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_24_aarch64 manylinux_2_26_aarch64
           manylinux_2_27_aarch64 manylinux_2_28_aarch64 manylinux_2_31_aarch64 manylinux_2_34_aarch64
           manylinux_2_35_aarch64 manylinux_2_36_aarch64)

isolated=()
keep=0
reqs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --isolated) isolated=(--isolated) ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) reqs+=("$1") ;;
  esac
  shift
done
if [ ${#reqs[@]} -eq 0 ]; then reqs=("$ROOT/requirements.txt" "$ROOT/requirements-mediapipe.txt"); fi
for f in "${reqs[@]}"; do [ -f "$f" ] || { echo "error: no requirements file $f" >&2; exit 2; }; done

if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"; else PYTHON="${PYTHON:-python3}"; fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "error: $PYTHON has no pip" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/check_aarch64.XXXXXX")"
if [ "$keep" -eq 0 ]; then trap 'rm -rf "$work"' EXIT; fi

# The requirements: the files' lines (comments and other options dropped, -r includes followed, each
# once) plus the Pi-only extras.
read_specs() {  # $1 = requirements file
  local line dir
  dir="$(dirname "$1")"
  while IFS= read -r line; do
    case "$line" in
      -r*|--requirement*) read_specs "$dir/$(sed -E 's/^(-r|--requirement)[[:space:]=]*//' <<<"$line")" ;;
      -*) ;;
      *) printf '%s\n' "$line" ;;
    esac
  done < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$')
}
mapfile -t specs < <(for f in "${reqs[@]}"; do read_specs "$f"; done | awk '!seen[$0]++')
mapfile -t extras < <(bash "$HERE/setup_pi.sh" --print-pip-extras)
all_specs=("${specs[@]}" "${extras[@]}")
echo "checking ${#all_specs[@]} requirements (${all_specs[*]}) for Linux aarch64, CPython ${PY_VERSIONS[*]}"

platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

# pip download of aarch64 wheels: $1 = Python version (3.11), $2 = folder, the rest: requirements.
download() {
  local version="$1" dest="$2"
  shift 2
  "$PYTHON" -m pip "${isolated[@]}" download --disable-pip-version-check --only-binary=:all: \
    "${platform_args[@]}" --python-version "$version" --implementation cp --abi "cp${version/./}" \
    -d "$dest" "$@"
}

# The newest version of $2 that has an aarch64 wheel for Python $1 (empty if none).
newest_wheel() {
  local version="$1" name="$2" out
  out="$(download "$version" "$work/probe" --no-deps "$name" 2>/dev/null || true)"
  sed -n -e 's/.*Saved .*\/\([^/]*\)$/\1/p' -e 's/.*File was already downloaded .*\/\([^/]*\)$/\1/p' <<<"$out" \
    | head -n 1 | cut -d- -f2
}

failed=0
for version in "${PY_VERSIONS[@]}"; do
  echo
  echo "== CPython $version"
  log="$work/pip-$version.log"
  if download "$version" "$work/$version" "${all_specs[@]}" >"$log" 2>&1; then
    n=$(find "$work/$version" -name '*.whl' | wc -l)
    echo "OK: all ${#all_specs[@]} requirements and their dependencies resolve ($n wheels)"
    continue
  fi
  failed=1
  # pip stops at the first gap: try each requirement on its own to list every one that lacks a wheel.
  echo "FAILED; checking the requirements one by one"
  for spec in "${all_specs[@]}"; do
    if out="$(download "$version" "$work/$version" "$spec" 2>&1)"; then
      echo "  ok       $spec"
      continue
    fi
    missing="$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' <<<"$out" | head -n 1)"
    missing="${missing:-$spec}"
    name="$(sed -E 's/[<>=!~; ].*//' <<<"$missing")"
    hint="$(newest_wheel "$version" "$name")"
    echo "  MISSING  $spec: no aarch64 wheel for $missing${hint:+ (newest with a wheel: $name==$hint)}"
    grep -m 1 -E '^ERROR: (Could not find|No matching)' <<<"$out" | sed 's/^/           /' || true
  done
done

echo
if [ "$keep" -eq 1 ]; then echo "wheels kept in $work"; fi
if [ "$failed" -ne 0 ]; then
  echo "aarch64 check FAILED: see MISSING above"
  exit 1
fi
echo "aarch64 check passed: everything resolves to wheels for CPython ${PY_VERSIONS[*]} on Linux aarch64"
