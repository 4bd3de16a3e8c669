"""Tests of fgflow.train: metrics against scipy/sklearn, splits, the penalty's two gradients, augmentation, train/resume/checkpoints."""
import math
import numpy as np, pytest, torch
from scipy import stats

from fgflow.features import FeatureSet, feature_values
from fgflow.flow import projection_fraction
from fgflow.model import FGFNet3D
from fgflow.train import (LAM_AUTO, Augment, TrainingError, auc_ci, feature_directions, fgf_penalty, load_checkpoint, roc_auc,
                          sign_penalty, stratified_kfold, stratified_split, train)
from fgflow.train import _target, _reg_loss, _mode_free, _FrozenPattern, gram_pinv
from fgflow.io import FGFlowError
from _train_ddp_worker import Blobs, TinyNet

# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize('seed', range(5))
def test_roc_auc_equals_mann_whitney(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60); y[:2] = (0, 1)
    s = np.round(y + rng.normal(0, 1, 60), 1)  # rounding makes ties
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert roc_auc(y, s) == pytest.approx(u / (y.sum() * (len(y) - y.sum())), abs=1e-12)

def test_roc_auc_equals_sklearn():
    metrics = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200); s = np.round(rng.normal(size=200) + y, 1)
    assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)

def test_roc_auc_errors():
    with pytest.raises(TrainingError, match='both classes'): roc_auc([0, 0, 0], [1, 2, 3])
    with pytest.raises(TrainingError, match='3 labels but 2 scores'): roc_auc([0, 1, 1], [1, 2])
    with pytest.raises(TrainingError, match='non-finite'): roc_auc([0, 1], [0.1, np.nan])
    assert issubclass(TrainingError, FGFlowError)

def test_auc_ci_stratified_bootstrap():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(90, int), np.ones(10, int)]; s = y * 1.0 + rng.normal(0, 1, 100)
    auc, lo, hi = auc_ci(y, s, n_boot=2000, seed=3)
    assert auc == roc_auc(y, s) and lo < auc < hi
    # reference: the same percentile interval from an explicit loop of per-class resamples
    r, pos, neg = np.random.default_rng(3), np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    P, N = r.choice(pos, (2000, 10)), r.choice(neg, (2000, 90))
    ref = [roc_auc(y[np.r_[p, n]], s[np.r_[p, n]]) for p, n in zip(P, N)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)
    assert auc_ci(y, s, n_boot=2000, seed=3) == (auc, lo, hi)
    assert auc_ci(y, s, n_boot=2000, seed=4) != (auc, lo, hi)

# ---------------------------------------------------------------- splits
def test_split_and_kfold():
    y = np.r_[np.zeros(87, int), np.ones(13, int)]
    parts = stratified_split(y, (0.6, 0.2, 0.2), seed=5)
    assert [len(p) for p in parts] == [60, 20, 20]
    assert [int(y[p].sum()) for p in parts] in ([8, 2, 3], [8, 3, 2])
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    assert not np.array_equal(parts[1], stratified_split(y, seed=6)[1])
    folds = stratified_kfold(y, k=5, seed=0)
    assert np.array_equal(np.sort(np.concatenate([t for _, t in folds])), np.arange(100))
    assert sorted(int(y[t].sum()) for _, t in folds) == [2, 2, 3, 3, 3]
    assert all(len(set(a) & set(b)) == 0 and len(a) + len(b) == 100 for a, b in folds)
    with pytest.raises(TrainingError, match='k must be in'): stratified_kfold(y, k=101)

# ---------------------------------------------------------------- penalty
def _param_grad(model, p):
    model.zero_grad(); p.backward()
    return torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).flatten() for q in model.parameters()])

@pytest.mark.parametrize('seed', range(3))
def test_penalty_methods_agree_on_fgfnet3d(seed):
    torch.manual_seed(seed)
    model = FGFNet3D(in_channels=2, width=4, depth=3)
    x = Blobs(3, S=16, seed=seed).x
    fs = FeatureSet(['volume', 'elongation'], spacing=(2., 2., 2.))
    before = model(x).detach()
    p_db = fgf_penalty(model, x, fs, method='double_backprop'); g_db = _param_grad(model, p_db)
    p_fd = fgf_penalty(model, x, fs); g_fd = _param_grad(model, p_fd)  # default: finite_difference, h=0.1
    assert torch.equal(model(x).detach(), before)  # the activation patterns were released
    # the value is the exact penalty for both methods
    xr = x.clone().requires_grad_(True)
    gf, = torch.autograd.grad(model(xr).sum(), xr)
    ref = (1 - projection_fraction(gf.flatten(1), fs.gradients(x).flatten(2))).mean()
    assert p_db.item() == pytest.approx(ref.item(), rel=1e-5) and p_fd.item() == pytest.approx(ref.item(), rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(g_db, g_fd, 0).item()
    assert cos >= 0.99, cos
    assert g_fd.norm() > 0
    assert (g_fd.norm() / g_db.norm()).item() == pytest.approx(1, abs=0.05)

class _SharedReLU(torch.nn.Module):
    "One nn.ReLU module called twice per forward, and a LeakyReLU: the frozen patterns must follow the calls."
    def __init__(self, w=4):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv3d(2, w, 3, padding=1), torch.nn.Conv3d(w, w, 3, padding=1, stride=2)
        self.n1, self.n2, self.act, self.leaky = torch.nn.GroupNorm(2, w), torch.nn.GroupNorm(2, w), torch.nn.ReLU(inplace=True), torch.nn.LeakyReLU(0.1)
        self.head = torch.nn.Linear(w, 1)
    def forward(self, x):
        x = self.act(self.n1(self.c1(x))); x = self.leaky(self.act(self.n2(self.c2(x))) - 0.5)
        return self.head(x.mean((2, 3, 4))).squeeze(-1)

def test_penalty_frozen_patterns_with_reused_modules():
    torch.manual_seed(0)
    model, x = _SharedReLU(), Blobs(3, S=12, seed=3).x
    fs = FeatureSet(['volume', 'elongation'], spacing=(2., 2., 2.))
    g_db = _param_grad(model, fgf_penalty(model, x, fs, method='double_backprop'))
    g_fd = _param_grad(model, fgf_penalty(model, x, fs))
    assert torch.nn.functional.cosine_similarity(g_db, g_fd, 0).item() >= 0.99
    assert 'forward' not in vars(model.act)  # the module's own forward is back

class _Feats:
    "Stand-in feature set whose gradient vanishes for sample 0 (alignment undefined there)."
    def __init__(self, fs): self.fs = fs
    def gradients(self, x):
        G = self.fs.gradients(x).clone(); G[0] = 0; return G

@pytest.mark.parametrize('method', ['finite_difference', 'double_backprop'])
def test_penalty_skips_undefined_samples(method):
    torch.manual_seed(0)
    model, x = TinyNet(), Blobs(3, S=8, seed=1).x
    fs = FeatureSet(['volume'], spacing=(2., 2., 2.))
    p_all = fgf_penalty(model, x, _Feats(fs), method=method)
    p_rest = fgf_penalty(model, x[1:], fs, method=method)
    assert p_all.item() == pytest.approx(p_rest.item(), rel=1e-6)
    g = _param_grad(model, p_all)
    assert torch.isfinite(g).all()
    with pytest.raises(TrainingError, match="method must be"): fgf_penalty(model, x, fs, method='exact')

# ---------------------------------------------------------------- augmentation
def test_augment_geometry_and_channels():
    x = Blobs(4, S=10, seed=0).x
    # a 90 degree rotation about z turns the (y, x) plane: exactly a rot90 on the crop axes (1, 2)
    r = Augment._rotate(x, torch.full((4,), math.pi / 2))
    assert torch.allclose(r, torch.rot90(x, 1, (3, 4)), atol=1e-5) or torch.allclose(r, torch.rot90(x, -1, (3, 4)), atol=1e-5)
    flip = Augment(rotate_deg=0, intensity_jitter=0, p=1.0)(x)
    assert torch.equal(flip, x.flip(4))
    jit = Augment(flip_axes=(), rotate_deg=0, intensity_jitter=0.05, p=1.0, seed=1)(x)
    assert torch.equal(jit[:, 1], x[:, 1]) and not torch.equal(jit[:, 0], x[:, 0])
    assert (jit[:, 0] - x[:, 0]).abs().max() <= 0.05 * 1 + 0.05 + 1e-6
    # the features keep their meaning: volume is unchanged by flips and nearly so by small rotations
    a = Augment(rotate_deg=10, intensity_jitter=0, p=1.0, seed=2)(x)
    v0, v1 = feature_values(x, ['volume']), feature_values(a, ['volume'])
    assert torch.allclose(v0, v1, rtol=0.05)
    with pytest.raises(TrainingError, match='crop axes'): Augment(flip_axes=(3,))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(Augment()(x, generator=g), Augment()(x, generator=torch.Generator().manual_seed(7)))

# ---------------------------------------------------------------- train
def _data():
    return Blobs(24, S=8, seed=1), Blobs(12, S=8, seed=2)

KW = dict(features=['volume', 'elongation'], lam=0.3, batch_size=6, lr=1e-2, progress=False, augment=Augment(seed=0))

def test_train_history_checkpoints_and_exact_resume(tmp_path):
    tr, va = _data()
    torch.manual_seed(0); full = train(TinyNet(), tr, va, epochs=4, out_dir=tmp_path / 'full', **KW)
    h = full.history
    assert list(h.columns) == ['epoch', 'loss', 'bce', 'penalty', 'sign_penalty', 'lam', 'valid_auc', 'valid_loss', 'valid_align', 'time', 'valid_objective']
    assert (h.lam == 0.3).all() and (h.sign_penalty == 0).all() and h.valid_align.between(0, 1).all()   # a number: sign-blind
    assert h['epoch'].tolist() == [0, 1, 2, 3]
    assert np.allclose(h['loss'], h['bce'] + 0.3 * h['penalty'], atol=1e-6)
    assert ((h['penalty'] > 0) & (h['penalty'] <= 1)).all()
    # lam > 0: the kept epoch is the one with the lowest validation objective BCE + lam (1 - a_S)
    assert np.allclose(h.valid_objective, h.valid_loss + 0.3 * (1 - h.valid_align))
    assert full.best_epoch == int(h.valid_objective.idxmin()) and full.best_auc == h.valid_auc[full.best_epoch]
    best, last = load_checkpoint(full.checkpoint), load_checkpoint(tmp_path / 'full' / 'last.pt')
    assert full.checkpoint.name == 'best.pt' and best['epoch'] == full.best_epoch and last['epoch'] == 3
    assert all(torch.equal(v, best['model'][k]) for k, v in full.model.state_dict().items())  # returned = best
    assert last['config']['pos_weight'] == pytest.approx((24 - tr.labels.sum()) / tr.labels.sum())
    assert last['config']['features'] == ['volume', 'elongation']
    # interrupted after 2 epochs, resumed to 4: bit-identical weights, optimizer state and history
    torch.manual_seed(0); m = TinyNet()
    train(m, tr, va, epochs=2, out_dir=tmp_path / 'part', **KW)
    res = train(m, tr, va, epochs=4, out_dir=tmp_path / 'part', resume=True, **KW)
    last2 = load_checkpoint(tmp_path / 'part' / 'last.pt')
    for k, v in last['model'].items(): assert torch.equal(v, last2['model'][k]), k
    for k, v in full.model.state_dict().items(): assert torch.equal(v, res.model.state_dict()[k]), k
    s1, s2 = last['optimizer']['state'], last2['optimizer']['state']
    assert all(torch.equal(s1[i]['exp_avg'], s2[i]['exp_avg']) for i in s1)
    assert res.history.drop(columns='time').equals(h.drop(columns='time'))
    with pytest.raises(TrainingError, match='settings differ'):
        train(m, tr, va, epochs=5, out_dir=tmp_path / 'part', resume=True, **{**KW, 'lr': 0.1})

def test_plain_training_keeps_the_best_validation_auc(tmp_path):
    tr, va = _data()
    torch.manual_seed(0); r = train(TinyNet(), tr, va, epochs=4, **{**KW, 'lam': 0.0})
    h = r.history
    top = h[h['valid_auc'] == h['valid_auc'].max()]
    assert r.best_epoch == int(top['valid_loss'].idxmin()) and r.best_auc == h['valid_auc'].max()
    assert h.valid_objective.equals(h.valid_loss)

class _Broken(torch.utils.data.Dataset):
    def __init__(self, ds): self.ds, self.labels = ds, ds.labels
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        x, y = self.ds[i]; return x * float('nan'), y

def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    tr, va = _data()
    torch.manual_seed(0); m = TinyNet()
    train(m, tr, va, epochs=1, out_dir=tmp_path, **KW)
    with pytest.raises(TrainingError, match=r'non-finite loss at epoch 1, batch 0.*last.pt'):
        train(m, _Broken(tr), va, epochs=3, out_dir=tmp_path, resume=True, **KW)
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 0
    assert not list(tmp_path.glob('*.tmp*')) and sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'last.pt']

def test_early_stopping_and_argument_errors(tmp_path):
    tr, va = _data()
    r = train(TinyNet(), tr, va, epochs=10, lr=0.0, patience=2, progress=False)  # lr 0: the AUC never improves
    assert r.best_epoch == 0 and len(r.history) == 3 and r.checkpoint is None
    with pytest.raises(TrainingError, match='lam > 0 needs features'): train(TinyNet(), tr, va, lam=1.0, progress=False)
    with pytest.raises(TrainingError, match='resume=True needs out_dir'): train(TinyNet(), tr, va, resume=True, progress=False)
    one = Blobs(12, S=8, seed=2); one.labels = np.zeros(12, int)
    with pytest.raises(TrainingError, match='validation labels need both classes'): train(TinyNet(), tr, one, progress=False)
    with pytest.raises(TrainingError, match='no checkpoint'): load_checkpoint(tmp_path / 'nope.pt')


def test_feature_gradient_cache_is_bit_identical(monkeypatch):
    "Without augmentation train caches each case's feature gradients; the weights equal those of a run without the cache."
    import fgflow.train as T
    tr, va = _data()
    calls = {'n': 0}
    fs = FeatureSet(['volume', 'mean'], spacing=tr.spacing)
    orig = fs.gradients
    def counted(x): calls['n'] += len(x); return orig(x)
    fs.gradients = counted
    runs = {}
    for budget in (T._G_CACHE_BYTES, 0):
        monkeypatch.setattr(T, '_G_CACHE_BYTES', budget)
        torch.manual_seed(0); calls['n'] = 0
        r = T.train(TinyNet(), tr, va, features=fs, lam=0.5, epochs=3, lr=1e-2, batch_size=4, seed=1, progress=False)
        runs[budget] = (r.model.state_dict(), calls['n'])
    (cached, n_cached), (plain, n_plain) = runs.values()
    # once per case vs once per case and epoch (the validation set's, for valid_align, too), plus the probe batch of
    # check_finite_difference before training (4 cases)
    probe = min(4, len(tr))
    assert n_cached == len(tr) + len(va) + probe and n_plain == 3 * (len(tr) + len(va)) + probe
    assert all(torch.equal(cached[k], plain[k]) for k in cached)


# ---------------------------------------------------------------- lam="auto": the sign-aware term
def test_sign_penalty_gradient_matches_double_backprop():
    "The central-difference surrogate's weight gradient equals autograd through ∇f (create_graph), ‖∇f‖ held fixed."
    torch.manual_seed(0)
    model, x = TinyNet(), Blobs(4, S=8, seed=3).x
    G = FeatureSet(['volume', 'elongation'], spacing=(2., 2., 2.)).gradients(x)
    t = _target(G, torch.tensor([1., -1.]))
    with torch.no_grad(): model.f[-1].weight.mul_(-1)                  # make sure some samples are on the wrong side
    p = sign_penalty(model, x, t, h=0.01)
    g_fd = torch.autograd.grad(p, list(model.parameters()), allow_unused=True)
    xr = x.clone().requires_grad_(True)
    gf, = torch.autograd.grad(model(xr).sum(), xr, create_graph=True)
    cos = (gf * t).flatten(1).sum(1) / gf.flatten(1).norm(dim=1).detach()
    q = torch.relu(-cos).sum() / len(x)
    g_db = torch.autograd.grad(q, list(model.parameters()), allow_unused=True)
    a, b = (torch.cat([(v if v is not None else torch.zeros_like(w)).flatten() for v, w in zip(g, model.parameters())]) for g in (g_fd, g_db))
    assert p.item() == pytest.approx(q.item(), rel=1e-3) and p.item() > 0
    assert torch.nn.functional.cosine_similarity(a, b, 0) > 0.99

def test_lam_auto_signed_history_and_errors(tmp_path):
    tr, va = _data()
    assert feature_directions(['volume', 'elongation'], tr)['volume'] == 1.     # larger blobs are the positives
    torch.manual_seed(0)
    r = train(TinyNet(), tr, va, features=['volume', 'elongation'], lam='auto', epochs=2, batch_size=6, lr=1e-2, progress=False,
              out_dir=tmp_path)
    h, cfg = r.history, load_checkpoint(tmp_path / 'last.pt')['config']
    assert (h.lam == LAM_AUTO).all() and cfg['lam'] == LAM_AUTO
    assert cfg['directions'] == feature_directions(['volume', 'elongation'], tr) and set(cfg['directions'].values()) <= {-1., 0., 1.}
    assert np.allclose(h.loss, h.bce + LAM_AUTO * (h.penalty + h.sign_penalty), rtol=1e-5)
    assert h.sign_penalty.between(0, 1).all() and h.valid_align.between(0, 1).all()
    kw = dict(features=['volume', 'elongation'], epochs=1, progress=False)
    with pytest.raises(TrainingError, match='lam must be a number or "auto"'): train(TinyNet(), tr, va, lam='big', **kw)
    with pytest.raises(TrainingError, match='finite number >= 0'): train(TinyNet(), tr, va, lam=-1.0, **kw)
    with pytest.raises(TrainingError, match=r"directions name features \['mean'\] not in the penalty's set"):
        train(TinyNet(), tr, va, lam=1.0, directions={'mean': 1}, **kw)
    with pytest.raises(TrainingError, match='directions must be "auto"'): train(TinyNet(), tr, va, lam=1.0, directions='up', **kw)
    with pytest.raises(TrainingError, match='lam > 0 needs features'): train(TinyNet(), tr, va, lam='auto', progress=False)

# ---------------------------------------------------------------- train's one-pass regularizer
@pytest.mark.parametrize('seed', range(2))
def test_one_pass_regularizer_matches_exact_terms(seed):
    "train's summed finite difference (shared forward, one-sided; or its own eval forward, central) vs double backprop of both terms."
    torch.manual_seed(seed)
    model, x = FGFNet3D(in_channels=2, width=4, depth=3), Blobs(4, S=16, seed=seed).x
    G = FeatureSet(['volume', 'elongation'], spacing=(2., 2., 2.)).gradients(x); P = gram_pinv(G)
    t = _target(G, torch.tensor([1., -1.]))
    with torch.no_grad(): model.head.weight.mul_(-1)                   # some samples on the wrong side of t
    def grads(base, method):
        model.zero_grad()
        if base:
            xq, pat = x.detach().requires_grad_(True), _FrozenPattern(model)
            with pat.record(): f0 = model(xq)
            base = (xq, f0, pat)
        L, p, s = _reg_loss(model, x, G, P, t, 10., method, base=base)
        L.backward(inputs=list(model.parameters()))
        return torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).flatten() for q in model.parameters()]), L.item(), p, s
    ref = grads(False, 'double_backprop')
    assert ref[3] > 0 and 0 < ref[2] < 1                                # both terms active
    for base, method in ((True, 'finite_difference'), (False, 'finite_difference'), (True, 'double_backprop')):
        g, L, p, s = grads(base, method)
        assert L == pytest.approx(ref[1], rel=1e-5) and p == pytest.approx(ref[2], rel=1e-5) and s == pytest.approx(ref[3], rel=1e-4)
        assert torch.nn.functional.cosine_similarity(g, ref[0], 0).item() > 0.99
        assert (g.norm() / ref[0].norm()).item() == pytest.approx(1, abs=0.05)

def test_train_shares_the_forward_only_for_mode_free_models():
    tr, va = _data()
    x = torch.stack([tr[i][0] for i in range(4)])
    assert _mode_free(TinyNet(), x) and _mode_free(FGFNet3D(in_channels=2, width=4, depth=2), x)
    bn = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.Flatten(), torch.nn.LazyLinear(1), torch.nn.Flatten(0))
    assert not _mode_free(bn, x)
    class _Flip(torch.nn.Module):                                        # custom mode dependence is caught by the probe
        def __init__(self): super().__init__(); self.net = TinyNet()
        def forward(self, x): return self.net(x) * (2. if self.training else 1.)
    assert not _mode_free(_Flip(), x)

def test_train_double_backprop_end_to_end(monkeypatch):
    "train(..., penalty_method='double_backprop') on FGFNet3D: the first layer's second derivatives take FGFConv3d's path, and with the weights held (lr 0) the history equals the finite difference's."
    import fgflow.model as M
    tr, va = _data(); calls = []
    orig = M._ConvInputGrad.forward
    monkeypatch.setattr(M._ConvInputGrad, 'forward', staticmethod(lambda ctx, *a: calls.append(1) or orig(ctx, *a)))
    kw = dict(features=['volume', 'elongation'], lam='auto', epochs=2, batch_size=6, progress=False, augment=Augment(seed=0))
    def run(method, lr):
        torch.manual_seed(0); m = FGFNet3D(width=4, depth=2)
        return m, train(m, tr, va, lr=lr, penalty_method=method, **kw).history
    _, hd = run('double_backprop', 0.0)
    assert len(calls) > 0                                                    # the parity path ran
    n = len(calls); _, hf = run('finite_difference', 0.0)
    assert len(calls) == n                                                   # and only under double backprop
    for c in ('loss', 'bce', 'penalty', 'sign_penalty', 'valid_auc', 'valid_align'):
        assert np.allclose(hd[c], hf[c], rtol=1e-4, atol=1e-6), c
    m, h = run('double_backprop', 1e-2)
    assert np.isfinite(h[['loss', 'penalty', 'sign_penalty']].to_numpy()).all() and (h.penalty > 0).all()
    torch.manual_seed(0)
    assert any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), FGFNet3D(width=4, depth=2).state_dict().values()))
