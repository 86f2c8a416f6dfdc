"""The registries, and the lazy "module:attr" entries of everything built in.

Nothing heavy is imported here: ``harness ls`` lists names without importing
torch. ``harness/`` never imports ``baselines/``; it names them as strings.
Each entry resolves to:

- METHODS: a zero-argument callable (class or factory) returning a ``Method``
  (``harness.encoders.Method``);
- DATASETS: an adapter object with ``load(root: Path) -> Records`` and
  ``check(root: Path) -> CheckReport``; besides the built-in names, every
  ``hf/<name>`` (a Hugging Face-format collection under ``<data root>/hf/``,
  ``harness.data.hf_datasets``) resolves to that collection's adapter;
- PROTOCOLS: a callable ``(EvalContext) -> ProtocolResult``
  (``harness.protocols.base``);
- PROTOCOL_ARGS: the protocol's declaration of its arguments and metrics
  (``harness.protocols.args.ProtocolArgs``), under the same name: what
  ``harness.tasks.load_task`` checks a task file against.
"""

from __future__ import annotations

from typing import Any

from harness.registry import Registry


class DatasetRegistry(Registry[Any]):
    """The dataset registry: the registered adapters, and ``hf/<name>`` for any collection, built on demand.

    A collection's adapter is not registered (``names()`` lists the registered datasets only): which
    collections exist depends on the data root, which a registry does not know.
    """

    PREFIX = "hf/"

    def get(self, name: str) -> Any:
        if str(name).startswith(self.PREFIX) and not super().__contains__(name):
            from harness.data.hf_datasets import adapter
            from harness.data.schema import DataError
            from harness.registry import UnknownNameError

            try:
                return adapter(name)
            except DataError as exc:  # not a folder name: as unknown as any other name
                raise UnknownNameError(f"unknown {self.kind} {name!r}: {exc}") from None
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or str(name).startswith(self.PREFIX)


METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = DatasetRegistry("dataset")
PROTOCOLS: Registry[Any] = Registry("protocol")
PROTOCOL_ARGS: Registry[Any] = Registry("protocol declaration")

_BUILTIN_METHODS = {
    "random": "baselines.random_init:RandomMethod",
    "imagenet": "baselines.imagenet:ImageNetMethod",
    "pixels": "baselines.pixels:PixelsMethod",
    "supervised": "baselines.supervised:SupervisedMethod",
    "moco": "baselines.moco:MoCoMethod",
    "msn": "baselines.msn_ehr:MSNMethod",
    "msn-ehr": "baselines.msn_ehr:MSNEHRMethod",
    "region-word": "baselines.region_word:RegionWordMethod",
    "mlm-mvm": "baselines.mlm_mvm:MLMMVMMethod",
}
_BUILTIN_DATASETS = {
    "mimic-cxr": "harness.data.mimic_cxr:ADAPTER",
    "chexpert": "harness.data.chexpert:ADAPTER",
    "nih14": "harness.data.nih14:ADAPTER",
    "openi": "harness.data.openi:ADAPTER",
    "mock": "harness.data.mock:ADAPTER",
}
_BUILTIN_PROTOCOLS = {
    "linear-probe": "harness.protocols.linear_probe:run",
    "finetune": "harness.protocols.finetune:run",
    "multimodal-cls": "harness.protocols.multimodal:run",
    "retrieval": "harness.protocols.retrieval:run",
    "regeneration": "harness.protocols.regeneration:run",
    "localization": "harness.protocols.localization:run",
}

for _name, _target in _BUILTIN_METHODS.items():
    METHODS.add_lazy(_name, _target)
for _name, _target in _BUILTIN_DATASETS.items():
    DATASETS.add_lazy(_name, _target)
for _name, _target in _BUILTIN_PROTOCOLS.items():
    PROTOCOLS.add_lazy(_name, _target)
    PROTOCOL_ARGS.add_lazy(_name, _target.replace(":run", ":ARGS"))
