"""Dataset labels from a study's report mentions, in each dataset's conventions.

The same ``Study.mentions`` (finding -> pos / unc / neg, i.e. what the report
says) gives:

- CheXpert / MIMIC-CXR (CheXpert labeler): ``1.0`` / ``-1.0`` / ``0.0`` / blank per
  category, a category taking its strongest mention (pos > unc > neg); ``No
  Finding`` is ``1.0`` when the report says something and none of the 13
  pathology categories is positive or uncertain (Support Devices may be), else
  blank; a report that mentions nothing gives an all-blank row;
- NIH ChestX-ray14: the pipe list of mined labels (positive or hedged mentions:
  the NIH miner kept many hedged ones), alphabetical, or exactly ``No Finding``;
- OpenI: MeSH ``major`` terms (``Term/qualifier/...``, or ``normal``) and
  lower-case ``automatic`` terms, which torchxrayvision's substring rule reads.
"""

from __future__ import annotations

from harness.synth.findings import Finding

CHEXPERT_ORDER = (  # CheXpert CSV column order
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
MIMIC_ORDER = tuple(sorted(CHEXPERT_ORDER))  # MIMIC: alphabetical, No Finding in alpha position

CHEXPERT_OF = {
    "pleural_effusion": "Pleural Effusion", "cardiomegaly": "Cardiomegaly",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum", "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation", "pneumonia": "Pneumonia", "lung_opacity": "Lung Opacity",
    "edema": "Edema", "nodule": "Lung Lesion", "mass": "Lung Lesion", "atelectasis": "Atelectasis",
    "support_devices": "Support Devices", "fracture": "Fracture", "pleural_thickening": "Pleural Other",
}
NIH_OF = {
    "pleural_effusion": "Effusion", "cardiomegaly": "Cardiomegaly", "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation", "pneumonia": "Pneumonia", "lung_opacity": "Infiltration",
    "edema": "Edema", "nodule": "Nodule", "mass": "Mass", "atelectasis": "Atelectasis",
    "emphysema": "Emphysema", "fibrosis": "Fibrosis", "hernia": "Hernia",
    "pleural_thickening": "Pleural_Thickening",
}
# BBox_List_2017.csv names its 8 labels differently ("Infiltrate").
NIH_BOX_OF = {
    "atelectasis": "Atelectasis", "pleural_effusion": "Effusion", "cardiomegaly": "Cardiomegaly",
    "lung_opacity": "Infiltrate", "pneumonia": "Pneumonia", "pneumothorax": "Pneumothorax",
    "mass": "Mass", "nodule": "Nodule",
}
_RANK = {"pos": 3, "unc": 2, "neg": 1}
_VALUE = {"pos": "1.0", "unc": "-1.0", "neg": "0.0"}


def chexpert_values(mentions: dict[str, str]) -> dict[str, str]:
    """Category -> CSV cell text (``1.0``, ``-1.0``, ``0.0`` or ``""``)."""
    best: dict[str, str] = {}
    for name, how in mentions.items():
        label = CHEXPERT_OF.get(name)
        if label and _RANK[how] > _RANK.get(best.get(label, ""), 0):
            best[label] = how
    out = {label: _VALUE[best[label]] if label in best else "" for label in CHEXPERT_ORDER}
    sick = any(best.get(lab) in ("pos", "unc") for lab in CHEXPERT_ORDER if lab not in ("Support Devices",))
    out["No Finding"] = "1.0" if mentions and not sick else ""
    return out


def nih_labels(mentions: dict[str, str]) -> str:
    labels = sorted({NIH_OF[n] for n, how in mentions.items() if how in ("pos", "unc") and n in NIH_OF})
    return "|".join(labels) if labels else "No Finding"


_SIZE = ("small", "moderate", "large")
_DEGREE = ("mild", "moderate", "severe")
_ZONE = {"upper": "upper lobe", "mid": "middle", "lower": "base", "": "lung"}


def _grade(f: Finding, words: tuple[str, str, str]) -> str:
    return words[min(2, int(f.severity * 3))]


def mesh_major(f: Finding) -> str:
    """One MeSH major term for a drawn, reported finding (OpenI ``Term/qualifier`` style)."""
    side, zone = f.side or "bilateral", _ZONE[f.zone]
    terms = {
        "pleural_effusion": f"Pleural Effusion/{side}/{_grade(f, _SIZE)}",
        "cardiomegaly": "Cardiomegaly/borderline" if f.uncertain else f"Cardiomegaly/{_grade(f, _DEGREE)}",
        "enlarged_cardiomediastinum": "Mediastinum/enlarged",
        "pneumothorax": f"Pneumothorax/{side}/{_grade(f, _SIZE)}",
        "consolidation": f"Consolidation/lung/{zone}/{side}",
        "pneumonia": f"Pneumonia/{zone}/{side}",
        "lung_opacity": f"Opacity/lung/{zone}/{side}",
        "edema": f"Pulmonary Edema/{_grade(f, _DEGREE)}",
        "nodule": f"Nodule/lung/{zone}/{side}",
        "mass": f"Mass/lung/{zone}/{side}",
        "atelectasis": f"Pulmonary Atelectasis/{zone}/{side}",
        "support_devices": "Catheters, Indwelling",
        "fracture": f"Fractures, Bone/ribs/{side}",
        "emphysema": "Pulmonary Emphysema",
        "fibrosis": f"Pulmonary Fibrosis/base/{side}",
        "hernia": "Hernia, Hiatal",
        "pleural_thickening": f"Thickening/pleura/{'apex' if f.zone == 'upper' else 'base'}/{side}",
        "granuloma": f"Calcified Granuloma/lung/{zone}/{side}",
    }
    return terms[f.name]


MESH_AUTOMATIC = {
    "pleural_effusion": "pleural effusion", "cardiomegaly": "cardiomegaly", "pneumothorax": "pneumothorax",
    "consolidation": "consolidation", "pneumonia": "pneumonia", "lung_opacity": "opacity",
    "edema": "pulmonary edema", "nodule": "nodule", "mass": "mass", "atelectasis": "atelectases",
    "emphysema": "emphysemas", "fibrosis": "pulmonary fibrosis", "hernia": "hernia, hiatal",
    "pleural_thickening": "pleural thickening", "granuloma": "calcified granuloma",
    "fracture": "fractures, bone", "support_devices": "catheters, indwelling",
    "enlarged_cardiomediastinum": "mediastinum",
}
