"""The sizes of a bench run (``quick`` for the tests, ``full`` for the report) and the figures' targets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchProfile:
    """Sizes of one bench run (``quick`` for tests, ``full`` for the report)."""

    name: str
    method_profile: str  # the ``random`` encoder's profile: its backbone and image size
    repeats: int  # best-of for timed pairs
    p1_images: int
    p2_sizes: tuple[int, int, int]  # train, val, test images
    p2_image_size: int
    p2_epochs: int  # of the naive probe
    p3_files: int
    p3_file_px: int  # side of the JPEG/PNG files written
    p4_scale: float  # of MIMIC-CXR-JPG 2.0.0's 377,110 images / 227,835 studies / 65,379 patients
    p5_profile: str
    p5_methods: tuple[str, ...] | None  # None: every registered method that loads
    p5_tasks: tuple[str, ...] | None  # None: every task file except the unit-test ``mock``
    p5_world_scale: float
    scaling_multiples: tuple[int, ...]
    scaling_base: dict[str, int] = field(default_factory=dict)  # extraction images, probe rows, retrieval pairs


PROFILES = {
    "quick": BenchProfile("quick", "smoke", 1, p1_images=64, p2_sizes=(96, 48, 48), p2_image_size=32, p2_epochs=5,
                          p3_files=24, p3_file_px=256, p4_scale=0.1, p5_profile="smoke", p5_methods=("random",),
                          p5_tasks=("mock", "mimic-cls"), p5_world_scale=0.2, scaling_multiples=(1, 2, 4),
                          scaling_base={"extraction": 32, "probe": 500, "retrieval": 500}),
    "full": BenchProfile("full", "small", 3, p1_images=256, p2_sizes=(384, 128, 128), p2_image_size=48,
                         p2_epochs=50, p3_files=96, p3_file_px=1024, p4_scale=1.0, p5_profile="small",
                         p5_methods=None, p5_tasks=None, p5_world_scale=1.0, scaling_multiples=(1, 4, 16),
                         scaling_base={"extraction": 128, "probe": 1000, "retrieval": 1000}),
}
TARGETS = {"P1": 0.95, "P2": 20.0, "P3": 10.0, "P4_s": 30.0, "P4_gb": 2.0}
