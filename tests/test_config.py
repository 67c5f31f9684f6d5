
import pytest
import yaml

from mldft_app import config
from mldft_app.errors import UserInputError

from conftest import REPO

GOOD_PREDICT = {
    "task": "predict",
    "structure": {"file": "al.extxyz"},
    "grid": {"shape": [10, 10, 10]},
    "model": {"file": "m.pt"},
    "output": {"file": "out.h5"},
}


@pytest.mark.parametrize("path", sorted((REPO / "inputs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_input_validates(path):
    cfg = config.load_config(path)
    assert cfg.task == yaml.safe_load(path.read_text())["task"]


def test_defaults_and_relative_paths(tmp_path):
    cfg = config.parse_config(GOOD_PREDICT, tmp_path)
    assert cfg.structure.file == str(tmp_path / "al.extxyz")
    assert cfg.model.device == "auto" and cfg.model.batch_size == 16384
    assert cfg.descriptors is None and cfg.physics.temperature is None
    explicit = config.parse_config({**GOOD_PREDICT, "descriptors": {}}, tmp_path)
    assert explicit.descriptors == config.DescriptorConfig()
    assert (explicit.descriptors.twojmax, explicit.descriptors.rcutfac) == (10, 4.67637)


def test_descriptor_section_is_declared_by_snap_params(tmp_path):
    """The SNAP keys of the input are SnapParams's fields (one declaration), behind the backend; a config
    survives pickling (it is broadcast to the ranks) and gives the SnapParams it describes."""
    import dataclasses
    import pickle

    from mldft_app.descriptors import SnapParams

    names = [f.name for f in dataclasses.fields(config.DescriptorConfig)]
    assert names == ["backend"] + [f.name for f in dataclasses.fields(SnapParams)]
    cfg = config.parse_config({**GOOD_PREDICT, "descriptors": {"twojmax": 4, "rcutfac": 4.0}}, tmp_path)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.descriptors.snap_params() == SnapParams(twojmax=4, rcutfac=4.0)
    singular = config.parse_config({**GOOD_PREDICT, "descriptors": {"rfac0": 1.0}}, tmp_path)
    with pytest.raises(UserInputError, match="'descriptors': rfac0 must lie in"):
        singular.descriptors.snap_params()


def test_task_registry_gives_schema_runner_and_claimed_output(tmp_path):
    """config.TASKS is the one list of tasks: the command line imports each runner from it and locks the
    output key it names."""
    from mldft_app import cli

    assert list(config.TASKS) == ["predict", "train", "convert", "postprocess", "datagen", "evaluate"]
    for name, entry in config.TASKS.items():
        assert callable(cli.task_runner(name)) and entry.runner.endswith(f":run_{name}")
    cfg = config.parse_config(GOOD_PREDICT, tmp_path)
    assert cli.claimed_output(cfg) == str(tmp_path / "out.h5")
    with pytest.raises(UserInputError, match="'task': expected one of predict, train"):
        config.parse_config({**GOOD_PREDICT, "task": ["predict"]}, tmp_path)


def with_(path, value):
    data = yaml.safe_load(yaml.safe_dump(GOOD_PREDICT))
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "data,fragment",
    [
        (with_("grid.shape", [10, 10]), "'grid.shape'"),
        (with_("grid.shape", [10, 0, 10]), "'grid.shape[1]'"),
        (with_("grid.shape", "45"), "'grid.shape'"),
        (with_("model.device", "tpu"), "'model.device'"),
        (with_("model.batch_size", 0), "'model.batch_size'"),
        (with_("model.batch_size", 2.5), "'model.batch_size'"),
        (with_("model.file", KeyError), "'model.file' is missing"),
        (with_("output", KeyError), "'output' is missing"),
        (with_("structure.fiel", "x"), "'structure.fiel' is not known"),
        (with_("descriptors.twojmax", -2), "'descriptors.twojmax'"),
        (with_("descriptors.switchflag", 2), "'descriptors.switchflag'"),
        (with_("physics.temperature", "hot"), "'physics.temperature'"),
        (with_("output.overwrite", "yes"), "'output.overwrite'"),
        (with_("task", "dance"), "'task'"),
        (with_("colour", "red"), "'colour' is not known"),
        ([1, 2], "YAML mapping"),
    ],
)
def test_bad_inputs_name_the_key(data, fragment):
    with pytest.raises(UserInputError) as err:
        config.parse_config(data, ".")
    assert fragment in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(UserInputError, match="cannot read input file"):
        config.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: predict\n  grid: [1,\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        config.load_config(bad)


def test_reference_doc_is_generated_from_the_schema():
    committed = (REPO / "docs" / "input_reference.md").read_text()
    assert committed == config.reference_markdown(), "regenerate: mldft_app --input-reference > docs/input_reference.md"
    for key in ("descriptors.rcutfac", "physics.temperature", "training.patience"):
        assert f"`{key}`" in committed
