"fgflow.validation: truths, interventions, effects, the study's files and `fgflow study` (tiny config end to end)."
import json, os, time
import numpy as np, pandas as pd, pytest, torch
from fgflow.features import FEATURES
from fgflow.phantoms import FACTORS, LABEL_RULES, factor_sd
from fgflow.validation import (study_scorecard, EFFECT_COLUMNS, FEATURE_FACTOR, METHODS, MODEL_COLUMNS, VERDICT_COLUMNS, ValidationError,
                               factor_effects, intervention_logits, mark_used, parse_seeds, read_study, rule_factors, run_study,
                               study_labels, study_split, summarize_study, truth)
from fgflow.cli import main


def test_truth_maps_every_feature_to_a_factor():
    assert sorted(FEATURE_FACTOR) == sorted(FEATURES)
    assert set(FEATURE_FACTOR.values()) <= set(FACTORS) | {'none'}
    assert rule_factors('null') == [] and rule_factors('position') == ['pos_x', 'pos_z']
    for r in LABEL_RULES: assert {FEATURE_FACTOR[f] for f in truth(r)} == set(rule_factors(r))
    with pytest.raises(ValidationError, match="unknown rule 'shape'"): truth('shape')


def test_labels_and_split():
    fac = pd.DataFrame({k: np.random.default_rng([3, i]).uniform(lo, hi, 400) for i, (k, (lo, hi, *_)) in enumerate(FACTORS.items())})
    ys = {r: study_labels(fac, r, 3) for r in LABEL_RULES}
    u = np.random.default_rng([3, 2**31]).random(400)
    for r, (y, p) in ys.items(): assert (y == (u < p)).all() and 0.2 < y.mean() < 0.4
    parts = study_split(400, 3, (0.5, 0.25, 0.25), [y for y, _ in ys.values()])
    assert [len(p) for p in parts] == [200, 100, 100] and len(np.unique(np.concatenate(parts))) == 400


def test_factor_effects_recovers_a_known_response_and_null_models_set_used():
    rng = np.random.default_rng(0)
    n, F = 100, len(FACTORS)
    base = rng.normal(0, 2.0, n)
    moved = np.where(rng.random((F, n)) < 0.1, -1.0, 1.0)                 # some cases stepped down (hard limit)
    resp = np.zeros(F); resp[list(FACTORS).index('size')] = 0.8; resp[list(FACTORS).index('pos_x')] = 0.05
    logits = np.vstack([base, base + moved * resp[:, None] + rng.normal(0, 0.01, (F, n))])
    e = factor_effects(logits, moved, n_boot=500).set_index('factor')
    assert e.effect['size'] == pytest.approx(0.8, abs=0.01) and e.ci_low['pos_x'] > 0
    assert (e.ci_low <= e.effect).all() and (e.effect <= e.ci_high).all() and e.logit_sd.iloc[0] == pytest.approx(base.std(ddof=1))
    nulls = [factor_effects(np.vstack([b0 := rng.normal(0, 0.02, n), b0 + rng.normal(0, 0.1, (F, n))]), np.ones((F, n)), 300, k).assign(model=f'null_{k}')
             for k in range(10)]
    t = mark_used(pd.concat([e.reset_index().assign(model='plain'), *nulls], ignore_index=True))
    thr = t.used_threshold.iloc[0]
    assert 0 < thr < 0.04 and thr == pytest.approx(np.quantile(pd.concat(nulls).effect.abs(), 0.95))
    u = t[t.model == 'plain'].set_index('factor').used
    assert u['size'] and u['pos_x']                                       # 0.05 logits beats what the null models show
    assert t[t.model != 'plain'].used.mean() < 0.1
    assert not u.drop(['size', 'pos_x']).any()
    with pytest.raises(ValidationError, match='needs the seed.s null models'): mark_used(e.reset_index().assign(model='plain'))


class _Sum(torch.nn.Module):
    "Logit = occupancy volume in the crop (voxels)."
    def forward(self, x): return x[:, 1].sum((1, 2, 3))


def test_interventions_reach_the_model_through_the_crop():
    cfg = dict(matrix=48, spacing=3.0, size=36, window=(-200., 300.))
    lg, moved = intervention_logits({'vol': _Sum()}, 2, [0, 1, 2], cfg)
    e = factor_effects(lg['vol'], moved, n_boot=200).set_index('factor')
    assert e.effect.abs().idxmax() == 'size' and (e.effect.abs().drop('size') < 0.1 * e.effect['size']).all()
    ratio = (lg['vol'][1 + list(FACTORS).index('size')] / lg['vol'][0]) ** (1 / moved[0])
    assert ratio == pytest.approx(np.exp(3 * factor_sd('size')), rel=0.15)


def test_bad_arguments_write_nothing(tmp_path, capsys):
    assert parse_seeds('5-9') == [5, 6, 7, 8, 9]
    out = tmp_path / 'out'
    assert main(['study', '--seeds', '9-5', '--work', str(tmp_path / 'w'), '--out', str(out), '--quiet']) == 2
    assert 'start > end' in capsys.readouterr().err
    assert main(['study', '--seeds', '5', '--rules', 'volume,null', '--work', str(tmp_path / 'w'), '--out', str(out)]) == 2
    assert "unknown rule 'volume'" in capsys.readouterr().err
    assert main(['study', '--seeds', '3000000000', '--work', str(tmp_path / 'w'), '--out', str(out)]) == 2
    assert 'must lie in [0, 2**31)' in capsys.readouterr().err
    cfg = tmp_path / 'mine.json'; cfg.write_text('{"base": "tiny", "epochs": "2"}')
    assert main(['study', '--seeds', '5', '--work', str(tmp_path / 'w'), '--out', str(out), '--config', str(cfg)]) == 2
    assert f"{cfg}: setting 'epochs' = '2' (str): expected int" in capsys.readouterr().err
    assert main(['study', '--seeds', '5', '--work', str(tmp_path / 'w'), '--out', str(out), '--config', 'tiny', '--jobs', '0']) == 2
    assert '--jobs 0' in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / 'w').exists()
    other = tmp_path / 'other'; other.mkdir(); (other / 'verdicts.csv').write_text('a\n1\n')
    assert main(['study', '--seeds', '5', '--work', str(tmp_path / 'w'), '--out', str(other), '--config', 'tiny']) == 2
    assert 'no study.json' in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ['verdicts.csv'] and not (tmp_path / 'w').exists()


def test_tiny_study_end_to_end(tmp_path, capsys):
    "`fgflow study --config tiny`: the files and their columns, resume, and refusal of another study's OUT."
    out, work = tmp_path / 'out', tmp_path / 'work'
    t0 = time.perf_counter()
    assert main(['study', '--seeds', '7', '--rules', 'all', '--work', str(work), '--out', str(out), '--config', 'tiny', '--quiet']) == 0
    assert time.perf_counter() - t0 < 300
    md, ef, vd, st = read_study(out)
    printed = capsys.readouterr().out                                  # the scorecard of the held-out seed, one line per bar
    card = study_scorecard(md, ef, vd, st)
    assert 'heldout seeds [7] against the bars' in printed and len(card) >= 15
    for _, r in card.iterrows(): assert f"{'met   ' if r.met else 'missed'}  {r.criterion}: {r.shown}  (bar {r.bar})" in printed
    np.testing.assert_equal(card.set_index('criterion').loc['fgf_null: power', 'value'],          # NaN where no true pair
                            summarize_study(md, ef, vd)['methods'].set_index('method').power['fgf_null'])
    assert list(md.columns) == MODEL_COLUMNS and list(ef.columns) == EFFECT_COLUMNS and list(vd.columns) == VERDICT_COLUMNS
    plain = md[md.model == 'plain']
    assert sorted(plain.rule) == sorted(LABEL_RULES) and (plain.init == 'scratch').all()
    assert {'reg_true', 'reg_wrong', 'null_0', 'null_1'} <= set(md.model)
    for r in ('reg_true', 'reg_wrong'): assert set(md[md.model == r].rule) == {'volume+elongation', 'intensity'} and (md[md.model == r].init == 'scratch').all()
    assert ((plain.bayes_auc > 0.5) | (plain.rule == 'null')).all() and (md.n_test == 15).all()
    fa = md.set_index(['rule', 'model']).feature_auc                 # the input's ceiling: one value per rule, none for null and null models
    assert fa.loc['volume+elongation'].nunique() == 1 and fa.loc[['volume+elongation', 'intensity', 'position']].between(0, 1).all()
    assert fa.loc[['null', 'shared']].isna().all()
    assert set(vd.method) == set(METHODS) and (vd.split == 'heldout').all()
    assert len(vd[(vd.model == 'plain') & (vd.rule == 'null')]) == len(METHODS) * len(FEATURES)
    v = vd[(vd.rule == 'volume+elongation') & (vd.model == 'plain') & (vd.feature == 'volume')]
    assert v.rule_uses.all() and (v.factor == 'size').all()
    e = ef[(ef.rule == 'volume+elongation') & (ef.model == 'plain')].set_index('factor')
    assert (v.used == e.used['size']).all() and e.rule_uses['size'] and not e.rule_uses['mean_hu']
    assert st['seeds'] == {'7': 'heldout'} and st['default_method'] == 'fgf_null' and set(st['seconds']['7']) >= {'train', 'interventions', 'total'}
    # resume: the finished seed is not recomputed
    (out / 'models.csv').unlink()
    t0 = time.perf_counter(); run_study(work, out, [7], 'all', 'tiny', progress=False)
    assert time.perf_counter() - t0 < 10 and (out / 'models.csv').exists()
    # another study's OUT is refused and left as it was
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(['study', '--seeds', '7', '--rules', 'null', '--work', str(work), '--out', str(out), '--config', 'tiny']) == 2
    assert 'holds another study' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    S = summarize_study(md, ef, vd)
    assert set(S['methods'].method) == set(METHODS) and (S['auc'].n_test == 15).all()

def test_study_jobs_equal_one_seed_at_a_time(tmp_path):
    "`jobs=2` (two seeds at once, a process each) writes the study one seed at a time writes, wall time aside; a finished OUT is not rerun."
    before = torch.get_num_threads(); torch.set_num_threads(1)
    try: one = run_study(tmp_path/'w1', tmp_path/'o1', [7, 8], ['volume+elongation', 'null'], 'tiny', progress=False)
    finally: torch.set_num_threads(before)
    two = run_study(tmp_path/'w2', tmp_path/'o2', [7, 8], ['volume+elongation', 'null'], 'tiny', progress=False, jobs=2, threads=1)
    for a, b in zip(one, two):
        assert len(a) and set(a.seed) == {7, 8}
        pd.testing.assert_frame_equal(a.drop(columns=['seconds'], errors='ignore'), b.drop(columns=['seconds'], errors='ignore'))
    st = json.loads((tmp_path/'o2'/'study.json').read_text())
    assert st['threads'] == 1 and set(st['seconds']) == {'7', '8'} and st['seeds'] == {'7': 'heldout', '8': 'heldout'}
    t0 = time.perf_counter(); run_study(tmp_path/'w2', tmp_path/'o2', [7, 8], ['volume+elongation', 'null'], 'tiny', progress=False, jobs=2)
    assert time.perf_counter() - t0 < 10                                 # both seeds kept: nothing recomputed, no process started

def test_study_jobs_interrupted_keeps_finished_seeds(tmp_path):
    "Ctrl-C during `fgflow study --jobs 2`: exit 130 with a message, each finished seed kept whole, and the same command finishes the rest."
    import hashlib, signal, subprocess, sys
    cfg = tmp_path/'slow.json'; cfg.write_text('{"base": "tiny", "epochs": 60}')
    cmd = [sys.executable, '-m', 'fgflow.cli', 'study', '--seeds', '7-10', '--rules', 'null', '--work', str(tmp_path/'w'), '--out', str(tmp_path/'o'),
           '--config', str(cfg), '--jobs', '2', '--quiet']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))    # as a terminal's Ctrl-C: the whole process group
    t0 = time.perf_counter()
    while not list((tmp_path/'o').glob('seeds/*/seconds.json')) and time.perf_counter() - t0 < 240: time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT); out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'interrupted: every finished seed is kept' in err
    done = sorted(d.name for d in (tmp_path/'o'/'seeds').iterdir() if (d/'seconds.json').exists())
    assert 1 <= len(done) < 4
    for d in (tmp_path/'o'/'seeds').iterdir(): assert sorted(f.name for f in d.iterdir()) == ['effects.csv', 'effects_detail.csv', 'models.csv', 'seconds.json', 'verdicts.csv']
    assert set(json.loads((tmp_path/'o'/'study.json').read_text())['seeds']) == {s[5:] for s in done}
    digest = {s: hashlib.md5((tmp_path/'o'/'seeds'/s/'models.csv').read_bytes()).hexdigest() for s in done}
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    assert set(json.loads((tmp_path/'o'/'study.json').read_text())['seeds']) == {'7', '8', '9', '10'}
    assert digest == {s: hashlib.md5((tmp_path/'o'/'seeds'/s/'models.csv').read_bytes()).hexdigest() for s in done}
