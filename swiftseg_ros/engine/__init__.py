"""The inference runtime (no ROS): SegmentationEngine, its config, results and timing."""

from swiftseg_ros.engine.config import OUTPUTS, EngineConfig
from swiftseg_ros.engine.engine import SegmentationEngine, SegResult
from swiftseg_ros.engine.frames import PIXEL_FORMATS, FrameError
from swiftseg_ros.engine.palette import colorize
from swiftseg_ros.engine.timing import STAGES

__all__ = [
    "OUTPUTS",
    "PIXEL_FORMATS",
    "STAGES",
    "EngineConfig",
    "FrameError",
    "SegResult",
    "SegmentationEngine",
    "colorize",
]
