"""The torch of this Python environment as libsda's libtorch (``sda._libtorch``), and ``python -m sda``
in an install from the sources (no bundled program). The wheel itself is tested in fresh environments
by tests/wheel/run.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sda
from sda import _libtorch


def test_the_environment_torch_is_named_only_when_nothing_else_names_one():
    lib = _libtorch.environment_libtorch()
    # The test environment (.venv) has torch: its lib/ holds libtorch_cpu.
    assert lib is not None and Path(lib).name == "lib" and Path(lib).parent.name == "torch"
    assert any(Path(lib).glob("libtorch_cpu.*"))
    assert _libtorch.default_for("", {}) == lib
    assert _libtorch.default_for("/opt/libtorch/lib", {}) is None
    assert _libtorch.default_for("", {"SDA_LIBTORCH": "/opt/libtorch/lib"}) is None
    assert _libtorch.default_for("  ", {"SDA_LIBTORCH": ""}) == lib


def test_a_context_loads_the_environment_torch_without_import_torch():
    # A fresh interpreter: nothing has imported torch, so libsda must load it from where the binding
    # named it (the config key), and must not have found it already in the process.
    code = (
        "import sys, sda\n"
        "ctx = sda.Context()\n"
        "ctx.backend_load()\n"
        "info = sda.backend_info()\n"
        "assert 'torch' not in sys.modules\n"
        "print(info.libtorch_found_by, info.libtorch_preloaded, info.libtorch_path)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found_by, preloaded, path = out.stdout.split()
    assert (found_by, preloaded) == ("hardware.libtorch", "False")
    expected = Path(_libtorch.environment_libtorch()) / "libtorch_cpu.so"
    assert Path(path).resolve() == expected.resolve()


def test_python_m_sda_runs_the_bundled_program_or_says_where_the_program_is():
    from sda.__main__ import PROGRAM

    out = subprocess.run([sys.executable, "-m", "sda", "--version"], capture_output=True, text=True)
    if PROGRAM.is_file():  # the wheel
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == sda.version()
    else:  # an install from the sources
        assert out.returncode == 2
        assert "no bundled program" in out.stderr and "make install" in out.stderr
