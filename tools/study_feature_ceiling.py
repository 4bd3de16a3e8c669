"""Add `feature_auc` (11_validation, `feature_ceiling`) to a study whose models.csv was written before the column existed.

`feature_auc` is the test AUC of a logistic regression on the rule's truth features as measured in the crop, fitted on the
training and validation cases: what the input permits a learner handed the right features. It needs only the cohort,
the labels and the split, which `study_data` rebuilds from the seed exactly as `run_seed` made them; no model is touched.

    python tools/study_feature_ceiling.py WORK OUT [OUT ...]     # cohorts cached in WORK/seed_<k>/cohort.pt

For every seed of each OUT it recomputes bayes_auc and n_test first and stops unless they equal the file's (so the
cohort, labels and split are the study's), then writes feature_auc into OUT/seeds/seed_<k>/models.csv (where present)
and OUT/models.csv. Every other column and file is left as it was. Rerunning it gives the same files.
"""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd
from fgflow.validation import STUDY_CONFIG, FEATURES, MODEL_COLUMNS, FeatureSet, rule_ceilings, study_data, _feature_values, _read_csv
from fgflow.io import atomic_write

KEYS = ('n_cases', 'matrix', 'spacing', 'size', 'window', 'fractions', 'positive_rate')

def ceilings(work:Path, seed:int, cfg:dict, rules) -> pd.DataFrame:
    "`rule_ceilings` of one seed: per rule feature_auc, bayes_auc, n_fit, n_test."
    x, _, labels, split = study_data(seed, cfg, work/f'seed_{seed}'/'cohort.pt', rules)
    return rule_ceilings(_feature_values(x, FeatureSet(list(FEATURES), (cfg['spacing'],) * 3, cfg['window'])), labels, split)

def _fill(md:pd.DataFrame, seed_ceilings:dict, where:str) -> pd.DataFrame:
    "md with feature_auc from {seed: rule_ceilings frame}, after checking bayes_auc and n_test against the file's."
    md = md.copy(); md['feature_auc'] = np.nan
    for seed, c in seed_ceilings.items():
        for rule, r in c.iterrows():
            sel = (md.seed == seed) & (md.rule == rule)
            if not sel.any(): continue
            if not (np.allclose(md.loc[sel, 'bayes_auc'], r.bayes_auc, rtol=0, atol=1e-12) and (md.loc[sel, 'n_test'] == r.n_test).all()):
                raise SystemExit(f"{where}: seed {seed}, rule {rule}: bayes_auc/n_test {md.loc[sel, 'bayes_auc'].iloc[0]}/{md.loc[sel, 'n_test'].iloc[0]} "
                                 f"in the file, {r.bayes_auc}/{r.n_test} rebuilt: not this study's cohort or split; nothing written")
            md.loc[sel, 'feature_auc'] = r.feature_auc
    return md[[c for c in MODEL_COLUMNS if c in md] + [c for c in md if c not in MODEL_COLUMNS]]

def main(work, *outs):
    work, got = Path(work), {}                                        # (seed, cohort settings) -> ceilings; the views studies share cohorts
    for out in map(Path, outs):
        st = json.loads((out/'study.json').read_text())
        cfg = dict(STUDY_CONFIG, **{k: st['config'][k] for k in KEYS}); ck = json.dumps({k: cfg[k] for k in KEYS})
        seeds = sorted(int(s) for s in st['seeds'])
        for seed in seeds:
            if (seed, ck) not in got:
                got[seed, ck] = ceilings(work, seed, cfg, st['rules']); print(out, seed, got[seed, ck].feature_auc.round(3).to_dict(), flush=True)
        mine = {seed: got[seed, ck] for seed in seeds}
        new = _fill(_read_csv(out/'models.csv'), mine, str(out/'models.csv'))
        for seed in seeds:
            f = out/'seeds'/f'seed_{seed}'/'models.csv'
            if f.exists():
                t = _fill(_read_csv(f), mine, str(f))
                with atomic_write(f) as tmp: t.to_csv(tmp, index=False)
        with atomic_write(out/'models.csv') as tmp: new.to_csv(tmp, index=False)

if __name__ == '__main__':
    if len(sys.argv) < 3: raise SystemExit(__doc__)
    main(*sys.argv[1:])
