"""Where the time of `alignment` goes (issue 18): its parts as multiples of one Captum Saliency call, one process per run.

    python -m bench.profile_alignment                    # 8x2x48^3 width 8 and 4x2x64^3 width 16
    python -m bench.profile_alignment --size 4 64 16     # batch, edge, width

Parts: the model's input gradient (one backward), the closed-form features (cos² from the factored gradients, no
mesh), the mesh features (surface_area and sphericity gradients through the mesh), the 100 noise features' cos²,
and the whole `alignment(model, x, FeatureSet(15 named), noise=...)` call. Medians of `--reps` after one warm-up."""
import argparse, statistics, time, warnings
import torch

from bench.common import NAMED12, make_batch, machine
from fgflow.model import FGFNet3D
from fgflow.features import FeatureSet, random_linear_features, feature_gradients
from fgflow.flow import alignment, input_gradients, _align_grad, _noise_cos2

ALL15 = NAMED12 + ['centroid_x', 'centroid_y', 'centroid_z']
MESH = ['surface_area', 'sphericity']

def _median(fn, reps:int) -> float:
    fn(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def profile(B:int, S:int, W:int, reps:int=5) -> dict:
    "Seconds of each part for a batch B x 2 x S^3 and FGFNet3D(width=W)."
    from captum.attr import Saliency
    torch.manual_seed(0)
    model, x = FGFNet3D(width=W).eval(), make_batch(B, S)
    fs, closed = FeatureSet(ALL15), FeatureSet([n for n in ALL15 if n not in MESH])
    nz = random_linear_features(100, x.shape[1:], seed=0)
    gf = input_gradients(model, x).flatten(1)
    sal = Saliency(model)
    parts = dict(saliency=lambda: sal.attribute(x, abs=False), input_gradient=lambda: input_gradients(model, x),
                 closed_forms=lambda: _align_grad(gf, x, closed, {}), mesh=lambda: feature_gradients(x, MESH),
                 noise=lambda: _noise_cos2(gf, x, nz), alignment=lambda: alignment(model, x, fs, noise=nz))
    return {k: _median(f, reps) for k, f in parts.items()}

def main(argv=None):
    ap = argparse.ArgumentParser('python -m bench.profile_alignment', description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, nargs=3, action='append', metavar=('B', 'S', 'WIDTH'))
    ap.add_argument('--reps', type=int, default=5)
    a = ap.parse_args(argv)
    torch.set_num_threads(1); warnings.filterwarnings('ignore', module='captum')
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in machine().items()))
    for B, S, W in a.size or [(8, 48, 8), (4, 64, 16)]:
        t = profile(B, S, W, a.reps)
        print(f'{B}x2x{S}^3 width {W}: ' + ', '.join(f'{k} {v * 1000:.0f} ms ({v / t["saliency"]:.2f}x)' for k, v in t.items()))

if __name__ == '__main__': main()
