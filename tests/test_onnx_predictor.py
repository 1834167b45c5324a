"""The torch-free OnnxPredictor: same results as the onnx backend of Predictor, and torch never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anymask import Predictor
from anymask.errors import ModelError, PromptError
from anymask.masks import iou

pytest.importorskip("onnxruntime")

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
CLICK = [[256.0, 200.0]]  # the astronaut's chest
BOXES = np.array([[150.0, 40.0, 380.0, 300.0], [60.0, 250.0, 470.0, 512.0]])


@pytest.fixture(scope="module")
def export_dir(mobile_sam, tmp_path_factory) -> Path:
    from anymask.export import export_model

    out = tmp_path_factory.mktemp("export")
    export_model(mobile_sam, out)
    return out


@pytest.fixture(scope="module")
def both(mobile_sam, export_dir: Path, example_image_path: Path):
    from anymask.onnx_predictor import OnnxPredictor

    lite = OnnxPredictor(export_dir)
    lite.set_image(example_image_path)
    full = Predictor(mobile_sam, backend="onnx")
    full.set_image(example_image_path)
    return lite, full


def test_export_lists_the_predictor_graphs(export_dir: Path) -> None:
    meta = json.loads((export_dir / "model.json").read_text())
    assert meta["low_res_size"] == [256, 256]
    for name in meta["runtime_graphs"].values():
        assert (export_dir / name).is_file()


def test_click_box_batch_and_mask_input_match_the_onnx_backend(both) -> None:
    lite, full = both
    masks, scores, low = lite.predict(points=CLICK, labels=[1])
    ref_masks, ref_scores, ref_low = full.predict(points=CLICK, labels=[1])
    assert masks.shape == ref_masks.shape == (3, 512, 512) and masks.dtype == bool
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(low, ref_low, atol=1e-3)
    assert min(iou(a, b) for a, b in zip(masks, ref_masks)) >= 0.999
    assert masks[np.argmax(scores)].sum() > 5000  # a real object, not an empty mask

    boxed, box_scores, _ = lite.predict(box=BOXES, multimask=False)
    ref_boxed, ref_box_scores, _ = full.predict(box=BOXES, multimask=False)
    assert boxed.shape == (2, 1, 512, 512)
    np.testing.assert_allclose(box_scores, ref_box_scores, atol=1e-5)
    assert min(iou(a[0], b[0]) for a, b in zip(boxed, ref_boxed)) >= 0.999

    best = low[np.argmax(scores)][None]
    again, again_scores, _ = lite.predict(points=CLICK, labels=[1], mask_input=best)
    ref_again, ref_again_scores, _ = full.predict(points=CLICK, labels=[1], mask_input=best)
    np.testing.assert_allclose(again_scores, ref_again_scores, atol=1e-5)
    assert min(iou(a, b) for a, b in zip(again, ref_again)) >= 0.999

    logits = lite.predict(points=CLICK, labels=[1], return_logits=True)[0]
    assert logits.dtype == np.float32 and np.array_equal(logits > 0, masks)
    assert np.array_equal(lite.masks_from_low_res(low), masks)


def test_bad_input_is_refused(both, tmp_path: Path) -> None:
    from anymask.onnx_predictor import OnnxPredictor

    lite, _ = both
    with pytest.raises(PromptError):
        lite.predict(points=[[600.0, 10.0]], labels=[1])  # outside the 512 x 512 photo
    with pytest.raises(PromptError, match="points or a box"):
        lite.predict(mask_input=np.zeros((256, 256), np.float32))
    with pytest.raises(ModelError, match="anymask export"):
        OnnxPredictor(tmp_path)
    fresh = OnnxPredictor.__new__(OnnxPredictor)
    fresh._embedding = None
    with pytest.raises(PromptError, match="no image"):
        fresh.predict(points=CLICK)


def test_embeddings_move_between_the_predictors(both, tmp_path: Path) -> None:
    """An embedding made by Predictor (saved to a file) decodes in OnnxPredictor exactly as its own does."""
    from anymask.embedding import ImageEmbedding

    lite, full = both
    own = lite.embedding
    assert own.model == "mobile_sam" and own.features.shape == (1, 256, 64, 64) and own.original_size == (512, 512)
    masks, scores, _ = lite.predict(points=CLICK, labels=[1])
    lite.set_embedding(ImageEmbedding.load(full.embedding.save(tmp_path / "astronaut.npz")))
    try:
        again, again_scores, _ = lite.predict(points=CLICK, labels=[1])
        np.testing.assert_allclose(again_scores, scores, atol=1e-4)
        assert min(iou(a, b) for a, b in zip(again, masks)) >= 0.999
        wrong_model = ImageEmbedding(own.features, own.original_size, own.input_size, "vit_b")
        with pytest.raises(ModelError, match="vit_b"):
            lite.set_embedding(wrong_model)
        unpadded = ImageEmbedding(own.features[..., :36, :], (288, 512), (576, 1024), "mobile_sam")
        with pytest.raises(ModelError, match="grid"):
            lite.set_embedding(unpadded)
    finally:
        lite.set_embedding(own)


def test_torch_is_never_imported(export_dir: Path, example_image_path: Path) -> None:
    code = (
        "import sys\n"
        "from anymask.onnx_predictor import OnnxPredictor\n"
        f"p = OnnxPredictor({str(export_dir)!r})\n"
        f"p.set_image({str(example_image_path)!r})\n"
        "masks, scores, _ = p.predict(points=[[256.0, 200.0]], labels=[1])\n"
        "assert masks[scores.argmax()].sum() > 5000\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_SRC)})
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------------------------------------------------
# The cached graphs of load_model(name), found by name without torch
# ---------------------------------------------------------------------------------------------------------


def test_the_onnx_backend_records_its_graphs_under_the_models_names(both) -> None:
    from anymask.runtime import find_named_graphs

    _, full = both  # Predictor(load_model("mobile_sam"), backend="onnx"): the catalogue's weights, default build
    folder = full._runner._folder
    for name in ("mobile_sam", "vit_t", " MOBILE_SAM "):
        assert find_named_graphs(name) == folder
    assert json.loads((folder / "model.json").read_text())["model"] == "mobile_sam"
    assert find_named_graphs("vit_b") is None or find_named_graphs("vit_b") != folder


def test_only_the_catalogues_unchanged_weights_are_recorded(mobile_sam, tmp_path: Path, monkeypatch) -> None:
    import copy

    import torch

    from anymask.export import DEFAULT_OPSET
    from anymask.runtime import RUNTIME_FILES, _record_named_graphs, find_named_graphs, weights_digest

    monkeypatch.setenv("ANYMASK_HOME", str(tmp_path))
    folder = tmp_path / "onnx" / "graphs"
    folder.mkdir(parents=True)
    for name in (*RUNTIME_FILES, "model.json"):
        (folder / name).write_bytes(b"")

    changed = copy.deepcopy(mobile_sam)
    with torch.no_grad():
        changed.mask_decoder.iou_token.weight.add_(1e-3)
    _record_named_graphs(changed, folder, None, DEFAULT_OPSET, weights_digest(changed))
    assert find_named_graphs("mobile_sam") is None  # fine-tuned in memory: not what load_model gives

    plain = copy.deepcopy(mobile_sam)
    plain.mask_decoder.transformer.fold = False  # another build: other graphs
    _record_named_graphs(plain, folder, None, DEFAULT_OPSET, weights_digest(plain))
    assert find_named_graphs("mobile_sam") is None

    _record_named_graphs(mobile_sam, folder, None, DEFAULT_OPSET + 1, weights_digest(mobile_sam))
    assert find_named_graphs("mobile_sam") is None  # another opset

    same = copy.deepcopy(mobile_sam)  # other tensors, the checkpoint's values: checked against the file's
    assert not weights_digest(same).startswith("checkpoint-")
    _record_named_graphs(same, folder, None, DEFAULT_OPSET, weights_digest(same))
    assert find_named_graphs("mobile_sam") == folder == find_named_graphs("vit_t")
    for record in (tmp_path / "onnx" / "by-name").iterdir():
        record.unlink()
    assert find_named_graphs("mobile_sam") is None
    _record_named_graphs(mobile_sam, folder, None, DEFAULT_OPSET, weights_digest(mobile_sam))
    assert find_named_graphs("mobile_sam") == folder == find_named_graphs("vit_t")
    assert find_named_graphs("mobile_sam", "int8") is None
    assert find_named_graphs("../onnx/mobile_sam") is None
    (folder / "encoder.onnx").unlink()  # an incomplete folder is not offered
    assert find_named_graphs("mobile_sam") is None


def test_a_model_loaded_unverified_is_not_recorded(mobile_sam_checkpoint: Path) -> None:
    from anymask import load_model

    assert load_model("mobile_sam", checkpoint=mobile_sam_checkpoint).loaded_from["checkpoint"] == str(
        mobile_sam_checkpoint)
    assert not hasattr(load_model("mobile_sam", checkpoint=mobile_sam_checkpoint, verify=False), "loaded_from")
    assert not hasattr(load_model("mobile_sam", pretrained=False), "loaded_from")


def test_from_pretrained_and_the_segment_command_run_the_cached_graphs_without_torch(
        both, example_image_path: Path, tmp_path: Path) -> None:
    from PIL import Image

    _, full = both  # its graphs are cached and recorded under the model's names
    ref_masks, ref_scores, ref_low = full.predict(points=CLICK, labels=[1])
    out = tmp_path / "out"
    code = (
        "import sys, runpy\n"
        "import numpy as np\n"
        "from anymask.onnx_predictor import OnnxPredictor\n"
        "p = OnnxPredictor.from_pretrained('vit_t')\n"
        f"p.set_image({str(example_image_path)!r})\n"
        f"masks, scores, low = p.predict(points={CLICK!r}, labels=[1])\n"
        f"np.savez({str(tmp_path / 'lite.npz')!r}, masks=masks, scores=scores, low=low)\n"
        f"sys.argv = ['anymask', 'segment', {str(example_image_path)!r}, '--point', '256,200', '-o', {str(out)!r}, "
        "'-q', '--backend', 'onnx']\n"
        "try:\n"
        "    runpy.run_module('anymask', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
    lite = np.load(tmp_path / "lite.npz")
    np.testing.assert_array_equal(lite["masks"], ref_masks)  # the same graphs, the same arrays
    np.testing.assert_array_equal(lite["scores"], ref_scores)
    np.testing.assert_array_equal(lite["low"], ref_low)
    best = int(np.argmax(ref_scores))
    written = np.asarray(Image.open(out / "astronaut_mask.png")) > 0
    np.testing.assert_array_equal(written, ref_masks[best])
    record = json.loads((out / "astronaut.json").read_text())
    assert record["model"] == "mobile_sam" and record["objects"][0]["selected"] == best


def test_batch_embed_and_boxes_workers_run_the_cached_graphs(both, mobile_sam_checkpoint: Path,
                                                             example_image_path: Path, tmp_path: Path) -> None:
    from anymask import ImageEmbedding
    from anymask.batch import TaskSpec
    from anymask.batch.inputs import BatchItem
    from anymask.batch.tasks import ImageWorker
    from anymask.onnx_predictor import OnnxPredictor

    # both's Predictor(load_model("mobile_sam"), backend="onnx") has cached and recorded the graphs
    boxes = [{"box": BOXES[0].tolist(), "label": "shuttle"}, {"box": BOXES[1].tolist()}]
    outputs = {}
    for task, item_boxes in (("embed", None), ("boxes", boxes)):
        item = BatchItem(id="astronaut", image=str(example_image_path), boxes=item_boxes)
        for way, checkpoint in (("cached", None), ("torch model", str(mobile_sam_checkpoint))):
            worker = ImageWorker(TaskSpec(task, backend="onnx", checkpoint=checkpoint, threads=2),
                                 tmp_path / way)
            assert isinstance(worker.predictor, OnnxPredictor) == (checkpoint is None)
            record = worker(item)
            assert record["status"] == "done", record
            outputs[task, way] = tmp_path / way / record["output"]
    cached, loaded = (ImageEmbedding.load(outputs["embed", way]) for way in ("cached", "torch model"))
    np.testing.assert_array_equal(cached.features, loaded.features)
    assert (cached.original_size, cached.input_size, cached.model) == (loaded.original_size, loaded.input_size,
                                                                       loaded.model)
    cached, loaded = (json.loads(outputs["boxes", way].read_text())["annotations"] for way in ("cached", "torch model"))
    assert len(cached) == 2 and cached == loaded  # the same RLE masks, scores and boxes
    assert ImageWorker(TaskSpec("embed", backend="torch"), tmp_path / "t").predictor.backend == "torch"


def test_a_read_only_cache_still_gives_its_graphs(mobile_sam, tmp_path: Path, monkeypatch) -> None:
    from anymask import fileio
    from anymask.errors import OutputError
    from anymask.export import DEFAULT_OPSET
    from anymask.runtime import RUNTIME_FILES, build_graphs, find_named_graphs, graphs_dir, weights_digest

    monkeypatch.setenv("ANYMASK_HOME", str(tmp_path))
    folder = graphs_dir(mobile_sam, None, DEFAULT_OPSET, weights_digest(mobile_sam))
    folder.mkdir(parents=True)
    for name in RUNTIME_FILES:  # graphs cached by an earlier version, without model.json
        (folder / name).write_bytes(b"")

    def refuse(path, text):
        raise OutputError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(fileio, "atomic_write_text", refuse)
    assert build_graphs(mobile_sam) == folder  # no model.json and no record written, no error
    assert find_named_graphs("mobile_sam") is None
    monkeypatch.undo()
    monkeypatch.setenv("ANYMASK_HOME", str(tmp_path))
    (folder / "model.json").write_text("{}")
    monkeypatch.setattr(fileio, "atomic_write_text", refuse)
    assert build_graphs(mobile_sam) == folder  # the record alone cannot be written
    assert find_named_graphs("mobile_sam") is None
