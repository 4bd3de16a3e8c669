#!/usr/bin/env bash
# Re-execute nbs/10_paper.ipynb in its paper configuration (the `slow` cells) with one torch thread, writing
# nbs/paper/results.json and the notebook's outputs, then clean the notebook and check the two agree.
#   bash tools/rerun_paper.sh        (from the repository root; about 5-10 minutes on one core)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
start=$(date +%s)
python tools/run_nb.py nbs/10_paper.ipynb --flags slow
nbdev_clean --fname nbs/10_paper.ipynb
python -m pytest -q tests/test_paper.py
echo "10_paper re-executed, cleaned and checked in $(( $(date +%s) - start )) s"
