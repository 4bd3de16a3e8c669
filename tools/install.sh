#!/usr/bin/env bash
# Install fgflow from this checkout: torch==2.13.0 first, then the package and its requirements.
#   bash tools/install.sh          # the library and the `fgflow` command
#   bash tools/install.sh --dev    # + test and docs tools, pyradiomics (feature oracle), dicom3tools/dcmtk
# Set FGFLOW_TORCH=skip to keep a torch you installed yourself (a CUDA build, say).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install -q --disable-pip-version-check"

# torch first: a pinned CPU build here; a bare `torch` would pull a CUDA build of several GB.
if [ "${FGFLOW_TORCH:-2.13.0}" != skip ]; then $PIP "torch==${FGFLOW_TORCH:-2.13.0}"; fi

if [ "${1:-}" = "--dev" ]; then
  $PIP -e ".[dev]"
  # pyradiomics 3.0.1 is the oracle of the feature tests; it builds only without build isolation.
  $PIP versioneer numpy
  $PIP --no-build-isolation "pyradiomics==3.0.1"
  # Debian tools used by tests: dciodvfy (dicom3tools) and dcmdump (dcmtk) validate the DICOM files
  # we write; headless chromium screenshots the docs site. Tests skip what is not installed.
  missing=""
  command -v dciodvfy >/dev/null 2>&1 || missing="$missing dicom3tools dcmtk"
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
  if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -q $missing >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null 2>&1)) \
      || echo "note: could not install$missing; the tests that need them will be skipped"
  fi
else
  $PIP -e .
fi
echo "fgflow installed: $($PY -c 'import fgflow; print(fgflow.__version__)')"
