"The committed validation study (nbs/validation/) is whole, split as study.json says, and the README quotes it as it is (reads files only)."
import json
from pathlib import Path

import numpy as np, pandas as pd
import pytest

from fgflow.validation import DESIGN_SEEDS, _read_csv, summarize_study, _regularized_table

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT/'nbs'/'validation'


@pytest.fixture(scope='module')
def study():
    st = json.loads((STUDY/'study.json').read_text())
    return st, *(_read_csv(STUDY/f) for f in ('models.csv', 'effects.csv', 'verdicts.csv'))

def test_seeds_and_splits(study):
    st, md, ef, vd = study
    seeds = {int(s) for s in st['seeds']}
    assert set(DESIGN_SEEDS) <= seeds and len(seeds - set(DESIGN_SEEDS)) >= 5, f"seeds {sorted(seeds)}"
    for s, split in st['seeds'].items(): assert split == ('design' if int(s) in DESIGN_SEEDS else 'heldout'), s
    for t in (md, ef, vd):
        assert set(t.seed) == seeds
        assert (t.split == np.where(t.seed.isin(list(DESIGN_SEEDS)), 'design', 'heldout')).all()
    assert (md.n_test >= 100).all() and (md[md.model.str.startswith('reg_')].init == 'scratch').all()
    for s in seeds:                                            # every seed's files kept for a resumed or extended run
        assert all((STUDY/'seeds'/f'seed_{s}'/f).exists() for f in ('models.csv', 'effects.csv', 'verdicts.csv', 'seconds.json'))

def _held(t): return t[t.split == 'heldout']

def test_readme_quotes_the_study(study):
    st, md, ef, vd = study
    readme = (ROOT/'README.md').read_text()
    text = ' '.join(readme.split())
    S = summarize_study(_held(md), _held(ef), _held(vd))
    m = S['methods'].set_index('method').loc[st['default_method']]
    assert f"called {100 * m.false_positive_rate:.1f}% of the features the model does not use" in text
    assert f"found only {100 * m.power:.0f}% of the features" in text
    assert m.null_rule_seeds_with_any == 0 and 'none under a rule with no signal' in text
    reg = _regularized_table(_held(md)).set_index(['rule', 'model'])
    ve, it = reg.loc[('volume+elongation', 'reg_true')], reg.loc[('intensity', 'reg_true')]
    assert f"+{ve.auc_minus_plain:.3f} on average" in text
    assert f"{it.auc_minus_plain:.3f} on average".replace('-', '−') in text
