#!/usr/bin/env bash
# System libraries the Python wheels need on a bare Debian/Ubuntu (installed only when missing):
#   libegl1 libgles2  MediaPipe's native library loads EGL/GLES even on the CPU
#   libgl1 libglib2.0-0  OpenCV's GUI build (cv2.imshow)
# Pass --with-chromium to also install what the GUI tests drive: Chromium (browser tests), Xvfb,
# xdotool and ImageMagick (a real live window on a virtual screen, its screenshot).
set -euo pipefail

want=(libegl1 libgles2 libgl1 libglib2.0-0)
[[ "${1:-}" == "--with-chromium" ]] && want+=(chromium xvfb xdotool imagemagick)

command -v dpkg-query >/dev/null 2>&1 || { echo "system_deps: not a Debian-like system; install EGL/GLES libraries yourself" >&2; exit 0; }
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "system_deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "system_deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
