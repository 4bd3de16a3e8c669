"""The eight benchmark rows of issue 8. Each returns a dict: what, size, fgflow_s, other_s, ratio, goal, met, note."""
from __future__ import annotations
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, torch

from bench.common import NAMED12, timeit, timeit_ab, sync, make_batch, LazyCases
from fgflow.model import FGFNet3D
from fgflow.features import FeatureSet, random_linear_features, _topology_of

def _row(what, size, a, b, goal_txt, met, note='', ratio=None, reps=''):
    r = a / b if ratio is None and a is not None and b else ratio
    return dict(what=what, size=size, fgflow_s=a, other_s=b, ratio=r, goal=goal_txt, met=met, repeats=reps, note=note)

# ---------------------------------------------------------------- 1
ALL15 = NAMED12 + ['centroid_x', 'centroid_y', 'centroid_z']

def _align_row(B, S, W, reps, device, goal, tag):
    "alignment (15 named + 100 noise features, one call) vs Captum Saliency on one batch of a FGFNet3D of width W."
    from captum.attr import Saliency
    from fgflow.flow import alignment
    torch.manual_seed(0)
    model = FGFNet3D(width=W).to(device).eval()
    x = make_batch(B, S).to(device)
    fs, nz = FeatureSet(ALL15), random_linear_features(100, x.shape[1:], seed=0)
    def ours():                         # a new input each call: no mesh topology kept from the last one
        _topology_of.cache_clear(); a = alignment(model, x, fs, noise=nz); sync(device); return a
    sal = Saliency(model)
    def cap(): r = sal.attribute(x, abs=False); sync(device); return r
    t_ours, t_cap = timeit_ab(ours, cap, reps)
    a = ours()
    ok = a.cos2.shape == (B, 15) and a.noise.shape == (B, 100)
    r = t_ours / t_cap
    return _row(f'1{tag} alignment 15 named + 100 noise vs Captum Saliency', f'batch {B}x2x{S}^3, FGFNet3D width {W}', t_ours, t_cap,
                f'<= {goal:g}x', r <= goal, f'one alignment call (named set and noise, one backward; mesh topology cache cleared first); shapes ok={ok}', reps=reps)

def row1(P, device):
    "alignment vs Captum Saliency: the issue's size (8x2x48^3, width 8) and a realistic one (4x2x64^3, width 16)."
    return [_align_row(P['r1_batch'], P['r1_size'], 8, P['reps'], device, 3.0, 'a'),
            _align_row(P['r1b_batch'], P['r1b_size'], 16, P['reps'], device, 1.5, 'b')]

# ---------------------------------------------------------------- 2
def row2(P, device):
    "fgf_measure vs per-sample, per-feature autograd.grad; same numbers."
    from fgflow.flow import fgf_measure
    from bench.naive import naive_measure
    N, S, n_naive, spl, ms = P['r2_n'], P['r2_size'], P['r2_naive'], P['r2_spl'], P['r2_max']
    torch.manual_seed(0)
    model = FGFNet3D().to(device).eval()
    X = make_batch(N, S).to(device)
    fs, nz = FeatureSet(NAMED12), random_linear_features(100, X.shape[1:], seed=0)
    kw = dict(noise=nz, progress=False, batch_size=P['r2_bs'], steps_per_line=spl, max_steps=ms, n_boot=200)
    fgf_measure(model, X[:2], fs, **kw)                                   # warm-up
    out = {}
    def lib(): _topology_of.cache_clear(); out['res'] = fgf_measure(model, X, fs, **kw); sync(device)   # nothing kept from the last run
    def nai(): out['nv'] = naive_measure(model, X[:n_naive], NAMED12, nz, steps_per_line=spl, max_steps=ms)
    t_lib, t_naive = timeit_ab(lib, nai, P['r2_reps'], warmup=0)
    t_naive *= N / n_naive
    res, nv = out['res'], out['nv']
    lib = np.c_[res.per_point[NAMED12].to_numpy(), res.noise_per_point][:n_naive]
    err = float(np.nanmax(np.abs(lib - nv) / np.maximum(np.abs(lib), 1e-6)))
    assert np.array_equal(np.isnan(lib), np.isnan(nv)) and err < 1e-2, f'fgf_measure and the naive loop disagree: max rel err {err:.3g}'
    speed = t_naive / t_lib
    return _row('2 fgf_measure vs naive per-sample/per-feature autograd.grad', f'{N} cases 2x{S}^3, 12+100 features, '
                f'steps_per_line={spl}, max_steps={ms}', t_lib, t_naive, '>= 10x faster', speed >= 10,
                f'naive timed on {n_naive} cases x{N // n_naive} (linear per-sample loop); same numbers: max rel err {err:.1e} '
                f'on the {n_naive} cases; mean steps/line {res.per_point.n_steps.mean():.1f}', ratio=t_lib / t_naive, reps=P['r2_reps']) | {'speedup': speed}

# ---------------------------------------------------------------- 3
def row3(P, device):
    "One regularized training step vs one plain step, for both penalty methods."
    from fgflow.train import fgf_penalty
    B, S = P['r3_batch'], P['r3_size']
    torch.manual_seed(0)
    model = FGFNet3D().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = make_batch(B, S).to(device); y = (torch.arange(B) % 2).float().to(device)
    fs = FeatureSet(['volume', 'elongation'])
    lossf = torch.nn.BCEWithLogitsLoss()
    G = fs.gradients(x)                    # what train caches per case when augmentation is off
    def step(method=None, G=None):
        loss = lossf(model(x), y)
        if method: loss = loss + 1.0 * fgf_penalty(model, x, fs, method=method, G=G)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sync(device)
    out = []
    for meth, lim in (('finite_difference', 2.0), ('double_backprop', 4.0)):
        for cached in (False, True):
            t, t0 = timeit_ab(lambda: step(meth, G if cached else None), step, P['reps'])
            out.append(_row(f'3 training step with {meth} penalty vs plain step' + (', feature gradients cached' if cached else ''),
                            f'batch {B}x2x{S}^3, S=volume+elongation', t, t0, f'<= {lim:g}x', t / t0 <= lim,
                            'FGFNet3D(width 8, depth 4), AdamW' + ('; G given as train passes it after the first epoch (no augmentation)'
                                                                    if cached else '; G computed in the step'), reps=P['reps']))
    # the step as `train` takes it: the BCE's forward also gives ∇f and the base of a one-sided difference (mode-free models)
    from fgflow.train import _reg_loss, _FrozenPattern, gram_pinv
    Pm, params = gram_pinv(G), list(model.parameters())
    def tstep(method):
        xq, pat = x.detach().requires_grad_(True), _FrozenPattern(model)
        with pat.record(): f = model(xq)
        loss = lossf(f, y) + _reg_loss(model, x, G, Pm, None, 1.0, method, base=(xq, f, pat))[0]
        opt.zero_grad(set_to_none=True); loss.backward(inputs=params); opt.step(); sync(device)
    for meth, lim in (('finite_difference', 2.0), ('double_backprop', 4.0)):
        t, t0 = timeit_ab(lambda: tstep(meth), step, P['reps'])
        out.append(_row(f'3 training step with {meth} penalty vs plain step, as `train` takes it', f'batch {B}x2x{S}^3, S=volume+elongation',
                        t, t0, f'<= {lim:g}x', t / t0 <= lim, 'FGFNet3D(width 8, depth 4), AdamW; G cached; the BCE forward shared with the penalty'
                        + (' (one-sided difference)' if meth == 'finite_difference' else ' (create_graph on it)'), reps=P['reps']))
    return out

# ---------------------------------------------------------------- 4
def _write_series(folder:Path, n:int, rows:int=512):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid, CTImageStorage
    g = np.random.default_rng(0)
    img = (g.integers(-1000, 1500, (rows, rows), dtype=np.int16))
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    order = g.permutation(n)                                   # files named in shuffled order: sorting must work
    for k in range(n):
        ds = Dataset(); uid = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, 'CT'
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = 'BENCH', study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-250., -250., -300. + 2.5 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.977, 0.977], 2.5
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.roll(img, k, 0).tobytes()
        ds.file_meta = FileMetaDataset(); ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        ds.preamble = b'\0' * 128
        pydicom.dcmwrite(folder / f'IM{order[k]:05d}.dcm', ds, enforce_file_format=True)

def row4(P, device):
    "read_dicom_series vs SimpleITK ImageSeriesReader on an int16 series."
    import SimpleITK as sitk
    from fgflow.io import read_dicom_series
    n = P['r4_slices']
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); _write_series(d, n)
        def sitk_read():
            r = sitk.ImageSeriesReader(); r.SetFileNames(r.GetGDCMSeriesFileNames(str(d))); return r.Execute()
        t_ours, t_sitk = timeit_ab(lambda: read_dicom_series(d), sitk_read, P['reps'])
        v, im = read_dicom_series(d), sitk_read()
        a = sitk.GetArrayFromImage(im)                                      # (k, j, i) like Volume.array
        same = a.shape == v.array.shape and np.array_equal(a.astype(np.float32), v.array)
    return _row('4 read_dicom_series vs SimpleITK ImageSeriesReader', f'{n} slices 512x512 int16',
                t_ours, t_sitk, '<= 1.0x', t_ours / t_sitk <= 1.0, f'identical HU arrays: {same}', reps=P['reps'])

# ---------------------------------------------------------------- 5
def row5(P, device):
    "rtstruct_mask vs skimage polygon2mask per slice on the same polygons."
    from skimage.draw import polygon2mask
    from fgflow.io import Volume, read_rtstruct, rtstruct_mask
    from fgflow.phantoms import write_rtstruct, affine_lps
    n, R = P['r5_slices'], 512
    geom = dict(spacing=(2.5, 0.977, 0.977), origin=np.array([-250., -250., -300.]))
    kk, jj, ii = np.ogrid[:n, :R, :R]
    mask = (((kk - n / 2) / (n / 2 + 1))**2 + ((jj - 250) / 90.)**2 + ((ii - 260) / 120.)**2) <= 1  # a contour on each slice
    mask &= np.ones(n, bool)[:, None, None]
    slices = [dict(sop_uid=f'1.2.3.{k + 1}', z=-300. + 2.5 * k) for k in range(n)]
    ref = Volume(np.zeros((n, R, R), np.float32), affine_lps(geom))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / 'RS.dcm'
        write_rtstruct({'GTV': (mask, [255, 0, 0], 'GTV')}, geom, slices, p, 'BENCH', 0)
        rt = read_rtstruct(p)
        roi = next(iter(rt.rois.values()))
        Ainv = np.linalg.inv(ref.affine)
        def sk():
            out = np.zeros(ref.shape, bool)
            for c in roi.contours:
                ijk = (np.c_[c, np.ones(len(c))] @ Ainv.T)[:, :3]
                k = int(round(ijk[0, 2]))
                out[k] |= polygon2mask((R, R), ijk[:, [1, 0]])
            return out
        t_ours, t_sk = timeit_ab(lambda: rtstruct_mask(rt, ref, 'GTV'), sk, P['reps'], warmup=0)
        t_read, _ = timeit(lambda: read_rtstruct(p), P['reps'])
        m1, m2 = rtstruct_mask(rt, ref, 'GTV'), sk()
    diff = int((m1 != m2).sum())
    return _row('5 rtstruct_mask vs skimage polygon2mask per slice', f'{n} slices 512x512, {len(roi.contours)} contours',
                t_ours, t_sk, '<= 1x', t_ours / t_sk <= 1.0,
                f'parsed RTSTRUCT given to both (read_rtstruct alone {t_read:.3f} s); voxels differing {diff} of '
                f'{int(m2.sum())} inside (boundary convention); vs source mask differing {int((m1 != mask).sum())}', reps=P['reps'])

# ---------------------------------------------------------------- 6
def row6(P, device):
    "Fetch a cached batch (CohortDataset + DataLoader) vs one training step on it."
    from fgflow.phantoms import make_cohort
    from fgflow.data import find_cases, read_clinical, prepare_cohort, CohortDataset
    B, S = P['r6_batch'], P['r6_size']
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        make_cohort(d / 'cohort', n=B, formats=('nifti',), matrix=96, progress=False, workers=1)
        cases, _ = find_cases(d / 'cohort')
        lab = read_clinical(d / 'cohort' / 'clinical.csv')
        prepare_cohort(cases, lab, d / 'cache', spacing=2.0 if S <= 32 else 1.0, size=S, progress=False)
        ds = CohortDataset(d / 'cache')
        dl = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, num_workers=0)
        def fetch(): return next(iter(dl))
        x, y = fetch(); x, y = x.to(device), y.to(device)
        torch.manual_seed(0)
        model = FGFNet3D().to(device).train(); opt = torch.optim.AdamW(model.parameters())
        lossf = torch.nn.BCEWithLogitsLoss()
        def step():
            loss = lossf(model(x), y); opt.zero_grad(); loss.backward(); opt.step(); sync(device)
        t_fetch, t_step = timeit_ab(fetch, step, P['reps'] + 2)
    r = t_fetch / t_step
    return _row('6 fetch a cached batch vs training step', f'batch {B}x2x{S}^3 from prepare_cohort cache (.npy)',
                t_fetch, t_step, '<= 10%', r <= 0.10, 'DataLoader num_workers=0, page cache warm', reps=P['reps'])

# ---------------------------------------------------------------- 7
_MEM = r'''
import resource, sys, json, torch
from bench.common import NAMED12, LazyCases
from fgflow.model import FGFNet3D
from fgflow.features import FeatureSet, random_linear_features
from fgflow.flow import fgf_measure
n, S = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0); model = FGFNet3D().eval(); data = LazyCases(n, S)
fs = FeatureSet(NAMED12); nz = random_linear_features(100, (2, S, S, S), seed=0)
fgf_measure(model, LazyCases(2, S), fs, noise=nz, progress=False, steps_per_line=2, max_steps=3, n_boot=50)
def status(key):  # VmHWM is the peak of this process's own memory map (ru_maxrss would carry over the parent's across exec)
    for l in open('/proc/self/status'):
        if l.startswith(key): return int(l.split()[1])
r0 = status('VmRSS')
res = fgf_measure(model, data, fs, noise=nz, progress=False, steps_per_line=2, max_steps=3, n_boot=50)
peak = status('VmHWM')
print(json.dumps(dict(n=n, rss_before_kb=r0, peak_kb=peak, points=len(res.per_point))))
'''

def row7(P, device):
    "Peak memory of fgf_measure for N1 vs N2 cases (a fresh process per size)."
    S, sizes, out = P['r7_size'], P['r7_n'], {}
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
    t = {}
    for n in sizes:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, '-c', _MEM, str(n), str(S)], capture_output=True, text=True, env=env, cwd=root)
        if p.returncode: raise RuntimeError(p.stderr[-2000:])
        out[n] = json.loads(p.stdout.strip().splitlines()[-1]); t[n] = time.perf_counter() - t0
    a, b = (out[n]['peak_kb'] / 1024 for n in sizes)
    ia, ib = ((out[n]['peak_kb'] - out[n]['rss_before_kb']) / 1024 for n in sizes)
    r = b / a
    return _row(f'7 peak memory of fgf_measure, {sizes[1]} vs {sizes[0]} cases', f'2x{S}^3 cases made on demand, 12+100 '
                f'features, max_steps=3', None, None, 'within 10%', abs(r - 1) <= 0.10,
                f'peak RSS (VmHWM) {b:.0f} MiB vs {a:.0f} MiB; growth during the call {ib:.0f} vs {ia:.0f} MiB (one process each; {t[sizes[1]]:.0f} s / {t[sizes[0]]:.0f} s)',
                ratio=r, reps=1)

# ---------------------------------------------------------------- 8
def row8(P, device):
    "fgflow demo wall time, and training time per epoch vs cohort size."
    from fgflow.train import train, TensorCohort
    rows = []
    cfg = P['r8_demo']
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, '-c', 'import sys; from fgflow.cli import main; sys.exit(main())', 'demo', f'--{cfg}', '--quiet', '--out', d],
                           capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
        t_demo = time.perf_counter() - t0
    ok = p.returncode == 0
    note = 'ran' if ok else f'FAILED (exit {p.returncode}): ' + ' '.join(p.stderr.strip().splitlines()[-1:])[:200]
    rows.append(_row(f'8a `fgflow demo --{cfg}` wall time', 'its own config', t_demo, None, 'runs', ok, note, ratio=None, reps=1))
    S, times = P['r8_size'], {}
    for n in P['r8_n']:
        x = make_batch(n, S, seed=n); y = (torch.arange(n) % 3 == 0).float()
        nv = max(8, n // 5)
        xv = make_batch(nv, S, seed=n + 1); yv = (torch.arange(nv) % 2).float()
        torch.manual_seed(0)
        r = train(FGFNet3D(width=4, depth=3), TensorCohort(x, y), TensorCohort(xv, yv), epochs=P['r8_epochs'],
                  batch_size=8, progress=False, device=device)
        times[n] = float(r.history['time'].iloc[-1])  # the last epoch: the first carries warm-up
    base = P['r8_n'][0]
    for n in P['r8_n']:
        rows.append(_row(f'8b training time per epoch, {n} cases', f'2x{S}^3, width 4 depth 3, batch 8, valid {max(8, n // 5)}',
                         times[n], times[base], f'~{n / base:g}x (linear)', None,
                         f'last of {P["r8_epochs"]} epochs (TrainResult.history.time), training + validation', reps=P['r8_epochs']))
    return rows
