"The paper notebook's committed outputs come from its paper configuration and agree with nbs/paper/results.json (reads files only)."
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB, RESULTS = ROOT/'nbs'/'10_paper.ipynb', ROOT/'nbs'/'paper'/'results.json'


@pytest.fixture(scope='module')
def nb(): return json.loads(NB.read_text())

@pytest.fixture(scope='module')
def res(): return json.loads(RESULTS.read_text())


def _src(c): return ''.join(c['source'])
def _md_outputs(nb):
    "Every text/markdown output of the notebook's code cells."
    return [''.join(o['data']['text/markdown']) for c in nb['cells'] if c['cell_type'] == 'code'
            for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]

def _output(nb, start:str) -> str:
    hits = [t for t in _md_outputs(nb) if t.startswith(start)]
    assert len(hits) == 1, f"{NB.name}: expected one committed output starting {start!r}, found {len(hits)} (run tools/rerun_paper.sh)"
    return hits[0]

def _rows(md:str) -> dict:
    "First column -> the other cells of each row of the markdown table(s) in `md`."
    return {r[0]: r[1:] for r in (l.strip('|').split('|') for l in md.splitlines() if l.startswith('|'))
            for r in [[c.strip() for c in r]] if r[0] not in ('---',)}

def _paper_cfg(nb) -> dict:
    "The PAPER_CFG dict literal of the notebook's slow cell."
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code' and 'PAPER_CFG = dict(' in _src(c)]
    assert len(cells) == 1 and '#| slow' in _src(cells[0])
    call = next(n.value for n in ast.walk(ast.parse(_src(cells[0]))) if isinstance(n, ast.Assign) and n.targets[0].id == 'PAPER_CFG')
    plain = lambda v: list(v) if isinstance(v, tuple) else v
    return {k.arg: plain(ast.literal_eval(k.value)) for k in call.keywords}


def test_results_come_from_the_paper_configuration(nb, res):
    cfg = _paper_cfg(nb)
    assert cfg['name'] == 'paper' and res['config'] == cfg
    assert res['init'] == 'scratch' and res['data'] == 'phantoms'
    assert res['n_cases'] == cfg['n_cases'] and res['n_test'] >= 100     # enough test cases for AUC differences of 0.05
    assert res['n_train'] + res['n_valid'] + res['n_test'] == res['n_cases']
    for k in ('plain_test_auc', 'reg_test_auc', 'M_S_plain', 'M_S_reg', 'seconds'): assert isinstance(res[k], float), k


def test_committed_results_table_matches_results_json(nb, res):
    rows = _rows(_output(nb, f"results.json (configuration `{res['config']['name']}`, init `{res['init']}`)"))
    shown = {k: v[0] for k, v in rows.items() if k not in ('quantity',)}
    assert {'plain_test_auc', 'reg_test_auc', 'M_S_plain', 'M_S_reg', 'n_cases', 'seconds'} <= set(shown)
    for k, v in shown.items():
        want = res[k]
        assert v == (f'{want:.4g}' if isinstance(want, float) else str(want)), f"{k}: notebook shows {v}, results.json has {want}"


def test_committed_auc_table_and_sentences_match_results_json(nb, res):
    rows = _rows(_output(nb, '| model | AUC |'))
    assert rows['plain'][0] == f"{res['plain_test_auc']:.3f}" and rows['regularized'][0] == f"{res['reg_test_auc']:.3f}"
    assert [float(v) for v in rows['plain'][1:]] == pytest.approx(res['plain_test_auc_ci'], abs=6e-4)
    said = _output(nb, "- **Accuracy.**")
    for v in (f"{res['reg_test_auc']:.3f}", f"{res['plain_test_auc']:.3f}", f"{res['M_S_plain']:.3g}", f"{res['M_S_reg']:.3g}"): assert v in said
    keeps, gains = res['reg_test_auc'] >= res['plain_test_auc'] - 0.05, res['M_S_reg'] >= 3 * res['M_S_plain']
    assert ('falls short of the paper' in said) != keeps and ('falls short of a threefold' in said) != gains


def test_no_reference_outside_the_repository(nb):
    text = NB.read_text()
    assert 'DESIGN.md' not in text and 'DEVELOPERS.md' not in text
    assert not re.search(r'(/tmp/|/home/|/root/|/work/)', text)


def test_written_narrative_quotes_the_committed_numbers(nb, res):
    "The prose under the computed sentences was written from the committed run: it must be rewritten when the numbers move."
    text = next(_src(c) for c in nb['cells'] if c['cell_type'] == 'markdown' and _src(c).startswith('What these numbers show'))
    assert f"test AUC {res['reg_test_auc']:.2f} vs {res['plain_test_auc']:.2f}" in text
    assert f"to {res['M_S_reg']:.2f}" in text and f"from {res['M_S_plain']:.1g}" in text
    assert f"Bayes AUC of these test cases is {res['bayes_test_auc']:.2f}" in text


def test_second_seed_from_the_same_configuration(nb, res):
    "nbs/paper/results_seed1.json (tools/rerun_paper.sh --seed1) is the same paper configuration on cohort seed 1."
    r1 = json.loads((RESULTS.parent/'results_seed1.json').read_text())
    assert r1['config'] == _paper_cfg(nb) and r1['seed'] == 1 and res['seed'] == 0 and r1['init'] == 'scratch'
