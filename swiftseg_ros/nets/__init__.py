"""The segmentation networks (nn.Modules only; nothing here knows of ROS, devices or files
beyond the ImageNet weights loader).

`build_model(name, num_classes, **options)` builds `swiftnet_rn18`, `swiftnet_mnv2`,
`swiftnet_rn18_pyramid` or `fastscnn`. Every model: `model(x)` gives logits at the
input size, `model.forward_logits(x)` at `model.output_stride`; input sides must be
multiples of `model.size_divisor`; `network_name` and `num_classes` say what it is.
"""

from swiftseg_ros.nets.base import SegmentationNetwork
from swiftseg_ros.nets.complexity import count_macs, count_parameters
from swiftseg_ros.nets.fusion import fuse_conv_bn
from swiftseg_ros.nets.pretrained import EncoderLoadResult, load_imagenet_encoder
from swiftseg_ros.nets.registry import NETWORKS, NetworkInfo, build_model

__all__ = [
    "NETWORKS",
    "EncoderLoadResult",
    "NetworkInfo",
    "SegmentationNetwork",
    "build_model",
    "count_macs",
    "count_parameters",
    "fuse_conv_bn",
    "load_imagenet_encoder",
]
