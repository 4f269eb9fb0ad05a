"""Structs that grow, from Python: every struct is made by its C init function with this binding's
sizeof, booleans are sda_bool (0 or 1, anything else refused), and a newer binding's struct with a
nonzero field this library does not know is refused, a zero one accepted."""

from __future__ import annotations

import ctypes

import pytest

import sda
from sda import _ffi


@pytest.mark.parametrize("name", sorted(_ffi.STRUCTS))
def test_every_struct_starts_with_its_size_and_has_an_init_function(name):
    struct_type = _ffi.STRUCTS[name]
    assert struct_type._fields_[0] == ("struct_size", ctypes.c_uint32), name
    if name == "sda_probe_progress":  # filled by the library only
        return
    struct = _ffi.new(struct_type)
    assert struct.struct_size == ctypes.sizeof(struct_type)
    assert not any(field_type is ctypes.c_bool for _, field_type, *_ in struct_type._fields_), name


def test_a_boolean_other_than_0_or_1_is_refused(ctx):
    workload = _ffi.new(_ffi.sda_workload)
    workload.with_backward = 2
    with pytest.raises(sda.InvalidArgumentError, match="with_backward"):
        sda.lib.sda_run_workload(ctx, ctypes.byref(workload), 1)


def test_a_newer_struct_is_accepted_with_a_zero_tail_and_refused_without(ctx):
    class Grown(ctypes.Structure):
        _fields_ = [("base", _ffi.sda_workload), ("extra", ctypes.c_uint32)]

    grown = Grown()
    sda.lib.sda_workload_init(ctypes.cast(ctypes.byref(grown), ctypes.POINTER(_ffi.sda_workload)), ctypes.sizeof(Grown))
    assert grown.base.struct_size == ctypes.sizeof(Grown) and grown.extra == 0
    grown.extra = 1
    with pytest.raises(sda.InvalidArgumentError, match="sda_workload"):
        sda.lib.sda_run_workload(ctx, ctypes.cast(ctypes.byref(grown), ctypes.POINTER(_ffi.sda_workload)), 1)


def test_the_binding_loads_the_abi_version_it_was_written_for():
    version = sda.version().split(".")
    assert _ffi.ABI_VERSION == (version[0] if version[0] != "0" else f"0.{version[1]}")
    assert _ffi.SONAME == f"libsda.so.{_ffi.ABI_VERSION}"
