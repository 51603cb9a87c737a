"""Batch inference over files and folders: what ``zeroseg segment`` and ``zeroseg instances`` run.

- Inputs: files as given; folders walked recursively (``pattern``, e.g. ``"**/*.jpg"``), hidden
  folders and the output folder skipped; outputs mirror the folders' layout.
- Images are decoded ahead of the network in background threads (``workers``; Pillow and NumPy
  release the GIL while decoding); ``batch_size`` consecutive images of one size share a pass.
- ``resume``: an image whose outputs exist and check out is skipped. Each image's JSON is written
  last and names its images' SHA-256 and the run's labels, model and options, so a half-written
  image set, or one a different run left, never counts.
- ``manifest.jsonl`` in the output folder: one line per image (input, outputs, labels, seconds,
  status ``ok`` / ``skipped`` / ``error``, error), in input order.
- Under ``torchrun`` (``WORLD_SIZE`` > 1) image ``i`` of the sorted list goes to rank
  ``i % WORLD_SIZE``; each rank writes its manifest part, rank 0 merges them (and writes the run's
  ``detections.json`` for instances). Output names are chosen on the whole list, so the union of
  the ranks' files equals a one-process run's.

Exit status (``BatchSummary.exit_code``): 0 every image done, 1 some failed (the others are
written), 2 every image failed (nothing could be done).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .errors import ZerosegError
from .io import IMAGE_SUFFIXES, MAX_INPUT_PIXELS, load_image, output_stems, sha256_hex, write_bytes_atomic
from .progress import progress

__all__ = ["ImageJob", "BatchSummary", "BatchTask", "find_images", "plan_jobs", "run_batch", "outputs_valid",
           "shard_of", "MANIFEST"]

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class ImageJob:
    index: int  # position in the run's whole input list (COCO image id = index + 1)
    path: Path
    stem: str  # output name relative to the output folder, e.g. "sub/a"


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    manifest: Path | None = None
    records: list[dict] = field(default_factory=list)  # this process's manifest lines

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return 1 if self.done + self.skipped else 2


class BatchTask(Protocol):
    """What ``run_batch`` needs of a kind of inference (``batch_tasks.SegmentTask``, ``InstanceTask``)."""

    name: str
    labels: list[str]

    def outputs(self, out_dir: Path, job: ImageJob) -> dict[str, Path]: ...  # "json" is written last

    def expected(self, job: ImageJob) -> dict[str, Any]: ...  # record fields that must match to skip

    def run(self, arrays: list[np.ndarray]) -> list[Any]: ...

    def write(self, result: Any, array: np.ndarray, out_dir: Path, job: ImageJob) -> dict[str, str]: ...

    def describe(self, result: Any) -> str: ...

    def finish(self, out_dir: Path, jobs: list[ImageJob], records: list[dict]) -> str | None: ...


# -- which files, under which names --------------------------------------------------------
def _walk(folder: Path, pattern: str | None, exclude: list[Path]) -> list[Path]:
    candidates = folder.glob(pattern) if pattern else folder.rglob("*")
    found = []
    for p in candidates:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts[:-1]) or p.name.startswith("."):
            continue  # hidden folders (.git, .cache) and temporary files
        if any(p == e or e in p.parents for e in exclude):
            continue  # earlier outputs, when the output folder sits inside an input folder
        if p.is_file() and (pattern or p.suffix.lower() in IMAGE_SUFFIXES):
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def find_images(inputs: list[str | Path], pattern: str | None = None,
                exclude: list[str | Path] = ()) -> list[tuple[Path, str]]:
    """(file, output sub-folder) per image: files as given (sub-folder ""), folders walked
    recursively (sub-folder = the file's folder relative to the input folder). ``pattern``
    (a glob relative to each folder, ``**`` for any depth) replaces "every image file"."""
    excluded = [Path(e).resolve() for e in exclude]
    out: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = _walk(p.resolve(), pattern, excluded)
            if not found:
                what = f"matching {pattern!r}" if pattern else "images"
                raise ZerosegError(f"no {what} in directory {p}")
            root = p.resolve()
            out += [(p / f.relative_to(root), f.relative_to(root).parent.as_posix().strip(".")) for f in found]
        elif p.exists():
            out.append((p, ""))
        else:
            raise ZerosegError(f"image not found: {p}")
    return out


def plan_jobs(inputs: list[str | Path], out_dir: str | Path | None = None, pattern: str | None = None) -> list[ImageJob]:
    """The run's images in order, each with an output name no other input shares."""
    entries = find_images(inputs, pattern, exclude=[out_dir] if out_dir is not None else [])
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, (_, folder) in enumerate(entries):
        by_folder[folder.lower()].append(i)
    stems: list[str] = [""] * len(entries)
    for indices in by_folder.values():
        names = output_stems([entries[i][0] for i in indices])
        for i, name in zip(indices, names):
            folder = entries[i][1]
            stems[i] = f"{folder}/{name}" if folder else name
    return [ImageJob(i, path, stem) for i, ((path, _), stem) in enumerate(zip(entries, stems))]


# -- resume ----------------------------------------------------------------------------------
def outputs_valid(json_path: Path, expected: dict[str, Any]) -> bool:
    """The image's record exists, was written for this run's settings, and every file it names
    exists with the SHA-256 it records."""
    try:
        record = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return False
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for entry in files.values():
        try:
            if sha256_hex((json_path.parent / entry["name"]).read_bytes()) != entry["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


# -- sharding ----------------------------------------------------------------------------------
def shard_of() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    try:
        return int(os.environ.get("RANK", 0)), max(1, int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError:
        raise ZerosegError("RANK / WORLD_SIZE must be integers (set by torchrun)") from None


class _Group:
    """torch.distributed over gloo for the end-of-run barrier; nothing outside torchrun."""

    def __init__(self, world: int):
        self.dist = None
        if world > 1:
            import torch.distributed as dist  # heavy

            if not dist.is_initialized():
                # the barrier waits for the slowest rank's whole shard: allow a day, not gloo's 30 min
                dist.init_process_group("gloo", timeout=timedelta(hours=24))
            self.dist = dist

    def sum(self, values: list[int]) -> list[int]:
        if self.dist is None:
            return values
        import torch  # heavy

        t = torch.tensor(values, dtype=torch.int64)
        self.dist.all_reduce(t)
        return [int(v) for v in t]

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def close(self) -> None:
        if self.dist is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()


# -- the run -----------------------------------------------------------------------------------
def _decoded(jobs: list[ImageJob], load: Callable[[Path], np.ndarray], workers: int) -> Iterator[tuple]:
    """(job, array or None, error or None) in job order; ``workers`` threads decode ahead."""
    def one(job: ImageJob):
        try:
            return job, load(job.path), None
        except ZerosegError as e:
            return job, None, str(e)
        except Exception as e:  # a decoder bug on one odd file must not end a 10 000-image run
            return job, None, f"cannot read {job.path}: {type(e).__name__}: {e}"

    if workers <= 0:
        yield from map(one, jobs)
        return
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zeroseg-decode") as pool:
        pending = [pool.submit(one, job) for job in jobs[:ahead]]
        for k in range(len(jobs)):
            if k + ahead < len(jobs):
                pending.append(pool.submit(one, jobs[k + ahead]))
            yield pending[k].result()
            pending[k] = None  # drop the decoded image once it is used


def _error_text(job: ImageJob, message: str) -> str:
    return message if str(job.path) in message else f"{job.path}: {message}"


def run_batch(task: BatchTask, jobs: list[ImageJob], out_dir: str | Path, *, workers: int = 0, batch_size: int = 1,
              resume: bool = False, max_input_pixels: int | None = MAX_INPUT_PIXELS,
              stdout=None, stderr=None) -> BatchSummary:
    """Run ``task`` on this rank's share of ``jobs``; see the module's docstring."""
    from tqdm import tqdm  # heavy

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if batch_size < 1:
        raise ZerosegError(f"batch size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)
    rank, world = shard_of()
    group = _Group(world)
    mine = jobs[rank::world]
    summary = BatchSummary()
    part = out_dir / (f".{MANIFEST}.part" if world == 1 else f".manifest.rank{rank}.jsonl.part")

    def record(job: ImageJob, status: str, outputs: dict, seconds: float = 0.0, error: str | None = None) -> None:
        line = {"index": job.index, "input": str(job.path), "outputs": outputs, "labels": list(task.labels),
                "seconds": round(seconds, 4), "status": status}
        if error is not None:
            line["error"] = error
        summary.records.append(line)
        log.write(json.dumps(line) + "\n")
        log.flush()  # a crash keeps the lines so far in the .part file

    def fail(job: ImageJob, message: str) -> None:
        summary.failed += 1
        text = _error_text(job, message)
        tqdm.write(f"zeroseg: error: {text}", file=stderr)
        record(job, "error", {}, error=text)

    todo = []
    with open(part, "w") as log:
        for job in mine:
            outputs = task.outputs(out_dir, job)
            if resume and outputs_valid(outputs["json"], task.expected(job)):
                summary.skipped += 1
                record(job, "skipped", {k: str(v) for k, v in outputs.items()})
            else:
                todo.append(job)
        load = lambda p: load_image(p, max_pixels=max_input_pixels, upright=True)  # noqa: E731
        bar = progress(total=len(todo), desc=task.name, unit="img", disable=len(todo) < 2, file=stderr)
        pending: list[tuple[ImageJob, np.ndarray]] = []  # decoded images waiting for one network pass

        def flush(batch: list[tuple[ImageJob, np.ndarray]]) -> None:
            if not batch:
                return
            start = time.perf_counter()
            try:
                results = task.run([array for _, array in batch])
            except Exception as e:
                if len(batch) > 1:  # find which image it was: run them one at a time
                    for pair in batch:
                        flush([pair])
                    return
                fail(batch[0][0], str(e) if isinstance(e, ZerosegError) else f"{type(e).__name__}: {e}")
                bar.update(1)
                return
            seconds = (time.perf_counter() - start) / len(results)
            for (job, array), result in zip(batch, results):
                (out_dir / job.stem).parent.mkdir(parents=True, exist_ok=True)
                try:
                    written = task.write(result, array, out_dir, job)
                except OSError as e:
                    fail(job, f"cannot write outputs: {e.strerror or e}")
                    continue
                summary.done += 1
                record(job, "ok", written, seconds)
                tqdm.write(f"{job.path}: {task.describe(result)} -> {next(iter(written.values()))}", file=stdout)
            bar.update(len(results))

        for job, array, error in _decoded(todo, load, workers):
            if error is not None:
                fail(job, error)
                bar.update(1)
                continue
            if pending and (array.shape != pending[0][1].shape or len(pending) >= batch_size):
                flush(pending)
                pending = []
            pending.append((job, array))
        flush(pending)
        bar.close()
    # the lines are in memory: the .part file only keeps them through a crash
    summary.manifest = out_dir / (MANIFEST if world == 1 else f".manifest.rank{rank}.jsonl")
    write_bytes_atomic(summary.manifest, _sorted_lines(summary.records))
    part.unlink()
    done, skipped, failed = group.sum([summary.done, summary.skipped, summary.failed])
    group.barrier()  # every rank's manifest part is complete
    if rank == 0:
        lines = summary.records
        if world > 1:
            summary.manifest, lines = _merge_parts(out_dir, world)
        note = task.finish(out_dir, jobs, sorted(lines, key=lambda r: r["index"]))
        if note:
            print(note, file=stdout)
    group.close()
    summary.done, summary.skipped, summary.failed = done, skipped, failed
    if failed and len(jobs) > 1:
        print(f"zeroseg: {failed} of {len(jobs)} images failed (listed in {out_dir / MANIFEST})", file=stderr)
    return summary


def _sorted_lines(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda r: r["index"])).encode()


def _read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _merge_parts(out_dir: Path, world: int) -> tuple[Path, list[dict]]:
    """Every rank's manifest part, merged in input order into ``manifest.jsonl`` (parts removed)."""
    parts = [out_dir / f".manifest.rank{r}.jsonl" for r in range(world)]
    lines = [line for p in parts for line in _read_manifest(p)]
    write_bytes_atomic(out_dir / MANIFEST, _sorted_lines(lines))
    for p in parts:
        p.unlink()
    return out_dir / MANIFEST, lines
