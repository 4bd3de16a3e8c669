import time, torch, torch.nn as nn
from fgflow.model import FGFNet3D


def test_shapes_and_no_batchnorm():
    m = FGFNet3D(in_channels=2, width=4, depth=3)
    x = torch.randn(5, 2, 8, 8, 8)
    assert m(x).shape == (5,)
    assert m.embed(x).shape == (5, 16)
    assert isinstance(m.head, nn.Linear) and m.head.out_features == 1
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    assert any(isinstance(mod, nn.GroupNorm) for mod in m.modules())


def test_batched_gradients_equal_one_by_one():
    torch.manual_seed(0)
    m = FGFNet3D(width=4, depth=3).train()
    x = torch.randn(4, 2, 16, 16, 16)
    xb = x.clone().requires_grad_()
    gb, = torch.autograd.grad(m(xb).sum(), xb)
    for i in range(len(x)):
        xi = x[i:i+1].clone().requires_grad_()
        gi, = torch.autograd.grad(m(xi).sum(), xi)
        torch.testing.assert_close(gb[i:i+1], gi, atol=1e-6, rtol=0)
    # and each sample's logit does not depend on the others
    y1 = m(x); x2 = x.clone(); x2[1:] = 0
    torch.testing.assert_close(m(x2)[0], y1[0], atol=1e-6, rtol=0)


def test_forward_backward_64_cube_under_a_second():
    torch.manual_seed(0)
    m = FGFNet3D()
    x = torch.randn(8, 2, 64, 64, 64, requires_grad=True)
    m(x).sum().backward()  # warm-up
    ts = []
    for _ in range(3):
        t = time.perf_counter(); m(x).sum().backward(); ts.append(time.perf_counter() - t)
    assert min(ts) < 1.0, ts
