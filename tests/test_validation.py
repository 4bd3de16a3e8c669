"fgflow.validation: the study's bookkeeping on hand-made score tables (the study itself runs in nbs/11_validation)."
import numpy as np, pandas as pd, pytest
from fgflow.features import FEATURES
from fgflow.validation import (ValidationError, read_study, relabel, role, summarize_study, truth)


def _scores(rule, seed, method, order, sig=()):
    "One plain model's feature rows: `order` lists feature names from rank 1 down; `sig` are significant."
    names = list(order) + [n for n in FEATURES if n not in order]
    return pd.DataFrame(dict(name=names, kind='feature', method=method, score=np.arange(len(names), 0, -1.),
                             rank=np.arange(1, len(names) + 1.), p_holm=[0.001 if n in sig else 0.5 for n in names],
                             role=[role(rule, n) for n in names], rule=rule, seed=seed, model='plain'))


def test_summary_counts_ranks_and_false_positives():
    rule = 'volume+elongation'
    sc = pd.concat([_scores(rule, 0, 'fgf_global', ['volume', 'elongation'], sig=['volume', 'mean']),
                    _scores(rule, 1, 'fgf_global', ['mean', 'volume', 'elongation'], sig=['mean', 'centroid_x']),
                    _scores('null', 0, 'fgf_global', ['mean'], sig=['mean']),
                    _scores('null', 1, 'fgf_global', ['mean'])], ignore_index=True)
    md = pd.DataFrame(dict(rule=[rule, rule, 'null', 'null'], seed=[0, 1, 0, 1], model='plain', auc=[0.8, 0.9, 0.5, 0.4],
                           M_truth=[0.1, 0.2, np.nan, np.nan], ratio_truth=[10., 20., np.nan, np.nan], M_S=np.nan, ratio_S=np.nan))
    S = summarize_study(sc, md)
    t = S['truth'].set_index(['rule', 'method']).loc[(rule, 'fgf_global')]
    assert (t.top1_true, t.all_true_on_top, t.seeds) == (1, 1, 2)
    assert t['mean rank of true'] == 'volume 1.5 · elongation 2.5'
    assert t['true significant'] == '1/4'
    n_irr = sum(role(rule, n) == 'irrelevant' for n in FEATURES)
    assert t['irrelevant significant'] == f'3/{2 * n_irr}'
    c = S['calibration'].set_index(['method', 'rule'])
    assert c.loc[('fgf_global', 'null'), 'significant'] == 1 and c.loc[('fgf_global', 'null'), 'tested'] == 2 * len(FEATURES)
    assert c.loc[('fgf_global', 'null'), 'seeds_with_any'] == 1
    assert c.loc[('fgf_global', rule), 'rate'] == pytest.approx(3 / (2 * n_irr))
    assert S['auc'].set_index('rule').loc[rule, 'mean'] == pytest.approx(0.85)


def test_truth_relabel_and_errors(tmp_path):
    assert truth('null') == [] and truth('position') == ['centroid_x', 'centroid_z']
    clin = pd.DataFrame({n: np.random.default_rng(0).normal(size=50) for n in FEATURES})
    y = relabel(clin, 'intensity', seed=4)
    assert set(np.unique(y)) <= {0, 1} and 5 < y.sum() < 30
    assert (relabel(clin, 'intensity', seed=4) == y).all() and not (relabel(clin, 'intensity', seed=5) == y).all()
    with pytest.raises(ValidationError, match="unknown rule 'shape'"): relabel(clin, 'shape', 0)
    with pytest.raises(ValidationError, match='scores.csv, models.csv, study.json missing'): read_study(tmp_path)
