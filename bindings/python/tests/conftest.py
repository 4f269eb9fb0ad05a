"""Shared fixtures. The suite runs against an installed libsda and the pip-installed package: either a
prefix (run-tests.sh sets SDA_LIBRARY to <prefix>/lib/libsda.so.0.2 and SDA_TEST_PREFIX to the prefix)
or the wheel with its bundled libsda (tests/wheel/run.sh: no SDA_LIBRARY, SDA_TEST_LIBRARY_DIR set to
the package's sda/_lib, SDA_TEST_PREFIX for the header of the same build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sda

REPO = Path(os.environ.get("SDA_TEST_REPO", Path(__file__).resolve().parents[3]))


@pytest.fixture(scope="session")
def prefix() -> Path:
    value = os.environ.get("SDA_TEST_PREFIX")
    if not value:
        pytest.skip("SDA_TEST_PREFIX is not set (run bindings/python/run-tests.sh PREFIX)")
    return Path(value)


@pytest.fixture(scope="session")
def library_dir(prefix: Path) -> Path:
    """Where the libsda under test and its backend modules are: the prefix's lib/, or, for the
    installed wheel (tests/wheel/run.sh sets SDA_TEST_LIBRARY_DIR), the package's sda/_lib/."""
    return Path(os.environ.get("SDA_TEST_LIBRARY_DIR") or prefix / "lib")


@pytest.fixture(scope="session")
def header(prefix: Path) -> str:
    """The installed sda.h: the ABI the library under test was built with."""
    return (prefix / "include" / "sda.h").read_text()


@pytest.fixture
def ctx():
    with sda.Context(sda.Config.from_toml('[hardware]\ndevice = "cpu"\n')) as context:
        context.select_device("cpu")
        yield context


@pytest.fixture(autouse=True)
def _no_log_callback():
    yield
    sda.set_log_callback(None)
