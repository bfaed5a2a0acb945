"""The parameters of OpenCV's dual TV-L1 optical flow, with OpenCV's defaults.

The names follow the config section ``flow.tvl1`` (``lambda`` there is ``lambda_`` here, a
Python keyword); the defaults are those of ``cv2.optflow.DualTVL1OpticalFlow_create`` and of
the ``OpticalFlowDual_TVL1`` constructor in opencv_contrib ``modules/optflow/src/tvl1flow.cpp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# cv::medianBlur accepts only these apertures on float images; 1 turns the filter off.
MEDIAN_APERTURES = (1, 3, 5)
# implementations of the torch backend (flow.kernel); torch_tvl1.resolve_kernel picks one
KERNELS = ("auto", "triton", "eager")


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"flow.kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


@dataclass(frozen=True)
class TVL1Params:
    """Dual TV-L1 parameters (Zach, Pock & Bischof 2007; Sánchez Pérez et al., IPOL 2013)."""

    tau: float = 0.25  # time step of the dual (numerical) scheme
    lambda_: float = 0.15  # weight of the data term against the smoothness term
    theta: float = 0.3  # coupling of the two variables u and v
    nscales: int = 5  # pyramid levels (fewer when a level would be under 16 px)
    warps: int = 5  # warpings of the second image per level
    epsilon: float = 0.01  # stop a warp once the mean squared update is under epsilon**2
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8  # size ratio of consecutive pyramid levels
    gamma: float = 0.0  # weight of the illumination term (0: plain brightness constancy)
    median_filtering: int = 5  # median aperture on the flow between outer iterations

    def __post_init__(self) -> None:
        positive = ("tau", "lambda_", "theta")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"flow.tvl1.{_config_name(name)} must be > 0, got {getattr(self, name)!r}"
                )
        counts = ("nscales", "warps", "inner_iterations", "outer_iterations")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"flow.tvl1.{name} must be an integer >= 1, got {value!r}")
        if not 0 < self.scale_step < 1:
            raise ValueError(f"flow.tvl1.scale_step must be in (0, 1), got {self.scale_step!r}")
        if self.epsilon < 0:
            raise ValueError(f"flow.tvl1.epsilon must be >= 0, got {self.epsilon!r}")
        if self.gamma < 0:
            raise ValueError(f"flow.tvl1.gamma must be >= 0, got {self.gamma!r}")
        if self.median_filtering not in MEDIAN_APERTURES:
            raise ValueError(
                f"flow.tvl1.median_filtering must be one of {MEDIAN_APERTURES} "
                f"(OpenCV's median filter on float images), got {self.median_filtering!r}"
            )

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> TVL1Params:
        """Build from a ``flow.tvl1`` mapping; missing keys take OpenCV's defaults."""
        values = dict(values or {})
        known = {_config_name(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"flow.tvl1: unknown parameter(s) {unknown}; known: {sorted(known)}")
        kwargs = {known[key]: value for key, value in values.items()}
        for f in fields(cls):
            if f.name in kwargs and f.type in ("float", float):
                kwargs[f.name] = float(kwargs[f.name])
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """The ``flow.tvl1`` mapping (config key names), e.g. for shard settings."""
        return {_config_name(key): value for key, value in asdict(self).items()}


def _config_name(name: str) -> str:
    return "lambda" if name == "lambda_" else name
