"""How far can naming through the trained classes go with the default model's vision? A labelled
upper bound, not a method: it looks at test ground truth, and nothing it finds is used anywhere.

The default names a pixel of an unknown object by the seen-class relay (``zeroseg.relay``): the
network's top-k posterior over the 141 trained names is compared with each asked name through
text similarities [V, C]. Whatever text encoder or correction produces that matrix, the pixel's
posterior is all the relay sees. This benchmark replaces the text similarities with ones taken
from the test masks, on the fixed protocol (the asked names: "other" + the 37 unseen classes):

- ``shipped``: the bundled relay (text similarities, hubness correction); equals the fixed
  protocol's unseen mIoU of ``bench_default_model.py``;
- ``oracle_prototypes``: class c's column is the mean top-k posterior over its own test pixels
  (L2-normalized): a nearest-prototype classifier in the posterior space, i.e. what a text
  encoder that knew each class's look-alikes among the trained names could at best be expected
  to reach;
- ``oracle_best_name``: class c's column names only its most frequent trained look-alike
  (classes sharing one tie, and the first wins);
- ``oracle_distinct_name``: the same with a different look-alike for each class (the assignment
  of trained names to classes with the most posterior mass, Hungarian method);
- ``oracle_naming``: every pixel the model calls an object (not "other") gets its true class:
  the ceiling the background decision alone leaves;
- ``direct``: the relay off (cosine of pixel and label embeddings), for reference.

Run: .venv/bin/python benchmarks/bench_relay_ceiling.py --data DIR [--model default] [--max-images N]
Writes benchmarks/results/relay_ceiling.json and relay_ceiling.png (per-class IoU of the shipped
relay against the two naming oracles; ``--plot-only`` redraws it from the JSON).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, write_results
from scipy.optimize import linear_sum_assignment

import zeroseg
from zeroseg.data.dataset import IGNORE_INDEX, SynthDataset
from zeroseg.eval.metrics import ConfusionMatrix
from zeroseg.eval.plots import _figure, _save
from zeroseg.eval.protocols import _select, protocol_label_set
from zeroseg.models.lseg import upsample_logits
from zeroseg.relay import relay_logits, relay_similarity, relay_weights

VARIANTS = ("shipped", "oracle_prototypes", "oracle_best_name", "oracle_distinct_name", "oracle_naming", "direct")


@torch.no_grad()
def half_logits(seg, image: np.ndarray, text: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The network's half-resolution logits [1, C + V, h', w'] (cropped to the image) and the
    prepared input's size."""
    x = seg.prepare(image)
    h, w = x.shape[-2:]
    half = seg.model(seg._pad(x), text, upsample=False)
    return half[..., : (h + 1) // 2, : (w + 1) // 2], (h, w)


def to_image(logits: torch.Tensor, prepared: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Half-resolution logits -> the arg-max at the image's size (as ``Segmenter.segment``)."""
    h, w = prepared
    full = upsample_logits(logits)[..., :h, :w]
    return F.interpolate(full, size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


def plot(results: dict, path) -> None:
    """Per-class IoU bars: shipped relay, best single trained name (oracle), prototypes (oracle)."""
    shown = [("shipped", "shipped relay (text similarities)"),
             ("oracle_distinct_name", "oracle: its own trained look-alike"),
             ("oracle_prototypes", "oracle: its posterior signature")]
    classes = sorted(results["shipped"]["per_class_iou"],
                     key=lambda n: -(results["oracle_prototypes"]["per_class_iou"][n] or 0))
    fig = _figure(13, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.27  # three bars a class
    for k, (variant, name) in enumerate(shown):
        values = [results[variant]["per_class_iou"][n] or 0 for n in classes]
        ax.bar(np.arange(len(classes)) + (k - 1) * width, values, width,
               label=f"{name}: mIoU {results[variant]['miou_unseen']:.1f}")
    best = results["oracle_distinct_names"]
    ax.set_xticks(np.arange(len(classes)), [f"{n} ({best[n]})" for n in classes], rotation=75, ha="right",
                  fontsize=7)
    ax.axhline(30, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylabel("IoU (%)")
    ax.set_title("Fixed-protocol unseen IoU of the default: naming through the trained classes, and two "
                 "oracles that read the test masks (in brackets: the oracle's look-alike)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", default="relay_ceiling")
    parser.add_argument("--plot-only", action="store_true", help="redraw the chart from the results JSON")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / f"{args.out}.json").read_text()), RESULTS / f"{args.out}.png")
        return

    seg = zeroseg.load_model(args.model)
    if not seg.relay_top_k:
        raise SystemExit("the model's relay is off: nothing to bound")
    data = SynthDataset(args.data, "test")
    labels = protocol_label_set("fixed", data.classes, data.seen, data.unseen)
    names, ids = list(labels.names), np.asarray(labels.class_ids)
    seen_ids = [data.class_id(n) for n in data.seen]
    unseen_ids = [data.class_id(n) for n in data.unseen]
    chosen = _select(data, "fixed", args.max_images)
    text, vocabulary = seg.text_embeddings(names), seg.text_embeddings(seg.relay_vocabulary)
    both, c = torch.cat([text, vocabulary]), len(names)
    own = seg._own_offsets(names)
    top_k, scale = seg.relay_top_k, float(seg.config.logit_scale)

    # pass 1: each unseen class's mean posterior over its own pixels (test ground truth)
    sums, counts = torch.zeros(len(vocabulary), c), torch.zeros(c)
    for n, i in enumerate(chosen):
        image, mask = data.load(i)
        half, _ = half_logits(seg, image, both)
        weights = relay_weights(half[:, c:], top_k)[0]  # [V, h', w']
        small = F.interpolate(torch.from_numpy(mask.astype(np.int64))[None, None].float(),
                              size=weights.shape[-2:], mode="nearest")[0, 0].long()
        for j in range(1, c):
            where = small == int(ids[j])
            if where.any():
                sums[:, j] += weights[:, where].sum(1)
                counts[j] += where.sum()
        if n % 100 == 0:
            print(f"prototypes: {n}/{len(chosen)} images", flush=True)
    prototypes = sums / counts.clamp(min=1)
    similarity = {
        "shipped": relay_similarity(vocabulary, text, seg.relay_hubness),
        "oracle_prototypes": F.normalize(prototypes, dim=0),
        "oracle_best_name": F.one_hot(prototypes.argmax(0), len(vocabulary)).T.float(),
    }
    rows, cols = linear_sum_assignment(prototypes[:, 1:].numpy(), maximize=True)  # one name per class
    distinct = torch.zeros_like(prototypes)
    distinct[torch.as_tensor(rows), torch.as_tensor(cols) + 1] = 1.0
    similarity["oracle_distinct_name"] = distinct
    best_names = {names[j]: seg.relay_vocabulary[int(prototypes[:, j].argmax())] for j in range(1, c)}
    distinct_names = {names[j + 1]: seg.relay_vocabulary[int(v)] for v, j in zip(rows, cols)}

    # pass 2: every variant on the same logits
    meters = {v: ConfusionMatrix(len(data.classes), IGNORE_INDEX) for v in VARIANTS}
    for n, i in enumerate(chosen):
        image, mask = data.load(i)
        half, prepared = half_logits(seg, image, both)
        direct, vocab_logits = half[:, :c] + own, half[:, c:]
        target = mask.copy()
        target[np.isin(target, seen_ids)] = IGNORE_INDEX  # seen classes have no name in the set
        preds, weights = {}, relay_weights(vocab_logits, top_k)
        for variant, sim in similarity.items():
            preds[variant] = to_image(relay_logits(direct, vocab_logits, sim, 0, top_k, scale, weights), prepared,
                                      mask.shape)
        preds["direct"] = to_image(direct, prepared, mask.shape)
        truth_index = np.zeros_like(mask, dtype=np.int64)  # true class's position in the label set
        for j in range(1, c):
            truth_index[mask == ids[j]] = j
        shipped = preds["shipped"]
        preds["oracle_naming"] = np.where((shipped != 0) & (truth_index != 0), truth_index, shipped)
        for variant, pred in preds.items():
            meters[variant].update(ids[pred], target)
        if n % 100 == 0:
            print(f"variants: {n}/{len(chosen)} images", flush=True)

    results: dict = {"model": args.model, "data": args.data, "protocol": "fixed", "num_images": len(chosen),
                     "relay_top_k": top_k, "relay_hubness": seg.relay_hubness,
                     "note": "oracle_* look at test ground truth: upper bounds, never used to choose anything"}
    for variant, meter in meters.items():
        iou = meter.iou()
        per_class = {data.classes[k]: (None if np.isnan(iou[k]) else round(100 * float(iou[k]), 2))
                     for k in unseen_ids}
        results[variant] = {"miou_unseen": round(100 * meter.miou(unseen_ids), 2),
                            "classes_at_least_30": sum(1 for v in per_class.values() if v is not None and v >= 30),
                            "per_class_iou": per_class}
        print(f"{variant}: unseen mIoU {results[variant]['miou_unseen']}", flush=True)
    results["oracle_best_names"] = best_names
    results["oracle_distinct_names"] = distinct_names
    write_results(args.out, results)
    plot(results, RESULTS / f"{args.out}.png")


if __name__ == "__main__":
    main()
