"fgflow.data: find_cases on DICOM/NIfTI trees, load_case, read_clinical, preprocess, prepare_cohort, CohortDataset."
import json, shutil, time
from pathlib import Path

import numpy as np, pandas as pd, pydicom, pytest, torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as Seq
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fgflow.data import (Case, ClinicalError, CohortDataset, CohortError, FGFlowError, Volume, find_cases, load_case,
                         prepare_cohort, preprocess, read_clinical, write_nifti)

CT_CLASS, RT_CLASS = '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.5.1.4.1.1.481.3'


# ---------------------------------------------------------------- DICOM writers (real CT series + RTSTRUCT)

def _save(ds, path, sop_class):
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _common(pid, study, modality):
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.Modality, ds.StudyInstanceUID = pid, pid, modality, study
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.StudyID, ds.AccessionNumber = '20200101', '120000', 1, '1', ''
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.Manufacturer = '', 'O', '', 'fgflow tests'
    return ds


def write_ct(folder, pid, hu, spacing=(2.0, 1.5, 1.5), origin=(-18., -18., -7.), study=None, for_uid=None):
    "Axial CT series (hu indexed slice, row, column) as uint16 with intercept -1024; returns (series uid, FoR uid, slice uids)."
    series, for_uid, study = generate_uid(), for_uid or generate_uid(), study or generate_uid()
    uids = []
    for k, sl in enumerate(hu):
        ds = _common(pid, study, 'CT')
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = series, for_uid, ''
        ds.ImageType, ds.PatientPosition, ds.KVP, ds.AcquisitionNumber = ['ORIGINAL', 'PRIMARY', 'AXIAL'], 'HFS', '', ''
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness, ds.InstanceNumber = spacing[0], k + 1
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, 'HU'
        ds.PixelData = (np.round(sl) + 1024).astype(np.uint16).tobytes()
        uids.append(_save(ds, Path(folder)/f'{k:03d}.dcm', CT_CLASS).SOPInstanceUID)
    return series, for_uid, uids


def write_rtstruct(path, pid, ct_series, for_uid, rois, study=None, ref_series=True, slice_uids=()):
    "RTSTRUCT with CLOSED_PLANAR contours: rois = {name: [(N,3) mm polygon, ...]}."
    ds = _common(pid, study or generate_uid(), 'RTSTRUCT')
    ds.SeriesInstanceUID, ds.StructureSetLabel, ds.OperatorsName = generate_uid(), 'test', ''
    ds.StructureSetDate, ds.StructureSetTime = '20200101', '120000'
    se = Dataset(); se.SeriesInstanceUID = ct_series; se.ContourImageSequence = Seq([])
    for u in slice_uids:
        im = Dataset(); im.ReferencedSOPClassUID, im.ReferencedSOPInstanceUID = CT_CLASS, u; se.ContourImageSequence.append(im)
    st = Dataset(); st.ReferencedSOPClassUID = '1.2.840.10008.3.1.2.3.1'; st.ReferencedSOPInstanceUID = generate_uid()
    st.RTReferencedSeriesSequence = Seq([se] if ref_series else [])
    fr = Dataset(); fr.FrameOfReferenceUID = for_uid; fr.RTReferencedStudySequence = Seq([st])
    ds.ReferencedFrameOfReferenceSequence = Seq([fr])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Seq([]), Seq([]), Seq([])
    for n, (name, polys) in enumerate(rois.items(), 1):
        r = Dataset(); r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID, r.ROIGenerationAlgorithm = n, name, for_uid, 'MANUAL'
        ds.StructureSetROISequence.append(r)
        rc = Dataset(); rc.ReferencedROINumber, rc.ROIDisplayColor = n, [255, 0, 0]; rc.ContourSequence = Seq([])
        for poly in polys:
            c = Dataset(); c.ContourGeometricType = 'CLOSED_PLANAR'; c.NumberOfContourPoints = len(poly)
            c.ContourData = [round(float(v), 4) for v in np.asarray(poly).ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        ob = Dataset(); ob.ObservationNumber, ob.ReferencedROINumber, ob.RTROIInterpretedType, ob.ROIInterpreter = n, n, 'GTV', ''
        ds.RTROIObservationsSequence.append(ob)
    return _save(ds, path, RT_CLASS)


def square(x0, x1, y0, y1, z):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)


def dicom_patient(root, pid, primary=(2, 5, 6, 11, 6, 11), node=None, rt_study_other=True, extra_ct=True, pet=True):
    """A TCIA-like patient: planning CT (8x24x24, 2 x 1.5 x 1.5 mm), optional second CT and PET, RTSTRUCT in another
    study folder. primary = (k0, k1, i0, i1, j0, j1) voxel index box drawn as contours through boundary voxel centres."""
    hu = np.full((8, 24, 24), -1000.)
    hu[:, 4:20, 4:20] = 40.
    study = generate_uid()
    uid, fr, sops = write_ct(Path(root)/pid/'study1'/'2.000-CT', pid, hu, study=study)
    if extra_ct: write_ct(Path(root)/pid/'study1'/'3.000-CTAC', pid, hu[:4], study=study)
    if pet:
        ds = _common(pid, study, 'PT'); ds.SeriesInstanceUID = generate_uid(); ds.FrameOfReferenceUID = generate_uid()
        _save(ds, Path(root)/pid/'study1'/'4.000-PET'/'000.dcm', '1.2.840.10008.5.1.4.1.1.128')
    xs = lambda i: -18. + 1.5 * i
    def box(k0, k1, i0, i1, j0, j1): return [square(xs(i0), xs(i1), xs(j0), xs(j1), -7. + 2. * k) for k in range(k0, k1 + 1)]
    rois = {'GTV_Primary': box(*primary), 'External': box(0, 7, 1, 22, 1, 22)}
    if node: rois['Node_GTV'] = box(*node)
    rt_folder = Path(root)/pid/('study2' if rt_study_other else 'study1')/'1.000-RTSTRUCT'
    write_rtstruct(rt_folder/'1-1.dcm', pid, uid, fr, rois, slice_uids=sops)
    return uid


# ---------------------------------------------------------------- find_cases

def _hdr(path, pid, modality, series, for_uid, ref_series=None, rois=('GTV',)):
    ds = _common(pid, generate_uid(), modality)
    ds.SeriesInstanceUID = series
    if modality == 'RTSTRUCT':
        se = Dataset(); se.SeriesInstanceUID = ref_series or ''
        st = Dataset(); st.RTReferencedSeriesSequence = Seq([se] if ref_series else [])
        fr = Dataset(); fr.FrameOfReferenceUID = for_uid; fr.RTReferencedStudySequence = Seq([st])
        ds.ReferencedFrameOfReferenceSequence = Seq([fr])
        ds.StructureSetROISequence = Seq([])
        for n in rois:
            r = Dataset(); r.ROIName = n; ds.StructureSetROISequence.append(r)
    else: ds.FrameOfReferenceUID = for_uid
    return _save(ds, path, RT_CLASS if modality == 'RTSTRUCT' else CT_CLASS)


def test_find_cases_two_ct_one_rtstruct_picks_referenced(tmp_path):
    fr = generate_uid(); a, b = generate_uid(), generate_uid()
    for s in range(3): _hdr(tmp_path/'P'/'s'/'a'/f'{s}.dcm', 'HN-X-001', 'CT', a, fr)
    for s in range(2): _hdr(tmp_path/'P'/'s'/'b'/f'{s}.dcm', 'HN-X-001', 'CT', b, fr)   # same FoR: only the reference decides
    _hdr(tmp_path/'P'/'t'/'rt.dcm', 'HN-X-001', 'RTSTRUCT', generate_uid(), fr, ref_series=b)
    for m in ('RTDOSE', 'RTPLAN', 'REG', 'PT'): _hdr(tmp_path/'P'/'s'/m/'0.dcm', 'HN-X-001', m, generate_uid(), fr)
    cases, skipped = find_cases(tmp_path)
    assert skipped == []
    (c,) = cases
    assert (c.id, c.kind, c.series_uid, len(c.ct)) == ('HN-X-001', 'dicom', b, 2)
    assert Path(c.rtstruct).name == 'rt.dcm' and c.mask is None


def test_find_cases_frame_of_reference_fallback_and_ambiguity(tmp_path):
    fr1, fr2 = generate_uid(), generate_uid()
    _hdr(tmp_path/'A'/'ct'/'0.dcm', 'A', 'CT', generate_uid(), fr1)
    _hdr(tmp_path/'A'/'rt.dcm', 'A', 'RTSTRUCT', generate_uid(), fr1)                 # no series reference
    _hdr(tmp_path/'B'/'ct1'/'0.dcm', 'B', 'CT', generate_uid(), fr2)
    _hdr(tmp_path/'B'/'ct2'/'0.dcm', 'B', 'CT', generate_uid(), fr2)
    _hdr(tmp_path/'B'/'rt.dcm', 'B', 'RTSTRUCT', generate_uid(), fr2)                 # two CTs share the FoR
    cases, skipped = find_cases(tmp_path)
    assert [c.id for c in cases] == ['A']
    reasons = dict(skipped)
    assert reasons['B'].startswith('ambiguous pairing for patient B: ') and reasons['B'].count(str(tmp_path/'B'/'rt.dcm')) == 2
    assert str(tmp_path/'B'/'ct1') in reasons['B'] and str(tmp_path/'B'/'ct2') in reasons['B']
    assert find_cases(tmp_path).patients == {'B': ('ambiguous pairing', reasons['B'])}


def test_find_cases_prefers_gtv_rtstruct_and_reports_extra(tmp_path):
    fr, ct = generate_uid(), generate_uid()
    _hdr(tmp_path/'ct'/'0.dcm', 'P1', 'CT', ct, fr)
    _hdr(tmp_path/'a_rt.dcm', 'P1', 'RTSTRUCT', generate_uid(), fr, ref_series=ct, rois=('BODY',))
    _hdr(tmp_path/'b_rt.dcm', 'P1', 'RTSTRUCT', generate_uid(), fr, ref_series=ct, rois=('Body', 'GTV 1'))
    (c,), skipped = find_cases(tmp_path)
    assert Path(c.rtstruct).name == 'b_rt.dcm'
    assert skipped == [(str(tmp_path/'a_rt.dcm'), "RTSTRUCT of P1 not used: no ROI matches '^GTV'; ROIs there: ['BODY']")]


def test_find_cases_unreadable_and_non_dicom_files(tmp_path):
    fr, ct = generate_uid(), generate_uid()
    _hdr(tmp_path/'ct'/'0.dcm', 'P1', 'CT', ct, fr)
    _hdr(tmp_path/'rt'/'0.dcm', 'P1', 'RTSTRUCT', generate_uid(), fr, ref_series=ct)
    (tmp_path/'ct'/'broken.dcm').write_bytes(b'\x00' * 10)
    (tmp_path/'metadata.csv').write_text('a,b\n1,2\n')
    (tmp_path/'LICENSE').write_text('some text, not DICOM')
    cases, skipped = find_cases(tmp_path)
    assert [c.id for c in cases] == ['P1'] and len(cases[0].ct) == 1
    assert len(skipped) == 1 and skipped[0][0] == str(tmp_path/'ct'/'broken.dcm')
    assert skipped[0][1].startswith('unreadable DICOM file')


def test_find_cases_reads_no_pixels(tmp_path):
    "A CT slice whose pixel data is cut off is still indexed: find_cases stops before the pixels."
    dicom_patient(tmp_path, 'HN-CHUM-001', extra_ct=False, pet=False)
    f = sorted((tmp_path/'HN-CHUM-001'/'study1'/'2.000-CT').glob('*.dcm'))[0]
    f.write_bytes(f.read_bytes()[:-500])
    (c,), skipped = find_cases(tmp_path)
    assert skipped == [] and len(c.ct) == 8


def test_find_cases_nifti_pairs_and_duplicates(tmp_path):
    v = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
    nii = tmp_path/'nifti'; nii.mkdir()
    for name in ('HN-SYN-002_ct.nii.gz', 'HN-SYN-002_gtv.nii.gz', 'HN-SYN-001_ct.nii.gz', 'HN-SYN-001_gtv.nii.gz',
                 'HN-SYN-003_ct.nii.gz', 'notes.nii.gz'):
        write_nifti(v, nii/name)
    cases, skipped = find_cases(nii)
    assert [(c.id, c.kind, Path(c.ct).name, Path(c.mask).name) for c in cases] == [
        ('HN-SYN-001', 'nifti', 'HN-SYN-001_ct.nii.gz', 'HN-SYN-001_gtv.nii.gz'),
        ('HN-SYN-002', 'nifti', 'HN-SYN-002_ct.nii.gz', 'HN-SYN-002_gtv.nii.gz')]
    assert dict(skipped) == {str(nii/'HN-SYN-003_ct.nii.gz'): 'no matching HN-SYN-003_gtv.nii.gz next to it',
                             str(nii/'notes.nii.gz'): 'NIfTI file not named <id>_ct.nii.gz or <id>_gtv.nii.gz'}
    # the same id as DICOM and as NIfTI under one root: one case (DICOM), the NIfTI pair reported
    dicom_patient(tmp_path/'dicom', 'HN-SYN-001', extra_ct=False, pet=False)
    cases, skipped = find_cases(tmp_path)
    assert [(c.id, c.kind) for c in cases] == [('HN-SYN-001', 'dicom'), ('HN-SYN-002', 'nifti')]
    assert 'NIfTI pair of HN-SYN-001 ignored' in dict(skipped)[str(nii/'HN-SYN-001_ct.nii.gz')]


def test_find_cases_errors_and_speed(tmp_path):
    with pytest.raises(CohortError, match='not a folder'): find_cases(tmp_path/'nope')
    # 20 patients x 25 header-only files (about 0.4 ms a file here): a generous bound that still catches a full read
    for p in range(20):
        fr, ct = generate_uid(), generate_uid()
        for s in range(24): _hdr(tmp_path/f'HN-T-{p:03d}'/'ct'/f'{s}.dcm', f'HN-T-{p:03d}', 'CT', ct, fr)
        _hdr(tmp_path/f'HN-T-{p:03d}'/'rt'/'0.dcm', f'HN-T-{p:03d}', 'RTSTRUCT', generate_uid(), fr, ref_series=ct)
    t = time.perf_counter(); cases, skipped = find_cases(tmp_path, progress=False); dt = time.perf_counter() - t
    assert len(cases) == 20 and skipped == [] and [c.id for c in cases] == sorted(c.id for c in cases)
    assert dt < 10, dt


# ---------------------------------------------------------------- load_case

def test_load_case_dicom_default_roi_and_named_roi(tmp_path):
    dicom_patient(tmp_path, 'HN-CHUM-001', node=(1, 2, 14, 17, 14, 17))
    (c,), skipped = find_cases(tmp_path)
    assert skipped == []
    ct, m = load_case(c)
    assert ct.array.shape == (8, 24, 24) and m.shape == ct.array.shape and m.dtype == bool
    np.testing.assert_allclose(ct.array[0, 0, 0], -1000) ; np.testing.assert_allclose(ct.array[3, 10, 10], 40)
    want = np.zeros(m.shape, bool); want[2:6, 6:12, 6:12] = True          # primary only (Node_GTV does not match ^GTV)
    assert (m & want).sum() / (m | want).sum() >= 0.9
    node = load_case(c, roi='Node_GTV')[1]
    assert node[:, :, :].any() and np.argwhere(node).mean(0)[0] < 3 and not (node & want).any()
    c.roi = 'Node_GTV'
    assert (load_case(c)[1] == node).all()                               # case.roi is used when no roi is given


def test_load_case_nifti_grid_mismatch(tmp_path):
    a = np.eye(4); a[:3, :3] *= 2
    write_nifti(Volume(np.zeros((4, 5, 6), np.float32), a), tmp_path/'P_ct.nii.gz')
    write_nifti(Volume(np.ones((4, 5, 6), np.float32), np.eye(4)), tmp_path/'P_gtv.nii.gz')
    c = Case('P', 'nifti', tmp_path/'P_ct.nii.gz', mask=tmp_path/'P_gtv.nii.gz')
    with pytest.raises(CohortError, match=r'P_gtv\.nii\.gz.*not on the grid of CT .*P_ct\.nii\.gz'): load_case(c)
    with pytest.raises(CohortError, match="unknown case kind 'mhd'"): load_case(Case('P', 'mhd', 'x'))


# ---------------------------------------------------------------- read_clinical

def _xlsx(path, sheets):
    with pd.ExcelWriter(path) as w:
        for name, rows in sheets.items(): pd.DataFrame(rows).to_excel(w, sheet_name=name, header=False, index=False)
    return path


def test_read_clinical_tcia_like_workbook(tmp_path):
    hdr = lambda pid_h, dist_h: [pid_h, 'Sex', 'Age', 'Locoregional', dist_h, 'Time – diagnosis to DM (days)']
    foot = [['Patients were followed for 1-112 months.', None, None, None, None, None],
            ['* DM: distant metastasis', None, None, None, None, None]]
    sheets = {'CHUM': [hdr('Patient #', 'Distant'), ['HN-CHUM-001', 'M', 61, 0, 0, None], ['HN-CHUM-002', 'F', 70, 1, 1, 400]] + foot,
              'CHUS': [hdr('Patient  #', 'Distant '), ['HN-CHUS-001', 'M', 55, 0, 0, None]] + foot,
              'HGJ': [[None] * 6, hdr(' patient #', 'DISTANT'), ['HN-HGJ-001', 'M', 49, 0, 1, 250]],
              'HMR': [hdr('Patient\n#', 'distant'), ['HN-HMR-001', 'F', 66, 1, 0, None], [None] * 6, ['HN-HMR-1', 'F', 1, 1, 1, 1]],
              'Notes': [['Data dictionary'], ['Distant: distant metastasis during follow-up']]}   # no id column: ignored
    df = read_clinical(_xlsx(tmp_path/'INFOclinical.xlsx', sheets))
    assert list(df.index) == ['HN-CHUM-001', 'HN-CHUM-002', 'HN-CHUS-001', 'HN-HGJ-001', 'HN-HMR-001']
    assert df.label.tolist() == [0, 1, 0, 1, 0] and df.label.dtype.kind == 'i'
    assert {'Sex', 'Age', 'Locoregional', 'Distant', 'Time – diagnosis to DM (days)'} <= set(df.columns)
    assert df.Age.tolist() == [61, 70, 55, 49, 66]
    # ids of other collections are kept with a wider pattern, dropped with a narrower one
    assert len(read_clinical(tmp_path/'INFOclinical.xlsx', id_pattern=r'HN-(CHUM|CHUS)-\d{3}')) == 3


def test_read_clinical_gtv_table_adds_roi(tmp_path):
    _xlsx(tmp_path/'c.xlsx', {'A': [['Patient #', 'Distant'], ['HN-CHUM-001', 0], ['HN-CHUM-002', 1]]})
    _xlsx(tmp_path/'gtv.xlsx', {'CHUM': [['Patient', 'Name GTV Primary', 'Name GTV Node(s)'],
                                         ['HN-CHUM-001', 'GTV Primaire ', 'GTV N'], ['note', None, None]]})
    df = read_clinical(tmp_path/'c.xlsx', gtv_table=tmp_path/'gtv.xlsx')
    assert df.roi.tolist() == ['GTV Primaire', None]


@pytest.mark.parametrize('vals,want', [(['yes', 'No', 'TRUE', 'false'], [1, 0, 1, 0]), (['Distant', 'None', 'distant', ' none '], [1, 0, 1, 0]),
                                       (['1', '0', '1.0', '0.0'], [1, 0, 1, 0])])
def test_read_clinical_csv_label_spellings(tmp_path, vals, want):
    rows = ['Patient #,Site,Distant'] + [f'HN-SYN-00{i+1},oropharynx,{v}' for i, v in enumerate(vals)] + ['"Footnote, with commas, and more fields",x,y,z']
    (tmp_path/'c.csv').write_text('\n'.join(rows) + '\n')
    df = read_clinical(tmp_path/'c.csv')
    assert df.label.tolist() == want and df.index.tolist() == [f'HN-SYN-00{i}' for i in range(1, 5)]


def test_read_clinical_errors(tmp_path):
    (tmp_path/'c.csv').write_text('Patient #,Distant\nHN-SYN-001,0\nHN-SYN-002,maybe\n')
    with pytest.raises(ClinicalError, match=r"c\.csv, row 3 \(HN-SYN-002\): 'Distant' value 'maybe'"): read_clinical(tmp_path/'c.csv')
    (tmp_path/'c.csv').write_text('Patient #,Distant\nHN-SYN-001,0\nHN-SYN-002,\n')
    with pytest.raises(ClinicalError, match=r"row 3 \(HN-SYN-002\): no 'Distant' value \(missing label\)"): read_clinical(tmp_path/'c.csv')
    (tmp_path/'c.csv').write_text('ID,Distant\nHN-SYN-001,0\n')
    with pytest.raises(ClinicalError, match=r"no column 'Patient #' in any sheet; columns found: \['ID', 'Distant'\]"):
        read_clinical(tmp_path/'c.csv')
    _xlsx(tmp_path/'d.xlsx', {'CHUM': [['Patient #', 'Death'], ['HN-CHUM-001', 0]]})
    with pytest.raises(ClinicalError, match=r"sheet 'CHUM': no column 'Distant'; columns found: \['Patient #', 'Death'\]"):
        read_clinical(tmp_path/'d.xlsx')
    (tmp_path/'c.csv').write_text('Patient #,Distant\nHN-SYN-001,0\nHN-SYN-001 ,1\n')
    with pytest.raises(ClinicalError, match=r"duplicate id 'HN-SYN-001' at row 3 \(first at row 2\)"):
        read_clinical(tmp_path/'c.csv')
    (tmp_path/'c.csv').write_text('Patient #,Distant\nfoo,0\n')
    with pytest.raises(ClinicalError, match='no row with an id matching'): read_clinical(tmp_path/'c.csv')
    with pytest.raises(ClinicalError, match='no such file'): read_clinical(tmp_path/'none.xlsx')
    (tmp_path/'c.json').write_text('{}')
    with pytest.raises(ClinicalError, match="unsupported table format '.json'"): read_clinical(tmp_path/'c.json')


# ---------------------------------------------------------------- preprocess

def _rot(ax, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg)); R = np.eye(3)
    i, j = [a for a in range(3) if a != ax]; R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def oblique_case(shape=(20, 36, 32), sp=(2.2, 0.9, 1.2), centre=(-4., 7., 20.), semi=(9., 5., 7.), rot=(30, -15), hu=None):
    R = _rot(0, rot[0]) @ _rot(1, rot[1])
    A = np.eye(4); A[:3, :3] = R * np.array(sp[::-1]); A[:3, 3] = np.array(centre) - A[:3, :3] @ (np.array(shape[::-1]) - 1) / 2
    k, j, i = np.indices(shape).reshape(3, -1)
    xyz = (A[:3, :3] @ np.stack([i, j, k]) + A[:3, 3:]).T
    field = hu or (lambda p: 20 + 5 * p[..., 0] - 3 * p[..., 1] + 2 * p[..., 2])
    m = ((((xyz - centre) / semi) ** 2).sum(1) <= 1).reshape(shape)
    return Volume(field(xyz).reshape(shape).astype(np.float32), A), m, field


def _grid(meta, n):
    o, s = np.array(meta['origin']), meta['spacing'][0]
    g = np.arange(n) * s
    z, y, x = np.meshgrid(o[2] + g, o[1] + g, o[0] + g, indexing='ij')
    return np.stack([x, y, z], -1)


def test_preprocess_oblique_ellipsoid_centre_volume_axes():
    ct, m, _ = oblique_case()
    x, meta = preprocess(ct, m, spacing=1.0, size=32)
    assert x.shape == (2, 32, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_allclose(meta['centroid'], (-4., 7., 20.), atol=0.2)
    np.testing.assert_allclose(np.array(meta['origin']) + 15.5, meta['centroid'], atol=1e-9)
    vol = 4 / 3 * np.pi * 9 * 5 * 7
    assert abs(x[1].sum() / vol - 1) < 0.04 and abs(meta['volume_mm3'] / vol - 1) < 0.04
    assert abs(meta['mask_in_crop'] - 1) < 0.02
    # occupancy agrees with the analytic ellipsoid on the output grid (patient axes, no flips)
    p = _grid(meta, 32)
    truth = ((((p - (-4., 7., 20.)) / (9., 5., 7.)) ** 2).sum(-1) <= 1)
    b = x[1] > 0.5
    assert (b & truth).sum() / (b | truth).sum() > 0.9
    A = np.array(meta['affine']); assert np.allclose(A[:3, :3], np.eye(3)) and np.allclose(A[:3, 3], meta['origin'])


def test_preprocess_hu_round_trip_and_air_padding():
    ct, m, field = oblique_case()
    lo, hi = -100., 150.
    x, meta = preprocess(ct, m, spacing=1.5, size=40, window=(lo, hi))
    truth = field(_grid(meta, 40))
    hu = lo + x[0] * (hi - lo)
    ijk = (np.linalg.inv(ct.affine) @ np.c_[_grid(meta, 40).reshape(-1, 3), np.ones(40**3)].T)[:3].T.reshape(40, 40, 40, 3)
    inside = ((ijk >= 0) & (ijk <= np.array(ct.array.shape[::-1]) - 1)).all(-1)
    sel = inside & (truth > lo + 0.5) & (truth < hi - 0.5)
    assert sel.sum() > 1000
    np.testing.assert_allclose(hu[sel], truth[sel], atol=0.05)
    assert (x[0][inside & (truth > hi + 1)] == 1).all() and (x[0][inside & (truth < lo - 1)] == 0).all()
    out = ~((ijk >= -1) & (ijk <= np.array(ct.array.shape[::-1]))).all(-1)       # beyond a voxel outside: pure air
    assert out.sum() > 1000 and (x[0][out] == 0).all() and (x[1][out] == 0).all()
    assert meta['spacing'] == (1.5, 1.5, 1.5) and meta['window'] == (lo, hi) and meta['hu_affine'] == (lo, hi - lo)


def test_preprocess_same_tumour_any_slice_order():
    "Flipping the slice order (and the affine with it) describes the same patient: the crop must not change."
    ct, m, _ = oblique_case(rot=(0, 0))
    F = np.eye(4); F[2, 2] = -1; F[2, 3] = ct.array.shape[0] - 1
    ct2 = Volume(ct.array[::-1].copy(), ct.affine @ F)
    x1, _ = preprocess(ct, m, size=24); x2, _ = preprocess(ct2, m[::-1].copy(), size=24)
    np.testing.assert_allclose(x1, x2, atol=1e-5)


def test_preprocess_errors():
    ct, m, _ = oblique_case()
    with pytest.raises(CohortError, match='empty GTV mask'): preprocess(ct, np.zeros_like(m))
    with pytest.raises(CohortError, match=r'mask shape \(2, 2, 2\) differs from the CT shape \(20, 36, 32\)'): preprocess(ct, np.ones((2, 2, 2)))
    with pytest.raises(CohortError, match='hi must exceed lo'): preprocess(ct, m, window=(100, 100))


# ---------------------------------------------------------------- prepare_cohort + CohortDataset

def _nifti_cohort(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for p in range(n):
        ct, m, _ = oblique_case(centre=(-4. + 3 * p, 7., 20.))
        write_nifti(ct, root/f'HN-SYN-{p+1:03d}_ct.nii.gz')
        write_nifti(Volume(m.astype(np.float32), ct.affine), root/f'HN-SYN-{p+1:03d}_gtv.nii.gz')
    return find_cases(root)[0]


def test_prepare_cohort_cache_rerun_corruption_and_failures(tmp_path):
    cases = _nifti_cohort(tmp_path/'nii', 4)
    # case 4: its mask is moved to another grid -> CohortError, skipped with the message
    ct, m, _ = oblique_case(); a = ct.affine.copy(); a[0, 3] += 5
    write_nifti(Volume(m.astype(np.float32), a), tmp_path/'nii'/'HN-SYN-004_gtv.nii.gz')
    labels = pd.DataFrame({'label': [0, 1, 1]}, index=['HN-SYN-001', 'HN-SYN-002', 'HN-SYN-004'])
    out = tmp_path/'cache'
    rep = prepare_cohort(cases, labels, out, spacing=2.0, size=16, progress=False)
    assert rep.prepared == ['HN-SYN-001', 'HN-SYN-002'] and rep.reused == []
    assert rep.skipped['HN-SYN-003'] == 'no label for HN-SYN-003 in the clinical table'
    assert 'not on the grid of CT' in rep.skipped['HN-SYN-004']
    idx = pd.read_csv(out/'index.csv')
    assert idx.id.tolist() == rep.prepared and idx.label.tolist() == [0, 1]
    for r in idx.itertuples():
        import hashlib
        assert hashlib.sha256((out/r.file).read_bytes()).hexdigest() == r.sha256
        assert json.loads(r.sources)[0].endswith(f'{r.id}_ct.nii.gz')
    np.testing.assert_allclose(idx.centroid_x, [-4., -1.], atol=0.2)
    cj = json.loads((out/'cohort.json').read_text())
    assert (cj['spacing'], cj['size'], cj['window']) == (2.0, 16, [-200.0, 300.0])
    assert sorted(p.name for p in (out/'cases').iterdir()) == ['HN-SYN-001.npy', 'HN-SYN-002.npy']   # no temp files left
    x, meta = preprocess(*load_case(cases[0]), spacing=2.0, size=16)
    np.testing.assert_array_equal(np.load(out/'cases'/'HN-SYN-001.npy'), x)

    # rerun: up to date -> reused (a label change only updates the index); corrupted file -> rebuilt
    t1 = (out/'cases'/'HN-SYN-002.npy').stat().st_mtime_ns
    b = bytearray((out/'cases'/'HN-SYN-001.npy').read_bytes()); b[-1] ^= 0xFF; (out/'cases'/'HN-SYN-001.npy').write_bytes(bytes(b))
    rep2 = prepare_cohort(cases, {'HN-SYN-001': 1, 'HN-SYN-002': 1}, out, spacing=2.0, size=16, progress=False)
    assert rep2.prepared == ['HN-SYN-001', 'HN-SYN-002'] and rep2.reused == ['HN-SYN-002']
    assert (out/'cases'/'HN-SYN-002.npy').stat().st_mtime_ns == t1
    np.testing.assert_array_equal(np.load(out/'cases'/'HN-SYN-001.npy'), x)
    assert pd.read_csv(out/'index.csv').label.tolist() == [1, 1]
    # other parameters -> everything rebuilt
    rep3 = prepare_cohort(cases[:2], {'HN-SYN-001': 1, 'HN-SYN-002': 1}, out, spacing=2.0, size=12, progress=False)
    assert rep3.reused == [] and np.load(out/'cases'/'HN-SYN-001.npy').shape == (2, 12, 12, 12)


def test_prepare_cohort_dicom_with_gtv_table_roi(tmp_path):
    dicom_patient(tmp_path/'dicom', 'HN-CHUM-001', node=(1, 2, 14, 17, 14, 17), pet=False)
    dicom_patient(tmp_path/'dicom', 'HN-CHUM-002', pet=False, extra_ct=False)
    cases, skipped = find_cases(tmp_path/'dicom')
    assert skipped == [] and [c.id for c in cases] == ['HN-CHUM-001', 'HN-CHUM-002']
    _xlsx(tmp_path/'c.xlsx', {'CHUM': [['Patient #', 'Distant'], ['HN-CHUM-001', 1], ['HN-CHUM-002', 0]]})
    _xlsx(tmp_path/'g.xlsx', {'CHUM': [['Patient', 'Name GTV Primary'], ['HN-CHUM-001', 'Node_GTV']]})
    labels = read_clinical(tmp_path/'c.xlsx', gtv_table=tmp_path/'g.xlsx')
    rep = prepare_cohort(cases, labels, tmp_path/'cache', spacing=1.5, size=16, progress=False)
    assert rep.prepared == ['HN-CHUM-001', 'HN-CHUM-002'] and rep.skipped == {}
    idx = pd.read_csv(tmp_path/'cache'/'index.csv', keep_default_na=False)
    assert idx.roi.tolist() == ['Node_GTV', ''] and idx.kind.tolist() == ['dicom', 'dicom']
    # node box: columns 14..17 -> x = -18 + 1.5 * 15.5 = 5.25; primary box columns 6..11 -> x = -5.25
    np.testing.assert_allclose(idx.centroid_x, [5.25, -5.25], atol=0.3)
    np.testing.assert_allclose(idx.centroid_z, [-4.0, 0.0], atol=0.3)     # slices 1..2 and 2..5, 2 mm from z = -7


def test_cohort_dataset(tmp_path):
    cases = _nifti_cohort(tmp_path/'nii', 3)
    out = tmp_path/'cache'
    prepare_cohort(cases, {'HN-SYN-001': 0, 'HN-SYN-002': 1, 'HN-SYN-003': 1}, out, spacing=2.0, size=16, window=(-100, 100), progress=False)
    ds = CohortDataset(out)
    assert ds.ids == ['HN-SYN-001', 'HN-SYN-002', 'HN-SYN-003'] and ds.labels.tolist() == [0, 1, 1] and ds.labels.dtype.kind == 'i'
    assert ds.spacing == (2.0, 2.0, 2.0) and ds.window == (-100.0, 100.0) and len(ds) == 3
    x, y = ds[1]
    assert x.shape == (2, 16, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.float32 and y.shape == () and y.item() == 1
    np.testing.assert_array_equal(x.numpy(), np.load(out/'cases'/'HN-SYN-002.npy'))
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 2, 16, 16, 16) and yb.tolist() == [0., 1., 1.]
    sub = CohortDataset(out, ids=['HN-SYN-003', 'HN-SYN-001'], transform=lambda t: t.flip(-1))
    assert sub.ids == ['HN-SYN-003', 'HN-SYN-001'] and sub.labels.tolist() == [1, 0]
    assert torch.equal(sub[1][0], ds[0][0].flip(-1))
    with pytest.raises(CohortError, match=r"ids not in index.csv: \['HN-X'\]"): CohortDataset(out, ids=['HN-X'])
    with pytest.raises(CohortError, match='no index.csv; run prepare_cohort first'): CohortDataset(tmp_path)
    np.save(out/'cases'/'HN-SYN-002.npy', np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(CohortError, match=r'HN-SYN-002.npy: shape \(2, 8, 8, 8\), expected \(2, 16, 16, 16\)'): ds[1]


def test_preprocess_reads_only_the_box_it_needs():
    "Sampling a sub-box gives exactly what sampling the whole CT gives, at the scan's borders too."
    from scipy import ndimage
    from fgflow.data import _crop_coords
    ct, m, _ = oblique_case()
    m2 = np.zeros_like(m); m2[0, 0:3, 0:3] = True                       # GTV in a corner: the crop leaves the scan
    for mask in (m, m2):
        x, meta = preprocess(ct, mask, spacing=1.3, size=20)
        kji = _crop_coords(ct, np.array(meta['origin']), 1.3, 20)
        hu = ndimage.map_coordinates(ct.array, kji, order=1, mode='constant', cval=-1000.)
        occ = ndimage.map_coordinates(mask.astype(np.float32), kji, order=1, mode='constant', cval=0.)
        np.testing.assert_allclose(x[0], (np.clip(hu, -200, 300) + 200) / 500, atol=1e-6)
        np.testing.assert_allclose(x[1], occ, atol=1e-6)


def test_prepare_cohort_interrupted_run_keeps_finished_cases(tmp_path, monkeypatch):
    import fgflow.data as D
    cases = _nifti_cohort(tmp_path/'nii', 3)
    labels = {c.id: 1 for c in cases}
    orig, calls = D.preprocess, []
    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return orig(*a, **k)
    monkeypatch.setattr(D, 'preprocess', boom)
    with pytest.raises(KeyboardInterrupt): prepare_cohort(cases, labels, tmp_path/'c', size=8, progress=False)
    assert pd.read_csv(tmp_path/'c'/'index.csv').id.tolist() == ['HN-SYN-001']
    assert [p.name for p in (tmp_path/'c'/'cases').iterdir()] == ['HN-SYN-001.npy']     # no temporary file left behind
    monkeypatch.undo()
    rep = prepare_cohort(cases, labels, tmp_path/'c', size=8, progress=False)
    assert rep.reused == ['HN-SYN-001'] and rep.prepared == ['HN-SYN-001', 'HN-SYN-002', 'HN-SYN-003']


from hypothesis import given, settings, strategies as st


@settings(max_examples=12, deadline=None, derandomize=True)
@given(rx=st.floats(-40, 40), ry=st.floats(-40, 40), sk=st.floats(1.0, 3.0), sj=st.floats(0.6, 1.4), si=st.floats(0.6, 1.4),
       c=st.tuples(st.floats(-50, 50), st.floats(-50, 50), st.floats(-50, 50)))
def test_preprocess_property_any_orientation(rx, ry, sk, sj, si, c):
    "Whatever the grid's tilt and voxel size: the crop is centred on the GTV and keeps its volume; HU stay exact."
    shape = (int(np.ceil(44 / sk)), int(np.ceil(44 / sj)), int(np.ceil(44 / si)))
    ct, m, field = oblique_case(shape=shape, sp=(sk, sj, si), centre=c, semi=(8., 6., 10.), rot=(rx, ry))
    x, meta = preprocess(ct, m, spacing=1.0, size=28, window=(-1000, 1000))
    w = x[1] / x[1].sum(); g = np.arange(28) - 13.5
    for ax in range(3):
        assert abs((w.sum(axis=tuple(a for a in range(3) if a != ax)) * g).sum()) < 0.25
    assert abs(x[1].sum() / meta['volume_mm3'] - 1) < 0.03
    assert abs(meta['volume_mm3'] / (4 / 3 * np.pi * 480) - 1) < 0.08
    core = x[1] > 0.999                                                    # inside the GTV: well inside the scan
    np.testing.assert_allclose((-1000 + 2000 * x[0])[core], field(_grid(meta, 28))[core], atol=0.1)


# ---------------------------------------------------------------- a real download: which RTSTRUCT, which CT, every patient
# A simulated NBIA download of Head-Neck-PET-CT, written as real DICOM with fgflow.phantoms' writers: a PET sharing the
# CT's frame of reference with its own RTSTRUCT (contours on PET slice positions), a planning CT in its own frame of
# reference, a tie, a patient without a GTV, one without a label, one in the table only. Laid out with the retriever's
# descriptive folder names (spaces, accents, dots) or with UID-named folders, and in both orders of the two RTSTRUCTs.
from fgflow.phantoms import write_ct_series as ph_write_ct, write_rtstruct as ph_write_rt, _uid as ph_uid
from fgflow.data import FoundCases, rtstruct_mask, read_rtstruct

PET_CLASS = '1.2.840.10008.5.1.4.1.1.128'
CT_GRID = dict(shape=(12, 24, 24), spacing=(2.0, 1.5, 1.5), origin=np.array([-17.25, -17.25, -11.0]))
PET_GRID = dict(shape=(9, 16, 16), spacing=(2.7, 2.4, 2.4), origin=np.array([-18.0, -18.0, -10.3]))
PLAN_GRID = dict(shape=(10, 20, 20), spacing=(2.5, 1.8, 1.8), origin=np.array([-12.1, -14.1, -13.25]))


def _ellipsoid(geom, centre, semi=(7., 6., 6.5)):
    (nz, ny, nx), (sz, sy, sx), o = geom['shape'], geom['spacing'], geom['origin']
    z, y, x = np.meshgrid(o[2] + sz * np.arange(nz), o[1] + sy * np.arange(ny), o[0] + sx * np.arange(nx), indexing='ij')
    return ((x - centre[0]) / semi[0])**2 + ((y - centre[1]) / semi[1])**2 + ((z - centre[2]) / semi[2])**2 <= 1


def _image(geom, gtv):
    hu = np.full(geom['shape'], -1000, np.int16); hu[:, 2:-2, 2:-2] = 30; hu[gtv] = 60
    return hu


def _patch(path, **kw):
    "Rewrite a DICOM file with attributes changed (UIDs of another study / frame, another modality ...)."
    ds = pydicom.dcmread(path)
    for k, v in kw.items():
        if k == 'for':
            for fr in ds.get('ReferencedFrameOfReferenceSequence', []): fr.FrameOfReferenceUID = v
            for r in ds.get('StructureSetROISequence', []): r.ReferencedFrameOfReferenceUID = v
            if 'FrameOfReferenceUID' in ds: ds.FrameOfReferenceUID = v
        else: setattr(ds, k, v)
    if 'SOPInstanceUID' in kw: ds.file_meta.MediaStorageSOPInstanceUID = kw['SOPInstanceUID']
    if 'SOPClassUID' in kw: ds.file_meta.MediaStorageSOPClassUID = kw['SOPClassUID']
    ds.save_as(path, enforce_file_format=True)


def _ct(stage, pid, seed, geom, rois, desc):
    "A CT series and its RTSTRUCT (drawn on it); returns the series' uids and the RTSTRUCT file."
    sl = ph_write_ct(_image(geom, next(iter(rois.values()))), geom, stage/f'{pid}-{seed}-ct', pid, seed)
    rt = stage/f'{pid}-{seed}-rt'/'rt.dcm'
    ph_write_rt({n: (m, [255, 0, 0], 'GTV') for n, m in rois.items()}, geom, sl, rt, pid, seed)
    ds = pydicom.dcmread(rt)
    return dict(series=ph_uid(seed, pid, 'series', 'CT'), for_uid=ph_uid(seed, pid, 'for'), study=ph_uid(seed, pid, 'study'),
                rt=rt, rt_sop=str(ds.SOPInstanceUID), desc=desc)


def _pet(stage, pid, seed, ct, rois):
    "A PET series in `ct`'s study and frame of reference, with its own RTSTRUCT drawn on PET slice positions."
    pet = _ct(stage, pid, seed, PET_GRID, rois, None)
    for f in sorted((stage/f'{pid}-{seed}-ct').iterdir()):
        _patch(f, Modality='PT', SOPClassUID=PET_CLASS, StudyInstanceUID=ct['study'], **{'for': ct['for_uid']})
    _patch(pet['rt'], StudyInstanceUID=ct['study'], **{'for': ct['for_uid']})
    return pet


def _seed_for(pid, ct_first, base):
    "A seed whose RTSTRUCT series UIDs (CT's: seed, PET's: seed + 1) sort in the wanted order (UID-named folders)."
    return next(s for s in range(base, base + 200, 2)
                if (ph_uid(s, pid, 'series', 'RTSTRUCT') < ph_uid(s + 1, pid, 'series', 'RTSTRUCT')) == ct_first)


def build_download(root, scheme, ct_rt_first):
    """Stage the patients' DICOM files, then lay them out as `scheme` ('nbia': retriever names; 'uid': UID folders) with the
    CT's RTSTRUCT folder sorting before (ct_rt_first) or after the PET's. Returns the truth: pid -> what must be used."""
    stage, truth, names = Path(root)/'stage', {}, {}
    c = np.array([1., -2., 0.5])
    # 1: PET/CT, the PET sharing the CT's frame of reference; RTSTRUCTs on the CT and on the PET ('GTVn' listed first)
    pid = 'HN-CHUM-001'; s = _seed_for(pid, ct_first=ct_rt_first, base=10)
    rois = lambda g: {'GTVn': _ellipsoid(g, c + [-8, 6, 0], (3, 3, 3)), 'GTV': _ellipsoid(g, c)}
    ct = _ct(stage, pid, s, CT_GRID, rois(CT_GRID), 'CT IMAGES - RESEARCH'); pet = _pet(stage, pid, s + 1, ct, rois(PET_GRID))
    truth[pid] = ct; names[pid] = {'ct': ct, 'rt': (ct, 'RTstructCTsim-CTPET-CT'), 'pet': pet, 'rt_pet': (pet, 'RTstructCTsim-PETPET-CT')}
    # 2: the PET/CT (CT + PET, the PET's RTSTRUCT only) and a planning CT in its own frame of reference with its RTSTRUCT
    pid = 'HN-HGJ-002'; s = _seed_for(pid, ct_first=ct_rt_first, base=21)
    rois = lambda g, d=(0, 0, 0): {'GTV1': _ellipsoid(g, c + d)}
    ctp = _ct(stage, pid, s + 100, CT_GRID, rois(CT_GRID), 'CT IMAGES'); pet = _pet(stage, pid, s + 1, ctp, rois(PET_GRID))
    plan = _ct(stage, pid, s, PLAN_GRID, rois(PLAN_GRID, (3., -1., -2.)), 'Kilovoltage CT Imaging')
    truth[pid] = plan; names[pid] = {'ct': ctp, 'pet': pet, 'rt_pet': (pet, 'RTstructCTsim-PETPET-CT'), 'plan': plan, 'rt': (plan, 'RTstruct')}
    # 4: two RTSTRUCTs drawn on the same CT, both with the GTV: a tie
    pid = 'HN-CHUS-004'
    a = _ct(stage, pid, 40, CT_GRID, {'GTV': _ellipsoid(CT_GRID, c)}, 'CT IMAGES')
    b = dict(a, rt=stage/f'{pid}-b-rt'/'rt.dcm'); b['rt'].parent.mkdir(parents=True); shutil.copy(a['rt'], b['rt'])
    _patch(b['rt'], SOPInstanceUID=ph_uid(41, pid, 'rt'), SeriesInstanceUID=ph_uid(41, pid, 'rts'), StructureSetLabel='copy')
    names[pid] = {'ct': a, 'rt': (a, 'RTstruct'), 'rt_b': (b, 'RTstruct resent')}
    # 5: images but no row in the clinical table; 6: an RTSTRUCT without a GTV
    pid = 'HN-CHUS-005'; e = _ct(stage, pid, 50, CT_GRID, {'GTV': _ellipsoid(CT_GRID, c)}, 'CT IMAGES')
    names[pid] = {'ct': e, 'rt': (e, 'RTstruct')}
    pid = 'HN-HMR-006'; f = _ct(stage, pid, 60, CT_GRID, {'BODY': _ellipsoid(CT_GRID, c, (12, 12, 12))}, 'CT IMAGES')
    names[pid] = {'ct': f, 'rt': (f, 'RTstruct')}
    # lay out: one folder per series
    for pid, d in names.items():
        order = ['rt', 'rt_pet'] if ct_rt_first else ['rt_pet', 'rt']
        num = {k: i for i, k in enumerate(order + ['rt_b', 'ct', 'pet', 'plan'], 1)}
        for k, v in d.items():
            src = v[0]['rt'].parent if k.startswith('rt') else Path(str(v['rt'].parent)[:-3] + '-ct')
            if k == 'rt_b': src = v[0]['rt'].parent
            for f in sorted(src.iterdir()):
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                if scheme == 'uid': dst = Path(root)/'dl'/pid/str(ds.StudyInstanceUID)/str(ds.SeriesInstanceUID)/f'{ds.SOPInstanceUID}.dcm'
                else:
                    desc = v[1] if k.startswith('rt') else (v['desc'] or 'PET AC')
                    dst = (Path(root)/'dl'/'Head-Neck-PET-CT'/pid/f'08-27-1885-PANC. avec C.A. SPHÈRE ORL tête et cou -TP-{7422 + len(pid)}'
                           / f'{num[k]}.000000-{desc}-{45294 + num[k]}'/f'1-{int(ds.get("InstanceNumber", 1)):02d}.dcm')
                dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy(f, dst)
    shutil.rmtree(stage)
    return truth, names


def _tables(root):
    "Clinical table (CSV; HN-HMR-003 has no images, HN-CHUS-005 no row) and the GTV-name table."
    (root/'clin.csv').write_text('Patient #,Distant\nHN-CHUM-001,1\nHN-HGJ-002,0\nHN-HMR-003,1\nHN-CHUS-004,0\nHN-HMR-006,0\n')
    (root/'gtv.csv').write_text('Patient,Name GTV Primary\nHN-CHUM-001,GTV\nHN-HGJ-002,GTV1\nHN-HMR-003,GTV\nHN-CHUS-004,GTV\n')
    return read_clinical(root/'clin.csv', gtv_table=root/'gtv.csv')


def _dice(a, b): return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize('scheme,ct_rt_first', [('nbia', True), ('nbia', False), ('uid', True), ('uid', False)])
def test_download_pairs_the_cts_own_rtstruct_and_accounts_for_every_patient(tmp_path, scheme, ct_rt_first):
    truth, names = build_download(tmp_path, scheme, ct_rt_first)
    dl = tmp_path/'dl'
    files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
             for f in dl.rglob('*.dcm') if pydicom.dcmread(f, stop_before_pixels=True).Modality == 'RTSTRUCT'}
    order = sorted(files, key=lambda u: str(files[u]))
    a = names['HN-CHUM-001']
    assert (order.index(a['rt'][0]['rt_sop']) < order.index(a['rt_pet'][0]['rt_sop'])) == ct_rt_first   # the layout is as meant
    clin = _tables(tmp_path)
    found = find_cases(dl, progress=False, rois=clin['roi'])
    assert isinstance(found, FoundCases) and [c.id for c in found.cases] == ['HN-CHUM-001', 'HN-CHUS-005', 'HN-HGJ-002']
    rep = prepare_cohort(found, clin, tmp_path/'cache', spacing=2.0, size=16, progress=False)
    assert rep.prepared == ['HN-CHUM-001', 'HN-HGJ-002']
    # every labelled patient with images: the CT the GTV was drawn on, its own RTSTRUCT, the mask of the CT's contours
    for c in found.cases:
        if c.id not in truth: continue
        t = truth[c.id]
        assert (c.series_uid, c.rtstruct_uid, Path(c.rtstruct)) == (t['series'], t['rt_sop'], files[t['rt_sop']])
        ct, m = load_case(c, clin.loc[c.id, 'roi'])
        own = rtstruct_mask(files[t['rt_sop']], ct, clin.loc[c.id, 'roi'])
        assert _dice(m, own) >= 0.99 and own.sum() > 100
        assert c.pairing == "references the CT series, contours on the CT's slices"
    # the PET's contours on the CT would not pass: the test can tell the two RTSTRUCTs apart
    c1 = found.cases[0]; ct1 = load_case(c1, 'GTV')[0]
    with pytest.warns(UserWarning, match='between slice planes'):
        pet_on_ct = rtstruct_mask(files[a['rt_pet'][0]['rt_sop']], ct1, 'GTV')
    assert _dice(pet_on_ct, rtstruct_mask(files[a['rt'][0]['rt_sop']], ct1, 'GTV')) < 0.97
    # every patient not prepared, named with its reason; report.csv in the cache lists every patient
    rows = pd.read_csv(tmp_path/'cache'/'report.csv', keep_default_na=False).set_index('id')
    assert sorted(rows.index) == ['HN-CHUM-001', 'HN-CHUS-004', 'HN-CHUS-005', 'HN-HGJ-002', 'HN-HMR-003', 'HN-HMR-006']
    assert rows.status.to_dict() == {'HN-CHUM-001': 'prepared', 'HN-CHUS-004': 'ambiguous pairing', 'HN-CHUS-005': 'no label',
                                     'HN-HGJ-002': 'prepared', 'HN-HMR-003': 'no images', 'HN-HMR-006': 'no GTV'}
    assert set(rep.skipped) == {'HN-CHUS-004', 'HN-CHUS-005', 'HN-HMR-003', 'HN-HMR-006'}
    tie = rep.skipped['HN-CHUS-004']
    d4 = names['HN-CHUS-004']
    assert tie.startswith('ambiguous pairing for patient HN-CHUS-004') and str(files[d4['rt'][0]['rt_sop']]) in tie \
        and str(files[d4['rt_b'][0]['rt_sop']]) in tie
    assert rows.loc['HN-HMR-003', 'reason'] == 'labelled in the clinical table, but no images of HN-HMR-003 were found'
    assert rows.loc['HN-HMR-003', 'in_table'] and not rows.loc['HN-HMR-003', 'on_disk']
    assert "no ROI matching 'GTV'" not in rows.loc['HN-HMR-006', 'reason'] and "'^GTV'" in rows.loc['HN-HMR-006', 'reason']
    for pid in truth:
        assert (rows.loc[pid, 'ct_series_uid'], rows.loc[pid, 'rtstruct_sop_uid']) == (truth[pid]['series'], truth[pid]['rt_sop'])
        assert rows.loc[pid, 'rtstruct'] == str(files[truth[pid]['rt_sop']]) and rows.loc[pid, 'roi'] in ('GTV', 'GTV1')
    j = json.loads((tmp_path/'cache'/'report.json').read_text())
    assert j['counts'] == {'ambiguous pairing': 1, 'no GTV': 1, 'no images': 1, 'no label': 1, 'prepared': 2}
    assert 'no images 1 (HN-HMR-003)' in rep.summary() and 'ambiguous pairing 1 (HN-CHUS-004)' in rep.summary()


def test_cli_prepare_names_every_patient_not_prepared_even_quiet(tmp_path, capsys):
    from fgflow import cli
    truth, _ = build_download(tmp_path, 'nbia', False)
    _tables(tmp_path)
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        rc = cli.main(['prepare', '--dicom', str(tmp_path/'dl'), '--clinical', str(tmp_path/'clin.csv'), '--gtv-table',
                       str(tmp_path/'gtv.csv'), '--out', str(tmp_path/'cache'), '--size', '16', '--spacing', '2', '--quiet'])
    out = capsys.readouterr().out
    assert rc == 0 and not [x for x in w if 'between slice planes' in str(x.message)]   # the PET's contours would warn
    lines = out.splitlines()
    for pid, why in [('HN-HMR-003', 'labelled in the clinical table, but no images of HN-HMR-003 were found'),
                     ('HN-CHUS-005', 'no label for HN-CHUS-005 in the clinical table'),
                     ('HN-CHUS-004', 'ambiguous pairing for patient HN-CHUS-004: '),
                     ('HN-HMR-006', "no RTSTRUCT of patient HN-HMR-006 has an ROI matching '^GTV'")]:
        assert sum(l.startswith(f'skipped {pid}: {why}') for l in lines) == 1, (pid, out)
    assert 'prepared 2 cases (0 reused), skipped 4' in out
    assert ('6 patients (5 in the clinical table, 5 found on disk): prepared 2; ambiguous pairing 1 (HN-CHUS-004); '
            'no GTV 1 (HN-HMR-006); no images 1 (HN-HMR-003); no label 1 (HN-CHUS-005); report: ') in out
    assert pd.read_csv(tmp_path/'cache'/'index.csv').id.tolist() == sorted(truth)


def test_petct_ct_and_planning_ct_both_with_their_own_gtv(tmp_path):
    "Each CT has its own GTV RTSTRUCT: a tie named by both files, unless `prefer` says which kind of CT to take."
    stage, pid, c = tmp_path/'dl', 'HN-HGJ-007', np.array([1., -2., 0.5])
    g = lambda geom, d=(0, 0, 0): {'GTV1': _ellipsoid(geom, c + d)}
    ctp = _ct(stage, pid, 70, CT_GRID, g(CT_GRID), None); _pet(stage, pid, 71, ctp, g(PET_GRID))
    plan = _ct(stage, pid, 72, PLAN_GRID, g(PLAN_GRID, (3., -1., -2.)), None)
    (c0,), _ = find_cases(stage, rois={pid: 'GTV1'}, prefer='pet-ct')     # the PET's RTSTRUCT is never a candidate
    (c1,), _ = find_cases(stage, rois={pid: 'GTV1'}, prefer='planning')
    assert (c0.series_uid, c0.rtstruct_uid) == (ctp['series'], ctp['rt_sop']) and "PET/CT CT preferred (prefer='pet-ct')" in c0.pairing
    assert (c1.series_uid, c1.rtstruct_uid) == (plan['series'], plan['rt_sop']) and "planning CT preferred" in c1.pairing
    found = find_cases(stage, rois={pid: 'GTV1'})
    status, why = found.patients[pid]
    assert found.cases == [] and status == 'ambiguous pairing' and str(ctp['rt']) in why and str(plan['rt']) in why
    assert "prefer='pet-ct' or 'planning' decides" in why
    with pytest.raises(CohortError, match="prefer='petct': expected 'pet-ct', 'planning' or None"): find_cases(stage, prefer='petct')
