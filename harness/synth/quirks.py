"""The nasty cases of ``docs/datasets.md`` section 6, planted at every scale.

Adapters must meet them in the synthetic world too: a missing ViewPosition, a
StudyTime before 10:00 (leading zero lost), a study without a label row, an
all-blank label row, reports with only FINDINGS / a WET READ / no headed
sections, an ``anchor_age`` of 91, a patient never admitted, CheXpert's
``Unknown`` sex, ages 0 and 90, ``No Finding`` with ``Support Devices``, a
frontal ``LL``, NIH's RGBA PNG and follow-up numbers that differ from the file
name, OpenI's image-less report, empty (self-closing) sections, ``No Indexing``
and the trailing-space MeSH term, and the rarer image-id patterns.

Each quirk is planted on a fixed study (by position), so it exists whatever the
scale; writers read ``Study.quirks`` for the file-level ones.
"""

from __future__ import annotations

from dataclasses import replace

from harness.synth import findings as fx
from harness.synth.world import SourceWorld, Study


def _blank(st: Study) -> None:
    """A report that mentions nothing: all-blank labels (and nothing drawn, so image and labels agree)."""
    st.findings, st.mentions, st.report_kind = (), {}, "full"


def _set_age(world: SourceWorld, index: int, age: float) -> None:
    p = world.patients[index]
    p.age = age
    for st in world.studies:
        if st.patient is p:
            st.age = age + st.day / 365.25


def _mimic(world: SourceWorld) -> None:
    s = world.studies
    s[0].images[-1].view = ""                      # NaN ViewPosition
    s[1].quirks.add("no_label_row")
    _blank(s[2])
    s[3].report_kind, s[4].report_kind, s[5].report_kind = "findings_only", "neither", "wet_read"
    s[6].seconds = 8 * 3600 + 5 * 60 + 56.875      # StudyTime 80556.875
    _set_age(world, 3, 93.0)                       # anchor_age 91
    never = world.patients[4]
    for st in s:
        if st.patient is never:
            st.inpatient = st.icu = st.died = False
            st.quirks.add("no_admission")


def _chexpert(world: SourceWorld) -> None:
    train = [st for st in world.studies if st.split == ""]
    world.patients[0].sex = "U"
    train[1].quirks.add("age0")
    _set_age(world, 2, 93.0)
    device = fx.Finding("support_devices", severity=0.5, variant=fx.DEVICE_PACEMAKER)
    train[3].findings, train[3].mentions = (device,), {"support_devices": "pos", "pleural_effusion": "neg"}
    _blank(train[4])
    hedged = fx.Finding("atelectasis", side="left", zone="lower", severity=0.3, uncertain=True, x=0.5, y=0.8)
    train[5].findings = tuple(f for f in train[5].findings if f.name != "atelectasis") + (hedged,)
    train[5].mentions = {**train[5].mentions, "atelectasis": "unc"}
    train[6].images[0].view = "LL"                 # a Frontal row whose AP/PA says LL
    if not any(plan.render_view == "lateral" for st in train for plan in st.images):
        first = train[7].images[0]
        train[7].images.append(replace(first, view="LATERAL", render_view="lateral", serial=first.serial + 10**6))


def _nih(world: SourceWorld) -> None:
    first = world.studies[0]  # patient 0 is in the test list: guarantees at least one box at any scale
    if "pleural_effusion" not in first.mentions or first.mentions["pleural_effusion"] == "neg":
        effusion = fx.Finding("pleural_effusion", side="right", zone="lower", severity=0.7)
        first.findings = first.findings + (effusion,)
        first.mentions = {**first.mentions, "pleural_effusion": "pos"}
    first.quirks.add("rgba")
    world.studies[1].quirks.add("followup_mismatch")
    world.studies[2].quirks.add("age_412")         # only in the 2017-variant CSV


def _openi(world: SourceWorld) -> None:
    s = world.studies
    s[0].images = []
    s[1].report_kind = "impression_only"
    s[2].quirks.add("no_indication")
    s[3].quirks.add("no_indexing")
    s[4].quirks.add("technical_quality")
    s[5].quirks.add("long_id")
    s[6].quirks.add("sub_id")
    for st in s[7:]:
        if any(how != "neg" for how in st.mentions.values()):
            st.quirks.add("no_automatic")
            break


def plant(world: SourceWorld) -> None:
    {"mimic": _mimic, "chexpert": _chexpert, "nih14": _nih, "openi": _openi}[world.profile.name](world)
