"""Write an NIH ChestX-ray14 replica: label CSVs (v2020 and 2017), boxes, lists, PNGs.

Layout: ``docs/datasets.md`` section 4, Kaggle-style image folders
(``images_001/images/NNNNNNNN_MMM.png``; adapters index PNGs recursively).
Boxes in ``BBox_List_2017.csv`` are the renderer's ground truth for test images,
in pixels of the written PNG (the real file's are 1024-px coordinates of 1024-px
images; ours are smaller images).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.synth import files, labels, pixels
from harness.synth.world import SourceWorld

HEADER_2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
               "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
HEADER_2017 = HEADER_2020 + ","
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
PER_FOLDER = 500
_ORIGINAL = ((2500, 2048, 0.143), (2992, 2991, 0.143), (3056, 2544, 0.139), (2048, 2500, 0.168),
             (2500, 2048, 0.171))


def write(world: SourceWorld, root: Path, progress: Callable[[int], None],
          workers: int | None = None) -> tuple[dict, list[tuple]]:
    base = root / "nih14"
    rng = np.random.default_rng([world.seed, 13, 3])
    rows_2020, rows_2017, boxes, truth = [], [], [], []
    lists: dict[str, list[str]] = {"train": [], "test": []}
    followups: dict[int, int] = {}
    images = pixels.encoded(world, [pixels.Job(i, 0, "png-rgba" if "rgba" in st.quirks else "png")
                                    for i, st in enumerate(world.studies)], workers)
    box_budget = max(3, round(160 * len(world.patients) / 330))
    for n, st in enumerate(world.studies):
        pid = st.patient.index + 1
        k = followups.get(pid, 0)
        followups[pid] = k + 1
        name = f"{pid:08d}_{k:03d}.png"
        rel = f"images_{n // PER_FOLDER + 1:03d}/images/{name}"
        plan = st.images[0]
        rendered = next(images)
        files.write_bytes(base / rel, rendered.data)
        truth += [("nih14", f"nih14/{rel}", b.finding, b.x, b.y, b.w, b.h) for b in rendered.boxes]
        finding_labels = labels.nih_labels(st.mentions)
        width, height, spacing = _ORIGINAL[int(rng.integers(len(_ORIGINAL)))]
        noisy = rng.random() < 0.2  # the v2020 file prints some spacings with float noise
        spacing_text = repr(float(np.nextafter(spacing, 1.0))) if noisy else repr(spacing)
        followup = k + 1 if "followup_mismatch" in st.quirks else k
        sex = "F" if st.patient.sex == "F" else "M"
        age = int(st.age)
        rows_2020.append((name, finding_labels, followup, pid, age, sex, plan.view, width, height,
                          spacing_text, spacing_text))
        age_2017 = 412 if "age_412" in st.quirks else age
        rows_2017.append((name, finding_labels, k, pid, age_2017, sex, plan.view, width, height,
                          repr(spacing), repr(spacing), ""))
        lists["test" if st.split == "test" else "train"].append(name)
        if st.split == "test" and len(boxes) < box_budget:
            said = {labels.NIH_BOX_OF[m] for m, how in st.mentions.items() if how != "neg" and m in labels.NIH_BOX_OF}
            for b in rendered.boxes:
                label = labels.NIH_BOX_OF.get(b.finding)
                if label in said:
                    boxes.append((name, label, repr(b.x), repr(b.y), repr(b.w), repr(b.h)))
        progress(1)
    files.write_csv(base / "Data_Entry_2017_v2020.csv", HEADER_2020, rows_2020)
    files.write_csv(base / "Data_Entry_2017.csv", HEADER_2017, rows_2017)
    files.write_csv(base / "BBox_List_2017.csv", BBOX_HEADER, boxes)
    files.write_text(base / "train_val_list.txt", "".join(f"{x}\n" for x in sorted(lists["train"])))
    files.write_text(base / "test_list.txt", "".join(f"{x}\n" for x in sorted(lists["test"])))
    counts = {"images": len(rows_2020), "patients": len(world.patients), "boxes": len(boxes),
              "box_images": len({b[0] for b in boxes}), "test_images": len(lists["test"])}
    return counts, truth
