"""The synthetic world: patients, studies, findings and EHR, per source (institution).

Causal order, so that correlations have a direction a model can learn honestly:
patient (age, sex, frailty, chronic disease, body) -> study context (ICU, heart
failure and infection activity, trauma, the reason for the exam: the EHR) ->
findings (logistic in that context) -> images, report, labels.

- Age raises cardiomegaly, emphysema, effusion, lesions, hernia, fibrosis.
- ICU stays raise support devices (strongly), effusion, atelectasis, edema and
  pneumothorax, and make portable AP (recumbent) views likely.
- A heart-failure factor couples cardiomegaly, edema and effusion; an infection
  factor couples consolidation, pneumonia, opacity (and some effusion).
- The INDICATION is drawn from the context (never from the findings), so
  indication-conditioned classification gets the realistic, indirect signal.

Each finding's *marginal* prevalence equals the source's target (published
dataset counts, ``calibration``) whatever the coefficients: intercepts are
solved by bisection on a fixed sample of contexts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from harness.synth import findings as fx
from harness.synth.anatomy import Anatomy, sample_anatomy
from harness.synth.calibration import calibration_sha256, prevalence_targets
from harness.synth.render import ImageStyle, Rendered, render

GENERATOR_VERSION = "2"
# The default world's scale (what a run without --data-root uses): 12 x the unit world's patients,
# so every task's evaluation split is sized for its metric (docs/datasets.md section 6.1). Tests use
# small fractions of the unit world; the unit (scale 1) is the version-1 world's size.
DEFAULT_SCALE = 12.0
# Patient-level official splits (MIMIC, NIH): a quarter of the patients are test patients, so that
# at DEFAULT_SCALE the test sets hold >= 2,000 frontal images while the training pools stay about
# three times larger (MIMIC also gets 10 % validation patients, >= 500 frontal images).
SPLIT_FRACTIONS = {"mimic": {"test": 0.25, "validate": 0.10}, "nih14": {"test": 0.25}}
CHEXPERT_VALID_PATIENTS = 170  # at scale 1: the radiologist-labelled set the CheXpert tasks test on
SOURCES = ("mimic", "chexpert", "nih14", "openi")
SOURCE_CODE = {"mimic": 11, "chexpert": 12, "nih14": 13, "openi": 14}

# context covariates: age_z, icu, heart_failure, infection, trauma, frailty
_COEF = {
    "pleural_effusion": (0.35, 0.7, 1.0, 0.3, 0.2, 0.3),
    "cardiomegaly": (0.7, 0.2, 1.1, 0.0, 0.0, 0.2),
    "enlarged_cardiomediastinum": (0.4, 0.3, 0.6, 0.0, 0.6, 0.1),
    "pneumothorax": (-0.3, 0.6, 0.0, 0.0, 1.8, 0.0),
    "consolidation": (0.1, 0.4, 0.0, 1.3, 0.0, 0.2),
    "pneumonia": (0.2, 0.3, 0.0, 1.5, 0.0, 0.2),
    "lung_opacity": (0.1, 0.4, 0.3, 1.0, 0.3, 0.2),
    "edema": (0.3, 0.6, 1.4, 0.0, 0.0, 0.2),
    "nodule": (0.4, 0.0, 0.0, 0.0, 0.0, 0.1),
    "mass": (0.5, 0.0, 0.0, 0.0, 0.0, 0.3),
    "atelectasis": (0.2, 0.9, 0.3, 0.5, 0.3, 0.2),
    "support_devices": (0.1, 3.0, 0.3, 0.0, 0.2, 0.3),
    "fracture": (0.4, 0.2, 0.0, 0.0, 2.2, 0.0),
    "emphysema": (0.7, 0.0, 0.0, 0.2, 0.0, 0.4),
    "fibrosis": (0.6, 0.0, 0.0, 0.0, 0.0, 0.3),
    "hernia": (0.8, 0.0, 0.0, 0.0, 0.0, 0.0),
    "pleural_thickening": (0.4, 0.0, 0.0, 0.0, 0.0, 0.1),
    "granuloma": (0.3, 0.0, 0.0, 0.0, 0.0, 0.0),
}
_UNCERTAIN = {"pneumonia": 0.45, "atelectasis": 0.3, "consolidation": 0.25, "edema": 0.25,
              "enlarged_cardiomediastinum": 0.3, "fracture": 0.2, "nodule": 0.2, "lung_opacity": 0.15,
              "support_devices": 0.0}
_ZONE_Y = {"upper": (0.12, 0.33), "mid": (0.38, 0.6), "lower": (0.65, 0.88)}
# reason for the exam (EHR) -> weight as a function of the context
REASONS = ("shortness of breath", "cough and fever", "chest pain", "fall", "line placement",
           "preoperative evaluation", "hypoxia", "follow-up")


@dataclass(frozen=True)
class SourceProfile:
    """What makes one institution's data look like that dataset."""

    name: str
    institution: str
    n_patients: int             # at scale 1
    studies_per_patient: float  # mean, >= 1
    age_mean: float
    age_sd: float
    icu_rate: float
    ap_rate: float              # frontal views that are AP outside the ICU
    lateral_rate: float         # studies with a lateral view
    image_size: tuple[int, int]
    size_jitter: int
    style: ImageStyle
    negation_rate: float        # how often reports state pertinent negatives


PROFILES = {
    "mimic": SourceProfile("mimic", "beth-israel", 300, 2.45, 62, 17, 0.22, 0.15, 0.75, (256, 256), 0,
                           ImageStyle(exposure=2.4, gamma=1.0, noise=0.015, blur=0.7, equalize=True,
                                      marker_corner=1), 0.7),
    "chexpert": SourceProfile("chexpert", "stanford", 260, 2.9, 61, 18, 0.35, 0.55, 0.19, (288, 256), 16,
                              ImageStyle(exposure=1.8, gamma=1.25, noise=0.03, blur=1.0, marker_corner=0,
                                         black_level=0.05, white_level=0.92), 0.5),
    "nih14": SourceProfile("nih14", "nih-clinical-center", 330, 3.6, 47, 17, 0.12, 0.3, 0.0, (256, 256), 0,
                           ImageStyle(exposure=2.0, gamma=0.85, noise=0.02, blur=0.5, marker_corner=2,
                                      black_level=0.0, white_level=1.0), 0.5),
    "openi": SourceProfile("openi", "indiana", 400, 1.0, 50, 17, 0.03, 0.1, 0.92, (256, 248), 8,
                           ImageStyle(exposure=2.8, gamma=1.1, noise=0.012, blur=0.9, marker_corner=3,
                                      collimation=0.03), 0.8),
}


@dataclass
class Patient:
    index: int
    sex: str                    # "M" | "F"
    age: float                  # at the first study
    frailty: float
    heart_failure: float        # chronic component of the heart-failure factor
    anatomy: Anatomy
    chronic: tuple[fx.Finding, ...]
    year0: int                  # shifted calendar year of the first study (MIMIC: 2100-2200)
    day0: int                   # day of year of the first study


@dataclass
class ImagePlan:
    view: str                   # dataset view label: PA / AP / LATERAL / LL / "" (missing)
    render_view: str            # frontal | lateral
    size: tuple[int, int]       # rows, columns
    serial: int                 # seeds the image's own generator


@dataclass
class Study:
    patient: Patient
    index: int                  # within the patient, chronological
    age: float
    day: int                    # days after the patient's first study
    seconds: float              # time of day
    icu: bool
    inpatient: bool
    died: bool
    reason: str
    findings: tuple[fx.Finding, ...]
    mentions: dict[str, str]    # finding -> pos | unc | neg, what the report says
    report_kind: str            # full | findings_only | neither | wet_read | blank | none
    images: list[ImagePlan]
    split: str = "train"
    quirks: set[str] = field(default_factory=set)


@dataclass
class SourceWorld:
    profile: SourceProfile
    seed: int
    patients: list[Patient]
    studies: list[Study]

    def image_rng(self, plan: ImagePlan) -> np.random.Generator:
        return np.random.default_rng([self.seed, SOURCE_CODE[self.profile.name], 1, plan.serial])


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-z))


def _contexts(profile: SourceProfile, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 6) context covariates as the world samples them (used for calibration)."""
    age = np.clip(rng.normal(profile.age_mean, profile.age_sd, n), 18, 95)
    frailty = rng.normal(0, 1, n)
    icu = rng.random(n) < _sigmoid(_logit(profile.icu_rate) + 0.8 * frailty + 0.02 * (age - 60))
    hf = 0.7 * rng.normal(0, 1, n) + 0.7 * rng.normal(0, 1, n)
    return np.stack([(age - 60) / 15, icu, hf, rng.normal(0, 1, n), rng.random(n) < 0.04, frailty], 1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def intercepts(source: str, calibration: str = "spec") -> dict[str, float]:
    """Per-finding intercepts that make each marginal prevalence hit its target."""
    # cached by the calibration files' digest too: other torchxrayvision files are never served stale intercepts
    return dict(_intercepts(source, calibration, calibration_sha256(calibration)))


@lru_cache(maxsize=8)
def _intercepts(source: str, calibration: str, digest: str | None) -> dict[str, float]:
    profile = PROFILES[source]
    ctx = _contexts(profile, np.random.default_rng(12345), 20000)
    out = {}
    for name, target in prevalence_targets(source, calibration).items():
        lin = ctx @ np.asarray(_COEF[name])
        lo, hi = -15.0, 10.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _sigmoid(mid + lin).mean() < target else (lo, mid)
        out[name] = (lo + hi) / 2
    return out


def _place(name: str, rng: np.random.Generator) -> dict[str, object]:
    """Side, zone and relative position of one finding (what reports and renderer use)."""
    side = str(rng.choice(["right", "left"]))
    zone = str(rng.choice(["upper", "mid", "lower"], p=[0.2, 0.3, 0.5]))
    if name in ("edema", "emphysema"):
        side, zone = "bilateral", ""
    elif name == "pleural_effusion":
        side, zone = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.3, 0.35])), "lower"
    elif name == "pneumothorax":
        zone = "upper"
    elif name == "atelectasis":
        zone = "lower" if rng.random() < 0.8 else "mid"
        side = "bilateral" if rng.random() < 0.2 else side
    elif name == "fibrosis":
        side, zone = ("bilateral" if rng.random() < 0.8 else side), "lower"
    elif name == "lung_opacity" and rng.random() < 0.2:
        side = "bilateral"
    elif name in ("cardiomegaly", "enlarged_cardiomediastinum", "hernia", "support_devices"):
        side, zone = "", ""
    elif name == "fracture":
        zone = ""
    elif name == "pleural_thickening":
        zone = "upper" if rng.random() < 0.5 else "lower"
    y = rng.uniform(*_ZONE_Y[zone]) if zone else 0.5
    return {"side": side, "zone": zone, "x": float(rng.uniform(0.3, 0.8)), "y": float(y)}


def _device_bits(rng: np.random.Generator, icu: bool, age: float) -> int:
    bits = 0
    if icu:
        for bit, p in ((fx.DEVICE_ET_TUBE, 0.55), (fx.DEVICE_NG_TUBE, 0.45), (fx.DEVICE_CENTRAL_LINE, 0.6),
                       (fx.DEVICE_CHEST_TUBE, 0.15)):
            bits |= bit if rng.random() < p else 0
    if rng.random() < (0.25 + 0.01 * max(0.0, age - 60)) * (0.5 if icu else 1.0):
        bits |= fx.DEVICE_PACEMAKER
    return bits or int(rng.choice([fx.DEVICE_CENTRAL_LINE, fx.DEVICE_PACEMAKER, fx.DEVICE_NG_TUBE]))


def make_finding(name: str, rng: np.random.Generator, *, icu: bool = False, age: float = 60.0) -> fx.Finding:
    uncertain = bool(rng.random() < _UNCERTAIN.get(name, 0.1))
    severity = float(np.clip(rng.beta(2.0, 2.5) * (0.6 if uncertain else 1.0) + 0.08, 0.1, 1.0))
    variant = 0
    if name == "support_devices":
        variant = _device_bits(rng, icu, age)
    elif name == "fracture":
        variant = int(rng.integers(3, 9))
    return fx.Finding(name, severity=severity, uncertain=uncertain, variant=variant, **_place(name, rng))


_NEGATABLE = {"pleural_effusion": 0.75, "pneumothorax": 0.7, "consolidation": 0.5, "cardiomegaly": 0.5,
              "edema": 0.3, "enlarged_cardiomediastinum": 0.25, "pneumonia": 0.12, "lung_opacity": 0.1,
              "fracture": 0.05, "nodule": 0.04, "atelectasis": 0.04}
_MIN_PATIENTS = {"mimic": 8, "chexpert": 8, "nih14": 6, "openi": 8}


def _reason(rng: np.random.Generator, ctx: np.ndarray) -> str:
    """The exam's reason (EHR), from the clinical context only."""
    _, icu, hf, inf, trauma, _ = ctx
    w = np.array([math.exp(0.9 * hf), math.exp(0.9 * inf), 1.0, 0.2 + 8 * trauma, 3.0 * icu,
                  0.6 * (1 - icu), 0.5 * icu + 0.3 * max(hf, 0), 0.5])
    return REASONS[int(rng.choice(len(REASONS), p=w / w.sum()))]


def _mentions(found: tuple[fx.Finding, ...], profile: SourceProfile, rng: np.random.Generator) -> dict[str, str]:
    out = {f.name: ("unc" if f.uncertain else "pos") for f in found}
    scale = profile.negation_rate / 0.7
    for name, p in _NEGATABLE.items():
        if name not in out and rng.random() < min(0.95, p * scale):
            out[name] = "neg"
    return out


def _patient(index: int, profile: SourceProfile, b: dict[str, float], rng: np.random.Generator) -> Patient:
    sex = "F" if rng.random() < 0.45 else "M"
    age = float(np.clip(rng.normal(profile.age_mean, profile.age_sd), 1 if profile.name == "nih14" else 18, 95))
    frailty, hf = float(rng.normal()), float(rng.normal())
    ctx = np.array([(age - 60) / 15, 0, hf, 0, 0, frailty])
    chronic = tuple(make_finding(n, rng, age=age) for n in fx.FINDINGS
                    if n in fx.CHRONIC and rng.random() < _sigmoid(b[n] + ctx @ np.asarray(_COEF[n])))
    return Patient(index, sex, age, frailty, hf, sample_anatomy(rng, age=age, sex=sex), chronic,
                   int(rng.integers(2110, 2190)), int(rng.integers(0, 300)))


def _study(p: Patient, index: int, day: int, profile: SourceProfile, b: dict[str, float],
           rng: np.random.Generator) -> Study:
    age = p.age + day / 365.25
    icu = bool(rng.random() < _sigmoid(_logit(profile.icu_rate) + 0.8 * p.frailty + 0.02 * (age - 60)))
    hf = 0.7 * p.heart_failure + 0.7 * float(rng.normal())
    ctx = np.array([(age - 60) / 15, icu, hf, float(rng.normal()), float(rng.random() < 0.04), p.frailty])
    acute = tuple(make_finding(n, rng, icu=icu, age=age) for n in fx.FINDINGS
                  if n not in fx.CHRONIC and rng.random() < _sigmoid(b[n] + ctx @ np.asarray(_COEF[n])))
    inpatient = icu or bool(rng.random() < _sigmoid(-0.6 + 0.5 * p.frailty + 0.5 * hf + 0.5 * ctx[3]))
    died = inpatient and bool(rng.random() < _sigmoid(-4.2 + 1.2 * icu + 0.4 * hf + 0.03 * (age - 65)
                                                      + 0.25 * len(acute)))
    found = p.chronic + acute
    r = rng.random()
    kind = "neither" if r < 0.046 else "findings_only" if r < 0.168 else "wet_read" if r < 0.2 else "full"
    return Study(p, index, age, day, float(rng.uniform(0, 86400)), icu, inpatient, died, _reason(rng, ctx),
                 found, _mentions(found, profile, rng), kind, [])


def _views(st: Study, profile: SourceProfile, rng: np.random.Generator) -> list[str]:
    portable = st.icu or (st.inpatient and rng.random() < 0.4) or rng.random() < profile.ap_rate
    frontal = "AP" if portable else "PA"
    r = rng.random()
    if profile.name == "mimic":
        if portable:
            return ["AP"] + (["LATERAL"] if r < 0.08 else [])
        return ["PA", "LATERAL"] if r < 0.8 else ["PA"] if r < 0.88 else ["PA", "LL"] if r < 0.94 \
            else ["PA", "LATERAL", "LATERAL"]
    if profile.name == "chexpert":
        return [frontal] + (["LATERAL"] if r < profile.lateral_rate else ["AP"] if r > 0.985 else [])
    if profile.name == "nih14":
        return [frontal]
    counts = ([], ["PA"], ["PA", "LATERAL"], ["PA", "LATERAL", "LATERAL"], ["PA", "LATERAL", "PA", "LATERAL"])
    return counts[int(rng.choice(5, p=[0.03, 0.11, 0.8, 0.05, 0.01]))]


def _plans(views: list[str], profile: SourceProfile, rng: np.random.Generator, serial: int) -> list[ImagePlan]:
    out = []
    for k, view in enumerate(views):
        h, w = profile.image_size
        j = profile.size_jitter
        if j:
            h, w = h + int(rng.integers(-j, j + 1)), w + int(rng.integers(-j, j + 1))
        out.append(ImagePlan(view, "lateral" if view in ("LATERAL", "LL") else "frontal", (h, w), serial + k))
    return out


def _splits(world: SourceWorld, rng: np.random.Generator) -> None:
    """Patient-disjoint official splits in each dataset's vocabulary."""
    name = world.profile.name
    for p_index in range(len(world.patients)):
        r = rng.random()
        if name == "mimic":
            test, val = SPLIT_FRACTIONS["mimic"]["test"], SPLIT_FRACTIONS["mimic"]["validate"]
            split = "test" if p_index == 0 or r < test else "validate" if p_index == 1 or r < test + val else "train"
        elif name == "nih14":
            split = "test" if p_index == 0 or r < SPLIT_FRACTIONS["nih14"]["test"] else "train"
        else:
            split = ""
        for st in world.studies:
            if st.patient.index == p_index:
                st.split = split


def build_source(source: str, *, scale: float = 1.0, seed: int = 0, calibration: str = "spec") -> SourceWorld:
    """Sample one institution's patients and studies (no pixels yet)."""
    profile = PROFILES[source]
    rng = np.random.default_rng([seed, SOURCE_CODE[source], 0])
    b = intercepts(source, calibration)
    world = SourceWorld(profile, seed, [], [])
    n_patients = max(_MIN_PATIENTS[source], round(profile.n_patients * scale))
    serial = 0
    for i in range(n_patients):
        p = _patient(i, profile, b, rng)
        world.patients.append(p)
        day = 0
        for k in range(1 + int(rng.poisson(profile.studies_per_patient - 1))):
            day += int(rng.exponential(150)) + 1 if k else 0
            st = _study(p, k, day, profile, b, rng)
            st.images = _plans(_views(st, profile, rng), profile, rng, serial)
            serial += len(st.images)
            world.studies.append(st)
    _splits(world, rng)
    if source == "chexpert":  # the radiologist-labelled validation set: new patients, one study each
        for i in range(max(4, round(CHEXPERT_VALID_PATIENTS * scale))):
            p = _patient(n_patients + i, profile, b, rng)
            world.patients.append(p)
            st = _study(p, 0, 0, profile, b, rng)
            st.images = _plans(_views(st, profile, rng), profile, rng, serial)
            serial += len(st.images)
            st.split = "valid"
            world.studies.append(st)
    return world


def image_anatomy(world: SourceWorld, st: Study, plan: ImagePlan, rng: np.random.Generator) -> Anatomy:
    """The patient's body in this exposure: pose jitter; AP projection magnifies the heart."""
    from dataclasses import replace

    an = st.patient.anatomy
    an = replace(an, shift_x=float(rng.uniform(-0.04, 0.04)), shift_y=float(rng.uniform(-0.04, 0.04)),
                 rotation=float(rng.normal(0, 0.03)))
    if plan.view == "AP":
        an = replace(an, heart_ctr=an.heart_ctr * 1.08, scale=an.scale * 1.03, diaphragm_y=an.diaphragm_y - 0.03)
    return an


def draw(world: SourceWorld, st: Study, plan: ImagePlan) -> Rendered:
    """Render one planned image: its own generator, so images can be drawn in any order."""
    rng = world.image_rng(plan)
    anatomy = image_anatomy(world, st, plan, rng)
    return render(anatomy, st.findings, view=plan.render_view, size=plan.size, style=world.profile.style, rng=rng)
