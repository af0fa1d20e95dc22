"""Parameter definitions, the validator, the ROS 2 parameter-file loader, the engine
mapping, and the generated files (config/seg.yaml, docs/parameters.md, README table)."""

import array
from dataclasses import fields
from pathlib import Path

import pytest

from swiftseg_ros.checkpoint import load_checkpoint
from swiftseg_ros.errors import CheckpointError, ConfigError
from swiftseg_ros.paths import resolve_weights
from swiftseg_ros.ros.params import (
    NETWORK_NAMES,
    PARAMETERS,
    TABLE_BEGIN,
    TABLE_END,
    SegParams,
    Size,
    apply_parameter_changes,
    check_parameter_value,
    engine_config_from_params,
    launch_argument_value,
    load_param_file,
    main,
    marked_block,
    render_param_file,
    render_parameter_table,
    render_parameters_doc,
    validate_parameters,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="params.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ definitions


def test_defaults_are_valid_and_load_the_shipped_demo_weights():
    params = validate_parameters()
    assert (params.network, params.weights) == ("", "fastscnn_synth.pt")
    assert params.max_input_size == Size(4096, 4096)
    assert params.input_size is None
    _, meta, training = load_checkpoint(resolve_weights(params.weights))
    assert meta["network"] == "fastscnn" and training is None


def test_validated_fields_are_the_definitions_in_order():
    assert [f.name for f in fields(SegParams)] == [p.name for p in PARAMETERS]


def test_network_choices_are_the_registered_networks():
    from swiftseg_ros.nets.registry import NETWORKS

    assert sorted(NETWORK_NAMES) == sorted(NETWORKS)


def test_every_dynamic_parameter_is_one_the_node_can_apply_at_once():
    dynamic = {p.name for p in PARAMETERS if p.dynamic}
    assert dynamic == {"publish_color", "publish_confidence", "publish_overlay",
                       "overlay_alpha", "latency_budget_ms", "min_output_hz",
                       "batch_wait_ms"}


# -------------------------------------------------------------------------- validator


def test_sizes_are_parsed_width_first_and_written_back_the_same():
    params = validate_parameters({"input_size": "640x480", "inference_size": " 1024 X 512 "})
    assert params.input_size == Size(width=640, height=480)
    assert params.inference_size == Size(1024, 512)
    assert params.parameter_values()["inference_size"] == "1024x512"


def test_parameter_values_validate_back_to_the_same_parameters():
    params = validate_parameters({"input_size": "640x480", "overlay_alpha": 0.25,
                                  "device": "cuda:1", "publish_overlay": True})
    assert validate_parameters(params.parameter_values()) == params


def test_an_integer_is_accepted_for_a_double():
    assert validate_parameters({"overlay_alpha": 1}).overlay_alpha == 1.0


def test_outputs_are_label_plus_the_switched_on_ones():
    params = validate_parameters({"publish_color": False, "publish_confidence": True,
                                  "publish_overlay": True})
    assert params.outputs == ("label", "confidence", "overlay")


@pytest.mark.parametrize("values,words", [
    ({"infernce_size": "640x480"}, "unknown parameter 'infernce_size' (did you mean "
                                   "'inference_size'?)"),
    ({"precision": "fp8"}, "parameter 'precision' is 'fp8': allowed fp32, fp16, bf16"),
    ({"network": "resnet50"}, "parameter 'network' is 'resnet50': allowed fastscnn"),
    ({"overlay_alpha": 1.5}, "parameter 'overlay_alpha' is 1.5: allowed 0.0 to 1.0"),
    ({"overlay_alpha": "0.5"}, "parameter 'overlay_alpha' is '0.5', a string: expected a "
                               "double (0.0 to 1.0)"),
    ({"overlay_alpha": float("nan")}, "parameter 'overlay_alpha' is nan"),
    ({"depth": 0}, "parameter 'depth' is 0: allowed 1 to 100"),
    ({"depth": 2.0}, "parameter 'depth' is 2.0, a double: expected an integer (1 to 100)"),
    ({"threads": True}, "parameter 'threads' is True, a bool: expected an integer"),
    ({"cuda_graphs": 1}, "parameter 'cuda_graphs' is 1, an integer: expected a bool"),
    ({"overlay_alpha": 2 ** 53 + 1}, "is 9007199254740993, an integer: expected a double"),
    ({"palette": ["a"]}, "parameter 'palette' is ['a'], an array: expected a string"),
    ({"input_size": "640*480"}, "parameter 'input_size' is '640*480': expected WxH"),
    ({"input_size": "0x480"}, "parameter 'input_size' is '0x480'"),
    ({"max_input_size": ""}, "parameter 'max_input_size' is empty: allowed WxH"),
    ({"device": "gpu"}, "parameter 'device' is 'gpu': allowed auto, cpu, cuda, cuda:N"),
    ({"transport": "theora"}, "parameter 'transport' is 'theora': allowed raw, compressed"),
    ({"network": "", "weights": ""}, "'network' and 'weights' are both empty"),
    ({"input_size": "1920x1080", "max_input_size": "1280x720"},
     "parameter 'input_size' is '1920x1080', larger than max_input_size '1280x720'"),
])
def test_invalid_values_are_one_line_errors_naming_the_parameter(values, words):
    with pytest.raises(ConfigError) as caught:
        validate_parameters(values)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_device_is_normalised_to_lower_case():
    assert validate_parameters({"device": " CUDA:0 "}).device == "cuda:0"


# ------------------------------------------------------------------- dynamic updates


def test_dynamic_parameter_changes_while_configured():
    current = validate_parameters()
    changed = apply_parameter_changes(current, {"overlay_alpha": 0.8, "publish_overlay": True},
                                      configured=True)
    assert (changed.overlay_alpha, changed.publish_overlay) == (0.8, True)


def test_read_only_parameter_change_while_configured_is_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="'network' is read-only while the node is "
                                          "configured .*configure again"):
        apply_parameter_changes(validate_parameters(), {"network": "swiftnet_rn18"},
                                configured=True)


def test_read_only_parameter_set_to_its_current_value_is_accepted():
    current = validate_parameters({"input_size": "640x480"})
    assert apply_parameter_changes(current, {"input_size": "640x480"}, configured=True) == current


def test_read_only_parameter_changes_while_unconfigured():
    changed = apply_parameter_changes(validate_parameters(), {"network": "swiftnet_mnv2"},
                                      configured=False)
    assert changed.network == "swiftnet_mnv2"


def test_dynamic_change_is_still_validated():
    with pytest.raises(ConfigError, match="overlay_alpha"):
        apply_parameter_changes(validate_parameters(), {"overlay_alpha": -1.0}, configured=True)


# --------------------------------------------------------------------- parameter files


def test_shipped_param_file_loads_to_the_defaults():
    values = load_param_file(ROOT / "config" / "seg.yaml")
    # an empty list cannot be written in a ROS 2 parameter file: such a default is left out
    assert set(values) == {p.name for p in PARAMETERS if p.type is not list or p.default}
    assert validate_parameters(values) == validate_parameters()


def test_node_entry_overrides_the_wildcard_entry(tmp_path):
    path = write(tmp_path, """
/**:
  ros__parameters:
    network: swiftnet_mnv2
    overlay_alpha: 0.2
swiftseg:
  ros__parameters:
    overlay_alpha: 0.7
""")
    assert load_param_file(path) == {"network": "swiftnet_mnv2", "overlay_alpha": 0.7}


def test_wildcard_applies_before_the_node_entry_whatever_the_file_order(tmp_path):
    path = write(tmp_path, """
/swiftseg:
  ros__parameters:
    depth: 3
/**:
  ros__parameters:
    depth: 5
""")
    assert load_param_file(path) == {"depth": 3}


@pytest.mark.parametrize("text", [
    "/robot1/swiftseg:\n  ros__parameters:\n    depth: 4\n",
    "robot1:\n  swiftseg:\n    ros__parameters:\n      depth: 4\n",
])
def test_namespaced_node_entries_match_the_node_in_that_namespace(tmp_path, text):
    path = write(tmp_path, text)
    assert load_param_file(path, namespace="/robot1") == {"depth": 4}


def test_entries_for_other_nodes_are_skipped(tmp_path):
    path = write(tmp_path, """
camera:
  ros__parameters:
    frame_rate: 30
swiftseg:
  ros__parameters:
    depth: 2
""")
    assert load_param_file(path) == {"depth": 2}


def test_file_without_an_entry_for_the_node_names_what_it_has(tmp_path):
    path = write(tmp_path, "camera:\n  ros__parameters:\n    frame_rate: 30\n")
    with pytest.raises(ConfigError, match=r"no parameters for node /swiftseg \(entries found: "
                                          r"/camera\)"):
        load_param_file(path)


def test_unknown_name_in_a_file_names_the_file_and_suggests_a_fix(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    overlay_alfa: 0.5\n")
    with pytest.raises(ConfigError) as caught:
        load_param_file(path)
    assert str(path) in str(caught.value)
    assert "unknown parameter 'overlay_alfa' (did you mean 'overlay_alpha'?)" in str(caught.value)


def test_nested_parameters_are_dotted_names_and_unknown(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    qos:\n      depth: 1\n")
    with pytest.raises(ConfigError, match="unknown parameter 'qos.depth'"):
        load_param_file(path)


def test_integer_for_a_double_in_a_file_is_read_as_that_double(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    min_output_hz: 5\n")
    assert validate_parameters(load_param_file(path)).min_output_hz == 5.0


def test_wrong_type_in_a_file_names_parameter_type_given_and_type_expected(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    overlay_alpha: high\n")
    with pytest.raises(ConfigError, match=f"^{path}: parameter 'overlay_alpha' is 'high', a "
                                          r"string: expected a double \(0.0 to 1.0\)$"):
        load_param_file(path)


@pytest.mark.parametrize("name,value,stored", [
    ("overlay_alpha", 1, 1.0),
    ("overlay_alpha", 0.25, 0.25),
    ("depth", 3, 3),
    ("input_size", "640x480", "640x480"),
    ("publish_overlay", True, True),
])
def test_one_value_is_checked_and_stored_as_the_node_keeps_it(name, value, stored):
    checked = check_parameter_value(name, value)
    assert checked == stored and type(checked) is type(stored)


@pytest.mark.parametrize("name,value,words", [
    ("overlay_alpha", "1", "'overlay_alpha' is '1', a string: expected a double"),
    ("overlay_alpha", 1.5, "'overlay_alpha' is 1.5: allowed 0.0 to 1.0"),
    ("depth", 1.0, "'depth' is 1.0, a double: expected an integer"),
    ("input_size", "640", "'input_size' is '640': expected WxH"),
    ("inference_sise", "", "unknown parameter 'inference_sise' (did you mean"),
])
def test_one_bad_value_is_one_line_naming_it(name, value, words):
    with pytest.raises(ConfigError) as caught:
        check_parameter_value(name, value)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_one_value_alone_leaves_combinations_to_configure():
    # weights and network both empty is a combination error, not a bad value
    assert check_parameter_value("weights", "") == ""


def test_missing_value_in_a_file_says_how_to_write_empty(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    weights:\n")
    with pytest.raises(ConfigError, match="write '' for an empty string"):
        load_param_file(path)


def test_invalid_value_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    precision: fp64\n")
    with pytest.raises(ConfigError, match=f"^{path}: parameter 'precision' is 'fp64'"):
        load_param_file(path)


def test_file_may_leave_a_combination_to_other_sources(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    network: ''\n")
    values = load_param_file(path)
    assert validate_parameters({**values, "weights": "fastscnn_synth.pt"}).network == ""


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "/**:\n  ros__parameters:\n    depth: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 4"):
        load_param_file(path)


def test_binary_file_is_not_a_parameter_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ConfigError, match="is not a text file"):
        load_param_file(path)


def test_file_that_is_not_a_parameter_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="expected a ROS 2 parameter file"):
        load_param_file(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="nests node names down to a 'ros__parameters:'"):
        load_param_file(write(tmp_path, "swiftseg: 3\n", "b.yaml"))


def test_missing_param_file_is_a_config_error_with_its_path(tmp_path):
    with pytest.raises(ConfigError, match="parameter file .*nope.yaml' not found"):
        load_param_file(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ engine mapping


def test_engine_config_carries_the_parameters_over():
    params = validate_parameters({"network": "fastscnn", "weights": "",
                                  "device": "cpu", "precision": "bf16", "threads": 2,
                                  "inference_size": "512x256", "upsample": "labels",
                                  "publish_confidence": True, "overlay_alpha": 0.3,
                                  "max_input_size": "1920x1080", "palette": "camvid"})
    config = engine_config_from_params(params)
    from swiftseg_ros.classes import load_class_set

    assert (config.network, config.weights, config.device) == ("fastscnn", None, "cpu")
    assert (config.precision, config.threads, config.upsample) == ("bf16", 2, "labels")
    assert config.inference_size == (512, 256)
    assert config.max_input_size == (1920, 1080)
    assert config.outputs == ("label", "color", "confidence")
    assert config.overlay_alpha == 0.3
    assert config.palette == [list(c) for c in load_class_set("camvid").palette]


def test_engine_config_outputs_can_be_narrowed_to_subscribed_ones():
    config = engine_config_from_params(validate_parameters({"device": "cpu"}), ("label",))
    assert config.outputs == ("label",)


def test_auto_device_without_cuda_falls_back_to_the_cpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert engine_config_from_params(validate_parameters()).device == "cpu"


def test_default_thread_count_leaves_pytorch_alone():
    assert engine_config_from_params(validate_parameters({"device": "cpu"})).threads is None


def test_missing_weights_file_fails_with_where_it_looked(tmp_path):
    params = validate_parameters({"device": "cpu", "weights": str(tmp_path / "gone.pt")})
    with pytest.raises(CheckpointError, match="gone.pt"):
        engine_config_from_params(params)


# ------------------------------------------------------------------ generated files


def test_checked_in_param_file_is_the_rendered_one():
    assert (ROOT / "config" / "seg.yaml").read_text() == render_param_file(), \
        "config/seg.yaml is stale: run `python -m swiftseg_ros.ros.params --write`"


def test_docs_parameter_page_is_the_rendered_one():
    assert (ROOT / "docs" / "parameters.md").read_text() == render_parameters_doc(), \
        "docs/parameters.md is stale: run `python -m swiftseg_ros.ros.params --write`"


def test_readme_parameter_table_is_the_rendered_one():
    block = marked_block((ROOT / "README.md").read_text())
    assert block is not None, f"README.md needs a {TABLE_BEGIN} ... {TABLE_END} block"
    assert block == render_parameter_table(), \
        "README.md's parameter table is stale: run `python -m swiftseg_ros.ros.params --write`"


def test_table_has_a_row_per_parameter():
    rows = render_parameter_table().splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == [f"`{p.name}`" for p in PARAMETERS]


def test_rendered_param_file_comments_every_parameter():
    lines = render_param_file().splitlines()
    for definition in PARAMETERS:
        index = next(i for i, line in enumerate(lines)
                     if line.startswith((f"    {definition.name}: ",
                                         f"    # {definition.name}: ")))
        assert lines[index - 1].startswith("    # ")


def test_write_regenerates_every_file_and_keeps_the_rest_of_the_readme(tmp_path):
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "README.md").write_text(f"# Title\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nEnd.\n")
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "config" / "seg.yaml").read_text() == render_param_file()
    assert (tmp_path / "docs" / "parameters.md").read_text() == render_parameters_doc()
    assert (tmp_path / "README.md").read_text() == \
        f"# Title\n\n{TABLE_BEGIN}\n{render_parameter_table()}{TABLE_END}\n\nEnd.\n"


def test_write_outside_a_source_checkout_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not the source checkout"):
        main(["--write", "--root", str(tmp_path)])


# ----------------------------------------------------------------------- cameras


def test_cameras_are_read_as_a_tuple_of_names():
    assert validate_parameters({"cameras": ["front", "down"]}).cameras == ("front", "down")
    assert validate_parameters().cameras == ()


def test_an_empty_array_of_any_type_is_no_cameras():
    # `ros2 param set /swiftseg cameras []` stores an empty bool array
    assert validate_parameters({"cameras": []}).cameras == ()
    assert check_parameter_value("cameras", array.array("b")) is not None


@pytest.mark.parametrize("cameras, words", [
    (["front", "front"], "names 'front' twice"),
    (["front", "2nd"], "'2nd' is not a valid camera name"),
    (["/front"], "'/front' is not a valid camera name"),
    (["front/"], "is not a valid camera name"),
    (["a__b"], "reserves"),
    ("front", "a string: expected a string array"),
    ([3], "3 is not a string"),
])
def test_bad_camera_lists_fail_with_one_line_naming_the_parameter(cameras, words):
    with pytest.raises(ConfigError, match="parameter 'cameras'") as error:
        validate_parameters({"cameras": cameras})
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_more_cameras_than_max_cameras_fail_at_validation():
    with pytest.raises(ConfigError, match="3 cameras, more than max_cameras \\(2\\)"):
        validate_parameters({"cameras": ["a", "b", "c"], "max_cameras": 2})
    assert validate_parameters({"cameras": ["a", "b"], "max_cameras": 2}).cameras == ("a", "b")


def test_cameras_launch_argument_takes_the_launch_array_syntax():
    assert launch_argument_value("cameras", "[front,down]") == ["front", "down"]
    assert launch_argument_value("cameras", "front, down") == ["front", "down"]
    with pytest.raises(ConfigError, match="launch argument cameras"):
        launch_argument_value("cameras", "[front,front]")


def test_cameras_in_a_param_file_load_as_a_list(tmp_path):
    path = write(tmp_path, """
/**:
  ros__parameters:
    cameras: [front, down]
""")
    assert validate_parameters(load_param_file(path)).cameras == ("front", "down")


def test_cameras_is_not_changed_while_configured():
    with pytest.raises(ConfigError, match="cameras"):
        apply_parameter_changes(validate_parameters(), {"cameras": ["front"]}, configured=True)
