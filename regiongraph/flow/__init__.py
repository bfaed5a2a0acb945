"""TV-L1 optical flow: quantisation, the OpenCV and the batched PyTorch backends, the stage.

Importing this package does not import torch: the PyTorch backend lives in
:mod:`regiongraph.flow.torch_tvl1` and the stage loads it only for ``backend: torch``.
"""

from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import dequantize_flow, quantize_flow
from regiongraph.flow.stage import compute_flow_shard, flow_settings
from regiongraph.flow.storage import read_flow, write_video_flow

__all__ = [
    "TVL1Params",
    "compute_flow_shard",
    "dequantize_flow",
    "flow_settings",
    "quantize_flow",
    "read_flow",
    "write_video_flow",
]
