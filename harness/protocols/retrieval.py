"""Zero-shot image-text retrieval over the whole test gallery (JoImTeRNet, GLoRIA / BenchX 5x200).

An encoder with the ``image`` and ``text`` capabilities embeds the test images
and the test reports; nothing is trained. Similarity is the cosine of the
L2-normalised global image vector and report vector, so ``num_features`` of the
two towers must agree (a joint space).

Ground truth (``gallery`` arg), defined per study, because a report belongs to a
study and a study may hold several images:

- **text** of a study = its FINDINGS and IMPRESSION sections joined by a blank
  line (``text_sections``); a study whose text is empty is skipped (counted in
  ``details["studies_without_text"]``).
- ``one-per-study`` (default, JoImTeRNet's 1:1 pairs): one image per study, the
  first by view (``VIEW_ORDER``: PA, AP, FRONTAL, unknown, then any other view
  the task allows) and then by ``image_id``. Image ``i`` and text ``i`` are the
  only match of each other.
- ``all-images``: every image of a study with text is a query and a gallery
  item. An image's match is its study's text; a text's matches are ALL its
  study's images (its rank is that of the best-scored one).

Ranks (1 = best) are pessimistic about ties: an item that scores the same as
the (best) match is counted ahead of it, so a constant encoder ranks every match
last instead of first. Recall@K is the fraction of queries with rank <= K; the
median rank is the median over queries. Metrics: ``i2t_r{K}``, ``t2i_r{K}``,
``i2t_median_rank``, ``t2i_median_rank`` and ``r_mean`` (the mean of the
recalls), with patient-level bootstrap CIs of each recall and of the main metric. The similarity matrix
is never held whole: query blocks are multiplied against the full gallery (``retrieval_scores.ranks``), so memory stays
bounded for galleries of any size.

Not measurable: a metric at K over a gallery of K or fewer candidates is the same for every
encoder (Recall@K = 1, Precision@K = relevant / K), so it is NaN, with the reason in
``details["not_measurable"]``; a main metric that is not measurable (``r_mean`` averages every
recall) refuses the run with that reason, as does a block larger than the test gallery. A CI over
fewer than ``metrics.MIN_PATIENTS`` patients is left out and said.

Every run keeps, for the leaderboard's paired bootstrap (``harness.metrics.paired``), each query's
share of the main metric (``values__<main>``: its recall averaged over the K for ``r_mean``, its
hit or precision at K for 5x200), its stratum (direction, and block for R-1k) and an anonymous
patient index.

Variants (task ``protocol_args``):

- ``block: 1000``: JoImTeRNet's "R-1k". The pairs are put in a seeded random
  order and cut into consecutive blocks of ``block`` pairs; each block is its own
  gallery and the metrics are averaged over blocks. Pairs beyond the last full
  block are left out (counted in ``details["pairs_outside_blocks"]``); a gallery
  smaller than one block is refused (it would not be R-``block``).
- ``mode: class-5x200``: GLoRIA / BenchX class retrieval. ``per_class`` (200)
  studies are drawn (seeded, without replacement) for each of ``classes`` (the
  5 CheXpert competition labels) among the studies whose targets (after the
  task's label policy) are positive for exactly that one class; a retrieved item
  is a hit when it has the query's class (a query's own report is in the gallery,
  as in GLoRIA). Metrics: ``i2t_hit{K}`` / ``t2i_hit{K}`` (at least one hit in the
  top K) and ``i2t_prec{K}`` / ``t2i_prec{K}`` (hits in the top K divided by K). Ties
  are pessimistic as in the pairs mode (``metrics.relevance_in_rank_order``): items
  that score the same as a hit are ranked ahead of it, so a constant encoder scores
  0, whatever the order of the gallery (which is sorted by class).

Arguments: ``ARGS`` below (names, types, defaults, ranges and the mode each
applies to, checked by ``harness.protocols.args`` when the task loads and again here).

Example task file fragment::

    protocol: retrieval
    requires: [image, text]
    protocol_args: {block: 1000}      # or {mode: class-5x200, per_class: 200}

Predictions: the L2-normalised image and text embeddings of the gallery (arrays
only, never text; written with ``--save-predictions``), and the kept per-query arrays above.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from harness import metrics
from harness.data.schema import CHEXPERT_5
from harness.features import split_features
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError
from harness.protocols.retrieval_scores import (
    block_ranks,
    class_hits,
    class_metrics,
    class_units,
    k_reason,
    pair_ranks,
    pair_units,
    recall_metrics,
    sample_5x200,
)

# The representative image of a study: PA, then AP, then a frontal of unknown projection (OpenI with
# indiana_projections.csv says FRONTAL), then an unknown view (""), then anything else (laterals).
VIEW_ORDER = ("PA", "AP", "FRONTAL", "")
REPORT_SECTIONS = ("indication", "findings", "impression")  # the records' report columns (harness.data.schema)


def _pairs(a: dict[str, Any]) -> bool:
    return a["mode"] == "pairs"


def _classes(a: dict[str, Any]) -> bool:
    return a["mode"] == "class-5x200"


def _metrics(a: dict[str, Any]) -> list[str]:
    """``i2t_r{K}`` ... ``r_mean`` for pairs (blocked or not); ``i2t_hit{K}`` / ``i2t_prec{K}`` ... for 5x200."""
    if _pairs(a):
        return [*(f"{d}_{m}" for d in ("i2t", "t2i") for m in (*(f"r{k}" for k in a["ks"]), "median_rank")),
                "r_mean"]
    return [f"{d}_{m}{k}" for d in ("i2t", "t2i") for m in ("hit", "prec") for k in a["ks"]]


def _classes_are_labels(task: Any, a: dict[str, Any]) -> tuple[str, str] | None:
    missing = [c for c in a["classes"] if c not in task.labels] if _classes(a) else []
    return ("protocol_args.classes", f"{missing} are not among the task's labels {list(task.labels)} (the classes' "
                                     "targets come from them)") if missing else None


ARGS = ProtocolArgs(
    "retrieval",
    {
        "mode": Arg(str, "pairs", "pairs (each image's own report) | class-5x200 (GLoRIA class retrieval)",
                    choices=("pairs", "class-5x200")),
        "gallery": Arg(str, "one-per-study", "pairs: one image per study, or every image of a study",
                       choices=("one-per-study", "all-images"), when=_pairs, when_doc="mode: pairs"),
        "ks": Arg(int, [1, 5, 10], "the K of Recall@K / Hit@K / Precision@K", many=True, ge=1),
        "block": Arg(int, None, "JoImTeRNet R-1k: pairs per block (null: the whole gallery)", optional=True, ge=1,
                     when=_pairs, when_doc="mode: pairs"),
        "text_sections": Arg(str, ["findings", "impression"], "report sections joined into a study's text",
                             many=True, choices=REPORT_SECTIONS),
        "classes": Arg(str, list(CHEXPERT_5), "class-5x200: the classes (task labels)", many=True,
                       when=_classes, when_doc="mode: class-5x200"),
        "per_class": Arg(int, 200, "class-5x200: studies drawn per class", ge=1,
                         when=_classes, when_doc="mode: class-5x200"),
        "pool_splits": Arg(str, ["test"], "class-5x200: the splits the studies are drawn from", many=True,
                           choices=("train", "val", "test"), when=_classes, when_doc="mode: class-5x200"),
        "batch_size": Arg(int, 64, "image and text encoding batch size", ge=1),
        # every mode: the main metric's CI; whole-gallery pairs: each recall's too
        "n_bootstrap": Arg(int, 1000, "patient resamples for the CIs", ge=1),
    },
    metrics=_metrics,
    rules=(lambda a: ("block", "block needs mode: pairs and gallery: one-per-study (1:1 pairs)")
           if a["block"] is not None and a["gallery"] != "one-per-study" else None,),
    zero_shot=True, requires=lambda a: ("image", "text"), task_rules=(_classes_are_labels,))


@dataclass
class Gallery:
    """The chosen images and one text per study; ``image_study[i]`` indexes ``texts``."""

    image_study: np.ndarray  # (N_img,) int: the text index of each image's study
    texts: list[str]  # one per study
    split_rows: np.ndarray  # (N_img,) rows of the source split (its images, targets)
    split_names: np.ndarray  # (N_img,) the split each image comes from
    image_patient: np.ndarray  # (N_img,) str, for patient-level bootstrap CIs
    text_patient: np.ndarray  # (N_text,) str

    def take(self, images: np.ndarray) -> Gallery:
        """The 1:1 sub-gallery of the given image indices (one-per-study galleries only)."""
        return Gallery(image_study=np.arange(len(images)), texts=[self.texts[self.image_study[i]] for i in images],
                       split_rows=self.split_rows[images], split_names=self.split_names[images],
                       image_patient=self.image_patient[images],
                       text_patient=self.text_patient[self.image_study[images]])


def report_text(frame: pd.DataFrame, sections: list[str]) -> pd.Series:
    """Per row: the sections joined by a blank line, empty ones left out, whitespace stripped."""
    missing = [c for c in sections if c not in frame.columns]
    if missing:
        raise ProtocolError(f"retrieval: text_sections {missing} are not record columns")
    parts = [frame[c].fillna("").astype(str).str.strip() for c in sections]
    return pd.Series(["\n\n".join(p for p in row if p) for row in zip(*parts, strict=True)], index=frame.index,
                     dtype=object)


def build_gallery(frame: pd.DataFrame, split: str, sections: list[str], gallery: str
                  ) -> tuple[Gallery, dict[str, int]]:
    """Apply the ground-truth relation of the module docstring to one split's rows.

    Returns the gallery and counts of what was left out (studies without text).
    """
    if gallery not in ("one-per-study", "all-images"):
        raise ProtocolError(f"retrieval: gallery {gallery!r} is not 'one-per-study' or 'all-images'")
    text = report_text(frame, sections)
    has_text = (text != "").to_numpy()
    view_rank = frame["view"].map({v: i for i, v in enumerate(VIEW_ORDER)}).fillna(len(VIEW_ORDER))
    order = pd.DataFrame({"row": np.arange(len(frame)), "study": frame["study_id"].astype(str).to_numpy(),
                          "view_rank": view_rank.to_numpy(), "image_id": frame["image_id"].astype(str).to_numpy()})
    order = order[has_text].sort_values(["study", "view_rank", "image_id"], kind="stable")
    first = order.drop_duplicates("study", keep="first")  # the study's representative row (and its text)
    if gallery == "one-per-study":
        order = first
    study_index = {s: i for i, s in enumerate(first["study"])}
    rows = order["row"].to_numpy()
    patients = frame["patient_id"].astype(str).to_numpy()
    counts = {"studies_without_text": int(frame.loc[~has_text, "study_id"].nunique()),
              "images_left_out": int(len(frame) - len(rows))}
    return Gallery(image_study=order["study"].map(study_index).to_numpy(dtype=np.int64),
                   texts=[text.iloc[r] for r in first["row"]], split_rows=rows,
                   split_names=np.array([split] * len(rows), dtype=object), image_patient=patients[rows],
                   text_patient=patients[first["row"].to_numpy()]), counts


# --------------------------------------------------------------------------- run


def encode_texts(encoder: Any, texts: list[str], *, device: str, batch_size: int = 64) -> torch.Tensor:
    """``(N, Dt)`` float32 CPU text features, in batches, encoder in eval mode, no gradients.

    bf16 autocast only on CUDA. Shared with the localization protocol (phrase embeddings).
    """
    if not texts:
        raise ProtocolError("no texts to encode")
    was_training = getattr(encoder, "training", False)
    if callable(getattr(encoder, "eval", None)):
        encoder.eval()
    cuda = torch.device(device).type == "cuda"
    parts = []
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext():
            for start in range(0, len(texts), batch_size):
                batch = texts[start:start + batch_size]
                out = encoder.encode_text(batch)
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise ProtocolError(f"encode_text returned shape {tuple(out.shape)} for {len(batch)} texts")
                parts.append(out.float().cpu())
    finally:
        if was_training:
            encoder.train(True)
    return torch.cat(parts)


def _embed(ctx: EvalContext, gallery: Gallery, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ``(N_img, D)`` image and ``(N_text, D)`` text embeddings (float32, CPU).

    Image features come from the feature cache of each whole split, then the gallery rows are taken.
    """
    image = torch.zeros(len(gallery.split_rows), 0)
    for split in dict.fromkeys(gallery.split_names.tolist()):
        feats = split_features(ctx, split, batch_size=batch_size)
        here = gallery.split_names == split
        if image.shape[1] == 0:
            image = torch.zeros(len(gallery.split_rows), feats.shape[1])
        image[torch.as_tensor(here)] = torch.from_numpy(feats[gallery.split_rows[here]])
    text = encode_texts(ctx.encoder, gallery.texts, device=ctx.device, batch_size=batch_size)
    if image.shape[1] != text.shape[1]:
        raise ProtocolError(f"retrieval: image features ({image.shape[1]}) and text features ({text.shape[1]}) "
                            "are not in one space; retrieval needs a joint image-text encoder")
    return F.normalize(image, dim=1), F.normalize(text, dim=1)


def _pool_gallery(ctx: EvalContext, args: dict[str, Any]) -> tuple[Gallery, np.ndarray, dict[str, int]]:
    """The class-5x200 sample: a one-per-study gallery over ``pool_splits``, and each item's class."""
    cols = [ctx.data.label_names.index(c) for c in args["classes"]]
    galleries, targets, counts = [], [], {}
    for split in args["pool_splits"]:
        part = ctx.data.split(split)
        g, c = build_gallery(part.frame, split, args["text_sections"], "one-per-study")
        galleries.append(g)
        targets.append(part.targets[g.split_rows][:, cols])
        counts.update({f"{split}_{k}": v for k, v in c.items()})
    pooled = Gallery(image_study=np.arange(sum(len(g.texts) for g in galleries)),
                     texts=[t for g in galleries for t in g.texts],
                     **{f: np.concatenate([getattr(g, f) for g in galleries])
                        for f in ("split_rows", "split_names", "image_patient", "text_patient")})
    rows, classes = sample_5x200(np.concatenate(targets), int(args["per_class"]), ctx.seed, list(args["classes"]))
    return pooled.take(rows), classes, counts


def run(ctx: EvalContext) -> ProtocolResult:
    """Embed the test gallery and score retrieval in both directions (see the module docstring).

    Raises:
        ProtocolError: the main metric is not measurable on this gallery (the message says why).
    """
    args = ARGS.read(ctx)  # every argument checked, defaults filled in; the task's metrics are this mode's
    ks, main, n_boot = args["ks"], ctx.task.main_metric, int(args["n_bootstrap"])
    details: dict[str, Any] = {"mode": args["mode"], "similarity": "cosine", "ties": "pessimistic",
                               "text_sections": list(args["text_sections"])}
    ci: dict[str, tuple[float, float]] = {}
    if args["mode"] == "class-5x200":
        gallery, classes, counts = _pool_gallery(ctx, args)
        image, text = _embed(ctx, gallery, args["batch_size"])
        hits = class_hits(image, text, classes)
        result = class_metrics(image, text, classes, ks)
        details.update(counts, n_items=len(classes), classes=list(args["classes"]), per_class=args["per_class"],
                       pool_splits=list(args["pool_splits"]))
        size = f"a gallery of {len(classes)} items"
        reasons = {f"{d}_{m}{k}": k_reason(k, len(classes)) for d in ("i2t", "t2i") for m in ("hit", "prec")
                   for k in ks}
        units = class_units(main, hits, gallery.image_patient, gallery.text_patient)
        extra = {"classes": classes}
    else:
        gallery, counts = build_gallery(ctx.data.test.frame, "test", args["text_sections"], args["gallery"])
        if not gallery.texts:
            raise ProtocolError("retrieval: no test study has report text")
        image, text = _embed(ctx, gallery, args["batch_size"])
        details.update(counts, gallery=args["gallery"], n_images=int(image.shape[0]), n_texts=int(text.shape[0]))
        if args["block"] is not None:
            parts, block_info = block_ranks(image, text, int(args["block"]), ctx.seed)
            details.update(block_info)
            per_block = [recall_metrics(i2t, t2i, ks) for _, i2t, t2i in parts]
            result = {k: float(np.mean([m[k] for m in per_block])) for k in per_block[0]}
            galleries = [(i2t, t2i, gallery.image_patient[idx], gallery.text_patient[idx]) for idx, i2t, t2i in parts]
            sizes = (block_info["block_size"], block_info["block_size"])
            size = f"blocks of {block_info['block_size']} pairs"
        else:
            i2t, t2i = pair_ranks(image, text, gallery.image_study)
            result = recall_metrics(i2t, t2i, ks)
            ci = _recall_cis(i2t, t2i, (gallery.image_patient, gallery.text_patient), ks, n_boot, ctx.seed)
            galleries = [(i2t, t2i, gallery.image_patient, gallery.text_patient)]
            sizes = (len(t2i), len(i2t))  # an image query's candidates are the texts, and the other way round
            size = f"a gallery of {len(i2t)} images and {len(t2i)} texts"
        reasons = {f"{d}_r{k}": k_reason(k, n) for d, n in zip(("i2t", "t2i"), sizes, strict=True) for k in ks}
        broken = [m for m, why in reasons.items() if why]
        reasons["r_mean"] = f"not measurable: it averages {broken}, which are not" if broken else ""
        units = pair_units(main, ks, galleries)
        extra = {"image_to_text_index": gallery.image_study}
    not_measurable = {m: why for m, why in reasons.items() if why and m in result}
    if not_measurable.get(main):
        raise ProtocolError(f"retrieval: the main metric {main} is {not_measurable[main]}, on {size}")
    if units:
        boot = metrics.bootstrap_ci(metrics.stratified_mean, units[f"values__{main}"], units["strata"],
                                    groups=units["groups"], n=n_boot, seed=ctx.seed)
        if boot.reason:
            not_measurable[f"ci of {main}"] = boot.reason
        else:
            ci[main] = (boot.lo, boot.hi)
    details["bootstrap"] = {"n": n_boot, "seed": ctx.seed, "unit": "patient"}
    if not_measurable:
        details["not_measurable"] = not_measurable
    predictions = {"image_embeddings": image.numpy(), "text_embeddings": text.numpy(), **extra, **units}
    return ProtocolResult(metrics=result, ci=ci, details=details, predictions=predictions)


def _recall_cis(i2t: np.ndarray, t2i: np.ndarray, groups: tuple[np.ndarray, np.ndarray], ks: list[int],
                n_bootstrap: int, seed: int) -> dict[str, tuple[float, float]]:
    """95 % bootstrap CIs of each measurable Recall@K, resampling the queries' patients (none for too few)."""
    out = {}
    for (name, ranks, candidates), patients in zip((("i2t", i2t, len(t2i)), ("t2i", t2i, len(i2t))), groups,
                                                   strict=True):
        for k in ks:
            if k_reason(k, candidates):
                continue
            ci = metrics.bootstrap_ci(functools.partial(metrics.recall_at_k, k=k), ranks,
                                      groups=metrics.patient_index(patients), n=n_bootstrap, seed=seed)
            if not ci.reason:
                out[f"{name}_r{k}"] = (ci.lo, ci.hi)
    return out
