"""Design-seed checks of what the study's plain models can learn (11_validation, "Can this network learn elongation at all?" and "Training recipes").

    python tools/design_learnability.py recipes WORK OUT [--seeds 0-4] [--variants base,n800f,...]
    python tools/design_learnability.py elongation WORK OUT [--seeds 0-4]
    python tools/design_learnability.py networks WORK OUT [--seeds 0-4]
    python tools/design_learnability.py effects WORK OUT [--seeds 0-4] [--variants base,depth4]
    python tools/design_learnability.py frames WORK OUT [--seeds 0-4] [--frames 'study crop,tumour frame,...'] [--effects]
    python tools/design_learnability.py ceilings WORK OUT [--seeds 0-4] [--variants views_train600]

WORK is the study's working folder (`fgflow study --work`; each seed's cohort.pt is reused, or rendered when absent;
cohorts of other settings are kept beside it under their own names). `recipes` trains the plain model of each rule under each recipe
variant (the study config changed as in `VARIANTS`) and writes OUT/recipes.csv (test AUC beside the Bayes AUC).
`elongation` asks whether elongation can be learned at all: the label is drawn from elongation alone (weight -2.5, the
volume+elongation rule's weight), and the plain network (with and without rotation/flip augmentation) is compared with
a logistic regression on the measured elongation of the crop; it writes OUT/elongation.csv. `networks` trains variants of
the network on the same elongation-only label (`NETWORKS`: no normalization, an extra stride-1 convolution per stage,
mean and max pooling, three coordinate channels, 100 epochs, 2 mm voxels) and writes OUT/networks.csv. `effects` takes
the plain models `recipes` trained and measures their counterfactual effects (`intervention_logits`, `factor_effects`:
logit change per +1 SD of each factor over the test cases, 95% bootstrap CI) into OUT/effects.csv; a variant has no null
models of its own, so no *used* threshold is set. `ceilings` writes OUT/ceilings.csv: per variant, seed and rule, `feature_auc` (a logistic regression on the rule's
truth features measured in the crop, fitted on the training and validation cases) beside the Bayes AUC, on that variant's
cohort and split. `frames` resamples every crop before training (`FRAMES`: centred on
the tumour, turned into its principal axes, with coordinate channels over the crop or masked to the tumour) and trains
a plain model per rule and for the elongation-only label (OUT/frames.csv); with `--effects` it measures every model's
counterfactual effects too (OUT/frames_effects.csv; a variant's null-rule models set its *used* threshold in 11_validation). Finished rows are kept
when rerun. Design seeds only (0-4): refused otherwise.
"""
import argparse, json
import torch.nn as nn
from pathlib import Path

import numpy as np, pandas as pd, torch

import fgflow.phantoms as P
from fgflow.features import FeatureSet
from fgflow.io import atomic_write
from fgflow.train import Augment, roc_auc, train
from fgflow.validation import (DESIGN_SEEDS, STUDY_CONFIG, parse_seeds, study_data, study_labels, study_model, train_study_model,
                               _cohort_file, _dataset, _feature_values, _read_csv)

SPLIT_100 = lambda n: (1 - 200 / n, 100 / n, 100 / n)   # 100 validation and 100 test cases, the rest for training
VARIANTS = {'base': {}, 'epochs40': dict(epochs=40), 'width16': dict(width=16), 'depth2': dict(depth=2), 'depth4': dict(depth=4),
            'batch8': dict(batch_size=8), 'lr1e-3_epochs40': dict(lr=1e-3, epochs=40),
            'cases800': dict(n_cases=800), 'train400': dict(n_cases=600, fractions=SPLIT_100(600)),
            'train600': dict(n_cases=800, fractions=SPLIT_100(800)), 'depth4_train600': dict(depth=4, n_cases=800, fractions=SPLIT_100(800)),
            'views_train600': dict(view='tumour frame', n_cases=800, fractions=SPLIT_100(800))}   # added 2026-12-04 (session 14)
RULES = ('volume+elongation', 'intensity', 'position')

def _data(work:Path, out:Path, seed:int, cfg:dict):
    if seed not in DESIGN_SEEDS: raise SystemExit(f"seed {seed} is not a design seed ({list(DESIGN_SEEDS)})")
    return study_data(seed, cfg, _cohort_file(work/f'seed_{seed}', cfg))   # any other cohort than the study's is kept apart

def _rows(f:Path) -> list[dict]: return _read_csv(f).to_dict('records') if f.exists() else []

def _save(f:Path, rows:list[dict]):
    with atomic_write(f) as tmp: pd.DataFrame(rows).to_csv(tmp, index=False)

def recipes(a):
    out, work = Path(a.out), Path(a.work); out.mkdir(parents=True, exist_ok=True)
    f = out/'recipes.csv'; rows = _rows(f); done = {(r['variant'], r['seed'], r['rule']) for r in rows}
    for seed in parse_seeds(a.seeds):
        for v in a.variants.split(','):
            cfg = dict(STUDY_CONFIG, **VARIANTS[v])
            if all((v, seed, r) in done for r in RULES): continue
            x, _, labels, split = _data(work, out, seed, cfg); te = split[2]
            for rule in RULES:
                if (v, seed, rule) in done: continue
                y, p = labels[rule]
                m, sec = train_study_model(x, y, split, cfg, seed, out/'runs'/v/str(seed)/rule)
                with torch.no_grad(): lt = m(x[te]).double().numpy()
                rows.append(dict(variant=v, change=json.dumps(VARIANTS[v]), seed=seed, rule=rule, n_train=len(split[0]), n_test=len(te),
                                 test_auc=roc_auc(y[te], lt), bayes_auc=roc_auc(y[te], p[te]), seconds=sec))
                _save(f, rows); print(rows[-1], flush=True)

class _Net(nn.Module):
    "FGFNet3D's layout with the knobs `networks` turns: normalization, extra stride-1 convolutions, pooling, coordinate channels."
    def __init__(self, cin:int=3, width:int=8, depth:int=3, norm:bool=True, extra:int=0, pool:str='mean', coord:bool=False):
        super().__init__()
        def block(i, o, s): return [nn.Conv3d(i, o, 3, stride=s, padding=1, bias=not norm), nn.GroupNorm(min(4, o), o) if norm else nn.Identity(), nn.SiLU()]
        layers, self.coord, self.pool, cin = [], coord, pool, cin + 3 * coord
        for i in range(depth):
            layers += block(cin, width * 2**i, 2); cin = width * 2**i
            for _ in range(extra): layers += block(cin, cin, 1)
        self.features, self.head = nn.Sequential(*layers), nn.Linear(cin * (2 if pool == 'mean+max' else 1), 1)
    def embed(self, x):
        if self.coord:
            B, _, D, H, W = x.shape
            g = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=x.dtype) for n in (D, H, W)], indexing='ij'))
            x = torch.cat([x, g[None].expand(B, 3, D, H, W)], 1)
        h = self.features(x)
        return torch.cat([h.mean((-3, -2, -1)), h.amax((-3, -2, -1))], 1) if self.pool == 'mean+max' else h.mean((-3, -2, -1))
    def forward(self, x): return self.head(self.embed(x)).squeeze(-1)

NETWORKS = {'as the study': ({}, 20, {}), 'no GroupNorm': (dict(norm=False), 20, {}), 'extra stride-1 conv per stage': (dict(extra=1), 20, {}),
            'mean and max pooling': (dict(pool='mean+max'), 20, {}), 'coordinate channels': (dict(coord=True), 20, {}),
            '100 epochs': ({}, 100, {}), '2 mm voxels (54³ crops, same field of view)': ({}, 20, dict(spacing=2.0, size=54))}

def _elongation_only():
    P.LABEL_RULES.setdefault('elongation only', dict(weights={'elongation': P.LABEL_RULES['volume+elongation']['weights']['elongation']},
                                                     description='elongated tumours are positive (design check only)'))
    return 'elongation only'

def networks(a):
    from fgflow.validation import IntensityGate
    out, work = Path(a.out), Path(a.work); out.mkdir(parents=True, exist_ok=True)
    f = out/'networks.csv'; rows = _rows(f); done = {(r['network'], r['seed']) for r in rows}
    rule = _elongation_only()
    for seed in parse_seeds(a.seeds):
        for name, (kw, epochs, change) in NETWORKS.items():
            if (name, seed) in done: continue
            cfg = dict(STUDY_CONFIG, **change)
            x, fac, _, (tr, va, te) = _data(work, out, seed, cfg)
            y, p = study_labels(fac, rule, seed, cfg['positive_rate'])
            torch.manual_seed(seed); m = IntensityGate(_Net(width=cfg['width'], depth=cfg['depth'], **kw), cfg['window'])
            res = train(m, _dataset(x, y, tr, cfg), _dataset(x, y, va, cfg), epochs=epochs, lr=cfg['lr'], batch_size=cfg['batch_size'],
                        patience=epochs, seed=seed, progress=False)
            with torch.no_grad(): auc = roc_auc(y[te], res.model.eval()(x[te]).double().numpy())
            rows.append(dict(network=name, seed=seed, test_auc=auc, bayes_auc=roc_auc(y[te], p[te]), best_epoch=int(res.best_epoch)))
            _save(f, rows); print(rows[-1], flush=True)

FRAMES = {  # name -> (rotate to the tumour's principal axes, coordinate channels: None, 'masked', 'full')
    'study crop': None, 'tumour-centred': (False, None), 'tumour frame': (True, None),
    'tumour frame + masked coordinates': (True, 'masked'), 'tumour frame + coordinates': (True, 'full'),
    'tumour frame + masked coordinates (depth 4)': (True, 'masked'),
    'tumour frame + centroid channels': (True, 'centroid'), 'tumour frame + unrotated coordinates': (True, 'offset'),
    'study crop and tumour frame': (True, 'views')}
FRAME_CFG = {'tumour frame + masked coordinates (depth 4)': dict(depth=4)}   # settings other than the study's
FRAME_RULES = (*RULES, 'null', 'elongation only')

def tumour_frame(x:torch.Tensor, rotate:bool=True, coords:str|None=None) -> torch.Tensor:
    "Crops (N, 2, S, S, S) resampled on the tumour: centred on the mask's centroid, axes along its principal axes (largest first) when `rotate`; `coords` adds 3 channels holding each voxel's position in the study crop (the anatomical reference's frame, /S + 0.5) ('full'), times the mask ('masked'), the tumour centroid's position constant over the crop ('centroid') or that position plus the voxel's offset along the output grid ('offset'); 'views' returns the study crop's channels followed by the tumour frame's."
    import scipy.ndimage as ndi
    N, C, S = x.shape[0], x.shape[1], x.shape[-1]; ctr = (np.array(x.shape[-3:]) - 1) / 2
    g = np.stack(np.meshgrid(*[np.arange(S)] * 3, indexing='ij'), 0).astype(float) - ctr[:, None, None, None]
    out = np.zeros((N, C + (C if coords == 'views' else 3 * (coords is not None)), S, S, S), np.float32)
    for k in range(N):
        idx = np.argwhere(x[k, 1].numpy() > 0.5).astype(float); c, V = idx.mean(0), np.eye(3)
        if rotate:
            V = np.linalg.eigh(np.cov(idx.T))[1][:, ::-1].copy()
            if np.linalg.det(V) < 0: V[:, 2] *= -1
        src = np.einsum('ij,jxyz->ixyz', V, g) + c[:, None, None, None]            # where each output voxel is read in the study crop
        for ch in range(C): out[k, ch] = ndi.map_coordinates(x[k, ch].numpy().astype(np.float64), src, order=1, mode='nearest')
        out[k, 1] = out[k, 1] > 0.5
        if coords == 'views': out[k, C:] = out[k, :C]; out[k, :C] = x[k].numpy()          # both views: the study crop first (the gate reads it)
        if coords in ('full', 'masked'): out[k, C:] = (src - ctr[:, None, None, None]) / S + 0.5
        if coords == 'masked': out[k, C:] *= out[k, 1]
        if coords == 'centroid': out[k, C:] = ((c - ctr) / S + 0.5)[:, None, None, None]       # the tumour's position, constant over the crop
        if coords == 'offset': out[k, C:] = (g + c[:, None, None, None] - ctr[:, None, None, None]) / S + 0.5   # its position plus the offset along the grid
    return torch.from_numpy(out)

class _Framed(nn.Module):
    "A model trained on `tumour_frame` crops, applied to study crops (for the interventions; no gradients)."
    def __init__(self, net, frame): super().__init__(); self.net, self.frame = net, frame
    def forward(self, x): return self.net(x if self.frame is None else tumour_frame(x, *self.frame))

def _frame_model(cfg, frame):
    from fgflow.model import FGFNet3D
    from fgflow.validation import IntensityGate
    cin = 3 + ({None: 0, 'views': 2}.get(frame[1], 3) if frame is not None else 0)
    return IntensityGate(FGFNet3D(cin, width=cfg['width'], depth=cfg['depth']), cfg['window'])

def frames(a):
    from fgflow.validation import factor_effects, intervention_logits
    out, work = Path(a.out), Path(a.work); out.mkdir(parents=True, exist_ok=True)
    f, fe = out/'frames.csv', out/'frames_effects.csv'; rows, erows = _rows(f), _rows(fe)
    done, edone = {(r['frame'], r['seed'], r['rule']) for r in rows}, {(r['frame'], r['seed']) for r in erows}
    _elongation_only()
    for seed in parse_seeds(a.seeds):
        x, fac, _, (tr, va, te) = _data(work, out, seed, STUDY_CONFIG)
        for name in a.frames.split(','):
            frame, cfg = FRAMES[name], dict(STUDY_CONFIG, **FRAME_CFG.get(name, {})); xf = x if frame is None else tumour_frame(x, *frame)
            models = {}
            for rule in FRAME_RULES:
                y, p = study_labels(fac, rule, seed, cfg['positive_rate'])
                mf = out/'frames_runs'/name.replace(' ', '_')/str(seed)/f"{rule.replace(' ', '_')}.pt"
                torch.manual_seed(seed); m = _frame_model(cfg, frame)
                if (name, seed, rule) in done and mf.exists(): m.load_state_dict(torch.load(mf)); models[rule] = m.eval(); continue
                res = train(m, _dataset(xf, y, tr, cfg), _dataset(xf, y, va, cfg), epochs=cfg['epochs'], lr=cfg['lr'], batch_size=cfg['batch_size'],
                            patience=cfg['epochs'], seed=seed, progress=False)
                with torch.no_grad(): auc = roc_auc(y[te], res.model.eval()(xf[te]).double().numpy())
                mf.parent.mkdir(parents=True, exist_ok=True); torch.save(res.model.state_dict(), mf); models[rule] = res.model.eval()
                rows = [r for r in rows if (r['frame'], r['seed'], r['rule']) != (name, seed, rule)]
                rows.append(dict(frame=name, seed=seed, rule=rule, n_train=len(tr), n_test=len(te), test_auc=auc, bayes_auc=roc_auc(y[te], p[te]),
                                 best_epoch=int(res.best_epoch)))
                _save(f, rows); print(rows[-1], flush=True)
            if a.effects and (name, seed) not in edone:
                lg, moved = intervention_logits({r: _Framed(m, frame) for r, m in models.items()}, seed, te, cfg, cfg['delta_sd'])
                for rule in FRAME_RULES:
                    e = factor_effects(lg[rule], moved, cfg['n_boot'], seed)
                    erows += [dict(frame=name, seed=seed, rule=rule, **r) for r in e.to_dict('records')]
                _save(fe, erows); print(name, seed, 'effects', flush=True)

def _variant_seeds(a, done:set):
    "(seed, variant, cfg) of a.seeds x a.variants not yet in `done` (pairs (variant, seed))."
    for seed in parse_seeds(a.seeds):
        for v in a.variants.split(','):
            if (v, seed) not in done: yield seed, v, dict(STUDY_CONFIG, **VARIANTS[v])

def effects(a):
    from fgflow.train import load_checkpoint
    from fgflow.validation import factor_effects, intervention_logits
    out, work = Path(a.out), Path(a.work)
    f = out/'effects.csv'; rows = _rows(f)
    for seed, v, cfg in _variant_seeds(a, {(r['variant'], r['seed']) for r in rows}):
        _, _, _, (_, _, te) = _data(work, out, seed, cfg)
        models = {}
        for rule in RULES:
            m = study_model(cfg); m.load_state_dict(load_checkpoint(out/'runs'/v/str(seed)/rule/'best.pt')['model']); models[rule] = m.eval()
        lg, moved = intervention_logits(models, seed, te, cfg, cfg['delta_sd'])
        for rule in RULES:
            e = factor_effects(lg[rule], moved, cfg['n_boot'], seed)
            rows += [dict(variant=v, seed=seed, rule=rule, **r) for r in e.to_dict('records')]
        _save(f, rows); print(v, seed, flush=True)

def ceilings(a):
    "`rule_ceilings` (feature_auc beside the Bayes AUC) of each rule on each variant's cohort and split: the ceilings its models are read against."
    from fgflow.validation import FEATURES, FeatureSet, rule_ceilings
    out, work = Path(a.out), Path(a.work); out.mkdir(parents=True, exist_ok=True)
    f = out/'ceilings.csv'; rows = _rows(f)
    for seed, v, cfg in _variant_seeds(a, {(r['variant'], r['seed']) for r in rows}):
        x, _, labels, split = _data(work, out, seed, cfg)
        c = rule_ceilings(_feature_values(x, FeatureSet(list(FEATURES), (cfg['spacing'],) * 3, cfg['window'])), {r: labels[r] for r in RULES}, split)
        rows += [dict(variant=v, seed=seed, rule=r, n_fit=int(t.n_fit), n_test=int(t.n_test), feature_auc=t.feature_auc, bayes_auc=t.bayes_auc) for r, t in c.iterrows()]
        _save(f, rows); print(v, seed, flush=True)

def elongation(a):
    from sklearn.linear_model import LogisticRegression
    out, work, cfg = Path(a.out), Path(a.work), STUDY_CONFIG; out.mkdir(parents=True, exist_ok=True)
    f = out/'elongation.csv'; rows = _rows(f); done = {r['seed'] for r in rows}
    rule = _elongation_only()
    for seed in parse_seeds(a.seeds):
        if seed in done: continue
        x, fac, _, (tr, va, te) = _data(work, out, seed, cfg)
        y, p = study_labels(fac, rule, seed, cfg['positive_rate'])
        r = dict(seed=seed, n_train=len(tr), n_test=len(te), bayes_auc=roc_auc(y[te], p[te]))
        for name, aug in (('network', None), ('network, rotations and flips', Augment(flip_axes=(0, 1, 2), rotate_deg=180., intensity_jitter=0.))):
            torch.manual_seed(seed); m = study_model(cfg)
            res = train(m, _dataset(x, y, tr, cfg), _dataset(x, y, va, cfg), epochs=cfg['epochs'], lr=cfg['lr'], batch_size=cfg['batch_size'],
                        patience=cfg['epochs'], seed=seed, augment=aug, progress=False)
            with torch.no_grad(): r[name] = roc_auc(y[te], res.model.eval()(x[te]).double().numpy())
        v = _feature_values(x, FeatureSet(['elongation'], (cfg['spacing'],) * 3, cfg['window']))
        fit = np.r_[tr, va]
        r['logistic on measured elongation'] = roc_auc(y[te], LogisticRegression().fit(v.iloc[fit], y[fit]).decision_function(v.iloc[te]))
        r['corr measured vs factor'] = float(np.corrcoef(v.elongation, fac.elongation)[0, 1])
        rows.append(r); _save(f, rows); print(r, flush=True)

if __name__ == '__main__':
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); sub = ap.add_subparsers(required=True)
    r = sub.add_parser('recipes'); r.set_defaults(fn=recipes)
    r.add_argument('work'); r.add_argument('out'); r.add_argument('--seeds', default='0-4'); r.add_argument('--variants', default=','.join(VARIANTS))
    e = sub.add_parser('elongation'); e.set_defaults(fn=elongation)
    e.add_argument('work'); e.add_argument('out'); e.add_argument('--seeds', default='0-4')
    c = sub.add_parser('effects'); c.set_defaults(fn=effects)
    c.add_argument('work'); c.add_argument('out'); c.add_argument('--seeds', default='0-4'); c.add_argument('--variants', default='base,depth4')
    ce = sub.add_parser('ceilings'); ce.set_defaults(fn=ceilings)
    ce.add_argument('work'); ce.add_argument('out'); ce.add_argument('--seeds', default='0-4'); ce.add_argument('--variants', default='views_train600')
    n = sub.add_parser('networks'); n.set_defaults(fn=networks)
    n.add_argument('work'); n.add_argument('out'); n.add_argument('--seeds', default='0-4')
    fr = sub.add_parser('frames'); fr.set_defaults(fn=frames)
    fr.add_argument('work'); fr.add_argument('out'); fr.add_argument('--seeds', default='0-4'); fr.add_argument('--frames', default=','.join(FRAMES))
    fr.add_argument('--effects', action='store_true', help='also the counterfactual effects of every model (frames_effects.csv)')
    a = ap.parse_args(); a.fn(a)
