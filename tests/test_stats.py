"Calibration and contract of fgflow.stats: null models on permuted labels and the max-T null test."
import functools, json
import numpy as np, pandas as pd, pytest, torch
import torch.nn as nn
from scipy import stats as sps

from fgflow.model import FGFNet3D
from fgflow.train import TensorCohort, load_checkpoint
from fgflow.stats import (LinearFeatures, StatsError, feature_statistic, maxt_test, null_statistics, null_test,
                          permuted_labels, train_null_models)


def _net(seed:int) -> nn.Module:
    "A tiny random conv net on (B, 2, 4, 4, 4): models exchangeable by construction (none has seen any label)."
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.SiLU(), nn.Conv3d(3, 1, 3, padding=1), nn.Flatten(),
                         nn.Linear(64, 1), nn.Flatten(0))


@pytest.fixture(scope='module')
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 4, 4, 4, generator=g)
    return x, LinearFeatures(torch.randn(4, 2, 4, 4, 4, generator=g), ['a', 'b', 'c', 'd'])


def test_null_test_pvalues_uniform_when_model_is_a_null_draw(tiny):
    "The real null_test path: an observed model exchangeable with its K null models gets uniform p and FWER <= alpha."
    x, feats = tiny
    K, n_draw, alpha, rng = 9, 80, 0.2, np.random.default_rng(1)
    us, any_sig = [], 0
    for d in range(n_draw):
        nets = [_net(1000 + (K + 1) * d + i) for i in range(K + 1)]
        r = null_test(nets[0], nets[1:], x, feats, sets={'ab': ['a', 'b']}, alpha=alpha, noise_kw=False, progress=False)
        assert list(r.name) == ['a', 'b', 'c', 'd', 'ab'] and r.n_undefined.eq(0).all()
        us.append(r.p[d % 5] - rng.random() / (K + 1))     # randomized p: exactly uniform under exchangeability
        any_sig += bool(r.significant.any())
    assert sps.kstest(us, 'uniform').pvalue > 0.01
    # family-wise: P(any of the 5 significant) <= alpha; allow 2.5 binomial SDs
    assert any_sig / n_draw <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / n_draw), any_sig / n_draw


def test_null_test_finds_a_used_feature(tiny):
    "A model that adds feature a's direction to a null draw: a is significant at the smallest p, the others are not."
    x, feats = tiny
    class Uses(nn.Module):
        def __init__(self, base, w): super().__init__(); self.base, self.w = base, w
        def forward(self, x): return self.base(x) + 5 * x.flatten(1) @ self.w
    wa = feats.W[0].flatten() / feats.W[0].norm()
    nulls = [_net(i) for i in range(1, 20)]
    r = null_test(Uses(_net(0), wa), nulls, x, feats, noise_kw=dict(noise='global', n_noise=20), progress=False)
    r = r.set_index('name')
    assert r.loc['a', 'p_adj'] == pytest.approx(1 / 20) and r.loc['a', 'significant']
    assert not r.drop('a').significant.any()
    assert np.isfinite(r.noise_ratio).all()           # the descriptive ratio is reported beside the test
    # the same from a kept table of null statistics
    tab = null_statistics(nulls[0], nulls, x, feats, progress=False)
    r2 = null_test(Uses(_net(0), wa), tab, x, feats, noise_kw=False, progress=False)
    np.testing.assert_allclose(r2.p_adj, r.p_adj.values)


def test_too_few_null_models_warn(tiny):
    x, feats = tiny
    with pytest.warns(UserWarning, match='cannot reach p_adj <= 0.05'):
        null_test(_net(0), [_net(i) for i in range(1, 6)], x, feats, noise_kw=False, progress=False)


def test_maxt_family_wise_error_with_correlated_features():
    "Gaussian statistics, 8 correlated features, 19 exchangeable nulls: FWER <= 5%; uncorrected tests exceed it."
    rng = np.random.default_rng(0); J, K, n = 8, 19, 1500
    L = np.linalg.cholesky(0.5 + 0.5 * np.eye(J)); cols = [f'f{j}' for j in range(J)]
    sig = raw = 0
    for _ in range(n):
        T = rng.normal(size=(K + 1, J)) @ L.T
        r = maxt_test(pd.Series(T[0], index=cols), pd.DataFrame(T[1:], columns=cols))
        sig += r.significant.any(); raw += (r.p <= 0.05).any()
    assert sig / n <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / n)
    assert raw / n > 0.15
    # step-down: adjusted p never below the raw p, and monotone in z
    r = r.sort_values('z', ascending=False)
    assert (r.p_adj >= r.p).all() and r.p_adj.is_monotonic_increasing


def test_unique_share_known_values():
    "f = 3x1 + 4x2 with features e1, e2: unique shares 9/25 and 16/25, the pair explains everything."
    W = torch.zeros(2, 1, 1, 2, 2); W[0, 0, 0, 0, 0] = W[1, 0, 0, 0, 1] = 1
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad(): lin.weight[:] = torch.tensor([[3., 4., 0., 0.]])
    model = nn.Sequential(nn.Flatten(), lin, nn.Flatten(0))
    st = feature_statistic(model, torch.rand(3, 1, 1, 2, 2), LinearFeatures(W, ['a', 'b']), sets=[['a', 'b']])
    np.testing.assert_allclose(st.statistic, [9 / 25, 16 / 25, 1.], atol=1e-6)
    assert list(st.index) == ['a', 'b', 'a+b']


def test_point_path_equals_fgf_measure_path_and_dependent_block(tiny):
    "The one-QR route at the points gives fgf_measure's numbers; a feature in the span of others is tested with its block."
    x, feats = tiny
    W = torch.cat([feats.W, (feats.W[0] + 2 * feats.W[1])[None]])
    f5 = LinearFeatures(W, ['a', 'b', 'c', 'd', 'e'])
    p = feature_statistic(_net(3), x, f5, sets={'cd': ['c', 'd']})
    q = feature_statistic(_net(3), x, f5, sets={'cd': ['c', 'd']}, measure_kw={})
    np.testing.assert_allclose(p.statistic, q.statistic, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(p.M, q.M, rtol=1e-6, atol=1e-12)
    assert list(p.block) == ['a+b+e', 'a+b+e', '', '', 'a+b+e', ''] and list(q.block) == list(p.block)
    assert p.statistic['a'] == p.statistic['e'] > 0 and p.statistic['c'] > 0


def test_log_ratio_and_flow_line_statistics_are_defined(tiny):
    "The other statistics run through fgf_measure (noise for the log-ratio, flow lines when max_steps > 0)."
    x, feats = tiny
    lr = feature_statistic(_net(0), x, feats, statistic='log_ratio', measure_kw=dict(noise='global', n_noise=10))
    fl = feature_statistic(_net(0), x, feats, sets=[['a', 'b']], measure_kw=dict(max_steps=3, steps_per_line=2))
    assert np.isfinite(lr.statistic).all() and np.isfinite(fl.statistic).all() and (fl.statistic >= -1e-12).all()


@pytest.fixture(scope='module')
def splits():
    torch.manual_seed(0)
    X, Y = torch.rand(16, 2, 8, 8, 8), torch.tensor([0, 1] * 8)
    return TensorCohort(X[:10], Y[:10]), TensorCohort(X[10:], Y[10:])

MK = functools.partial(FGFNet3D, 2, width=2, depth=1)
KW = dict(epochs=2, batch_size=4, lr=1e-2)


def test_null_models_parallel_equal_serial_and_resume(splits, tmp_path):
    "Two processes give the same models as one; a model whose run was interrupted finishes to the same weights."
    p1 = train_null_models(splits, 3, tmp_path/'a', model_fn=MK, train_kwargs=KW, seed=4, progress=False)
    p2 = train_null_models(splits, 3, tmp_path/'b', model_fn=MK, train_kwargs=KW, seed=4, workers=2, progress=False)
    for a, b in zip(p1, p2):
        wa, wb = load_checkpoint(a)['model'], load_checkpoint(b)['model']
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    w0 = [load_checkpoint(p)['model'] for p in p1]
    assert not all(torch.equal(w0[0][k], w0[1][k]) for k in w0[0])       # different indices, different models
    info = json.loads((p1[1].parent/'done.json').read_text())
    assert info['index'] == 1 and info['seed'] == 4
    # interrupted after its first epoch: resume from last.pt
    (p1[2].parent/'done.json').unlink()
    ck = load_checkpoint(p1[2].parent/'last.pt')
    torch.save({**ck, 'epoch': 0, 'history': {k: v[:1] for k, v in ck['history'].items()}}, p1[2].parent/'last.pt')
    mt = p1[0].stat().st_mtime_ns
    p3 = train_null_models(splits, 3, tmp_path/'a', model_fn=MK, train_kwargs=KW, seed=4, progress=False)
    assert p3[0].stat().st_mtime_ns == mt                                 # finished ones are reused
    assert (p3[2].parent/'done.json').exists()


def test_null_models_labels_are_permutations(splits):
    tr, _ = splits
    p = permuted_labels(tr.labels, 4, 1)
    assert sorted(p) == sorted(tr.labels) and not np.array_equal(p, permuted_labels(tr.labels, 4, 2))


def test_null_models_refuse_other_settings(splits, tmp_path):
    train_null_models(splits, 1, tmp_path, model_fn=MK, train_kwargs=KW, seed=4, progress=False)
    with pytest.raises(StatsError, match='other settings'):
        train_null_models(splits, 1, tmp_path, model_fn=MK, train_kwargs=KW, seed=5, progress=False)
    with pytest.raises(StatsError, match=r"\['out_dir'\]"):
        train_null_models(splits, 1, tmp_path/'x', model_fn=MK, train_kwargs=dict(KW, out_dir='.'), progress=False)


def test_flow_set_null_draws_independent_noise_for_each_member():
    "Each null draw of a k-feature set is a sum of k distinct noise features, and no noise feature is in two draws."
    from fgflow.flow import _set_null
    R, k = 6, 2
    S = _set_null(np.eye(R), k)            # point n carries only noise feature n: column r lists the features draw r uses
    assert (S.sum(0) == k).all()
    overlap = S.T @ S - np.diag(np.diag(S.T @ S))
    assert (overlap == 0).all()


# --- fgflow measure --null: the test from a checkpoint of `fgflow train` ------------------------------

def _nifti_cases(root, n:int):
    import nibabel as nib
    root.mkdir(parents=True, exist_ok=True)
    rng, ids = np.random.default_rng(0), [f'HN-TST-{i:03d}' for i in range(n)]
    for cid in ids:
        hu = rng.normal(0, 20, (20, 20, 20)).astype(np.float32) - 50
        m = np.zeros((20, 20, 20), np.uint8); a, b = rng.integers(2, 5, 2)
        m[10 - a:10 + a, 10 - b:10 + b, 8:12] = 1; hu[m > 0] += rng.uniform(40, 120)
        nib.save(nib.Nifti1Image(hu, np.diag([2., 2., 2., 1.])), root/f'{cid}_ct.nii.gz')
        nib.save(nib.Nifti1Image(m, np.diag([2., 2., 2., 1.])), root/f'{cid}_gtv.nii.gz')
    return ids


@pytest.mark.filterwarnings('ignore:2 null models cannot reach')
def test_measure_null_writes_p_values_and_reuses_null_models(tmp_path, capsys):
    from fgflow import cli
    ids = _nifti_cases(tmp_path/'nii', 16)
    pd.DataFrame({'Patient #': ids, 'Distant': [1, 0, 0, 1] * 4}).to_csv(tmp_path/'clin.csv', index=False)
    assert cli.main(['prepare', '--nifti', str(tmp_path/'nii'), '--clinical', str(tmp_path/'clin.csv'), '--out',
                     str(tmp_path/'cache'), '--size', '16', '--spacing', '2', '--quiet']) == 0
    assert cli.main(['train', '--cache', str(tmp_path/'cache'), '--out', str(tmp_path/'run'), '--epochs', '2', '--width', '2',
                     '--depth', '1', '--split', '0.5,0.25,0.25', '--quiet']) == 0
    args = ['measure', '--cache', str(tmp_path/'cache'), '--checkpoint', str(tmp_path/'run'/'best.pt'), '--features',
            'volume,mean', '--n-noise', '4', '--max-steps', '2', '--quiet']
    assert cli.main(args + ['--out', str(tmp_path/'m1'), '--null', '2']) == 0
    t = pd.read_csv(tmp_path/'m1'/'measure.csv')
    for c in ('ratio', 'unique_share', 'null_mean', 'null_sd', 'p', 'p_adj', 'significant'): assert c in t, c
    assert set(np.round(t.p * 3).astype(int)) <= {1, 2, 3} and (t.p_adj >= t.p).all() and not t.significant.any()
    done = sorted((tmp_path/'m1'/'null').glob('null_*/done.json'))
    assert len(done) == 2 and json.loads(done[1].read_text())['seed'] == 0      # the checkpoint's seed
    mt = [p.stat().st_mtime_ns for p in done]
    capsys.readouterr()
    assert cli.main(args + ['--out', str(tmp_path/'m2'), '--null-dir', str(tmp_path/'m1'/'null')]) == 0   # reuse, no training
    assert [p.stat().st_mtime_ns for p in done] == mt
    pd.testing.assert_series_equal(pd.read_csv(tmp_path/'m2'/'measure.csv').p_adj, t.p_adj)
    assert cli.main(args + ['--out', str(tmp_path/'m3'), '--null-dir', str(tmp_path/'none')]) == 2
    assert 'no finished null models' in capsys.readouterr().err
    assert json.loads((tmp_path/'m1'/'measure.json').read_text())['mask_band'] == 1          # the default of the measure and the null test
    assert cli.main(args + ['--out', str(tmp_path/'m4'), '--null-dir', str(tmp_path/'m1'/'null'), '--mask-band', '0']) == 0
    t4 = pd.read_csv(tmp_path/'m4'/'measure.csv')                  # the whole mask channel: another statistic and another M
    assert not np.allclose(t4.unique_share, t.unique_share) and not np.allclose(t4.M, t.M)   # the band applies to the measure too
    assert cli.main(args + ['--out', str(tmp_path/'m5'), '--null-dir', str(tmp_path/'m1'/'null'), '--mask-band', '-1']) == 2
    assert 'mask_band must be' in capsys.readouterr().err
    assert cli.main(args + ['--out', str(tmp_path/'m6'), '--null-dir', str(tmp_path/'m1'/'null'), '--null-statistic', 'slope']) == 0
    t6 = pd.read_csv(tmp_path/'m6'/'measure.csv').set_index('name')
    assert 'slope' in t6 and 'unique_share' not in t6 and (t6.loc[['volume', 'mean'], 'slope'] > 0).all()
    assert set(np.round(t6.loc[['volume', 'mean'], 'p'] * 3).astype(int)) <= {1, 2, 3}
    assert json.loads((tmp_path/'m6'/'measure.json').read_text())['null_statistic'] == 'slope'
