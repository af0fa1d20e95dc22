"""swiftseg-soak: the node's pipeline for minutes or hours against a synthetic camera that
misbehaves on a schedule, with memory and latency sampled and every frame accounted for.

`cli` (options, exit status), `camera` (the synthetic frames), `faults` (what goes wrong
and when), `targets` (the node under rclpy in-process, or the pipeline without ROS),
`run` (the loop), `record` (samples, per-window figures, the verdict), `plot` (soak.png).
"""
