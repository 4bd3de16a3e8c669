"Killed with SIGKILL part-way, then run again: `fgflow prepare` ends with the same cache and `train(resume=True)` with the same weights."
import hashlib, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fgflow.io import FGFlowError
from fgflow.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}

_PROCS: list = []   # every process a test starts; killed at its teardown if still running (no orphans)

@pytest.fixture(autouse=True)
def _no_orphans():
    yield
    while _PROCS: _kill(_PROCS.pop())

def _start(args:list, cwd=None) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV, cwd=cwd, start_new_session=True)
    _PROCS.append(p); return p

def _finish(p:subprocess.Popen, what:str, timeout=120) -> str:
    "Wait for `p`; fail with its stderr if it fails; return stdout."
    try: o, e = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(p); pytest.fail(f'{what}: still running after {timeout} s')
    assert p.returncode == 0, f'{what}: exit {p.returncode}\n{e[-3000:]}'
    return o

def _kill(p:subprocess.Popen):
    "SIGKILL `p` (and its session) if it still runs; reap it."
    if p.poll() is None:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    if p.returncode is None:
        try: p.communicate(timeout=30)
        except Exception: pass

def _wait_for(cond, p:subprocess.Popen, what:str, timeout=90.0, dt=0.01):
    "Poll until `cond()`; fail clearly if `p` exits first or on timeout."
    t0 = time.time()
    while not cond():
        if p.poll() is not None:
            o, e = p.communicate(); pytest.fail(f'process ended (exit {p.returncode}) before {what}\n{e[-3000:]}')
        if time.time() - t0 > timeout: pytest.fail(f'no {what} after {timeout} s')
        time.sleep(dt)

def _digest(out:Path) -> dict:
    "sha256 of every file under `out` (hidden temporaries included), by relative path."
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob('*')) if p.is_file()}

# ---- fgflow prepare (the CLI) ----------------------------------------------------------------------------
# `python -m fgflow.cli` run by runpy (exactly what `-m` does) after a hook that holds each case's write open for
# 1 s: inside `atomic_write`, with the temporary file half written. The kill then lands part-way, mid-write.
SLOW_CLI = textwrap.dedent("""
    import runpy, time
    from pathlib import Path
    import fgflow.data as D
    def _slow_write(path, x):
        import hashlib, io
        buf = io.BytesIO(); D.np.save(buf, x); b = buf.getvalue()
        with D.atomic_write(path) as tmp:
            Path(tmp).write_bytes(b[:len(b) // 2]); time.sleep(1.0); Path(tmp).write_bytes(b)
        return hashlib.sha256(b).hexdigest()
    D._write_npy = _slow_write
    runpy.run_module('fgflow.cli', run_name='__main__', alter_sys=True)
""")

@pytest.fixture(scope='module')
def nifti_cohort(tmp_path_factory):
    from fgflow.phantoms import make_cohort
    root = tmp_path_factory.mktemp('kill') / 'cohort'
    make_cohort(root, n=6, seed=0, formats=('nifti',), progress=False, matrix=64, workers=1)
    return root

def _prepare_args(root, out):
    return ['prepare', '--nifti', root / 'nifti', '--clinical', root / 'clinical.csv', '--out', out,
            '--size', '16', '--spacing', '2', '--quiet']

def test_cli_prepare_killed_mid_write_then_rerun_gives_identical_cache(nifti_cohort, tmp_path):
    root = nifti_cohort
    ref = _start(['-m', 'fgflow.cli', *_prepare_args(root, tmp_path / 'ref')])
    out = tmp_path / 'out'
    p = _start(['-c', SLOW_CLI, *_prepare_args(root, out)])
    try:
        # wait until 2 cases are done and the 3rd is half written (its hidden temporary exists), then SIGKILL
        def mid_write():
            d = out / 'cases'
            return d.is_dir() and len([f for f in d.glob('HN-*.npy')]) >= 2 and any(d.glob('.HN-*.npy.*'))
        _wait_for(mid_write, p, 'two prepared cases and a third being written')
        os.killpg(p.pid, signal.SIGKILL); p.communicate(timeout=30)
    finally: _kill(p)
    assert p.returncode == -signal.SIGKILL
    _finish(ref, 'uninterrupted fgflow prepare')
    done = sorted(f.name for f in (out / 'cases').glob('HN-*.npy'))
    temps = sorted(f.name for f in (out / 'cases').glob('.HN-*.npy.*'))
    assert 2 <= len(done) < 6 and len(temps) == 1, (done, temps)     # killed part-way, one write cut short
    assert temps[0].startswith(f'.HN-SYN-00{len(done) + 1}.npy.')    # the case after the last finished one
    idx = pd.read_csv(out / 'index.csv')
    assert idx.id.tolist() == [d[:-4] for d in done]                 # the index lists exactly the finished cases
    # run again (plain `python -m fgflow.cli`): finished cases reused, the cut write's temporary removed, the rest prepared
    o = _finish(_start(['-m', 'fgflow.cli', *_prepare_args(root, out)]), 'fgflow prepare after the kill')
    assert f'prepared 6 cases ({len(done)} reused), skipped 0' in o, o
    a, b = _digest(tmp_path / 'ref'), _digest(out)
    assert sorted(a) == sorted(b) == ['cases/' + f'HN-SYN-00{i}.npy' for i in range(1, 7)] + ['cohort.json', 'index.csv', 'report.csv', 'report.json']
    assert a == b                                                    # every cache file bit-identical, index.csv included
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / 'ref' / 'index.csv'), pd.read_csv(out / 'index.csv'))

# ---- prepare_cohort (the API) on DICOM, killed between two cases ------------------------------------------
PREPARE = textwrap.dedent("""
    import sys, time
    import fgflow.data as D
    root, out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if slow:   # a slow cohort: wait after each update of index.csv, so the kill lands between cases
        w = D._write_text
        def _slow(path, text):
            w(path, text)
            if path.name == 'index.csv': time.sleep(slow)
        D._write_text = _slow
    cases, _ = D.find_cases(root, progress=False)
    rep = D.prepare_cohort(cases, D.read_clinical(f'{root}/clinical.csv'), out, spacing=2.0, size=16, progress=False)
    print('prepared', len(rep.prepared), 'reused', len(rep.reused), 'skipped', len(rep.skipped))
""")

def test_prepare_cohort_killed_between_cases_then_rerun_gives_identical_cache(tmp_path):
    from fgflow.phantoms import make_cohort
    root = tmp_path / 'cohort'; make_cohort(root, n=4, seed=0, formats=('dicom',), progress=False, matrix=32, workers=1)
    ref = _start(['-c', PREPARE, root, tmp_path / 'ref', 0])
    out = tmp_path / 'out'; p = _start(['-c', PREPARE, root, out, 5.0])
    _wait_for(lambda: (out / 'index.csv').exists(), p, 'index.csv after a first prepared case')   # then it sleeps 5 s
    os.killpg(p.pid, signal.SIGKILL); p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert 'prepared 4 reused 0 skipped 0' in _finish(ref, 'uninterrupted prepare_cohort')
    done = sorted(x.name for x in (out / 'cases').iterdir())
    assert done == ['HN-SYN-001.npy'], done                          # killed after one case, no temporary left
    assert pd.read_csv(out / 'index.csv').id.tolist() == ['HN-SYN-001']
    assert 'prepared 4 reused 1 skipped 0' in _finish(_start(['-c', PREPARE, root, out, 0]), 'prepare_cohort after the kill')
    a, b = _digest(tmp_path / 'ref'), _digest(out)
    assert len([k for k in a if k.startswith('cases/')]) == 4 and a == b   # every file bit-identical, index.csv included

# ---- train, killed and resumed ----------------------------------------------------------------------------
TRAIN = textwrap.dedent("""
    import sys, time, json
    import torch
    from fgflow.model import FGFNet3D
    from fgflow.train import TensorCohort, train
    out, epochs, lam, slow = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    resume = sys.argv[5] == 'resume'
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    def cohort(n):
        x = torch.rand(n, 2, 8, 8, 8, generator=g)
        x[:, 1] = (x[:, 1] > 0.5).float()            # a binary 'mask' channel
        y = torch.arange(n) % 2
        x[:, 0] += 0.3 * y.view(-1, 1, 1, 1).float() # a learnable signal
        return TensorCohort(x, y, spacing=(2., 2., 2.))
    tr, va = cohort(12), cohort(8)
    if slow:   # the run to be killed: each checkpoint write stays half written for `slow` s inside atomic_write
        from pathlib import Path
        save = torch.save
        def slow_save(obj, f, *a, **k):
            save(obj, f, *a, **k); b = Path(f).read_bytes()
            Path(f).write_bytes(b[:len(b) // 2]); time.sleep(slow); Path(f).write_bytes(b)
        torch.save = slow_save
    torch.manual_seed(0)
    model = FGFNet3D(width=4, depth=2)
    feats = ['volume'] if lam > 0 else None
    r = train(model, tr, va, features=feats, lam=lam, epochs=epochs, lr=1e-2, batch_size=4, seed=5,
              out_dir=out, resume=resume, progress=False)
    print(json.dumps(dict(best_epoch=r.best_epoch, epochs=r.history['epoch'].tolist())))
""")

def _train(script, out, epochs, lam, slow=0.0, resume=False):
    return _start(['-c', script, out, epochs, lam, slow, 'resume' if resume else 'fresh'])

def _same_state(a:dict, b:dict) -> list:
    "Names of tensors that differ (bit for bit) between two state dicts; fails if the keys differ."
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]

@pytest.mark.parametrize('lam', [0.0, 0.5], ids=['bce', 'fgf_penalty'])
def test_train_killed_mid_checkpoint_write_then_resumed_gives_same_weights(tmp_path, lam):
    E = 4
    ref = _train(TRAIN, tmp_path / 'ref', E, lam)
    out = tmp_path / 'out'
    p = _train(TRAIN, out, E, lam, slow=1.0)
    try:   # kill while a checkpoint after the first one is being written: last.pt exists and a half-written temporary too
        _wait_for(lambda: (out / 'last.pt').exists() and any(out.glob('.last.pt.*')), p, 'a second last.pt being written')
        os.killpg(p.pid, signal.SIGKILL); p.communicate(timeout=30)
    finally: _kill(p)
    assert p.returncode == -signal.SIGKILL
    _finish(ref, 'uninterrupted training')
    killed = load_checkpoint(out / 'last.pt')
    assert killed['epoch'] < E - 1, killed['epoch']                 # really killed part-way
    temp = [f.name for f in out.glob('.*')]
    assert len(temp) == 1 and temp[0].startswith('.last.pt.'), temp   # the cut write left only its hidden temporary
    with pytest.raises(FGFlowError, match='cannot read checkpoint'): load_checkpoint(out / temp[0])   # half written
    o = _finish(_train(TRAIN, out, E, lam, resume=True), 'resumed training')
    assert f'"epochs": {list(range(E))}' in o, o                    # the resumed history covers every epoch once
    r, s = load_checkpoint(tmp_path / 'ref' / 'last.pt'), load_checkpoint(out / 'last.pt')
    assert r['epoch'] == s['epoch'] == E - 1
    k = killed['epoch'] + 1                                          # it resumed: the killed run's epochs were not redone
    assert s['history']['time'][:k] == killed['history']['time'][:k] and len(s['history']['time']) == E
    assert [f.name for f in out.glob('.*')] == temp                 # resume never read the temporary (train leaves it there)
    assert _same_state(r['model'], s['model']) == []                # final weights bit-identical
    assert _same_state(load_checkpoint(tmp_path / 'ref' / 'best.pt')['model'], load_checkpoint(out / 'best.pt')['model']) == []
    for i, st in r['optimizer']['state'].items():
        assert torch.equal(st['exp_avg'], s['optimizer']['state'][i]['exp_avg']) and torch.equal(st['exp_avg_sq'], s['optimizer']['state'][i]['exp_avg_sq'])
    h1, h2 = pd.DataFrame(r['history']).drop(columns='time'), pd.DataFrame(s['history']).drop(columns='time')
    pd.testing.assert_frame_equal(h1, h2)
    if lam > 0: assert (h1['penalty'] > 0).all()                    # the penalty was on
    else: assert (h1['penalty'] == 0).all()

def test_resume_refuses_a_truncated_last_checkpoint(tmp_path):
    "A last.pt cut short (copied from a full disk, not our atomic write) is refused naming the file, not resumed from epoch 0."
    from fgflow.model import FGFNet3D
    from fgflow.train import TensorCohort, train
    g = torch.Generator().manual_seed(0)
    tr = TensorCohort(torch.rand(8, 2, 8, 8, 8, generator=g), torch.arange(8) % 2)
    kw = dict(epochs=2, lr=1e-2, batch_size=4, out_dir=tmp_path, progress=False)
    train(FGFNet3D(width=4, depth=2), tr, tr, **kw)
    b = (tmp_path / 'last.pt').read_bytes(); (tmp_path / 'last.pt').write_bytes(b[:len(b) // 2])
    with pytest.raises(FGFlowError, match=r'last\.pt: cannot read checkpoint'):
        train(FGFNet3D(width=4, depth=2), tr, tr, resume=True, **kw)
