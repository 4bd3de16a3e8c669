#!/usr/bin/env bash
# Install fgflow from this checkout into the active Python environment (make a virtual environment first:
# python3 -m venv .venv && . .venv/bin/activate): torch==2.13.0 first, then the package and its requirements.
#   bash tools/install.sh          # the library and the `fgflow` command (pip only, nothing outside the environment)
#   bash tools/install.sh --dev    # + test and docs tools, scikit-learn, pyradiomics (feature oracle), MONAI networks,
#                                  #   and, run as root where apt-get exists, the Debian packages dicom3tools, dcmtk, chromium
# FGFLOW_TORCH=skip keeps a torch you installed yourself (a CUDA build, say); FGFLOW_TORCH=2.x.y pins another one.
# FGFLOW_APT=skip never touches the system (no apt-get): the tests that need those tools are then skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install -q --disable-pip-version-check"

# torch first: a pinned CPU build here; a bare `torch` would pull a CUDA build of several GB.
if [ "${FGFLOW_TORCH:-2.13.0}" != skip ]; then $PIP "torch==${FGFLOW_TORCH:-2.13.0}"; fi

if [ "${1:-}" = "--dev" ]; then
  $PIP -e ".[dev,monai]"
  # pyradiomics 3.0.1 is the oracle of the feature tests; it builds only without build isolation.
  $PIP versioneer numpy
  $PIP --no-build-isolation "pyradiomics==3.0.1"
  # Debian tools used by tests: dciodvfy (dicom3tools) and dcmdump (dcmtk) validate the DICOM files
  # we write; headless chromium screenshots the docs site.
  missing=""
  command -v dciodvfy >/dev/null 2>&1 || missing="$missing dicom3tools"
  command -v dcmdump >/dev/null 2>&1 || missing="$missing dcmtk"
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
  if [ -n "$missing" ]; then
    if [ "${FGFLOW_APT:-}" = skip ]; then
      echo "note: FGFLOW_APT=skip: not installing$missing; the tests that need them will be skipped"
    elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing system packages with apt-get (as root):$missing  (FGFLOW_APT=skip to leave the system alone)"
      export DEBIAN_FRONTEND=noninteractive
      (apt-get install -y -q $missing >/dev/null 2>&1 \
        || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null 2>&1)) \
        || echo "note: could not install$missing; the tests that need them will be skipped"
    else
      echo "note: not root or no apt-get: install$missing yourself (e.g. sudo apt-get install$missing), or the tests that need them will be skipped"
    fi
  fi
else
  $PIP -e .
fi
echo "fgflow installed: $($PY -c 'import fgflow; print(fgflow.__version__)')"
