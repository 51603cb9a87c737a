"""RoI heads whose predictors take the class embeddings as an input (torchvision parts otherwise)."""
from __future__ import annotations

from typing import Protocol

import torch
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss


class BoxScoreRelay(Protocol):
    """What the heads need of a relay (``zeroseg.relay.BoxRelay`` is one)."""

    embeddings: torch.Tensor  # [V, D], scored by the box head beside the asked labels

    def __call__(self, direct: torch.Tensor, vocabulary_logits: torch.Tensor) -> torch.Tensor: ...


class ZSIRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with semantic predictors and their reconstruction losses.

    ``class_embeddings`` [K, D] (row 0 = background) is passed with every call, so the label
    set can change between calls; ``logit_offsets`` [K] is added to the box scores at
    inference only (GZSI calibration: a negative offset on seen classes). ``relay`` (inference
    only, e.g. ``zeroseg.relay.BoxRelay``) has ``.embeddings`` [V, D] (L2-normalized rows, like
    the labels'), scored in the same pass, and maps (box logits [N, K], vocabulary logits
    [N, V]) to new box logits before the offsets. ``score_thresh`` (inference only) replaces the
    configured candidate threshold for one call.
    """

    def __init__(self, *args, reconstruction_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.reconstruction_weight = float(reconstruction_weight)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], class_embeddings: torch.Tensor,
                targets: list[dict[str, torch.Tensor]] | None = None,
                logit_offsets: torch.Tensor | None = None, relay: BoxScoreRelay | None = None,
                score_thresh: float | None = None) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        labels = matched_idxs = regression_targets = None
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        relayed = relay is not None and not self.training
        rows = torch.cat([class_embeddings, relay.embeddings.to(class_embeddings)]) if relayed else class_embeddings
        class_logits, box_regression, box_reconstruction = self.box_predictor(box_features, rows)
        if relayed:  # the vocabulary's columns name the box; its deltas are the same class-agnostic ones
            k = class_embeddings.shape[0]
            class_logits = relay(class_logits[:, :k], class_logits[:, k:])
            box_regression = box_regression[:, :4 * k]

        result: list[dict[str, torch.Tensor]] = []
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg,
                      "loss_box_reconstruction": self.reconstruction_weight * box_reconstruction}
        else:
            if logit_offsets is not None:
                class_logits = class_logits + logit_offsets
            boxes, scores, det_labels = self._postprocess(class_logits, box_regression, proposals, image_shapes,
                                                          score_thresh)
            result = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, det_labels)]

        if self.training:  # masks are learned on positive proposals only
            mask_proposals, positive_matches = [], []
            for props, lab, idx in zip(proposals, labels, matched_idxs):
                pos = torch.where(lab > 0)[0]
                mask_proposals.append(props[pos])
                positive_matches.append(idx[pos])
        else:
            mask_proposals = [r["boxes"] for r in result]
        mask_features = self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
        if self.training:
            gt_labels = [t["labels"] for t in targets]
            roi_labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, positive_matches)])
            mask_logits, mask_reconstruction = self.mask_predictor(mask_features, class_embeddings, roi_labels)
            # the logits hold only each RoI's own class, so torchvision's loss picks channel 0
            losses["loss_mask"] = maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                                                [torch.zeros_like(lab) for lab in gt_labels], positive_matches)
            losses["loss_mask_reconstruction"] = self.reconstruction_weight * mask_reconstruction
        else:
            roi_labels = torch.cat([r["labels"] for r in result])
            mask_logits, _ = self.mask_predictor(mask_features, class_embeddings, roi_labels,
                                                 with_reconstruction=False)
            probs = mask_logits.sigmoid()
            if len(result) == 1:  # no split: a traced split would freeze the first input's box count (ONNX)
                result[0]["masks"] = probs
            else:
                for p, r in zip(probs.split([len(r["labels"]) for r in result]), result):
                    r["masks"] = p
        return result, losses

    def _postprocess(self, class_logits: torch.Tensor, box_regression: torch.Tensor, proposals: list[torch.Tensor],
                     image_shapes: list[tuple[int, int]], score_thresh: float | None):
        """torchvision's ``postprocess_detections`` with this call's candidate threshold (None:
        the configured one): a caller that scores detections down to 0 (Recall@100) needs every
        box-label pair, one that shows boxes above 0.05 needs no masks for the rest."""
        if score_thresh is None:
            return self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        configured = self.score_thresh
        self.score_thresh = float(score_thresh)
        try:
            return self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        finally:
            self.score_thresh = configured
