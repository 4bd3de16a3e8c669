"MONAI networks (BatchNorm) with the penalty, the coupling check and the CLI, at tiny size. Needs `pip install 'fgflow[monai]'`."
import json, warnings
import pytest, torch, torch.nn as nn
pytest.importorskip('monai')
from fgflow import train as T
from fgflow.features import FeatureSet
from fgflow.flow import input_gradients, projection_fraction
from fgflow.model import build_model, ModelError

S = 32  # DenseNet121's five stride-2 stages end at 1^3 here


def _blobs(n, seed=0):
    "n ellipsoid GTV masks of random size and elongation on a noisy CT channel, (n, 2, S, S, S)."
    g = torch.Generator().manual_seed(seed); c = torch.arange(S) - S / 2 + 0.5
    zz, yy, xx = torch.meshgrid(c, c, c, indexing='ij')
    r, e = 3 + 4 * torch.rand(n, 1, 1, 1, generator=g), 1 + torch.rand(n, 1, 1, 1, generator=g)
    m = ((zz / (r * e))**2 + (yy / r)**2 + (xx / r)**2 <= 1).float()
    x = torch.stack([(0.4 + 0.2 * m + 0.05 * torch.randn(m.shape, generator=g)).clamp(0, 1), m], 1)
    return x, ((r * e).flatten() > (r * e).median()).float()


@pytest.fixture(scope='module')
def densenet():
    "DenseNet121 after one training step (running statistics off their initial values), in training mode."
    torch.manual_seed(0)
    m = build_model('monai.densenet121').train()
    xs, ys = _blobs(4, seed=1)
    opt = torch.optim.SGD(m.parameters(), lr=1e-2)
    nn.functional.binary_cross_entropy_with_logits(m(xs), ys).backward(); opt.step(); opt.zero_grad()
    return m


def _one_at_a_time(m, x):
    "The chosen per-sample definition: the eval-mode gradient, one sample at a time."
    m.eval()
    try: return torch.cat([input_gradients(m, x[i:i+1]) for i in range(len(x))])
    finally: m.train()


@pytest.mark.parametrize('method', ['double_backprop', 'finite_difference'])
def test_densenet_penalty_aligns_the_per_sample_eval_gradient(densenet, method, monkeypatch):
    x, _ = _blobs(4)
    fs = FeatureSet(['volume', 'elongation'], spacing=(4., 4., 4.))
    G = fs.gradients(x)
    seen = []
    orig = T._alignment  # both methods compute a_S from the gradients through it
    monkeypatch.setattr(T, '_alignment', lambda gf, *a: (seen.append(gf.detach().clone()), orig(gf, *a))[1])
    rm = densenet.net.features.norm0.running_mean.clone()
    pen = T.fgf_penalty(densenet, x, fs, method=method, G=G)
    assert densenet.training and torch.equal(densenet.net.features.norm0.running_mean, rm)
    ref = _one_at_a_time(densenet, x).flatten(1)
    cos = nn.functional.cosine_similarity(seen[0], ref, dim=1)
    assert (cos >= 0.9999).all(), cos
    a1 = torch.stack([projection_fraction(ref[i:i+1], G[i:i+1].flatten(2))[0] for i in range(len(x))])
    torch.testing.assert_close(pen.detach(), (1 - a1).mean(), rtol=1e-4, atol=0)
    # the batched training-mode gradient (what fgflow aligned before) is not that per-sample gradient
    xr = x.clone().requires_grad_()
    gb, = torch.autograd.grad(densenet(xr).sum(), xr)
    assert nn.functional.cosine_similarity(gb.flatten(1), ref, dim=1).min() < 0.9


def test_densenet_finite_difference_matches_double_backprop(densenet):
    "ReLU patterns and MaxPool picks held at x: the finite difference's weight gradient is double backprop's (0.889 with the pool free)."
    x, _ = _blobs(4)
    fs = FeatureSet(['volume', 'elongation'], spacing=(4., 4., 4.))
    G, wg = fs.gradients(x), []
    for method in ('double_backprop', 'finite_difference'):
        densenet.zero_grad(); T.fgf_penalty(densenet, x, fs, method=method, G=G).backward()
        wg.append(torch.cat([torch.zeros_like(q).flatten() if q.grad is None else q.grad.flatten() for q in densenet.parameters()]).double())
    densenet.zero_grad()
    assert nn.functional.cosine_similarity(*wg, 0) > 0.999


def test_densenet_coupling_is_found_and_named(densenet):
    x, _ = _blobs(4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        found = T.check_coupling(densenet, x)
    assert found['eval'] == [] and found['train']
    mods = dict(densenet.named_modules())
    assert all(isinstance(mods[n], nn.BatchNorm3d) for n in found['train'])
    assert 'net.features.norm0' in found['train']
    assert any('BatchNorm3d x' in str(x.message) and 'eval-mode gradient' in str(x.message) for x in w)


class _BatchAttention(nn.Module):
    "Mixes samples in eval mode too: each sample's features are shifted by the batch mean."
    def forward(self, x): return x + x.mean(0, keepdim=True)


def test_unfixable_mixing_layer_is_refused_by_name():
    torch.manual_seed(0)
    m = build_model('fgflownet', width=4, depth=2)
    m.features[0] = nn.Sequential(m.features[0], _BatchAttention())
    x, y = _blobs(4)
    with pytest.raises(T.CouplingError, match=r'_BatchAttention x1: features\.0\.1'):
        T.fgf_penalty(m, x, FeatureSet(['volume'], spacing=(4., 4., 4.)), check=True)
    ds = T.TensorCohort(x, y, spacing=(4., 4., 4.))
    with pytest.raises(T.CouplingError, match='mixes the samples of a batch in eval mode'):
        T.train(m, ds, ds, features=['volume'], lam=1.0, epochs=1, batch_size=4, progress=False)


def test_unknown_arch_is_refused():
    with pytest.raises(ModelError, match='monai.densenet121'): build_model('monai.vit')


def test_cli_train_densenet_then_measure(tmp_path, capsys):
    from fgflow import cli
    from fgflow.phantoms import make_cohort
    from fgflow.data import find_cases, read_clinical, prepare_cohort
    make_cohort(tmp_path/'raw', n=16, seed=0, formats=('nifti',), progress=False, matrix=64)
    cases, _ = find_cases(tmp_path/'raw')
    prepare_cohort(cases, read_clinical(tmp_path/'raw'/'clinical.csv'), tmp_path/'cache', spacing=4.0, size=S, progress=False)
    run = tmp_path/'run'
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert cli.main(['train', '--cache', str(tmp_path/'cache'), '--out', str(run), '--arch', 'monai.densenet121',
                         '--lam', '1', '--features', 'volume,elongation', '--epochs', '1', '--batch-size', '4',
                         '--split', '0.5,0.25,0.25', '--quiet']) == 0
    assert any('BatchNorm3d' in str(x.message) for x in w)
    assert json.loads((run/'model.json').read_text()) == {'arch': 'monai.densenet121', 'in_channels': 2}
    assert cli.main(['measure', '--cache', str(tmp_path/'cache'), '--checkpoint', str(run/'best.pt'), '--out', str(tmp_path/'m'),
                     '--features', 'volume,elongation', '--n-noise', '2', '--max-steps', '2', '--quiet']) == 0
    out = capsys.readouterr().out
    assert 'volume' in out and (tmp_path/'m'/'measure.csv').exists()
