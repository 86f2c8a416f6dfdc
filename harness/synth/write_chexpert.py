"""Write a CheXpert-v1.0-small replica: ``train.csv``, ``valid.csv`` and the JPG tree.

Layout: ``docs/datasets.md`` section 3. Train labels come from the report
mentions through the CheXpert labeler's conventions (1.0 / 0.0 / -1.0 / blank);
valid labels are the radiologists' reading of the drawn findings (0.0 / 1.0
only). Train patients are ``patient00001``..., valid ones start at
``patient64541`` as in the real release.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.synth import files, labels, pixels
from harness.synth.world import SourceWorld, Study

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(labels.CHEXPERT_ORDER)
PREFIX = "CheXpert-v1.0-small"
FIRST_VALID_PATIENT = 64541
_SEX = {"M": "Male", "F": "Female", "U": "Unknown"}


def _consensus(st: Study) -> list[str]:
    drawn = {labels.CHEXPERT_OF[f.name] for f in st.findings if f.name in labels.CHEXPERT_OF}
    sick = any(lab != "Support Devices" for lab in drawn)
    return [("0.0" if sick else "1.0") if c == "No Finding" else ("1.0" if c in drawn else "0.0")
            for c in labels.CHEXPERT_ORDER]


def write(world: SourceWorld, root: Path, progress: Callable[[int], None],
          workers: int | None = None) -> tuple[dict, list[tuple]]:
    base = root / "chexpert" / PREFIX
    numbers: dict[int, int] = {}
    next_number = {"train": 1, "valid": FIRST_VALID_PATIENT}
    rows: dict[str, list[tuple]] = {"train": [], "valid": []}
    truth = []
    images = pixels.encoded(world, [pixels.Job(i, k, "jpeg") for i, st in enumerate(world.studies)
                                    for k in range(len(st.images))], workers)
    for st in world.studies:
        part = "valid" if st.split == "valid" else "train"
        if st.patient.index not in numbers:
            numbers[st.patient.index] = next_number[part]
            next_number[part] += 1
        values = _consensus(st) if part == "valid" else \
            [labels.chexpert_values(st.mentions)[c] for c in labels.CHEXPERT_ORDER]
        age = 0 if "age0" in st.quirks else min(90, int(st.age))
        for k, plan in enumerate(st.images, start=1):
            lateral = plan.render_view == "lateral"
            rel = (f"{part}/patient{numbers[st.patient.index]:05d}/study{st.index + 1}/"
                   f"view{k}_{'lateral' if lateral else 'frontal'}.jpg")
            image = next(images)
            files.write_bytes(base / rel, image.data)
            truth += [("chexpert", f"chexpert/{PREFIX}/{rel}", b.finding, b.x, b.y, b.w, b.h) for b in image.boxes]
            rows[part].append((f"{PREFIX}/{rel}", _SEX[st.patient.sex], age, "Lateral" if lateral else "Frontal",
                               "" if lateral else plan.view, *values))
            progress(1)
    for part, part_rows in rows.items():
        files.write_csv(base / f"{part}.csv", HEADER, part_rows)
    counts = {"train_images": len(rows["train"]), "valid_images": len(rows["valid"]),
              "train_studies": sum(st.split != "valid" for st in world.studies),
              "patients": len(world.patients)}
    return counts, truth
