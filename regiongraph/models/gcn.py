"""The graph heads of "Videos as Space-Time Region Graphs" (Wang & Gupta, ECCV 2018).

A video is a set of region nodes: ``K`` object boxes on each of ``T`` feature frames, each with
a RoIAlign feature of the backbone (``N = T * K`` nodes, ``C`` channels: 2048 for I3D, the
backbone's own for the others, :mod:`regiongraph.backbones`), plus the
globally pooled backbone feature. Section 3 of the paper builds two kinds of graph over the
nodes and runs graph convolutions on them:

- **Similarity graph** (§3, "Similarity Graph"): ``G_ij = softmax_j( φ(x_i)ᵀ φ'(x_j) )`` with
  ``φ(x) = w x`` and ``φ'(x) = w' x`` learned linear maps; every row sums to 1.
- **Spatial-temporal graphs** (§3, "Spatial-Temporal Graph"): the forward graph
  ``G_front_ij = IoU(box i at frame t, box j at frame t + 1)`` and the backward graph, the
  reverse direction (``t`` to ``t - 1``); each row is normalised to sum to 1.
- **Graph convolution** (§3, "Graph Convolutions"): ``Z = G X W``; several graphs in one layer
  add up, ``Z = Σ_g G_g X W_g`` (forward and backward graphs of the spatial-temporal branch).
  Each layer has a residual connection; LayerNorm and ReLU sit between layers; 3 layers.
- **Combining the graphs** (§3, "Combining Multiple Graphs"; §4 implementation details): the
  similarity and the spatial-temporal branches run separately and are summed at the last layer;
  the nodes are averaged, concatenated with the global feature, and classified after dropout.

Node features are reduced from ``C`` (2048 in the paper) to 512 channels before the graphs (§4). Invalid nodes
(a box slot the detector left empty, ``mask == False``) take part in nothing: they receive and
send no edge, get no softmax weight and no IoU, are zero at every layer and are left out of the
node average. A video with no valid box gets an all-zero graph and a zero node average.

The optional box geometry embedding (normalised box coordinates and time, passed through a small
MLP and added to the node features) follows the coordinate models of Something-Else (Materzynska
et al., CVPR 2020); it is off for the paper's models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

MODEL_NAMES = ("baseline", "similarity", "spatiotemporal", "joint")


def row_normalise(graph: Tensor) -> Tensor:
    """Divide each row of ``(B, N, N)`` by its sum; rows that sum to zero stay zero (no NaN)."""
    total = graph.sum(dim=-1, keepdim=True)
    return graph / total.clamp_min(torch.finfo(graph.dtype).tiny)


def similarity_graph(theta: Tensor, phi: Tensor, mask: Tensor) -> Tensor:
    """``G_ij = softmax_j(θ_iᵀ φ_j)`` over the valid nodes ``j``; rows of invalid ``i`` are zero.

    ``theta`` and ``phi`` are ``(B, N, D)`` (the two learned projections of the node features),
    ``mask`` ``(B, N)`` bool. The softmax runs over valid columns only: invalid ones are filled
    with the dtype's most negative value, whose exponential is exactly zero next to any valid
    column; a video with no valid node gives an all-zero graph.
    """
    logits = theta @ phi.transpose(1, 2)
    valid_j = mask[:, None, :]
    logits = logits.masked_fill(~valid_j, torch.finfo(logits.dtype).min)
    graph = torch.softmax(logits, dim=-1)
    return graph * (valid_j & mask[:, :, None]).to(graph.dtype)


def pairwise_iou(first: Tensor, second: Tensor) -> Tensor:
    """IoU of every box in ``first (..., K, 4)`` with every box in ``second (..., L, 4)``.

    Boxes are ``(x1, y1, x2, y2)``; degenerate boxes have area zero and IoU zero (never NaN).
    """
    a = first[..., :, None, :]
    b = second[..., None, :, :]
    width = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    height = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(
        0
    )
    inter = width * height

    def area(box: Tensor) -> Tensor:
        return (box[..., 2] - box[..., 0]).clamp_min(0) * (box[..., 3] - box[..., 1]).clamp_min(0)

    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), 0.0)


def spatiotemporal_graphs(boxes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The forward and backward IoU graphs over ``N = T * K`` nodes, rows normalised.

    ``boxes`` is ``(B, T, K, 4)``, ``mask`` ``(B, T, K)``; node ``n = t * K + k``.
    ``G_front[t*K + i, (t+1)*K + j] = IoU(boxes[t, i], boxes[t+1, j])`` and
    ``G_back[(t+1)*K + j, t*K + i]`` the same IoU (the edge pointing back in time); every other
    entry is zero. Pairs with an invalid box get zero, then each row is divided by its sum; a
    box overlapping nothing in the next (previous) frame has an all-zero row.
    """
    batch, frames, per_frame, _ = boxes.shape
    nodes = frames * per_frame
    boxes = boxes.float()
    front = boxes.new_zeros(batch, frames, per_frame, frames, per_frame)
    if frames > 1:
        iou = pairwise_iou(boxes[:, :-1], boxes[:, 1:])  # (B, T-1, K, K)
        valid = mask[:, :-1, :, None] & mask[:, 1:, None, :]
        iou = torch.where(valid, iou, 0.0)
        steps = torch.arange(frames - 1, device=boxes.device)
        # Advanced indices on dims 1 and 3 put the step dimension first: (T-1, B, K, K).
        front[:, steps, :, steps + 1, :] = iou.permute(1, 0, 2, 3)
    front = front.reshape(batch, nodes, nodes)
    back = front.transpose(1, 2)
    return row_normalise(front), row_normalise(back)


@dataclass
class RegionNodes:
    """A batch's nodes in a compact layout: each video's valid nodes first, in node order.

    ``positions (B, M)`` holds the original node number ``n = t * K + k`` of each of the ``M``
    slots, ``M`` being the most valid nodes of any video in the batch; ``mask (B, M)`` says
    which slots are valid (the rest pad shorter videos). The graphs and the per-node layers
    then work on ``M`` nodes instead of ``N = T * K``: a detector's top-10 per frame often
    holds two real objects, and a dense ``N x N`` graph would be mostly empty. Per-node
    layers run on the valid slots only (:meth:`apply`), so padding stays exactly zero.
    """

    positions: Tensor
    mask: Tensor
    index: Tensor  # flat positions b * M + m of the valid slots
    boxes: Tensor  # (B, T, K, 4), all boxes
    box_mask: Tensor  # (B, T, K)

    @classmethod
    def from_boxes(cls, boxes: Tensor, box_mask: Tensor) -> RegionNodes:
        batch, frames, per_frame = box_mask.shape
        flat = box_mask.reshape(batch, frames * per_frame).bool()
        width = max(int(flat.sum(dim=1).max()), 1)  # the one synchronisation per batch
        order = torch.argsort((~flat).to(torch.int8), dim=1, stable=True)[:, :width]
        mask = flat.gather(1, order)
        index = mask.flatten().nonzero().squeeze(1)
        return cls(order, mask, index, boxes, box_mask.bool())

    def gather(self, values: Tensor) -> Tensor:
        """``(B, N, D)`` per original node to ``(B, M, D)`` per slot."""
        return values.gather(1, self.positions[..., None].expand(-1, -1, values.shape[-1]))

    def gather_graph(self, graph: Tensor) -> Tensor:
        """``(B, N, N)`` between original nodes to ``(B, M, M)`` between slots."""
        rows = self.gather(graph)
        slots = self.positions.shape[1]
        return rows.gather(2, self.positions[:, None, :].expand(-1, slots, -1))

    def apply(self, layer: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``layer`` on the valid slots of ``x (B, M, D)``; zeros elsewhere."""
        batch, slots, channels = x.shape
        rows = layer(x.reshape(batch * slots, channels).index_select(0, self.index))
        out = rows.new_zeros(batch * slots, rows.shape[-1]).index_copy(0, self.index, rows)
        return out.view(batch, slots, -1)


class Standardise(nn.Module):
    """``(x - mean) / std`` per channel, with statistics of the training features.

    Buffers, not parameters: set once before training (:meth:`set_statistics`), saved with the
    weights. Identity until set. Cached features of a frozen backbone have large per-channel
    offsets (the paper fine-tunes the backbone with the head, so its features never needed
    this); standardising them lets one learning rate suit every backbone.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


class GraphConvolution(nn.Module):
    """One layer ``Z = X + Σ_g G_g X W_g`` (graph convolution with a residual connection)."""

    def __init__(self, channels: int, num_graphs: int) -> None:
        super().__init__()
        self.weights = nn.ModuleList(
            nn.Linear(channels, channels, bias=False) for _ in range(num_graphs)
        )

    def forward(self, x: Tensor, graphs: list[Tensor], nodes: RegionNodes) -> Tensor:
        out = x
        for graph, weight in zip(graphs, self.weights, strict=True):
            xw = nodes.apply(weight, x)
            out = out + graph.to(xw.dtype) @ xw
        return out


class GraphBranch(nn.Module):
    """``layers`` graph convolutions over fixed graphs, LayerNorm and ReLU between layers.

    Invalid nodes stay exactly zero: their graph rows are zero, and LayerNorm (whose bias
    would make them non-zero) runs on the valid nodes only.
    """

    def __init__(self, channels: int, num_graphs: int, layers: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(GraphConvolution(channels, num_graphs) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers - 1))

    def forward(self, x: Tensor, graphs: list[Tensor], nodes: RegionNodes) -> Tensor:
        for index, conv in enumerate(self.convs):
            x = conv(x, graphs, nodes)
            if index < len(self.norms):
                norm = self.norms[index]
                x = nodes.apply(lambda rows, norm=norm: torch.relu(norm(rows)), x)
        return x


class SimilarityBranch(nn.Module):
    """The similarity graph from learned projections φ, φ' of the input nodes, then the GCN."""

    def __init__(self, channels: int, layers: int = 3) -> None:
        super().__init__()
        # φ(x) = w x and φ'(x) = w' x (§3): no bias, which would add φ(x_i)ᵀ b' to every
        # logit of row i (harmless under the softmax) and bᵀ φ'(x_j) to every logit of column j
        # (a learned preference for some nodes that the paper's graph does not have)
        self.theta = nn.Linear(channels, channels, bias=False)
        self.phi = nn.Linear(channels, channels, bias=False)
        self.gcn = GraphBranch(channels, num_graphs=1, layers=layers)

    def forward(self, x: Tensor, nodes: RegionNodes) -> Tensor:
        theta, phi = nodes.apply(self.theta, x), nodes.apply(self.phi, x)
        graph = similarity_graph(theta.float(), phi.float(), nodes.mask)
        return self.gcn(x, [graph], nodes)


class SpatioTemporalBranch(nn.Module):
    """The forward and backward IoU graphs (fixed by the boxes), each with its own ``W``."""

    def __init__(self, channels: int, layers: int = 3) -> None:
        super().__init__()
        self.gcn = GraphBranch(channels, num_graphs=2, layers=layers)

    def forward(self, x: Tensor, nodes: RegionNodes) -> Tensor:
        front, back = spatiotemporal_graphs(nodes.boxes, nodes.box_mask)
        return self.gcn(x, [nodes.gather_graph(front), nodes.gather_graph(back)], nodes)


class BoxGeometry(nn.Module):
    """Embed ``(x1, y1, x2, y2) / image_size`` and ``t / (T - 1)`` of each node (Something-Else)."""

    def __init__(self, channels: int, image_size: float) -> None:
        super().__init__()
        self.image_size = float(image_size)
        self.mlp = nn.Sequential(nn.Linear(5, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, nodes: RegionNodes) -> Tensor:
        batch, frames, per_frame, _ = nodes.boxes.shape
        boxes = nodes.gather(nodes.boxes.reshape(batch, frames * per_frame, 4).float())
        time = (nodes.positions // per_frame).float() / max(frames - 1, 1)
        geometry = torch.cat([boxes / self.image_size, time[..., None]], dim=-1)
        return nodes.apply(self.mlp, geometry)


class GlobalBaseline(nn.Module):
    """The backbone's own classifier: global feature → dropout → linear (the paper's I3D row)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.standardise_global = Standardise(in_channels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(
        self,
        global_feature: Tensor,
        roi: Tensor | None = None,
        boxes: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        return self.classifier(self.dropout(self.standardise_global(global_feature)))


class RegionGraphHead(nn.Module):
    """Nodes reduced to ``hidden`` channels, graph branches summed, averaged, fused, classified.

    ``forward(global_feature (B, C), roi (B, T, K, C), boxes (B, T, K, 4), mask (B, T, K))``
    returns class logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        branches: list[nn.Module],
        in_channels: int,
        num_classes: int,
        hidden: int = 512,
        dropout: float = 0.5,
        geometry: BoxGeometry | None = None,
    ) -> None:
        super().__init__()
        self.standardise_global = Standardise(in_channels)
        self.standardise_nodes = Standardise(in_channels)
        self.reduce = nn.Linear(in_channels, hidden)
        self.geometry = geometry
        self.branches = nn.ModuleList(branches)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden + in_channels, num_classes)

    def forward(self, global_feature: Tensor, roi: Tensor, boxes: Tensor, mask: Tensor) -> Tensor:
        batch, frames, per_frame, channels = roi.shape
        nodes = RegionNodes.from_boxes(boxes, mask)
        compact = nodes.gather(roi.reshape(batch, frames * per_frame, channels))
        x = nodes.apply(lambda rows: self.reduce(self.standardise_nodes(rows)), compact)
        if self.geometry is not None:
            x = x + self.geometry(nodes)
        # "Combining Multiple Graphs": the branches run separately, summed at the last layer.
        z = sum(branch(x, nodes) for branch in self.branches)
        counts = nodes.mask.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
        pooled = z.sum(dim=1) / counts  # invalid nodes are zero: a mean over the valid ones
        fused = torch.cat([pooled.float(), self.standardise_global(global_feature)], dim=-1)
        return self.classifier(self.dropout(fused))


def set_input_statistics(model: nn.Module, statistics: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Give the head's :class:`Standardise` layers the training features' ``(mean, std)``
    (keys ``global`` and ``roi``, as :func:`regiongraph.train.data.feature_statistics` gives)."""
    for name, module in model.named_children():
        if name == "standardise_global":
            module.set_statistics(*statistics["global"])
        elif name == "standardise_nodes" and "roi" in statistics:
            module.set_statistics(*statistics["roi"])


def baseline_head(in_channels: int, num_classes: int, dropout: float = 0.5) -> GlobalBaseline:
    return GlobalBaseline(in_channels, num_classes, dropout)


def _region_head(
    branches: list[nn.Module],
    in_channels: int,
    num_classes: int,
    hidden: int,
    dropout: float,
    box_geometry: bool,
    image_size: float,
) -> RegionGraphHead:
    geometry = BoxGeometry(hidden, image_size) if box_geometry else None
    return RegionGraphHead(branches, in_channels, num_classes, hidden, dropout, geometry)


def similarity_head(
    in_channels: int,
    num_classes: int,
    hidden: int = 512,
    layers: int = 3,
    dropout: float = 0.5,
    box_geometry: bool = False,
    image_size: float = 224.0,
) -> RegionGraphHead:
    branches = [SimilarityBranch(hidden, layers)]
    return _region_head(
        branches, in_channels, num_classes, hidden, dropout, box_geometry, image_size
    )


def spatiotemporal_head(
    in_channels: int,
    num_classes: int,
    hidden: int = 512,
    layers: int = 3,
    dropout: float = 0.5,
    box_geometry: bool = False,
    image_size: float = 224.0,
) -> RegionGraphHead:
    branches = [SpatioTemporalBranch(hidden, layers)]
    return _region_head(
        branches, in_channels, num_classes, hidden, dropout, box_geometry, image_size
    )


def joint_head(
    in_channels: int,
    num_classes: int,
    hidden: int = 512,
    layers: int = 3,
    dropout: float = 0.5,
    box_geometry: bool = False,
    image_size: float = 224.0,
) -> RegionGraphHead:
    branches = [SimilarityBranch(hidden, layers), SpatioTemporalBranch(hidden, layers)]
    return _region_head(
        branches, in_channels, num_classes, hidden, dropout, box_geometry, image_size
    )


def build_head(
    name: str,
    in_channels: int,
    num_classes: int,
    hidden: int = 512,
    layers: int = 3,
    dropout: float = 0.5,
    box_geometry: bool = False,
    image_size: float = 224.0,
) -> nn.Module:
    """The head named by the config value ``gcn.models``: baseline | similarity | spatiotemporal | joint."""
    if name == "baseline":
        return baseline_head(in_channels, num_classes, dropout)
    if name == "similarity":
        builder = similarity_head
    elif name == "spatiotemporal":
        builder = spatiotemporal_head
    elif name == "joint":
        builder = joint_head
    else:
        raise ValueError(f"unknown GCN model {name!r}; expected one of {MODEL_NAMES}")
    return builder(in_channels, num_classes, hidden, layers, dropout, box_geometry, image_size)
