"""The straightforward way to compute the FGF measure: per sample, per feature `torch.autograd.grad`.

Same mathematics as `fgflow.flow.fgf_measure` (step='auto', Heun, linear cut at the boundary, trapezoidal
mean of cos² along the line, a0 when the line has zero length, lines kept in the box [0, 1] by dropping the
components that would leave it), written as a user would write it by hand."""
from __future__ import annotations
import numpy as np, torch
from fgflow.features import FEATURES

def _grad(fn, x):
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = fn(xr)
        g, = torch.autograd.grad(v.sum(), xr)
    return v.detach(), g

def _cos2(gk, gf) -> float:
    gk, gf = gk.double().flatten(), gf.double().flatten()
    den = (gk @ gk) * (gf @ gf)
    return float((gk @ gf) ** 2 / den) if den > 0 else float('nan')

def _align(x, gf, names, spacing, window, W) -> np.ndarray:
    "cos² of gf with each named feature and each noise feature, one autograd.grad per feature."
    out = []
    for n in names:
        _, gk = _grad(lambda t: FEATURES[n](t, spacing, window), x); out.append(_cos2(gk, gf))
    for r in W:
        _, gk = _grad(lambda t: t.flatten(1) @ r, x); out.append(_cos2(gk, gf))
    return np.array(out)

def naive_measure(model, X, names, noise, spacing=(1., 1., 1.), window=(-200., 300.), threshold=0.0,
                  steps_per_line:int=20, max_steps:int=200, domain=(0., 1.), edge_tol:float=1e-6) -> np.ndarray:
    "Per-point m (N, K + R): K named features then the R noise features (weights of `noise`); lines kept in `domain`."
    model.eval()
    W = noise.weights.to(X.device)
    box = (lambda z: z) if domain is None else (lambda z: z.clamp(*domain))
    rows = []
    for i in range(len(X)):
        x = X[i:i + 1].float()
        f, g = _grad(model, x)
        h = float((f - threshold).abs() / g.flatten().norm() / steps_per_line)
        if not (np.isfinite(h) and h > 0): h = 1.0
        s = -float(torch.sign(f - threshold))
        def field(g, x):
            "Unit projected field s·g/|g| (components that would leave the box dropped), g usable, and not stuck at the edge."
            gt = g
            if domain is not None: gt = g.masked_fill(((x <= domain[0]) & (s * g < 0)) | ((x >= domain[1]) & (s * g > 0)), 0)
            n, nt = float(g.flatten().norm()), float(gt.flatten().norm())
            ok = np.isfinite(n) and n > 0
            v = s * gt / nt if np.isfinite(nt) and nt > 0 else torch.zeros_like(g)
            return v, ok, ok and nt >= edge_tol * n
        a0 = _align(x, g, names, spacing, window, W)
        I, L, prev = np.zeros_like(a0), 0.0, a0
        _, ok, okt = field(g, x)
        if s != 0 and ok and okt:
            for _ in range(max_steps):
                v, _, _ = field(g, x)
                xp = box(x + h * v)
                _, gp = _grad(model, xp)
                v2, _, ok2 = field(gp, xp)
                xn = box(x + h / 2 * (v + (v2 if ok2 else v)))
                fn, gn = _grad(model, xn)
                crossed = bool(s * (fn - threshold) >= 0)
                if crossed:
                    a = float(((threshold - f) / (fn - f)).clamp(0, 1))
                    xn = x + a * (xn - x)
                    fn, gn = _grad(model, xn)
                ds = float((xn - x).flatten().norm())
                an = _align(xn, gn, names, spacing, window, W)
                I += 0.5 * (prev + an) * ds; L += ds
                x, f, g, prev = xn, fn, gn, an
                _, okn, oktn = field(gn, xn)
                if crossed or not (okn and oktn): break
        rows.append(I / L if L > 0 else a0)
    return np.stack(rows)
