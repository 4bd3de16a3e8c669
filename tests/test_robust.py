"Robustness: unsafe or cut checkpoints are refused; `fgflow demo --quick` is reproducible; cohort-level failures skip one patient with a reason. Kill tests: tests/test_kill.py."
import hashlib, json, os, signal, subprocess, sys, textwrap, time
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

# ---- same seed, two fresh processes and folders: the same numbers ---------------------------------------
def test_demo_quick_same_seed_two_fresh_runs_identical_numbers(tmp_path):
    """`fgflow demo --quick` twice (two processes at once, separate folders, same seed): report.json identical but for
    timings and the output folder. tests/test_cli.py reruns the tiny demo in one folder and process (cohort reused)."""
    outs = [tmp_path / f'run{i}' for i in (1, 2)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    ps = [subprocess.Popen([sys.executable, '-m', 'fgflow.cli', 'demo', '--quick', '--out', str(o), '--seed', '3', '--quiet'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for o in outs]
    try:
        for p in ps:
            o, e = p.communicate(timeout=400); assert p.returncode == 0, e[-2000:]
    finally:
        for p in ps:
            if p.poll() is None: p.kill(); p.communicate()
    r = [json.loads((o / 'report.json').read_text().replace(json.dumps(str(o))[1:-1], '<out>')) for o in outs]
    t = [x.pop('timings') for x in r]
    assert t[0]['total'] > 0 and t[1]['total'] > 0
    assert r[0]['config_name'] == 'quick' and r[0]['seed'] == 3 and not r[0]['data']['cohort_reused']
    assert set(r[0]) == set(r[1]) == {'command', 'config_name', 'seed', 'settings', 'environment', 'data', 'models', 'measure', 'figures'}
    for k in r[0]: assert r[0][k] == r[1][k], k            # AUCs, test scores, histories, measure tables, split, ...
    m = r[0]['models']
    assert len(m['plain']['test_scores']) == len(r[0]['data']['split']['test']) > 0            # numbers were compared,
    assert len(m['regularized']['history']['loss']) == r[0]['settings']['epochs'] and r[0]['measure']['plain']   # not empty lists
    assert m['plain']['checkpoint'] == '<out>/runs/plain/best.pt'

# ---- cohort-level failures: one bad patient is skipped with its reason (or prepared with a warning), the rest prepared ----
import shutil, warnings
import numpy as np
import pydicom

BAD = 'HN-SYN-002'
KW = dict(spacing=4.0, size=16, progress=False)

@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    "A 4-patient DICOM phantom cohort and its cache prepared untouched (the reference)."
    from fgflow.phantoms import make_cohort
    from fgflow.data import find_cases, prepare_cohort, read_clinical
    base = tmp_path_factory.mktemp('cohort'); root = base / 'root'
    make_cohort(root, n=4, seed=0, formats=('dicom',), progress=False, matrix=64, workers=1)
    cases, skipped = find_cases(root, progress=False)
    rep = prepare_cohort(cases, read_clinical(root / 'clinical.csv'), base / 'ref', **KW)
    assert skipped == [] and rep.skipped == {} and len(rep.prepared) == 4
    return root, pd.read_csv(base / 'ref' / 'index.csv').set_index('id')

def _copy(pristine, tmp_path) -> Path:
    root = tmp_path / 'root'; shutil.copytree(pristine[0], root); return root

def _cts(root, pid=BAD): return sorted((root / 'dicom' / pid).glob('*/1-CT/*.dcm'))
def _rs(root, pid=BAD): return next((root / 'dicom' / pid).glob('*/2-RTSTRUCT/*.dcm'))

def _prepare(root, tmp_path):
    from fgflow.data import find_cases, prepare_cohort, read_clinical
    found = find_cases(root, progress=False); cases, skipped = found
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        rep = prepare_cohort(found, read_clinical(root / 'clinical.csv'), tmp_path / 'cache', **KW)
    return rep, skipped, [str(x.message) for x in w]

def _rest_prepared(rep, pristine, tmp_path, bad_prepared:bool):
    "The other patients are prepared, with the same cache files as the untouched cohort."
    ref = pristine[1]; idx = pd.read_csv(tmp_path / 'cache' / 'index.csv').set_index('id')
    others = [i for i in ref.index if i != BAD]
    assert rep.prepared == sorted(others + [BAD] * bad_prepared)
    assert list(idx.index) == rep.prepared
    assert (idx.loc[others, 'sha256'] == ref.loc[others, 'sha256']).all()
    return idx

def _gtv(rs) -> tuple:
    "The RTSTRUCT dataset and its GTV ROIContour item."
    ds = pydicom.dcmread(rs)
    num = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName.lower().startswith('gtv'))
    return ds, next(rc for rc in ds.ROIContourSequence if rc.ReferencedROINumber == num)

def test_gtv_touching_the_ct_border_is_prepared_with_air_padding_and_a_warning(pristine, tmp_path):
    """A tumour at the edge of the field of view: the user expects the case in the cohort (dropping it would bias the
    cohort against large or peripheral tumours), the crop filled with air (-1000 HU, channel 0 = 0) beyond the scan, and
    to be told: a warning naming the patient and the face, and `gtv_at_border` in index.csv."""
    root = _copy(pristine, tmp_path)
    ds, gtv = _gtv(_rs(root))
    ct0 = pydicom.dcmread(_cts(root)[0]); x0, ps = float(ct0.ImagePositionPatient[0]), float(ct0.PixelSpacing[1])
    xmin = min(min(c.ContourData[0::3]) for c in gtv.ContourSequence)
    for c in gtv.ContourSequence:        # move the GTV left until it starts 3 mm outside the image (column 0 at x0)
        d = np.array(c.ContourData, float).reshape(-1, 3); d[:, 0] += x0 - 3.0 - xmin; c.ContourData = [f'{v:.4f}' for v in d.ravel()]
    ds.save_as(_rs(root))
    rep, skipped, warns = _prepare(root, tmp_path)
    assert skipped == [] and rep.skipped == {}
    idx = _rest_prepared(rep, pristine, tmp_path, bad_prepared=True)
    assert [w for w in warns if w.startswith(BAD)] == [f'{BAD}: the GTV touches the edge of the CT (column i=0) and may extend '
                                                      'outside the scan; prepared, the crop padded with air (-1000 HU) beyond the edge']
    assert idx.loc[BAD, 'gtv_at_border'] == 'column i=0' and (idx.drop(BAD)['gtv_at_border'].fillna('') == '').all()
    x = np.load(tmp_path / 'cache' / idx.loc[BAD, 'file'])
    crop_x = json.loads(idx.loc[BAD, 'centroid'])[0] - (KW['size'] - 1) / 2 * KW['spacing'] + KW['spacing'] * np.arange(KW['size'])
    out = crop_x < x0 - ps - 1e-6                       # crop columns (axis 2 = +x) wholly outside the scan
    assert 2 <= out.sum() < KW['size'] // 2, out
    assert (x[0][:, :, out] == 0).all() and (x[1][:, :, out] == 0).all()   # air, no GTV
    assert x[1][:, :, ~out].max() > 0.5 and x[0][:, :, ~out].max() > 0      # the GTV and tissue inside the scan

def test_contour_on_a_slice_missing_from_the_ct_is_skipped_naming_roi_and_z(pristine, tmp_path):
    "The CT export lost its top slices (z >= 6 mm) but the GTV has contours there: skipped, reason names the ROI and z."
    root = _copy(pristine, tmp_path)
    for f in _cts(root):
        if float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) >= 6: f.unlink()
    rep, skipped, warns = _prepare(root, tmp_path)
    _rest_prepared(rep, pristine, tmp_path, bad_prepared=False)
    assert rep.skipped == {BAD: "RS.1.dcm: ROI 'gtv': contour at slice position 11.00 is off the image grid (0..10), z=6.00 mm"}

def test_contour_between_slices_is_put_on_the_nearest_slice_with_a_warning(pristine, tmp_path):
    "A GTV contour 2 mm (1/3 slice) off its slice plane: prepared, a warning names the RTSTRUCT and the ROI."
    root = _copy(pristine, tmp_path)
    ds, gtv = _gtv(_rs(root))
    c = gtv.ContourSequence[0]; d = np.array(c.ContourData, float).reshape(-1, 3); d[:, 2] += 2.0; c.ContourData = [f'{v:.4f}' for v in d.ravel()]
    ds.save_as(_rs(root))
    rep, skipped, warns = _prepare(root, tmp_path)
    idx = _rest_prepared(rep, pristine, tmp_path, bad_prepared=True)
    assert "RS.1.dcm: ROI 'gtv': 1 contour(s) lie between slice planes (up to 0.33 slice off): put on the nearest slice" in warns
    assert idx.loc[BAD, 'sha256'] == pristine[1].loc[BAD, 'sha256']   # same slice as before: the same crop

def test_identical_duplicate_slice_is_dropped_with_a_warning(pristine, tmp_path):
    "A slice exported twice (same position, same pixels, another file name): prepared as if single, with a warning."
    root = _copy(pristine, tmp_path)
    f = _cts(root)[5]; shutil.copy(f, f.with_name('copy_of_' + f.name))
    rep, skipped, warns = _prepare(root, tmp_path)
    idx = _rest_prepared(rep, pristine, tmp_path, bad_prepared=True)
    assert f'duplicate slice copy_of_{f.name} (same position and pixels as {f.name}) dropped' in warns
    assert idx.loc[BAD, 'sha256'] == pristine[1].loc[BAD, 'sha256']   # the same crop as without the copy

def test_conflicting_duplicate_slices_are_skipped_naming_both_files(pristine, tmp_path):
    "Two different images at the same position (a re-export with other pixels): which one is right is unknowable; skipped."
    root = _copy(pristine, tmp_path)
    f = _cts(root)[5]; ds = pydicom.dcmread(f)
    a = ds.pixel_array.copy(); a[10:20, 10:20] += 50; ds.PixelData = a.tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    g = f.with_name('other_' + f.name); ds.save_as(g)
    rep, skipped, warns = _prepare(root, tmp_path)
    _rest_prepared(rep, pristine, tmp_path, bad_prepared=False)
    assert rep.skipped == {BAD: f'two different slices at the same position [-73.515, -73.515, -30.0]: {f} and {g}'}
    assert float(ds.ImagePositionPatient[2]) == -30.0

def test_empty_gtv_is_skipped_naming_the_roi_and_file(pristine, tmp_path):
    "A GTV whose only contour is a sliver between voxel centres: no voxel in the mask; skipped, reason names ROI and RTSTRUCT."
    root = _copy(pristine, tmp_path)
    ds, gtv = _gtv(_rs(root))
    ct0 = pydicom.dcmread(_cts(root)[0]); x0, y0 = map(float, ct0.ImagePositionPatient[:2]); ps = float(ct0.PixelSpacing[0])
    c = gtv.ContourSequence[0]; z = float(c.ContourData[2])
    xs, ys = x0 + 30.3 * ps, y0 + 30.3 * ps      # a triangle inside one pixel, away from every pixel centre
    c.ContourData = [xs, ys, z, xs + 0.3 * ps, ys, z, xs, ys + 0.3 * ps, z]; c.NumberOfContourPoints = 3
    gtv.ContourSequence = pydicom.sequence.Sequence([c])
    ds.save_as(_rs(root))
    rep, skipped, warns = _prepare(root, tmp_path)
    _rest_prepared(rep, pristine, tmp_path, bad_prepared=False)
    assert rep.skipped == {BAD: "empty GTV: ROI '^GTV' of RS.1.dcm covers no voxel centre of the CT "
                                "(contours smaller than a voxel or outside the image)"}

def test_no_gtv_roi_and_no_rtstruct_are_skipped_with_reasons(pristine, tmp_path, capsys):
    "An RTSTRUCT without a GTV ROI leaves its patient without a case (find_cases says why, prepare_cohort reports it); a patient without RTSTRUCT is skipped by find_cases, and `fgflow prepare` prints both."
    from fgflow.cli import main
    root = _copy(pristine, tmp_path)
    ds, gtv = _gtv(_rs(root))
    for r in ds.StructureSetROISequence:
        if r.ROINumber == gtv.ReferencedROINumber: r.ROIName = 'PTV'
    ds.save_as(_rs(root))
    rep, skipped, warns = _prepare(root, tmp_path)
    _rest_prepared(rep, pristine, tmp_path, bad_prepared=False)
    assert rep.skipped[BAD].startswith(f"no RTSTRUCT of patient {BAD} has an ROI matching '^GTV'") and "'PTV'" in rep.skipped[BAD], rep.skipped[BAD]
    shutil.rmtree(_rs(root).parent)                     # now no RTSTRUCT at all
    rc = main(['prepare', '--dicom', str(root / 'dicom'), '--clinical', str(root / 'clinical.csv'), '--out', str(tmp_path / 'cli'),
               '--size', '16', '--spacing', '4', '--quiet'])
    out = capsys.readouterr().out
    assert rc == 0 and f'skipped {BAD}: no RTSTRUCT for patient {BAD} (1 CT series found)' in out, out
    assert 'prepared 3 cases' in out and pd.read_csv(tmp_path / 'cli' / 'index.csv').id.tolist() == ['HN-SYN-001', 'HN-SYN-003', 'HN-SYN-004']

def test_truncated_cache_file_fails_clearly_at_load_and_is_rebuilt_by_prepare(pristine, tmp_path):
    from fgflow.data import CohortDataset, CohortError, find_cases, prepare_cohort, read_clinical
    root, ref = pristine; cache = tmp_path / 'cache'; shutil.copytree(root.parent / 'ref', cache)
    f = cache / 'cases' / 'HN-SYN-001.npy'; b = f.read_bytes(); f.write_bytes(b[:len(b) // 3])
    ds = CohortDataset(cache)
    with pytest.raises(CohortError, match=r'HN-SYN-001\.npy: cannot read cached array \(.*\)'): ds[0]
    assert ds[1][0].shape == (2, 16, 16, 16)                                   # the other cases still load
    rep = prepare_cohort(find_cases(root, progress=False)[0], read_clinical(root / 'clinical.csv'), cache, **KW)
    assert rep.reused == ['HN-SYN-002', 'HN-SYN-003', 'HN-SYN-004'] and f.read_bytes() == b   # rebuilt, bit-identical
