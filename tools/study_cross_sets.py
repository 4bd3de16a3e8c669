"""M of each regularized rule's true set and wrong set for the plain, reg_true and reg_wrong models of the committed study.

models.csv holds each model's M of its own penalty's set (the rule's true set for the plain model); this adds the other set,
so the notebook can show that reg_wrong raises the wrong set's M and not the true set's. Same measure as the study's M_S
(`fgflow.validation.set_measure`: flow lines of the test cases, the mask channel banded as in the config).

    python tools/study_cross_sets.py WORK OUT [SEED ...]     # writes OUT/cross_sets.csv (resumable: finished seeds are kept)
"""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd, torch
from fgflow.validation import STUDY_CONFIG, WRONG_SETS, study_data, study_model, truth, set_measure, _read_csv
from fgflow.train import load_checkpoint
from fgflow.io import atomic_write

def main(work, out, seeds=None):
    work, out = Path(work), Path(out)
    st = json.loads((out/'study.json').read_text()); cfg = STUDY_CONFIG
    seeds = [int(s) for s in (seeds or st['seeds'])]
    f = out/'cross_sets.csv'
    rows = _read_csv(f).to_dict('records') if f.exists() else []
    done = {(r['seed'], r['rule'], r['model'], r['set']) for r in rows}
    md = _read_csv(out/'models.csv')
    for seed in seeds:
        x, _, _, (_, _, te) = study_data(seed, cfg, work/f'seed_{seed}'/'cohort.pt')
        for rule in cfg['regularized']:
            sets = {'true': truth(rule), 'wrong': WRONG_SETS[rule]}
            for name in ('plain', 'reg_true', 'reg_wrong'):
                own = 'wrong' if name == 'reg_wrong' else 'true'
                for which, S in sets.items():
                    if (seed, rule, name, which) in done: continue
                    if which == own: M = float(md[(md.seed == seed) & (md.rule == rule) & (md.model == name)].M_S.iloc[0])
                    else:
                        m = study_model(cfg); m.load_state_dict(load_checkpoint(work/f'seed_{seed}'/'runs'/rule/name/'best.pt')['model'])
                        M = set_measure(m.eval(), x[te], S, cfg, seed)
                    rows.append(dict(seed=seed, split=st['seeds'][str(seed)], rule=rule, model=name, set=which, features='+'.join(S), M=M))
                    print(seed, rule, name, which, round(M, 4), flush=True)
        with atomic_write(f) as tmp: pd.DataFrame(rows).to_csv(tmp, index=False)

if __name__ == '__main__':
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or None)
