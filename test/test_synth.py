"""The synthetic scene generator: determinism, exact labels, sequences, and the written layout."""

import numpy as np
import pytest

from swiftseg_ros import cli
from swiftseg_ros.synthetic.frames import generate_frame, render_frame, write_dataset
from swiftseg_ros.synthetic.scene import CLASS_NAMES, PALETTE
from swiftseg_ros.trainer.datasets import dataset_from_path

W, H = 128, 64


def test_same_seed_and_index_give_identical_frames():
    a = generate_frame(11, 3, W, H)
    b = generate_frame(11, 3, W, H)
    assert a[0].tobytes() == b[0].tobytes()
    assert a[1].tobytes() == b[1].tobytes()


def test_other_seed_or_index_gives_another_frame():
    base = generate_frame(11, 3, W, H)[0]
    assert not np.array_equal(base, generate_frame(12, 3, W, H)[0])
    assert not np.array_equal(base, generate_frame(11, 4, W, H)[0])


def test_frames_have_the_requested_size_and_types():
    rgb, label = generate_frame(0, 0, W, H)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert label.shape == (H, W) and label.dtype == np.uint8
    assert label.max() < len(CLASS_NAMES)


@pytest.mark.parametrize("sequence", [False, True])
def test_written_frame_does_not_depend_on_how_many_are_written(tmp_path, sequence):
    write_dataset(tmp_path / "short", 2, W, H, seed=5, sequence=sequence, progress=False)
    write_dataset(tmp_path / "long", 4, W, H, seed=5, sequence=sequence, progress=False)
    write_dataset(tmp_path / "alone", 1, W, H, seed=5, sequence=sequence, start=1, progress=False)
    for kind in ("images", "labels"):
        name = f"{kind}/train/frame_000001.png"
        short = (tmp_path / "short" / name).read_bytes()
        assert short == (tmp_path / "long" / name).read_bytes()
        assert short == (tmp_path / "alone" / name).read_bytes()


@pytest.mark.parametrize("sequence", [False, True])
def test_every_labelled_pixel_has_a_colour_drawn_for_its_class(sequence):
    # without lighting and noise, the image holds exactly the colours of the polygons, so
    # a pixel whose label disagrees with the polygon painted there shows a foreign colour
    for index in (0, 7, 19):
        canvas = render_frame(2, index, 192, 96, sequence=sequence, effects=False)
        for cls, name in enumerate(CLASS_NAMES):
            mask = canvas.label == cls
            seen = {tuple(c) for c in np.unique(canvas.rgb[mask], axis=0).tolist()}
            foreign = seen - canvas.colours[cls]
            assert not foreign, f"frame {index}: {name} pixels coloured {sorted(foreign)[:3]}"


def test_effects_change_the_image_but_not_the_label():
    clean = render_frame(4, 1, W, H, effects=False)
    noisy = render_frame(4, 1, W, H, effects=True)
    np.testing.assert_array_equal(clean.label, noisy.label)
    assert np.abs(clean.rgb.astype(int) - noisy.rgb).mean() > 1.0


def test_a_handful_of_frames_shows_every_class():
    counts = np.zeros(len(CLASS_NAMES), int)
    for index in range(6):
        counts += np.bincount(generate_frame(0, index, 256, 128)[1].ravel(),
                              minlength=len(CLASS_NAMES))
    assert (counts > 0).all(), dict(zip(CLASS_NAMES, counts.tolist(), strict=True))


def test_one_class_takes_different_colours_in_different_frames():
    # colour alone must not give the class away: road pixels differ between scenes
    means = [generate_frame(1, i, W, H)[0][generate_frame(1, i, W, H)[1] == 3].mean(axis=0)
             for i in range(4)]
    spread = np.ptp(np.array(means), axis=0)
    assert spread.max() > 20


def test_sequence_frames_follow_each_other():
    def agreement(a, b):
        return float((a[1] == b[1]).mean())

    seq = [generate_frame(8, k, W, H, sequence=True) for k in (20, 21, 22)]
    still = [generate_frame(8, k, W, H) for k in (20, 21, 22)]
    consecutive = np.mean([agreement(seq[0], seq[1]), agreement(seq[1], seq[2])])
    unrelated = np.mean([agreement(still[0], still[1]), agreement(still[1], still[2])])
    assert consecutive > 0.8
    assert consecutive > unrelated + 0.15
    step = np.abs(seq[0][0].astype(int) - seq[1][0]).mean()
    jump = np.abs(still[0][0].astype(int) - still[1][0]).mean()
    assert step < jump


def test_sequence_camera_moves_forward():
    far_apart = [generate_frame(8, k, W, H, sequence=True)[1] for k in (0, 80)]
    assert (far_apart[0] == far_apart[1]).mean() < 0.9


def test_written_dataset_reads_back_with_its_classes(tmp_path):
    write_dataset(tmp_path, 2, W, H, seed=3, split="val", progress=False)
    ds = dataset_from_path(tmp_path, "val")
    assert ds.class_names == list(CLASS_NAMES)
    assert ds.palette == [list(c) for c in PALETTE]
    image, label = ds[1]
    rgb, expected = generate_frame(3, 1, W, H)
    np.testing.assert_array_equal(image, rgb)
    np.testing.assert_array_equal(label, expected)


def test_cli_writes_the_generic_layout(tmp_path, capsys):
    code = cli.synth(["--out", str(tmp_path), "--frames", "2", "--size", f"{W}x{H}",
                      "--seed", "1", "--sequence", "--split", "demo"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "images" / "demo").iterdir()) == [
        "frame_000000.png", "frame_000001.png"]
    assert (tmp_path / "labels" / "demo" / "frame_000001.png").is_file()
    assert (tmp_path / "classes.yaml").is_file()
    assert "wrote 2" in capsys.readouterr().out


def test_cli_rejects_a_bad_size_in_one_line(tmp_path, capsys):
    code = cli.synth(["--out", str(tmp_path), "--frames", "1", "--size", "128by64"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--size" in err and "WIDTHxHEIGHT" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("size", ["16x16", "100000x100000"])
def test_cli_rejects_a_size_out_of_range_in_one_line_before_any_work(tmp_path, capsys, size):
    code = cli.synth(["--out", str(tmp_path / "out"), "--frames", "1", "--size", size])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert f"--size {size!r}" in err and "from 32 to 8192 pixels" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed -1"):
        generate_frame(-1, 0, W, H)
