"""fgflow.features: gradients (gradcheck), degeneracy, whole-batch gradients, registry and noise features."""
import math
import numpy as np, pytest, torch
from fgflow.features import (FEATURES, FeatureError, FeatureSet, NoiseFeatures, feature_gradients, feature_values,
                             random_linear_features, register_feature)

ALL = ['volume', 'surface_area', 'sphericity', 'major_axis_length', 'minor_axis_length', 'least_axis_length',
       'elongation', 'flatness', 'centroid_x', 'centroid_y', 'centroid_z', 'mean', 'variance', 'skewness', 'kurtosis']
SPACING = (1.5, 0.8, 1.1)


def soft_input(shape=(7, 7, 7), seed=0, batch=1, dtype=torch.float64):
    "A soft ellipsoidal mask with occupancies in [0.05, 0.4] outside and [0.6, 0.95] inside, and a random CT."
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=dtype) - (n - 1) / 2 for n in shape], indexing='ij')
    inside = (z / 2.6)**2 + (y / 2.2)**2 + (x / 1.8)**2 <= 1
    u = torch.rand(batch, *shape, generator=g, dtype=dtype)
    m = torch.where(inside, 0.6 + 0.35 * u, 0.05 + 0.35 * u)
    ct = torch.rand(batch, *shape, generator=g, dtype=dtype)
    return torch.stack([ct, m], 1)


def test_all_features_registered():
    assert set(ALL) <= set(FEATURES)
    for n in ALL: assert FEATURES[n].name == n and FEATURES[n].description


@pytest.mark.parametrize('name', ALL)
def test_gradcheck(name):
    x = soft_input().requires_grad_(True)
    f = FEATURES[name]
    assert torch.autograd.gradcheck(lambda t: f(t, SPACING, (-100., 400.)), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_soft_mask_mesh_is_nontrivial():
    "The gradcheck input's 0.5-isosurface is an interpolated (not midpoint) closed mesh."
    x = soft_input()
    s = FEATURES['sphericity'](x, SPACING)
    assert 0.5 < float(s) < 1.0
    assert float(FEATURES['surface_area'](x, SPACING)) > 0


def sphere(n=11, r=4.0):
    c = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    z, y, x = torch.meshgrid(c, c, c, indexing='ij')
    m = ((z**2 + y**2 + x**2) <= r**2).double()
    return torch.stack([torch.full_like(m, 0.5), m])[None]


def test_sphere_finite_values_and_gradients():
    x = sphere()
    v, G = feature_values(x, ALL), feature_gradients(x, ALL)
    assert torch.isfinite(v).all() and torch.isfinite(G).all()
    d = dict(zip(ALL, v[0].tolist()))
    assert d['major_axis_length'] == pytest.approx(d['least_axis_length'], rel=1e-12)
    assert d['elongation'] == pytest.approx(1.0) and d['flatness'] == pytest.approx(1.0)
    k = {n: i for i, n in enumerate(ALL)}
    # the averaged subgradient: all three axis lengths share the gradient of the mean eigenvalue
    assert torch.allclose(G[0, k['major_axis_length']], G[0, k['least_axis_length']])
    assert G[0, k['elongation']].abs().max() < 1e-12 and G[0, k['flatness']].abs().max() < 1e-12
    # the mean-eigenvalue gradient makes growing the sphere's shell increase every axis length
    gm = G[0, k['major_axis_length'], 1]
    assert gm[5, 5, 9] > 0 > gm[5, 5, 5]


def test_near_degenerate_gradient_is_finite():
    "A sphere nudged off degeneracy by 1e-7: gradients stay finite (the ill-conditioning is in eigenvectors only)."
    x = sphere().clone()
    x[0, 1, 5, 5, 9] += 1e-7
    G = feature_gradients(x, ['major_axis_length', 'minor_axis_length', 'elongation'])
    assert torch.isfinite(G).all()


def test_zero_eigenvalue_plate():
    "A one-voxel-thick plate has least axis 0 and flatness 0 with finite (zero) gradients."
    x = torch.zeros(1, 2, 5, 8, 8, dtype=torch.float64); x[0, 1, 2, 1:7, 2:6] = 1
    v, G = feature_values(x, ['least_axis_length', 'flatness']), feature_gradients(x, ['least_axis_length', 'flatness'])
    assert v.abs().max() < 1e-6 and torch.isfinite(G).all()


def test_batch_gradients_equal_per_sample_loop():
    x = soft_input(batch=3, seed=1)
    G = feature_gradients(x, ALL, SPACING, (-100., 400.))
    assert G.shape == (3, len(ALL), 2, 7, 7, 7) and not G.requires_grad
    for b in range(3):
        for k, n in enumerate(ALL):
            xb = x[b:b + 1].clone().requires_grad_(True)
            g, = torch.autograd.grad(FEATURES[n](xb, SPACING, (-100., 400.)).sum(), xb)
            assert torch.allclose(G[b, k], g[0], rtol=1e-10, atol=1e-12), (b, n)
    v = feature_values(x, ALL, SPACING, (-100., 400.))
    for b in range(3):
        assert torch.allclose(v[b], feature_values(x[b:b + 1], ALL, SPACING, (-100., 400.))[0])


def test_float32_batch_and_featureset():
    x = soft_input(batch=2, dtype=torch.float32)
    fs = FeatureSet(['volume', 'sphericity', 'elongation', 'kurtosis'], spacing=SPACING)
    assert len(fs) == 4 and fs.names == ['volume', 'sphericity', 'elongation', 'kurtosis']
    v, G = fs.values(x), fs.gradients(x)
    assert v.dtype == torch.float32 and v.shape == (2, 4) and G.shape == (2, 4, 2, 7, 7, 7)
    assert torch.allclose(v, feature_values(x.double(), fs.names, SPACING).float(), rtol=1e-5)


def test_centroid_axes_follow_patient_axes():
    "Moving the mask along array axis 2 moves centroid_x, axis 1 centroid_y, axis 0 centroid_z."
    x = torch.zeros(1, 2, 9, 9, 9); x[0, 1, 4, 4, 4] = 1
    for ax, name in ((2, 'centroid_x'), (1, 'centroid_y'), (0, 'centroid_z')):
        y = torch.roll(x, 2, dims=2 + ax)
        assert float(FEATURES[name](y, SPACING)) == pytest.approx(2 * SPACING[ax])
        others = [n for n in ('centroid_x', 'centroid_y', 'centroid_z') if n != name]
        assert all(float(FEATURES[o](y, SPACING)) == 0 for o in others)


def test_register_feature_decorator_and_errors():
    @register_feature('test_max_occupancy', unit='1', description='a test feature')
    def _f(x, spacing, window): return x[:, 1].flatten(1).sum(1) * 2
    try:
        assert FEATURES['test_max_occupancy'].unit == '1'
        x = soft_input()
        assert torch.allclose(feature_gradients(x, ['test_max_occupancy'])[0, 0, 1], torch.full((7, 7, 7), 2., dtype=torch.float64))
        register_feature('test_bad_shape', lambda x, s, w: x.sum())
        with pytest.raises(FeatureError, match=r"feature 'test_bad_shape' returned shape \(\), expected \(1,\)"):
            feature_gradients(x, ['test_bad_shape'])
    finally:
        FEATURES.pop('test_max_occupancy', None); FEATURES.pop('test_bad_shape', None)
    with pytest.raises(FeatureError, match=r"unknown feature\(s\) \['elongaton'\]"):
        feature_values(soft_input(), ['volume', 'elongaton'])
    with pytest.raises(FeatureError, match='spacing needs 3 values'):
        FeatureSet(['volume'], spacing=(1., 1.))


# ---- noise features -------------------------------------------------------------------------------

def test_noise_cos2_is_one_over_d():
    "For global noise, the mean cos^2 with a fixed direction is 1/d."
    shape = (2, 8, 8, 8); d = math.prod(shape)
    nf = random_linear_features(400, shape, seed=0)
    u = torch.randn(d, generator=torch.Generator().manual_seed(99))
    cos2 = (nf.weights @ u)**2 / (nf.weights.norm(dim=1)**2 * u.norm()**2)
    assert cos2.mean().item() == pytest.approx(1 / d, rel=0.25)
    assert abs(nf.weights.mean().item()) < 0.01 and nf.weights.std().item() == pytest.approx(1.0, rel=0.01)


def test_noise_seed_determinism_and_channel():
    a = random_linear_features(3, (2, 4, 5, 6), seed=7)
    assert torch.equal(a.weights, random_linear_features(3, (2, 4, 5, 6), seed=7).weights)
    assert not torch.equal(a.weights, random_linear_features(3, (2, 4, 5, 6), seed=8).weights)
    c = random_linear_features(3, (2, 4, 5, 6), seed=7, channel=0).weights.view(3, 2, -1)
    assert c[:, 1].abs().max() == 0 and c[:, 0].abs().min() > 0
    assert a.weights.dtype == torch.float32 and a.names == ['noise_000', 'noise_001', 'noise_002']


def test_noise_mask_support_values_and_gradients():
    x = soft_input(batch=2, dtype=torch.float32)
    nf = random_linear_features(5, (2, 7, 7, 7), seed=1, support='mask')
    s = nf.support(x)
    assert s.shape == (2, 2 * 343)
    m = (x[:, 1] > 0.5).float().reshape(2, -1)
    assert torch.equal(s, torch.cat([m, m], 1))
    G = nf.gradients(x)
    assert G.shape == (2, 5, 2, 7, 7, 7)
    xr = x.clone().requires_grad_(True)
    for k in range(5):
        g, = torch.autograd.grad(nf.values(xr)[:, k].sum(), xr)
        assert torch.allclose(g, G[:, k])
    assert torch.allclose(nf.values(x), (x.reshape(2, -1) * s) @ nf.weights.T, rtol=1e-5)
    assert random_linear_features(5, (2, 7, 7, 7)).support(x) is None
    s1 = random_linear_features(5, (2, 7, 7, 7), channel=1, support='mask').support(x)
    assert torch.equal(s1, torch.cat([torch.zeros_like(m), m], 1))


def test_noise_smooth_unit_variance_and_correlation():
    nf = random_linear_features(6, (1, 20, 20, 20), seed=2, smooth=1.5)
    w = nf.weights.view(6, 20, 20, 20)
    assert w.var().item() == pytest.approx(1.0, rel=0.2)
    for ax in (1, 2, 3):
        c = (w.narrow(ax, 1, 19) * w.narrow(ax, 0, 19)).mean().item()
        assert c == pytest.approx(math.exp(-1 / (4 * 1.5**2)), abs=0.08)   # Gaussian autocorrelation at lag 1
    # edges are as variable as the centre (drawn on a padded grid)
    assert w[:, 0].var().item() == pytest.approx(w[:, 10].var().item(), rel=0.35)


def test_noise_errors():
    with pytest.raises(FeatureError, match='support must be None or'):
        random_linear_features(2, (2, 4, 4, 4), support='box')
    with pytest.raises(FeatureError, match="dilate=2 needs support='mask'"):
        random_linear_features(2, (2, 4, 4, 4), dilate=2)
    with pytest.raises(FeatureError, match='channel 2 out of range for 2 channels'):
        random_linear_features(2, (2, 4, 4, 4), channel=2)
    with pytest.raises(FeatureError, match=r'shape must be \(C, D, H, W\)'):
        random_linear_features(2, (4, 4, 4))
    nf = random_linear_features(2, (2, 4, 4, 4))
    with pytest.raises(FeatureError, match=r'inputs of shape \(B, \(2, 4, 4, 4\)\), found \(1, 2, 4, 4, 5\)'):
        nf.values(torch.zeros(1, 2, 4, 4, 5))


def _autograd_gradients(x, names, sp, win):
    from fgflow.features import _lookup
    out = []
    for f in _lookup(names):
        xr = x.detach().requires_grad_(True)
        g, = torch.autograd.grad(f(xr, sp, win).sum(), xr, allow_unused=True)
        out.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(out, 1)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_closed_form_gradients_equal_autograd(dtype):
    "feature_gradients' shared closed forms (and one mesh for two features) equal per-feature autograd."
    from fgflow.features import FEATURES, feature_gradients
    g = torch.Generator().manual_seed(0)
    n = 14
    c = torch.arange(n, dtype=torch.float64) - n / 2 + 0.5
    zz, yy, xx = torch.meshgrid(c, c, c, indexing='ij')
    x = torch.rand(4, 2, n, n, n, generator=g, dtype=torch.float64)
    r = ((zz / 4)**2 + (yy / 2.5)**2 + (xx / 5.5)**2).sqrt()
    x[:3, 1] = torch.sigmoid((1 - r) * 4 + 0.3 * torch.randn(3, n, n, n, generator=g, dtype=torch.float64))
    x[3, 1] = (zz**2 + yy**2 + xx**2 < 16).double()            # a sphere: degenerate eigenvalues
    x = x.to(dtype)
    names = list(FEATURES)[::-1]                                   # any order
    sp, win = (2.5, 0.9, 1.1), (-150., 250.)
    a, b = feature_gradients(x, names, sp, win), _autograd_gradients(x, names, sp, win)
    assert a.dtype == dtype and a.shape == (4, len(names), 2, n, n, n)
    for k, name in enumerate(names):
        err = ((a[:, k] - b[:, k]).abs().max() / b[:, k].abs().max()).item()
        assert err < 1e-10, (name, err)


def test_reregistered_builtin_name_uses_autograd():
    from fgflow.features import FEATURES, Feature, feature_gradients
    saved = FEATURES['volume']
    try:
        FEATURES['volume'] = Feature('volume', lambda x, s, w: (x[:, 1] ** 2).sum((1, 2, 3)))
        x = torch.rand(2, 2, 5, 5, 5, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(feature_gradients(x, ['volume'])[:, 0, 1], 2 * x[:, 1])
    finally: FEATURES['volume'] = saved


# --- issue 20: a closed mesh, measured about the mask's bounding box ---------------------------------
from hypothesis import given, settings, strategies as st
from fgflow.features import _mesh, _mesh_topology


def _two_voxels(mirror=False):
    "Two voxels sharing one edge (the ambiguous face of marching cubes); `mirror` flips it along x."
    m = np.zeros((1, 2, 2), bool); m[0, 0, 0] = m[0, 1, 1] = True
    return m[:, :, ::-1] if mirror else m


def _ambiguous_blob():
    "A thresholded smooth blob with several voxels touching only along an edge."
    from scipy import ndimage
    f = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal((9, 10, 11)), 1.0)
    return f > 0.25


TINY = {'one': np.ones((1, 1, 1), bool), 'two': _two_voxels(), 'two_mirrored': _two_voxels(True),
        'corners': np.eye(2, dtype=bool)[:, :, None] * np.eye(2, dtype=bool)[:, None, :], 'blob': _ambiguous_blob()}


def _placements(shape, crop):
    "Offsets of a mask of `shape` in a `crop`: touching each of the six borders, the middle, odd offsets."
    hi = [c - s for c, s in zip(crop, shape)]
    out = [(0, 0, 0), tuple(hi), (hi[0], 1, 0), (0, hi[1], 1), (1, 0, hi[2]), tuple(h // 2 for h in hi), (1, 3, 1), (3, 1, 2)]
    return [tuple(min(o, h) for o, h in zip(p, hi)) for p in out]


def _place(mask, off, crop):
    m = np.zeros(crop); m[tuple(slice(o, o + s) for o, s in zip(off, mask.shape))] = mask
    return torch.from_numpy(np.stack([np.full(crop, 0.5), m]))[None]


def _closed(inside):
    "Every directed mesh edge (vertex = grid edge) is matched by its reverse exactly once: a closed, oriented mesh."
    from collections import Counter
    ends, sign = _mesh_topology(np.pad(inside, 1))
    key = lambda e: tuple(sorted(map(tuple, e)))
    cnt = Counter()
    for tri, s in zip(ends, sign):
        k = [key(e) for e in tri][::int(s)]
        cnt.update((k[i], k[(i + 1) % 3]) for i in range(3))
    return all(c == 1 and cnt[(b, a)] == 1 for (a, b), c in cnt.items())


@pytest.mark.parametrize('key', list(TINY))
def test_mesh_translation_invariant(key):
    "Surface area, mesh volume and sphericity do not depend on where the mask sits in the crop."
    mask = TINY[key]
    crop = tuple(s + 5 for s in mask.shape)
    vals = []
    for off in _placements(mask.shape, crop):
        x = _place(mask, off, crop)
        a, v = _mesh(x, SPACING)
        vals.append([float(a), float(v), float(FEATURES['sphericity'](x, SPACING))])
    vals = np.array(vals)
    spread = (vals.max(0) - vals.min(0)) / vals.max(0)
    assert (spread <= 1e-9).all(), (key, spread)
    assert vals[0, 2] <= 1 + 1e-12 and _closed(mask)


def test_mirrored_two_voxels_convention():
    "The classic table (pyradiomics' lookup) resolves the ambiguous face by orientation; the crack is closed."
    a, v = (np.array([float(t) for t in _mesh(_place(_two_voxels(m), (1, 1, 1), (3, 4, 4)), (1, 1, 1))]) for m in (False, True))
    assert a == pytest.approx([2 * math.sqrt(3), 1 / 3])              # two separate octahedra (pyradiomics: the same)
    assert v == pytest.approx([2.5 * math.sqrt(3) + 0.5, 0.5])        # pyradiomics' open 4.330 mm^2 + the 0.5 mm^2 face quad


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1), st.floats(0.1, 0.9))
def test_sphericity_at_most_one_random_masks(d, h, w, seed, p):
    "Any mask gives a closed mesh: sphericity <= 1, and the value does not move with the placement."
    mask = np.random.default_rng(seed).random((d, h, w)) < p
    if not mask.any(): return
    assert _closed(mask)
    sp = [float(FEATURES['sphericity'](_place(mask, off, (d + 3, h + 3, w + 3)), SPACING)) for off in ((0, 0, 0), (3, 1, 2))]
    assert sp[0] <= 1 + 1e-12 and abs(sp[0] - sp[1]) <= 1e-9 * sp[0]


def test_mesh_volume_equals_skimage_on_padded_mask():
    "Where marching cubes is unambiguous (a soft ellipsoid, touching the crop border) the volume is skimage's."
    from skimage.measure import marching_cubes
    x = soft_input((7, 8, 9))[:, :, 1:, :, 2:]                          # cut so the mask touches two borders
    verts, faces, _, _ = marching_cubes(np.pad(x[0, 1].numpy(), 1), 0.5, spacing=SPACING)
    a_, b_, c_ = (verts[faces[:, i]].astype(np.float64) for i in range(3))
    vol = abs((np.cross(a_, b_) * c_).sum()) / 6
    assert float(_mesh(x, SPACING)[1]) == pytest.approx(vol, rel=1e-5)


@pytest.mark.parametrize('name', ['surface_area', 'sphericity'])
def test_mesh_gradcheck_mask_touching_border(name):
    "Gradients equal finite differences when the mask touches the crop's border (padding, bounding-box origin)."
    x = soft_input((6, 6, 7))[:, :, 1:, :-1].contiguous().requires_grad_(True)
    assert (x[0, 1, 0] > 0.5).any() and (x[0, 1, :, -1] > 0.5).any()
    f = FEATURES[name]
    assert torch.autograd.gradcheck(lambda t: f(t, SPACING), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_feature_repr_has_no_memory_address():
    "The registry prints readably (the docs page shows it): functions by name."
    r = repr(FEATURES)
    assert ' at 0x' not in r and "Feature(name='volume', fn=volume, unit='mm^3'" in r
