"""Design-seed comparison of *marginal* statistics for the null-model test (issue 16; 11_validation, "Statistics tried").

    python tools/design_null_marginal.py WORK OUT [--seeds 0-4]
    python tools/design_null_marginal.py WORK OUT --seeds 5-14 --report STATISTIC,EPOCH

The study's default (`unique`, the share of the full feature span only one feature explains) cannot call every feature
of a used factor significant: the five size features span each other, so each one's unique share is small. A marginal
statistic asks instead how strongly the model follows each feature by itself, and the null models (the same procedure
on permuted labels) say how strongly a model that was given no signal follows it. Statistics per feature, over the
test cases, each tested by `maxt_test` against the seed's 39 null models (family-wise 5 %):
- `rho`: |Spearman rho| between the model's logit and the feature's value (the `spearman` method's score);
- `M`: the mean cos² of the model's input gradient with the feature's (`point_statistics`' `M`, mask band 1 as fgf_null);
- `unique`: the study's default, for reference (its figures differ from the committed study's: see below);
- `atanh_rho`: Fisher's z of `rho`, atanh|rho| (added after the first three were scored: the null models' |rho| with
  the size features is bimodal and piles up near 1, where a trained model's also lies, and the standardized max-T
  cannot see a rank at the top of such a null; the transform that makes correlations near 1 comparable).
The null models are taken at the epoch the study keeps (`best`) and at their last epoch (`last`).
The rule of choice, written before any seed was scored: among the configurations with at most 5% false positives and
at most one null-rule seed with a positive on the design seeds, the one with the highest power (ties: the true factor
on top more often); it is scored once on held-out seeds (`--report`) and becomes the default only if it holds there.

Nothing is read from the committed study: its models were trained with unseeded initial weights (11_validation, "The
study") and cannot be rebuilt. So every seed's plain models, 39 null models and interventions (which factors each
plain model *uses*, `mark_used` as the study) are made again here by the study's own functions, in WORK/seed_S with
`run_seed`'s layout (a later `fgflow study --work WORK` reuses them). Resumable: finished models are reused, each
seed's statistics are cached in OUT/per_seed/ (with the test cases' feature values and every model's logits, SEED_values.npz). Writes OUT/null_marginal.csv (design seeds) or, with `--report`, the one
configuration chosen on the design seeds scored once on held-out seeds, OUT/null_marginal_heldout.csv.
"""
import argparse, functools, sys
from pathlib import Path

import numpy as np, pandas as pd, torch
from scipy import stats as sst

sys.path.insert(0, str(Path(__file__).parent))
from design_null_statistic import _score                      # the study's scoring (FPR, power, true factor on top)
from fgflow.features import FeatureSet, FEATURES
from fgflow.io import atomic_write
from fgflow.stats import maxt_test, point_statistics, train_null_models
from fgflow.train import load_checkpoint
from fgflow.validation import (CONFIGS, DESIGN_SEEDS, FEATURE_FACTOR, LABEL_RULES, STUDY_CONFIG, _dataset, _feature_values, _train_kwargs,
                               factor_effects, intervention_logits, mark_used, parse_seeds, rule_factors, study_data, study_model,
                               train_study_model)

NAMES, CFG = list(FEATURES), STUDY_CONFIG
STATS, EPOCHS = ('rho', 'M', 'unique', 'atanh_rho'), ('best', 'last')
DERIVED = {'atanh_rho': ('rho', lambda v: np.arctanh(np.clip(v, 0., 1. - 1e-6)))}   # statistic -> (from, transform)

def with_derived(st:pd.DataFrame) -> pd.DataFrame:
    "The statistics table with the rows of every DERIVED statistic added (computed from its base statistic's rows)."
    for derived, (base, f) in DERIVED.items():
        d = st[st.statistic == base].copy(); d[NAMES] = f(d[NAMES].to_numpy(float)); st = pd.concat([st, d.assign(statistic=derived)])
    return st

def _load(p:Path) -> torch.nn.Module:
    m = study_model(CFG); m.load_state_dict(load_checkpoint(p)['model']); return m.eval()

def seed_tables(work:Path, seed:int, out:Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    "(statistics: one row per model, epoch and statistic, one column per feature; used: rule x factor of the plain models)."
    fs, fu = out/'per_seed'/f'{seed}_stats.csv', out/'per_seed'/f'{seed}_used.csv'
    if fs.exists() and fu.exists(): return pd.read_csv(fs), pd.read_csv(fu, keep_default_na=False, na_values=[''])
    cfg = CFG
    x, _, labels, split = study_data(seed, cfg, work/'cohort.pt'); tr, va, te = split
    plain = {r: train_study_model(x, labels[r][0], split, cfg, seed, work/'runs'/r/'plain')[0] for r in LABEL_RULES}
    y0 = labels['null'][0]
    paths = train_null_models((_dataset(x, y0, tr, cfg), _dataset(x, y0, va, cfg)), cfg['n_null'], work/'null',
                              model_fn=functools.partial(study_model, cfg), train_kwargs=_train_kwargs(cfg), seed=seed, progress=False)
    nulls = {'best': [_load(p) for p in paths], 'last': [_load(p.parent/'last.pt') for p in paths]}
    # the model's truth, exactly as run_seed: interventions of the plain models and the kept null models
    named = {f'{r}|plain': m for r, m in plain.items()} | {f'null_{k}': m for k, m in enumerate(nulls['best'])}
    lg, moved = intervention_logits(named, seed, te, cfg, cfg['delta_sd'])
    eff = pd.concat([factor_effects(lg[n], moved, cfg['n_boot'], seed).assign(model=n) for n in named], ignore_index=True)
    eff = mark_used(eff, cfg['used_quantile'])
    used = eff[eff.model.str.endswith('|plain')].assign(rule=lambda d: d.model.str.split('|').str[0])[['rule', 'factor', 'used', 'effect']]
    # statistics at the test cases
    xt = x[te]
    vals = _feature_values(xt, FeatureSet(NAMES, (cfg['spacing'],) * 3, cfg['window']))
    fsb = FeatureSet(NAMES, (cfg['spacing'],) * 3, cfg['window'], cfg['mask_band'])
    rows = []
    for epoch in EPOCHS:
        models = {f'{r}|plain': m for r, m in plain.items()} | {f'null_{k}': m for k, m in enumerate(nulls[epoch])}
        with torch.no_grad(): logits = {n: torch.cat([m(xt[i:i + 16]) for i in range(0, len(xt), 16)]).double().numpy() for n, m in models.items()}
        ps = point_statistics(list(models.values()), xt, fsb)
        for (n, m), p in zip(models.items(), ps):
            rho = [abs(sst.spearmanr(logits[n], vals[f]).statistic) if np.ptp(vals[f]) > 0 else np.nan for f in NAMES]
            for stat, v in (('rho', rho), ('M', p.M.to_numpy()[:len(NAMES)]), ('unique', p.unique.to_numpy()[:len(NAMES)])):
                rows.append(dict(seed=seed, model=n, epoch=epoch, statistic=stat, **dict(zip(NAMES, np.asarray(v, float)))))
        if epoch == 'best':                                                     # kept for other value-space statistics
            ln = {n: v for n, v in logits.items()}
    last = {n: v for n, v in logits.items()}
    fv = out/'per_seed'/f'{seed}_values.npz'; fv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(fv) as tmp:
        with open(tmp, 'wb') as fh: np.savez(fh, names=np.array(NAMES), values=vals[NAMES].to_numpy(), models=np.array(list(ln)),
                                            logits_best=np.stack(list(ln.values())), logits_last=np.stack([last[n] for n in ln]))
    st = pd.DataFrame(rows); used = used.assign(seed=seed)
    fs.parent.mkdir(parents=True, exist_ok=True)
    for t, f in ((st, fs), (used, fu)):
        with atomic_write(f) as tmp: t.to_csv(tmp, index=False)
    return st, used

def verdicts(st:pd.DataFrame, used:pd.DataFrame, stat:str, epoch:str) -> pd.DataFrame:
    "maxt_test of each plain model's statistic against the null models', with the study's truth columns."
    tabs = []
    for seed, g in st[(st.statistic == stat) & (st.epoch == epoch)].groupby('seed'):
        S = g.set_index('model')[NAMES]
        nul = S[[n.startswith('null_') for n in S.index]].reset_index(drop=True)
        u = used[used.seed == seed]
        for r in LABEL_RULES:
            t = maxt_test(S.loc[f'{r}|plain'], nul)
            e = u[u.rule == r].set_index('factor').used
            t['factor'] = t.name.map(FEATURE_FACTOR)
            tabs.append(t.assign(seed=seed, rule=r, rule_uses=t.factor.isin(rule_factors(r)), used=t.factor.map(lambda f: bool(e.get(f, False)))))
    return pd.concat(tabs, ignore_index=True)

def main(a):
    global CFG
    CFG = CONFIGS[a.config]
    work, out, seeds = Path(a.work), Path(a.out), parse_seeds(a.seeds)
    if a.report:
        if any(s in DESIGN_SEEDS for s in seeds): raise SystemExit(f"--report is for held-out seeds (not {list(DESIGN_SEEDS)})")
        configs, name = [tuple(a.report.split(','))], 'null_marginal_heldout.csv'
    else:
        if any(s not in DESIGN_SEEDS for s in seeds): raise SystemExit(f"design seeds only ({list(DESIGN_SEEDS)})")
        configs, name = [(s, e) for s in STATS for e in EPOCHS], 'null_marginal.csv'
    per = [seed_tables(work/f'seed_{s}', s, out) for s in seeds]
    st, used = with_derived(pd.concat([p[0] for p in per])), pd.concat([p[1] for p in per])
    rows = []
    for stat, epoch in configs:
        v = verdicts(st, used, stat, epoch)
        rows.append(dict(statistic=stat, null_epoch=epoch, K=CFG['n_null'], seeds=a.seeds, **_score(v)))
        print(rows[-1], flush=True)
    with atomic_write(out/name) as tmp: pd.DataFrame(rows).to_csv(tmp, index=False)

if __name__ == '__main__':
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('work'); ap.add_argument('out'); ap.add_argument('--seeds', default='0-4')
    ap.add_argument('--config', default='study', choices=['study', 'tiny'], help="'tiny' only to try the tool quickly")
    ap.add_argument('--report', default='', help="held-out seeds: score only the design seeds' choice 'STATISTIC,EPOCH', once")
    main(ap.parse_args())
