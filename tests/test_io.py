"Integration tests of fgflow.io: DICOM series written here, RTSTRUCT round trips, NIfTI."
import re, warnings
from pathlib import Path

import numpy as np, pydicom, pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage import measure
from scipy import ndimage

from fgflow.io import (FGFlowError, DicomError, RTStructError, NiftiError, Volume, read_dicom_series, read_rtstruct,
                       rtstruct_mask, read_nifti, write_nifti, atomic_write)

CT_UID, RS_UID = '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.5.1.4.1.1.481.3'


def _meta(sop_class, sop_uid):
    fm = FileMetaDataset(); fm.MediaStorageSOPClassUID = sop_class; fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian; return fm


def write_series(folder, hu, spacing=(2.5, 0.8, 0.7), origin=(-10., -20., 30.), iop=(1, 0, 0, 0, 1, 0), *,
                 slope=1.0, intercept=-1024.0, uint16=True, series_uid=None, for_uid=None, skip=(), tilt=0.0,
                 names=None, shuffle_seed=0, sliceloc_sign=-1, desc='test CT'):
    "Write hu (K,J,I) as a CT series of one file per slice; returns (files, series_uid, for_uid, positions)."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid(); for_uid = for_uid or generate_uid(); study = generate_uid()
    r, c = np.array(iop[:3], float), np.array(iop[3:], float); n = np.cross(r, c)
    K, J, I = hu.shape; files, pos = [], []
    slopes = np.broadcast_to(np.asarray(slope, float), (K,)); icpts = np.broadcast_to(np.asarray(intercept, float), (K,))
    order = np.random.default_rng(shuffle_seed).permutation(K)
    for k in range(K):
        if k in skip: continue
        p = np.array(origin) + k * spacing[0] * n + k * np.tan(np.radians(tilt)) * spacing[0] * c
        stored = np.round((hu[k] - icpts[k]) / slopes[k])
        ds = Dataset(); uid = generate_uid(); ds.file_meta = _meta(CT_UID, uid)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT_UID, uid, 'CT'
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = 'P1', study, series_uid, for_uid
        ds.SeriesDescription = desc; ds.InstanceNumber = int(order[k]) + 1
        ds.ImagePositionPatient = [f'{v:.6f}' for v in p]; ds.ImageOrientationPatient = [f'{v:.8f}' for v in iop]
        ds.SliceLocation = f'{sliceloc_sign * float(p @ n):.4f}'
        ds.PixelSpacing = [f'{spacing[1]}', f'{spacing[2]}']; ds.SliceThickness = f'{spacing[0]}'
        ds.Rows, ds.Columns = J, I; ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = 'MONOCHROME2'
        ds.BitsAllocated = ds.BitsStored = 16; ds.HighBit = 15; ds.PixelRepresentation = 0 if uint16 else 1
        ds.RescaleSlope, ds.RescaleIntercept = f'{slopes[k]}', f'{icpts[k]}'
        ds.PixelData = stored.astype(np.uint16 if uint16 else np.int16).tobytes()
        f = folder / (names[k] if names else f'img_{order[k]:04d}.dcm')
        ds.save_as(f, enforce_file_format=True); files.append(f); pos.append(p)
    return files, series_uid, for_uid, np.array(pos)


@pytest.fixture
def hu():
    rng = np.random.default_rng(0)
    return np.round(rng.uniform(-1000, 2000, size=(6, 9, 7))).astype(np.float32)


# ---------- DICOM series ----------
def test_ct_small_hu_and_spacing():
    f = get_testdata_file('CT_small.dcm'); v = read_dicom_series([f])
    assert v.array.dtype == np.float32 and v.shape == (1, 128, 128)
    np.testing.assert_array_equal(v.array[0], pydicom.dcmread(f).pixel_array.astype(np.float32) - 1024)
    np.testing.assert_allclose(v.spacing, (5.0, 0.661468, 0.661468))


def test_truncated_and_not_dicom(tmp_path):
    with pytest.raises(DicomError, match='MR_truncated.dcm'): read_dicom_series([get_testdata_file('MR_truncated.dcm')])
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(DicomError, match='notes.txt'): read_dicom_series(tmp_path)
    assert issubclass(DicomError, FGFlowError) and issubclass(FGFlowError, ValueError)


def test_shuffled_uint16_intercept_rows_ne_cols(tmp_path, hu):
    files, uid, for_uid, pos = write_series(tmp_path, hu, sliceloc_sign=-1)
    v = read_dicom_series(tmp_path)     # file names and InstanceNumber are shuffled, SliceLocation has the other sign
    np.testing.assert_array_equal(v.array, hu)   # uint16 with intercept -1024: -1000 HU is not wrapped
    np.testing.assert_allclose(v.spacing, (2.5, 0.8, 0.7))
    np.testing.assert_allclose(v.voxel_to_world([[0, 0, k] for k in range(6)]), pos, atol=1e-5)
    assert v.meta['series_uid'] == uid and v.meta['frame_of_reference_uid'] == for_uid
    v2 = read_dicom_series(list(reversed(files)))
    np.testing.assert_array_equal(v2.array, v.array)


def test_per_slice_rescale(tmp_path, hu):
    write_series(tmp_path, hu, slope=[1, 2, 0.5, 1, 4, 1], intercept=[-1024, -2048, -1000, 0, -3000, -1024], uint16=False)
    np.testing.assert_allclose(read_dicom_series(tmp_path).array, hu, atol=2.0)   # slope 4 rounds to 4 HU steps


def test_oblique_orientation(tmp_path, hu):
    a = np.radians(30); iop = (np.cos(a), np.sin(a), 0, 0, 0, -1)    # rows along a rotated x, columns downward
    files, *_, pos = write_series(tmp_path, hu, iop=iop)
    v = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(v.array, hu)
    np.testing.assert_allclose(v.voxel_to_world([[0, 0, k] for k in range(6)]), pos, atol=1e-5)
    np.testing.assert_allclose(v.affine[:3, 0], 0.7 * np.array(iop[:3]), atol=1e-6)
    np.testing.assert_allclose(v.affine[:3, 1], 0.8 * np.array(iop[3:]), atol=1e-6)
    np.testing.assert_allclose(v.world_to_voxel(v.voxel_to_world([[1, 2, 3]])), [[1, 2, 3]], atol=1e-9)


def test_missing_slice_named(tmp_path, hu):
    names = [f's{k}.dcm' for k in range(6)]
    write_series(tmp_path, hu, skip=(3,), names=names)
    with pytest.raises(DicomError, match=r'gap of 5 mm.*s2\.dcm.*s4\.dcm.*1 missing'): read_dicom_series(tmp_path)


def test_two_series_in_one_folder(tmp_path, hu):
    _, u1, *_ = write_series(tmp_path, hu, desc='first', names=[f'a{k}.dcm' for k in range(6)])
    _, u2, *_ = write_series(tmp_path, hu[:4] + 1, desc='second', names=[f'b{k}.dcm' for k in range(4)])
    with pytest.raises(DicomError, match=re.escape(u1)) as e: read_dicom_series(tmp_path)
    assert u2 in str(e.value) and "'second'" in str(e.value) and '4 files' in str(e.value)
    np.testing.assert_array_equal(read_dicom_series(tmp_path, series_uid=u2).array, hu[:4] + 1)
    with pytest.raises(DicomError, match='1.2.3.4 not found'): read_dicom_series(tmp_path, series_uid='1.2.3.4')


def test_duplicates(tmp_path, hu):
    files, *_ = write_series(tmp_path / 'a', hu)
    dup = tmp_path / 'a' / 'copy.dcm'; dup.write_bytes(files[2].read_bytes())
    with pytest.warns(UserWarning, match='copy.dcm'): v = read_dicom_series(tmp_path / 'a')
    assert v.shape == hu.shape
    ds = pydicom.dcmread(dup); ds.RescaleIntercept = '-1000'; ds.save_as(dup)
    with pytest.raises(DicomError, match='same position.*copy.dcm'): read_dicom_series(tmp_path / 'a')


def test_single_slice_and_gantry_tilt(tmp_path, hu):
    write_series(tmp_path / 'one', hu[:1])
    assert read_dicom_series(tmp_path / 'one').spacing[0] == pytest.approx(2.5)
    *_, pos = write_series(tmp_path / 'tilt', hu, tilt=15)
    with pytest.warns(UserWarning, match='gantry tilt 15'): v = read_dicom_series(tmp_path / 'tilt')
    np.testing.assert_allclose(v.voxel_to_world([[3, 4, k] for k in range(6)]),
                               pos + 3 * 0.7 * np.array([1, 0, 0]) + 4 * 0.8 * np.array([0, 1, 0]), atol=1e-5)


# ---------- NIfTI ----------
def test_dicom_nifti_same_world_points(tmp_path, hu):
    a = np.radians(20); write_series(tmp_path / 'ct', hu, iop=(np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0))
    v = read_dicom_series(tmp_path / 'ct')
    n = read_nifti(write_nifti(v, tmp_path / 'ct.nii.gz'))
    np.testing.assert_array_equal(n.array, v.array)
    ijk = np.stack(np.meshgrid(range(7), range(9), range(6), indexing='ij'), -1).reshape(-1, 3)
    np.testing.assert_allclose(n.voxel_to_world(ijk), v.voxel_to_world(ijk), atol=1e-4)
    import nibabel as nib
    img = nib.load(tmp_path / 'ct.nii.gz')                       # the file itself is RAS, data (i, j, k)
    assert img.shape == (7, 9, 6)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, [1, 2, 3]) * [-1, -1, 1], v.voxel_to_world([[1, 2, 3]])[0], atol=1e-4)
    assert img.get_fdata()[1, 2, 3] == v.array[3, 2, 1]


def test_nibabel_shipped_files():
    import nibabel as nib
    from nibabel.testing import data_path
    f = Path(data_path) / 'anatomical.nii'
    v = read_nifti(f); img = nib.load(f)
    assert v.shape == img.shape[::-1]
    np.testing.assert_array_equal(v.array[5, 4, 3], np.float32(img.get_fdata()[3, 4, 5]))
    np.testing.assert_allclose(v.voxel_to_world([[3, 4, 5]])[0], nib.affines.apply_affine(img.affine, [3, 4, 5]) * [-1, -1, 1])
    with pytest.raises(NiftiError, match='example4d'): read_nifti(Path(data_path) / 'example4d.nii.gz')
    with pytest.raises(NiftiError, match='nope.nii'): read_nifti('nope.nii')


def test_atomic_write_removes_tmp(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / 'x.nii.gz') as t: t.write_text('partial'); raise RuntimeError
    assert list(tmp_path.iterdir()) == []


# ---------- RTSTRUCT ----------
def test_shipped_rtstruct():
    f = get_testdata_file('rtstruct.dcm'); rt = read_rtstruct(f)
    assert list(rt.rois) == ['patient', 'Isocenter 1', 'Isocenter 2']
    assert rt.rois['patient'].geometric_types == ['CLOSED_PLANAR']
    grid = Volume(np.zeros((21, 80, 100)), [[5., 0, 0, -250], [0, 5, 0, -200], [0, 0, 10, -200], [0, 0, 0, 1]],
                  dict(frame_of_reference_uid=rt.frame_of_reference_uid))
    m = rtstruct_mask(f, grid, ' Patient ')
    c = rt.rois['patient'].contours[0]                  # a 400 x 300 mm rectangle: 81 x 61 voxel centres inclusive
    assert m[0].sum() == (np.ptp(c[:, 0]) / 5 + 1) * (np.ptp(c[:, 1]) / 5 + 1)
    with pytest.raises(RTStructError, match=r"'Isocenter 1'.*POINT"): rtstruct_mask(f, grid, 'Isocenter 1')
    with pytest.raises(RTStructError, match=r"no ROI matches '\^GTV'.*'patient'"): rtstruct_mask(f, grid)
    grid.meta['frame_of_reference_uid'] = '1.2.3'
    with pytest.raises(RTStructError, match=re.escape(rt.frame_of_reference_uid) + '.*1.2.3'): rtstruct_mask(f, grid, 'patient')
    off = Volume(np.zeros((3, 80, 100)), grid.affine @ np.array([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]))  # planes -180..-160 mm
    with pytest.raises(RTStructError, match='off the image grid'): rtstruct_mask(f, off, 'patient')


def write_rtstruct(path, ref_files, for_uid, series_uid, rois):
    "rois: {name: [(type, (N,3) points)]} -> a minimal RTSTRUCT file."
    ds = Dataset(); uid = generate_uid(); ds.file_meta = _meta(RS_UID, uid)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = RS_UID, uid, 'RTSTRUCT', 'P1'
    fr = Dataset(); fr.FrameOfReferenceUID = for_uid
    st = Dataset(); se = Dataset(); se.SeriesInstanceUID = series_uid; se.ContourImageSequence = []
    st.RTReferencedSeriesSequence = [se]; fr.RTReferencedStudySequence = [st]; ds.ReferencedFrameOfReferenceSequence = [fr]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for n, (name, cs) in enumerate(rois.items(), 1):
        s = Dataset(); s.ROINumber = n; s.ROIName = name; s.ReferencedFrameOfReferenceUID = for_uid
        ds.StructureSetROISequence.append(s)
        rc = Dataset(); rc.ReferencedROINumber = n; rc.ROIDisplayColor = [255, 0, 0]; rc.ContourSequence = []
        for t, pts in cs:
            c = Dataset(); c.ContourGeometricType = t; c.NumberOfContourPoints = len(pts)
            c.ContourData = [f'{v:.6f}' for v in np.asarray(pts).ravel()]; rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True); return path


def pixel_centre_contours(mask2d):
    "Contours through pixel centres as rt-utils writes them: outer ones through boundary pixels, holes through the foreground around them."
    out = []
    lab, n = ndimage.label(mask2d, structure=np.ones((3, 3)))
    for l in range(1, n + 1):
        comp = lab == l; filled = ndimage.binary_fill_holes(comp)
        for region, keep in [(filled, True)] + [(lab_h == h, False) for lab_h, nh in [ndimage.label(filled & ~comp)] for h in range(1, nh + 1)]:
            pad = np.pad(region, 1).astype(float)
            for c in measure.find_contours(pad, 0.5, fully_connected='high' if keep else 'low'):
                c = c - 1; pts = []
                for r, q in c:    # each point is the midpoint of a region / non-region pixel pair: take the foreground one
                    a, b = (int(np.floor(r)), int(q)), (int(np.ceil(r)), int(q))
                    if r == int(r): a, b = (int(r), int(np.floor(q))), (int(r), int(np.ceil(q)))
                    inside = lambda p: 0 <= p[0] < region.shape[0] and 0 <= p[1] < region.shape[1] and region[p]
                    p = (a if inside(a) else b) if keep else (b if inside(a) else a)
                    if not pts or pts[-1] != p: pts.append(p)
                if len(pts) > 1 and pts[0] == pts[-1]: pts.pop()
                out.append(np.array(pts, float)[:, ::-1])     # (x=col, y=row)
    return out


def _iou(a, b): return (a & b).sum() / (a | b).sum()


def _shapes(n=40):
    y, x = np.mgrid[:n, :n]; r = np.hypot(y - 20, x - 20)
    ring = (r <= 15) & (r > 8)
    island = ring | (r <= 4)                                    # an island inside the hole
    thin = np.zeros((n, n), bool); thin[5:35, 10] = True; thin[20, 10:30] = True; thin[5:12, 25:33] = True   # one-pixel-wide parts
    thinring = (r <= 12) & (r > 11)                              # a one-pixel ring
    return dict(ring=ring, island=island, thin=thin, thinring=thinring | thin)


@pytest.mark.parametrize('name', list(_shapes()))
def test_rtutils_style_contours_read_back(tmp_path, name):
    drawn = _shapes()[name]
    hu = np.zeros((3, 40, 40), np.float32)
    a = np.radians(10); iop = (np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0)
    files, suid, for_uid, _ = write_series(tmp_path / 'ct', hu, spacing=(3.0, 0.9, 1.1), iop=iop)
    v = read_dicom_series(tmp_path / 'ct')
    cs = [(t, v.voxel_to_world(np.c_[c, np.full(len(c), 1.0)])) for t in ['CLOSED_PLANAR'] for c in pixel_centre_contours(drawn)]
    rs = write_rtstruct(tmp_path / 'rs.dcm', files, for_uid, suid, {'GTV GG': cs, 'Body': cs[:1]})
    m = rtstruct_mask(rs, v, 'gtv  gg')
    assert m[0].sum() == 0 and m[2].sum() == 0
    assert _iou(m[1], drawn) >= 0.97, _iou(m[1], drawn)
    if name == 'ring':    # a plain polygon fill + XOR loses the hole's boundary layer
        from skimage.draw import polygon2mask
        naive = np.logical_xor.reduce([polygon2mask(drawn.shape, c[:, ::-1]) for c in pixel_centre_contours(drawn)])
        assert _iou(naive, drawn) < 0.95


def test_rtstruct_windings_types_and_short_contours(tmp_path):
    hu = np.zeros((4, 20, 24), np.float32)
    files, suid, for_uid, _ = write_series(tmp_path / 'ct', hu, spacing=(2.0, 1.0, 1.0))
    v = read_dicom_series(tmp_path / 'ct')
    sq = lambda x0, x1, k: v.voxel_to_world([[x0, x0, k], [x1, x0, k], [x1, x1, k], [x0, x1, k]])
    cw = sq(2, 12, 0); ccw = sq(5, 9, 0)[::-1]                    # outer and hole with either winding
    rois = {'GTV': [('CLOSED_PLANAR', cw), ('CLOSED_PLANAR', ccw), ('CLOSED_PLANAR', sq(1, 5, 3)),
                    ('CLOSED_PLANAR', sq(1, 5, 2)[:2]), ('CLOSED_PLANAR', np.zeros((0, 3)))],
            'GTV1': [('CLOSED_PLANAR', sq(14, 18, 1))],
            'Dose [cGy] / 50': [('OPEN_PLANAR', sq(1, 3, 1)), ('POINT', sq(1, 1, 1)[:1])]}
    rs = write_rtstruct(tmp_path / 'rs.dcm', files, for_uid, suid, rois)
    with pytest.warns(UserWarning, match="'GTV'.*2 contour"):
        m = rtstruct_mask(rs, v)                                   # default regex ^GTV: GTV and GTV1 united
    assert m[0].sum() == 11 * 11 - 3 * 3 and m[3].sum() == 25 and m[1].sum() == 25 and m[2].sum() == 0
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(rtstruct_mask(rs, v, ['gtv', 'GTV1']), m)
    with pytest.raises(RTStructError, match=r"'Dose \[cGy\] / 50'.*OPEN_PLANAR.*POINT"): rtstruct_mask(rs, v, 'Dose [cGy] / 50')
    with pytest.raises(RTStructError, match=r"no ROI matches 'lung'.*GTV1"): rtstruct_mask(rs, v, 'lung')
    rt = read_rtstruct(rs)
    assert rt.referenced_series_uids == [suid] and rt.frame_of_reference_uid == for_uid
    with pytest.raises(RTStructError, match='CT'):      # a CT slice is not an RTSTRUCT
        read_rtstruct(files[0])


def _seg_dist(pts, P):
    "Distance of each point to the closed polygon P."
    a, b = P, np.roll(P, -1, axis=0); d = b - a
    t = np.clip(((pts[:, None] - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(pts[:, None] - (a + t[..., None] * d), axis=-1).min(1)


@pytest.mark.parametrize('seed', range(5))
def test_fill_matches_even_odd_away_from_edges(seed):
    "Random self-intersecting sub-pixel polygons: equal to a plain per-pixel even-odd test at every centre not on an edge."
    from fgflow.io import _fill_slice
    rng = np.random.default_rng(seed)
    polys = [rng.uniform(-3, 33, size=(rng.integers(3, 15), 2)) for _ in range(3)]
    m = _fill_slice(polys, (30, 31))
    yx = np.stack(np.mgrid[:30, :31], -1).reshape(-1, 2); xy = yx[:, ::-1].astype(float)
    inside = np.zeros(len(xy), int)
    for P in polys: inside += _crossing_parity(xy, P)     # even-odd over all contours of a slice
    dist = np.min([_seg_dist(xy, P) for P in polys], axis=0); far = dist > 0.02
    assert far.mean() > 0.9
    np.testing.assert_array_equal(m.ravel()[far], (inside % 2 == 1)[far])
    assert m.ravel()[dist < 0.005].all()    # centres on an edge (within tolerance) are foreground


def _crossing_parity(xy, P):
    "True where the ray-crossing count of P is odd (the textbook test, one pixel at a time in effect)."
    a, b = P, np.roll(P, -1, axis=0)
    cond = (a[:, 1] > xy[:, None, 1]) != (b[:, 1] > xy[:, None, 1])
    with np.errstate(divide='ignore', invalid='ignore'):
        xi = a[:, 0] + (xy[:, None, 1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return ((cond & (xy[:, None, 0] < xi)).sum(1) % 2) == 1


def test_series_folder_with_rtstruct_and_other_modalities(tmp_path, hu):
    files, suid, for_uid, _ = write_series(tmp_path, hu)
    write_rtstruct(tmp_path / 'rs.dcm', files, for_uid, suid, {'GTV': []})
    np.testing.assert_array_equal(read_dicom_series(tmp_path).array, hu)      # the RTSTRUCT is not an image: ignored
    only = tmp_path / 'only'; only.mkdir(); (tmp_path / 'rs.dcm').rename(only / 'rs.dcm')
    with pytest.raises(DicomError, match=r"no image slices.*RTSTRUCT"): read_dicom_series(only)
    with pytest.raises(RTStructError, match=r"'GTV' has no CLOSED_PLANAR contour \(types: no contours\)"):
        rtstruct_mask(only / 'rs.dcm', read_dicom_series(tmp_path))


def test_contour_between_planes_warns(tmp_path):
    v = Volume(np.zeros((4, 10, 10)), np.diag([1., 1., 2., 1.]))
    sq = np.array([[2., 2, 3.2], [6, 2, 3.2], [6, 6, 3.2], [2, 6, 3.2]])      # z = 3.2 mm: slice 1.6
    rt = read_rtstruct(write_rtstruct(tmp_path / 'rs.dcm', [], '1.2.3', '1.2.4', {'GTVp': [('CLOSED_PLANAR', sq)]}))
    with pytest.warns(UserWarning, match="'GTVp'.*between slice planes"): m = rtstruct_mask(rt, v)
    assert m[2].sum() == 25 and m.sum() == 25


def test_rtstruct_contour_image_references_and_roi_matching(tmp_path):
    "Images named by each contour count as referenced (pairing uses them); ROI names match by name, else by regex."
    import pydicom
    from pydicom.dataset import Dataset
    from fgflow.io import _match_names
    hu = np.zeros((3, 8, 8), np.float32)
    files, suid, for_uid, _ = write_series(tmp_path / 'ct', hu, spacing=(2.0, 1.0, 1.0))
    v = read_dicom_series(tmp_path / 'ct')
    sq = v.voxel_to_world([[1, 1, 1], [5, 1, 1], [5, 5, 1], [1, 5, 1]])
    rs = write_rtstruct(tmp_path / 'rs.dcm', files, for_uid, suid, {'GTVn': [('CLOSED_PLANAR', sq)], 'GTV': [('CLOSED_PLANAR', sq)]})
    ds = pydicom.dcmread(rs); ds.SeriesInstanceUID = '1.2.3.4'
    sop = str(pydicom.dcmread(files[0]).SOPInstanceUID)          # the series list names none; the contour names one image
    for rc in ds.ROIContourSequence:
        ci = Dataset(); ci.ReferencedSOPClassUID, ci.ReferencedSOPInstanceUID = CT_UID, sop
        rc.ContourSequence[0].ContourImageSequence = [ci]
    ds.save_as(rs, enforce_file_format=True)
    rt = read_rtstruct(rs)
    assert rt.referenced_sop_uids == [sop] and rt.series_uid == '1.2.3.4' and rt.referenced_series_uids == [suid]
    assert _match_names(rt.rois, ' gtv ', 'x') == ['GTV'] and _match_names(rt.rois, '^GTV', 'x') == ['GTVn', 'GTV']
    with pytest.raises(RTStructError, match=r"rs.dcm: no ROI matches 'GTV1'; ROIs there: \['GTVn', 'GTV'\]"):
        _match_names(rt.rois, 'GTV1', 'rs.dcm')
    assert rtstruct_mask(rt, v, 'GTV').sum() == 25
