"""Deployment: ONNX export with ONNX Runtime int8 (:mod:`leanbert.deploy.onnx`) and PyTorch
int8 (torchao). Nothing heavy is imported here: ``import leanbert.deploy`` loads neither torch
nor onnx; import the submodule you need::

    from leanbert.deploy.onnx import export_onnx, OnnxModel
"""

from __future__ import annotations
