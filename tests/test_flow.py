"Known-answer tests of fgflow.flow (tiny volumes)."
import numpy as np, pytest, torch, torch.nn as nn
from captum.attr import Saliency
from fgflow.features import FEATURES, FeatureSet, random_linear_features, register_feature
from fgflow.flow import (FlowError, alignment, fgf_measure, flow_lines, holm, input_gradients,
                         projection_fraction)
from fgflow.model import FGFNet3D


def blobs(B, n=8, seed=0):
    "CT channel uniform noise, mask channel a soft ball of random radius."
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 2, n, n, n, generator=g)
    c = torch.arange(n) - n / 2 + 0.5
    r = torch.stack(torch.meshgrid(c, c, c, indexing='ij')).pow(2).sum(0).sqrt()
    rad = 1.5 + 2 * torch.rand(B, generator=g)
    x[:, 1] = torch.sigmoid((rad.view(-1, 1, 1, 1) - r) * 3)
    return x


class Fn(nn.Module):
    def __init__(self, fn): super().__init__(); self.fn = fn
    def forward(self, x): return self.fn(x)


vol, mean = FEATURES['volume'], FEATURES['mean']


def test_input_gradients_match_captum_and_loop():
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2).train()
    x = torch.randn(3, 2, 8, 8, 8)
    g = input_gradients(m, x)
    torch.testing.assert_close(g, Saliency(m).attribute(x, abs=False), atol=1e-6, rtol=0)
    for i in range(3): torch.testing.assert_close(g[i:i+1], input_gradients(m, x[i:i+1]), atol=1e-6, rtol=0)
    gg = input_gradients(m, x.requires_grad_(), create_graph=True)
    assert gg.requires_grad


def test_projection_fraction_against_lstsq_and_rank_deficiency():
    g = torch.Generator().manual_seed(1)
    gf, G = torch.randn(4, 30, generator=g, dtype=torch.float64), torch.randn(4, 3, 30, generator=g, dtype=torch.float64)
    ref = []
    for i in range(4):
        A = G[i].T.numpy(); c, *_ = np.linalg.lstsq(A, gf[i].numpy(), rcond=None)
        ref.append(np.sum((A @ c) ** 2) / np.sum(gf[i].numpy() ** 2))
    np.testing.assert_allclose(projection_fraction(gf, G).numpy(), ref, rtol=1e-10)
    G2 = torch.cat([G, G[:, :1] * 2 + G[:, 1:2]], 1)           # a dependent 4th row: same span
    np.testing.assert_allclose(projection_fraction(gf, G2).numpy(), ref, rtol=1e-8)
    assert torch.autograd.gradcheck(lambda u: projection_fraction(u, G), gf.clone().requires_grad_())
    z = projection_fraction(torch.stack([torch.zeros(30, dtype=torch.float64), gf[1]]), torch.stack([G[0], G[1] * 0]))
    assert z.isnan().all()
    with pytest.raises(FlowError, match=r"\(B, d\) and G \(B, K, d\)"): projection_fraction(gf, G[:, :, :5])


def test_composite_model_is_aligned_along_every_flow_line():
    x = blobs(4)
    f = Fn(lambda x: 3 * torch.tanh(mean(x) / 40 - 0.5))           # f = h(g), g = mean HU in the mask
    fs = FeatureSet(['mean', 'volume'])
    seen = []
    def cb(t, xt, ft, g, act):
        a = alignment(f, xt[act], fs)
        seen.append(a.cos2)
    fl = flow_lines(f, x, step=0.02, max_steps=400, method='heun', callback=cb)
    assert fl.reached.all() and len(seen) > 5
    c = torch.cat(seen)
    assert (c[:, 0] >= 0.999).all(), c[:, 0].min()
    assert (c[:, 1] < 0.99).all()


def test_two_feature_model_needs_the_set():
    x = blobs(4)
    f = Fn(lambda x: torch.tanh(vol(x) / 60 - 1) + mean(x) / 100 - 0.5)
    a = alignment(f, x, FeatureSet(['volume', 'mean']), sets={'both': ['volume', 'mean']})
    assert (a.sets[:, 0] >= 0.999).all()
    assert (a.cos2 < 0.99).all()
    assert a.n_undefined == 0 and a.to_frame().shape == (4, 3)


@pytest.mark.parametrize('method', ['euler', 'heun'])
def test_linear_model_straight_lines_and_distance(method):
    g = torch.Generator().manual_seed(2)
    w, x0 = torch.randn(1, 4, 4, 4, generator=g), torch.randn(6, 1, 4, 4, 4, generator=g) * 0.3
    f = Fn(lambda x: (x * w).sum((1, 2, 3, 4)) - 0.7)
    step = 0.05
    fl = flow_lines(f, x0, step=step, max_steps=1000, threshold=0.2, method=method, keep_points=True, domain=None)  # x0 ~ N(0, 0.09): no box
    dist = (f(x0) - 0.2).abs() / w.norm()
    assert fl.reached.all()
    assert ((fl.length - dist).abs() < step).all()
    torch.testing.assert_close(fl.length, dist, atol=1e-4, rtol=1e-4)
    for i in range(6):                                          # every point on x0 + t * w/|w|
        d = (fl.points[i, :fl.n_steps[i] + 1] - x0[i]).flatten(1)
        u = w.flatten() / w.norm()
        perp = d - (d @ u)[:, None] * u
        assert perp.norm(dim=1).max() < 1e-4
    torch.testing.assert_close(fl.f[torch.arange(6), fl.n_steps], torch.full((6,), 0.2), atol=1e-4, rtol=0)


def test_not_reached_is_flagged_not_dropped():
    w = torch.ones(1, 2, 2, 2)
    f = Fn(lambda x: (x * w).sum((1, 2, 3, 4)))
    fl = flow_lines(f, torch.full((2, 1, 2, 2, 2), 1.0), step=0.01, max_steps=5)
    assert not fl.reached.any() and (fl.n_steps == 5).all() and fl.f.shape == (2, 6)
    with pytest.raises(FlowError, match='step must be > 0'): flow_lines(f, torch.ones(2, 1, 2, 2, 2), 0, 5)


def test_noise_alignment_is_one_over_d():
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2)
    x = torch.randn(4, 2, 8, 8, 8)
    nf = random_linear_features(200, (2, 8, 8, 8), seed=3)
    a = alignment(m, x, nf)
    d = 2 * 8 ** 3
    assert a.cos2.shape == (4, 200)
    assert abs(a.cos2.mean().item() * d - 1) < 0.2, a.cos2.mean().item() * d
    # the fast path equals the materialized gradients, with and without a mask support
    nm = random_linear_features(5, (2, 8, 8, 8), seed=4, support='mask')
    x[:, 1] = (x[:, 1] > 0).float()
    class Slow:
        names = nm.names
        def gradients(self, x): return nm.gradients(x)
    torch.testing.assert_close(alignment(m, x, nm).cos2, alignment(m, x, Slow()).cos2, rtol=1e-5, atol=1e-10)


def _heldout_noise(x, spacing=None, window=None):
    r = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(123))
    return (x * r).sum((1, 2, 3, 4))


def test_measure_volume_model_significant_heldout_noise_not():
    register_feature('_test_heldout_noise', _heldout_noise, description='test only')
    x = blobs(10)
    f = Fn(lambda x: 3 * torch.tanh(vol(x) / 60 - 1))
    r = fgf_measure(f, x, FeatureSet(['volume', '_test_heldout_noise']), n_noise=199, batch_size=5,
                    method='euler', steps_per_line=8, progress=False, noise='global')   # the paper's baseline: E[cos²] = 1/d
    t = r.table.set_index('name')
    assert t.loc['volume', 'M'] > 0.999 and t.loc['volume', 'p_empirical'] < 0.01
    assert t.loc['volume', 'p_paired'] < 0.01 and t.loc['volume', 'ratio'] > 100
    assert t.loc['_test_heldout_noise', 'p_empirical'] > 0.05 and t.loc['_test_heldout_noise', 'p_paired_holm'] > 0.05
    assert (t.n_used == 10).all() and (t.n_not_reached == 0).all()
    assert len(r.noise) == 199 and r.per_point.shape[0] == 10
    assert abs(t.loc['volume', 'noise_mean'] * 1024 - 1) < 0.5          # noise M ≈ 1/d
    del FEATURES['_test_heldout_noise']


def test_batched_equals_per_sample():
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2)
    x = blobs(3)
    fb = flow_lines(m, x, 0.5, 30, method='heun')
    for i in range(3):
        fi = flow_lines(m, x[i:i+1], 0.5, 30, method='heun')
        torch.testing.assert_close(fb.length[i:i+1], fi.length, atol=1e-5, rtol=1e-5)
        assert fb.n_steps[i] == fi.n_steps[0] and fb.reached[i] == fi.reached[0]
    fs = FeatureSet(['volume'])
    r3 = fgf_measure(m, x, fs, n_noise=5, batch_size=3, max_steps=10, progress=False)
    r1 = fgf_measure(m, x, fs, n_noise=5, batch_size=1, max_steps=10, progress=False)
    np.testing.assert_allclose(r3.per_point.values.astype(float), r1.per_point.values.astype(float), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r3.noise_per_point, r1.noise_per_point, rtol=1e-5, atol=1e-12)


def test_vanishing_gradient_is_nan_and_counted():
    x = blobs(4)
    x[:2, 0] = 0                                                  # model constant (zero gradient) on these
    f = Fn(lambda x: (x[:, 0].flatten(1).sum(1) - 1).clamp(min=0) - 100)
    a = alignment(f, x, FeatureSet(['volume']))
    assert a.cos2[:2].isnan().all() and not a.cos2[2:].isnan().any() and a.n_undefined == 2
    r = fgf_measure(f, x, FeatureSet(['volume']), n_noise=3, max_steps=3, progress=False)
    t = r.table.iloc[0]
    assert t.n_undefined == 2 and t.n_used == 2 and t.n_not_reached == 4
    assert r.per_point.volume.isna().sum() == 2


def test_holm_and_errors():
    np.testing.assert_allclose(holm(np.array([0.04, 0.01, 0.03])), [0.06, 0.03, 0.06])
    with pytest.raises(FlowError, match="'nope'"):
        alignment(Fn(lambda x: x.sum((1, 2, 3, 4))), blobs(1), FeatureSet(['volume']), sets={'s': ['nope']})
    with pytest.raises(FlowError, match='noise must be'):
        fgf_measure(Fn(lambda x: x.sum((1, 2, 3, 4))), blobs(2), FeatureSet(['volume']), noise='pink', progress=False)
    with pytest.raises(FlowError, match='.spacing and .window'):
        fgf_measure(Fn(lambda x: x.sum((1, 2, 3, 4))), blobs(2), ['volume'], progress=False)


@pytest.mark.parametrize('noise', ['mask', 'smooth'])
def test_matched_noise_batching_shapes_and_plot(noise):
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2)
    x = blobs(3, n=10)
    fs, sets = FeatureSet(['volume', 'mean']), {'vm': ['volume', 'mean']}
    r3 = fgf_measure(m, x, fs, sets=sets, n_noise=6, noise=noise, batch_size=3, max_steps=6, progress=False)
    r1 = fgf_measure(m, x, fs, sets=sets, n_noise=6, noise=noise, batch_size=1, max_steps=6, progress=False)
    assert r3.noise_per_point.shape == (3, 3, 6) and r3.noise.shape == (6, 3)
    np.testing.assert_allclose(r3.noise_per_point, r1.noise_per_point, rtol=1e-4, atol=1e-10)  # float32 batched matmuls
    np.testing.assert_allclose(r3.table.noise_mean, r1.table.noise_mean, rtol=1e-4)
    mt = r3.settings['matched']
    assert mt['volume']['channels'] == [1] and 0 in mt['mean']['channels'] and mt['vm']['channels'] == [0, 1]
    assert (mt['volume']['sigma_median'] > 0) == (noise == 'smooth')
    ax = r3.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ['volume', 'mean', 'vm']


def test_set_null_sums_k_noise_features():
    "A k-feature set is compared with the projection on k noise directions of its own (sum of k cos², disjoint draws)."
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2)
    r = fgf_measure(m, blobs(4), FeatureSet(['volume', 'mean']), sets={'vm': ['volume', 'mean']}, n_noise=8,
                    max_steps=4, progress=False, noise='global')
    t = r.table.set_index('name')
    assert t.loc['vm', 'noise_mean'] == pytest.approx(2 * t.loc['volume', 'noise_mean'], rel=1e-12)
    single = r.noise_per_point
    pair = single.reshape(len(single), 4, 2).sum(-1)   # draws (0,1), (2,3), ...: no noise feature in two draws
    assert t.loc['vm', 'noise_sd'] == pytest.approx(np.nanstd(np.nanmean(pair, 0), ddof=1), rel=1e-9)


def test_matched_noise_needs_named_features():
    nz = random_linear_features(3, (2, 8, 8, 8))
    with pytest.raises(FlowError, match='matched noise baseline needs named features'):
        fgf_measure(FGFNet3D(width=2, depth=1), blobs(2), nz, noise='mask', max_steps=2, progress=False)


ALL15 = [n for n in FEATURES if not n.startswith('_')]


class Dense:
    "The same features through the generic path: materialized gradients (B, K, ...)."
    def __init__(self, fs): self.fs, self.names = fs, fs.names
    def gradients(self, x): return self.fs.gradients(x)


def test_factored_alignment_equals_materialized_gradients():
    "A FeatureSet's cos² and set fractions come from G gf, |G_k|² and k x k Gram matrices; they equal the dense path's."
    x = blobs(3, n=10).double()
    w = torch.randn(2, 10, 10, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    f = Fn(lambda x: (x * w).sum((1, 2, 3, 4)) + torch.tanh(vol(x) / 50) + (x[:, 0] * x[:, 1]).sum((1, 2, 3)) ** 2 / 1e3)
    fs = FeatureSet(ALL15, spacing=(1.5, 1., 0.8), window=(-100., 250.))
    sets = {'ve': ['volume', 'elongation'], 'shape': ['major_axis_length', 'minor_axis_length', 'elongation', 'sphericity'],
            'hu': ['mean', 'variance', 'skewness', 'kurtosis', 'centroid_x']}
    a, b = alignment(f, x, fs, sets=sets), alignment(f, x, Dense(fs), sets=sets)
    torch.testing.assert_close(a.cos2, b.cos2, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(a.sets, b.sets, rtol=1e-9, atol=1e-15)
    assert a.n_undefined == b.n_undefined == 0 and (a.sets[:, 1] >= a.cos2[:, [8, 9, 11, 14]].amax(1) - 1e-12).all()


def test_alignment_with_noise_one_backward():
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=2)
    x = blobs(3)
    nz = random_linear_features(9, x.shape[1:], seed=1)
    calls = {'n': 0}
    m.register_forward_hook(lambda *a: calls.__setitem__('n', calls['n'] + 1))
    a = alignment(m, x, FeatureSet(['volume', 'mean']), noise=nz)
    assert calls['n'] == 1 and a.noise.shape == (3, 9)
    torch.testing.assert_close(a.noise, alignment(m, x, nz).cos2, rtol=1e-12, atol=0)
    assert list(a.to_frame().columns) == ['volume', 'mean'] + nz.names
    with pytest.raises(FlowError, match='noise must be NoiseFeatures'): alignment(m, x, FeatureSet(['volume']), noise='global')


def test_projection_fraction_scale_invariant_and_differentiable():
    "Rows on scales 1e3 to 1e-5 span the same space as their unit rows: the fraction is the QR projection's."
    g = torch.Generator().manual_seed(7)
    G = torch.randn(3, 3, 50, generator=g, dtype=torch.float64) * torch.tensor([1e3, 1., 1e-5], dtype=torch.float64)[:, None]
    u = torch.randn(3, 50, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(G.transpose(1, 2))
    ref = (Q.transpose(1, 2) @ u[..., None]).pow(2).sum((1, 2)) / u.pow(2).sum(1)
    torch.testing.assert_close(projection_fraction(u, G), ref, rtol=1e-10, atol=0)
    assert torch.autograd.gradcheck(lambda v: projection_fraction(v, G), u.clone().requires_grad_())


def test_matched_noise_cos2_equals_explicit():
    "MatchedNoise.cos2 (per-channel products, one per smoothing level) equals cos² with r ⊙ s written out."
    from fgflow.flow import MatchedNoise
    x = blobs(3, n=10)
    mn = MatchedNoise(4, x.shape[1:], seed=2, smooth=True)
    code = torch.tensor([[1, 2, 3], [3, 1, 2], [2, 2, 1]]); level = torch.tensor([[0, 2, 4], [4, 0, 0], [1, 2, 2]])
    gf = torch.randn(3, x[0].numel(), generator=torch.Generator().manual_seed(3))
    out = mn.cos2(gf, x, code, level)
    reg = mn.region(x)
    for b in range(3):
        for j in range(3):
            ch = torch.tensor([(int(code[b, j]) >> c) & 1 for c in range(2)], dtype=torch.float32).view(2, 1, 1, 1)
            W = mn.weights_at(int(level[b, j])).double() * (reg[b] * ch).flatten().double()
            ref = (W @ gf[b].double()) ** 2 / ((W * W).sum(1) * (gf[b].double() ** 2).sum())
            torch.testing.assert_close(out[b, j], ref, rtol=1e-4, atol=1e-12)
