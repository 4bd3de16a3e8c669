"""Time `fgflow.phantoms.make_cohort` at default size.

    python bench/phantoms.py [--n 120] [--workers 2] [--matrix 128]
"""
import argparse, resource, tempfile, time
from fgflow.phantoms import make_cohort

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=120)
    ap.add_argument('--workers', type=int, default=None)
    ap.add_argument('--matrix', type=int, default=128)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        df = make_cohort(d, n=a.n, workers=a.workers, matrix=a.matrix, progress=False)
        dt = time.perf_counter() - t
    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ('ru_utime', 'ru_stime'))
    print(f'{a.n} patients, matrix {a.matrix}: {dt:.1f} s wall, {dt / a.n * 1000:.0f} ms/patient, '
          f'{int(df.slices.sum())} slices, positives {df.Distant.mean():.2f}; CPU time {cpu:.1f} s (load-independent)')

if __name__ == '__main__': main()
