"""Metrics on hand-made label maps whose answers were worked out by hand."""
import math

import numpy as np
import pytest

from zeroseg.eval.metrics import (
    ConfusionMatrix,
    EpisodeMeter,
    harmonic_mean,
    iou_from_confusion,
    mean_iou,
)

# 4x4 ground truth / prediction; per class (target px, predicted px, overlap):
#   0: (4, 5, 3) -> IoU 3/6 = 1/2;  1: (4, 6, 4) -> 4/6 = 2/3;  2: (8, 5, 5) -> 5/8;  3: absent -> NaN
TARGET = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 2, 2],
                   [2, 2, 2, 2]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 1],
                 [2, 2, 0, 0],
                 [1, 2, 2, 2]])


def test_confusion_counts_rows_target_columns_prediction():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    expected = np.array([[3, 1, 0, 0],
                         [0, 4, 0, 0],
                         [2, 1, 5, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm.matrix, expected)


def test_per_class_iou_and_nan_for_absent_class():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [1 / 2, 2 / 3, 5 / 8])
    assert math.isnan(iou[3])
    assert cm.pixel_accuracy() == pytest.approx(12 / 16)


def test_miou_skips_nan_and_respects_subset():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3 + 5 / 8) / 3)
    assert cm.miou([1, 2]) == pytest.approx((2 / 3 + 5 / 8) / 2)
    assert cm.miou([1, 3]) == pytest.approx(2 / 3)  # class 3 is NaN: left out, not counted as 0
    assert math.isnan(cm.miou([3]))
    assert math.isnan(mean_iou(np.array([np.nan, np.nan])))


def test_predicted_but_absent_class_scores_zero_not_nan():
    # class 1 never in target but predicted once: IoU 0 (a false positive), class 0: 3/4
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 0], [0, 1]]), np.zeros((2, 2), dtype=int))
    np.testing.assert_allclose(cm.iou(), [3 / 4, 0.0])


def test_ignore_index_pixels_are_skipped_and_accumulation_adds_up():
    target = np.array([[0, 1], [255, 1]])
    pred = np.array([[1, 1], [0, 0]])  # the ignored pixel's wrong prediction must not count
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(pred, target)
    # class 0: target 1, pred 1 (the ignored px excluded), overlap 0 -> IoU 0/2;
    # class 1: target 2, pred 2, overlap 1 -> 1/3
    np.testing.assert_allclose(cm.iou(), [0.0, 1 / 3])
    cm.update(np.array([[0, 1], [0, 1]]), np.array([[0, 1], [0, 1]]))  # a perfect second image
    np.testing.assert_array_equal(cm.matrix, [[2, 1], [1, 3]])
    np.testing.assert_allclose(cm.iou(), [2 / 4, 3 / 5])


def test_iou_from_confusion_matches_hand_values():
    # the classic 1/3 and 1/2 example: class 0 (tp 1, fp 1, fn 1), class 1 (tp 2, fp 1, fn 1)
    np.testing.assert_allclose(iou_from_confusion(np.array([[1, 1], [1, 2]])), [1 / 3, 1 / 2])


def test_bad_inputs_are_rejected():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError):
        cm.update(np.full((2, 2), 3), np.zeros((2, 2), int))
    with pytest.raises(ValueError):
        EpisodeMeter().update(1, np.array([0, 2]), np.array([0, 1]))


def test_harmonic_mean():
    assert harmonic_mean(0.4, 0.6) == pytest.approx(0.48)
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.9, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(math.nan, 0.3))


def _episodes() -> EpisodeMeter:
    meter = EpisodeMeter()
    # class 5, episode 1: fg inter 1 / union 2; bg inter 2 / union 3
    meter.update(5, np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0]))
    # class 5, episode 2: fg 1 / 3; bg 1 / 3
    meter.update(5, np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0]))
    # class 7: everything missed: fg 0 / 4; bg 0 / 4
    meter.update(7, np.array([0, 0, 0, 0]), np.array([1, 1, 1, 1]))
    return meter


def test_episode_class_iou_accumulates_before_dividing():
    meter = _episodes()
    ious = meter.class_iou()
    assert ious[5] == pytest.approx(2 / 5)  # (1+1)/(2+3), not the mean of 1/2 and 1/3
    assert ious[7] == 0.0
    assert meter.miou() == pytest.approx(1 / 5)
    assert meter.miou([5]) == pytest.approx(2 / 5)
    assert meter.num_episodes() == 3 and meter.num_episodes([5]) == 2


def test_fbiou_over_all_episodes_and_subsets():
    meter = _episodes()
    # fg: (1+1+0)/(2+3+4) = 2/9; bg: (2+1+0)/(3+3+4) = 3/10
    assert meter.fbiou() == pytest.approx((2 / 9 + 3 / 10) / 2)
    assert meter.fbiou([5]) == pytest.approx((2 / 5 + 3 / 6) / 2)
    assert math.isnan(meter.fbiou([99])) and math.isnan(meter.miou([99]))


def test_episode_ignore_pixels():
    meter = EpisodeMeter(ignore_index=255)
    meter.update(3, np.array([1, 1, 0, 1]), np.array([1, 255, 0, 0]))
    # kept pixels: pred [1, 0, 1] vs target [1, 0, 0] -> fg 1/2, bg 1/2
    assert meter.class_iou()[3] == pytest.approx(1 / 2)
    assert meter.fbiou() == pytest.approx(1 / 2)


def test_boundary_fscore_by_hand():
    from zeroseg.eval.metrics import BoundaryFScore, label_boundaries

    target = np.zeros((6, 6), int)
    target[:, 3:] = 1
    edges = label_boundaries(target)
    assert edges[:, 2].all() and edges[:, 3].all() and edges.sum() == 12
    exact = BoundaryFScore(tolerance=0)
    exact.update(target, target)
    assert exact.fscore() == 1.0
    shifted = np.zeros((6, 6), int)
    shifted[:, 5:] = 1  # the border two columns to the right
    tight, loose = BoundaryFScore(tolerance=0), BoundaryFScore(tolerance=2)
    for meter in (tight, loose):
        meter.update(shifted, target)
    # tolerance 0: predicted border columns 4,5 vs true 2,3 -> nothing matches
    assert tight.precision() == 0.0 and tight.recall() == 0.0 and tight.fscore() == 0.0
    # tolerance 2: column 4 is within 2 of column 3 and 2 (yes), column 5 within 2 of 3 (yes);
    # true column 2 is 2 away from predicted 4 (yes), column 3 (yes) -> all match
    assert loose.fscore() == 1.0
    ignored = target.copy()
    ignored[:, 2:4] = 255  # the border region is unlabelled: no boundary to score
    meter = BoundaryFScore(tolerance=0)
    meter.update(target, ignored)
    assert meter.pred_total == 0 and meter.true_total == 0 and np.isnan(meter.fscore())
