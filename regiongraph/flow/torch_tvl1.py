"""A batched PyTorch port of OpenCV's dual TV-L1 optical flow (CPU path of ``calc``).

It computes the function of opencv_contrib ``modules/optflow/src/tvl1flow.cpp``
(``OpticalFlowDual_TVL1::calc`` and ``procOneScale``), the dual TV-L1 of Zach, Pock and
Bischof (2007) in the form of Sánchez Pérez, Meinhardt-Llopis and Facciolo (IPOL 2013), for
many frame pairs of one size at once, on CUDA when available and on the CPU otherwise:

* pyramid: each level is ``cv::resize`` of the previous one by ``scale_step`` with
  ``INTER_LINEAR`` (size rounded, half-pixel centres, edge samples clamped), stopping before a
  level under 16 px; the flow starts at zero on the coarsest level and is resized up to the
  next level (``INTER_LINEAR`` to the exact size) and multiplied by ``1 / scale_step``;
* per level: centred gradients of the second image (one-sided halves at the borders), then
  ``warps`` times: ``cv::remap`` of the image and its gradients by the flow with
  ``INTER_CUBIC`` (Keys' kernel, a = -0.75, at the exact float coordinates as OpenCV 5 does,
  zero outside the image: ``BORDER_CONSTANT``), the linearised
  brightness residual, and up to ``outer_iterations`` x ``inner_iterations`` iterations of
  thresholding (TH), divergence of the dual variable, the primal update and the dual
  projection, with a ``median_filtering`` median (replicated border) on the flow before each
  outer iteration (on u1 and u2: the illumination channel u3 is not filtered); the dual
  variables start at zero per level and carry over warps;
* stopping rule: a warp ends for a pair once the sum over its pixels of the squared flow
  update falls to ``epsilon**2 * area``. Pairs of a batch stop separately: a boolean mask
  freezes the finished ones (the iteration that meets the rule still updates the dual
  variables, as OpenCV's loop does); every few iterations the host looks at the mask and
  compacts the working set to the pairs still running (see :func:`_run_warp`).

``gamma > 0`` (the illumination term) adds a third flow channel ``u3`` exactly as OpenCV does.

All of one inner iteration sits in :func:`inner_iterations`, whose state is a few
``(B, C, H, W)`` tensors and whose only output to the host is nothing: it is the function a
fused kernel (Triton, or CUDA graphs around it) would replace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from regiongraph.flow.median_network import selection_network
from regiongraph.flow.params import TVL1Params, check_kernel
from regiongraph.flow.quantize import check_bound
from regiongraph.gpus import resolve_device

CUBIC_A = -0.75  # the Keys kernel parameter of OpenCV's interpolateCubic
FLT_EPSILON = float(np.finfo(np.float32).eps)
MIN_LEVEL_SIZE = 16  # OpenCV stops the pyramid before a level narrower or lower than this
# threshold step where |grad I1|^2 <= FLT_EPSILON: OpenCV moves by +-lambda*theta on the sign
# of rho; multiplying by a huge inverse and clamping gives the same step without a branch
_HUGE = 1e30


# ---------------------------------------------------------------------------------------------
# resizing and warping as OpenCV does them


def _opencv_size(n: int, factor: float) -> int:
    """``saturate_cast<int>(n * factor)`` of ``cv::resize`` with ``dsize`` empty: round half even."""
    return int(round(n * factor))


def _linear_taps(n_out: int, n_in: int, scale: float, device: torch.device):
    """Source indices and weights of ``cv::resize`` ``INTER_LINEAR`` along one axis.

    ``scale`` is source pixels per destination pixel. OpenCV computes the source coordinate
    ``(d + 0.5) * scale - 0.5`` in double, casts it to float, and clamps at both edges by
    putting the whole weight on the edge pixel.
    """
    d = np.arange(n_out, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    low = s < 0
    s[low], frac[low] = 0, 0
    high = s >= n_in - 1
    s[high], frac[high] = n_in - 1, 0
    s1 = np.minimum(s + 1, n_in - 1)
    w1 = torch.from_numpy(frac).to(device)
    w0 = torch.from_numpy((np.float32(1) - frac).astype(np.float32)).to(device)
    return torch.from_numpy(s).to(device), torch.from_numpy(s1).to(device), w0, w1


def resize_linear(
    x: torch.Tensor, out_h: int, out_w: int, scale_y: float, scale_x: float
) -> torch.Tensor:
    """``cv::resize(..., INTER_LINEAR)`` of ``(B, C, H, W)``, horizontal pass then vertical."""
    _, _, h, w = x.shape
    x0, x1, wx0, wx1 = _linear_taps(out_w, w, scale_x, x.device)
    y0, y1, wy0, wy1 = _linear_taps(out_h, h, scale_y, x.device)
    rows = x.index_select(3, x0) * wx0 + x.index_select(3, x1) * wx1
    return rows.index_select(2, y0) * wy0[:, None] + rows.index_select(2, y1) * wy1[:, None]


def pyramid_down(x: torch.Tensor, step: float) -> torch.Tensor:
    """One pyramid level: ``cv::resize(src, dst, Size(), step, step, INTER_LINEAR)``."""
    h, w = x.shape[-2:]
    return resize_linear(x, _opencv_size(h, step), _opencv_size(w, step), 1.0 / step, 1.0 / step)


def resize_to(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """``cv::resize(src, dst, Size(out_w, out_h), 0, 0, INTER_LINEAR)``."""
    h, w = x.shape[-2:]
    return resize_linear(x, out_h, out_w, 1.0 / (out_h / h), 1.0 / (out_w / w))


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``interpolateCubic`` (Keys, a = -0.75) at fractions ``t``: ``(..., 4)``."""
    a = CUBIC_A
    t1 = t + 1.0
    s = 1.0 - t
    c0 = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * s - (a + 3)) * s * s + 1
    return torch.stack([c0, c1, c2, 1.0 - c0 - c1 - c2], dim=-1)


def remap_cubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``cv::remap(img, x + u1, y + u2, INTER_CUBIC, BORDER_CONSTANT 0)`` of ``(B, C, H, W)``.

    ``flow`` is ``(B, 2, H, W)``. OpenCV 5 samples float maps at their exact coordinates
    (OpenCV 4 rounded them to 1/32 px first); the 4x4 neighbourhood starts one pixel up-left
    of the integer part, and taps outside the image read 0.
    """
    b, c, h, w = images.shape
    device = images.device
    # far-out coordinates read zero either way; the clamp keeps the int conversion finite
    x = (flow[:, 0] + torch.arange(w, device=device, dtype=torch.float32)).clamp_(-4096, 4096)
    y = (flow[:, 1] + torch.arange(h, device=device, dtype=torch.float32)[:, None]).clamp_(
        -4096, 4096
    )
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    wx = cubic_weights(x - x0)  # (B, H, W, 4)
    wy = cubic_weights(y - y0)
    ix = x0.to(torch.int64) - 1  # left column of the 4x4 taps
    iy = y0.to(torch.int64) - 1
    flat = images.reshape(b, c, h * w)
    cols = []
    for k in range(4):
        xk = ix + k
        valid = (xk >= 0) & (xk < w)
        cols.append((xk.clamp(0, w - 1), torch.where(valid, wx[..., k], 0.0)))
    out = torch.zeros_like(images)
    for j in range(4):
        yj = iy + j
        valid = (yj >= 0) & (yj < h)
        row_base = yj.clamp(0, h - 1) * w
        row = torch.zeros_like(images)
        for xk, weight in cols:
            index = (row_base + xk).reshape(b, 1, h * w).expand(b, c, h * w)
            row += flat.gather(2, index).view(b, c, h, w) * weight[:, None]
        out += row * torch.where(valid, wy[..., j], 0.0)[:, None]
    return out


def centred_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's ``centeredGradient``: half central differences, one-sided halves at borders.

    The border rule ``0.5 * (src[1] - src[0])`` is the central difference of the image with
    its edge replicated.
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def median_blur(u: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv::medianBlur`` of float ``(B, C, H, W)`` (aperture 3 or 5, replicated border).

    A min/max selection network over the ``ksize**2`` shifted images, as OpenCV's
    ``medianBlur_SortNet`` does for float images (a different network; the median is the
    same value): elementwise ops only, no per-pixel sort.
    """
    r = ksize // 2
    h, w = u.shape[-2:]
    padded = F.pad(u, (r, r, r, r), mode="replicate")
    # own buffers, updated in place: no allocation per compare-exchange
    values = [padded[..., dy : dy + h, dx : dx + w].contiguous() for dy in range(ksize) for dx in range(ksize)]
    spare = torch.empty_like(u)
    middle = ksize * ksize // 2
    for i, j, need_min, need_max in selection_network(ksize * ksize, middle):
        if need_min and need_max:
            torch.minimum(values[i], values[j], out=spare)
            torch.maximum(values[i], values[j], out=values[j])
            values[i], spare = spare, values[i]
        elif need_min:
            torch.minimum(values[i], values[j], out=values[i])
        else:
            torch.maximum(values[i], values[j], out=values[j])
    return values[middle]


# ---------------------------------------------------------------------------------------------
# the iterations


@dataclass
class WarpState:
    """What the inner iterations of one warp read (fixed) and update (``u``, ``px``, ``py``).

    The scratch tensors are allocated once per working set, so an iteration allocates
    nothing on the unmasked path.
    """

    u: torch.Tensor  # (B, C, H, W) flow (C = 2, or 3 with the illumination term)
    px: torch.Tensor  # (B, C, H, W) dual variable, x component per flow channel
    py: torch.Tensor  # (B, C, H, W) dual variable, y component
    g: torch.Tensor  # (B, C, H, W) (I1wx, I1wy[, gamma]): the data term's gradient
    rho_c: torch.Tensor  # (B, 1, H, W) I1w - I1wx u1 - I1wy u2 - I0 at the warp's start
    neg_inv_grad: torch.Tensor  # (B, 1, H, W) -1 / |grad I1w|^2; -huge where that is <= FLT_EPSILON
    active: torch.Tensor  # (B,) bool: pairs whose warp has not met the stopping rule

    def __post_init__(self) -> None:
        self.rho = torch.empty_like(self.rho_c)
        self.delta = torch.empty_like(self.u)
        self.ux = torch.zeros_like(self.u)  # the last column stays 0 (forwardGradient)
        self.uy = torch.zeros_like(self.u)  # the last row stays 0
        self.norm = torch.empty_like(self.u)

    def select(self, keep: torch.Tensor) -> WarpState:
        return WarpState(*(getattr(self, f).index_select(0, keep) for f in _STATE_FIELDS))


_STATE_FIELDS = ("u", "px", "py", "g", "rho_c", "neg_inv_grad", "active")


def divergence(px: torch.Tensor, py: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV's ``divergence``: backward differences, the missing neighbour read as 0."""
    div = torch.add(px, py, out=out)
    div[..., :, 1:] -= px[..., :, :-1]
    div[..., 1:, :] -= py[..., :-1, :]
    return div


def forward_gradient(u: torch.Tensor, ux: torch.Tensor | None = None, uy: torch.Tensor | None = None):
    """OpenCV's ``forwardGradient``: forward differences, 0 on the last column / row.

    ``ux``/``uy``, when given, must hold zeros in the last column / row (they are not written).
    """
    ux = torch.zeros_like(u) if ux is None else ux
    uy = torch.zeros_like(u) if uy is None else uy
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=ux[..., :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=uy[..., :-1, :])
    return ux, uy


def inner_iterations(
    state: WarpState,
    n: int,
    lambda_theta: float,
    theta: float,
    tau_theta: float,
    stop: float,
    masked: bool = True,
) -> None:
    """Run ``n`` TV-L1 iterations on ``state`` in place; pairs stop on the epsilon rule.

    One iteration is OpenCV's ``estimateV`` (thresholding), ``divergence``, ``estimateU``
    (which measures the squared update, the stopping error), ``forwardGradient`` and
    ``estimateDualVariables``. ``masked=False`` promises that every pair is active for all
    ``n`` iterations (the caller knows: one iteration, all active), which saves the masking.
    No host synchronisation happens here: this is the function a fused kernel replaces.
    """
    u, px, py, g = state.u, state.px, state.py, state.g
    rho, delta, ux, uy, norm = state.rho, state.delta, state.ux, state.uy, state.norm
    channels = u.shape[1]
    for _ in range(n):
        # TH: rho(u) = rho_c + <(I1wx, I1wy, gamma), u>; step = clamp(-rho / |grad|^2, +-l*t)
        torch.addcmul(state.rho_c, g[:, 0:1], u[:, 0:1], out=rho)
        for ch in range(1, channels):
            rho.addcmul_(g[:, ch : ch + 1], u[:, ch : ch + 1])
        step = rho.mul_(state.neg_inv_grad).clamp_(-lambda_theta, lambda_theta)
        # u_new - u = (v - u) + theta div p = step * grad + theta div p
        divergence(px, py, out=delta).mul_(theta).addcmul_(step, g)
        error = torch.linalg.vector_norm(delta.flatten(1), dim=1).square_()
        if masked:
            delta.mul_(state.active.view(-1, 1, 1, 1))  # stopped pairs do not move
        u.add_(delta)
        # dual projection: p = (p + tau/theta D u) / (1 + tau/theta |D u|)
        forward_gradient(u, ux, uy)
        torch.hypot(ux, uy, out=norm).mul_(tau_theta).add_(1.0)
        if masked:  # the same arithmetic as below, kept only where the pair is active
            active = state.active.view(-1, 1, 1, 1)
            torch.where(active, torch.add(px, ux, alpha=tau_theta).div_(norm), px, out=px)
            torch.where(active, torch.add(py, uy, alpha=tau_theta).div_(norm), py, out=py)
        else:
            px.add_(ux, alpha=tau_theta).div_(norm)
            py.add_(uy, alpha=tau_theta).div_(norm)
        state.active &= error > stop


def _one_scale(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    params: TVL1Params,
    check_every: int,
    kernel: str = "eager",
    iterations: torch.Tensor | None = None,
) -> torch.Tensor:
    """``procOneScale``: ``warps`` warpings at one pyramid level; updates and returns ``u``."""
    b, c, h, w = u.shape
    stop = float(np.float32(params.epsilon * params.epsilon * h * w))
    i1x, i1y = centred_gradient(i1)
    sources = torch.cat([i1, i1x, i1y], dim=1)
    if kernel == "triton":
        from regiongraph.flow import triton_tvl1

        return triton_tvl1.solve_level(
            i0.contiguous(),
            sources,
            u,
            warps=params.warps,
            outer_iterations=params.outer_iterations,
            inner_iterations=params.inner_iterations,
            median_filtering=params.median_filtering,
            lambda_theta=params.lambda_ * params.theta,
            theta=params.theta,
            tau_theta=params.tau / params.theta,
            stop=stop,
            iterations=iterations,
        )
    px = torch.zeros_like(u)
    py = torch.zeros_like(u)
    for _ in range(params.warps):
        warped = remap_cubic(sources, u[:, :2])
        i1w, i1wx, i1wy = warped[:, 0:1], warped[:, 1:2], warped[:, 2:3]
        grad = i1wx.square() + i1wy.square()
        rho_c = i1w - i1wx * u[:, 0:1] - i1wy * u[:, 1:2] - i0
        neg_inv_grad = torch.where(grad > FLT_EPSILON, -grad.reciprocal(), -_HUGE)
        parts = [i1wx, i1wy]
        if c == 3:
            parts.append(torch.full_like(i1wx, params.gamma))
        state = WarpState(
            u=u,
            px=px,
            py=py,
            g=torch.cat(parts, dim=1),
            rho_c=rho_c,
            neg_inv_grad=neg_inv_grad,
            active=torch.ones(b, dtype=torch.bool, device=u.device),
        )
        _run_warp(state, params, stop, check_every, compact_any=u.device.type == "cpu")
    return u


def _run_warp(state: WarpState, params: TVL1Params, stop: float, check_every: int, compact_any: bool) -> None:
    """Run one warp on ``state`` (whose ``u``, ``px``, ``py`` are the level's full tensors).

    Every ``check_every`` inner iterations the host reads how many pairs still run (one
    synchronisation on a GPU; free on the CPU): none left ends the warp, as OpenCV's loop
    does per pair. Stopped pairs' results are written back and the rest carry on as a smaller
    batch: as soon as any pair stops (``compact_any``, the CPU's choice: compaction is cheap
    there, and an all-active batch needs no masking), or once half of the working set has.
    """
    full_u, full_px, full_py = state.u, state.px, state.py
    lambda_theta = params.lambda_ * params.theta
    tau_theta = params.tau / params.theta
    work, index = state, None
    all_active = True  # what the host knows about ``work.active``
    for _ in range(params.outer_iterations):
        if params.median_filtering > 1:  # OpenCV filters u1 and u2, not u3
            flow = work.u[:, :2]
            filtered = median_blur(flow, params.median_filtering)
            if all_active:
                flow.copy_(filtered)
            else:
                flow.copy_(torch.where(work.active.view(-1, 1, 1, 1), filtered, flow))
        done = 0
        running = work.active.numel()
        while done < params.inner_iterations and running:
            n = min(check_every, params.inner_iterations - done)
            masked = not (all_active and n == 1)
            inner_iterations(work, n, lambda_theta, params.theta, tau_theta, stop, masked=masked)
            done += n
            running = int(work.active.sum())
            all_active = running == work.active.numel()
            if running and not all_active and (compact_any or running * 2 <= work.active.numel()):
                if index is not None:
                    _scatter(full_u, full_px, full_py, index, work)
                still = work.active.nonzero().squeeze(1)
                index = still if index is None else index.index_select(0, still)
                work = work.select(still)
                all_active = True
        if not running:
            break
    if index is not None:
        _scatter(full_u, full_px, full_py, index, work)


def _scatter(u, px, py, index, work: WarpState) -> None:
    u.index_copy_(0, index, work.u)
    px.index_copy_(0, index, work.px)
    py.index_copy_(0, index, work.py)


def resolve_kernel(kernel: str, device: torch.device, params: TVL1Params) -> str:
    """``auto``: the fused Triton kernel on CUDA when Triton is there and ``gamma == 0``, else
    the eager port. ``triton`` on the CPU runs Triton's interpreter (slow: for testing)."""
    from regiongraph.flow import triton_tvl1

    if check_kernel(kernel) == "auto":
        fused = device.type == "cuda" and triton_tvl1.available() and params.gamma == 0
        return "triton" if fused else "eager"
    if kernel == "triton":
        if not triton_tvl1.available():
            raise ValueError("flow.kernel is 'triton' but the triton package cannot be imported")
        if params.gamma != 0:
            raise ValueError("flow.kernel 'triton' computes gamma == 0 only; use 'eager' or 'auto'")
        if device.type != "cuda" and not triton_tvl1.interpreting():
            raise ValueError(
                f"flow.kernel 'triton' runs on CUDA, not on {device.type} (on the CPU only in "
                "Triton's interpreter, for tests: TRITON_INTERPRET=1); use 'auto' or 'eager'"
            )
    return kernel


@torch.inference_mode()
def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: TVL1Params,
    check_every: int | None = None,
    kernel: str = "auto",
    iterations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dual TV-L1 flow from ``i0`` to ``i1`` (``(B, H, W)``, grey levels 0..255, any device).

    Returns float32 ``(B, 2, H, W)``: (dx, dy) per pixel, as ``DualTVL1OpticalFlow::calc``.
    ``check_every``: inner iterations between looks at which pairs have stopped (default 1
    on the CPU, 10 on a GPU, where each look is a synchronisation); it changes only the work
    done, not the result. ``kernel``: see :func:`resolve_kernel`. ``iterations`` ``(B,)``
    int32 receives each pair's inner iterations over all levels (Triton kernel only).
    """
    kernel = resolve_kernel(kernel, i0.device, params)
    if check_every is None:
        check_every = 1 if i0.device.type == "cpu" else 10
    if i0.shape != i1.shape or i0.ndim != 3:
        raise ValueError(
            f"expected two (B, H, W) image batches of one shape, got {tuple(i0.shape)} and {tuple(i1.shape)}"
        )
    if min(i0.shape[-2:]) < 3:
        raise ValueError(f"frames of {i0.shape[-1]}x{i0.shape[-2]} px are too small for TV-L1")
    i0 = i0.to(torch.float32)[:, None]
    i1 = i1.to(torch.float32)[:, None]
    levels = [(i0, i1)]
    for _ in range(1, params.nscales):
        d0, d1 = (
            pyramid_down(levels[-1][0], params.scale_step),
            pyramid_down(levels[-1][1], params.scale_step),
        )
        if min(d0.shape[-2:]) < MIN_LEVEL_SIZE:
            break
        levels.append((d0, d1))
    channels = 3 if params.gamma != 0 else 2
    b = i0.shape[0]
    u = torch.zeros((b, channels, *levels[-1][0].shape[-2:]), dtype=torch.float32, device=i0.device)
    for s in range(len(levels) - 1, -1, -1):
        u = _one_scale(levels[s][0], levels[s][1], u, params, check_every, kernel, iterations)
        if s == 0:
            break
        u = resize_to(u, *levels[s - 1][0].shape[-2:])
        u[:, :2] *= 1.0 / params.scale_step  # u3 (illumination) is not a displacement
    return u[:, :2].contiguous()


def torch_pairs_flow(
    frames0: np.ndarray | torch.Tensor,
    frames1: np.ndarray | torch.Tensor,
    params: TVL1Params,
    device: torch.device | str = "auto",
    kernel: str = "auto",
    iterations: torch.Tensor | None = None,
    bound: float | None = None,
) -> np.ndarray:
    """Flow of grayscale uint8 pairs ``(B, H, W)`` -> float32 ``(B, H, W, 2)`` (dx, dy).

    With ``bound``, the flow is quantised on the device (as
    :func:`regiongraph.flow.quantize.quantize_flow`, bit for bit) and comes back as uint8:
    a quarter of the bytes to copy to the host.
    """
    device = resolve_device(device)
    i0, i1 = (_on_device(frames, device) for frames in (frames0, frames1))
    flow = tvl1_flow(i0, i1, params, kernel=kernel, iterations=iterations)
    if bound is not None:
        flow = quantize_tensor(flow, bound)
    return flow.permute(0, 2, 3, 1).cpu().numpy()


def _on_device(frames, device: torch.device) -> torch.Tensor:
    """uint8 frames, a numpy array or a tensor already decoded on a device, on ``device``."""
    if isinstance(frames, torch.Tensor):
        return frames.to(device, non_blocking=True)
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)


@torch.inference_mode()
def quantize_tensor(flow: torch.Tensor, bound: float) -> torch.Tensor:
    """``quantize_flow`` on a float32 tensor: the same float32 operations, round half to even."""
    bound = check_bound(bound)
    scale = float(np.float32(255.0 / (2.0 * bound)))  # from the bound as given, as numpy does
    edge = float(np.float32(bound))  # clip and shift by the float32 bound
    scaled = (flow.clamp(-edge, edge) + edge).mul_(scale)
    return scaled.round_().to(torch.uint8)


def torch_video_flow(
    frames: np.ndarray,
    params: TVL1Params,
    device="auto",
    batch_size: int = 64,
    kernel: str = "auto",
) -> np.ndarray:
    """Flow between consecutive grayscale frames ``(T, H, W)`` uint8: ``(T - 1, H, W, 2)``."""
    frames = np.asarray(frames)
    n = frames.shape[0] - 1
    out = np.empty((n, *frames.shape[1:], 2), dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out[start:stop] = torch_pairs_flow(
            frames[start:stop], frames[start + 1 : stop + 1], params, device, kernel
        )
    return out


__all__ = [
    "WarpState",
    "centred_gradient",
    "divergence",
    "forward_gradient",
    "inner_iterations",
    "median_blur",
    "quantize_tensor",
    "pyramid_down",
    "remap_cubic",
    "resize_to",
    "torch_pairs_flow",
    "torch_video_flow",
    "tvl1_flow",
]
