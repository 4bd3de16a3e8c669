"""`fgflow train --lam auto` against plain training, through the command line at its defaults, on phantom cohorts never
used for a design choice (issue 17: "on a phantom cohort you have not seen ... within 0.07 of plain training with
M_S >= 3x").

    python tools/check_auto_cli.py WORK OUT.csv --cohorts 57,58 [--arch monai.resnet10] [--size 32 --spacing 2] [--epochs 10]

Per cohort seed, in WORK/s<seed>/: 200 NIfTI phantoms (`make_cohort`, rule volume+elongation), then exactly what a user
types, every option at its default: `fgflow prepare --nifti raw/nifti --clinical raw/clinical.csv --out cache`
(64³ crops at 1 mm), `fgflow train --cache cache --out runs/plain` and the same with `--lam auto`, and
`fgflow measure --features volume,elongation --sets S=volume,elongation` on each model's test split. Resumable: every
step whose output exists is skipped. Writes one row per cohort and model to OUT.csv (test AUC with its interval, the
kept epoch, M_S and each feature's M along the flow lines, the lines that were undefined, at the domain's edge or not
reached, training seconds from the history). `--arch` trains another network of `fgflow train --arch` instead (its
runs in runs/ARCH_plain and runs/ARCH_auto), everything else equal; `--size` and `--spacing` give `fgflow prepare` other
crops (cached in cache_SIZE_SPACING, runs in runs/..._SIZE_SPACING); `--epochs` caps both trainings (runs/..._eN). Run
one process per cohort on a 2-core machine (1 torch thread each).
"""
import argparse, json, os, subprocess
from pathlib import Path

import pandas as pd

from fgflow.train import load_checkpoint

MODELS = {'plain': [], 'auto': ['--lam', 'auto']}

def _run(cmd:list, cwd:Path):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, env=dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'))

def cohort_rows(work:Path, seed:int, n:int=200, arch:str='fgflownet', size:int|None=None, spacing:float|None=None,
                epochs:int|None=None) -> list[dict]:
    "Run (or reuse) one cohort's steps and return its two rows."
    w = work/f's{seed}'; w.mkdir(parents=True, exist_ok=True)
    if not (w/'raw'/'clinical.csv').exists():
        from fgflow.phantoms import make_cohort
        make_cohort(w/'raw', n=n, seed=seed, formats=('nifti',), progress=False, workers=1)
    crop = [] if size is None else ['--size', str(size), '--spacing', f'{spacing:g}']
    tag = '' if size is None else f'_{size}_{spacing:g}'
    cache = 'cache' + tag
    if not (w/cache/'index.csv').exists():
        _run(['fgflow', 'prepare', '--nifti', 'raw/nifti', '--clinical', 'raw/clinical.csv', '--out', cache, *crop, '--quiet'], w)
    rows = []
    for m, extra in MODELS.items():
        r = (m if arch == 'fgflownet' else f'{arch}_{m}') + tag + ('' if epochs is None else f'_e{epochs}')
        if arch != 'fgflownet': extra = [*extra, '--arch', arch]
        if epochs is not None: extra = [*extra, '--epochs', str(epochs)]
        if not (w/'runs'/r/'train.json').exists():
            _run(['fgflow', 'train', '--cache', cache, '--out', f'runs/{r}', *extra, '--quiet'], w)
        if not (w/'meas'/r/'measure.csv').exists():
            _run(['fgflow', 'measure', '--cache', cache, '--checkpoint', f'runs/{r}/best.pt', '--out', f'meas/{r}',
                  '--features', 'volume,elongation', '--sets', 'S=volume,elongation', '--quiet'], w)
        tj = json.loads((w/'runs'/r/'train.json').read_text())
        cfg = load_checkpoint(w/'runs'/r/'last.pt')['config']                  # what the run was given (fgflow train's defaults included)
        h = pd.read_csv(w/'runs'/r/'history.csv')
        t = pd.read_csv(w/'meas'/r/'measure.csv').set_index('name')
        rows.append(dict(cohort_seed=seed, n_cases=n, arch=arch, crop=f'{size or 64}^3 at {spacing or 1:g} mm', max_epochs=cfg['epochs'], model=m, test_auc=tj['test_auc'], test_ci_lo=tj['test_ci_lo'],
                         test_ci_hi=tj['test_ci_hi'], best_epoch=tj['best_epoch'], epochs_run=len(h),
                         M_S=t.loc['S', 'M'], M_volume=t.loc['volume', 'M'], M_elongation=t.loc['elongation', 'M'],
                         n_lines=int(t.loc['S', 'n_points']), n_undefined=int(t.n_undefined.sum()), n_at_edge=int(t.n_at_edge.sum()),
                         n_not_reached=int(t.loc['S', 'n_not_reached']), train_seconds=float(h.time.sum())))
    return rows

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('work'); ap.add_argument('out')
    ap.add_argument('--cohorts', default='57,58', help='comma-separated cohort seeds')
    ap.add_argument('--n', type=int, default=200, help='phantoms per cohort')
    ap.add_argument('--arch', default='fgflownet', help="fgflow train's --arch")
    ap.add_argument('--size', type=int, help="fgflow prepare's --size (default: its own, 64)")
    ap.add_argument('--spacing', type=float, help="fgflow prepare's --spacing (default: its own, 1 mm)")
    ap.add_argument('--epochs', type=int, help="fgflow train's --epochs (default: its own, 30)")
    a = ap.parse_args(argv)
    if (a.size is None) != (a.spacing is None): ap.error('give --size and --spacing together')
    rows = [r for s in a.cohorts.split(',') for r in cohort_rows(Path(a.work).resolve(), int(s), a.n, a.arch, a.size, a.spacing, a.epochs)]
    new = pd.DataFrame(rows)
    out = Path(a.out)
    if out.exists():                                            # keep the other cohorts' and networks' rows
        old = pd.read_csv(out)
        keep = ~(old.cohort_seed.isin(new.cohort_seed) & (old.arch == a.arch) & old.crop.isin(new.crop) & old.max_epochs.isin(new.max_epochs))
        new = pd.concat([old[keep], new]).sort_values(['arch', 'crop', 'cohort_seed', 'model'], ascending=[True, True, True, False])
    new.to_csv(out, index=False)
    print(new.to_string(index=False))

if __name__ == '__main__': main()
