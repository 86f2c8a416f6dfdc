"""Report text: MIMIC-CXR ``sNNN.txt`` files and OpenI ``AbstractText`` sections.

FINDINGS and IMPRESSION describe exactly the study's ``mentions`` (drawn findings
as positive or hedged, plus pertinent negatives), with varied wording; hedges
("possible", "cannot be excluded", "may represent") are what the labels call
uncertain (-1.0). The INDICATION comes from the EHR (sex, reason for the exam;
the age is de-identified), never from the findings. Each institution has its
own voice: MIMIC-CXR's headed, hard-wrapped reports (leading space, <= 79
characters, ``FINAL REPORT``, sometimes a ``WET READ`` above an underscore line)
and OpenI's terse sentences with ``XXXX`` de-identification tokens.
"""

from __future__ import annotations

import textwrap

import numpy as np

from harness.synth import findings as fx
from harness.synth.findings import Finding
from harness.synth.world import Study

_SIZE = ("small", "moderate", "large")
_DEGREE = ("mild", "moderate", "severe")
_ZONE = {"upper": ("upper lobe", "apical", "upper"), "mid": ("mid lung", "perihilar", "middle"),
         "lower": ("lower lobe", "basilar", "base"), "": ("lung", "", "")}

_NEG_NOUN = {"pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax",
             "consolidation": "focal consolidation", "edema": "pulmonary edema", "pneumonia": "pneumonia",
             "lung_opacity": "focal opacity", "fracture": "displaced rib fracture",
             "nodule": "suspicious pulmonary nodule", "atelectasis": "atelectasis"}
_NEG_SENTENCE = {
    "cardiomegaly": ("Heart size is normal.", "The heart is normal in size.", "Normal cardiac silhouette."),
    "enlarged_cardiomediastinum": ("Mediastinal contours are normal.", "The mediastinum is not widened.",
                                   "Normal mediastinal silhouette."),
}
_HEDGE = ("Possible {np}.", "{NP} cannot be excluded.", "Findings may represent {np}.", "Questionable {np}.",
          "{NP} is suspected but not definite.")
_POSITIVE = ("{NP}.", "{NP} is present.", "{NP} is again seen.", "There is {a} {np}.")
_COUNTABLE = {"pleural_effusion", "pneumothorax", "nodule", "mass", "granuloma", "hernia", "fracture",
              "lung_opacity", "consolidation"}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _grade(f: Finding, words: tuple[str, str, str]) -> str:
    return words[min(2, int(f.severity * 3))]


def noun_phrase(f: Finding, rng: np.random.Generator) -> str:
    """A radiologist's name for the drawn finding, with its place and size."""
    side = f.side
    zone = _ZONE[f.zone][int(rng.integers(0, 2))]
    if f.name == "pleural_effusion":
        return f"{_grade(f, _SIZE)} {side} pleural effusion" + ("s" if side == "bilateral" else "")
    if f.name == "cardiomegaly":
        return ("mild", "moderate", "severe")[min(2, int(f.severity * 3))] + " cardiomegaly"
    if f.name == "enlarged_cardiomediastinum":
        return "widening of the mediastinum"
    if f.name == "pneumothorax":
        return f"{_grade(f, _SIZE)} {side} apical pneumothorax"
    if f.name == "consolidation":
        return f"{side} {zone} consolidation"
    if f.name == "pneumonia":
        return f"pneumonia in the {side} {_ZONE[f.zone][0]}"
    if f.name == "lung_opacity":
        return f"patchy {side} {zone} opacity"
    if f.name == "edema":
        return f"{_grade(f, _DEGREE)} pulmonary edema"
    if f.name in ("nodule", "mass"):
        size = int(6 + 20 * f.severity) if f.name == "nodule" else int(3 + 4 * f.severity)
        unit = "mm" if f.name == "nodule" else "cm"
        return f"{size} {unit} {side} {_ZONE[f.zone][0]} {f.name}"
    if f.name == "atelectasis":
        return f"{side} {zone} atelectasis"
    if f.name == "support_devices":
        names = [fx.DEVICE_NAMES[k] for k in sorted(fx.DEVICE_NAMES) if f.variant & k]
        return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    if f.name == "fracture":
        return f"{side} {('sixth', 'seventh', 'eighth', 'fourth', 'fifth', 'ninth')[f.variant % 6]} rib fracture"
    if f.name == "emphysema":
        return "hyperinflation with emphysema"
    if f.name == "fibrosis":
        return "basilar reticular opacities consistent with pulmonary fibrosis"
    if f.name == "hernia":
        return "small hiatal hernia"
    if f.name == "pleural_thickening":
        return f"{side} {'apical' if f.zone == 'upper' else 'basilar'} pleural thickening"
    return f"calcified granuloma in the {side} {_ZONE[f.zone][0]}"


def _article(np_: str) -> str:
    return "an" if np_[:1] in "aeiou" or np_.startswith(("8 ", "11 ", "18 ")) else "a"


def _sentence(f: Finding, how: str, rng: np.random.Generator) -> str:
    np_ = noun_phrase(f, rng)
    if f.name == "support_devices":
        return _cap(np_) + (" in standard position." if rng.random() < 0.6 else " are unchanged in position."
                            if " and " in np_ else " is unchanged in position.")
    n_positive = len(_POSITIVE) if f.name in _COUNTABLE and not np_.endswith("s") else len(_POSITIVE) - 1
    template = _HEDGE[int(rng.integers(len(_HEDGE)))] if how == "unc" else \
        _POSITIVE[int(rng.integers(n_positive))]
    return template.format(np=np_, NP=_cap(np_), a=_article(np_))


def _negatives(names: list[str], rng: np.random.Generator) -> list[str]:
    out = [_NEG_SENTENCE[n][int(rng.integers(3))] for n in names if n in _NEG_SENTENCE]
    nouns = [_NEG_NOUN[n] for n in names if n in _NEG_NOUN]
    for k in range(0, len(nouns), 3):
        group = nouns[k:k + 3]
        joined = group[0] if len(group) == 1 else ", ".join(group[:-1]) + " or " + group[-1]
        out.append(("No " if rng.random() < 0.6 else "There is no ") + joined + ".")
    return out


def describe(st: Study, rng: np.random.Generator) -> tuple[str, str]:
    """(findings, impression) text for the study's mentions."""
    by_name = {f.name: f for f in st.findings}
    said = [(by_name[n], how) for n, how in st.mentions.items() if how != "neg" and n in by_name]
    said.sort(key=lambda fh: fh[0].name != "support_devices")
    findings = [_sentence(f, how, rng) for f, how in said]
    findings += _negatives([n for n, how in st.mentions.items() if how == "neg"], rng)
    if not st.mentions:
        return "No significant interval change from the prior examination.", "Stable appearance of the chest."
    acute = [(f, how) for f, how in said if f.name != "support_devices"]
    if acute:
        impression = " ".join(_sentence(f, how, rng) for f, how in acute)
    else:
        impression = str(rng.choice(["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                                     "Normal chest radiograph."]))
        if said:
            impression = _sentence(said[0][0], said[0][1], rng) + " " + impression
    return " ".join(findings), impression


_QUESTION = {"shortness of breath": "eval for edema", "cough and fever": "r/o pneumonia",
             "chest pain": "eval for acute process", "fall": "eval for fracture",
             "line placement": "line placement", "preoperative evaluation": "preop",
             "hypoxia": "eval for acute process", "follow-up": "interval change"}


def indication(st: Study, style: str) -> str:
    man = st.patient.sex == "M"
    if style == "openi":
        return f"XXXX-year-old {'male' if man else 'female'} with {st.reason}."
    return f"___ year old {'man' if man else 'woman'} with {st.reason}  // {_QUESTION[st.reason]}"


def _wrap(text: str, indent: str = " ") -> list[str]:
    return [indent + line for line in textwrap.wrap(text, width=79 - len(indent))] or [indent]


def mimic_report(st: Study, exam: str, rng: np.random.Generator) -> str:
    """The whole ``sNNNNNNNN.txt`` text (every line starts with a space, <= 79 characters)."""
    findings, impression = describe(st, rng)
    lines: list[str] = []
    if st.report_kind == "wet_read":
        hour = int(st.seconds // 3600) % 12 or 12
        lines += [f" WET READ: ___ ___ {hour}:{int(st.seconds % 3600 // 60):02d} "
                  f"{'AM' if st.seconds < 43200 else 'PM'}", *_wrap(impression, "   "), " " + "_" * 78, " "]
    lines.append(" " * 33 + "FINAL REPORT")
    portable = "LAT" not in exam
    technique = "Portable AP chest radiograph" if portable else "Chest PA and lateral"
    if rng.random() < 0.7:
        lines += _wrap(f"EXAMINATION:  {exam}") + [" "] + _wrap(f"INDICATION:  {indication(st, 'mimic')}")
        lines += [" "] + _wrap(f"TECHNIQUE:  {technique}") + [" "] + _wrap("COMPARISON:  ___") + [" "]
    else:
        lines += _wrap(f"HISTORY:  {indication(st, 'mimic')}") + [" "] + _wrap("COMPARISONS:  ___") + [" "]
    if st.report_kind == "neither":
        views = "A single portable AP view" if portable else "PA and lateral views"
        lines += _wrap(f"{views} of the chest {'was' if portable else 'were'} obtained. {findings} {impression}")
    else:
        lines += [" FINDINGS: ", " "] + _wrap(findings)
        if st.report_kind != "findings_only":
            lines += [" ", " IMPRESSION: ", " "] + _wrap(impression)
    return "\n".join(lines) + "\n"


_OPENI_NORMAL = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
                 "Heart size and pulmonary vascularity appear within normal limits. The lungs are free of "
                 "focal airspace disease.",
                 "The cardiomediastinal silhouette is within normal limits for size and contour. Lungs are clear.")


def openi_sections(st: Study, rng: np.random.Generator) -> dict[str, str]:
    """COMPARISON / INDICATION / FINDINGS / IMPRESSION bodies (``""`` = empty element)."""
    findings, impression = describe(st, rng)
    if not any(how != "neg" for how in st.mentions.values()):
        findings = str(rng.choice(_OPENI_NORMAL)) + " " + findings.replace(
            "No pleural effusion", "There are no XXXX of a pleural effusion")
        impression = str(rng.choice(["Normal chest x-XXXX.", "No acute cardiopulmonary abnormality.",
                                     "No acute cardiopulmonary disease."]))
    comparison = str(rng.choice(["None.", "XXXX, XXXX", "Chest x-XXXX XXXX", ""], p=[0.5, 0.2, 0.14, 0.16]))
    return {"COMPARISON": comparison, "INDICATION": indication(st, "openi"),
            "FINDINGS": "" if st.report_kind == "impression_only" else findings, "IMPRESSION": impression}
