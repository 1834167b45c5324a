"""Tests of anymask.session (interactive clicks, box, undo) with the real MobileSAM model on the astronaut.

The shared ``predictor`` fixture holds the encoded astronaut photo; sessions never change its image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from anymask.errors import PromptError
from anymask.images import load_image
from anymask.masks import iou
from anymask.session import (
    DEFAULT_STRATEGY,
    LARGER_FIRST_STRATEGY,
    SAM_STRATEGY,
    InteractiveSession,
    SessionStrategy,
)

from conftest import EXAMPLE_IMAGE, load_mask, read_index

H = W = 512
SHUTTLE_CLICK = (405.0, 150.0)  # on the white orbiter of the space-shuttle model (top right)
SKY_CLICK = (480.0, 40.0)  # dark background above it
HELMET_BOX = (275.0, 340.0, 512.0, 512.0)  # the black helmet at the bottom right


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(EXAMPLE_IMAGE)


def test_clicks_give_a_mask_and_undo_goes_back(predictor):
    session = predictor.session()
    assert session.mask.shape == (H, W) and session.mask.dtype == bool and not session.mask.any()
    assert session.score is None
    first = session.add_click(*SHUTTLE_CLICK)
    assert first.shape == (H, W) and first.dtype == bool
    assert first[int(SHUTTLE_CLICK[1]), int(SHUTTLE_CLICK[0])]
    assert 0 < first.mean() < 0.5 and isinstance(session.score, float)
    second = session.add_click(*SKY_CLICK, positive=False)
    assert not second[int(SKY_CLICK[1]), int(SKY_CLICK[0])]
    assert session.clicks == [(*SHUTTLE_CLICK, True), (*SKY_CLICK, False)]
    assert np.array_equal(session.undo(), first) and np.array_equal(session.mask, first)
    assert session.clicks == [(*SHUTTLE_CLICK, True)]
    assert not session.undo().any() and session.clicks == []
    with pytest.raises(PromptError, match="nothing to undo"):
        session.undo()


def test_sam_strategy_matches_the_predictor(predictor):
    """SAM's protocol in a session: best of 3 on the first click, then 1 mask with the logits fed back."""
    session = InteractiveSession(predictor, strategy=SAM_STRATEGY)
    masks, scores, logits = predictor.predict(points=[SHUTTLE_CLICK], labels=[1])
    best = int(np.argmax(scores))
    assert np.array_equal(session.add_click(*SHUTTLE_CLICK), masks[best])
    again, _, _ = predictor.predict(points=[SHUTTLE_CLICK, SKY_CLICK], labels=[1, 0],
                                    mask_input=logits[best][None], multimask=False)
    assert np.array_equal(session.add_click(*SKY_CLICK, positive=False), again[0])


def test_default_strategy_keeps_the_largest_near_best_candidate(predictor):
    """The default first click: the largest candidate whose predicted IoU is within 0.05 of the best."""
    assert DEFAULT_STRATEGY.prefer_larger == 0.05
    for click in (SHUTTLE_CLICK, (300.0, 420.0), (200.0, 200.0)):
        masks, scores, _ = predictor.predict(points=[click], labels=[1])
        near = [i for i in range(3) if scores[i] >= scores.max() - 0.05]
        expected = max(near, key=lambda i: (masks[i].sum(), -i))
        if click == SHUTTLE_CLICK:  # here the whole model (score 0.944) beats a part of it (0.948)
            assert expected != int(np.argmax(scores))
        session = InteractiveSession(predictor)
        assert np.array_equal(session.add_click(*click), masks[expected])
        assert session.score == pytest.approx(float(scores[expected]))


def test_default_strategy_floors_the_fed_back_logits(predictor):
    """After the first click the default feeds the previous logits back raised to at least -10."""
    assert DEFAULT_STRATEGY.logit_floor == -10.0 and DEFAULT_STRATEGY.logit_ceiling is None
    session = InteractiveSession(predictor)
    first = session.add_click(*SHUTTLE_CLICK)
    low, scores = predictor.predict_low_res(np.array([SHUTTLE_CLICK]), np.array([1]), multimask=True)
    fed = next(logits for logits, mask in zip(low[0], predictor.masks_from_low_res(low[0]))
               if np.array_equal(mask, first))  # the logits of the candidate the session kept
    assert fed.min() < -10  # SAM's background logits are far below the floor: it changes what is fed back
    second = session.add_click(*SKY_CLICK, positive=False)
    expected, _, _ = predictor.predict(points=[SHUTTLE_CLICK, SKY_CLICK], labels=[1, 0],
                                       mask_input=np.maximum(fed, -10.0)[None], multimask=False)
    assert np.array_equal(second, expected[0])
    unfloored, _, _ = predictor.predict(points=[SHUTTLE_CLICK, SKY_CLICK], labels=[1, 0], mask_input=fed[None],
                                        multimask=False)
    assert 0.8 < iou(second, unfloored[0]) < 1.0  # a small change of the same object


@pytest.mark.slow
def test_logit_floor_lets_clicks_fix_a_stalled_object(mobile_sam, shared_data):
    """Berkeley 271031 (a small object, the click benchmark's protocol): with SAM's saturated fed-back logits
    the third click leaves the mask below 0.90 IoU (0.898; it never gets there in 20 clicks), with the floor
    the same three clicks reach it (0.902). The margin is small but the same on the torch and onnx backends."""
    from anymask import Predictor
    from anymask.evaluation import SessionAdapter, evaluate_instance

    row = next(r for r in read_index(shared_data / "berkeley") if Path(r["mask"]).stem == "271031")
    image, gt = load_image(row["image"]), load_mask(row["mask"])
    predictor = Predictor(mobile_sam)
    predictor.set_image(image)
    embedding = predictor.embedding
    results = {}
    for name, strategy in (("floor", DEFAULT_STRATEGY), ("plain", LARGER_FIRST_STRATEGY)):
        adapter = SessionAdapter(predictor, strategy, embed=lambda image, key: embedding)
        adapter.set_image(image, "271031")
        results[name] = evaluate_instance(adapter, gt, max_clicks=3, min_clicks=3, box=False)
    floor, plain = results["floor"], results["plain"]
    assert floor.clicks == plain.clicks  # same first clicks (the masks after clicks 1 and 2 are the same)
    assert max(plain.ious[:3]) < 0.90 <= floor.ious[2], (plain.ious[:3], floor.ious[:3])


def test_box_prompt_and_box_with_clicks(predictor):
    session = predictor.session()
    mask = session.add_box(HELMET_BOX)
    expected, _, _ = predictor.predict(box=HELMET_BOX, multimask=False)
    assert iou(mask, expected[0]) > 0.95  # the default strategy zooms on boxes only when asked to
    assert np.array_equal(session.box, np.array(HELMET_BOX))
    inside = mask[340:, 275:].sum() / max(mask.sum(), 1)
    assert inside > 0.95
    with_click = session.add_click(400, 420)
    assert with_click.shape == (H, W) and with_click[420, 400]
    session.undo()
    assert np.array_equal(session.mask, mask)


def test_bad_prompts_raise_prompt_errors(predictor):
    session = predictor.session()
    for x, y in ((-1, 10), (10, H + 1), (W + 0.5, 3), (float("nan"), 3)):
        with pytest.raises(PromptError, match="outside"):
            session.add_click(x, y)
    for box in ((10, 10, 5, 20), (0, 0, W + 10, 10), (1, 2, 3), ("a", 1, 2, 3)):
        with pytest.raises((PromptError, ValueError)):
            session.add_box(box)
    with pytest.raises(PromptError, match="size"):
        predictor.session(np.zeros((10, 10, 3), dtype=np.uint8))
    assert session.clicks == [] and session.box is None  # nothing was recorded


def test_zoom_in_encodes_a_crop_around_the_object(predictor, astronaut):
    strategy = dataclasses.replace(DEFAULT_STRATEGY, zoom_after=2)
    session = predictor.session(astronaut, strategy=strategy)
    before = predictor.embedding.features.copy()
    first = session.add_click(*SHUTTLE_CLICK)
    assert session.crop_encodings == 0 and session.crop is None and first.any()
    zoomed = session.add_click(*SKY_CLICK, positive=False)
    assert session.crop_encodings == 1  # the shuttle is small: one crop, encoded once
    assert zoomed.shape == (H, W) and zoomed[int(SHUTTLE_CLICK[1]), int(SHUTTLE_CLICK[0])]
    x0, y0, x1, y1 = session.crop
    assert x0 <= SHUTTLE_CLICK[0] <= x1 and y0 <= SHUTTLE_CLICK[1] <= y1
    assert (x1 - x0) * (y1 - y0) <= strategy.zoom_max_area * H * W
    assert zoomed[y0:y1, x0:x1].sum() == zoomed.sum() > 0  # decoded in the crop, pasted back in place
    session.add_click(410, 160)
    assert session.crop_encodings == 1  # a click inside the crop re-uses its embedding
    assert np.array_equal(predictor.embedding.features, before)  # the shared predictor kept its image


def test_no_zoom_without_image_and_clean_up(predictor):
    strategy = SessionStrategy(zoom_after=1, min_region=0.05)
    session = predictor.session(strategy=strategy)  # no image given: zoom impossible
    mask = session.add_click(*SHUTTLE_CLICK)
    assert session.crop_encodings == 0 and mask[int(SHUTTLE_CLICK[1]), int(SHUTTLE_CLICK[0])]
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert all(stats[i, cv2.CC_STAT_AREA] >= 0.05 * mask.sum() for i in range(1, count))
