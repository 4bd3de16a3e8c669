"""Design-seed checks of the intensity rule's regularized models (05_train, "After the fresh held-out seeds").

    python tools/design_intensity.py reg WORK OUT TAG '{"epochs": 40, "patience": 40}' [--lam 10] [--seeds 0-4] [--rules intensity] [--plain]
    python tools/design_intensity.py sufficiency WORK [--seeds 0-4]

WORK is the study's working folder (`fgflow study --work`; each seed's cohort.pt is reused, or rendered when absent).
`reg` trains `reg_true` with lam='auto' (sign term, band, objective selection) with `LAM_AUTO` set to --lam and the
study config changed by the JSON, and writes OUT/TAG/SEED_RULE.json (test AUC, banded M_S of the rule's true set);
finished pieces are skipped when rerun. A change of the cohort (n_cases, fractions) draws that cohort; `--plain` also
trains the plain model of the same settings. `sufficiency` prints the test AUC of a logistic regression on the crops'
feature values ({mean, variance}, the four first-order features, all 15), fitted on the training and validation
cases, beside the Bayes AUC. Design seeds only (0-4): refused otherwise.
"""
import argparse, json
from pathlib import Path

import numpy as np, pandas as pd, torch

import fgflow.train as T
from fgflow.features import FeatureSet, FEATURES
from fgflow.validation import DESIGN_SEEDS, STUDY_CONFIG, parse_seeds, set_measure, study_data, train_study_model, truth, _cohort_file, _feature_values

def _seed_data(work:Path, seed:int, cfg:dict=STUDY_CONFIG):
    "The seed's cohort as `cfg` draws it: the study's own cache when the cohort settings are the study's, else one beside it."
    if seed not in DESIGN_SEEDS: raise SystemExit(f"seed {seed} is not a design seed ({list(DESIGN_SEEDS)})")
    x, _, labels, split = study_data(seed, cfg, _cohort_file(work/f'seed_{seed}', cfg))
    return x, labels, split

def reg(a):
    T.LAM_AUTO = a.lam
    cfg, out = dict(STUDY_CONFIG, **json.loads(a.change)), Path(a.out)/a.tag
    out.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(a.seeds):
        x, labels, split = _seed_data(Path(a.work), seed, cfg); te = split[2]
        for rule in a.rules.split(','):
            f = out/f'{seed}_{rule}.json'
            if f.exists(): continue
            y, _ = labels[rule]
            m, sec = train_study_model(x, y, split, cfg, seed, out/'runs'/str(seed)/rule, truth(rule), 'auto')
            with torch.no_grad(): lt = m(x[te]).double().numpy()
            r = dict(seed=seed, rule=rule, tag=a.tag, lam=a.lam, change=a.change, test_auc=T.roc_auc(y[te], lt),
                     M_S=set_measure(m, x[te], truth(rule), STUDY_CONFIG, seed), seconds=sec)
            if a.plain:   # the plain model of the same settings, for the difference
                m0, _ = train_study_model(x, y, split, cfg, seed, out/'runs'/str(seed)/f'{rule}_plain')
                with torch.no_grad(): r['plain_test_auc'] = T.roc_auc(y[te], m0(x[te]).double().numpy())
                r['plain_M_S'] = set_measure(m0, x[te], truth(rule), STUDY_CONFIG, seed)
            f.write_text(json.dumps(r)); print(r, flush=True)

def sufficiency(a):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    sets = {'mean+variance': ['mean', 'variance'], 'first-order 4': ['mean', 'variance', 'skewness', 'kurtosis'], 'all 15': list(FEATURES)}
    rows = []
    for seed in parse_seeds(a.seeds):
        x, labels, (tr, va, te) = _seed_data(Path(a.work), seed)
        vals = _feature_values(x, FeatureSet(list(FEATURES), (STUDY_CONFIG['spacing'],) * 3, STUDY_CONFIG['window']))
        (y, p), fit = labels['intensity'], np.r_[tr, va]
        r = dict(seed=seed, bayes=T.roc_auc(y[te], p[te]))
        for name, cols in sets.items():
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(vals.iloc[fit][cols], y[fit])
            r[name] = T.roc_auc(y[te], clf.decision_function(vals.iloc[te][cols]))
        rows.append(r)
    print(pd.DataFrame(rows).round(3).to_string(index=False))

if __name__ == '__main__':
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); sub = ap.add_subparsers(required=True)
    r = sub.add_parser('reg'); r.set_defaults(fn=reg)
    for k in ('work', 'out', 'tag', 'change'): r.add_argument(k)
    r.add_argument('--lam', type=float, default=T.LAM_AUTO); r.add_argument('--seeds', default='0-4'); r.add_argument('--rules', default='intensity')
    r.add_argument('--plain', action='store_true', help='also train the plain model of the same settings')
    s = sub.add_parser('sufficiency'); s.set_defaults(fn=sufficiency)
    s.add_argument('work'); s.add_argument('--seeds', default='0-4')
    a = ap.parse_args(); a.fn(a)
