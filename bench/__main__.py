"""fgflow benchmarks (issue 8): fgflow's cost against the alternatives, as ratios measured in one process run.

    python -m bench                  # all rows, ~8 min on 2 cores
    python -m bench --quick          # smaller sizes, ~2 min
    python -m bench --only 4         # one row
    python -m bench --device cuda    # rows 1, 2, 3, 6 on a GPU only
    (a plain run adds a GPU column for rows 1, 2, 3, 6 where CUDA is available; --no-gpu skips it)

Writes the table to bench/results.md (or --out) with the machine description."""
import argparse, sys, time, traceback
from pathlib import Path
import torch

from bench.common import machine
from bench import rows as R

FULL = dict(reps=3, r1_batch=8, r1_size=48, r1b_batch=4, r1b_size=64, r2_n=64, r2_size=16, r2_naive=4, r2_spl=5, r2_max=15, r2_bs=16, r2_reps=2,
            r3_batch=8, r3_size=48, r4_slices=200, r5_slices=200, r6_batch=8, r6_size=64,
            r7_size=16, r7_n=(100, 400), r8_demo='quick', r8_size=32, r8_n=(60, 120, 240), r8_epochs=2)
QUICK = dict(reps=3, r1_batch=4, r1_size=32, r1b_batch=2, r1b_size=40, r2_n=16, r2_size=16, r2_naive=2, r2_spl=3, r2_max=8, r2_bs=16, r2_reps=1,
             r3_batch=4, r3_size=32, r4_slices=50, r5_slices=50, r6_batch=8, r6_size=32,
             r7_size=12, r7_n=(100, 400), r8_demo='tiny', r8_size=16, r8_n=(60, 120, 240), r8_epochs=2)
CUDA_ROWS = (1, 2, 3, 6)

def before(r) -> str:
    "The figure of the row before issue 18's work (the issue's table; the bench's last committed run for the rest)."
    w = r['what']
    if w.startswith('1a'): return '17.6x'
    if w.startswith('1b'): return '22.1x'
    if w.startswith('2 '): return '8.3x faster'
    if w.startswith('3 '):
        fd, cached = 'finite_difference' in w, 'cached' in w or '`train`' in w
        return {(True, False): '11.7x', (True, True): '8.74x', (False, False): '10.4x', (False, True): '9.01x'}[fd, cached]
    return {'4': '0.786', '5': '0.0158', '6': '0.0856', '7': '1.02', '8a': '14.9 s'}.get(w.split()[0], '–')

def fmt(v, digits=3):
    if v is None: return '–'
    if isinstance(v, bool): return 'met' if v else 'MISSED'
    if isinstance(v, float): return f'{v:.{digits}g}' if abs(v) < 1000 else f'{v:.0f}'
    return str(v)

def table(rows, gpu=None) -> str:
    head = '| row | size | fgflow (s) | alternative (s) | ratio | before | goal | met | GPU ratio | reps | note |'
    out = [head, '|' + '---|' * 11]
    for r in rows:
        ratio = fmt(r.get('ratio'))
        if 'speedup' in r: ratio += f" ({r['speedup']:.1f}x faster)"
        if r['what'].startswith('7'): ratio = f"{r['ratio']:.2f} (memory)"
        g = (gpu or {}).get(r['what'], '–')
        out.append('| ' + ' | '.join([r['what'], r['size'], fmt(r['fgflow_s']), fmt(r['other_s']), ratio, before(r), r['goal'],
                                      'n/a' if r['met'] is None else fmt(bool(r['met'])), g, fmt(r.get('repeats', '')),
                                      r['note'].replace('|', '/')]) + ' |')
    return '\n'.join(out)

def main(argv=None):
    ap = argparse.ArgumentParser('python -m bench', description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='smaller sizes (~2 min)')
    ap.add_argument('--only', type=int, action='append', metavar='N', help='run only row N (repeatable)')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (on CUDA only rows 1, 2, 3, 6 run)")
    ap.add_argument('--out', default=str(Path(__file__).with_name('results.md')), help='markdown file to write')
    ap.add_argument('--append', action='store_true', help='append this table to --out instead of replacing it')
    ap.add_argument('--no-gpu', action='store_true', help='skip the GPU column (run by default where CUDA is available)')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: stable ratios on a shared machine; 0: torch default)')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    P = QUICK if a.quick else FULL
    todo = a.only or list(range(1, 9))
    if torch.device(a.device).type == 'cuda': todo = [n for n in todo if n in CUDA_ROWS]
    mach = machine(a.device)
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in mach.items()), flush=True)
    rows, t_all = [], time.perf_counter()
    for n in todo:
        t0 = time.perf_counter()
        try:
            r = getattr(R, f'row{n}')(P, a.device)
        except Exception as e:
            traceback.print_exc()
            r = dict(what=f'{n} (failed)', size='', fgflow_s=None, other_s=None, ratio=None, goal='', met=False,
                     note=f'{type(e).__name__}: {str(e)[:200]}')
        for x in (r if isinstance(r, list) else [r]):
            rows.append(x); print(table([x]).splitlines()[-1], flush=True)
        print(f'   row {n}: {time.perf_counter() - t0:.0f} s', flush=True)
    gpu, gpu_line = {}, ''
    if torch.device(a.device).type == 'cpu' and not a.no_gpu:      # the same rows on the GPU, beside the CPU figures
        if not torch.cuda.is_available(): gpu_line = 'GPU column: no CUDA device on this machine, skipped.'
        else:
            gpu_line = f'GPU column: {torch.cuda.get_device_name()}, the same rows with the model and inputs on the GPU.'
            for n in [n for n in todo if n in CUDA_ROWS]:
                try:
                    r = getattr(R, f'row{n}')(P, 'cuda')
                    for x in (r if isinstance(r, list) else [r]):
                        gpu[x['what']] = fmt(x['ratio']) + (f" ({x['speedup']:.1f}x faster)" if 'speedup' in x else '')
                        print(f"   GPU {x['what']}: {gpu[x['what']]}", flush=True)
                except Exception as e:
                    traceback.print_exc(); gpu_line += f' Row {n} failed on the GPU: {type(e).__name__}: {str(e)[:150]}.'
        print(gpu_line, flush=True)
    total = time.perf_counter() - t_all
    md = [f"## {'quick' if a.quick else 'full'} run on {a.device} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{total:.0f} s)", '', 'Machine: ' + ', '.join(f'{k} {v}' for k, v in mach.items()) + '.', '', table(rows, gpu), '']
    if gpu_line: md.insert(-2, gpu_line); md.insert(-2, '')
    text = '\n'.join(md)
    out = Path(a.out)
    if a.append and out.exists(): out.write_text(out.read_text().rstrip() + '\n\n' + text)
    else: out.write_text('# fgflow benchmarks\n\nRun with `python -m bench` (`--quick`, `--only N`, `--device cuda`). '
                         'Each ratio is fgflow / alternative measured in one process on the same inputs (median of the '
                         'repeats after one warm-up). The machine is shared: load slows both sides of a ratio. `before` is the '
                         'figure before issue 18 (its table for rows 1a, 1b and 2; the last committed run for the others). Profiles, '
                         'what changed and what remains: `bench/notes.md`.\n\n' + text)
    print(f'\n{table(rows, gpu)}\n\ntotal {total:.0f} s; written to {out}')
    return 0

if __name__ == '__main__': sys.exit(main())
