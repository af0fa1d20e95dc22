"""Checkpoint round trips and every way a weights file can be unusable."""

import os

import pytest
import torch
from torch import nn

from swiftseg_ros.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_model,
    load_state_strict,
    make_meta,
    save_checkpoint,
)
from swiftseg_ros.errors import CheckpointError
from swiftseg_ros.nets import build_model
from swiftseg_ros.paths import resolve_weights


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def tiny_meta(**kw):
    return make_meta("fastscnn", 3, class_names=["a", "b", "c"], train_size=[64, 128], **kw)


def test_round_trip_keeps_tensors_and_meta(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "w.pt", model, tiny_meta(provenance={"dataset": "x"}))
    state, meta, training = load_checkpoint(path)
    assert training is None
    assert meta["class_names"] == ["a", "b", "c"]
    assert meta["provenance"]["dataset"] == "x" and "date" in meta["provenance"]
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)


def test_training_state_with_optimizer_and_rng_loads_weights_only(tmp_path):
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 8, 8)).sum().backward()
    opt.step()
    training = {"epoch": 3, "step": 42, "optimizer": opt.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": [1, 2, 3]}}
    path = save_checkpoint(tmp_path / "t.pt", model, tiny_meta(), training=training)
    # the contract: everything reads with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert raw["training"]["step"] == 42
    _, _, loaded = load_checkpoint(path)
    assert torch.equal(loaded["rng"]["torch"], training["rng"]["torch"])
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_half_storage_loads_back_into_float_model(tmp_path):
    model = build_model("fastscnn", 3).eval()
    path = save_checkpoint(tmp_path / "h.pt", model, tiny_meta(), half=True)
    state, _, _ = load_checkpoint(path)
    assert all(v.dtype != torch.float32 for v in state.values())
    loaded, meta = load_model(path)
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == ref[key].dtype
        torch.testing.assert_close(value, ref[key], rtol=1e-3, atol=1e-3)
    assert meta["network"] == "fastscnn" and not loaded.training


def test_load_model_builds_the_checkpoint_network(tmp_path):
    model = build_model("fastscnn", 3).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, tiny_meta())
    loaded, _ = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("garbage", [b"this is not a torch file at all" * 10, b"e"])
def test_garbage_bytes_are_named_another_format(tmp_path, garbage):
    path = tmp_path / "junk.pt"
    path.write_bytes(garbage)
    with pytest.raises(CheckpointError, match=r"not a PyTorch file, expected a swiftseg "
                                              r"checkpoint .*starts with b'"):
        load_checkpoint(path)


def test_empty_file_is_named_empty(tmp_path):
    path = tmp_path / "w.pt"
    path.touch()
    with pytest.raises(CheckpointError, match="w.pt: is empty"):
        load_checkpoint(path)


def test_truncated_file_is_an_error(tmp_path):
    path = save_checkpoint(tmp_path / "w.pt", tiny_model(), tiny_meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


def test_file_cut_in_its_first_record_is_an_error(tmp_path):
    # torch's zip reader raises a bare OSError (EINVAL) for some cuts of larger files
    path = tmp_path / "w.pt"
    torch.save({"meta": {}, "state_dict": {"w": torch.zeros(300_000)}}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_saving_onto_a_folder_is_an_error_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        save_checkpoint(tmp_path / "out", tiny_model(), tiny_meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bare_state_dict_points_to_the_importer(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(tiny_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="swiftseg-import"):
        load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta": {"hook": os.system}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)


def test_other_format_version_is_an_error(tmp_path):
    meta = tiny_meta()
    path = save_checkpoint(tmp_path / "v.pt", tiny_model(), meta)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["version"] = 2
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="version 2.*reads version 1"):
        load_checkpoint(path)


def test_network_mismatch_is_an_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("fastscnn", 3), tiny_meta())
    with pytest.raises(CheckpointError, match="holds network 'fastscnn' but 'swiftnet_rn18'"):
        load_model(path, network="swiftnet_rn18")


def test_class_count_mismatch_is_an_error():
    with pytest.raises(CheckpointError, match="has 3 classes but 19"):
        check_compatible(tiny_meta(), num_classes=19)


def test_weights_of_another_shape_name_the_keys(tmp_path):
    other = build_model("fastscnn", 5).state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches .*classifier"):
        load_state_strict(build_model("fastscnn", 3), other, "w.pt")


def test_missing_and_unexpected_keys_are_named():
    state = build_model("fastscnn", 3).state_dict()
    key = next(iter(state))
    state["bogus.weight"] = state.pop(key)
    with pytest.raises(CheckpointError, match=f"unexpected keys bogus.weight.*missing keys {key}"):
        load_state_strict(build_model("fastscnn", 3), state, "w.pt")


def test_meta_palette_shorter_than_classes_is_refused():
    with pytest.raises(ValueError, match="2 colours for 3 classes"):
        make_meta("fastscnn", 3, palette=[[0, 0, 0], [1, 1, 1]])


def test_resolve_weights_tries_cwd_then_models_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.pt").write_bytes(b"x")
    assert resolve_weights("here.pt") == tmp_path / "here.pt"
    assert resolve_weights(str(tmp_path / "here.pt")) == tmp_path / "here.pt"
    with pytest.raises(CheckpointError, match="not found .*models"):
        resolve_weights("absent.pt")
    with pytest.raises(CheckpointError, match="empty"):
        resolve_weights("  ")


def test_resolve_weights_names_a_folder_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="'run' is a folder"):
        resolve_weights("run")
    with pytest.raises(CheckpointError, match="is a folder"):
        resolve_weights(str(tmp_path / "run"))


@pytest.mark.parametrize("name, network", [("fastscnn_synth.pt", "fastscnn"),
                                           ("swiftnet_mnv2_synth.pt", "swiftnet_mnv2")])
def test_shipped_demo_weights_load_exported_and_small(name, network):
    path = resolve_weights(name)
    assert path.stat().st_size < 10 * 2**20
    _, meta, training = load_checkpoint(path)
    assert training is None and meta["num_classes"] == 9
    model, _ = load_model(path, network=network)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 128)).shape == (1, 9, 64, 128)
