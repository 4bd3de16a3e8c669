"Tests of the `fgflow` command line: help texts, the demo end to end (tiny configuration), data errors."
import json, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
import matplotlib; matplotlib.use('Agg')
from fgflow import cli

def run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err

def test_import_cli_loads_no_heavy_library():
    "`fgflow --help` stays fast: torch, pandas and matplotlib are imported by the commands that need them, not by the module."
    code = 'import sys, fgflow.cli; fgflow.cli.parser(); print(sorted(m for m in ("torch", "pandas", "matplotlib") if m in sys.modules))'
    r = subprocess.run([sys.executable, '-c', code],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == '[]', r.stdout

@pytest.mark.parametrize('cmd', ['demo', 'prepare', 'train', 'measure'])
def test_help_states_each_default_once(cmd, capsys):
    with pytest.raises(SystemExit): cli.main([cmd, '--help'])
    h = ' '.join(capsys.readouterr().out.split())
    assert '(default: None)' not in h and '(default: False)' not in h
    for line in h.split(' --')[1:]: assert line.count('default') <= 1, line
    assert cmd == 'prepare' or '(default: 0)' in h  # --seed's default 0 is shown (0 is not "no default")

def test_console_script_help():
    r = subprocess.run([sys.executable, '-c', 'import sys; from fgflow.cli import main; sys.exit(main())', '--help'],
                       capture_output=True, text=True)
    assert r.returncode == 0
    for c in ('demo', 'prepare', 'train', 'measure'): assert c in r.stdout

@pytest.mark.parametrize('cmd,opts', [
    ('demo', ['--out', '--quick', '--seed']),
    ('prepare', ['--dicom', '--nifti', '--clinical', '--gtv-table', '--out', '--spacing', '--size', '--window', '--id-col', '--label-col']),
    ('train', ['--cache', '--out', '--lam', '--features', '--epochs', '--lr', '--batch-size', '--width', '--depth', '--split', '--seed', '--resume']),
    ('measure', ['--cache', '--checkpoint', '--out', '--features', '--sets', '--n-noise', '--step', '--max-steps', '--split']),
])
def test_subcommand_help_explains_every_option(cmd, opts, capsys):
    with pytest.raises(SystemExit) as e: cli.main([cmd, '--help'])
    assert e.value.code == 0
    h = capsys.readouterr().out
    for o in opts: assert o in h, o
    assert '--tiny' not in h
    # every option line carries an explanation
    p = {a.dest: a for a in cli.parser()._subparsers._group_actions[0].choices[cmd]._actions}
    assert all(a.help for a in p.values()), cmd

def test_missing_required_option_is_usage_error(capsys):
    with pytest.raises(SystemExit) as e: cli.main(['prepare', '--out', 'x'])
    assert e.value.code == 2 and 'required' in capsys.readouterr().err

def test_sets_argument():
    a = cli.parser().parse_args(['measure', '--cache', 'c', '--checkpoint', 'k', '--out', 'o',
                                 '--sets', 'shape=volume,elongation', '--sets', 'int=mean'])
    assert a.sets == [('shape', ['volume', 'elongation']), ('int', ['mean'])]

# --- real files: NIfTI pairs written with nibabel ---------------------------------------------------

def _nifti_cohort(root:Path, ids, bad_grid=()):
    import nibabel as nib
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n, cid in enumerate(ids):
        hu = rng.normal(0, 20, (20, 20, 20)).astype(np.float32) - 50
        m = np.zeros((20, 20, 20), np.uint8); m[7:13, 6:14, 8:12] = 1; hu[m > 0] += 80
        aff = np.diag([2., 2., 2., 1.])
        nib.save(nib.Nifti1Image(hu, aff), root/f'{cid}_ct.nii.gz')
        maff = aff.copy(); maff[0, 3] = 30. if cid in bad_grid else 0.
        nib.save(nib.Nifti1Image(m, maff), root/f'{cid}_gtv.nii.gz')

def test_prepare_skips_bad_case_with_its_id_and_goes_on(tmp_path, capsys):
    ids = ['HN-TST-001', 'HN-TST-002', 'HN-TST-003']
    _nifti_cohort(tmp_path/'nii', ids, bad_grid={'HN-TST-002'})
    pd.DataFrame({'Patient #': ids, 'Distant': ['Yes', 'No', 'No']}).to_csv(tmp_path/'clin.csv', index=False)
    rc, out, err = run(['prepare', '--nifti', str(tmp_path/'nii'), '--clinical', str(tmp_path/'clin.csv'),
                        '--out', str(tmp_path/'cache'), '--size', '16', '--spacing', '2', '--quiet'], capsys)
    assert rc == 0, err
    skipped = [l for l in out.splitlines() if l.startswith('skipped HN-TST-002')]
    assert len(skipped) == 1 and 'grid' in skipped[0], out
    idx = pd.read_csv(tmp_path/'cache'/'index.csv')
    assert sorted(idx['id']) == ['HN-TST-001', 'HN-TST-003'] and list(idx.sort_values('id')['label']) == [1, 0]
    assert 'prepared 2 cases' in out

def test_bad_clinical_table_is_one_line_with_case_id_exit_2(tmp_path, capsys):
    ids = ['HN-TST-001', 'HN-TST-002']
    _nifti_cohort(tmp_path/'nii', ids)
    pd.DataFrame({'Patient #': ids, 'Distant': ['Yes', 'maybe']}).to_csv(tmp_path/'clin.csv', index=False)
    rc, out, err = run(['prepare', '--nifti', str(tmp_path/'nii'), '--clinical', str(tmp_path/'clin.csv'),
                        '--out', str(tmp_path/'cache'), '--quiet'], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'HN-TST-002' in lines[0] and 'maybe' in lines[0], err
    assert 'Traceback' not in err

def test_measure_unreadable_checkpoint_exit_2(tmp_path, capsys):
    ids = ['HN-TST-001', 'HN-TST-002']
    _nifti_cohort(tmp_path/'nii', ids)
    pd.DataFrame({'Patient #': ids, 'Distant': [1, 0]}).to_csv(tmp_path/'clin.csv', index=False)
    assert run(['prepare', '--nifti', str(tmp_path/'nii'), '--clinical', str(tmp_path/'clin.csv'),
                '--out', str(tmp_path/'cache'), '--size', '16', '--spacing', '2', '--quiet'], capsys)[0] == 0
    (tmp_path/'bad.pt').write_bytes(b'not a checkpoint')
    rc, out, err = run(['measure', '--cache', str(tmp_path/'cache'), '--checkpoint', str(tmp_path/'bad.pt'),
                        '--out', str(tmp_path/'m'), '--split', 'all', '--quiet'], capsys)
    assert rc == 2 and err.count('\n') == 1 and 'bad.pt' in err and err.startswith('error: ')
    assert 'fgflow train' in err and 'weights_only=False' not in err  # never relay torch's unsafe advice
    # a pickle with Python objects in it: refused, and the advice to unpickle it anyway is not relayed
    import torch
    torch.save({'model': {}, 'obj': _Obj()}, tmp_path/'obj.pt')
    rc, out, err = run(['measure', '--cache', str(tmp_path/'cache'), '--checkpoint', str(tmp_path/'obj.pt'),
                        '--out', str(tmp_path/'m'), '--split', 'all', '--quiet'], capsys)
    assert rc == 2 and 'obj.pt: cannot read checkpoint' in err and 'weights_only=False' not in err, err
    # without split.json beside the checkpoint the test cases are unknown: refused, naming the file and the way out
    rc, out, err = run(['measure', '--cache', str(tmp_path/'cache'), '--checkpoint', str(tmp_path/'bad.pt'),
                        '--out', str(tmp_path/'m'), '--quiet'], capsys)
    assert rc == 2 and str(tmp_path/'split.json') in err and '--split all' in err, err

class _Obj:
    "Any Python object: not something the safe loader reads."

def test_measure_missing_cache_or_checkpoint_names_the_command(tmp_path, capsys):
    rc, out, err = run(['measure', '--cache', str(tmp_path/'nope'), '--checkpoint', str(tmp_path/'best.pt'),
                        '--out', str(tmp_path/'m'), '--split', 'all'], capsys)
    assert rc == 2 and 'best.pt: no such checkpoint' in err and '`fgflow train' in err, err
    (tmp_path/'best.pt').write_bytes(b'x')
    rc, out, err = run(['measure', '--cache', str(tmp_path/'nope'), '--checkpoint', str(tmp_path/'best.pt'),
                        '--out', str(tmp_path/'m'), '--split', 'all'], capsys)
    assert rc == 2 and f"{tmp_path/'nope'}: no such cache folder" in err and '`fgflow prepare' in err, err
    (tmp_path/'empty').mkdir()
    rc, out, err = run(['train', '--cache', str(tmp_path/'empty'), '--out', str(tmp_path/'run')], capsys)
    assert rc == 2 and 'no index.csv' in err and '`fgflow prepare' in err and 'prepare_cohort' not in err, err

# --- the demo, tiny configuration -----------------------------------------------------------------

PNGS = ['fgf_plain.png', 'fgf_regularized.png', 'roc.png', 'history.png', 'flow_montage.png']

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    rc = cli.main(['demo', '--tiny', '--out', str(out), '--seed', '3', '--quiet'])
    assert rc == 0
    return out

def test_demo_report_json(demo):
    r = json.loads((demo/'report.json').read_text())
    assert {'settings', 'seed', 'environment', 'data', 'models', 'measure', 'figures', 'timings'} <= set(r)
    assert r['seed'] == 3 and r['config_name'] == 'tiny' and r['settings']['set'] == ['volume', 'elongation']
    d = r['data']
    assert d['n_cases'] == cli.DEMO_CONFIGS['tiny']['n_cases'] - len([k for k in d['skipped'] if k.startswith('HN-')])
    assert sorted(sum(d['split'].values(), [])) == sorted(set(sum(d['split'].values(), [])))  # disjoint
    assert d['shape'] == [2, 16, 16, 16]
    assert set(r['models']) == {'plain', 'regularized'}
    assert r['models']['plain']['lam'] == 0 and r['models']['regularized']['lam'] == 'auto'  # the trainer's recipe, from scratch
    for m in r['models'].values():
        t = m['test']
        assert 0 <= t['ci_lo'] <= t['auc'] <= t['ci_hi'] <= 1
        assert len(m['test_scores']) == len(d['split']['test'])
        assert len(m['history']['loss']) == cli.DEMO_CONFIGS['tiny']['epochs']
    # the regularized model's training loss carries the penalty, the plain one has none
    assert all(p == 0 for p in r['models']['plain']['history']['penalty'])
    assert all(0 < p <= 1 for p in r['models']['regularized']['history']['penalty'])
    for m in ('plain', 'regularized'):
        rows = r['measure'][m]
        assert len(rows) >= len(__import__('fgflow.features', fromlist=['FEATURES']).FEATURES) + 1
    assert r['timings']['total'] > 0 and set(r['figures'].values()) == set(PNGS)

def test_demo_pngs_not_blank(demo):
    import matplotlib.image as mpimg
    for f in PNGS:
        a = mpimg.imread(demo/f)
        assert a.shape[0] > 100 and a.shape[1] > 100, f
        assert a[..., :3].std() > 0.02, f  # a drawn figure, not a blank canvas

def test_demo_report_md(demo):
    md = (demo/'report.md').read_text()
    assert 'synthetic phantoms' in md and '## Test AUC' in md
    for f in PNGS: assert f'({f})' in md
    r = json.loads((demo/'report.json').read_text())
    assert f"{r['models']['plain']['test']['auc']:.3f}" in md

def test_demo_report_md_members_counts_and_reachable_p(demo):
    md = (demo/'report.md').read_text()
    r = json.loads((demo/'report.json').read_text())
    assert 'member by member' in md
    for m in ('plain', 'regularized'):
        t = {row['name']: row for row in r['measure'][m]}
        for f in ('volume', 'elongation'):  # each member's own M, with its undefined lines, in the report
            assert f"| {f} | member alone | {t[f]['M']:.4g} | {t[f]['n_undefined']}/{t[f]['n_points']} |" in md, f
    # with 4 noise features the empirical p cannot go below 1/5 (before Holm): not shown as a test, and said so
    assert cli.DEMO_CONFIGS['tiny']['n_noise'] == 4
    assert 'p_empirical' not in md and 'empirical p against the 4 noise features (Holm) is not shown' in md

def test_demo_run_folders_record_the_split(demo):
    r = json.loads((demo/'report.json').read_text())
    for m in ('plain', 'regularized'):
        sp = json.loads((demo/'runs'/m/'split.json').read_text())
        assert {k: sp[k] for k in ('train', 'valid', 'test')} == r['data']['split']

def test_measure_on_demo_checkpoint_measures_test_cases_only(demo, tmp_path, capsys):
    r = json.loads((demo/'report.json').read_text())
    ck = demo/'runs'/'regularized'/'best.pt'
    common = ['--cache', str(demo/'cache'), '--features', 'volume', '--n-noise', '2', '--max-steps', '2', '--quiet']
    assert run(['measure', '--checkpoint', str(ck), '--out', str(tmp_path/'t')] + common, capsys)[0] == 0
    mj = json.loads((tmp_path/'t'/'measure.json').read_text())
    assert mj['split'] == 'test' and mj['ids'] == r['data']['split']['test']
    assert mj['table'][0]['n_points'] == len(r['data']['split']['test'])
    # a copy of the checkpoint without its split.json is refused; --split all measures every case knowingly
    (tmp_path/'bare').mkdir(); (tmp_path/'bare'/'best.pt').write_bytes(ck.read_bytes())
    (tmp_path/'bare'/'model.json').write_text((ck.parent/'model.json').read_text())
    rc, out, err = run(['measure', '--checkpoint', str(tmp_path/'bare'/'best.pt'), '--out', str(tmp_path/'b')] + common, capsys)
    assert rc == 2 and 'split.json: missing' in err and not (tmp_path/'b').exists()
    assert run(['measure', '--checkpoint', str(tmp_path/'bare'/'best.pt'), '--out', str(tmp_path/'a'), '--split', 'all'] + common, capsys)[0] == 0
    assert len(json.loads((tmp_path/'a'/'measure.json').read_text())['ids']) == r['data']['n_cases']

def test_demo_rerun_reuses_cohort_and_is_deterministic(demo, capsys):
    r1 = json.loads((demo/'report.json').read_text())
    assert cli.main(['demo', '--tiny', '--out', str(demo), '--seed', '3', '--quiet']) == 0
    r2 = json.loads((demo/'report.json').read_text())
    assert r2['data']['cohort_reused'] and not r1['data']['cohort_reused']
    for k in ('settings', 'models', 'measure', 'figures'): assert r1[k] == r2[k], k
    assert 'report.md' in capsys.readouterr().out
