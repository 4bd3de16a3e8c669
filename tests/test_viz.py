"Tests of fgflow.viz: the flow montage, the ipywidgets explorer and its static fallback."
import numpy as np, pytest, torch
import matplotlib; matplotlib.use('Agg')
from fgflow import viz

class Toy(torch.nn.Module):
    "Tiny logit model (B,2,D,H,W) -> (B,), no cross-sample coupling."
    def __init__(self):
        super().__init__(); torch.manual_seed(0)
        self.conv, self.lin = torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Linear(4, 1)
    def forward(self, x): return self.lin(torch.relu(self.conv(x)).mean((2, 3, 4))).reshape(-1)

def blob(size=16, r=4.):
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    m = ((z / r) ** 2 + (y / (1.4 * r)) ** 2 + (x / (0.8 * r)) ** 2 <= 1).astype(np.float32)
    ct = 0.48 + 0.1 * m + 0.02 * np.random.default_rng(0).standard_normal(m.shape).astype(np.float32)
    return torch.tensor(np.stack([ct, m]))

def _img(fig):
    fig.canvas.draw(); a = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    return a

def panels(fig):
    "The image panels of a montage (not its colour bars)."
    return [a for a in fig.axes if a.get_label() != '<colorbar>']

def _result(counts=True, matched=True):
    import pandas as pd
    from fgflow.flow import FGFResult
    t = pd.DataFrame({'name': ['volume', 'elongation', 'volume+elongation'], 'kind': ['feature', 'feature', 'set'],
                      'M': [0.8, 0.02, 0.81], 'ci_low': [0.75, 0.01, 0.76], 'ci_high': [0.85, 0.04, 0.86], 'ratio': [80., 2., 60.],
                      'n_points': 25})
    if counts: t = t.assign(n_undefined=[0, 11, 0], n_not_reached=2, n_at_edge=1)
    rng = np.random.default_rng(0)
    noise = (pd.DataFrame(rng.uniform(0.005, 0.02, (30, 3)), columns=t.name) if matched
             else pd.Series(rng.uniform(0.005, 0.02, 30), name='M'))
    return FGFResult(t, pd.DataFrame(), noise, np.zeros(0), {'noise': 'smooth' if matched else 'global'})

def test_plot_fgf_title_legend_and_counts():
    fig = viz.plot_fgf(_result(), model='regularized')
    ax = fig.axes[0]
    assert ax.get_title() == 'FGF of the regularized model on 25 flow lines against 30 smooth noise features'
    legend = ' '.join(t.get_text() for t in ax.get_legend().get_texts())
    for what in ('feature: M', 'feature set', 'bootstrap interval', '30 noise features matched to each column', '×r', 'undefined'):
        assert what in legend, what
    # each column's undefined lines shown once (above it, or in its tick label), how the lines ended under the axis
    shown = ' '.join([a.get_text() for a in ax.texts] + [x.get_text() for x in ax.get_xticklabels()])
    assert shown.count('11 undefined') == 1 and shown.count(' undefined') == 1  # zero counts are not marked
    assert ax.get_xlabel() == "25 flow lines: 23 reached f = τ, 1 stopped at the domain's edge, 0 where ∇f = 0, 1 out of steps"
    assert _img(fig).std() > 1

def test_plot_fgf_without_counts_and_global_noise():
    fig = viz.plot_fgf(_result(counts=False, matched=False))  # a table without the count columns still plots
    ax = fig.axes[0]
    assert ax.get_title() == 'FGF on 25 flow lines against 30 global noise features'
    assert not any('undefined' in t.get_text() for t in ax.texts)
    assert any('dotted: their mean' in t.get_text() for t in ax.get_legend().get_texts())

def test_grad_f_matches_autograd():
    m, x = Toy(), blob()
    xx = x[None].clone().requires_grad_(True); m(xx).sum().backward()
    torch.testing.assert_close(viz._grad_f(m, x), xx.grad[0])

def test_mid_slice_is_mask_centroid():
    x = torch.zeros(2, 10, 6, 6); x[1, 7, 2:4, 2:4] = 1
    assert viz._mid_slice(x) == 7
    assert viz._mid_slice(torch.zeros(2, 10, 6, 6)) == 5

def test_montage_from_points_titles_and_logits():
    m, x = Toy(), blob()
    pts = [x + 0.02 * i for i in range(9)]
    fig = viz.plot_flow_montage(m, x, points=pts, n_panels=3, case='HN-SYN-007', model_name='regularized')
    assert [a.get_title().split(':')[0] for a in panels(fig)] == ['step 0', 'step 4', 'step 8']
    f8 = float(m(pts[8][None]).detach())
    assert fig.axes[2].get_title().endswith(f'{f8:+.3f}')
    # colour bars for the CT (HU) and for ∇f, and a title naming the model and the case
    bars = [a.get_ylabel() for a in fig.axes if a.get_label() == '<colorbar>']
    assert sorted(bars) == ['CT (HU)', '∇f, channel 0 (logit per input unit)']
    assert fig.get_suptitle().startswith('regularized model, case HN-SYN-007: flow line')
    assert _img(fig).std() > 1  # not blank

def test_montage_follows_flow_line():
    m, x = Toy(), blob()
    fig = viz.plot_flow_montage(m, x, n_panels=5)
    assert 2 <= len(panels(fig)) <= 5
    t = [a.get_title() for a in panels(fig)]
    assert t[0].startswith('step 0')
    f0 = float(m(x[None]).detach())
    assert t[0].endswith(f'{f0:+.3f}')
    how = fig.get_suptitle().split('steps: ')[1].split(')')[0]  # how the line ended, from flow_lines
    fl = __import__('fgflow.flow', fromlist=['flow_lines']).flow_lines(m, x[None], step=viz._auto_step(m, x, 0., 20), max_steps=40)
    assert how == ('reached the boundary' if fl.reached[0] else "stopped at the domain's edge" if fl.at_edge[0] else how)
    if fl.reached[0]: assert abs(float(t[-1].split('f = ')[1])) < 0.01  # the last panel is on the decision boundary f = 0
    # a line in an unbounded domain does reach the boundary: the montage of its points ends at f = 0
    fu = __import__('fgflow.flow', fromlist=['flow_lines']).flow_lines(m, x[None], step=viz._auto_step(m, x, 0., 20), max_steps=60,
                                                                       keep_points=True, domain=None)
    assert bool(fu.reached[0])
    pts = list(fu.points[0, :int(fu.n_steps[0]) + 1])
    t = [a.get_title() for a in panels(viz.plot_flow_montage(m, x, points=pts, n_panels=5))]
    assert abs(float(t[-1].split('f = ')[1])) < 0.01

def test_explorer_widget_controls_and_updates():
    m, x = Toy(), blob()
    w = viz.explore(x, m, ['volume', 'mean'], spacing=(2., 2., 2.), max_steps=30)
    assert sorted(w.controls) == ['channel', 'feature', 'flow', 'mask', 'overlay', 'slice']
    assert w.image in w.children and w.image.value[:8] == b'\x89PNG\r\n\x1a\n'
    assert w.controls['slice'].max == x.shape[1] - 1 and w.controls['slice'].value == viz._mid_slice(x)
    assert list(w.controls['feature'].options) == ['volume', 'mean']
    assert w.controls['flow'].max == len(w.case.path) - 1 >= 1
    seen = {bytes(w.image.value)}
    for name, v in [('slice', 6), ('channel', 1), ('overlay', 'grad g'), ('feature', 'mean'), ('flow', 1), ('mask', False)]:
        w.controls[name].value = v
        assert bytes(w.image.value) not in seen, name  # every control changes the picture
        seen.add(bytes(w.image.value))

def test_explorer_without_model_has_no_grad_f():
    w = viz.explore(blob(), None, ['volume'])
    assert 'grad f' not in w.controls['overlay'].options and w.controls['flow'].disabled
    assert len(w.case.path) == 1

def test_explorer_static_fallback():
    m, x = Toy(), blob()
    fig = viz.explore(x, m, ['volume', 'mean'], spacing=(2., 2., 2.), max_steps=30, static=True)
    titles = [a.get_title() for a in fig.axes]
    assert titles[:2] == ['CT', '∇f'] and titles[2].startswith('∇g volume (channel 1)') and titles[3].startswith('∇g mean (channel ')
    assert titles[-1].startswith('flow end')
    assert _img(fig).std() > 1

def test_explorer_static_when_ipywidgets_missing(monkeypatch):
    import builtins
    real = builtins.__import__
    def fake(name, *a, **k):
        if name.startswith('ipywidgets'): raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', fake)
    fig = viz.explore(blob(), None, ['volume'])
    assert isinstance(fig, matplotlib.figure.Figure) and [a.get_title() for a in fig.axes] == ['CT', '∇g volume (channel 1)']
