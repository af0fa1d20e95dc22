"""swiftseg_ros: real-time semantic segmentation (SwiftNet, Fast-SCNN) for ROS 2 robots."""

__version__ = "0.1.0"
