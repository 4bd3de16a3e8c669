"""The straightforward way to compute the FGF measure: per sample, per feature `torch.autograd.grad`.

Same mathematics as `fgflow.flow.fgf_measure` (step='auto', Heun, linear cut at the boundary, trapezoidal
mean of cos² along the line, a0 when the line has zero length), written as a user would write it by hand."""
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
                  steps_per_line:int=20, max_steps:int=200) -> np.ndarray:
    "Per-point m (N, K + R): K named features then the R noise features (weights of `noise`)."
    model.eval()
    W = noise.weights
    rows = []
    for i in range(len(X)):
        x = X[i:i + 1].float()
        f, g = _grad(model, x)
        h = float((f - threshold).abs() / g.flatten().norm() / steps_per_line)
        if not (np.isfinite(h) and h > 0): h = 1.0
        s = -float(torch.sign(f - threshold))
        a0 = _align(x, g, names, spacing, window, W)
        I, L, prev = np.zeros_like(a0), 0.0, a0
        unit = lambda g: s * g / g.flatten().norm()
        if s != 0 and g.flatten().norm() > 0:
            for _ in range(max_steps):
                v = unit(g)
                _, gp = _grad(model, x + h * v)
                v2 = unit(gp) if torch.isfinite(gp.norm()) and gp.norm() > 0 else v
                xn = x + h / 2 * (v + v2)
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
                if crossed or not gn.flatten().norm() > 0: break
        rows.append(I / L if L > 0 else a0)
    return np.stack(rows)
