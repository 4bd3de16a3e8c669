"""Timing helpers, the machine description and the synthetic inputs shared by the benchmark rows."""
from __future__ import annotations
import os, platform, statistics, time
import numpy as np, torch

NAMED12 = ['volume', 'surface_area', 'sphericity', 'major_axis_length', 'minor_axis_length', 'least_axis_length',
           'elongation', 'flatness', 'mean', 'variance', 'skewness', 'kurtosis']

def timeit(fn, repeats:int=3, warmup:int=1) -> tuple[float, list[float]]:
    "Median wall time (s) of `fn()` over `repeats` runs after `warmup` untimed runs, and all the times."
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts

def timeit_ab(fa, fb, repeats:int=3, warmup:int=1) -> tuple[float, float]:
    "Median times of `fa` and `fb` run alternately (a, b, a, b, ...) so that a change of load hits both sides."
    for _ in range(warmup): fa(); fb()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter(); fa(); ta.append(time.perf_counter() - t)
        t = time.perf_counter(); fb(); tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)

def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

def machine(device:str='cpu') -> dict:
    "CPU model, cores, torch version and threads (and the GPU when `device` is CUDA)."
    cpu = 'unknown'
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): cpu = line.split(':', 1)[1].strip(); break
    except OSError: pass
    m = dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
             python=platform.python_version(), load_avg=' '.join(f'{v:.1f}' for v in os.getloadavg()))
    if torch.device(device).type == 'cuda': m['gpu'] = torch.cuda.get_device_name()
    return m

def make_batch(n:int, size:int, seed:int=0) -> torch.Tensor:
    "(n, 2, S, S, S) float32 inputs like `preprocess` output: CT channel in [0, 1] and a soft ellipsoid GTV mask."
    g = np.random.default_rng(seed)
    c = (np.arange(size) - (size - 1) / 2) / size
    z, y, x = np.meshgrid(c, c, c, indexing='ij')
    out = np.empty((n, 2, size, size, size), np.float32)
    for b in range(n):
        r = g.uniform(0.12, 0.3, 3); sh = g.uniform(-0.05, 0.05, 3)
        d = ((z - sh[0]) / r[0])**2 + ((y - sh[1]) / r[1])**2 + ((x - sh[2]) / r[2])**2
        mask = np.clip((1.0 - d) * 4 + 0.5, 0, 1)                      # soft edge, like linear interpolation
        ct = 0.35 + 0.3 * mask * g.uniform(0.5, 1.5) + 0.05 * g.standard_normal(mask.shape)
        out[b, 0], out[b, 1] = np.clip(ct, 0, 1), mask
    return torch.from_numpy(out)

class LazyCases(torch.utils.data.Dataset):
    "N synthetic cases made on demand (nothing held in memory), items (x, y); for the streaming-memory row."
    def __init__(self, n:int, size:int): self.n, self.size = n, size
    spacing, window = (1., 1., 1.), (-200., 300.)
    def __len__(self): return self.n
    def __getitem__(self, i): return make_batch(1, self.size, seed=1000 + i)[0], torch.tensor(float(i % 2))
