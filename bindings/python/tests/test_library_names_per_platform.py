"""The binding's library names per platform, as pure functions of ``sys.platform``: what it loads
(``_ffi.library_file_name``), where ``make install`` puts it (``_ffi.installed_library``), where a wheel
puts it (``_ffi._package_library``) and libtorch's CPU library in ``torch/lib``
(``_libtorch.libtorch_cpu_name``).

Only Linux runs here; macOS and Windows are checked as names, against the names the rest of the project
uses for them: the core's (crates/sda-core, crates/sda_backend_abi) and the CMake package's layout
(cmake/CMakeLists.txt, installed from test doubles by tests/install/platform_layouts.sh). None of this
loads a macOS or Windows library: no such library exists on this machine."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import sda
from sda import _ffi, _libtorch

from conftest import REPO

PLATFORMS = ("linux", "darwin", "win32")


@pytest.mark.parametrize(
    ("platform", "name"),
    [("linux", "libsda.so.0.2"), ("darwin", "libsda.0.2.dylib"), ("win32", "sda.dll")],
)
def test_library_file_name(platform, name):
    assert _ffi.ABI_VERSION == "0.2"
    assert _ffi.library_file_name(platform) == name


def test_library_file_name_follows_the_abi_version():
    """From 1.0 on the ABI version is the major: libsda.so.1, libsda.1.dylib; sda.dll either way."""
    assert _ffi.library_file_name("linux", "1") == "libsda.so.1"
    assert _ffi.library_file_name("darwin", "1") == "libsda.1.dylib"
    assert _ffi.library_file_name("win32", "1") == "sda.dll"


def test_other_elf_systems_use_the_soname():
    for platform in ("linux2", "freebsd14", "aix"):
        assert _ffi.library_file_name(platform) == "libsda.so.0.2"


@pytest.mark.parametrize(
    ("platform", "path"),
    [("linux", "lib/libsda.so.0.2"), ("darwin", "lib/libsda.0.2.dylib"), ("win32", "bin/sda.dll")],
)
def test_installed_library(platform, path):
    assert _ffi.installed_library(platform) == path


@pytest.mark.parametrize("platform", PLATFORMS)
def test_package_data_name(platform):
    """A wheel for each platform puts libsda in sda/_lib/ under the name the loader is asked for."""
    path = _ffi._package_library(platform)
    assert path.parent == Path(sda.__file__).resolve().parent / "_lib"
    assert path.name == _ffi.library_file_name(platform)


def test_this_platform_uses_its_own_name():
    assert _ffi.SONAME == _ffi.library_file_name(sys.platform)
    assert _ffi._package_library() == _ffi._package_library(sys.platform)
    assert _ffi.SONAME in _ffi.candidates({})


@pytest.mark.parametrize(
    ("platform", "name"),
    [("linux", "libtorch_cpu.so"), ("darwin", "libtorch_cpu.dylib"), ("win32", "torch_cpu.dll")],
)
def test_libtorch_cpu_name(platform, name):
    assert _libtorch.libtorch_cpu_name(platform) == name


def test_loader_hints_name_each_platform_s_search_path():
    assert "ldconfig" in _ffi._loader_hint("linux")
    assert "DYLD_LIBRARY_PATH" in _ffi._loader_hint("darwin")
    assert "PATH" in _ffi._loader_hint("win32") and "bin" in _ffi._loader_hint("win32")


def _source(relative: str) -> str:
    path = REPO / relative
    if not path.is_file():
        pytest.skip(f"{path} is not here (the suite runs without the repository)")
    return path.read_text()


def test_libtorch_names_match_the_core():
    """The core's LIBTORCH_CPU per OS (crates/sda_backend_abi/src/mapped.rs) is what the binding checks."""
    source = _source("crates/sda_backend_abi/src/mapped.rs")
    cfgs = {"linux": 'target_os = "linux"', "darwin": 'target_os = "macos"', "win32": "windows"}
    for platform, cfg in cfgs.items():
        match = re.search(r"#\[cfg\(" + re.escape(cfg) + r"\)\]\npub const LIBTORCH_CPU: &str = \"([^\"]+)\";", source)
        assert match, f"no LIBTORCH_CPU for {cfg} in mapped.rs"
        assert match.group(1) == _libtorch.libtorch_cpu_name(platform)


def _cmake_branch(text: str, platform: str) -> str:
    """The per-platform block of cmake/CMakeLists.txt that sets the installed names for ``platform``."""
    start = {
        "linux": 'if(SDA_PLATFORM STREQUAL "Linux")\n  set(_sda_src_shared',
        "darwin": 'elseif(SDA_PLATFORM STREQUAL "Darwin")\n  set(_sda_src_shared',
        "win32": "else() # Windows (MSVC)\n  set(_sda_src_shared",
    }[platform]
    at = text.index(start)
    return text[at : text.index("endif()", at)]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_names_match_the_cmake_layout(platform):
    """What the binding loads is a file (or link) the CMake package installs: Linux the SONAME link,
    macOS the install-name link, Windows the DLL itself."""
    branch = _cmake_branch(_source("cmake/CMakeLists.txt"), platform)
    branch = branch.replace("${SDA_ABI_VERSION}", _ffi.ABI_VERSION)
    installed = _ffi.installed_library(platform)
    if platform == "win32":
        assert f'set(SDA_SHARED_FILE "{installed}")' in branch
    else:
        # _sda_links holds "PATH=TARGET" entries: the link the loader is asked for.
        assert re.search(r'set\(_sda_links "' + re.escape(installed) + "=", branch), branch


def test_module_names_match_the_core():
    """The backend module the core looks for beside libsda (crates/sda-core/src/platform/mod.rs) is
    what the layout installs beside it: the table in _ffi's documentation names the same files."""
    source = _source("crates/sda-core/src/platform/mod.rs")
    core = {
        os_name: f"{prefix}sda_torch.{ext}"
        for os_name, prefix, ext in re.findall(r'Os::(Linux|MacOs|Windows) => "(lib|)sda_torch\.(so|dylib|dll)"', source)
    }
    assert core == {"Linux": "libsda_torch.so", "MacOs": "libsda_torch.dylib", "Windows": "sda_torch.dll"}
    for module in core.values():
        assert f"``{module}``" in (_ffi.__doc__ or "")
