"""What each backbone of ``backbone.arch`` is: its input, its feature map and its weights.

One :class:`BackboneSpec` per architecture, in :data:`BACKBONES`, is the only place these facts
live; the stages derive everything else from it:

- the clip transform: ``mean`` and ``std`` (RGB in 0..255) when ``backbone.mean`` / ``std``
  are null (the default);
- the feature map: ``(B, channels, T / temporal_stride, S / spatial_stride, S /
  spatial_stride)`` for a ``T x S x S`` clip; RoIAlign's spatial scale is
  ``1 / spatial_stride`` and the features shard's ``global``/``roi`` columns have ``channels``
  values;
- the box frames: every :attr:`BackboneSpec.box_every`-th clip frame, one per feature frame
  but at least every second clip frame (the paper's 16 box frames for a 32-frame I3D clip);
  on a map coarser in time, several box frames read the same feature frame.

``frames``, ``crop_size``, ``resize_short`` and ``sampling`` are the input the published
Kinetics-400 weights were evaluated with (the README's table); the config chooses the clip
(``backbone.num_frames``, ``crop_size``, ...), except for a backbone with ``fixed_input``
(MViT: torchvision sizes its positional embeddings and pooling for 16x224 clips).
``kinetics_top1`` is the Kinetics-400 top-1 as the weights' source publishes it.

This module is standard library only: the workflow (``rules/common.smk``) reads it to check
the config before any job runs. The networks are in :mod:`regiongraph.models.backbone`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Input normalisations, per RGB channel, in 0..255 (the sources give them in 0..1).
I3D_MEAN, I3D_STD = (114.75,) * 3, (57.375,) * 3  # video-nonlocal-net MODEL.MEAN / MODEL.STD
KINETICS_MEAN = tuple(255 * m for m in (0.43216, 0.394666, 0.37645))  # torchvision video
KINETICS_STD = tuple(255 * s for s in (0.22803, 0.22145, 0.216989))
PYSLOWFAST_MEAN, PYSLOWFAST_STD = (255 * 0.45,) * 3, (255 * 0.225,) * 3  # MViT, X3D, CSN
IMAGENET_MEAN = tuple(255 * m for m in (0.485, 0.456, 0.406))  # Video Swin
IMAGENET_STD = tuple(255 * s for s in (0.229, 0.224, 0.225))

TORCHVISION = "https://download.pytorch.org/models"
PYTORCHVIDEO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
NONLOCAL = "https://dl.fbaipublicfiles.com/video-nonlocal"


@dataclass(frozen=True)
class BackboneSpec:
    """One ``backbone.arch``: see the module docstring for what follows from each field."""

    name: str
    family: str  # "i3d" (video-nonlocal-net), "torchvision", "pytorchvideo": the weights' format
    frames: int
    crop_size: int
    resize_short: int
    sampling: str  # how the published evaluation samples its clip
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    temporal_stride: int
    spatial_stride: int
    channels: int
    input_conv: str  # the module that sees the input channels (flow: 2 instead of 3)
    head_keys: tuple[str, ...]  # key prefixes of the classifier in the published state dict
    weights_url: str
    kinetics_top1: float
    source: str
    fixed_input: bool = False

    @property
    def box_every(self) -> int:
        """Box frames are every ``box_every``-th clip frame: one per feature frame, at least
        every second clip frame."""
        return min(self.temporal_stride, 2)

    def map_shape(self, num_frames: int, crop_size: int) -> tuple[int, int, int, int]:
        """``(C, T', H', W')`` of the map of a ``num_frames x crop_size x crop_size`` clip."""
        side = crop_size // self.spatial_stride
        return self.channels, num_frames // self.temporal_stride, side, side


def _i3d(name: str, weights: str, top1: float) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="i3d", frames=32, crop_size=224, resize_short=256,
        sampling="dense, stride 2", mean=I3D_MEAN, std=I3D_STD, temporal_stride=2,
        spatial_stride=16, channels=2048, input_conv="stem.conv", head_keys=(),
        weights_url=f"{NONLOCAL}/{weights}", kinetics_top1=top1,
        source="video-nonlocal-net (Caffe2 pickle), Wang et al. CVPR 2018",
    )


def _video_resnet(name: str, weights: str, temporal_stride: int, top1: float) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="torchvision", frames=16, crop_size=112, resize_short=128,
        sampling="dense, 16 consecutive frames", mean=KINETICS_MEAN, std=KINETICS_STD,
        temporal_stride=temporal_stride, spatial_stride=16, channels=512, input_conv="stem.0",
        head_keys=("fc.",), weights_url=f"{TORCHVISION}/{weights}", kinetics_top1=top1,
        source="torchvision (Tran et al. CVPR 2018)",
    )


def _swin3d(name: str, weights: str, channels: int, top1: float) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="torchvision", frames=32, crop_size=224, resize_short=256,
        sampling="dense, 32 frames", mean=IMAGENET_MEAN, std=IMAGENET_STD, temporal_stride=2,
        spatial_stride=32, channels=channels, input_conv="patch_embed.proj",
        head_keys=("head.",), weights_url=f"{TORCHVISION}/{weights}", kinetics_top1=top1,
        source="torchvision (Liu et al. CVPR 2022, Video Swin)",
    )


def _mvit(name: str, weights: str, top1: float) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="torchvision", frames=16, crop_size=224, resize_short=256,
        sampling="dense, 16 frames", mean=PYSLOWFAST_MEAN, std=PYSLOWFAST_STD,
        temporal_stride=2, spatial_stride=32, channels=768, input_conv="conv_proj",
        head_keys=("head.",), weights_url=f"{TORCHVISION}/{weights}", kinetics_top1=top1,
        source="torchvision (Fan et al. ICCV 2021; Li et al. CVPR 2022)", fixed_input=True,
    )


def _x3d(name: str, weights: str, frames: int, crop: int, resize: int, top1: float) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="pytorchvideo", frames=frames, crop_size=crop, resize_short=resize,
        sampling=f"dense, {frames} frames", mean=PYSLOWFAST_MEAN, std=PYSLOWFAST_STD,
        temporal_stride=1, spatial_stride=32, channels=432, input_conv="stem.conv_xy",
        head_keys=("blocks.5.pool.post_conv.", "blocks.5.proj."),
        weights_url=f"{PYTORCHVIDEO}/{weights}", kinetics_top1=top1,
        source="pytorchvideo (Feichtenhofer CVPR 2020)",
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _i3d("i3d_r50", "i3d_baseline_32x2_IN_pretrain_400k.pkl", 73.6),
        _i3d("i3d_nl_r50", "i3d_nonlocal_32x2_IN_pretrain_400k.pkl", 74.9),
        _video_resnet("r3d_18", "r3d_18-b3b3357e.pth", 8, 63.200),
        _video_resnet("mc3_18", "mc3_18-a90a0ba3.pth", 1, 63.960),
        _video_resnet("r2plus1d_18", "r2plus1d_18-91a641e6.pth", 8, 67.463),
        BackboneSpec(
            name="s3d", family="torchvision", frames=128, crop_size=224, resize_short=256,
            sampling="dense, 128 frames", mean=KINETICS_MEAN, std=KINETICS_STD,
            temporal_stride=8, spatial_stride=32, channels=1024, input_conv="features.0.0.0",
            head_keys=("classifier.",), weights_url=f"{TORCHVISION}/s3d-d76dad2f.pth",
            kinetics_top1=68.368, source="torchvision (Xie et al. ECCV 2018)",
        ),
        _mvit("mvit_v1_b", "mvit_v1_b-dbeb1030.pth", 78.477),
        _mvit("mvit_v2_s", "mvit_v2_s-ae3be167.pth", 80.757),
        _swin3d("swin3d_t", "swin3d_t-7615ae03.pth", 768, 77.715),
        _swin3d("swin3d_s", "swin3d_s-da41c237.pth", 768, 79.521),
        _swin3d("swin3d_b", "swin3d_b_1k-24f7c7c6.pth", 1024, 79.427),
        _x3d("x3d_s", "X3D_S.pyth", 13, 160, 182, 73.33),
        _x3d("x3d_m", "X3D_M.pyth", 16, 224, 256, 75.94),
        BackboneSpec(
            name="csn_r101", family="pytorchvideo", frames=32, crop_size=224, resize_short=256,
            sampling="dense, stride 2", mean=PYSLOWFAST_MEAN, std=PYSLOWFAST_STD,
            temporal_stride=8, spatial_stride=32, channels=2048, input_conv="stem.conv",
            head_keys=("blocks.5.proj.",), weights_url=f"{PYTORCHVIDEO}/CSN_32x2_R101.pyth",
            kinetics_top1=77.0, source="pytorchvideo (Tran et al. ICCV 2019, ir-CSN)",
        ),
    )
}
ARCHS = tuple(BACKBONES)
# The I3D knobs; other backbones have one fixed set of strides and widths.
I3D_KNOBS = {"conv1_temporal_stride": 1, "pool1_temporal": 1, "res5_stride": 1, "width_per_group": 64}


def backbone_spec(arch: str) -> BackboneSpec:
    """The spec of ``backbone.arch``; an unknown name (or a model whose output is pooled
    tokens without a spatial map, such as an image ViT) names the supported ones."""
    if arch not in BACKBONES:
        raise ValueError(
            f"backbone.arch: {arch!r} is not a supported backbone; the region features need a "
            f"spatio-temporal feature map at the end, which these give: {', '.join(ARCHS)}"
        )
    return BACKBONES[arch]


def i3d_strides(spec: BackboneSpec, knobs: dict) -> tuple[int, int]:
    """``(temporal, spatial)`` strides of the map with the I3D knobs of the config applied
    (conv1 and pool1 temporal strides multiply time, res5's stride space)."""
    if spec.family != "i3d":
        return spec.temporal_stride, spec.spatial_stride
    temporal = spec.temporal_stride * knobs.get("conv1_temporal_stride", 1) * knobs.get("pool1_temporal", 1)
    return temporal, spec.spatial_stride * knobs.get("res5_stride", 1)


def arch_problems(backbone: dict) -> list[str]:
    """What in the config's ``backbone`` section does not fit its ``arch`` (one line each)."""
    spec = backbone_spec(backbone["arch"])
    problems = []
    if backbone["crop_size"] > backbone.get("resize_short", backbone["crop_size"]):
        problems.append(
            f"backbone.crop_size ({backbone['crop_size']}) must not exceed "
            f"backbone.resize_short ({backbone['resize_short']})"
        )
    if spec.family != "i3d":
        for key, default in I3D_KNOBS.items():
            if backbone.get(key, default) != default:
                problems.append(
                    f"backbone.{key} ({backbone[key]}) applies to the I3D archs only; set it to "
                    f"{default} (its default) for {spec.name}"
                )
    if backbone["num_frames"] % spec.box_every:
        problems.append(
            f"backbone.num_frames ({backbone['num_frames']}) must be a multiple of "
            f"{spec.box_every} for {spec.name} (box frames are every {spec.box_every}-th frame)"
        )
    temporal, _ = i3d_strides(spec, backbone)
    if backbone["num_frames"] < temporal:
        problems.append(
            f"backbone.num_frames ({backbone['num_frames']}) is shorter than {spec.name}'s "
            f"temporal stride ({temporal}): the map would have no frames"
        )
    size = (backbone["num_frames"], backbone["crop_size"])
    if spec.fixed_input and size != (spec.frames, spec.crop_size):
        problems.append(
            f"backbone.num_frames x crop_size ({size[0]} x {size[1]}) must be "
            f"{spec.frames} x {spec.crop_size} for {spec.name} (torchvision sizes its positional "
            "embeddings for that input)"
        )
    return problems
