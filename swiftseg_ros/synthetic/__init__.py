"""Synthetic road scenes with exact labels: the scene generator (scene) and its frames and
datasets (frames, `swiftseg-synth`).

They serve training, the demo, replay and the tests alike, so they live below all of
them and import nothing from trainer/ or replay/.
"""
