"""Render and encode a source's images in worker processes, handed back in the writer's order.

A writer lists its images once (``Job``: which study, which planned image, which file format),
then consumes ``encoded(world, jobs, workers)`` in that order: each item is the encoded file's
bytes and the rendered ground-truth boxes. The pixels of one image depend only on the world and
that image (``world.draw``: its own generator, seeded by the image's serial), and the encoders are
plain PIL ones, so the bytes are the same whatever the number of workers or the order in which
the chunks finish: ``(seed, scale, calibration)`` still fixes every byte.

Workers are processes (the rendering is numpy over whole images, so threads would share one core
for most of it); chunks of ``CHUNK`` images go out at most ``2 x workers`` at a time, so the
encoded bytes waiting for the writer stay a few megabytes whatever the world's size. With one
worker (or a world of a few chunks) everything runs in the calling process, without a pool.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from harness.synth.render import Box
from harness.synth.world import SourceWorld, draw

ENV_WORKERS = "HARNESS_SYNTH_WORKERS"
CHUNK = 32
FORMATS = ("jpeg", "png", "png-rgba")


@dataclass(frozen=True)
class Job:
    """One image to write: ``world.studies[study].images[image]`` in file format ``fmt``."""

    study: int
    image: int
    fmt: str  # jpeg (8-bit grey, quality 95: MIMIC-CXR-JPG's) | png (8-bit grey) | png-rgba (NIH's odd files)


@dataclass(frozen=True)
class Encoded:
    data: bytes              # the file's bytes
    boxes: tuple[Box, ...]   # ground truth, pixels of this image


def encode(image: np.ndarray, fmt: str) -> bytes:
    """The bytes of an 8-bit grey image in ``fmt`` (see ``Job.fmt``)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    elif fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif fmt == "png-rgba":
        Image.fromarray(np.stack([image, image, image, np.full_like(image, 255)], -1)).save(buf, format="PNG")
    else:
        raise ValueError(f"unknown image format {fmt!r}; choose from {FORMATS}")
    return buf.getvalue()


def default_workers() -> int:
    """``$HARNESS_SYNTH_WORKERS``, else the CPUs this process may use."""
    given = os.environ.get(ENV_WORKERS, "").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            raise ValueError(f"${ENV_WORKERS} must be a whole number of processes, got {given!r}") from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_WORLD: SourceWorld | None = None  # the world of this worker process (set once, by _init)


def _init(world: SourceWorld) -> None:
    global _WORLD
    _WORLD = world


def _run(world: SourceWorld, jobs: Sequence[Job]) -> list[Encoded]:
    out = []
    for job in jobs:
        st = world.studies[job.study]
        rendered = draw(world, st, st.images[job.image])
        out.append(Encoded(encode(rendered.image, job.fmt), rendered.boxes))
    return out


def _chunk(jobs: Sequence[Job]) -> list[Encoded]:
    assert _WORLD is not None, "worker started without its world"
    return _run(_WORLD, jobs)


def encoded(world: SourceWorld, jobs: Sequence[Job], workers: int | None = None) -> Iterator[Encoded]:
    """Each job's encoded image, in the order of ``jobs``.

    Args:
        world: the source's world (copied once into each worker process).
        jobs: the images to render, in the order the writer consumes them.
        workers: processes; ``None``: ``default_workers()``. 1 renders in this process.
    """
    chunks = [jobs[k:k + CHUNK] for k in range(0, len(jobs), CHUNK)]
    workers = min(default_workers() if workers is None else max(1, workers), len(chunks))
    if workers <= 1:
        for chunk in chunks:
            yield from _run(world, chunk)
        return
    import multiprocessing

    # fork where there is one: the world is inherited, not pickled; elsewhere it is pickled once per worker
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init,
                             initargs=(world,)) as pool:
        pending: deque[Future] = deque()
        todo = iter(chunks)
        for chunk in todo:
            pending.append(pool.submit(_chunk, chunk))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_chunk, nxt))
            yield from done
