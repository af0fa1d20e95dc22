"""The picture grids: error maps, confidence columns and legends true to what is drawn."""

import numpy as np
import pytest

from swiftseg_ros.classes import load_class_set
from swiftseg_ros.montage import (
    IGNORED_COLOUR,
    WRONG_COLOUR,
    MontageFrame,
    error_map,
    frame_montage,
)
from swiftseg_ros.replay import compare
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE


def shipped_colours() -> np.ndarray:
    colours = [*PALETTE]
    for name in ("cityscapes", "camvid"):
        colours += list(load_class_set(name).palette)
    return np.asarray(colours, float)


@pytest.mark.parametrize("colour", [WRONG_COLOUR, compare.DISAGREE_COLOUR,
                                    compare.A_RIGHT_COLOUR, compare.B_RIGHT_COLOUR,
                                    compare.BOTH_WRONG_COLOUR])
def test_marking_colours_read_as_no_class(colour):
    distance = np.linalg.norm(shipped_colours() - np.asarray(colour, float), axis=1)
    assert distance.min() >= 80


def test_error_map_marks_wrong_and_ignored_pixels_and_counts_only_scored_ones():
    image = np.full((2, 3, 3), 128, np.uint8)
    truth = np.array([[0, 1, 255], [2, 2, 2]], np.uint8)
    prediction = np.array([[0, 2, 1], [2, 2, 0]], np.uint8)
    shown, wrong = error_map(image, prediction, truth, 255)
    assert wrong == pytest.approx(2 / 5)
    assert tuple(shown[0, 1]) == WRONG_COLOUR and tuple(shown[1, 2]) == WRONG_COLOUR
    assert tuple(shown[0, 2]) == IGNORED_COLOUR
    assert tuple(shown[0, 0]) not in (WRONG_COLOUR, IGNORED_COLOUR)


def test_legend_lists_the_classes_drawn_and_the_marks_used():
    image = np.zeros((32, 64, 3), np.uint8)
    ids = np.zeros((32, 64), np.uint8)  # sky only
    with_truth = frame_montage([MontageFrame("f", image, ids, ids)], class_names=CLASS_NAMES,
                               palette=PALETTE)
    without = frame_montage([MontageFrame("f", image, ids, None, np.full_like(ids, 200))],
                            class_names=CLASS_NAMES, palette=PALETTE)
    legend = with_truth[-30:]  # the legend strip at the bottom

    def has(picture, colour):
        return bool((picture == np.asarray(colour, np.uint8)).all(axis=-1).any())

    assert has(legend, PALETTE[0]) and has(legend, WRONG_COLOUR)
    assert not has(legend, PALETTE[3])  # road is drawn nowhere
    assert with_truth.shape[1] > without.shape[1]  # four columns against three


def test_frames_shown_are_the_lowest_a_second_apart_and_a_low_stretch_evicts_no_other():
    """Replay keeps the lowest frame of each second as a candidate, then shows the lowest
    ones at least a second apart (the case a greedy choice got wrong: frame 6, at 0.6 s,
    replaced by a lower stretch at 1.4-1.6 s although it is a second away from 1.6 s)."""
    from types import SimpleNamespace

    from swiftseg_ros.replay.run import Replay, Sample

    scores = {0: 0.79, 6: 0.755, 13: 0.767, 14: 0.748, 16: 0.724, 20: 0.73, 26: 0.775,
              28: 0.771}
    replay = SimpleNamespace(options=SimpleNamespace(worst_frames=3),
                             records=[SimpleNamespace(arrival=k / 10) for k in range(30)])
    kept = {}
    for index, score in scores.items():
        Replay._keep_lowest(replay, kept, "mean_confidence", score, index,
                            lambda i=index, s=score: Sample(i, None, None, arrival=i / 10,
                                                            mean_confidence=s))
    shown = Replay._spread_lowest(replay, kept, "mean_confidence")
    assert [s.index for s in shown] == [16, 6]
