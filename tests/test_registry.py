import pytest

from harness.catalog import DATASETS, METHODS, PROTOCOLS
from harness.registry import Registry, UnknownNameError


def test_register_get_and_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta")() == 2
    with pytest.raises(ValueError, match="duplicate thing name 'alpha'"):
        reg.add("alpha", 3)
    with pytest.raises(ValueError, match="duplicate"):
        reg.add_lazy("beta", "os.path:join")


def test_unknown_name_suggests_near_miss():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("mcoo")
    assert str(err.value) == "unknown method 'mcoo'; did you mean 'moco'?"
    with pytest.raises(UnknownNameError, match="unknown protocol 'zzz'$"):
        PROTOCOLS.get("zzz")


def test_lazy_targets_import_only_on_get():
    reg: Registry[object] = Registry("lazy")
    reg.add_lazy("join", "os.path:join")
    reg.add_lazy("broken", "no_such_module_xyz:thing")
    assert reg.names() == ["broken", "join"]
    import os.path

    assert reg.get("join") is os.path.join
    with pytest.raises(ModuleNotFoundError):
        reg.get("broken")
    bad: Registry[object] = Registry("x")
    bad.add_lazy("y", "nocolon")
    with pytest.raises(ValueError, match="package.module:attr"):
        bad.get("y")


def test_listing_names_imports_no_baseline():
    import subprocess
    import sys

    code = ("import sys; from harness.catalog import METHODS; METHODS.names(); "
            "print(any(m.startswith(('baselines', 'torch')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert {"random", "moco", "msn-ehr", "region-word", "mlm-mvm"} <= set(METHODS.names())
    assert {"mimic-cxr", "chexpert", "nih14", "openi"} <= set(DATASETS.names())
