"""Median selection networks: the compare-exchanges that find the median of a window.

Both TV-L1 ports filter the flow with a median (OpenCV's ``medianBlur`` between outer
iterations). Instead of sorting each pixel's window they run a selection network: Batcher's
odd-even merge sort, pruned to the compare-exchanges that feed the middle rank (113 for the 25
values of a 5x5 window). :func:`selection_network` serves the eager PyTorch port
(:func:`regiongraph.flow.torch_tvl1.median_blur`); :func:`median_network_source` writes the same
network as Triton code for the fused kernel, which cannot loop over a Python list.
"""

from __future__ import annotations

import functools


def _batcher_comparators(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sorting network for ``n`` (a power of two) inputs."""
    comparators = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return comparators


@functools.lru_cache
def selection_network(n: int, rank: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Compare-exchanges that put the ``rank``-th smallest of ``n`` values at ``rank``.

    Batcher's network for the next power of two, without the comparators that touch the
    padding (padding with +inf never moves below ``n``), pruned backwards to those that feed
    position ``rank``; each entry says whether its min and its max are still needed.
    113 comparators select the median of 25.
    """
    size = 1 << max(0, (n - 1).bit_length())
    network = [(i, j) for i, j in _batcher_comparators(size) if j < n]
    needed, kept = {rank}, []
    for i, j in reversed(network):
        if i in needed or j in needed:
            kept.append((i, j, i in needed, j in needed))
            needed |= {i, j}
    return tuple(reversed(kept))


def median_network_source() -> str:
    """The source of ``_window_median3`` and ``_window_median5`` of :mod:`regiongraph.flow.triton_tvl1`
    (pasted there; a test checks that the paste is current).

    Each loads its ``k x k`` window (replicated border) and runs the selection network of
    :func:`selection_network`: only the compare-exchanges that
    feed the middle rank, as elementwise minima and maxima (113 for 25 values). Generated
    because a Triton kernel cannot loop over a Python list of comparators.
    """
    parts = []
    for k in (3, 5):
        r = k // 2
        lines = [
            f"def _window_median{k}(ptr, y, x, H, W, valid, CACHE: tl.constexpr):",
            f'    """Median of the {k}x{k} window around each pixel, replicated border (generated)."""',
        ]
        for d in range(k):
            shift = d - r
            for name, coord, limit in (("r", "y", "H"), ("c", "x", "W")):
                if shift < 0:
                    expr = f"tl.maximum({coord} - {-shift}, 0)"
                elif shift > 0:
                    expr = f"tl.minimum({coord} + {shift}, {limit} - 1)"
                else:
                    expr = coord
                lines.append(f"    {name}{d} = {expr}" + (" * W" if name == "r" else ""))
        for i in range(k * k):
            lines.append(
                f"    v{i} = tl.load(ptr + r{i // k} + c{i % k}, mask=valid, other=0.0, cache_modifier=CACHE)"
            )
        for i, j, need_min, need_max in selection_network(k * k, k * k // 2):
            if need_min and need_max:
                lines.append(f"    lo = tl.minimum(v{i}, v{j})")
                lines.append(f"    v{j} = tl.maximum(v{i}, v{j})")
                lines.append(f"    v{i} = lo")
            elif need_min:
                lines.append(f"    v{i} = tl.minimum(v{i}, v{j})")
            else:
                lines.append(f"    v{j} = tl.maximum(v{i}, v{j})")
        lines.append(f"    return v{k * k // 2}")
        parts.append("\n".join(lines))
    return "\n\n\n".join(parts) + "\n"
