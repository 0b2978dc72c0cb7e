"""Step 1 as a library (issue 31): CreateOptions are create_keras_model.py's flags by name,
and command_line(options) gives them back (the sandbox's child parses it again: an option it
dropped would make the sandboxed run another run than the one asked for)."""
import os
from pathlib import Path

import pytest

import create_keras_model
from tfjs_parity import KitError
from tfjs_parity.pipeline import create


def parsed(argv):
    return create.options_from(create_keras_model.arguments().parse_args(argv))


def test_the_script_imports_without_changing_the_environment():
    assert "TF_USE_LEGACY_KERAS" not in os.environ or os.environ["TF_USE_LEGACY_KERAS"] == "1"
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ  # set only when a graph model's step 1 runs


@pytest.mark.parametrize("argv", [
    [],
    ["--depth", "3", "--units", "7", "--seed", "5", "--out-dir", "o", "--format", "safetensors"],
    ["--model", "m.json", "--as", "graph", "--keep-plumbing", "--input-shape", "x=1,3", "--input-shape", "s=",
     "--input-seed", "4", "--quantize", "uint8=conv*/kernel", "--quantize", "float16", "--trust-model",
     "--repeat", "3", "--budget", "2.5", "--repeat-check", "4"],
    ["--model", "saved", "--signature", "serve", "--input", "in.npz", "--sandbox-timeout", "60",
     "--sandbox-memory", "900"],
    ["--model", "m.keras", "--input-count", "8"],
    ["--model=-weird.keras", "--out-dir=-o", "--input=--in.npz"],  # values that start with '-'
    ["--model", "g.json", "--input-shape=-x=1,3", "--quantize=uint8=-conv*"],
])
def test_command_line_gives_the_same_options_back(argv):
    options = parsed(argv)
    again = parsed(create.command_line(options))
    assert again == options
    assert create.command_line(again) == create.command_line(options)


def test_every_flag_of_the_script_is_an_option():
    flags = {action.dest for action in create_keras_model.arguments()._actions if action.dest != "help"}
    names = {f.name for f in create.fields(create.CreateOptions)}
    assert flags <= names, flags - names
    assert {name for name, _ in create.FLAGS} == flags - {"in_sandbox"}


def test_checked_derives_the_source_and_refuses_what_the_script_refuses(tmp_path):
    options = create.checked(create.CreateOptions(depth=2, units=3))
    assert options.source.name == "study" and options.kind == "layers" and not options.qmap
    with pytest.raises(KitError, match="--depth, --units and --seed build the study's model"):
        create.checked(create.CreateOptions(model=Path("m.keras"), depth=2))
    with pytest.raises(KitError, match="--keep-plumbing is for graph models"):
        create.checked(create.CreateOptions(keep_plumbing=True))
    with pytest.raises(KitError, match="--trust-model is for --model"):
        create.checked(create.CreateOptions(trust_model=True))


def test_a_graph_model_json_given_as_layers_is_refused_after_the_graph_only_flags(tmp_path):
    """The order of create_keras_model.py's checks before it was a library: --keep-plumbing and
    --input-shape are named first, then the model.json that is a graph model."""
    import json
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": []}, "weightsManifest": []}))
    with pytest.raises(KitError, match="--keep-plumbing is for graph models"):
        create.checked(create.CreateOptions(model=model, kind="layers", keep_plumbing=True))
    with pytest.raises(KitError, match="a tfjs graph model; it runs only as one"):
        create.checked(create.CreateOptions(model=model, kind="layers"))
