"""Fixtures shared by the deploy tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import leanbert


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., torch.nn.Module]:
    """``tiny_model(preset, heads, **overrides)``: a seeded eval-mode model (1,000-id vocabulary)
    with norm parameters in [0.5, 1.5] and biases away from 0, so that folding NoNorm (or
    propagating its scale) is not an identity and the folded biases are not the betas."""

    def build(preset: str, heads: list[str], **overrides) -> torch.nn.Module:
        torch.manual_seed(0)
        model = leanbert.build_model(preset, heads=heads, vocab_size=1000, **overrides).eval()
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                elif name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        return model

    return build
