"""The measured choices cached on disk: a second prepare of the same setup builds only the
stored winner; bad entries and folders cost a measurement and a warning, never the engine."""

import importlib.util
import json
import logging
import sys

import numpy as np
import pytest
import torch

from swiftseg_ros.engine import EngineConfig, SegmentationEngine
from swiftseg_ros.engine import planner as planner_module
from swiftseg_ros.engine.kernels import edge_labels as edge_labels_module

WIDTH, HEIGHT = 128, 64
FRAME = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)


def engine(folder, **changes):
    torch.manual_seed(0)  # the same random weights in every engine
    settings = dict(network="fastscnn", backend="torch", warmup_iters=1, cache_dir=folder)
    settings.update(changes)
    return SegmentationEngine(EngineConfig(**settings))


def prepared(folder, **changes):
    seg = engine(folder, **changes)
    seg.prepare(HEIGHT, WIDTH, "rgb8")
    return seg


def entries(folder):
    return sorted((folder / "choices").glob("*.json"))


def test_a_second_prepare_builds_only_the_cached_winner(tmp_path, monkeypatch):
    first = prepared(tmp_path)
    assert first.stats()["choices_source"] == "measured"
    assert len(entries(tmp_path)) == 1
    expected = first.stats()["choices"]
    labels = first.infer(FRAME, "rgb8").label.copy()
    first.release()

    def refuse(*args, **kwargs):
        raise AssertionError("measured, though the choices were cached")

    monkeypatch.setattr(planner_module, "pick_pass", refuse)
    second = prepared(tmp_path)
    assert second.stats()["choices_source"] == "cache"
    assert second.stats()["choices"] == expected
    np.testing.assert_array_equal(second.infer(FRAME, "rgb8").label, labels)
    second.release()


def test_the_key_holds_the_setup_another_setup_measures(tmp_path):
    prepared(tmp_path).release()
    prepared(tmp_path, outputs=("label",)).release()
    prepared(tmp_path, channels_last=False).release()
    assert len(entries(tmp_path)) == 3


def test_retune_measures_afresh_and_stores_the_new_answer(tmp_path):
    prepared(tmp_path).release()
    seg = prepared(tmp_path, retune=True)
    assert seg.stats()["choices_source"] == "retune"
    seg.release()
    assert len(entries(tmp_path)) == 1


def test_a_corrupt_entry_is_ignored_with_a_warning_and_measured_again(tmp_path,
                                                                        log_records):
    prepared(tmp_path).release()
    (path,) = entries(tmp_path)
    path.write_text(path.read_text()[:40])  # truncated
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        seg = prepared(tmp_path)
    assert seg.stats()["choices_source"] == "measured"
    assert any("is corrupt" in m and "measuring again" in m for m in records.messages())
    json.loads(path.read_text())  # written again, whole
    seg.release()


def test_an_entry_of_another_format_is_ignored_with_a_warning(tmp_path, log_records):
    prepared(tmp_path).release()
    (path,) = entries(tmp_path)
    record = json.loads(path.read_text())
    record["format"] = 999
    path.write_text(json.dumps(record))
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        seg = prepared(tmp_path)
    assert seg.stats()["choices_source"] == "measured"
    assert any("format 999" in m for m in records.messages())
    seg.release()


def test_a_cached_winner_that_no_longer_builds_is_measured_again(tmp_path, log_records):
    prepared(tmp_path).release()
    (path,) = entries(tmp_path)
    record = json.loads(path.read_text())
    record["winner"]["name"] = "gone/channels_last"
    path.write_text(json.dumps(record))
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        seg = prepared(tmp_path)
    assert seg.stats()["choices_source"] == "measured"
    assert any("cannot be used" in m and "gone/channels_last" in m
               for m in records.messages())
    seg.release()


def test_an_unwritable_cache_folder_is_a_warning_not_an_error(tmp_path, log_records):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        seg = prepared(blocker)
    assert seg.infer(FRAME, "rgb8").label is not None
    assert any("cannot write" in m and "SWIFTSEG_CACHE_DIR" in m for m in records.messages())
    seg.release()


def cached_edge_choice(folder, picked):
    """A measured entry of a plan with edge selection, its edge_labels choice set to
    `picked` (what an earlier start on a machine where that one was faster stored)."""
    prepared(folder, upsample="logits", winograd=False).release()
    (path,) = entries(folder)
    record = json.loads(path.read_text())
    record["choices"]["edge_labels"]["picked"] = picked
    path.write_text(json.dumps(record))


def test_a_cached_torch_edge_selection_never_builds_the_compiled_one(tmp_path, monkeypatch):
    cached_edge_choice(tmp_path, "torch")
    built = []

    def counted(*args):
        built.append(args)
        return real(*args)

    real = edge_labels_module._compiled
    monkeypatch.setattr(edge_labels_module, "_compiled", counted)
    seg = prepared(tmp_path, upsample="logits", winograd=False)
    assert seg.stats()["choices_source"] == "cache"
    assert seg.stats()["choices"]["edge_labels"]["picked"] == "torch"
    assert seg.infer(FRAME, "rgb8").label is not None
    seg.release()
    assert built == []


@pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                    reason="numba is not installed (the compiled edge selection needs it)")
def test_a_cached_compiled_edge_selection_that_no_longer_builds_is_measured(
        tmp_path, monkeypatch, log_records):
    cached_edge_choice(tmp_path, "compiled")
    monkeypatch.setitem(sys.modules, "swiftseg_ros.engine.kernels.edge_kernel", None)
    with log_records("swiftseg_ros.engine", logging.WARNING) as records:
        seg = prepared(tmp_path, upsample="logits", winograd=False)
    choice = seg.stats()["choices"]["edge_labels"]
    assert seg.stats()["choices_source"] == "cache"
    assert choice["picked"] == "torch" and "pip install numba" in choice["notes"]["compiled"]
    assert any("edge_labels=compiled cannot be used" in m for m in records.messages())
    assert seg.infer(FRAME, "rgb8").label is not None
    seg.release()
