"""The graphs and heads of Wang & Gupta (ECCV 2018) against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from regiongraph.models.gcn import (
    MODEL_NAMES,
    GraphConvolution,
    RegionGraphHead,
    RegionNodes,
    SimilarityBranch,
    SpatioTemporalBranch,
    Standardise,
    build_head,
    pairwise_iou,
    row_normalise,
    set_input_statistics,
    similarity_graph,
    spatiotemporal_graphs,
)


def test_similarity_graph_is_a_softmax_over_valid_nodes_only():
    theta = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    phi = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    graph = similarity_graph(theta, phi, mask)[0]
    # Row 0: logits (1, 0, 9); node 2 is invalid, so the softmax runs over (1, 0) only.
    e = math.e
    expected = torch.tensor(
        [
            [e / (e + 1), 1 / (e + 1), 0.0],
            [1 / (1 + e**2), e**2 / (1 + e**2), 0.0],  # row 1: logits (0, 2, 18)
            [0.0, 0.0, 0.0],  # an invalid node receives nothing
        ]
    )
    torch.testing.assert_close(graph, expected)
    torch.testing.assert_close(graph.sum(-1), torch.tensor([1.0, 1.0, 0.0]))


def test_similarity_graph_of_a_video_without_valid_nodes_is_zero_not_nan():
    theta = torch.randn(1, 4, 3)
    graph = similarity_graph(theta, theta, torch.zeros(1, 4, dtype=torch.bool))
    assert not graph.isnan().any()
    assert (graph == 0).all()


def test_pairwise_iou_hand_computed_and_degenerate_boxes_are_zero():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    iou = pairwise_iou(a, b)
    expected = torch.tensor([[2 / 6, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(iou, expected)


def _two_frame_boxes():
    # Frame 0: A overlaps C (IoU 1/3) and D (IoU 1); B overlaps nothing in frame 1.
    boxes = torch.tensor(
        [
            [
                [[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0]],  # A, B
                [[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0]],  # C, D
            ]
        ]
    )
    return boxes, torch.ones(1, 2, 2, dtype=torch.bool)


def test_spatiotemporal_graphs_hand_computed():
    boxes, mask = _two_frame_boxes()
    front, back = spatiotemporal_graphs(boxes, mask)
    # Nodes: A=0, B=1 (t=0), C=2, D=3 (t=1).
    expected_front = torch.zeros(4, 4)
    expected_front[0, 2], expected_front[0, 3] = 0.25, 0.75  # (1/3, 1) / (4/3)
    expected_back = torch.zeros(4, 4)
    expected_back[2, 0], expected_back[3, 0] = 1.0, 1.0  # C and D each overlap only A
    torch.testing.assert_close(front[0], expected_front)
    torch.testing.assert_close(back[0], expected_back)
    # B overlaps nothing: its row stays zero, and no row anywhere is NaN.
    assert front[0, 1].sum() == 0
    assert not front.isnan().any() and not back.isnan().any()


def test_spatiotemporal_graphs_leave_out_invalid_boxes():
    boxes, mask = _two_frame_boxes()
    mask[0, 1, 1] = False  # D is an empty detector slot
    boxes[0, 1, 1] = 0.0  # with zero coordinates, as a detector pads them
    front, back = spatiotemporal_graphs(boxes, mask)
    assert front[0, 0, 2] == pytest.approx(1.0)  # A now points only to C
    assert front[0, :, 3].sum() == 0 and back[0, 3].sum() == 0
    # Masked boxes with the same coordinates as valid ones still get no edge.
    boxes[0, 1, 1] = torch.tensor([0.0, 0.0, 2.0, 2.0])
    front_again, back_again = spatiotemporal_graphs(boxes, mask)
    torch.testing.assert_close(front_again, front)
    torch.testing.assert_close(back_again, back)


def test_row_normalise_keeps_zero_rows_zero():
    graph = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])
    torch.testing.assert_close(row_normalise(graph), torch.tensor([[[0.0, 0.0], [0.25, 0.75]]]))


def test_graph_convolution_is_residual_plus_g_x_w():
    layer = GraphConvolution(channels=2, num_graphs=2)
    with torch.no_grad():
        layer.weights[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        layer.weights[1].weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    g0 = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    g1 = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # Z = X + G0 X W0ᵀ + G1 X W1ᵀ  (nn.Linear multiplies by the transposed weight)
    w0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w1 = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    expected = x + g0 @ x @ w0.T + g1 @ x @ w1.T
    all_valid = RegionNodes.from_boxes(
        torch.zeros(1, 2, 1, 4), torch.ones(1, 2, 1, dtype=torch.bool)
    )
    torch.testing.assert_close(layer(x, [g0, g1], all_valid), expected)
    torch.testing.assert_close(expected, torch.tensor([[[6.0, 8.0], [5.0, 7.0]]]))


def test_region_nodes_put_valid_nodes_first_and_layers_skip_padding():
    mask = torch.tensor(
        [[[True, False], [False, True]], [[False, False], [False, True]]]
    )  # (B, T, K)
    nodes = RegionNodes.from_boxes(torch.zeros(2, 2, 2, 4), mask)
    # Video 0 has nodes 0 and 3 valid; video 1 only node 3: two slots, the second padding.
    assert nodes.positions[:, :1].tolist() == [[0], [3]] and nodes.positions[0, 1] == 3
    assert nodes.mask.tolist() == [[True, True], [True, False]]
    x = torch.arange(12.0).view(2, 2, 3)
    seen = []

    def layer(rows):
        seen.append(rows.shape[0])
        return rows[:, :2] * 2

    out = nodes.apply(layer, x)
    assert seen == [3]  # one call on the three valid slots
    torch.testing.assert_close(out[nodes.mask], x[nodes.mask][:, :2] * 2)
    assert (out[~nodes.mask] == 0).all()
    graph = torch.arange(32.0).view(2, 4, 4)
    compact = nodes.gather_graph(graph)
    assert compact[0].tolist() == [
        [graph[0, 0, 0], graph[0, 0, 3]],
        [graph[0, 3, 0], graph[0, 3, 3]],
    ]


@pytest.mark.parametrize("name", ["similarity", "spatiotemporal", "joint"])
def test_a_videos_prediction_does_not_depend_on_its_batch(name):
    # The compact layout pads each video to the batch's most valid nodes: padding is inert.
    torch.manual_seed(0)
    model = build_head(name, in_channels=32, num_classes=5, hidden=16, box_geometry=True).eval()
    global_feature, roi, boxes, mask = _inputs()
    mask[0] = True  # the widest video
    together = model(global_feature, roi, boxes, mask)
    for video in range(3):
        alone = model(*(t[video : video + 1] for t in (global_feature, roi, boxes, mask)))
        torch.testing.assert_close(alone[0], together[video], rtol=1e-4, atol=1e-5)


def test_standardise_uses_the_training_statistics():
    layer = Standardise(2)
    x = torch.tensor([[3.0, 5.0]])
    torch.testing.assert_close(layer(x), x)  # identity until set
    layer.set_statistics(torch.tensor([1.0, 5.0]), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(layer(x), torch.tensor([[1.0, 0.0]]))  # a constant channel: std 1
    model = build_head("joint", in_channels=2, num_classes=3, hidden=4)
    stats = {
        "global": (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])),
        "roi": (torch.zeros(2), torch.full((2,), 5.0)),
    }
    set_input_statistics(model, stats)
    assert model.standardise_global.std.tolist() == [3.0, 4.0]
    assert model.standardise_nodes.std.tolist() == [5.0, 5.0]
    assert "standardise_nodes.mean" in model.state_dict()  # saved with the weights


def _inputs(batch=3, frames=4, per_frame=3, channels=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    roi = torch.randn(batch, frames, per_frame, channels, generator=generator)
    global_feature = torch.randn(batch, channels, generator=generator)
    corner = torch.rand(batch, frames, per_frame, 2, generator=generator) * 100
    size = 20 + torch.rand(batch, frames, per_frame, 2, generator=generator) * 60
    boxes = torch.cat([corner, corner + size], dim=-1)
    mask = torch.rand(batch, frames, per_frame, generator=generator) > 0.3
    mask[-1] = False  # one video without any valid box
    return global_feature, roi, boxes, mask


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_head_gives_finite_logits_of_the_right_shape(name):
    torch.manual_seed(0)
    model = build_head(name, in_channels=32, num_classes=7, hidden=16)
    logits = model(*_inputs())
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_heads_have_the_papers_structure():
    joint = build_head("joint", in_channels=2048, num_classes=174)
    assert isinstance(joint, RegionGraphHead)
    assert [type(b) for b in joint.branches] == [SimilarityBranch, SpatioTemporalBranch]
    assert joint.reduce.in_features == 2048 and joint.reduce.out_features == 512
    assert len(joint.branches[0].gcn.convs) == 3 and len(joint.branches[0].gcn.norms) == 2
    assert len(joint.branches[1].gcn.convs[0].weights) == 2  # W_front and W_back
    assert joint.classifier.in_features == 512 + 2048 and joint.dropout.p == 0.5
    baseline = build_head("baseline", in_channels=2048, num_classes=174)
    assert baseline.classifier.in_features == 2048
    with pytest.raises(ValueError, match="unknown GCN model 'graph'"):
        build_head("graph", 2048, 174)


@pytest.mark.parametrize("name", ["similarity", "spatiotemporal", "joint"])
def test_invalid_nodes_do_not_change_the_prediction(name):
    torch.manual_seed(0)
    model = build_head(name, in_channels=32, num_classes=5, hidden=16, box_geometry=True).eval()
    global_feature, roi, boxes, mask = _inputs()
    before = model(global_feature, roi, boxes, mask)
    invalid = ~mask
    roi = torch.where(invalid[..., None], torch.randn_like(roi) * 100, roi)
    boxes = torch.where(invalid[..., None], torch.rand_like(boxes) * 200, boxes)
    after = model(global_feature, roi, boxes, mask)
    torch.testing.assert_close(after, before)
    # ...while a valid node does change it.
    roi[0, 0, 0] += 1.0
    mask[0, 0, 0] = True
    assert not torch.allclose(model(global_feature, roi, boxes, mask)[0], before[0])


def test_box_geometry_makes_the_similarity_head_see_the_boxes():
    global_feature, roi, boxes, mask = _inputs()
    moved = boxes + 10.0
    torch.manual_seed(0)
    plain = build_head("similarity", 32, 5, hidden=16).eval()
    torch.testing.assert_close(
        plain(global_feature, roi, moved, mask), plain(global_feature, roi, boxes, mask)
    )
    torch.manual_seed(0)
    geometric = build_head("similarity", 32, 5, hidden=16, box_geometry=True).eval()
    assert not torch.allclose(
        geometric(global_feature, roi, moved, mask), geometric(global_feature, roi, boxes, mask)
    )


def test_spatiotemporal_head_sees_the_direction_of_time():
    # Reversing the frames swaps the forward and backward graphs, which have separate weights.
    torch.manual_seed(0)
    model = build_head("spatiotemporal", 32, 5, hidden=16).eval()
    global_feature, roi, boxes, mask = _inputs()
    mask[:] = True
    forward = model(global_feature, roi, boxes, mask)
    reversed_ = model(global_feature, roi.flip(1), boxes.flip(1), mask.flip(1))
    assert not torch.allclose(forward, reversed_)


def test_the_joint_head_sums_its_two_branches_at_the_last_layer():
    """§3, "Combining Multiple Graphs": Z = Z_similarity + Z_spatiotemporal (a sum, not a mean),
    then the node average beside the global feature."""
    torch.manual_seed(0)
    model = build_head("joint", in_channels=32, num_classes=5, hidden=16).eval()
    global_feature, roi, boxes, mask = _inputs()
    outputs, fused = [], []
    for branch in model.branches:
        branch.register_forward_hook(lambda module, args, out: outputs.append(out))
    model.classifier.register_forward_hook(lambda module, args, out: fused.append(args[0]))
    with torch.no_grad():
        model(global_feature, roi, boxes, mask)
    nodes = RegionNodes.from_boxes(boxes, mask)
    counts = nodes.mask.sum(dim=1, keepdim=True).clamp_min(1)
    expected = (outputs[0] + outputs[1]).sum(dim=1) / counts
    torch.testing.assert_close(fused[0][:, :16], expected)
    assert not torch.allclose(expected[0], torch.zeros(16))


def test_the_similarity_projections_have_no_bias():
    """φ(x) = w x and φ'(x) = w' x: a bias b' would add bᵀφ'(x_j), a fixed preference for
    some columns j, to every row of the similarity graph."""
    for name in ("similarity", "joint"):
        branch = build_head(name, in_channels=32, num_classes=5, hidden=16).branches[0]
        assert isinstance(branch, SimilarityBranch)
        assert branch.theta.bias is None and branch.phi.bias is None
        assert branch.theta.weight.shape == branch.phi.weight.shape == (16, 16)
