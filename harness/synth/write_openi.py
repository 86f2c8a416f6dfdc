"""Write an OpenI (Indiana University) replica: ``ecgen-radiology/<n>.xml`` + ``NLMCXR_png/<id>.png``.

Layout: ``docs/datasets.md`` section 5. The XML reproduces the real element
skeleton (``eCitation`` ... four ``AbstractText`` sections, empty ones
self-closing, ``MeSH`` major / automatic, one ``parentImage`` per image). File
numbers have gaps, image ids follow ``CXR<n>_IM-<4d>-<4d>`` (plus the two rarer
patterns), and de-identification leaves ``XXXX`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np

from harness.synth import files, labels, pixels
from harness.synth.reports import openi_sections
from harness.synth.world import SourceWorld, Study

PNG_DIR = "NLMCXR_png"
_CAPTIONS = ("Xray Chest PA and Lateral", "PA and lateral chest x-XXXX XXXX.", "Chest, 2 views, frontal and lateral",
             "CHEST 2V FRONTAL/LATERAL XXXX")


def _image_ids(n: int, st: Study, rng: np.random.Generator) -> list[str]:
    series = int(rng.integers(1, 3000))
    first = int(rng.choice([1001, 3001]))
    out = []
    for k in range(len(st.images)):
        if "long_id" in st.quirks:
            out.append(f"CXR{n}_IM-{series:04d}-{first + 1000 * k:04d}-{k + 1:04d}")
        elif "sub_id" in st.quirks:
            out.append(f"CXR{n}_1_IM-{series:04d}-{first + 1000 * k:04d}")
        else:
            out.append(f"CXR{n}_IM-{series:04d}-{first + 1000 * k:04d}")
    return out


def _mesh(st: Study) -> tuple[list[str], list[str]]:
    said = [f for f in st.findings if st.mentions.get(f.name) in ("pos", "unc")]
    major = list(dict.fromkeys(labels.mesh_major(f) for f in said)) or ["normal"]
    if "no_indexing" in st.quirks:
        major = ["No Indexing"]
    if "technical_quality" in st.quirks:
        major.append("Technical Quality of Image Unsatisfactory ")
    automatic = [] if "no_automatic" in st.quirks else \
        list(dict.fromkeys(labels.MESH_AUTOMATIC[f.name] for f in said if f.name in labels.MESH_AUTOMATIC))
    return major, automatic


def _abstract(label: str, text: str) -> str:
    if not text:
        return f'            <AbstractText Label="{label}"/>'
    return f'            <AbstractText Label="{label}">{escape(text, quote=False)}</AbstractText>'


def _xml(n: int, st: Study, ids: list[str], rng: np.random.Generator) -> str:
    sections = openi_sections(st, rng)
    if "no_indication" in st.quirks:
        sections["INDICATION"] = ""
    major, automatic = _mesh(st)
    mesh = [f"      <major>{escape(m, quote=False)}</major>" for m in major]
    mesh += [f"      <automatic>{escape(a, quote=False)}</automatic>" for a in automatic]
    caption = str(rng.choice(_CAPTIONS))
    images = []
    for k, image_id in enumerate(ids, start=1):
        images += [f'   <parentImage id="{image_id}">', f"      <figureId>F{k}</figureId>",
                   f"      <caption>{escape(caption, quote=False)}</caption>",
                   '      <panel type="single">',
                   f"         <url>/hadoop/storage/radiology/extract/{image_id}.jpg</url>",
                   "         <imgModality>7</imgModality>", '         <region type="panel">',
                   "            <globalImageFeatures/>", "         </region>", "      </panel>", "   </parentImage>"]
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>', "<eCitation>", '   <meta type="rr"/>', f'   <uId id="CXR{n}"/>',
        f'   <pmcId id="{n}"/>', "   <docSource>CXR</docSource>", f'   <IUXRId id="{n}"/>',
        "   <licenseType>open-access</licenseType>",
        "   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>",
        "   <ccLicense>byncnd</ccLicense>", "   <articleURL/>", "   <articleDate>2013-08-01</articleDate>",
        "   <articleType>XR</articleType>", "   <publisher>Indiana University</publisher>",
        "   <title>Indiana University Chest X-ray Collection (synthetic replica)</title>",
        "   <note>Synthetic replica written by harness.synth; no real patient.</note>",
        "   <specialty>pulmonary diseases</specialty>", "   <subset>CXR</subset>",
        '   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">',
        '      <Article PubModel="Electronic">',
        "         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>", "         <Abstract>",
        *(_abstract(label, sections[label]) for label in ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")),
        "         </Abstract>", "         <Language>eng</Language>", "      </Article>", "   </MedlineCitation>",
        "   <MeSH>", *mesh, "   </MeSH>", *images, "</eCitation>",
    ]
    return "\n".join(lines) + "\n"


def write(world: SourceWorld, root: Path, progress: Callable[[int], None],
          workers: int | None = None) -> tuple[dict, list[tuple]]:
    base = root / "openi"
    rng = np.random.default_rng([world.seed, 14, 3])
    n, n_images, truth = 0, 0, []
    images = pixels.encoded(world, [pixels.Job(i, k, "png") for i, st in enumerate(world.studies)
                                    for k in range(len(st.images))], workers)
    for st in world.studies:
        n += 1 + int(rng.random() < 0.011)  # the real numbering has gaps (109, 140, 148, ...)
        ids = _image_ids(n, st, rng)
        for image_id in ids:
            image = next(images)
            files.write_bytes(base / PNG_DIR / f"{image_id}.png", image.data)
            truth += [("openi", f"openi/{PNG_DIR}/{image_id}.png", b.finding, b.x, b.y, b.w, b.h)
                      for b in image.boxes]
            n_images += 1
            progress(1)
        files.write_text(base / "ecgen-radiology" / f"{n}.xml", _xml(n, st, ids, rng))
    return {"reports": len(world.studies), "images": n_images}, truth
