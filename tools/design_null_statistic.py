"""Design-seed comparison of statistics for the null-model test (08_stats / 11_validation, "Statistics tried for fgf_null").

    python tools/design_null_statistic.py WORK STUDY OUT [--seeds 0-4] [--k 39,99]
    python tools/design_null_statistic.py WORK STUDY OUT --seeds 5-14 --report

WORK is the study's working folder (its cohorts, plain models and null models are reused, nothing is trained), STUDY the
committed study (`nbs/validation`: its effects say which factors each plain model uses). For every design seed, the plain
model of each rule and the seed's 39 null models are measured at the test cases, with the null models taken at the epoch
the study keeps (best validation AUC on their permuted labels) and at their last epoch. Statistics per feature:
- `unique`: the study's (share of the full feature span only this feature explains, `point_statistics`);
- `slope`: the model's first-order change per feature SD along the feature's own gradient, mean over the test cases,
  <∇h, ∇f_j> / |∇f_j|² · SD(f_j), in absolute value; `slope/sd`: the same over the SD of the model's logits;
- `partial`: as `slope` but with the coefficient of ∇f_j in the least-squares fit of ∇h on all 15 feature gradients
  (the change per SD of f_j with the others held, to first order); `partial/sd` likewise.
Each is tested by `maxt_test` against the null models (family-wise 5 %), and scored as the study scores its methods:
false-positive rate, power, true factor on top, null-rule seeds with any positive. Writes OUT/null_statistics.csv
(one row per statistic, null epoch and K) and OUT/per_seed/SEED_EPOCH_K.npz (the per-model values, reused when rerun).
With a K above the study's 39 (`--k`), the null models beyond the study's are trained by the study's own procedure and
seed stream (`train_null_models`, index by index) into OUT/null/seed_SEED, beside links to the study's 39.
Design seeds only (0-4), except `--report`: the configuration chosen on them (`CHOSEN`) scored once on held-out seeds,
into OUT/null_statistics_heldout.csv.
"""
import argparse
from pathlib import Path

import numpy as np, pandas as pd, torch

from fgflow.features import FeatureSet, FEATURES
from fgflow.flow import input_gradients
from fgflow.io import atomic_write
from fgflow.stats import done_null_models, maxt_test, point_statistics
from fgflow.train import load_checkpoint
from fgflow.validation import (DESIGN_SEEDS, FEATURE_FACTOR, LABEL_RULES, STUDY_CONFIG, parse_seeds, read_study, rule_factors,
                               study_data, study_model)

NAMES = list(FEATURES)

def _null_paths(work:Path, seed:int, k:int, out:Path) -> list[Path]:
    "The seed's first k null models: the study's, and beyond them more of the same stream trained into OUT/null/seed_SEED."
    have = done_null_models(work/'null')
    if k <= len(have): return have[:k]
    import functools
    from fgflow.stats import train_null_models
    from fgflow.validation import _dataset, _train_kwargs
    d = out/'null'/f'seed_{seed}'; d.mkdir(parents=True, exist_ok=True)
    for p in [work/'null'/'null.json', *[q.parent for q in have]]:
        if not (d/p.name).exists(): (d/p.name).symlink_to(p.resolve())
    x, _, labels, (tr, va, _) = study_data(seed, STUDY_CONFIG, work/'cohort.pt'); y0 = labels['null'][0]
    return train_null_models((_dataset(x, y0, tr, STUDY_CONFIG), _dataset(x, y0, va, STUDY_CONFIG)), k, d,
                             model_fn=functools.partial(study_model, STUDY_CONFIG), train_kwargs=_train_kwargs(STUDY_CONFIG), seed=seed, progress=False)

def _models(work:Path, epoch:str, nulls:list[Path]) -> dict:
    paths = {f'{r}|plain': work/'runs'/r/'plain'/'best.pt' for r in LABEL_RULES}
    paths |= {f'null_{k}': (p if epoch == 'best' else p.parent/'last.pt') for k, p in enumerate(nulls)}
    out = {}
    for n, p in paths.items():
        m = study_model(STUDY_CONFIG); m.load_state_dict(load_checkpoint(p)['model']); out[n] = m.eval()
    return out

def measure(work:Path, seed:int, epoch:str, f:Path, nulls:list[Path]) -> dict:
    "Per model: unique (15,), slopes along each gradient and partial slopes (15,) per SD of each feature, logit SD."
    if f.exists(): return dict(np.load(f, allow_pickle=False))
    cfg = STUDY_CONFIG
    x, _, _, (_, _, te) = study_data(seed, cfg, work/'cohort.pt'); xt = x[te]
    fsb = FeatureSet(NAMES, (cfg['spacing'],) * 3, cfg['window'], cfg['mask_band'])   # the features of fgf_null
    sd = fsb.values(xt.double()).std(0).numpy()
    models = _models(work, epoch, nulls); names = list(models)
    ps = point_statistics(list(models.values()), xt, fsb, slope=True)           # unique and slope as fgflow.stats defines them
    uniq, slope = (np.stack([p[c].to_numpy()[:len(NAMES)] for p in ps]) for c in ('unique', 'slope'))
    C, gram, L = [], [], []                                                     # for partial (a second gradient pass) and the logit SD
    for b0 in range(0, len(xt), 10):
        xb = xt[b0:b0 + 10]; G = fsb.gradients(xb).flatten(2).double()
        gram.append(G @ G.transpose(1, 2))
        C.append(torch.stack([(G @ input_gradients(m, xb).flatten(1).double()[..., None])[..., 0] for m in models.values()]))
        with torch.no_grad(): L.append(torch.stack([m(xb).double() for m in models.values()]))
    C, gram, L = torch.cat(C, 1).numpy(), torch.cat(gram).numpy(), torch.cat(L, 1).numpy()   # (M, N, K), (N, K, K), (M, N)
    partial = np.einsum('nij,mnj->mni', np.linalg.pinv(gram, rcond=1e-8, hermitian=True), C) * sd
    d = dict(names=np.array(names), unique=uniq, slope=slope, partial=np.abs(partial.mean(1)), logit_sd=L.std(1))
    f.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(f) as tmp:
        with open(tmp, 'wb') as fh: np.savez(fh, **d)
    return d

def _score(g:pd.DataFrame) -> dict:
    irr, true = g[~g.rule_uses & ~g.used], g[g.rule_uses & g.used]
    top = [bool(gf.statistic.max() > gg[~gg.rule_uses & ~gg.used].statistic.max())
           for _, gg in g.groupby(['seed', 'rule']) for _, gf in gg[gg.rule_uses & gg.used].groupby('factor')]
    return dict(false_positive_rate=irr.significant.mean(), n_irrelevant=len(irr), power=true.significant.mean(), n_true=len(true),
                true_factor_on_top=np.mean(top), n_cases=len(top), null_rule_seeds_with_any=int(g[g.rule == 'null'].groupby('seed').significant.any().sum()))

CHOSEN = ('slope', 'last', 99)   # the design seeds' choice (null_statistics.csv): the one configuration `--report` runs

def main(a):
    work, out = Path(a.work), Path(a.out)
    _, eff, _, _ = read_study(a.study)
    seeds = parse_seeds(a.seeds)
    if a.report:   # held-out seeds, once: only the configuration chosen on the design seeds
        if any(s in DESIGN_SEEDS for s in seeds): raise SystemExit(f"--report is for held-out seeds (not {list(DESIGN_SEEDS)})")
        configs, stats, name = [(CHOSEN[2], CHOSEN[1])], (CHOSEN[0],), 'null_statistics_heldout.csv'
    else:
        if any(s not in DESIGN_SEEDS for s in seeds): raise SystemExit(f"design seeds only ({list(DESIGN_SEEDS)})")
        configs, stats, name = [(int(k), e) for k in a.k.split(',') for e in ('best', 'last')], ('unique', 'slope', 'slope/sd', 'partial', 'partial/sd'), 'null_statistics.csv'
    rows = []
    for k, epoch in configs:
        per = {s: measure(work/f'seed_{s}', s, epoch, out/'per_seed'/f'{s}_{epoch}_{k}.npz', _null_paths(work/f'seed_{s}', s, k, out)) for s in seeds}
        for stat in stats:
            tabs = []
            for s, d in per.items():
                v = d[stat.split('/')[0]] / (d['logit_sd'][:, None] if stat.endswith('/sd') else 1)
                S = pd.DataFrame(v, index=list(d['names']), columns=NAMES)
                nul = S[[n.startswith('null_') for n in S.index]].reset_index(drop=True)
                for r in LABEL_RULES:
                    t = maxt_test(S.loc[f'{r}|plain'], nul)
                    e = eff[(eff.seed == s) & (eff.rule == r) & (eff.model == 'plain')].set_index('factor').used
                    t['factor'] = t.name.map(FEATURE_FACTOR)
                    tabs.append(t.assign(seed=s, rule=r, rule_uses=t.factor.isin(rule_factors(r)), used=t.factor.map(lambda f: bool(e.get(f, False)))))
            rows.append(dict(statistic=stat, null_epoch=epoch, K=k, seeds=a.seeds, **_score(pd.concat(tabs))))
            print(rows[-1], flush=True)
    with atomic_write(out/name) as tmp: pd.DataFrame(rows).to_csv(tmp, index=False)

if __name__ == '__main__':
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('work'); ap.add_argument('study'); ap.add_argument('out'); ap.add_argument('--seeds', default='0-4'); ap.add_argument('--k', default='39')
    ap.add_argument('--report', action='store_true', help='held-out seeds: score only the design seeds\' choice (CHOSEN), once')
    main(ap.parse_args())
