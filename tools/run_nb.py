"""Execute notebooks in place with execnb (nbdev's runner) and keep only the outputs a reader should see.

    python tools/run_nb.py nbs/04_flow.ipynb [more.ipynb ...] [--flags slow]

Kept: images (figures) and rich tables (text/html, text/markdown) of cells that produced them. Dropped:
printed streams, plain reprs, execution counts. Cells flagged with a tst_flag (e.g. `#| slow`) run only
when that flag is given, as under `nbdev_test`. Run `nbdev_clean` afterwards.
"""
import argparse, os, sys
from pathlib import Path

import nbformat
from execnb.shell import CaptureShell

KEEP = ('image/png', 'image/svg+xml', 'text/html', 'text/markdown')

def _flags(src):
    return {l[3:].strip() for l in src.splitlines() if l.startswith('#|')}

def run(path, flags=()):
    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    from nbdev.config import get_config
    skip_flags = set(get_config(path=Path(__file__).resolve().parents[1]).tst_flags.split()) - set(flags)
    os.chdir(path.parent)
    shell = CaptureShell(path=path.parent)
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        cell.outputs, cell.execution_count = [], None
        d = _flags(cell.source)
        if d & skip_flags or 'eval: false' in d: continue
        res = shell.run(cell.source)
        if shell.exc: raise RuntimeError(f'{path.name}: cell failed:\n{cell.source}\n{shell.exc!r}')
        outs = []
        for o in res or []:
            if o.get('output_type') in ('display_data', 'execute_result'):
                data = {k: v for k, v in o.get('data', {}).items() if k in KEEP or k == 'text/plain'}
                if any(k in data for k in KEEP):
                    outs.append(nbformat.v4.new_output('display_data', data=data))
        cell.outputs = outs
    nbformat.write(nb, path)
    print(f'executed {path.name}')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebooks', nargs='+')
    p.add_argument('--flags', nargs='*', default=[])
    a = p.parse_args()
    os.environ.setdefault('MPLBACKEND', 'Agg')
    cwd = os.getcwd()
    for nbp in a.notebooks: run(os.path.join(cwd, nbp), a.flags); os.chdir(cwd)
