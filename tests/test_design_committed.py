"The design-seed checks in nbs/validation/design/ are whole, design seeds only, and say what 11_validation says of them (reads files only)."
import json
from pathlib import Path

import numpy as np, pandas as pd
import pytest

from fgflow.validation import DESIGN_SEEDS, _read_csv, summarize_study

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT/'nbs'/'validation'/'design'
RULES = {'volume+elongation', 'intensity', 'position'}

def _nb_text() -> str:
    nb = json.loads((ROOT/'nbs'/'11_validation.ipynb').read_text())
    return ' '.join(' '.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown').split())

def test_recipes_whole_and_quoted():
    r = _read_csv(DESIGN/'recipes.csv')
    assert set(r.seed) == set(DESIGN_SEEDS)
    for v, g in r.groupby('variant'):
        assert len(g) == len(DESIGN_SEEDS) * len(RULES) and set(g.rule) == RULES, v
    assert (r.n_test == 100).all()
    auc = r.pivot_table(index='variant', columns='rule', values='test_auc', aggfunc='mean')
    gap = r.assign(gap=r.bayes_auc - r.test_auc).pivot_table(index='variant', columns='rule', values='gap', aggfunc='mean')
    text = _nb_text()
    assert f"position models reach {auc.loc['depth4', 'position']:.2f} (gap {gap.loc['depth4', 'position']:.3f})" in text
    assert f"raise it from {auc.loc['base', 'intensity']:.2f} to {auc.loc['train600', 'intensity']:.2f} (gap {gap.loc['train600', 'intensity']:.3f})" in text
    v = auc['volume+elongation'].drop('views_train600')                  # a change of view, not of the recipe: its own section
    assert f"({v.min():.3f}–{v.max():.3f} under every recipe on the study crop)" in text

def test_elongation_is_not_learned():
    el, nw = _read_csv(DESIGN/'elongation.csv'), _read_csv(DESIGN/'networks.csv')
    assert set(el.seed) == set(DESIGN_SEEDS) and (el.n_test == 100).all()
    assert (el['logistic on measured elongation'] >= 0.85).all()            # the information is in the crop
    assert (el['network'] <= 0.65).all()
    means = nw.groupby('network').test_auc.mean()
    assert len(means) == 7 and (nw.groupby('network').seed.nunique() == len(DESIGN_SEEDS)).all()
    assert means.max() < 0.6, means                                       # "no variant learns elongation"
    text = _nb_text()
    assert f"stays at chance ({el.network.min():.2f}–{el.network.max():.2f}, mean {el.network.mean():.2f})" in text

def test_depth4_uses_pos_x():
    e = _read_csv(DESIGN/'effects.csv')
    p = e[(e.rule == 'position') & (e.factor == 'pos_x')].assign(away=lambda t: (t.ci_low > 0) | (t.ci_high < 0))
    assert p[p.variant == 'depth4'].away.sum() == len(DESIGN_SEEDS) and p[p.variant == 'base'].away.sum() == 0
    text = _nb_text()
    assert f"+{p[p.variant == 'depth4'].effect.mean():.2f} logits per SD" in text

def test_null_statistics_tool_reproduces_the_study():
    "The tool's `unique` at the study's settings gives the committed study's design-seed scores of fgf_null."
    t = _read_csv(DESIGN/'null_statistics.csv').set_index(['statistic', 'null_epoch', 'K'])
    st = ROOT/'nbs'/'validation'
    md, ef, vd = (_read_csv(st/f) for f in ('models.csv', 'effects.csv', 'verdicts.csv'))
    m = summarize_study(md, ef, vd, 'design')['methods'].set_index('method').loc['fgf_null']
    row = t.loc[('unique', 'best', 39)]
    for k in ('false_positive_rate', 'power', 'null_rule_seeds_with_any', 'n_irrelevant', 'n_true'):
        assert row[k] == pytest.approx(m[k]), k

def test_readme_quotes_the_elongation_check():
    el, nw = _read_csv(DESIGN/'elongation.csv'), _read_csv(DESIGN/'networks.csv')
    m = nw.groupby('network').test_auc.mean(); v = m.drop('as the study')
    lg = el['logistic on measured elongation']
    text = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"mean test AUC {m['as the study']:.2f} for the network and {v.min():.2f}–{v.max():.2f} for six variants of it, "
            f"{lg.min():.2f}–{lg.max():.2f} for a logistic regression") in text

def test_heldout_report_of_the_null_statistic_is_quoted():
    "The design seeds' choice, scored once on held-out seeds, is said as it came out beside the default on the same seeds."
    h = _read_csv(DESIGN/'null_statistics_heldout.csv').iloc[0]
    assert (h.statistic, h.null_epoch, int(h.K)) == ('slope', 'last', 99)
    seeds = [int(s) for s in str(h.seeds).split('-')]
    assert not set(range(seeds[0], seeds[-1] + 1)) & set(DESIGN_SEEDS)
    text = _nb_text()
    assert (f"called {100 * h.false_positive_rate:.1f}% of the irrelevant features significant "
            f"({round(h.false_positive_rate * h.n_irrelevant)} of {int(h.n_irrelevant)}; the level is 5%) and found "
            f"{100 * h.power:.1f}% of the used ones ({round(h.power * h.n_true)} of {int(h.n_true)})") in text

def _frames():
    f, e = _read_csv(DESIGN/'frames.csv'), _read_csv(DESIGN/'frames_effects.csv')
    thr = e[e.rule == 'null'].groupby('frame').effect.apply(lambda v: np.quantile(v.abs(), 0.95))
    e = e.assign(used=((e.ci_low > 0) | (e.ci_high < 0)) & (e.effect.abs() > e.frame.map(thr)))
    return f, e

def test_tumour_frame_makes_elongation_learnable():
    "frames.csv is whole (9 crops x 5 rules x design seeds, 100 test cases) and says what 11_validation and the README say of it."
    f, e = _frames()
    rules = {'volume+elongation', 'intensity', 'position', 'null', 'elongation only'}
    assert set(f.seed) == set(DESIGN_SEEDS) and (f.n_test == 100).all() and f.frame.nunique() == 9
    for fr, g in f.groupby('frame'): assert len(g) == len(DESIGN_SEEDS) * len(rules) and set(g.rule) == rules, fr
    assert len(e) == len(f) * 8 and set(e.factor) == {'size', 'elongation', 'flatness', 'mean_hu', 'hu_sd', 'pos_x', 'pos_y', 'pos_z'}
    auc = f.pivot_table(index='frame', columns='rule', values='test_auc')
    used = lambda r, fa: e[(e.rule == r) & (e.factor == fa)].groupby('frame').used.sum()
    frames = ['tumour frame', 'tumour frame + masked coordinates', 'tumour frame + coordinates', 'tumour frame + masked coordinates (depth 4)']
    el, ve = auc['elongation only'], used('volume+elongation', 'elongation')
    assert el['study crop'] < 0.6 < 0.75 < el['tumour frame + masked coordinates']          # the finding itself
    assert ve['study crop'] == 0 and (ve[frames] == len(DESIGN_SEEDS)).all()
    gap = (f.bayes_auc - f.test_auc).groupby([f.frame, f.rule]).mean()
    m = f[(f.frame == 'tumour frame + masked coordinates') & (f.rule == 'elongation only')].test_auc
    text = _nb_text()
    assert (f"goes from {el['study crop']:.2f} (study crop) to {el['tumour frame']:.2f} (tumour frame; "
            f"{f[(f.frame == 'tumour frame') & (f.rule == 'elongation only')].test_auc.min():.2f} on seed 1) and "
            f"{el['tumour frame + masked coordinates']:.2f} with masked coordinates ({m.min():.2f}–{m.max():.2f} on every seed)") in text
    v, g = auc.loc[frames, 'volume+elongation'], gap[[(x, 'volume+elongation') for x in frames]]
    assert (f"test AUC {v.min():.2f}–{v.max():.2f} against the Bayes {f[f.rule == 'volume+elongation'].bayes_auc.mean():.2f} "
            f"(gap {g.min():.3f}–{g.max():.3f}; the study crop's {gap[('study crop', 'volume+elongation')]:.3f})") in text
    c, mc = 'tumour frame + coordinates', 'tumour frame + masked coordinates'
    assert f"(position {auc.loc[c, 'position']:.3f}, pos_x and pos_z used in 5 of 5)" in text
    assert used('position', 'pos_x')[c] == used('position', 'pos_z')[c] == len(DESIGN_SEEDS)
    assert f"cost intensity ({auc.loc[c, 'intensity']:.3f}) and the elongation-only label ({el[c]:.2f})" in text
    assert (f"keep intensity ({auc.loc[mc, 'intensity']:.3f}) and elongation but carry position weakly ({auc.loc[mc, 'position']:.3f}; "
            f"pos_x used in {used('position', 'pos_x')[mc]}, pos_z in {used('position', 'pos_z')[mc]} of 5)") in text
    v2 = 'study crop and tumour frame'
    for r, fa, n in [('volume+elongation', 'size', 5), ('volume+elongation', 'elongation', 4), ('intensity', 'mean_hu', 5), ('intensity', 'hu_sd', 4),
                     ('position', 'pos_x', 5), ('position', 'pos_z', 5)]:
        assert used(r, fa)[v2] == n, (r, fa)
    assert used('volume+elongation', 'elongation')['study crop'] == used('position', 'pos_x')['study crop'] == 0
    a3 = lambda fr: ' / '.join(f"{auc.loc[fr, r]:.3f}" for r in ('volume+elongation', 'intensity', 'position'))
    e2 = f[(f.frame == v2) & (f.rule == 'elongation only')].test_auc
    assert (f"at test AUC {a3(v2)} against the study crop's {a3('study crop')}, though the elongation-only label stays at "
            f"{e2.mean():.2f} ({e2.min():.2f}–{e2.max():.2f})") in text
    un = ['tumour frame + coordinates', 'tumour frame + centroid channels', 'tumour frame + unrotated coordinates']
    assert f"carries position ({auc.loc[un, 'position'].min():.3f}–{auc.loc[un, 'position'].max():.3f}) and breaks the elongation-only label ({el[un].min():.2f}–{el[un].max():.2f})" in text
    ig = sorted(gap[(fr, 'intensity')] for fr in auc.index)
    assert f"Intensity is at best {ig[0]:.3f}–{ig[4]:.3f} below its Bayes AUC" in text and ig[5] > ig[4] + 0.02
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert f"design seeds (position {auc.loc[v2, 'position']:.2f})" in readme
    assert (f"reaches {el[mc]:.2f} on the elongation-only label and its volume+elongation models use elongation in 5 of 5 design seeds, "
            f"at the cost of position ({auc.loc[mc, 'position']:.2f} against {auc.loc['study crop', 'position']:.2f})") in readme

def test_views_study_design_seeds_whole_and_quoted():
    "The study with both views (design seeds only): every model of every seed, and the figures 11_validation quotes."
    from fgflow.validation import read_study
    m, e, v, st = read_study(DESIGN/'views')
    assert st['config']['view'] == 'tumour frame' and set(st['seeds']) == {str(s) for s in DESIGN_SEEDS}
    assert set(m.seed) == set(DESIGN_SEEDS) and (m.split == 'design').all()
    assert (m.groupby('seed').size() == 8 + st['config']['n_null']).all() and (m.n_test == 100).all()
    s, c = summarize_study(m, e, v, 'design'), summarize_study(*read_study(DESIGN.parent)[:3], 'design')
    text = _nb_text()
    auc = s['auc'].set_index('rule')
    mean = lambda t: float(t.split(' ')[0])
    assert f"Volume+elongation {mean(auc.loc['volume+elongation', 'test_auc']):.3f} against {mean(c['auc'].set_index('rule').loc['volume+elongation', 'test_auc']):.3f}" in text
    assert f"(gap to Bayes {auc.loc['volume+elongation', 'gap']:.3f}" in text
    assert f"elongation used in {round(5 * s['used'].loc['elongation', 'volume+elongation'])} of 5 seeds" in text
    assert f"pos_x in {round(5 * s['used'].loc['pos_x', 'position'])} of 5" in text
    fn = s['methods'].set_index('method').loc['fgf_null']
    assert f"FPR {100 * fn.false_positive_rate:.1f}% ({round(fn.false_positive_rate * fn.n_irrelevant)} of {int(fn.n_irrelevant)} irrelevant pairs" in text
    assert f"power {100 * fn.power:.0f}% against" in text
    rg = s['regularized'].set_index(['rule', 'model'])
    assert f"`reg_true` is {-rg.loc[('volume+elongation', 'reg_true'), 'auc_minus_plain']:.3f} below its plain model" in text
    assert f"intensity `reg_true` is {-rg.loc[('intensity', 'reg_true'), 'auc_minus_plain']:.3f} below" in text
    assert rg.loc[('volume+elongation', 'reg_true'), 'M_S'] > 0.7                 # the penalty aligns once the pose is held
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"volume+elongation {mean(auc.loc['volume+elongation', 'test_auc']):.3f} against "
            f"{mean(c['auc'].set_index('rule').loc['volume+elongation', 'test_auc']):.3f}") in readme
    assert f"{100 * fn.false_positive_rate:.1f}% false positives against" in readme

def test_marginal_null_statistics_whole_and_quoted():
    "tools/design_null_marginal.py's design-seed files: every seed and model, the table's figures from the per-seed files, and what 11_validation quotes."
    import sys
    sys.path.insert(0, str(ROOT/'tools'))
    from design_null_marginal import NAMES, verdicts, with_derived
    from design_null_statistic import _score
    d = DESIGN/'marginal'
    st = pd.concat([pd.read_csv(d/'per_seed'/f'{s}_stats.csv') for s in DESIGN_SEEDS])
    used = pd.concat([pd.read_csv(d/'per_seed'/f'{s}_used.csv', keep_default_na=False, na_values=['']) for s in DESIGN_SEEDS])
    assert (st.groupby(['seed', 'epoch', 'statistic']).size() == 4 + 39).all() and set(st.seed) == set(DESIGN_SEEDS)
    for s in DESIGN_SEEDS: assert np.load(d/'per_seed'/f'{s}_values.npz')['values'].shape == (100, len(NAMES))
    st = with_derived(st)
    t = _read_csv(d/'null_marginal.csv').set_index(['statistic', 'null_epoch'])
    v = {}
    for (stat, ep), row in t.iterrows():
        v[stat, ep] = verdicts(st, used, stat, ep)
        sc = _score(v[stat, ep])
        for k in ('false_positive_rate', 'power', 'true_factor_on_top', 'null_rule_seeds_with_any', 'n_true'): assert row[k] == pytest.approx(sc[k]), (stat, ep, k)
    text = _nb_text()
    assert f"{100 * t.loc[('rho', 'best'), 'power']:.1f}% power ({round(t.loc[('rho', 'best'), 'power'] * 39)} of 39 pairs) and no false positive" in text
    assert t.loc[('rho', 'best'), 'false_positive_rate'] == 0
    assert f"against {100 * t.loc[('unique', 'best'), 'power']:.1f}% ({round(t.loc[('unique', 'best'), 'power'] * 39)} of 39) for the unique share" in text
    assert f"finds {100 * t.loc[('atanh_rho', 'best'), 'power']:.1f}% ({round(t.loc[('atanh_rho', 'best'), 'power'] * 39)} of 39) at {100 * t.loc[('atanh_rho', 'best'), 'false_positive_rate']:.1f}% false positives" in text
    # power over the five size features versus the other true factors, as the text says
    for stat, n_size, n_other in (('rho', 0, 6), ('atanh_rho', 4, 7)):
        tr = v[stat, 'best']; tr = tr[tr.rule_uses & tr.used]
        assert (len(tr[tr.factor == 'size']), int(tr[tr.factor == 'size'].significant.sum())) == (25, n_size), stat
        assert (len(tr[tr.factor != 'size']), int(tr[tr.factor != 'size'].significant.sum())) == (14, n_other), stat
    r = st[(st.statistic == 'rho') & (st.epoch == 'best')]; nul = r[r.model.str.startswith('null_')]
    assert f"median of {nul.volume.median():.2f}, and {100 * (nul.volume > 0.9).mean():.0f}% of them" in text
    assert f"(mean HU: median {nul['mean'].median():.2f}, 90th percentile {nul['mean'].quantile(0.9):.2f}, against {r[r.model == 'intensity|plain']['mean'].min():.2f} and more" in text
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"has a median of {nul.volume.median():.2f} over {len(nul)} such networks, and {100 * (nul.volume > 0.9).mean():.0f}% "
            "are above 0.9") in readme
    vol = r[r.model == 'volume+elongation|plain'].volume
    assert f"lie at {vol.min():.2f}–{vol.max():.2f}" in text

def _views_heldout_rows() -> tuple[list[int], list[str], dict, dict]:
    "The held-out comparison table of the views study against the committed study on the same seeds, as 11_validation shows it; the seeds, the rows, the views study's summary and study.json."
    from fgflow.validation import read_study
    V, C = read_study(DESIGN.parent/'views'), read_study(DESIGN.parent)
    seeds = sorted(int(s) for s, sp in V[3]['seeds'].items() if sp == 'heldout')
    sel = lambda t: t[t.seed.isin(seeds)]
    sv, sc = summarize_study(*V[:3], 'heldout'), summarize_study(*(sel(t) for t in C[:3]), 'heldout')
    auc = lambda s, r: (lambda a: (a.bayes_auc - a.gap, a.gap))(s['auc'].set_index('rule').loc[r])   # mean test AUC, not its 'mean ± sd' text
    used = lambda s, r, f: round(len(seeds) * s['used'].loc[f, r])
    reg = lambda s, r: s['regularized'].set_index(['rule', 'model']).loc[(r, 'reg_true')].auc_minus_plain
    n, rules = len(seeds), ('volume+elongation', 'intensity', 'position')
    fm = lambda s: (lambda m: f"{100 * m.false_positive_rate:.1f}% / {100 * m.power:.1f}% / {100 * m.true_factor_on_top:.1f}% / "
                              f"{int(m.null_rule_seeds_with_any)}")(s['methods'].set_index('method').loc['fgf_null'])
    return seeds, [
        "| plain AUC vol+elong / intensity / position (gap to Bayes) | " + " / ".join(f"{auc(sc, r)[0]:.3f} ({auc(sc, r)[1]:.3f})" for r in rules)
        + " | " + " / ".join(f"{auc(sv, r)[0]:.3f} ({auc(sv, r)[1]:.3f})" for r in rules) + " |",
        f"| elongation used (vol+elong), pos_x used (position) | {used(sc, 'volume+elongation', 'elongation')} of {n}, {used(sc, 'position', 'pos_x')} of {n} "
        f"| {used(sv, 'volume+elongation', 'elongation')} of {n}, {used(sv, 'position', 'pos_x')} of {n} |",
        f"| fgf_null false positives / power / true factor on top / null-rule seeds with a positive | {fm(sc)} | {fm(sv)} |",
        f"| reg_true − plain, vol+elong / intensity | {reg(sc, 'volume+elongation'):+.3f} / {reg(sc, 'intensity'):+.3f} "
        f"| {reg(sv, 'volume+elongation'):+.3f} / {reg(sv, 'intensity'):+.3f} |"], sv, V[3]

def test_views_heldout_table_is_the_files():
    "Once the views study's held-out seeds are all in, 11_validation's comparison table is what the files say."
    seeds, rows, sv, st = _views_heldout_rows()
    nb = json.loads((ROOT/'nbs'/'11_validation.ipynb').read_text())
    md = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    if len(seeds) < 10: pytest.skip(f"the views study's held-out seeds are not all in ({seeds})")
    assert f"**The views study on its {len(seeds)} held-out seeds ({seeds[0]}–{seeds[-1]}), run once" in md
    for r in rows: assert r in md, r
    sec = [st['seconds'][str(s)]['total'] for s in seeds]
    assert f"Seconds per views seed: {min(sec):.0f}–{max(sec):.0f}" in md
    fn = sv['methods'].set_index('method').loc['fgf_null']; au = sv['auc'].set_index('rule')
    rg = sv['regularized'].set_index(['rule', 'model'])
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"closed position's gap to the Bayes AUC ({au.loc['position', 'gap']:.3f} against") in readme
    assert (f"({rg.loc[('volume+elongation', 'reg_true'), 'auc_minus_plain']:.3f} and {rg.loc[('intensity', 'reg_true'), 'auc_minus_plain']:.3f} "
            "against the plain models)").replace('-', '−') in readme
    assert f"called {100 * fn.false_positive_rate:.1f}% of the unused features significant" in readme
    assert f"a seed took {min(sec) / 60:.0f}–{max(sec) / 60:.0f} minutes" in readme


def test_train_auto_cli_defaults_quoted():
    "nbs/results/train_auto_cli_defaults.csv (tools/check_auto_cli.py) is whole and says what the README says of it."
    d = pd.read_csv(ROOT/'nbs'/'results'/'train_auto_cli_defaults.csv')
    pl, au = (d[d.model == m].set_index('cohort_seed').sort_index() for m in ('plain', 'auto'))
    assert list(pl.index) == list(au.index) == [57, 58, 59, 60] and (d.n_lines == 40).all()
    diff = au.test_auc - pl.test_auc
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"gave test AUCs within {diff.abs().max():.3f} of plain training's (mean {diff.mean():.3f}, 40 test cases each)"
            .replace('-', '−')) in readme
    assert f"to {au.M_S.min():.2f}–{au.M_S.max():.2f} (plain: at most {pl.M_S.max():.3f})" in readme
    assert (au.M_volume / au.M_S).min() > 0.99                  # "almost all of it volume"


def test_train_auto_cli_resnet10_quoted():
    "nbs/results/train_auto_cli_resnet10.csv (tools/check_auto_cli.py --arch monai.resnet10) says what the README says of it."
    d = pd.read_csv(ROOT/'nbs'/'results'/'train_auto_cli_resnet10.csv')
    pl, au = (d[d.model == m].set_index('cohort_seed').sort_index() for m in ('plain', 'auto'))
    assert list(pl.index) == list(au.index) == [57, 58] and (d.arch == 'monai.resnet10').all() and (d.max_epochs == 10).all()
    diff = (au.test_auc - pl.test_auc).round(3)
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert f"changed the test AUC by {diff[57]:+.3f} and {diff[58]:+.3f}".replace('-', '−') in readme
    assert f"from {pl.M_S[57]:.3f} to {au.M_S[57]:.3f} and from {pl.M_S[58]:.3f} to {au.M_S[58]:.3f}" in readme

def test_feature_ceiling_is_the_files_and_quoted():
    "feature_auc of the committed study equals feature_ceiling on the rebuilt cohort of one seed, and 11_validation quotes the held-out means."
    from fgflow.validation import read_study, STUDY_CONFIG, FEATURES, FeatureSet, feature_ceiling, study_data, truth, _feature_values
    m, e, v, _ = read_study(ROOT/'nbs'/'validation')
    a = summarize_study(m, e, v, 'heldout')['auc'].set_index('rule')
    text = _nb_text()
    f = a.loc[['volume+elongation', 'intensity', 'position']]
    assert (f"reaches {f.feature_auc.iloc[0]:.3f} on volume+elongation, {f.feature_auc.iloc[1]:.3f} on intensity and "
            f"{f.feature_auc.iloc[2]:.3f} on position, against Bayes AUCs of {f.bayes_auc.iloc[0]:.3f}, {f.bayes_auc.iloc[1]:.3f} and {f.bayes_auc.iloc[2]:.3f}") in text
    p = m[(m.model == 'plain') & (m.split == 'heldout') & (m.rule != 'null')]
    assert (p.feature_auc > p.test_auc).all() and "beats the plain network on every held-out seed of every rule" in text
    it = a.loc['intensity']
    assert (f"For intensity {it.bayes_auc - it.feature_auc:.3f} of the {it.gap:.3f} gap is in the input" in text
            and f"leaves a network {0.08 - (it.bayes_auc - it.feature_auc):.3f} of room; the network is {it.below_features:.3f} below" in text)
    ve = a.loc['volume+elongation']
    assert f"For volume+elongation {ve.bayes_auc - ve.feature_auc:.3f} of the {ve.gap:.3f} is in the input and {ve.below_features:.3f} is the network's" in text
    assert f"the whole gap of {a.loc['position', 'gap']:.3f} is the network's" in text
    below = p.assign(bar=np.maximum(p.bayes_auc - 0.08, 0.80)).assign(net=lambda d: d.test_auc < d.bar, feat=lambda d: d.feature_auc < d.bar)
    nb_, fb_ = (below.groupby('rule')[k].sum().reindex(['volume+elongation', 'intensity', 'position']).astype(int).tolist() for k in ('net', 'feat'))
    assert (f"the network is below the bar on {nb_[0]}, {nb_[1]} and {nb_[2]} of the 10 held-out seeds (volume+elongation, intensity, position); "
            f"the logistic regression on the rule's features is below it on {fb_[0]}, {fb_[1]} and {fb_[2]}.") in text
    readme = ' '.join((ROOT/'README.md').read_text().split())
    auc = f.bayes_auc - f.gap
    assert (f"reach test AUCs of {auc.iloc[0]:.3f}, {auc.iloc[1]:.3f} and {auc.iloc[2]:.3f} on the volume+elongation, intensity and position rules "
            f"(held-out seeds), against {f.bayes_auc.iloc[0]:.3f}, {f.bayes_auc.iloc[1]:.3f} and {f.bayes_auc.iloc[2]:.3f} from the generator's own "
            f"probabilities and {f.feature_auc.iloc[0]:.3f}, {f.feature_auc.iloc[1]:.3f} and {f.feature_auc.iloc[2]:.3f} for a logistic regression") in readme
    assert f"{it.bayes_auc - it.feature_auc:.3f} of intensity's is in the input" in readme and (f.below_features > 0.07).all()
    seed = 5                                                          # one seed rebuilt from scratch: the files are feature_ceiling's
    x, _, labels, (tr, va, te) = study_data(seed, STUDY_CONFIG)
    vals = _feature_values(x, FeatureSet(list(FEATURES), (STUDY_CONFIG['spacing'],) * 3, STUDY_CONFIG['window']))
    for r in ('volume+elongation', 'intensity', 'position'):
        got = feature_ceiling(vals, labels[r][0], np.concatenate([tr, va]), te, truth(r))
        assert got == m[(m.seed == seed) & (m.rule == r) & (m.model == 'plain')].feature_auc.iloc[0], r

def test_views_train600_whole_and_quoted():
    "The design seeds' check of both views with 600 training cases: every seed and rule in recipes, effects and ceilings, and 11_validation's figures."
    from fgflow.validation import read_study, rule_factors
    r = _read_csv(DESIGN/'recipes.csv'); r = r[r.variant == 'views_train600']
    e = _read_csv(DESIGN/'effects.csv'); e = e[e.variant == 'views_train600']
    c = _read_csv(DESIGN/'ceilings.csv'); c = c[c.variant == 'views_train600']
    for t in (r, e, c): assert set(t.seed) == set(DESIGN_SEEDS) and set(t.rule) == RULES
    assert len(r) == 15 and len(c) == 15 and (r.n_train == 600).all() and (r.n_test == 100).all() and (c.n_fit == 700).all()
    key = ['seed', 'rule']                                              # ceilings are of the same cohorts, labels and splits
    np.testing.assert_array_equal(r.sort_values(key).bayes_auc.to_numpy(), c.sort_values(key).bayes_auc.to_numpy())
    a = r.groupby('rule').agg(auc=('test_auc', 'mean'), bayes=('bayes_auc', 'mean')); a['gap'] = a.bayes - a.auc
    f = c.groupby('rule').feature_auc.mean()
    m, _, _, _ = read_study(ROOT/'nbs'/'validation')
    thr = max(_read_csv(p).used_threshold.iloc[0] for p in (ROOT/'nbs'/'validation'/'seeds').glob('*/effects_detail.csv'))
    beyond = lambda rule, fac: (lambda g: int((((g.ci_low > 0) | (g.ci_high < 0)) & (g.effect.abs() > thr)).sum()))(e[(e.rule == rule) & (e.factor == fac)])
    el = e[(e.rule == 'volume+elongation') & (e.factor == 'elongation')]
    text = _nb_text()
    ve, po, it = a.loc['volume+elongation'], a.loc['position'], a.loc['intensity']
    assert (f"volume+elongation {ve.auc:.3f} (gap to the Bayes AUC {ve.gap:.3f}); elongation's effect is {el.effect.mean():.3f} logits per SD on "
            f"average, its CI away from 0 and beyond the largest *used* threshold of the committed study's seeds ({thr:.3f}) in "
            f"{beyond('volume+elongation', 'elongation')} of 5 seeds").replace('-', '−') in text
    assert f"position {po.auc:.3f} (gap {po.gap:.3f}); pos_x and pos_z beyond that threshold in 5 of 5" in text
    assert beyond('position', 'pos_x') == beyond('position', 'pos_z') == 5
    assert f"intensity {it.auc:.3f} (gap {it.gap:.3f}), where a logistic regression on the two intensity features of the same crops reaches {f['intensity']:.3f}" in text
    assert f"{it.bayes - f['intensity']:.3f} of the gap is in the input" in text and it.gap > 0.08
    sec, study_sec = r.seconds.mean(), m[(m.model == 'plain') & (m.split == 'heldout')].seconds.mean()
    assert f"it costs {sec:.1f} s per plain model against {study_sec:.1f} s for the committed study's" in text
    assert f"alone would take about {39 * sec / 60:.0f} minutes" in text
    readme = ' '.join((ROOT/'README.md').read_text().split())
    assert (f"volume+elongation ({ve.auc:.3f}) and position ({po.auc:.3f}) come within 0.08 of the Bayes AUC and use every factor of their rule "
            f"in at least 4 of 5 seeds, but intensity does not ({it.auc:.3f}, gap {it.gap:.3f}), and each model trains about {sec / study_sec:.1f} times as long") in readme
    assert ve.gap <= 0.08 and po.gap <= 0.08 and min(beyond(r, f) for r in ('volume+elongation', 'position') for f in rule_factors(r)) >= 4
