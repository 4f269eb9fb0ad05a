"""The binding covers the whole C ABI: every function of sda.h is declared with the header's
parameter and result types, every enum value matches, and every struct has the C layout."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import sda
from sda import _ffi


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_functions(header: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (result type, [parameter types]) for every function declared in sda.h."""
    code = _strip_comments(header)
    out = {}
    # A declaration: result type, name, parameters, semicolon. Function-pointer typedefs
    # ("(*sda_work_callback)(...)") do not match: their name is followed by ")".
    for match in re.finditer(r"([A-Za-z_][\w \t*]*?)\b(sda_\w+)\s*\(([^()]*)\)\s*;", code):
        result, name, params = match.groups()
        result = " ".join(result.split())
        if result.startswith("typedef"):
            continue
        params = [" ".join(p.split()) for p in params.split(",")] if params.strip() not in ("", "void") else []
        # Drop the parameter names: "const char *path" -> "const char *".
        types = [re.sub(r"\b\w+$", "", p).strip() for p in params]
        out[name] = (result, types)
    return out


def test_the_header_parser_sees_the_functions(header):
    functions = header_functions(header)
    assert len(functions) >= 30
    assert functions["sda_config_get"] == (
        "sda_status",
        ["const sda_config *", "const char *", "char *", "size_t", "size_t *"],
    )
    assert functions["sda_version"] == ("const char *", [])


def test_every_header_function_is_declared(header):
    in_header = set(header_functions(header))
    declared = set(_ffi.FUNCTIONS)
    assert sorted(in_header - declared) == [], "functions of sda.h missing from sda/_ffi.py FUNCTIONS"
    assert sorted(declared - in_header) == [], "sda/_ffi.py declares functions sda.h does not have"


def test_every_declared_function_is_exported_and_typed():
    for name, signature in _ffi.FUNCTIONS.items():
        function = getattr(sda.lib, name)  # AttributeError if the library lacks it
        assert function.restype is signature.restype, name
        assert list(function.argtypes) == list(signature.argtypes), name


def _callback_types() -> dict[str, object]:
    return {name: getattr(_ffi, name) for name in dir(_ffi) if name.endswith("_callback") and name.startswith("sda_")}


def expected_ctypes(c_type: str) -> set[object]:
    """The ctypes types that correctly stand for a C type of sda.h."""
    plain = c_type.replace("const ", "").strip()
    pointer = plain.endswith("*")
    base = plain.rstrip("*").strip()
    scalars = {
        "int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64,
        "size_t": ctypes.c_size_t, "bool": ctypes.c_bool, "sda_bool": ctypes.c_uint32, "sda_status": ctypes.c_int32,
        "sda_device_kind": ctypes.c_int32, "sda_log_level": ctypes.c_int32, "sda_probe_stop": ctypes.c_int32,
        "sda_plan_strategy": ctypes.c_int32, "sda_launcher": ctypes.c_int32, "sda_severity": ctypes.c_int32,
        "sda_verbosity": ctypes.c_int32, "sda_dtype": ctypes.c_int32, "sda_model_format": ctypes.c_int32,
        "double": ctypes.c_double,
    }
    if plain == "void":
        return {None}
    if plain.count("*") == 2:  # out-parameter of a handle: sda_config **
        return {ctypes.POINTER(ctypes.c_void_p)}
    if pointer and base == "char":
        # NUL-terminated input strings; output buffers may also be plain void pointers.
        return {ctypes.c_char_p} if c_type.startswith("const") else {ctypes.c_char_p, ctypes.c_void_p}
    if pointer and base == "void":
        return {ctypes.c_void_p}
    if pointer and base in _ffi.STRUCTS:
        return {ctypes.POINTER(_ffi.STRUCTS[base])}
    if pointer and base in scalars:
        return {ctypes.POINTER(scalars[base])}
    if pointer:  # an opaque handle (sda_config *, sda_context *, future handle types)
        return {ctypes.c_void_p}
    if base in scalars:
        return {scalars[base]}
    if base in _ffi.STRUCTS:
        return {_ffi.STRUCTS[base]}
    if base in _callback_types():
        return {_callback_types()[base]}
    raise AssertionError(f"the test does not know the C type {c_type!r}: teach expected_ctypes")


def test_parameter_and_result_types_match_the_header(header):
    problems = []
    for name, (result, params) in header_functions(header).items():
        signature = _ffi.FUNCTIONS.get(name)
        if signature is None:
            continue  # reported by test_every_header_function_is_declared
        if len(signature.argtypes) != len(params):
            problems.append(f"{name}: {len(params)} parameters in sda.h, {len(signature.argtypes)} declared")
            continue
        for i, (c_type, declared) in enumerate(zip(params, signature.argtypes)):
            if declared not in expected_ctypes(c_type):
                problems.append(f"{name} parameter {i}: sda.h says {c_type!r}, declared {declared}")
        if signature.restype not in expected_ctypes(result):
            problems.append(f"{name} result: sda.h says {result!r}, declared {signature.restype}")
        # Status functions either raise on failure or are listed as reading their status themselves.
        if result == "sda_status" and not signature.checked:
            assert name in UNCHECKED_STATUS_FUNCTIONS, f"{name} returns a status nobody checks"
    assert problems == []


# Status functions whose non-OK results are answers (or handled by their wrapper), not failures.
UNCHECKED_STATUS_FUNCTIONS = {
    "sda_classify_error", "sda_config_get", "sda_config_to_string", "sda_list_devices",
    "sda_guarded_run", "sda_guarded_run_batched", "sda_probe_batch", "sda_plan_workers", "sda_report",
    "sda_report_json", "sda_validate_environment", "sda_guarded_run_model",
}


def _enum_values(header: str, enum_name: str, prefix: str) -> dict[str, int]:
    body = re.search(r"enum " + enum_name + r"\b[^{]*\{(.*?)\};", _strip_comments(header), re.S)
    assert body, enum_name
    return {m.group(1): int(m.group(2)) for m in re.finditer(prefix + r"(\w+)\s*=\s*(-?\d+)", body.group(1))}


@pytest.mark.parametrize(
    "enum_name, c_prefix, py_enum",
    [("sda_status", "SDA_", sda.Status), ("sda_device_kind", "SDA_DEVICE_KIND_", sda.DeviceKind),
     ("sda_log_level", "SDA_LOG_LEVEL_", sda.LogLevel), ("sda_probe_stop", "SDA_PROBE_STOP_", sda.ProbeStop),
     ("sda_plan_strategy", "SDA_PLAN_STRATEGY_", sda.PlanStrategy), ("sda_launcher", "SDA_LAUNCHER_", sda.Launcher),
     ("sda_severity", "SDA_SEVERITY_", sda.Severity), ("sda_verbosity", "SDA_VERBOSITY_", sda.Verbosity),
     ("sda_dtype", "SDA_DTYPE_", sda.Dtype), ("sda_model_format", "SDA_MODEL_FORMAT_", sda.ModelFormat)],
)
def test_enums_match_the_header(header, enum_name, c_prefix, py_enum):
    assert _enum_values(header, enum_name, c_prefix) == {m.name: m.value for m in py_enum}


def test_every_status_has_an_exception_class_and_name():
    for status in sda.Status:
        assert sda.status_str(status) == f"SDA_{status.name}"
        if status != sda.Status.OK:
            assert sda.ERRORS[status].code == status


def test_header_and_library_versions_agree(header):
    assert f'#define SDA_VERSION_STRING "{sda.version()}"' in header
    assert int(sda.version().split(".")[0]) == sda.ABI_MAJOR
    assert _ffi.SONAME.endswith(".".join(sda.version().split(".")[:2]) if sda.version().startswith("0.") else sda.version().split(".")[0])


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_struct_layouts_match_c(prefix, tmp_path: Path):
    """A C program compiled against the installed sda.h prints sizeof and offsetof of every field of
    every struct the binding mirrors; the ctypes structures must agree byte for byte."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <sda.h>", "int main(void) {"]
    expected = []
    for name, struct in _ffi.STRUCTS.items():
        lines.append(f'    printf("{name} %zu\\n", sizeof({name}));')
        expected.append(f"{name} {ctypes.sizeof(struct)}")
        for field, *_ in struct._fields_:
            lines.append(f'    printf("{name}.{field} %zu\\n", offsetof({name}, {field}));')
            expected.append(f"{name}.{field} {getattr(struct, field).offset}")
    lines += ["    return 0;", "}"]
    source = tmp_path / "layout.c"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", f"-I{prefix}/include", "-o", str(tmp_path / "layout"), str(source)], check=True)
    printed = subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout.split("\n")
    assert [line for line in printed if line] == expected


def test_every_enum_of_the_header_is_mirrored(header):
    """A new enum in sda.h needs an IntEnum here and a line in test_enums_match_the_header."""
    enums = set(re.findall(r"\benum (sda_\w+)\s*(?:#|\{|:)", _strip_comments(header)))
    covered = {"sda_status", "sda_device_kind", "sda_log_level", "sda_probe_stop", "sda_plan_strategy",
               "sda_launcher", "sda_severity", "sda_verbosity", "sda_dtype", "sda_model_format"}
    assert sorted(enums - covered) == []


def test_every_struct_of_the_header_is_mirrored(header):
    structs = set(re.findall(r"\}\s*(sda_\w+)\s*;", _strip_comments(header)))
    assert sorted(structs - set(_ffi.STRUCTS)) == []
