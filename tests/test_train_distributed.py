"""2-process training (torchrun, gloo on CPU) matches 1-process training with the same global batch.

DDP averages the ranks' gradients; with per-rank batch = global / 2, equal shards and a model
without cross-sample coupling (GroupNorm), the update equals the 1-process one up to the order of
float32 reductions (Adam's normalization amplifies those on near-zero gradient entries up to ~lr).
Tolerance: weights within 1e-4 absolute after 2 epochs (8 AdamW steps at lr 1e-3, weights move
~1e-2; measured max difference 3.4e-5 for the small net with the finite difference, 3e-8 for FGFNet3D with
double backprop, whose first layer is `FGFConv3d`), epoch losses and penalties within 1e-5, validation AUCs equal.
"""
import os, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
import _train_ddp_worker as W

HERE = Path(__file__).parent

@pytest.mark.parametrize('arch,method', [('tiny', 'finite_difference'), ('fgflownet', 'double_backprop')])
def test_two_processes_match_one(tmp_path, arch, method):
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                        str(HERE / '_train_ddp_worker.py'), str(tmp_path), arch, method], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{i}.pt', weights_only=True) for i in (0, 1))
    assert r0['world'] == 2
    ref = W.run(tmp_path / 'single', arch=arch, penalty_method=method)
    diff = max((r0['model'][k] - v).abs().max().item() for k, v in ref.model.state_dict().items())
    print(f'max |w_2proc - w_1proc| = {diff:.3g}')
    for k, v in ref.model.state_dict().items():
        assert torch.equal(r0['model'][k], r1['model'][k]), k  # DDP keeps the ranks identical
        assert (r0['model'][k] - v).abs().max().item() < 1e-4, k
    h = ref.history
    assert np.allclose(r0['history']['loss'], h['loss'], atol=1e-5), (r0['history']['loss'], h['loss'].tolist())
    assert np.allclose(r0['history']['penalty'], h['penalty'], atol=1e-5)
    assert r0['history']['valid_auc'] == h['valid_auc'].tolist()
    # rank 0 alone wrote the checkpoints
    assert sorted(p.name for p in (tmp_path / 'ckpt').iterdir()) == ['best.pt', 'last.pt']
