"""The overlay video of a replay: each frame with the prediction blended over it and a
class legend under it, at the input's frame rate.

Written as MP4 with the VP9 codec (OpenCV's fourcc `vp09`): browsers play it (Chrome,
Firefox, Edge, Safari 14.1+), and the FFmpeg inside the opencv-python wheels encodes it,
so no extra package is needed. Their FFmpeg has no H.264 encoder (`avc1` does not open);
where VP9 is missing too (a system OpenCV), the video falls back to MPEG-4 Part 2
(`mp4v`), which VLC and ffplay play but browsers do not, and says so.

In realtime mode a dropped frame shows the last published overlay again (what a viewer of
the node's ~/overlay sees), so the video keeps the recording's timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from swiftseg_ros.montage import OVERLAY_ALPHA, blend, colour_ids, legend_strip

MIN_WIDTH = 640
CODECS = (("vp09", "VP9, plays in browsers"),
          ("mp4v", "MPEG-4 Part 2: VLC or ffplay play it, browsers do not"))


class OverlayVideo:
    """A frame sink for `ReplayOptions.frame_sink` that writes the overlay video.

    OpenCV writes into a temporary folder under an ASCII name (its writer takes a path
    only and would crash on one that is not UTF-8); `close` moves the finished file to
    `path`, so an interrupted run leaves no half-written video.
    """

    def __init__(self, path: Path, fps: float, class_names, palette,
                 alpha: float = OVERLAY_ALPHA):
        self.path, self.fps, self.alpha = Path(path), float(fps), alpha
        self.palette = np.asarray(palette, np.uint8)
        self.class_names = list(class_names)
        self.codec: str | None = None
        self.frames = 0
        self._writer = None
        self._folder = None
        self._last: np.ndarray | None = None
        self._last_index = -1
        self._legend: np.ndarray | None = None

    def __call__(self, record, image: np.ndarray, label: np.ndarray, confidence) -> None:
        colours = colour_ids(label, self.palette)
        frame = blend(image, colours, self.alpha)
        if frame.shape[1] < MIN_WIDTH:  # a small frame: enlarged so that the legend fits
            factor = -(-MIN_WIDTH // frame.shape[1])
            frame = cv2.resize(frame, None, fx=factor, fy=factor,
                               interpolation=cv2.INTER_NEAREST)
        if self._legend is None:
            entries = list(zip(self.class_names, self.palette.tolist(), strict=False))
            self._legend = legend_strip(entries, frame.shape[1])
        frame = np.concatenate([frame, self._legend[:, :frame.shape[1]]])
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        elif frame.shape != self._last.shape:
            frame = cv2.resize(frame, (self._last.shape[1], self._last.shape[0]))
        # the frames between two published ones (dropped in realtime mode) hold the last
        for _ in range(record.index - self._last_index - 1):
            if self._last is not None:
                self._write(self._last)
        self._write(frame)
        self._last, self._last_index = frame, record.index

    def _open(self, width: int, height: int) -> None:
        self._folder = tempfile.mkdtemp(prefix="swiftseg-video-")
        target = os.path.join(self._folder, "overlay.mp4")
        # even sides: the codecs' chroma subsampling needs them
        self._size = (width - width % 2, height - height % 2)
        for fourcc, note in CODECS:
            writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                     self._size)
            if writer.isOpened():
                self._writer, self.codec, self.codec_note = writer, fourcc, note
                return
            writer.release()
        shutil.rmtree(self._folder, ignore_errors=True)
        raise OSError("OpenCV can write neither a VP9 nor an MPEG-4 video here (its FFmpeg "
                      "lacks both encoders)")

    def _write(self, rgb: np.ndarray) -> None:
        frame = rgb[:self._size[1], :self._size[0]]
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, keep: bool = True) -> bool:
        """Finish the video and move it to `path` (`keep`), or drop it; True when written."""
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        try:
            if keep and self.frames:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(os.path.join(self._folder, "overlay.mp4"), self.path)
                return True
            return False
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
