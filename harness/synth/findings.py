"""The synthetic world's finding vocabulary: what can be drawn, and where.

One finding is one drawn abnormality with a place and a severity. Every dataset
label (CheXpert's 14, NIH's 14, OpenI MeSH terms) is derived from these by
``harness.synth.labels``; every report sentence by ``harness.synth.reports``;
every pixel change by ``harness.synth.render``. Keeping the three downstream of
one record is what makes images, reports and labels agree.

Places are *relative to the lung* so the world needs no geometry: ``x`` is the
fraction of the hemithorax width from the midline (0) to the chest wall (1),
``y`` the fraction of the lung height from the apex (0) to the costophrenic
angle (1). The renderer maps them onto each patient's anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

# Snake-case keys, also used as the ``finding`` column of the ground-truth file.
FINDINGS = (
    "pleural_effusion", "cardiomegaly", "enlarged_cardiomediastinum", "pneumothorax",
    "consolidation", "pneumonia", "lung_opacity", "edema", "nodule", "mass", "atelectasis",
    "support_devices", "fracture", "emphysema", "fibrosis", "hernia", "pleural_thickening",
    "granuloma",
)

# Findings that belong to the patient (persist across studies, place kept).
CHRONIC = frozenset({
    "cardiomegaly", "enlarged_cardiomediastinum", "nodule", "mass", "emphysema", "fibrosis",
    "hernia", "pleural_thickening", "granuloma",
})

# Support-device kinds (bit flags in ``Finding.variant``).
DEVICE_ET_TUBE, DEVICE_NG_TUBE, DEVICE_CENTRAL_LINE, DEVICE_PACEMAKER, DEVICE_CHEST_TUBE = 1, 2, 4, 8, 16
DEVICE_NAMES = {
    DEVICE_ET_TUBE: "endotracheal tube", DEVICE_NG_TUBE: "enteric tube",
    DEVICE_CENTRAL_LINE: "right internal jugular central venous catheter",
    DEVICE_PACEMAKER: "left chest wall pacemaker", DEVICE_CHEST_TUBE: "chest tube",
}

SIDES = ("right", "left", "bilateral", "")  # patient sides; "" = midline / not lateralised
ZONES = ("upper", "mid", "lower", "")


@dataclass(frozen=True)
class Finding:
    """One drawn abnormality.

    Attributes:
        name: a key of ``FINDINGS``.
        side: patient side (``right`` is the image's left on a PA view), ``bilateral`` or ``""``.
        zone: ``upper`` / ``mid`` / ``lower`` lung zone, or ``""`` when not zonal.
        severity: 0 < s <= 1 (small/mild .. large/severe); drives size and density.
        uncertain: the radiologist hedges (drawn faint; labelled -1.0 where a dataset can).
        x, y: place relative to the lung (see module docstring).
        variant: finding-specific choice (device bit flags, rib number of a fracture, ...).
    """

    name: str
    side: str = ""
    zone: str = ""
    severity: float = 0.5
    uncertain: bool = False
    x: float = 0.5
    y: float = 0.5
    variant: int = 0

    def __post_init__(self) -> None:
        if self.name not in FINDINGS:
            raise ValueError(f"unknown finding {self.name!r}")
        if self.side not in SIDES or self.zone not in ZONES:
            raise ValueError(f"bad place side={self.side!r} zone={self.zone!r}")
