"""The libtorch of this Python environment: the installed ``torch`` package's ``lib/`` folder.

libsda finds libtorch at run time (already in the process, ``$SDA_LIBTORCH``, the config key
``hardware.libtorch``, a bundled copy, the one its backend was built against, in that order). A Python
user's libtorch is the torch installed beside this package, so the binding names it as the config
key's value when nothing else names one: after ``import torch`` libsda finds that same library already
in the process, and before it (a model file needs no ``import torch``) it loads it from here. The
package is located without importing it (importing torch takes seconds and starts its threads).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

#: The variable that names libtorch's folder explicitly; it wins over everything else.
LIBTORCH_ENV = "SDA_LIBTORCH"
#: The config key that names libtorch's folder.
CONFIG_KEY = "hardware.libtorch"


def libtorch_cpu_name(platform: str) -> str:
    """The file name of libtorch's CPU library in ``torch/lib`` on ``platform`` (a ``sys.platform``
    value), the file libsda itself looks for (``sda_backend_abi::LIBTORCH_CPU``)."""
    if platform == "darwin":
        return "libtorch_cpu.dylib"
    if platform == "win32":
        return "torch_cpu.dll"
    return "libtorch_cpu.so"


def environment_libtorch() -> str | None:
    """``<site-packages>/torch/lib`` of the torch this interpreter would import, or None when there is
    no torch package (or it has no libtorch in it)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        if (lib / libtorch_cpu_name(sys.platform)).is_file():
            return str(lib)
    return None


def default_for(configured: str, environ: os._Environ | dict | None = None) -> str | None:
    """The libtorch folder the binding should name, given the config's ``hardware.libtorch`` value:
    None when the config or ``$SDA_LIBTORCH`` already names one, or when this environment has no torch."""
    environ = os.environ if environ is None else environ
    if configured.strip() or environ.get(LIBTORCH_ENV, ""):
        return None
    return environment_libtorch()
