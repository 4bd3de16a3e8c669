"Round-trip tests of fgflow.phantoms through DICOM/NIfTI readers (small 64x64 cohorts)."
import re, shutil, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pydicom, nibabel as nib, pytest
from matplotlib.path import Path as MPath
from fgflow.phantoms import (make_cohort, make_patient, ground_truth, label_probabilities, LABEL_RULES, FACTORS, factor_sd,
                             factor_table, patient_base, render, intervene, reference_point)

N, M = 3, 64

@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp('phantoms')
    return root, make_cohort(root, n=N, seed=3, matrix=M, progress=False)

def _series(root, pid):
    st = next((root / 'dicom' / pid).iterdir())
    return sorted((st / '1-CT').glob('*.dcm')), next((st / '2-RTSTRUCT').glob('*.dcm'))

def _nifti(root, pid):
    ct, m = (nib.load(str(root / 'nifti' / f'{pid}_{p}.nii.gz')) for p in ('ct', 'gtv'))
    return np.asarray(ct.dataobj).transpose(2, 1, 0), np.asarray(m.dataobj).transpose(2, 1, 0) > 0, ct.affine

def _dice(a, b): return 2 * (a & b).sum() / (a.sum() + b.sum())

def test_layout_and_table(cohort):
    root, df = cohort
    ids = [f'HN-SYN-{i:03d}' for i in range(1, N + 1)]
    assert list(df['Patient #']) == ids
    for c in ['Distant', 'volume', 'elongation', 'flatness', 'major_axis_length', 'mean', 'variance',
              'centroid_x', 'centroid_y', 'centroid_z'] + [f'factor_{k}' for k in FACTORS]: assert c in df
    pd.testing.assert_frame_equal(pd.read_csv(root / 'clinical.csv'), df, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_excel(root / 'clinical.xlsx'), df, check_dtype=False)
    for pid in ids:
        cts, rs = _series(root, pid)
        assert len(cts) > 10 and rs.exists() and (root / 'nifti' / f'{pid}_gtv.nii.gz').exists()
    assert set(df.Distant) <= {0, 1}

@pytest.mark.skipif(shutil.which('dciodvfy') is None, reason='dciodvfy (dicom3tools) not installed')
def test_dciodvfy(cohort):
    root, _ = cohort
    cts, rs = _series(root, 'HN-SYN-001')
    for f in (cts[len(cts) // 2], rs):
        out = subprocess.run(['dciodvfy', str(f)], capture_output=True, text=True)
        text = out.stdout + out.stderr
        assert ('CTImage' if f in cts else 'RTStructureSet') in text
        assert not [l for l in text.splitlines() if l.startswith('Error')], text

def test_dicom_matches_nifti_and_truth(cohort):
    "Independent of fgflow.io: pydicom + point-in-polygon rasterization of the contours."
    root, df = cohort
    for _, row in df.iterrows():
        pid = row['Patient #']; cts, rs = _series(root, pid)
        dss = sorted((pydicom.dcmread(f) for f in cts), key=lambda d: float(d.ImagePositionPatient[2]))
        hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
        nhu, nmask, _ = _nifti(root, pid)
        assert np.abs(hu - nhu).max() <= 1
        assert dss[0].Modality == 'CT' and dss[0].SOPClassUID == '1.2.840.10008.5.1.4.1.1.2'
        r = pydicom.dcmread(rs)
        names = {s.ROINumber: s.ROIName for s in r.StructureSetROISequence}
        gtv = [n for n, s in names.items() if re.match(r'^GTV', s, re.I)]
        assert len(gtv) == 1 and len(names) == 2 and names[gtv[0]] == row['gtv_roi']
        assert r.StructureSetROISequence[0].ReferencedFrameOfReferenceUID == dss[0].FrameOfReferenceUID
        uid_z = {d.SOPInstanceUID: k for k, d in enumerate(dss)}
        (px, py), (x0, y0) = map(float, dss[0].PixelSpacing[::-1]), map(float, dss[0].ImagePositionPatient[:2])
        jj, ii = np.mgrid[:hu.shape[1], :hu.shape[2]]
        pts = np.c_[x0 + ii.ravel() * px, y0 + jj.ravel() * py]
        mask = np.zeros(hu.shape, bool)
        rc = next(c for c in r.ROIContourSequence if c.ReferencedROINumber == gtv[0])
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == 'CLOSED_PLANAR'
            xyz = np.asarray(c.ContourData, float).reshape(-1, 3)
            assert len(xyz) == c.NumberOfContourPoints and not np.allclose(xyz[0], xyz[-1])
            k = uid_z[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            assert np.allclose(xyz[:, 2], float(dss[k].ImagePositionPatient[2]))
            area = 0.5 * np.sum(xyz[:, 0] * np.roll(xyz[:, 1], -1) - np.roll(xyz[:, 0], -1) * xyz[:, 1])
            assert area > 0                                      # one orientation for all outer contours
            mask[k] ^= MPath(xyz[:, :2]).contains_points(pts).reshape(hu.shape[1:])
        assert _dice(mask, nmask) >= 0.97
        vox = px * py * float(dss[0].SliceThickness)
        assert abs(nmask.sum() * vox / row['volume'] - 1) < 0.03
        gt = ground_truth(nhu, nmask, dict(spacing=(float(dss[0].SliceThickness), py, px),
                                           origin=np.array([x0, y0, float(dss[0].ImagePositionPatient[2])])))
        np.testing.assert_allclose([gt[k] for k in ('volume', 'elongation', 'mean', 'centroid_z')],
                                   row[['volume', 'elongation', 'mean', 'centroid_z']].to_numpy(float), rtol=1e-6)

def test_ground_truth_matches_pyradiomics():
    radiomics = pytest.importorskip('radiomics'); import SimpleITK as sitk
    from radiomics import shape, firstorder
    p = make_patient(5, 1, matrix=64); g = p['geom']
    img, msk = sitk.GetImageFromArray(p['hu'].astype(np.float64)), sitk.GetImageFromArray(p['gtv'].astype(np.uint8))
    for im in (img, msk): im.SetSpacing(tuple(float(s) for s in g['spacing'][::-1]))
    r = {}
    for cls in (shape.RadiomicsShape, firstorder.RadiomicsFirstOrder):
        f = cls(img, msk); f.enableAllFeatures(); r.update({k: float(v) for k, v in f.execute().items()})
    gt = ground_truth(p['hu'], p['gtv'], g)
    np.testing.assert_allclose([gt[k] for k in ('volume', 'elongation', 'flatness', 'major_axis_length', 'least_axis_length', 'mean', 'variance')],
                               [r[k] for k in ('VoxelVolume', 'Elongation', 'Flatness', 'MajorAxisLength', 'LeastAxisLength', 'Mean', 'Variance')], rtol=1e-5)

def test_readers_roundtrip(cohort):
    io = pytest.importorskip('fgflow.io')
    root, df = cohort
    for _, row in df.iterrows():
        pid = row['Patient #']; cts, rs = _series(root, pid)
        ct = io.read_dicom_series(cts)
        m_rt = io.rtstruct_mask(rs, ct)
        nct, nm = io.read_nifti(root / 'nifti' / f'{pid}_ct.nii.gz'), io.read_nifti(root / 'nifti' / f'{pid}_gtv.nii.gz')
        np.testing.assert_allclose(ct.affine, nct.affine, atol=1e-3)
        assert np.abs(ct.array - nct.array).max() <= 1
        nmask = nm.array > 0.5
        assert _dice(m_rt, nmask) >= 0.97
        assert abs(m_rt.sum() * np.prod(ct.spacing) / row['volume'] - 1) < 0.03

def test_data_pipeline(cohort, tmp_path):
    data = pytest.importorskip('fgflow.data')
    root, df = cohort
    ids = [f'HN-SYN-{i:03d}' for i in range(1, N + 1)]
    for kind in ('dicom', 'nifti'):
        cases, skipped = data.find_cases(root / kind)
        assert not skipped and sorted(c.id for c in cases) == ids and {c.kind for c in cases} == {kind}, skipped
    cases, skipped = data.find_cases(root)                 # both formats: one case per id, the copies reported
    assert sorted(c.id for c in cases) == ids and len(skipped) == N
    assert all('already found' in why for _, why in skipped)
    clin = data.read_clinical(root / 'clinical.csv')
    assert clin.loc[ids, 'label'].tolist() == df.Distant.tolist()
    dcm = [c for c in cases if c.kind == 'dicom']
    rep = data.prepare_cohort(dcm, clin['label'], tmp_path / 'cache', size=32, spacing=2.0, progress=False)
    assert sorted(rep.prepared) == ids and not rep.skipped

def test_determinism(tmp_path):
    a = make_cohort(tmp_path / 'a', n=2, seed=7, matrix=48, progress=False, workers=1)
    b = make_cohort(tmp_path / 'b', n=2, seed=7, matrix=48, progress=False, workers=2)
    c = make_cohort(tmp_path / 'c', n=2, seed=8, matrix=48, progress=False, workers=1)
    pd.testing.assert_frame_equal(a, b)
    files = sorted(p.relative_to(tmp_path / 'a') for p in (tmp_path / 'a' / 'dicom').rglob('*.dcm'))
    assert files == sorted(p.relative_to(tmp_path / 'b') for p in (tmp_path / 'b' / 'dicom').rglob('*.dcm'))
    for f in files: assert (tmp_path / 'a' / f).read_bytes() == (tmp_path / 'b' / f).read_bytes(), f
    assert (tmp_path / 'a/clinical.csv').read_bytes() == (tmp_path / 'b/clinical.csv').read_bytes()
    for pid in a['Patient #']: np.testing.assert_array_equal(_nifti(tmp_path / 'a', pid)[0], _nifti(tmp_path / 'b', pid)[0])
    assert not a[['volume', 'mean']].equals(c[['volume', 'mean']])
    f0 = files[0]
    assert (tmp_path / 'a' / f0).read_bytes() != (tmp_path / 'c' / f0).read_bytes()

def test_label_rules_follow_their_factors():
    rng = np.random.default_rng(0)
    fac = pd.DataFrame({k: rng.uniform(lo, hi, 4000) for k, (lo, hi, *_) in FACTORS.items()})
    for rule, spec in LABEL_RULES.items():
        p = label_probabilities(fac, rule, 0.3)
        assert abs(p.mean() - 0.3) < 0.02
        for k in fac:
            r = np.corrcoef(fac[k], p)[0, 1] if p.std() > 0 else 0.0
            w = spec['weights'].get(k, 0)
            assert (abs(r) > 0.3 and np.sign(r) == np.sign(w)) if w else abs(r) < 0.1, (rule, k, r)

def test_table_factors_give_the_labels(cohort):
    _, df = cohort
    fac = factor_table(df)
    assert list(fac) == list(FACTORS)
    np.testing.assert_allclose(label_probabilities(fac, 'volume+elongation'), df.p_distant, rtol=1e-9)
    for i in range(N): assert make_patient(3, i, M)['factors'] == pytest.approx(fac.iloc[i].to_dict(), abs=1e-12)

# what a factor must not change: measured features that belong to other factors (and their tolerance)
_KEEP = {'size': ['mean', 'variance'], 'elongation': ['mean', 'variance', 'centroid_x', 'centroid_y', 'centroid_z'],
         'flatness': ['mean', 'variance', 'centroid_x', 'centroid_y', 'centroid_z'],
         'mean_hu': ['volume', 'elongation', 'flatness', 'variance', 'centroid_x', 'centroid_y', 'centroid_z'],
         'hu_sd': ['volume', 'elongation', 'flatness', 'mean', 'centroid_x', 'centroid_y', 'centroid_z'],
         'pos_x': ['mean', 'variance'], 'pos_y': ['mean', 'variance'], 'pos_z': ['mean', 'variance']}
_TOL = dict(mean=1e-6, variance=1e-6, volume=1e-9, elongation=1e-12, flatness=1e-12, centroid_x=0.6, centroid_y=0.6, centroid_z=0.6)

@pytest.mark.parametrize('index', [0, 5])
def test_interventions_move_their_factor_only(index):
    base = patient_base(11, index, 96)
    p = render(base); g0 = ground_truth(p['hu'], p['gtv'], p['geom'])
    for f in FACTORS:
        q, d = intervene(base, f, 1.0)
        assert abs(d) == pytest.approx(1.0) and q['factors'][f] - p['factors'][f] == pytest.approx(d * factor_sd(f))
        assert {k: v for k, v in q['factors'].items() if k != f} == {k: v for k, v in p['factors'].items() if k != f}
        g1 = ground_truth(q['hu'], q['gtv'], q['geom'])
        for k in _KEEP[f]: assert abs(g1[k] - g0[k]) <= _TOL[k], (f, k, g0[k], g1[k])
        assert np.array_equal(q['hu'][~(q['gtv'] | p['gtv'])], p['hu'][~(q['gtv'] | p['gtv'])])   # the anatomy is untouched
    q, d = intervene(base, 'size', 1.0)
    assert ground_truth(q['hu'], q['gtv'], q['geom'])['volume'] / g0['volume'] == pytest.approx(np.exp(3 * d * factor_sd('size')), rel=0.1)
    q, d = intervene(base, 'mean_hu', 1.0)
    assert np.allclose(q['hu'][p['gtv']] - p['hu'][p['gtv']], d * factor_sd('mean_hu'))
    for ax in 'xyz':
        q, d = intervene(base, f'pos_{ax}', 1.0)
        assert ground_truth(q['hu'], q['gtv'], q['geom'])[f'centroid_{ax}'] - g0[f'centroid_{ax}'] == pytest.approx(d * factor_sd(f'pos_{ax}'), abs=0.6)
        assert np.array_equal(reference_point(q['geom'], base['canal']), reference_point(p['geom'], base['canal']))

def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown label_rule 'size'"): make_cohort(tmp_path, n=2, label_rule='size')
    with pytest.raises(ValueError, match=r"unknown formats \['png'\]"): make_cohort(tmp_path, n=2, formats=('png',))
    with pytest.raises(ValueError, match='positive_rate must lie in'): label_probabilities(pd.DataFrame({'size': [1., 2]}), 'null', 1.5)
    with pytest.raises(ValueError, match="unknown factor 'colour'"): intervene(patient_base(0, 0, 48), 'colour')
    with pytest.raises(ValueError, match="lacks the factor columns"): factor_table(pd.DataFrame({'volume': [1.]}))
