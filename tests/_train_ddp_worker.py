"""Helper for tests/test_train_distributed.py: a tiny seeded dataset and model, trained by `fgflow.train.train`.

Run under `python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_train_ddp_worker.py OUT [ARCH METHOD]`
(ARCH `tiny` or `fgflownet`, METHOD `finite_difference` or `double_backprop`)
(train() starts the gloo process group from torchrun's environment) or imported for the 1-process run.
"""
import sys
from pathlib import Path
import torch, torch.nn as nn

class TinyNet(nn.Module):
    "GroupNorm conv net (no cross-sample coupling), (B,2,D,H,W) -> (B,) logits."
    def __init__(self, w=4):
        super().__init__()
        self.f = nn.Sequential(nn.Conv3d(2, w, 3, padding=1), nn.GroupNorm(2, w), nn.SiLU(),
                               nn.Conv3d(w, w, 3, padding=1, stride=2), nn.GroupNorm(2, w), nn.SiLU(),
                               nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(w, 1))
    def forward(self, x): return self.f(x).squeeze(-1)

class Blobs(torch.utils.data.Dataset):
    "Ellipsoid masks on a noisy CT channel; label = elongated-and-large (as the phantom rule)."
    def __init__(self, n, S=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        c = torch.arange(S, dtype=torch.float32) - S / 2 + 0.5
        zz, yy, xx = torch.meshgrid(c, c, c, indexing='ij')
        r, e = 1.5 + 2.5 * torch.rand(n, generator=g), 1 + torch.rand(n, generator=g)
        v = lambda t: t.view(-1, 1, 1, 1)
        m = ((zz / v(r * e)) ** 2 + (yy / v(r)) ** 2 + (xx / v(r)) ** 2 <= 1).float()
        ct = (0.4 + 0.2 * m + 0.05 * torch.randn(n, S, S, S, generator=g)).clamp(0, 1)
        self.x = torch.stack([ct, m], 1)
        s = r * e
        self.y = (s > s.median()).float()
        self.labels, self.spacing, self.window = self.y.numpy().astype(int), (2., 2., 2.), (-200., 300.)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], self.y[i]

SETTINGS = dict(features=['volume', 'elongation'], lam=0.5, epochs=2, batch_size=8, lr=1e-3, seed=0, progress=False)

def _net(arch):
    if arch == 'tiny': return TinyNet()
    from fgflow.model import FGFNet3D                       # its first layer is FGFConv3d (its own autograd Function)
    return FGFNet3D(width=4, depth=2)

def run(out_dir, arch='tiny', **kw):
    from fgflow.train import train
    torch.manual_seed(0)
    return train(_net(arch), Blobs(32, seed=1), Blobs(16, seed=2), out_dir=out_dir, **{**SETTINGS, **kw})

if __name__ == '__main__':
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    arch, method = (sys.argv[2:4] + ['tiny', 'finite_difference'][len(sys.argv[2:4]):])
    res = run(out / 'ckpt', arch=arch, penalty_method=method)
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save({'model': res.model.state_dict(), 'history': res.history.drop(columns='time').to_dict('list'),
                'world': dist.get_world_size() if dist.is_initialized() else 1}, out / f'rank{rank}.pt')
    if dist.is_initialized(): dist.destroy_process_group()
