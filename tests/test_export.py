"""``jaxmlp.export`` and ``jaxmlp export``: an exported model scores images as jaxmlp does.

The library functions are checked on random parameters for every activation; the command on one
small trained run, whose ONNX file (run by onnxruntime) and jax.export file (run in a process
that never imports jaxmlp) give the class scores of :func:`jaxmlp.forward` and classify the test
set exactly as ``jaxmlp evaluate`` counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import onnx
import onnxruntime
import pytest
from cli_support import assert_one_line_error, require_mnist, restore_final, run, small_run

import jaxmlp
from jaxmlp import cli, data, export
from jaxmlp.cli import config as cfglib
from jaxmlp.cli import export as export_command
from jaxmlp.cli import runs

TOLERANCE = 1e-5  # max |difference| of the class scores (float32 logits of size ~1..10)
SIZES = (784, 32, 16, 10)

# Runs a jax.export file in a fresh interpreter that imports jax and numpy only:
# python -c RUN_EXPORTED FILE IMAGES.npy SCORES.npy
RUN_EXPORTED = """
import sys
import jax
import numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
np.save(sys.argv[3], np.asarray(exported.call(np.load(sys.argv[2]))))
assert not [m for m in sys.modules if m.split(".")[0] == "jaxmlp"], "jaxmlp was imported"
"""


def random_model(seed: int = 0):
    """Parameters with random weights and biases (init="normal"), and images in [0, 1]."""
    key, image_key = jax.random.split(jax.random.key(seed))
    params = jaxmlp.init_mlp(key, SIZES, init="normal", init_scale=0.1)
    images = np.asarray(jax.random.uniform(image_key, (7, SIZES[0]), np.float32))
    return params, images


def onnx_scores(model_or_path, images: np.ndarray) -> np.ndarray:
    source = (
        str(model_or_path) if isinstance(model_or_path, Path) else model_or_path.SerializeToString()
    )
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run([export.OUTPUT_NAME], {export.INPUT_NAME: images})[0]


def jax_export_scores_without_jaxmlp(path: Path, images: np.ndarray, folder: Path) -> np.ndarray:
    np.save(folder / "images.npy", images)
    subprocess.run(
        [sys.executable, "-c", RUN_EXPORTED, path, folder / "images.npy", folder / "scores.npy"],
        check=True,
        cwd=folder,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return np.load(folder / "scores.npy")


# --------------------------------------------------------------------------------------------
# The library, on random parameters


@pytest.mark.parametrize("activation", list(jaxmlp.ACTIVATIONS))
def test_onnx_model_is_the_forward_pass(activation):
    params, images = random_model()
    metadata = {"jaxmlp.normalize": "unit", "jaxmlp.layer_sizes": list(SIZES)}
    model = export.to_onnx(params, activation=activation, metadata=metadata)
    onnx.checker.check_model(model, full_check=True)
    op = export.ONNX_ACTIVATIONS[activation]
    assert [node.op_type for node in model.graph.node] == ["Gemm", op, "Gemm", op, "Gemm"]
    assert model.opset_import[0].version == export.ONNX_OPSET
    assert {p.key: p.value for p in model.metadata_props} == {
        "jaxmlp.normalize": "unit",
        "jaxmlp.layer_sizes": "[784, 32, 16, 10]",
    }
    expected = np.asarray(jaxmlp.forward(params, images, activation=activation))
    for batch in (images, images[:1]):  # the batch dimension is dynamic
        scores = onnx_scores(model, batch)
        assert scores.dtype == np.float32 and scores.shape == (len(batch), 10)
        np.testing.assert_allclose(scores, expected[: len(batch)], rtol=0, atol=TOLERANCE)


def test_onnx_model_declares_images_in_and_scores_out():
    params, _ = random_model()
    graph = export.to_onnx(params).graph
    for value, name, features in ((graph.input[0], "images", 784), (graph.output[0], "scores", 10)):
        dims = value.type.tensor_type.shape.dim
        assert value.name == name
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", features]


@pytest.mark.parametrize("activation", list(jaxmlp.ACTIVATIONS))
def test_jax_export_is_the_forward_pass(activation):
    params, images = random_model()
    exported = export.to_jax_export(params, activation=activation)
    assert exported.platforms == export.JAX_PLATFORMS
    assert str(exported.in_avals[0]) == "float32[batch,784]"
    assert str(exported.out_avals[0]) == "float32[batch,10]"
    restored = jax.export.deserialize(exported.serialize())
    expected = np.asarray(jaxmlp.forward(params, images, activation=activation))
    for batch in (images, images[:1]):
        scores = np.asarray(restored.call(batch))
        np.testing.assert_allclose(scores, expected[: len(batch)], rtol=0, atol=TOLERANCE)


def test_save_jax_export_writes_the_program_and_its_metadata_beside_it(tmp_path):
    params, images = random_model()
    path = export.save_jax_export(
        export.to_jax_export(params), tmp_path / "m.jax", metadata={"jaxmlp.normalize": "unit"}
    )
    assert export.metadata_path(path) == tmp_path / "m.jax.json"
    assert json.loads((tmp_path / "m.jax.json").read_text()) == {"jaxmlp.normalize": "unit"}
    restored = jax.export.deserialize(path.read_bytes())
    np.testing.assert_allclose(
        restored.call(images), jaxmlp.forward(params, images), rtol=0, atol=TOLERANCE
    )


def test_save_onnx_writes_a_file_onnxruntime_runs(tmp_path):
    params, images = random_model()
    path = export.save_onnx(export.to_onnx(params, activation="tanh"), tmp_path / "m.onnx")
    np.testing.assert_allclose(
        onnx_scores(path, images),
        jaxmlp.forward(params, images, activation="tanh"),
        rtol=0,
        atol=TOLERANCE,
    )


def test_a_float64_model_is_exported_in_float32(x64):
    params, images = random_model()
    wide = jax.tree.map(lambda a: a.astype(np.float64), params)
    expected = np.asarray(jaxmlp.forward(params, images))
    np.testing.assert_allclose(onnx_scores(export.to_onnx(wide), images), expected, atol=TOLERANCE)
    scores = export.to_jax_export(wide).call(images)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("build", [export.to_onnx, export.to_jax_export])
def test_an_unknown_activation_is_refused(build):
    params, _ = random_model()
    with pytest.raises(ValueError, match="activation"):
        build(params, activation="gelu")


def test_to_onnx_without_onnx_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    params, _ = random_model()
    with pytest.raises(ImportError, match=r"pip install onnx") as caught:
        export.to_onnx(params)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("dataset", list(data.DATASETS))
@pytest.mark.parametrize("method", data.NORMALIZATIONS)
def test_the_stated_formula_is_the_normalization(method, dataset):
    pixels = np.arange(256, dtype=np.uint8)
    formula = export_command.normalization_formula(data.normalization(method, dataset))
    stated = eval(formula, {"x": pixels.astype(np.float64)})  # the formula, as a reader takes it
    np.testing.assert_allclose(
        stated, data.normalize_images(pixels, method, dataset), rtol=1e-6, atol=1e-6
    )


# --------------------------------------------------------------------------------------------
# The command, on one small trained run


def main(*argv) -> tuple[int, str]:
    """``jaxmlp ARGV...`` in this process, outside a test's capsys: (exit status, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main([str(a) for a in argv])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 784-16-10 ReLU run trained for 2 epochs on 1000 images (300 test images)."""
    require_mnist()
    root = tmp_path_factory.mktemp("export")
    argv = small_run(16, "--no-plots", "--epochs", "2", "--seed", "1", "-q")
    code, _ = main("train", "--runs-dir", root / "runs", "--name", "small", *argv)
    assert code == 0
    return root / "runs" / "small"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, dict]:
    """The JSON event of ``jaxmlp export small --format F --output FILE --json``, by format."""
    folder = tmp_path_factory.mktemp("exported")
    events = {}
    for form, name in (("onnx", "small.onnx"), ("jax", "small.jax")):
        code, stdout = main(
            "export", trained, "--format", form, "--output", folder / name, "--json"
        )
        assert code == 0
        events[form] = json.loads(stdout)
    return events


@pytest.fixture(scope="module")
def test_set(trained):
    """(normalized test images, labels, jaxmlp's logits of them) of the trained run."""
    config = cfglib.load(trained / "config.json")
    _, _, _, (images, labels) = runs.load_data(config, download=False)
    restored = restore_final(trained)
    logits = np.asarray(jaxmlp.forward(restored.state.params, images, activation="relu"))
    return images, labels, logits


def evaluated_correct(run_dir: Path) -> int:
    code, stdout = main("evaluate", run_dir, "--json", "--no-plots")
    assert code == 0
    return json.loads(stdout)["correct"]


def test_onnx_export_scores_and_classifies_as_jaxmlp(trained, exported, test_set):
    images, labels, logits = test_set
    scores = onnx_scores(Path(exported["onnx"]["output"]), images)
    assert np.abs(scores - logits).max() <= TOLERANCE
    assert int(np.sum(scores.argmax(-1) == labels)) == evaluated_correct(trained)


def test_jax_export_scores_and_classifies_as_jaxmlp_without_jaxmlp(
    trained, exported, test_set, tmp_path
):
    images, labels, logits = test_set
    scores = jax_export_scores_without_jaxmlp(Path(exported["jax"]["output"]), images, tmp_path)
    assert np.abs(scores - logits).max() <= TOLERANCE
    assert int(np.sum(scores.argmax(-1) == labels)) == evaluated_correct(trained)


def test_the_metadata_says_how_to_feed_the_model_and_what_it_gives(trained, exported):
    expected = {
        "jaxmlp.version": jaxmlp.__version__,
        "jaxmlp.run": "small",
        "jaxmlp.epoch": 2,
        "jaxmlp.dataset": "mnist",
        "jaxmlp.class_names": [str(i) for i in range(10)],
        "jaxmlp.layer_sizes": [784, 16, 10],
        "jaxmlp.activation": "relu",
        "jaxmlp.output": "softmax",
        "jaxmlp.dtype": "float32",
        "jaxmlp.normalize": "unit",
        "jaxmlp.normalize.formula": "x / 255",
        "jaxmlp.normalize.mean": 0.0,
        "jaxmlp.normalize.std": 1.0,
    }
    sidecar = json.loads(Path(exported["jax"]["metadata_file"]).read_text())
    assert exported["jax"]["metadata_file"] == exported["jax"]["output"] + ".json"
    assert sidecar.items() >= expected.items()
    assert "x / 255" in sidecar["jaxmlp.input"] and "logits" in sidecar["jaxmlp.scores"]
    assert sidecar["jaxmlp.platforms"] == ["cpu", "cuda"]
    # The ONNX file holds the same, strings as they are and other values as JSON.
    metadata = {k: v for k, v in sidecar.items() if k != "jaxmlp.platforms"}
    props = onnx.load(exported["onnx"]["output"]).metadata_props
    assert {p.key: p.value for p in props} == {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()
    }
    assert exported["onnx"]["metadata"] == metadata
    for event in exported.values():
        assert event["epoch"] == 2 and event["run_dir"] == str(trained)
        assert event["bytes"] == Path(event["output"]).stat().st_size


def test_help_lists_every_option_and_the_defaults(capsys):
    code, out, _ = run(capsys, "export", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for option in ("--format {onnx,jax}", "--output FILE", "--overwrite", "--runs-dir", "--json"):
        assert option in flat
    assert "(default: None)" not in flat  # --format and --output are required
    assert "--runs-dir DIR where run names are looked up (default: runs)" in flat


def test_export_prints_one_line_saying_what_it_wrote(trained, tmp_path, capsys):
    code, stdout, _ = run(capsys, "export", trained, "--format", "onnx", "--output", tmp_path / "m")
    assert code == 0
    [line] = stdout.strip().splitlines()
    for fragment in (
        f"wrote {tmp_path / 'm'}",
        "ONNX",
        "epoch 2",
        "784-16-10 relu",
        "unit: x / 255",
    ):
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize("form", ["onnx", "jax"])
def test_overwrite_replaces_an_existing_file(trained, tmp_path, capsys, form):
    path = tmp_path / "m"
    for existing in (path, export.metadata_path(path)):
        existing.write_bytes(b"old")
    argv = ("export", trained, "--format", form, "--output", path, "--overwrite")
    assert run(capsys, *argv)[0] == 0
    assert path.read_bytes() != b"old"
    assert (export.metadata_path(path).read_bytes() != b"old") == (form == "jax")


def _no_checkpoint(trained: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "untrained"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_bytes((trained / "config.json").read_bytes())
    return run_dir


# name -> (arguments after `jaxmlp export` from (trained run, output folder), what the one-line
# error says, whether argparse reports it)
BAD_INPUT = {
    "no such run": (lambda t, d: ["nope", "--runs-dir", d], ["no run 'nope'"], False),
    "no checkpoint": (lambda t, d: [_no_checkpoint(t, d)], ["has no checkpoint yet"], False),
    "no such folder": (
        lambda t, d: [t, "--output", d / "missing" / "m.onnx"],
        ["missing does not exist"],
        False,
    ),
    "unknown format": (lambda t, d: [t, "--format", "tflite"], ["invalid choice: 'tflite'"], True),
    "output exists": (
        lambda t, d: [t, "--output", d / "old.onnx"],
        ["exists", "--overwrite"],
        False,
    ),
    "metadata file exists": (
        lambda t, d: [t, "--format", "jax", "--output", d / "old"],
        ["old.json exists", "--overwrite"],
        False,
    ),
    "output is a folder": (lambda t, d: [t, "--output", d / "folder"], ["is a directory"], False),
    "onnx missing": (lambda t, d: [t], ["pip install onnx"], False),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    trained, tmp_path, capsys, monkeypatch, case
):
    arguments, fragments, usage = BAD_INPUT[case]
    (tmp_path / "old.onnx").write_bytes(b"old")
    (tmp_path / "old.json").write_bytes(b"old")
    (tmp_path / "folder").mkdir()
    if case == "onnx missing":
        monkeypatch.setitem(sys.modules, "onnx", None)
    argv = ["--format", "onnx", "--output", tmp_path / "m.onnx", *arguments(trained, tmp_path)]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "export", *argv)
    assert_one_line_error(code, err, *fragments, usage=usage)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
