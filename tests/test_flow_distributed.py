"fgf_measure sharded over 2 gloo processes equals the single-process result."
import os, socket, pytest, numpy as np, pandas as pd, torch, torch.distributed as dist, torch.multiprocessing as mp
from fgflow.features import FeatureSet
from fgflow.flow import FlowError, fgf_measure
from fgflow.model import FGFNet3D


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 2, 8, 8, 8, generator=g); x[:, 1] = (x[:, 1] > 0.5).float()
    return x


def _model():
    torch.manual_seed(0); return FGFNet3D(width=4, depth=2)


def _run(model, **kw):
    return fgf_measure(model, _data(), FeatureSet(['volume', 'mean']), sets=[['volume', 'mean']], n_noise=7,
                       max_steps=6, batch_size=2, progress=False, **kw)


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        r = _run(_model())
        if rank == 0: r.table.to_pickle(out + '.table'); r.per_point.to_pickle(out + '.pp'); np.save(out + '.noise.npy', r.noise.values)
    finally: dist.destroy_process_group()


def test_sharded_measure_equals_single_process(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    out = str(tmp_path / 'r')
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    single = _run(_model())
    pp = pd.read_pickle(out + '.pp')
    assert len(pp) == 5
    np.testing.assert_allclose(pp.values.astype(float), single.per_point.values.astype(float), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.load(out + '.noise.npy'), single.noise.values, rtol=1e-5, atol=1e-12)
    t = pd.read_pickle(out + '.table')
    num = t.select_dtypes('number').columns
    np.testing.assert_allclose(t[num].values.astype(float), single.table[num].values.astype(float), rtol=1e-4, atol=1e-9)
    assert list(pp.index) == list(range(5))


def test_explicit_shard_and_bad_rank():
    half = _run(_model(), rank=1, world_size=2)                 # every second point, from index 1
    assert list(half.per_point.index) == [1, 3]
    full = _run(_model())
    np.testing.assert_allclose(half.per_point.values.astype(float), full.per_point.loc[[1, 3]].values.astype(float), rtol=1e-5, atol=1e-9)
    with pytest.raises(FlowError, match=r'rank must be in \[0, world_size=1\)'): _run(_model(), rank=1, world_size=1)
