"""MIMIC-IV EHR fields for MIMIC-CXR images, and the MSN+EHR paper's feature encodings.

Join (``join_ehr``), by ``subject_id`` and the study time, from
``mimiciv/<version>/hosp/{patients,admissions}.csv.gz`` (v1.0: ``core/``) and,
when present, ``mimiciv/<version>/icu/icustays.csv.gz``. The highest version
present is used. Columns added (all ``NaN`` / ``""`` / ``False`` where nothing
matched, never a dropped row):

=============================  =================================================================
``ehr_available``              the subject has a ``patients`` row
``ehr_sex``                    ``patients.gender`` (``M`` / ``F``; anything else ``""``)
``ehr_age``                    ``anchor_age + StudyDate year - anchor_year`` (not capped)
``ehr_age_over_89``            ``anchor_age > 89``: MIMIC-IV writes every age above 89 as 91, so
                               ages from such a subject are a floor, not a value
``ehr_hadm_id``                the admission with ``admittime <= t <= dischtime`` (t = StudyDate +
                               zero-padded StudyTime); ``from_edregtime=True`` starts the window at
                               ``edregtime`` when earlier (CXRs taken in the ED before admission).
                               Overlapping matches: the latest ``admittime`` wins. ``<NA>`` if none
``ehr_admission_type``         that admission's ``admission_type``
``ehr_hospital_expire_flag``   that admission's ``hospital_expire_flag`` (NaN without admission)
``ehr_in_icu``                 1 if ``intime <= t <= outtime`` for an ICU stay, else 0
                               (NaN for every row when ``icu/icustays.csv.gz`` is absent)
``ehr_stay_expire``            the paper's mortality: the ``hospital_expire_flag`` of an admission
                               whose [admittime date, dischtime date] holds the StudyDate,
                               else 0 (several such admissions: 1 if any has the flag)
``ehr_icu_stay``               the paper's ICU flag: 1 if the StudyDate lies in an ICU stay's
                               [intime date, outtime date], else 0 (NaN without icustays)
=============================  =================================================================

The paper's columns use DATES (methods.md section 4, notebooks), the others
timestamps (datasets.md section 2); both are kept because they answer different
questions and the paper's encodings must be reproduced to the letter.

Encoding (``encode_ehr``), Shurrab et al. 2024 (CXR-EHR-MSN notebooks), variables in
this fixed order, groups expanding to them:

=============  ====  ===========================================================
variable       dim   one-hot order / formula
=============  ====  ===========================================================
sex            2     [male, female]
age            1     ``minmax``: (age - 16) / (100 - 16) (not clipped)
               16    ``bin5``: right-closed edges 0, 20, 25, ..., 90, inf
               9     ``bin10``: right-closed edges 0, 20, 30, ..., 90, inf (inferred: the
                     spec gives only "9 bins"; these are the 10-year analogue of bin5)
view           4     [PA, LATERAL, AP, LL]
orientation    2     [Erect, Recumbent]
mortality      2     [alive, died]          (``ehr_stay_expire``)
icu            2     [icu, not_icu]          (``ehr_icu_stay``)
=============  ====  ===========================================================

Groups: ``demographics`` (alias ``socio``) = sex + age (3 / 18 / 11);
``scan`` (``image_meta``) = view + orientation (6); ``inpatient`` (``clinical``) =
mortality + icu (4). All three: 13 / 28 / 21.

Missing values (documented, counted by :func:`ehr_coverage`):

* view ``""`` and orientation ``""``: imputed as the paper does (label-encode
  both, sklearn ``IterativeImputer`` with a ``RandomForestRegressor``, max_iter 10,
  random_state 24, on these two columns only, round, decode), fitted on the rows
  passed in whose view is one of the four or missing. The forest's own
  random_state is also 24 (the paper leaves it unset, which is not reproducible).
  ``impute="mode"`` fills with the most frequent value instead (fast);
  ``impute="none"`` leaves zeros.
* a view outside the four (LAO, SWIMMERS, ...; the paper DROPS these rows): all
  zeros, and such a row's missing orientation is not imputed either.
* no MIMIC-IV subject (``ehr_available`` False; the paper drops rows without
  gender): sex [0, 0]; age one-hot all zeros, ``minmax`` age = the mean
  ``minmax`` age of the rows that have one; mortality / icu follow the paper's
  "otherwise 0" rule ([1, 0] and [0, 1]).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.schema import DataError
from harness.data.tables import read_table

log = logging.getLogger(__name__)

AGE_ENCODINGS = ("minmax", "bin5", "bin10")
VARIABLES = ("sex", "age", "view", "orientation", "mortality", "icu")
GROUPS = {
    "demographics": ("sex", "age"), "socio": ("sex", "age"),
    "scan": ("view", "orientation"), "image_meta": ("view", "orientation"),
    "inpatient": ("mortality", "icu"), "clinical": ("mortality", "icu"),
}
VIEWS = ("PA", "LATERAL", "AP", "LL")
ORIENTATIONS = ("Erect", "Recumbent")
MAX_ANCHOR_AGE = 91  # MIMIC-IV shifts every anchor_age above 89 to 91: a larger value is a corrupt row
AGE_MIN, AGE_MAX = 16.0, 100.0  # the paper's observed age range, used as min-max constants
AGE_EDGES = {
    "bin5": (0.0, *np.arange(20.0, 91.0, 5.0), np.inf),   # 17 edges -> 16 bins
    "bin10": (0.0, *np.arange(20.0, 91.0, 10.0), np.inf),  # 10 edges -> 9 bins
}

_PATIENTS = {"subject_id": "int", "gender": "str", "anchor_age": "int", "anchor_year": "int"}
_ADMISSIONS = {"subject_id": "int", "hadm_id": "int", "admittime": "time", "dischtime": "time",
               "admission_type": "str", "edregtime": "time", "hospital_expire_flag": "int"}
_ICUSTAYS = {"subject_id": "int", "intime": "time", "outtime": "time"}


@dataclass(frozen=True)
class MimicIvTables:
    """Where the MIMIC-IV tables of one installation are."""

    version: str            # "3.1", "1.0", or "" for an unversioned ``mimiciv/hosp`` folder
    patients: Path
    admissions: Path
    icustays: Path | None   # None: no ``icu/icustays.csv(.gz)``


def _table(folder: Path, name: str) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def _tables_in(version_dir: Path, version: str) -> MimicIvTables | None:
    for module in ("hosp", "core"):  # v2+: hosp/; v1.0: core/
        folder = version_dir / module
        patients, admissions = _table(folder, "patients"), _table(folder, "admissions")
        if patients and admissions:
            return MimicIvTables(version, patients, admissions, _table(version_dir / "icu", "icustays"))
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def find_mimiciv(ehr_root: Path) -> MimicIvTables | None:
    """The tables under ``ehr_root`` (a ``mimiciv`` folder or one version folder); highest version wins."""
    ehr_root = Path(ehr_root)
    here = _tables_in(ehr_root, "")
    if here is not None:
        return here
    if not ehr_root.is_dir():
        return None
    versions = sorted((d for d in ehr_root.iterdir() if d.is_dir() and _version_key(d.name)),
                      key=lambda d: _version_key(d.name), reverse=True)
    for d in versions:
        found = _tables_in(d, d.name)
        if found is not None:
            return found
    return None


def _subject_ids(frame: pd.DataFrame) -> np.ndarray:
    ids = pd.to_numeric(frame["patient_id"], errors="coerce")
    if ids.isna().any():
        raise DataError(f"patient_id {frame['patient_id'][ids.isna()].iloc[0]!r} is not a MIMIC subject_id")
    return ids.to_numpy(dtype=np.int64)


def join_ehr(frame: pd.DataFrame, ehr_root: Path | MimicIvTables, *,
             from_edregtime: bool = False) -> pd.DataFrame:
    """A copy of ``frame`` with the ``ehr_*`` columns (module docstring).

    Args:
        frame: needs ``patient_id`` (the subject_id as text), ``study_date`` (datetime64, midnight) and
            ``study_datetime`` (datetime64; NaT where StudyTime is missing: no timestamp join for that row).
        ehr_root: a ``mimiciv`` folder (``<version>/hosp``, ``hosp`` or v1.0 ``core``), one version folder,
            or the tables :func:`find_mimiciv` found.
        from_edregtime: start an admission's window at ``edregtime`` when that is earlier.

    Raises:
        DataError: no MIMIC-IV tables under ``ehr_root``, or a bad row in them (file, row, column).
    """
    tables = ehr_root if isinstance(ehr_root, MimicIvTables) else find_mimiciv(ehr_root)
    if tables is None:
        raise DataError(f"{ehr_root}: no MIMIC-IV tables (expected <version>/hosp/patients.csv.gz and "
                        "admissions.csv.gz, or v1.0 core/)")
    subjects = _subject_ids(frame)
    left = pd.DataFrame({"row": np.arange(len(frame)), "subject_id": subjects,
                         "date": pd.to_datetime(frame["study_date"]).to_numpy(),
                         "t": pd.to_datetime(frame["study_datetime"]).to_numpy()})
    wanted = np.unique(subjects)
    out = frame.copy()
    _join_patients(out, left, tables.patients, wanted)
    _join_admissions(out, left, tables.admissions, wanted, from_edregtime)
    _join_icustays(out, left, tables.icustays, wanted)
    return out


def _join_patients(out: pd.DataFrame, left: pd.DataFrame, path: Path, wanted: np.ndarray) -> None:
    patients = read_table(path, _PATIENTS)
    dup = patients["subject_id"].duplicated()
    if dup.any():
        raise DataError(f"{path}:{int(np.flatnonzero(dup)[0]) + 2}: subject_id: duplicated subject")
    impossible = ~patients["anchor_age"].between(0, MAX_ANCHOR_AGE).to_numpy()
    if impossible.any():
        i = int(np.flatnonzero(impossible)[0])
        raise DataError(f"{path}:{i + 2}: anchor_age: value {int(patients['anchor_age'].iloc[i])} is not an age "
                        f"(MIMIC-IV anchor ages are 0-{MAX_ANCHOR_AGE}; above 89 all read {MAX_ANCHOR_AGE})")
    patients = patients[patients["subject_id"].isin(wanted)].set_index("subject_id")
    found = patients.reindex(left["subject_id"].to_numpy())
    years = left["date"].dt.year.to_numpy(dtype=np.float64)
    out["ehr_available"] = found["anchor_age"].notna().to_numpy()
    gender = found["gender"].astype(object).to_numpy()
    out["ehr_sex"] = np.where(np.isin(gender, ["M", "F"]), gender, "")
    anchor_age = found["anchor_age"].to_numpy(dtype=np.float64)
    out["ehr_age"] = anchor_age + years - found["anchor_year"].to_numpy(dtype=np.float64)
    out["ehr_age_over_89"] = np.nan_to_num(anchor_age, nan=0.0) > 89


def _join_admissions(out: pd.DataFrame, left: pd.DataFrame, path: Path, wanted: np.ndarray,
                     from_edregtime: bool) -> None:
    adm = read_table(path, _ADMISSIONS, optional=("edregtime",))
    bad = ~adm["hospital_expire_flag"].isin([0, 1])
    if bad.any():
        raise DataError(f"{path}:{int(np.flatnonzero(bad)[0]) + 2}: hospital_expire_flag: not 0 or 1")
    dup = adm["hadm_id"].duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}:{int(np.flatnonzero(dup)[0]) + 2}: hadm_id: duplicated admission")
    adm = adm[adm["subject_id"].isin(wanted)]
    kinds = adm.set_index("hadm_id")["admission_type"]
    pairs = left.merge(adm.drop(columns="admission_type"), on="subject_id")  # images x admissions
    start = pairs["admittime"]
    if from_edregtime:
        start = start.where(pairs["edregtime"].isna() | (start <= pairs["edregtime"]), pairs["edregtime"])
    hit = pairs[(start <= pairs["t"]) & (pairs["t"] <= pairs["dischtime"])]
    hit = hit.sort_values(["row", "admittime"]).drop_duplicates("row", keep="last").set_index("row")
    n = len(out)
    hadm = hit["hadm_id"].reindex(range(n))
    out["ehr_hadm_id"] = pd.array(hadm.to_numpy(dtype=np.float64), dtype="Int64")
    out["ehr_admission_type"] = hadm.map(kinds).fillna("").astype(str).to_numpy()
    out["ehr_hospital_expire_flag"] = hit["hospital_expire_flag"].reindex(range(n)).to_numpy(dtype=np.float64)
    # The paper: date-level window, and 0 where no admission holds the study date.
    day_in, day_out = pairs["admittime"].dt.normalize(), pairs["dischtime"].dt.normalize()
    in_stay = (day_in <= pairs["date"]) & (pairs["date"] <= day_out)
    died = pairs[in_stay].groupby("row")["hospital_expire_flag"].max()
    out["ehr_stay_expire"] = died.reindex(range(n)).fillna(0).to_numpy(dtype=np.float64)


def _join_icustays(out: pd.DataFrame, left: pd.DataFrame, path: Path | None, wanted: np.ndarray) -> None:
    n = len(out)
    if path is None:
        out["ehr_in_icu"] = np.full(n, np.nan)
        out["ehr_icu_stay"] = np.full(n, np.nan)
        return
    icu = read_table(path, _ICUSTAYS)
    pairs = left.merge(icu[icu["subject_id"].isin(wanted)], on="subject_id")
    in_icu = (pairs["intime"] <= pairs["t"]) & (pairs["t"] <= pairs["outtime"])
    day_in, day_out = pairs["intime"].dt.normalize(), pairs["outtime"].dt.normalize()
    in_stay = (day_in <= pairs["date"]) & (pairs["date"] <= day_out)
    out["ehr_in_icu"] = np.isin(np.arange(n), pairs.loc[in_icu, "row"].to_numpy()).astype(np.float64)
    out["ehr_icu_stay"] = np.isin(np.arange(n), pairs.loc[in_stay, "row"].to_numpy()).astype(np.float64)


def ehr_coverage(frame: pd.DataFrame) -> dict[str, int]:
    """Counts behind the missing-value rules (aggregate only: safe to log and store)."""
    view, orientation = frame["view"].fillna(""), frame["orientation"].fillna("")
    usable = view.isin(VIEWS) | (view == "")
    counts = {"images": len(frame)}
    if "ehr_available" in frame.columns:
        no_subject = ~frame["ehr_available"].astype(bool)
        counts["no MIMIC-IV subject (sex/age zero or mean)"] = int(no_subject.sum())
    if "ehr_hadm_id" in frame.columns:
        counts["admission found"] = int(frame["ehr_hadm_id"].notna().sum())
    counts["view imputed"] = int(((view == "") & usable).sum())
    counts["orientation imputed"] = int(((orientation == "") & usable).sum())
    counts["rare view (zero one-hot)"] = int((~usable).sum())
    return counts


def _variables(groups: tuple[str, ...]) -> list[str]:
    chosen = set()
    for g in groups:
        if g in GROUPS:
            chosen.update(GROUPS[g])
        elif g in VARIABLES:
            chosen.add(g)
        else:
            raise ValueError(f"unknown EHR group or variable {g!r}; "
                             f"choose from {sorted(GROUPS)} or {VARIABLES}")
    return [v for v in VARIABLES if v in chosen]


def _one_hot(values: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    return (values[:, None] == np.asarray(categories, dtype=object)[None, :]).astype(np.float32)


def _age_features(frame: pd.DataFrame, age_encoding: str) -> tuple[np.ndarray, list[str]]:
    age = frame["ehr_age"].to_numpy(dtype=np.float64)
    if age_encoding == "minmax":
        norm = (age - AGE_MIN) / (AGE_MAX - AGE_MIN)
        fill = np.nanmean(norm) if np.isfinite(norm).any() else 0.0
        return np.where(np.isnan(norm), fill, norm)[:, None].astype(np.float32), ["age_norm"]
    edges = np.asarray(AGE_EDGES[age_encoding])
    idx = np.searchsorted(edges, age, side="left") - 1  # right-closed bins, like pd.cut(right=True)
    idx = np.where(np.isnan(age) | (idx < 0), -1, idx)
    n_bins = len(edges) - 1
    out = (idx[:, None] == np.arange(n_bins)[None, :]).astype(np.float32)
    prefix = "age5" if age_encoding == "bin5" else "age10"
    return out, [f"{prefix}_({edges[i]:g},{edges[i + 1]:g}]" for i in range(n_bins)]


def _impute_scan(frame: pd.DataFrame, impute: str) -> tuple[np.ndarray, np.ndarray]:
    """View and orientation strings with the paper's imputation (module docstring)."""
    view = frame["view"].fillna("").astype(str).to_numpy(dtype=object)
    orientation = frame["orientation"].fillna("").astype(str).to_numpy(dtype=object)
    usable = np.isin(view, VIEWS) | (view == "")
    need = usable & ((view == "") | (orientation == ""))
    if impute == "none" or not need.any():
        return view, orientation
    view_classes = sorted(set(view[usable & (view != "")]))  # LabelEncoder order (alphabetical)
    orient_classes = sorted(set(orientation[usable & (orientation != "")]))
    if not view_classes or not orient_classes:
        raise DataError("cannot impute view/orientation: no row has a known value to learn from")
    codes = np.column_stack([
        np.array([view_classes.index(v) if v else np.nan for v in view[usable]], dtype=np.float64),
        np.array([orient_classes.index(o) if o else np.nan for o in orientation[usable]], dtype=np.float64),
    ])
    if impute == "paper":
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers IterativeImputer)
        from sklearn.impute import IterativeImputer

        imputer = IterativeImputer(estimator=RandomForestRegressor(random_state=24, n_jobs=1), max_iter=10,
                                   random_state=24, keep_empty_features=True)
        filled = np.round(imputer.fit_transform(codes))
    elif impute == "mode":
        filled = codes.copy()
        for j in range(2):
            known = codes[~np.isnan(codes[:, j]), j]
            filled[np.isnan(codes[:, j]), j] = np.bincount(known.astype(int)).argmax()
    else:
        raise ValueError(f"impute must be 'paper', 'mode' or 'none', got {impute!r}")
    filled[:, 0] = np.clip(filled[:, 0], 0, len(view_classes) - 1)
    filled[:, 1] = np.clip(filled[:, 1], 0, len(orient_classes) - 1)
    view, orientation = view.copy(), orientation.copy()
    view[usable] = [view_classes[int(c)] for c in filled[:, 0]]
    orientation[usable] = [orient_classes[int(c)] for c in filled[:, 1]]
    return view, orientation


def encode_ehr(frame: pd.DataFrame, groups: tuple[str, ...], age_encoding: str = "minmax", *,
               impute: str = "paper") -> tuple[np.ndarray, list[str]]:
    """The MSN+EHR paper's EHR feature vectors for the rows of ``frame``.

    Args:
        frame: records with ``view``, ``orientation`` and the ``ehr_*`` columns of :func:`join_ehr`.
        groups: group names (``demographics``, ``scan``, ``inpatient`` or their paper aliases
            ``socio``, ``image_meta``, ``clinical``) and/or single variables (``sex``, ``age``, ...).
            Features always come in the fixed variable order of the module docstring.
        age_encoding: ``minmax`` | ``bin5`` | ``bin10``.
        impute: view/orientation imputation: ``paper`` | ``mode`` | ``none``.

    Returns:
        ``(features, names)``: float32 ``(N, D)`` and the D feature names.

    Example::

        >>> x, names = encode_ehr(records.frame, ("demographics",), "bin10")
        >>> x.shape[1], names[:3]
        (11, ['sex_male', 'sex_female', 'age10_(0,20]'])
    """
    if age_encoding not in AGE_ENCODINGS:
        raise ValueError(f"age_encoding must be one of {AGE_ENCODINGS}, got {age_encoding!r}")
    variables = _variables(tuple(groups))
    needs_ehr = {"sex", "age", "mortality", "icu"} & set(variables)
    if needs_ehr and "ehr_available" not in frame.columns:
        raise DataError(f"EHR variables {sorted(needs_ehr)} need MIMIC-IV: the records have no ehr_* columns "
                        "(no mimiciv/<version>/hosp tables under the data root)")
    if "icu" in variables and frame["ehr_icu_stay"].isna().all():
        raise DataError("EHR variable 'icu' needs mimiciv/<version>/icu/icustays.csv.gz, which is absent")
    blocks: list[np.ndarray] = []
    names: list[str] = []
    if {"view", "orientation"} & set(variables):
        view, orientation = _impute_scan(frame, impute)
    for var in variables:
        if var == "sex":
            blocks.append(_one_hot(frame["ehr_sex"].to_numpy(dtype=object), ("M", "F")))
            names += ["sex_male", "sex_female"]
        elif var == "age":
            block, block_names = _age_features(frame, age_encoding)
            blocks.append(block)
            names += block_names
        elif var == "view":
            blocks.append(_one_hot(view, VIEWS))
            names += [f"view_{v}" for v in VIEWS]
        elif var == "orientation":
            blocks.append(_one_hot(orientation, ORIENTATIONS))
            names += [f"orientation_{o}" for o in ORIENTATIONS]
        elif var == "mortality":
            died = frame["ehr_stay_expire"].fillna(0).to_numpy(dtype=np.float32)
            blocks.append(np.column_stack([1 - died, died]))
            names += ["mortality_alive", "mortality_died"]
        else:
            icu = frame["ehr_icu_stay"].fillna(0).to_numpy(dtype=np.float32)
            blocks.append(np.column_stack([icu, 1 - icu]))
            names += ["icu_icu", "icu_not_icu"]
    if needs_ehr:
        log.info("EHR encoding coverage: %s", ehr_coverage(frame))
    return np.concatenate(blocks, axis=1).astype(np.float32), names
