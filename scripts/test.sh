#!/usr/bin/env bash
# Install everything the tests need (system peers with apt-get when missing,
# Python packages with pip into .venv) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages: real peers the tests start (servers on 127.0.0.1 only) ---
#   mosquitto: MQTT broker (sync);  mosquitto-clients: another MQTT client (broker ACL tests);  postgresql: receiver on a real PostgreSQL;
#   gstreamer + python3-gi: RTSP server (camera);  aravis-tools + gir: fake GigE camera;
#   chromium: browser tests (Playwright drives Debian's Chromium);  openssl: TLS test CA;
#   libgirepository1.0-dev, libcairo2-dev, pkg-config, python3-dev: build PyGObject (gige extra)
#   buildah + debootstrap: build the CPU image and run the station in it (tests/test_container_build.py)
pkgs=(mosquitto mosquitto-clients postgresql openssl chromium buildah debootstrap
      python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      aravis-tools gir1.2-aravis-0.8
      libgirepository1.0-dev libcairo2-dev pkg-config python3-dev gcc)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- Python: runtime + training (torch from the pinned CUDA build) + test tools ---
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pipi() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
pipi -U pip
.venv/bin/python -c 'import torch, torchvision' 2>/dev/null || pipi torch==2.14.1 torchvision==0.29.1
pipi -e '.[training,test]'

# numba's default OpenMP layer leaves threads spinning next to ONNX Runtime
export NUMBA_THREADING_LAYER=workqueue
exec .venv/bin/python -m pytest "$@"
