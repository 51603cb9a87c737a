"""The two kinds of batch inference ``zeroseg.batch.run_batch`` runs: semantic segmentation
(``SegmentTask``, ``segment_files``) and instances (``InstanceTask``, ``detect_files``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .batch import BatchSummary, ImageJob, plan_jobs, run_batch
from .io import ensure_writable_dir, write_bytes_atomic
from .viz import write_instances, write_segmentation

__all__ = ["SegmentTask", "InstanceTask", "segment_files", "detect_files"]


class SegmentTask:
    """Semantic segmentation: ``<stem>.png`` (label indices), ``<stem>_overlay.png``, ``<stem>.json``."""

    name = "segment"

    def __init__(self, segmenter: Any, labels: list[str], options: dict[str, Any], templates: list[str] | None = None):
        self.segmenter, self.labels, self.options = segmenter, list(labels), dict(options)
        # what the outputs depend on besides the image, model and labels (checked by --resume)
        self.settings = json.loads(json.dumps({**self.options, "templates": templates,
                                               "relay": getattr(segmenter, "relay_top_k", 0)}))

    def outputs(self, out_dir: Path, job: ImageJob) -> dict[str, Path]:
        return {"mask": out_dir / f"{job.stem}.png", "overlay": out_dir / f"{job.stem}_overlay.png",
                "json": out_dir / f"{job.stem}.json"}

    def expected(self, job: ImageJob) -> dict[str, Any]:
        return {"image": str(job.path), "model": self.segmenter.source, "labels": self.labels,
                "options": self.settings}

    def run(self, arrays: list[np.ndarray]) -> list[Any]:
        return self.segmenter.segment_batch(arrays, self.labels, **self.options)

    def write(self, result: Any, array: np.ndarray, out_dir: Path, job: ImageJob) -> dict[str, str]:
        written = write_segmentation(result, array, out_dir, job.stem,
                                     extra={"image": str(job.path), "model": self.segmenter.source,
                                            "options": self.settings})
        return {"overlay": written["overlay"], "mask": written["mask"], "json": written["json"]}

    def describe(self, result: Any) -> str:
        top = sorted(result.fractions().items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in top if v >= 0.005)

    def finish(self, out_dir: Path, jobs: list[ImageJob], records: list[dict]) -> str | None:
        return None


class InstanceTask:
    """Instance segmentation: ``<stem>_instances.png``, ``<stem>_instances.json``; at the end the
    run's ``detections.json`` (COCO: images, categories, annotations) from the images' records."""

    name = "instances"

    def __init__(self, segmenter: Any, labels: list[str], options: dict[str, Any]):
        self.segmenter, self.labels, self.options = segmenter, list(labels), dict(options)
        relay = segmenter.relay_settings() if hasattr(segmenter, "relay_settings") else {}
        self.settings = json.loads(json.dumps({**self.options, **relay}))  # what --resume must match

    def outputs(self, out_dir: Path, job: ImageJob) -> dict[str, Path]:
        return {"overlay": out_dir / f"{job.stem}_instances.png", "json": out_dir / f"{job.stem}_instances.json"}

    def expected(self, job: ImageJob) -> dict[str, Any]:
        return {"image": str(job.path), "model": self.segmenter.source, "labels": self.labels,
                "options": self.settings, "image_id": job.index + 1}

    def run(self, arrays: list[np.ndarray]) -> list[Any]:
        return self.segmenter.detect_batch(arrays, self.labels, **self.options)

    def write(self, result: Any, array: np.ndarray, out_dir: Path, job: ImageJob) -> dict[str, str]:
        written = write_instances(result, array, out_dir, job.stem, job.index + 1,
                                  extra={"image": str(job.path), "model": self.segmenter.source,
                                         "labels": self.labels, "options": self.settings, "image_id": job.index + 1})
        return {"overlay": written["overlay"], "json": written["json"]}

    def describe(self, result: Any) -> str:
        return ", ".join(f"{n} {s:.2f}" for n, s in zip(result.names(), result.scores)) or "nothing"

    def finish(self, out_dir: Path, jobs: list[ImageJob], records: list[dict]) -> str | None:
        images, annotations = [], []
        for line in records:
            if line["status"] == "error":
                continue
            record = json.loads(Path(line["outputs"]["json"]).read_text())
            image_id = line["index"] + 1
            images.append({"id": image_id, "file_name": line["input"], "height": record["image_size"]["height"],
                           "width": record["image_size"]["width"]})
            annotations += record["detections"]
        combined = {"images": images, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.labels)],
                    "annotations": [{"id": k + 1, **d} for k, d in enumerate(annotations)]}
        write_bytes_atomic(out_dir / "detections.json", (json.dumps(combined) + "\n").encode())
        return f"{len(annotations)} instances in {len(images)} image(s); COCO JSON: {out_dir / 'detections.json'}"


def segment_files(segmenter: Any, inputs: list[str | Path], labels: list[str], out_dir: str | Path, *,
                  options: dict[str, Any] | None = None, templates: list[str] | None = None,
                  pattern: str | None = None, **run_options: Any) -> BatchSummary:
    """Segment every image of ``inputs`` (files or folders) into ``out_dir``; ``options`` go to
    ``Segmenter.segment_batch``, ``run_options`` (workers, batch_size, resume, max_input_pixels)
    to ``run_batch``."""

    out_dir = ensure_writable_dir(out_dir)
    jobs = plan_jobs(inputs, out_dir, pattern)
    return run_batch(SegmentTask(segmenter, labels, options or {}, templates), jobs, out_dir, **run_options)


def detect_files(segmenter: Any, inputs: list[str | Path], labels: list[str], out_dir: str | Path, *,
                 options: dict[str, Any] | None = None, pattern: str | None = None,
                 **run_options: Any) -> BatchSummary:
    """``segment_files`` for an ``InstanceSegmenter``: ``options`` go to ``detect_batch``."""

    out_dir = ensure_writable_dir(out_dir)
    jobs = plan_jobs(inputs, out_dir, pattern)
    return run_batch(InstanceTask(segmenter, labels, options or {}), jobs, out_dir, **run_options)
