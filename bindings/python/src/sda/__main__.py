"""``python -m sda COMMAND [OPTIONS]``: libsda's command-line program (``info``, ``doctor``, ``probe``,
``plan``, ``recommend``, ``config``; ``python -m sda --help`` lists them) with this environment's torch.

The wheel bundles the program (``sda/_lib/sda``, the same ``sda`` that ``make install`` puts in
``bin/``) beside libsda and its backend modules; this runs it in place of the Python process. When
neither ``$SDA_LIBTORCH`` nor the configuration's ``hardware.libtorch`` names a libtorch, the program
gets ``SDA_LIBTORCH`` set to the torch installed in this environment (its own environment only: this
process's is not changed, it is replaced).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import _libtorch

#: The bundled program: present in a wheel (``make wheel``), absent in an install from the sources
#: (``sda.exe`` on Windows, where no wheel is built yet).
PROGRAM = Path(__file__).resolve().parent / "_lib" / ("sda.exe" if sys.platform == "win32" else "sda")


def _config_path(argv: list[str]) -> str | None:
    """The ``--config`` the program will read, if the command line names one."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _configured_libtorch(argv: list[str]) -> str:
    """The configuration's ``hardware.libtorch`` as the program will read it ("" when unset or when the
    configuration cannot be read: the program then reports that itself)."""
    # Imported here: loading libsda is needed only for this question.
    from . import Config, SdaError

    path = _config_path(argv)
    try:
        config = Config.load(path) if path else Config()
        with config:
            return config.get(_libtorch.CONFIG_KEY)
    except SdaError:
        return ""


def main(argv: list[str] | None = None) -> int:
    """Replaces this process with the bundled program; returns only when it cannot be started."""
    argv = sys.argv[1:] if argv is None else argv
    if not PROGRAM.is_file():
        print(
            f"python -m sda: this installation of the sda package has no bundled program ({PROGRAM} "
            "is missing; only the wheel built by `make wheel` has one). Use the `sda` program of a "
            "libsda install (`make install PREFIX=...` puts it in PREFIX/bin).",
            file=sys.stderr,
        )
        return 2
    environ = dict(os.environ)
    libtorch = _libtorch.default_for(_configured_libtorch(argv), environ)
    if libtorch is not None:
        environ[_libtorch.LIBTORCH_ENV] = libtorch
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if sys.platform == "win32":
            # Windows has no exec: its os.execve starts a new process and ends this one without
            # waiting, so the caller would lose the program's exit status and output order.
            import subprocess

            return subprocess.call([str(PROGRAM), *argv], env=environ)
        os.execve(PROGRAM, [str(PROGRAM), *argv], environ)
    except OSError as exc:
        print(f"python -m sda: cannot run {PROGRAM}: {exc}", file=sys.stderr)
        return 2
    return 0  # not reached: execve returns only by raising


if __name__ == "__main__":
    sys.exit(main())
