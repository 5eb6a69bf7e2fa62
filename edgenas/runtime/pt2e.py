"""Static INT8 quantisation of a network with PyTorch 2 export (PT2E), as LiteRT and ExecuTorch take it.

The runtime's own quantiser annotates the exported graph (symmetric INT8, weights per output
channel); observers see the calibration images one at a time (the graph is exported for batch 1,
the artifact's batch); ``convert_pt2e`` leaves quantise/dequantise pairs the converter lowers.
"""

from __future__ import annotations

import numpy as np


def quantize_pt2e(model, *, quantizer, sample, calibration: np.ndarray, to_input=None, fold_quantize: bool = True):
    """``model`` (eval, CPU) quantised by ``quantizer`` after observing ``calibration`` (NCHW float32).

    ``sample``: the (1, ...) tensor the graph is exported with; ``to_input`` maps an NCHW image
    batch to the model's input (LiteRT's NHWC wrapper takes ``permute(0, 2, 3, 1)``); ``fold_quantize=False``
    keeps float weights behind quantise/dequantise nodes (litert-torch's converter needs them so)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(model, (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    images = torch.from_numpy(np.ascontiguousarray(calibration, np.float32))
    with torch.no_grad():
        for i in range(len(images)):
            x = images[i : i + 1]
            prepared(to_input(x) if to_input else x)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
