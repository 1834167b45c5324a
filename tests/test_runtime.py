"""ONNX export and the onnxruntime backend, against the exact float32 torch path, on real photos.

The graphs are exported once per session (``anymask export`` into a tmp dir; the runtime's own cache for the
predictor backends) and every check reuses them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
import onnxruntime as ort  # noqa: E402

from anymask import Predictor  # noqa: E402
from anymask.cli import main  # noqa: E402
from anymask.errors import ModelError  # noqa: E402
from anymask.runtime import resolve_backend  # noqa: E402

from conftest import EXAMPLE_IMAGE, load_mask  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="session")
def exported(tmp_path_factory, mobile_sam) -> dict:
    """``anymask export mobile_sam -o DIR``, run once: the folder and its two sessions."""
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "mobile_sam", "-o", str(out), "-q"]) == 0
    return {"dir": out, "encoder": ort.InferenceSession(str(out / "encoder.onnx")),
            "decoder": ort.InferenceSession(str(out / "decoder.onnx"))}


@pytest.fixture(scope="session")
def onnx_predictor(mobile_sam) -> Predictor:
    return Predictor(mobile_sam, backend="onnx")


@pytest.fixture(scope="session")
def torch_predictor(mobile_sam) -> Predictor:
    return Predictor(mobile_sam, backend="torch")


def _decoder_feed(features, coords, labels, size, multimask, mask_input=None):
    batch = len(coords)
    return {
        "image_embeddings": features, "point_coords": np.asarray(coords, np.float32),
        "point_labels": np.asarray(labels, np.float32),
        "mask_input": np.zeros((batch, 1, 256, 256), np.float32) if mask_input is None else mask_input,
        "has_mask_input": np.full(batch, 0.0 if mask_input is None else 1.0, np.float32),
        "orig_im_size": np.array(size, np.int64), "multimask": np.array([int(multimask)], np.int64),
    }


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(512, 512), (384, 512)], ids=["square", "wide"])
def test_exported_graphs_match_torch(exported, torch_predictor, shape):
    """The user-facing graphs give the torch path's masks on square and non-square images (the official
    segment-anything 1.0 export is wrong on square ones)."""
    meta = json.loads((exported["dir"] / "model.json").read_text())
    assert set(meta["decoder"]["inputs"]) == {i.name for i in exported["decoder"].get_inputs()}
    assert meta["encoder"]["inputs"].keys() == {i.name for i in exported["encoder"].get_inputs()}
    image = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB"))[: shape[0], : shape[1]]
    embedding = torch_predictor.set_image(image)
    features = exported["encoder"].run(None, {"image": torch_predictor.resize(image)})[0]
    assert np.abs(features - embedding.features).max() < 1e-3

    click = [[210.0, 140.0]]
    masks, scores, low = torch_predictor.predict(points=click, labels=[1], multimask=True)
    out_masks, out_scores, out_low = exported["decoder"].run(
        None, _decoder_feed(features, [click + [[0, 0]]], [[1, -1]], shape, multimask=True))
    assert out_masks.shape == (1, 3, *shape)
    assert min(iou(a > 0, b) for a, b in zip(out_masks[0], masks)) >= 0.999
    np.testing.assert_allclose(out_scores[0], scores, atol=1e-3)

    boxes = np.array([[150, 60, 330, 380], [40, 200, 250, 380]], np.float64)
    masks, scores, low = torch_predictor.predict(box=boxes, multimask=False)
    out_masks, out_scores, _ = exported["decoder"].run(
        None, _decoder_feed(features, boxes.reshape(2, 2, 2), [[2, 3], [2, 3]], shape, multimask=False))
    assert out_masks.shape == (2, 1, *shape)
    assert min(iou(a > 0, b) for a, b in zip(out_masks[:, 0], masks[:, 0])) >= 0.999

    refined, _, _ = torch_predictor.predict(points=click, labels=[1], mask_input=low[0], multimask=False)
    out_masks, _, _ = exported["decoder"].run(
        None, _decoder_feed(features, [click + [[0, 0]]], [[1, -1]], shape, False, mask_input=low[:1]))
    assert iou(out_masks[0, 0] > 0, refined[0]) >= 0.999


@pytest.mark.slow
def test_onnx_backend_matches_torch_on_real_photos(onnx_predictor, torch_predictor, real_instances):
    """Clicks, boxes, a box batch and a 24-point low-res batch (3 decoder chunks, as the automatic mask generator
    decodes): masks IoU >= 0.999 against torch fp32."""
    ious = []
    for index, row in enumerate(real_instances[::6]):
        mask = load_mask(row["mask"])
        ys, xs = np.nonzero(mask)
        point = [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]]
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        boxes = np.array([box, [0, 0, mask.shape[1] / 2, mask.shape[0] / 2]], np.float64)
        for p in (onnx_predictor, torch_predictor):
            p.set_image(row["image"])
        for kwargs in ({"points": point, "labels": [1]}, {"box": box, "multimask": False},
                       {"box": boxes, "points": point, "labels": [1], "multimask": False}):
            got, want = onnx_predictor.predict(**kwargs)[0], torch_predictor.predict(**kwargs)[0]
            ious += [iou(a, b) for a, b in zip(got.reshape(-1, *mask.shape), want.reshape(-1, *mask.shape))]
        if index:
            continue
        grid = np.stack(np.meshgrid(np.linspace(5, mask.shape[1] - 5, 6), np.linspace(5, mask.shape[0] - 5, 4)), -1)
        grid = grid.reshape(24, 1, 2)
        got, got_scores = onnx_predictor.predict_low_res(points=grid, labels=np.ones((24, 1)))
        want, want_scores = torch_predictor.predict_low_res(points=grid, labels=np.ones((24, 1)))
        assert got.shape == want.shape == (24, 3, 256, 256)
        np.testing.assert_allclose(got_scores, want_scores, atol=2e-3)
        ious += [iou(a > 0, b > 0) for a, b in zip(got.reshape(-1, 256, 256), want.reshape(-1, 256, 256))]
    assert min(ious) >= 0.999, sorted(ious)[:5]


def test_default_backend_is_onnx_on_the_cpu(mobile_sam, monkeypatch):
    monkeypatch.delenv("ANYMASK_BACKEND", raising=False)
    assert resolve_backend("auto", mobile_sam) == "onnx"
    monkeypatch.setenv("ANYMASK_BACKEND", "torch")
    assert resolve_backend("auto", mobile_sam) == "torch"
    assert resolve_backend("onnx", mobile_sam) == "onnx"
    with pytest.raises(ModelError, match="unknown backend"):
        resolve_backend("tensorrt", mobile_sam)
    monkeypatch.setenv("ANYMASK_BACKEND", "bogus")
    with pytest.raises(ModelError, match="unknown backend"):
        Predictor(mobile_sam)


def test_sessions_spin_only_while_a_run_lasts(onnx_predictor):
    """Threads spin-wait between a run's parallel sections and stop when it returns (see runtime.OnnxRunner;
    the speed benchmark's ``click_after_pause`` measures what it is for)."""
    runner = onnx_predictor._runner
    for session in (runner.encoder, runner.decoder_prepare, runner.decoder_prepared, runner.decoder):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_a_failed_encode_keeps_the_last_image(mobile_sam, example_image_path, monkeypatch):
    """set_image drops the last image's decoder inputs before the encoder runs (they pinned blocks of the
    onnxruntime arena); if the encoder fails they are restored, and prompts decode as before."""
    import onnxruntime as ort

    predictor = Predictor(mobile_sam, backend="onnx")
    predictor.set_image(example_image_path)
    masks, scores, logits = predictor.predict(points=[[256, 200]], labels=[1])

    def failing(*args, **kwargs):
        raise ort.capi.onnxruntime_pybind11_state.RuntimeException("out of memory")

    monkeypatch.setattr(predictor._runner, "encode", failing)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.RuntimeException):
        predictor.set_image(np.zeros((300, 400, 3), np.uint8))
    again = predictor.predict(points=[[256, 200]], labels=[1])
    np.testing.assert_array_equal(again[0], masks)
    np.testing.assert_allclose(again[1], scores, atol=1e-6)
    np.testing.assert_allclose(again[2], logits, atol=1e-5)
    assert predictor.embedding.original_size == (512, 512)


def test_export_rejects_an_old_opset(tmp_path, capsys):
    assert main(["export", "mobile_sam", "-o", str(tmp_path), "--opset", "11"]) != 0
    assert "opset" in capsys.readouterr().err
    assert not (tmp_path / "encoder.onnx").exists()
