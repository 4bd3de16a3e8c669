"Robustness: unsafe checkpoints are refused; an interrupted `prepare_cohort` resumes to the same cache."
import hashlib, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fgflow.io import FGFlowError
from fgflow.train import load_checkpoint

# Covered elsewhere, not repeated here: a corrupted cache file is detected (sha256) and rebuilt
# (tests/test_data.py::test_prepare_cohort_cache_rerun_corruption_and_failures); a model whose gradient vanishes
# on some inputs is counted as undefined and the rest measured (tests/test_flow.py::test_vanishing_gradient_is_nan_and_counted).

class _Payload:
    "An object whose unpickling would run code: it creates the file `marker` (opens it for writing)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, 'w'))

def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path):
    marker = tmp_path / 'pwned'; p = tmp_path / 'evil.pt'
    torch.save({'model': {'w': torch.zeros(2)}, 'extra': _Payload(marker)}, p)
    with pytest.raises(FGFlowError, match=r'evil\.pt: cannot read checkpoint') as e: load_checkpoint(p)
    assert isinstance(e.value, ValueError) and type(e.value).__name__ == 'TrainingError'
    assert 'Weights only load failed' in str(e.value) or 'weights_only' in str(e.value)
    assert not marker.exists()          # the payload never ran
    q = tmp_path / 'plain.pt'; torch.save({'model': {'w': torch.ones(3)}, 'epoch': 2}, q)
    ck = load_checkpoint(q); assert ck['epoch'] == 2 and torch.equal(ck['model']['w'], torch.ones(3))   # a plain checkpoint loads

def test_checkpoint_truncated_or_missing(tmp_path):
    q = tmp_path / 'ck.pt'; torch.save({'model': {'w': torch.ones(100)}}, q)
    q.write_bytes(q.read_bytes()[:100])
    with pytest.raises(FGFlowError, match=r'ck\.pt: cannot read checkpoint'): load_checkpoint(q)
    with pytest.raises(FGFlowError, match=r'nope\.pt: no checkpoint'): load_checkpoint(tmp_path / 'nope.pt')

# ---- killing prepare_cohort part-way ------------------------------------------------------------------
PREPARE = textwrap.dedent("""
    import sys, time
    import fgflow.data as D
    root, out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if slow:   # a slow cohort: wait after each case file is written, so the kill lands part-way
        w = D._write_npy
        def _slow(path, x):
            r = w(path, x); time.sleep(slow); return r
        D._write_npy = _slow
    cases, _ = D.find_cases(root, progress=False)
    rep = D.prepare_cohort(cases, D.read_clinical(f'{root}/clinical.csv'), out, spacing=2.0, size=16, progress=False)
    print('prepared', len(rep.prepared), 'skipped', len(rep.skipped))
""")

def _run(root, out, slow=0.0, **kw):
    return subprocess.Popen([sys.executable, '-c', PREPARE, str(root), str(out), str(slow)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)

def _digest(out:Path) -> dict:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob('*')) if p.is_file()}

def test_prepare_cohort_killed_then_rerun_gives_identical_cache(tmp_path):
    from fgflow.phantoms import make_cohort
    root = tmp_path / 'cohort'; make_cohort(root, n=4, seed=0, formats=('dicom',), progress=False, matrix=32, workers=1)
    ref = _run(root, tmp_path / 'ref'); o, e = ref.communicate(timeout=120)
    assert ref.returncode == 0, e
    assert 'prepared 4 skipped 0' in o
    out = tmp_path / 'out'; p = _run(root, out, slow=5.0); t0 = time.time()
    while not list((out / 'cases').glob('*.npy')) and time.time() - t0 < 60 and p.poll() is None: time.sleep(0.02)
    assert p.poll() is None, 'prepare ended before it could be killed'
    p.send_signal(signal.SIGKILL); p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    done = sorted(x.name for x in (out / 'cases').glob('*.npy'))
    assert 1 <= len(done) < 4, done                      # killed part-way: some cases written, not all
    assert not (out / 'index.csv').exists() or len(pd.read_csv(out / 'index.csv')) < 4
    assert not [x for x in (out / 'cases').iterdir() if not x.name.endswith('.npy')]   # no temporary left to be mistaken for a case
    again = _run(root, out); o, e = again.communicate(timeout=120)
    assert again.returncode == 0, e
    assert 'prepared 4 skipped 0' in o
    a, b = _digest(tmp_path / 'ref'), _digest(out)
    assert set(a) == set(b) and len([k for k in a if k.startswith('cases/')]) == 4
    assert {k: v for k, v in a.items() if k.startswith('cases/') or k == 'cohort.json'} == \
           {k: v for k, v in b.items() if k.startswith('cases/') or k == 'cohort.json'}
    ia, ib = pd.read_csv(tmp_path / 'ref' / 'index.csv'), pd.read_csv(out / 'index.csv')
    pd.testing.assert_frame_equal(ia, ib)                # same rows, same sha256 of each case

# ---- same seed, two fresh processes and folders: the same numbers ---------------------------------------
def test_demo_same_seed_two_fresh_runs_identical_numbers(tmp_path):
    "tests/test_cli.py reruns in the same folder (cohort reused, same process); here two separate processes from scratch."
    import json
    pytest.importorskip('fgflow.cli')
    outs = [tmp_path / f'run{i}' for i in (1, 2)]
    ps = [subprocess.Popen([sys.executable, '-c', 'import sys; from fgflow.cli import main; sys.exit(main(sys.argv[1:]))', 'demo', '--tiny', '--out', str(o), '--seed', '3', '--quiet'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    for p in ps:
        o, e = p.communicate(timeout=300); assert p.returncode == 0, e[-2000:]
    r = [json.loads((o / 'report.json').read_text().replace(str(o), '<out>')) for o in outs]
    assert r[0]['seed'] == r[1]['seed'] == 3 and not r[0]['data']['cohort_reused']
    for k in ('settings', 'data', 'models', 'measure', 'figures'): assert r[0][k] == r[1][k], k
    assert r[0]['models']['plain']['test_scores'] and r[0]['measure']['plain']   # numbers were compared, not empty lists
