"""How the binding finds libsda: $SDA_LIBRARY, then package data, then the system. Each case runs in
a fresh interpreter, because the library is loaded once, at import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import sda
from sda import _ffi

PROBE = "import sda; print(sda.library_path()); print(sda.Context().backend_load().module_path)"


def run_python(code: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SDA_LIBRARY", "LD_LIBRARY_PATH", "SDA_BACKEND")}
    clean.update(env)
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=300, **kwargs)


def test_candidates_order(tmp_path):
    assert _ffi.candidates({"SDA_LIBRARY": "/x/libsda.so.0.2"}) == ["/x/libsda.so.0.2"]
    system = _ffi.candidates({})
    assert _ffi.SONAME in system
    bundled = str(Path(sda.__file__).parent / "_lib" / _ffi.SONAME)
    assert (bundled in system) == os.path.isfile(bundled)
    if bundled in system:
        assert system.index(bundled) < system.index(_ffi.SONAME)


def test_sda_library_is_the_only_candidate_when_set():
    result = run_python("import sda", {"SDA_LIBRARY": "/nonexistent/libsda.so.0.2"})
    assert result.returncode != 0
    assert "LibraryNotFoundError" in result.stderr and "/nonexistent/libsda.so.0.2" in result.stderr
    assert "SDA_LIBRARY" in result.stderr  # the message says how to fix it


def test_sda_library_env(prefix):
    result = run_python(PROBE, {"SDA_LIBRARY": str(prefix / "lib" / "libsda.so.0.2")})
    assert result.returncode == 0, result.stderr
    library, backend = result.stdout.split()
    assert Path(library).parent == (prefix / "lib").resolve()
    assert Path(backend).resolve() == (prefix / "lib" / "libsda_torch.so").resolve()


def test_package_data(prefix, tmp_path):
    """A wheel that bundles libsda: a copy of the package with libsda.so.0.2 and its backend in
    sda/_lib/ loads that copy, and the core finds the backend beside it."""
    package = tmp_path / "site" / "sda"
    shutil.copytree(Path(sda.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "_lib").mkdir(exist_ok=True)
    shutil.copy2(prefix / "lib" / "libsda.so.0.2", package / "_lib" / "libsda.so.0.2")
    shutil.copy2(prefix / "lib" / "libsda_torch.so", package / "_lib" / "libsda_torch.so")
    result = run_python(PROBE, {"PYTHONPATH": str(tmp_path / "site")}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    library, backend = result.stdout.split()
    assert Path(library).parent == (package / "_lib").resolve()
    assert Path(backend).parent == (package / "_lib").resolve()


#: The installed package's own libsda (the wheel's), if it has one.
BUNDLED = Path(sda.__file__).resolve().parent / "_lib" / _ffi.SONAME


def test_system_search_by_soname(prefix, tmp_path):
    """Without SDA_LIBRARY or package data, the dynamic loader's search for libsda.so.0.2 decides;
    LD_LIBRARY_PATH stands in here for an ldconfig'd system directory. A package that bundles libsda
    (the wheel) loads its own copy even then: package data comes before the system."""
    result = run_python(PROBE, {"LD_LIBRARY_PATH": str(prefix / "lib")}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    library, _backend = result.stdout.split()
    expected = BUNDLED.parent if BUNDLED.is_file() else (prefix / "lib").resolve()
    assert Path(library).resolve().parent == expected


def test_nothing_found_is_an_import_error_naming_the_fix(tmp_path):
    """Nowhere to find libsda: an ImportError that names the fix. The wheel always finds its own."""
    result = run_python("import sda; print(sda.library_path())", {}, cwd=tmp_path)
    if BUNDLED.is_file():
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).resolve() == BUNDLED
    else:
        assert result.returncode != 0
        assert "libsda could not be loaded" in result.stderr and "SDA_LIBRARY" in result.stderr


def test_the_installed_package_is_tested_not_the_source_tree():
    source = Path(__file__).resolve().parents[1] / "src"
    assert source not in Path(sda.__file__).resolve().parents
