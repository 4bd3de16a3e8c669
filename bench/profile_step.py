"""Where the time of a finite-difference (and a double-backprop) penalty step goes (issue 18), against a plain step, one process.

    python -m bench.profile_step                      # 8x2x48^3, FGFNet3D width 8 depth 4 (bench row 3)
    python -m bench.profile_step --size 4 64 16       # batch, edge, width

The step as `train` takes it for a mode-free model (the BCE's forward shared with the penalty, one-sided difference),
split into its stages: the forward with graph, the input gradient ∇f (`autograd.grad` to the input, graph kept), the
penalty's own arithmetic (alignment, the direction v), the second forward at x + v, and the one backward to the
weights through both graphs; beside the plain step's forward and backward. Then the network's first convolution alone:
its forward, the gradient to its weights (what a plain step needs) and the gradient to its input (what ∇f needs and a
plain step does not). Then the double-backprop step the same way: the forward, the input gradient with its graph
(`create_graph=True`), the penalty's arithmetic (U = dP/d∇f), and the one backward through the graph of ∇f and the
BCE's. Medians of `--reps` after warm-up; the stages are timed one after the other in the same loop."""
import argparse, statistics, time
import torch

from bench.common import machine, make_batch
from fgflow.features import FeatureSet
from fgflow.model import FGFNet3D
from fgflow.train import _FrozenPattern, _Pull, _alignment, _fd_step, gram_pinv

def _med(v:list, skip:int=2) -> float: return statistics.median(v[skip:]) * 1000

def _U(gf:torch.Tensor, Gf:torch.Tensor, P:torch.Tensor) -> torch.Tensor:
    "dP/d∇f of the alignment penalty (λ = 1, no sign term): the same arithmetic as fgflow.train._reg_loss."
    a, w, g2 = _alignment(gf, Gf, P); ok = torch.isfinite(a); n = int(ok.sum())
    a0, w0 = torch.where(ok, a, 0.).to(gf.dtype), torch.where(ok[:, None], w, 0.).to(gf.dtype)
    U = torch.bmm(w0[:, None], Gf)[:, 0].sub_(a0[:, None] * gf)
    return U.mul_(torch.where(ok, -2 / max(n, 1) / torch.where(ok, g2, 1.), 0.)[:, None])

def _setup(B:int, S:int, W:int):
    "The bench row's model, optimizer, batch, labels, Gram pseudo-inverse, feature gradients (B, K, d), loss and weights."
    torch.manual_seed(0)
    model = FGFNet3D(width=W).train(); opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = make_batch(B, S), (torch.arange(B) % 2).float()
    G = FeatureSet(['volume', 'elongation']).gradients(x)
    return model, opt, x, y, gram_pinv(G), G.flatten(2).to(x.dtype), torch.nn.BCEWithLogitsLoss(), list(model.parameters())

def stages(B:int, S:int, W:int, reps:int=9) -> dict:
    "Milliseconds of each stage of the finite-difference step and of the plain step."
    model, opt, x, y, P, Gf, lossf, params = _setup(B, S, W)
    T = {k: [] for k in ('plain forward', 'plain backward', 'forward', 'input gradient', 'penalty arithmetic', 'forward at x + v', 'backward (both graphs)')}
    def tick(k, t0): T[k].append(time.perf_counter() - t0); return time.perf_counter()
    for _ in range(reps + 2):
        t = time.perf_counter(); loss = lossf(model(x), y); t = tick('plain forward', t)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); tick('plain backward', t)
        xq, pat = x.detach().requires_grad_(True), _FrozenPattern(model)
        t = time.perf_counter()
        with pat.record(): f0 = model(xq)
        t = tick('forward', t)
        gf, = torch.autograd.grad(f0.sum(), xq, retain_graph=True); t = tick('input gradient', t)
        gf = gf.flatten(1); U = _U(gf, Gf, P); nu = U.norm(dim=1)
        step = _fd_step(x, 0.1); v = (U * (step / nu)[:, None]).view_as(x); t = tick('penalty arithmetic', t)
        with pat.replay(lambda m: m): fp = model(x + v)
        t = tick('forward at x + v', t)
        loss = lossf(f0, y) + ((fp - f0) * nu / step).sum()
        opt.zero_grad(set_to_none=True); loss.backward(inputs=params); opt.step(); tick('backward (both graphs)', t)
    return {k: _med(v) for k, v in T.items()}

def db_stages(B:int, S:int, W:int, reps:int=9) -> dict:
    "Milliseconds of each stage of the double-backprop step and of the plain step (their own loop)."
    model, opt, x, y, P, Gf, lossf, params = _setup(B, S, W)
    T = {k: [] for k in ('plain forward', 'plain backward', 'forward', 'input gradient with graph', 'penalty arithmetic', 'backward (double graph)')}
    def tick(k, t0): T[k].append(time.perf_counter() - t0); return time.perf_counter()
    for _ in range(reps + 2):
        t = time.perf_counter(); loss = lossf(model(x), y); t = tick('plain forward', t)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); tick('plain backward', t)
        xq = x.detach().requires_grad_(True)
        t = time.perf_counter(); f0 = model(xq); t = tick('forward', t)
        gg, = torch.autograd.grad(f0.sum(), xq, create_graph=True); t = tick('input gradient with graph', t)
        gg = gg.flatten(1); U = _U(gg.detach(), Gf, P); t = tick('penalty arithmetic', t)
        loss = lossf(f0, y) + _Pull.apply(gg, U)
        opt.zero_grad(set_to_none=True); loss.backward(inputs=params); opt.step(); tick('backward (double graph)', t)
    return {k: _med(v) for k, v in T.items()}

def first_conv(B:int, S:int, W:int, reps:int=9) -> dict:
    "Milliseconds of the first convolution's forward, weight gradient and input gradient (`convolution_backward`)."
    conv = FGFNet3D(width=W).features[0][0]
    x = make_batch(B, S); go = torch.randn_like(conv(x))
    args = (go, x, conv.weight, None, list(conv.stride), list(conv.padding), list(conv.dilation), False, [0] * 3, conv.groups)
    out = {}
    for k, fn in (('forward', lambda: conv(x)),
                  ('weight gradient', lambda: torch.ops.aten.convolution_backward(*args, [False, True, False])),
                  ('input gradient', lambda: torch.ops.aten.convolution_backward(*args, [True, False, False]))):
        ts = []
        with torch.no_grad():
            for _ in range(reps + 2): t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        out[k] = _med(ts)
    return out

def main(argv=None):
    ap = argparse.ArgumentParser('python -m bench.profile_step', description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, nargs=3, action='append', metavar=('B', 'S', 'WIDTH'))
    ap.add_argument('--reps', type=int, default=9)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in machine().items()))
    for B, S, W in a.size or [(8, 48, 8)]:
        t = stages(B, S, W, a.reps); plain = t['plain forward'] + t['plain backward']
        fd = sum(v for k, v in t.items() if not k.startswith('plain'))
        print(f'{B}x2x{S}^3 width {W}: plain step {plain:.1f} ms, finite-difference step {fd:.1f} ms ({fd / plain:.2f}x)')
        for k, v in t.items(): print(f'  {k:24s} {v:7.1f} ms  ({v / plain:.2f}x plain step)')
        floor = t['forward'] + t['input gradient'] + t['forward at x + v'] + 2 * t['plain backward']
        print(f'  without any penalty arithmetic, forward + input gradient + forward + two backwards: {floor:.1f} ms ({floor / plain:.2f}x)')
        t = db_stages(B, S, W, a.reps); plain = t['plain forward'] + t['plain backward']
        db = sum(v for k, v in t.items() if not k.startswith('plain'))
        print(f'  double-backprop step {db:.1f} ms ({db / plain:.2f}x the plain step of its own loop, {plain:.1f} ms)')
        for k, v in t.items():
            if not k.startswith('plain'): print(f'    {k:26s} {v:7.1f} ms  ({v / plain:.2f}x plain step)')
        c = first_conv(B, S, W, a.reps)
        print('  first convolution: ' + ', '.join(f'{k} {v:.1f} ms' for k, v in c.items())
              + f" (input gradient {c['input gradient'] / c['forward']:.1f}x its forward)")

if __name__ == '__main__': main()
