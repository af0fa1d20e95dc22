"""Rosbag2 replay evaluation with the `rosbags` library: read, run, score, write.

bagio (reading and writing rosbag2 sqlite3/MCAP, salvaging damaged bags), run (the replay
loop over the node's SegmentationPipeline, `all` and `realtime` modes), report
(report.json, report.md, latency.png, montage.png), session (one replay from
bag to report, shared by cli, compare and demo), cli (`swiftseg-replay`), synthbag (a
synthetic camera bag with ground truth) and demo (`swiftseg-demo`). Import the submodules
directly; this package module imports nothing, so that importing one stays light.
"""
