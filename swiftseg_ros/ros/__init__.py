"""The ROS 2 layer: the rclpy node (node.py) over ROS-free parts tested without ROS 2.

conversions (Image / CompressedImage <-> numpy), frames (the latest-frame policy),
diagnostics (status content) and params (the parameter definitions) never import rclpy:
the node and the replay evaluator share them. Import the submodules directly; this
package module imports nothing so that `import swiftseg_ros.ros.params` stays light.
"""
