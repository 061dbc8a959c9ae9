#!/usr/bin/env bash
# Create .venv/ and install everything the project needs. Idempotent; `make setup` runs it
# when pyproject.toml or this script changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: only those missing are installed.
#   libb64-0d   Triton's perf_analyzer (shipped in the tritonclient wheel) links against it
#   espeak-ng   speaks the example clips for `make run`
#   chromium    headless browser for tests/test_web.py (driven by Playwright; never `playwright install`)
#   nginx       the gateway of `e2v-serve --public` (TLS, token, size limits); its tests start it
#   gettext-base envsubst, which renders the gateway's template in the official nginx image (tested alike)
#   jq curl     the README's curl example (tested)
APT_PACKAGES=(libb64-0d espeak-ng chromium nginx gettext-base jq curl)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch first and pinned: 2.13.0 is a CPU build already on disk; anything else would pull
# several GB of CUDA wheels when FunASR asks for torch.
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[export,server,test,bench,web]"
# Silero VAD's ONNX model for the segments model (e2v-export copies it into the repository). Without its
# dependencies: the package asks for torch and torchaudio, which would pull GBs; the ONNX file needs neither.
"${PIP[@]}" install --no-deps silero-vad==6.2.3
echo "setup: .venv ready"

# The Node.js example's packages (examples/node, tested by tests/test_any_language.py), where npm is installed:
# exactly package-lock.json's versions, installed again only when the lock file is newer.
if command -v npm >/dev/null; then
  if [ ! -d examples/node/node_modules ] || [ examples/node/package-lock.json -nt examples/node/node_modules ]; then
    (cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
    touch examples/node/node_modules
  fi
else
  echo "setup: no npm: the Node.js example (examples/node) is not installed and its tests are skipped"
fi
