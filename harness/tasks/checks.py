"""A task's checks beyond its types: what it says on its own, and what it asks of datasets and protocols.

``check_task`` runs them in that order and raises ``TaskSpecError`` with one line
``<file>: <key>: <what>`` at the first problem:

- the values on their own: repeated entries in ``labels``, ``metrics``, ``views``,
  ``fractions``, ``seeds`` and ``requires``; fractions in (0, 1], seeds >= 0, the label
  policy, the split's method and fractions, profile names in ``profile_args``;
- against the datasets (their adapters' ``label_names``, ``views`` and official
  ``splits``): labels, views, ``split.method`` and ``split.test_split``, for the
  ``eval_dataset`` too;
- against the protocol's declaration (``harness.protocols.args``): ``protocol_args``
  and every profile's overrides (names, types, ranges), the metrics and main metric
  it produces with them, the capabilities it needs in ``requires``, a fraction of 1
  for zero-shot protocols.

The registries (datasets, protocols, capabilities, profiles) are imported inside the
checks: ``harness.protocols`` itself imports ``TaskSpec``.
"""

from __future__ import annotations

from typing import Any

from harness.tasks.spec import ON_LEAK, SPLIT_METHODS, SPLIT_NAMES, TaskSpec, TaskSpecError


def check_task(spec: TaskSpec, where: str) -> None:
    """Check a built spec on its own, against its datasets and against its protocol.

    Args:
        spec: the spec as read from the file (types already checked).
        where: the file, the start of every message.

    Raises:
        TaskSpecError: the first problem, ``"<where>: <key>: <what>"``.
    """
    _check_semantics(spec, where)
    _check_datasets(spec, where)
    _check_protocol(spec, where)


def _check_semantics(spec: TaskSpec, where: str) -> None:
    """What the file says on its own: values, ranges, repeated entries, label policy, split, profiles."""
    from harness.registry import did_you_mean

    policies = {"zero", "one", "ignore"}
    lp = spec.label_policy
    for key, value in [("uncertain", lp.uncertain), ("blank", lp.blank), *lp.per_label.items()]:
        if value not in policies:
            raise TaskSpecError(f"{where}: label_policy.{key}: {value!r} is not one of {sorted(policies)}")
    unknown_labels = sorted(set(lp.per_label) - set(spec.labels))
    if unknown_labels:
        raise TaskSpecError(f"{where}: label_policy.per_label: unknown label(s) {unknown_labels}"
                            f"{did_you_mean(unknown_labels[0], spec.labels)} (it may name only the task's labels)")
    for key in ("labels", "metrics", "views", "fractions", "seeds", "requires"):
        values = getattr(spec, key) or ()
        for i, value in enumerate(values):
            if value in values[:i]:
                raise TaskSpecError(f"{where}: {key}: {value!r} is repeated")
    for fr in spec.fractions:
        if not 0 < fr <= 1:
            raise TaskSpecError(f"{where}: fractions: {fr} is not in (0, 1]")
    for seed in spec.seeds:
        if seed < 0:
            raise TaskSpecError(f"{where}: seeds: {seed} is negative (seeds are non-negative integers)")
    if spec.views is not None and not spec.views:
        raise TaskSpecError(f"{where}: views: an empty list selects no image; write null for every view")
    _check_split(spec, where)
    if spec.main_metric not in spec.metrics:
        raise TaskSpecError(f"{where}: main_metric {spec.main_metric!r} is not listed in metrics")
    if spec.version < 1:
        raise TaskSpecError(f"{where}: version must be >= 1")
    from harness.encoders import CAPABILITIES

    bad = [c for c in spec.requires if c not in CAPABILITIES]
    if bad:
        raise TaskSpecError(f"{where}: requires: unknown capability {bad}; known: {list(CAPABILITIES)}")
    from harness.config import PROFILES

    for profile, overrides in spec.profile_args.items():
        if profile not in PROFILES:
            hint = did_you_mean(str(profile), PROFILES)
            raise TaskSpecError(f"{where}: profile_args: unknown profile {profile!r}{hint}; profiles: {list(PROFILES)}")
        if not isinstance(overrides, dict):  # "smoke:" with nothing after it is null
            raise TaskSpecError(f"{where}: profile_args.{profile}: expected a mapping of protocol arguments, got "
                                f"{'null' if overrides is None else type(overrides).__name__}")


def _check_split(spec: TaskSpec, where: str) -> None:
    from harness.registry import did_you_mean

    split = spec.split
    if split.method not in SPLIT_METHODS:
        raise TaskSpecError(f"{where}: split.method: {split.method!r} is not 'official' or 'patient-hash'"
                            f"{did_you_mean(split.method, SPLIT_METHODS)}")
    if split.test_split not in SPLIT_NAMES:
        raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not one of {list(SPLIT_NAMES)}"
                            f"{did_you_mean(split.test_split, SPLIT_NAMES)}")
    if split.on_leak not in ON_LEAK:
        raise TaskSpecError(f"{where}: split.on_leak: {split.on_leak!r} is not 'error' or 'drop'"
                            f"{did_you_mean(split.on_leak, ON_LEAK)}")
    if not 0 < split.val_fraction < 1:
        raise TaskSpecError(f"{where}: split.val_fraction: {split.val_fraction} is not in (0, 1)")
    if not 0 <= split.test_fraction < 1:
        raise TaskSpecError(f"{where}: split.test_fraction: {split.test_fraction} is not in [0, 1)")
    if split.method == "patient-hash" and spec.eval_dataset is None:
        if split.test_fraction == 0:
            raise TaskSpecError(f"{where}: split.test_fraction: 0 leaves the patient-hash test split empty")
        if split.val_fraction + split.test_fraction >= 1:
            raise TaskSpecError(f"{where}: split: val_fraction {split.val_fraction} + test_fraction "
                                f"{split.test_fraction} leave no training patients")


def _label_hint(label: str, dataset: str, known: tuple[str, ...]) -> str:
    """"; nih14 calls it 'Effusion'" where the schema's harmonisation maps the name, else a close name."""
    from harness.data.schema import HARMONISE
    from harness.registry import did_you_mean

    other = HARMONISE.get(label) or {v: k for k, v in HARMONISE.items()}.get(label)
    if other in known:
        return f"; {dataset} calls it {other!r}"
    return did_you_mean(label, known)


def _check_datasets(spec: TaskSpec, where: str) -> None:
    """Dataset names, and labels, views and splits against what each dataset's adapter declares.

    An adapter that declares no ``label_names`` / ``views`` / ``splits`` is not checked for them.
    """
    from harness.catalog import DATASETS
    from harness.registry import UnknownNameError, did_you_mean

    adapters: dict[str, Any] = {}  # dataset name -> adapter, the training dataset first
    roles = {spec.dataset: "dataset", spec.eval_dataset: "eval_dataset"}
    for key in ("dataset", "eval_dataset"):
        name = getattr(spec, key)
        if name is None:
            continue
        try:
            adapters[name] = DATASETS.get(name)
        except UnknownNameError as exc:
            raise TaskSpecError(f"{where}: {key}: {exc}") from None
    for name, adapter in adapters.items():
        known = getattr(adapter, "label_names", None)
        for label in spec.labels if known is not None else ():
            if label not in known:
                raise TaskSpecError(f"{where}: labels: {label!r} is not a label of {name} ({roles[name]})"
                                    f"{_label_hint(label, name, tuple(known))}")
    declared_views = {name: getattr(a, "views", None) for name, a in adapters.items()}
    if spec.views and all(v is not None for v in declared_views.values()):
        every = list(dict.fromkeys(v for views in declared_views.values() for v in views))
        for view in spec.views:
            if view not in every:
                raise TaskSpecError(f"{where}: views: {view!r} is not a view of {' or '.join(adapters)} "
                                    f"(views: {every}){did_you_mean(view, [v for v in every if v])}")
        for name, views in declared_views.items():
            if not set(spec.views) & set(views):
                raise TaskSpecError(f"{where}: views: {list(spec.views)} select no image of {name} "
                                    f"({roles[name]}; its views: {list(views)})")
    _check_official_splits(spec, where, {name: getattr(a, "splits", None) for name, a in adapters.items()})


def _check_official_splits(spec: TaskSpec, where: str, splits: dict[str, tuple[str, ...] | None]) -> None:
    split, own = spec.split, splits[spec.dataset]
    if split.method == "official" and own is not None and not own:
        raise TaskSpecError(f"{where}: split.method: 'official': {spec.dataset} has no official split; use "
                            "patient-hash")
    if spec.eval_dataset is not None:
        theirs = splits[spec.eval_dataset]
        if theirs is not None and split.test_split not in theirs:
            raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not an official split of "
                                f"{spec.eval_dataset} (eval_dataset); it has {list(theirs) or 'none'}")
    elif split.method == "official":
        tests = [s for s in own or SPLIT_NAMES if s != "train"]
        if split.test_split not in tests:
            raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not an official test split of "
                                f"{spec.dataset}; it has {tests}")
    elif split.test_split != "test":
        raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} has no effect with split.method "
                            "'patient-hash' (test patients are drawn by hash: test_fraction); remove it")


def _check_protocol(spec: TaskSpec, where: str) -> None:
    """``protocol_args`` and each profile's overrides, metrics, requires and fractions against the protocol."""
    from harness.catalog import PROTOCOLS
    from harness.protocols.args import ArgError, declared
    from harness.registry import did_you_mean

    if spec.protocol not in PROTOCOLS:
        raise TaskSpecError(f"{where}: protocol: unknown protocol {spec.protocol!r}"
                            f"{did_you_mean(spec.protocol, PROTOCOLS.names())}")
    decl = declared(spec.protocol)
    if decl is None:  # a registered protocol that declares nothing: nothing to check against
        return
    cases = [("", "protocol_args", spec.protocol_args)]
    cases += [(f" (with profile_args.{p})", f"profile_args.{p}", spec.args_for(p)) for p in spec.profile_args]
    for suffix, prefix, given in cases:
        try:
            args = decl.resolve(given)
        except ArgError as exc:
            raise TaskSpecError(f"{where}: {prefix}.{exc.key}: {exc.what}") from None
        try:
            decl.check_task(spec, args)
        except ArgError as exc:
            raise TaskSpecError(f"{where}: {exc.key}: {exc.what}{suffix}") from None
        missing = [c for c in decl.requires(args) if c not in spec.requires]
        if missing:
            raise TaskSpecError(f"{where}: requires: {spec.protocol} needs capability {missing}{suffix}; the task "
                                f"lists {list(spec.requires)}")
    if decl.zero_shot and any(fr != 1 for fr in spec.fractions):
        raise TaskSpecError(f"{where}: fractions: {spec.protocol} is zero-shot (nothing is trained): only 1.0 has "
                            f"a meaning, got {list(spec.fractions)}")
