"""leanbert.speedups.linear: F.linear on oneDNN's fp32 product (CPU), same values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from leanbert.speedups import linear as lin

needs_onednn = pytest.mark.skipif(not lin.onednn_available(), reason="this PyTorch has no oneDNN linear kernel")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 32, 16), (70, 16)])
def test_values_and_gradients_equal_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(8, 16, generator=g, requires_grad=True)
    b = torch.randn(8, generator=g, requires_grad=True) if bias else None
    assert lin.use_onednn(x, w)
    out = lin.linear(x, w, b)
    grad = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, [x, w] + ([b] if bias else []), grad)
    ref_out = F.linear(x, w, b)
    ref = torch.autograd.grad(ref_out, [x, w] + ([b] if bias else []), grad)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_strided_inputs_and_weight_slices():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 32, generator=g)[:, ::2]  # non-contiguous columns
    w = torch.randn(24, 16, generator=g)[8:]  # a row slice, as token dropping's split layer takes
    torch.testing.assert_close(lin.linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)


@needs_onednn
def test_without_gradients_gives_the_same_values():
    x, w, b = torch.randn(100, 16), torch.randn(8, 16, requires_grad=True), torch.randn(8)
    with torch.no_grad():
        out = lin.linear(x, w, b)
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(x, w, b), atol=1e-5, rtol=1e-5)


def test_falls_back_to_f_linear_for_few_rows_autocast_other_dtypes_and_dispatch_modes():
    assert not lin.use_onednn(torch.randn(lin.MIN_ROWS - 1, 4), torch.randn(5, 4))
    x, w = torch.randn(lin.MIN_ROWS, 4), torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin.use_onednn(x, w)
    assert not lin.use_onednn(x.double(), w.double())
    with FlopCounterMode(display=False) as counter:
        lin.linear(x, w)
    assert counter.get_total_flops() == 2 * lin.MIN_ROWS * 4 * 5


def test_linear_module_keeps_nn_linear_names_and_init():
    torch.manual_seed(0)
    a = lin.OneDNNLinear(4, 3)
    torch.manual_seed(0)
    b = torch.nn.Linear(4, 3)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_leaves_the_kernels_to_torch_compile(monkeypatch):
    from leanbert.speedups import dropout as drop

    x, w = torch.randn(lin.MIN_ROWS, 4), torch.randn(5, 4)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not lin.use_onednn(x, w)
    called = []
    monkeypatch.setattr(drop.F, "dropout", lambda *a, **k: called.append(1) or a[0])
    drop.dropout(x, 0.1)
    assert called == [1]
