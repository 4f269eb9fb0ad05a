"""The C ABI of libsda as ctypes declarations, and how the library is found.

Everything here mirrors ``sda.h`` one to one; the Pythonic API in ``sda/__init__.py`` is built on
top. Declarations are data (``FUNCTIONS``): adding a function of the header is one line there, and
the test ``test_abi_coverage.py`` fails while a function of the header is missing, or has a different
number of parameters.

The library's file name depends on the platform (``library_file_name``, a function of
``sys.platform``, the names ``make install`` writes; cmake/CMakeLists.txt):

==========  ======================  ===================================  ========================
platform    file name               installed as                         backend module beside it
==========  ======================  ===================================  ========================
``linux``   ``libsda.so.<abi>``     ``<prefix>/lib/libsda.so.<abi>``     ``libsda_torch.so``
``darwin``  ``libsda.<abi>.dylib``  ``<prefix>/lib/libsda.<abi>.dylib``  ``libsda_torch.dylib``
``win32``   ``sda.dll``             ``<prefix>/bin/sda.dll``             ``sda_torch.dll``
==========  ======================  ===================================  ========================

(``<abi>`` is ``ABI_VERSION``: the SONAME on Linux, the install name on macOS; Windows DLLs carry no
version in their name.) It is looked for, in this order:

1. ``$SDA_LIBRARY`` — a path to that file (an explicit choice is the only candidate: a program
   that named a file must not silently get another one);
2. package data — ``sda/_lib/<file name>``, where a wheel that bundles libsda puts it (with the
   backend module beside it: the core finds its backend module beside itself);
3. the system — the dynamic loader's search for the file name (Linux: ``ld.so.cache``,
   ``LD_LIBRARY_PATH``; macOS: ``DYLD_LIBRARY_PATH``, ``DYLD_FALLBACK_LIBRARY_PATH``; Windows: the
   directories added with ``os.add_dll_directory``, since Python 3.8 does not search ``PATH`` for
   ctypes), then whatever ``ctypes.util.find_library("sda")`` names (on Windows it searches ``PATH``).

A library of another ABI version is refused. Only the Linux names are exercised against a real
library here; the macOS and Windows ones are tested as names (tests/test_library_names_per_platform.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import sys
from ctypes import POINTER, c_bool, c_char, c_char_p, c_double, c_int32, c_size_t, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import NamedTuple

#: The ABI major version this binding is written for.
ABI_MAJOR = 0
#: The ABI version (the SONAME's suffix, ``libsda.so.<ABI_VERSION>``; macOS ``libsda.<ABI_VERSION>.dylib``):
#: the major version from 1.0 on, major.minor before it (0.y releases break with every y, as under semver).
ABI_VERSION = "0.2"
LIBRARY_ENV = "SDA_LIBRARY"


def library_file_name(platform: str, abi_version: str = ABI_VERSION) -> str:
    """The file name of libsda that programs load on ``platform`` (a ``sys.platform`` value): Linux
    (and other ELF systems) the SONAME ``libsda.so.<abi>``, macOS the install name's file
    ``libsda.<abi>.dylib``, Windows ``sda.dll`` (the name its import library records)."""
    if platform == "darwin":
        return f"libsda.{abi_version}.dylib"
    if platform == "win32":
        return "sda.dll"
    return f"libsda.so.{abi_version}"


def installed_library(platform: str, abi_version: str = ABI_VERSION) -> str:
    """Where ``make install`` puts that file, relative to the prefix: ``lib/`` (Windows: ``bin/``,
    where DLLs go, so that programs beside them find them)."""
    folder = "bin" if platform == "win32" else "lib"
    return f"{folder}/{library_file_name(platform, abi_version)}"


def _loader_hint(platform: str) -> str:
    """How to make the system search find an installed libsda on ``platform``."""
    if platform == "darwin":
        return "or put its lib/ on DYLD_LIBRARY_PATH"
    if platform == "win32":
        return "or put its bin\\ on PATH"
    return "or put its lib/ where the dynamic loader looks (ldconfig)"


#: The file name on this platform (historically the Linux SONAME, hence the name).
SONAME = library_file_name(sys.platform)


class Status(enum.IntEnum):
    """``sda_status``: the numeric values are part of the ABI (a test compares them with sda.h)."""

    OK = 0
    ERR_INVALID_ARGUMENT = 1
    ERR_NULL_POINTER = 2
    ERR_INVALID_UTF8 = 3
    ERR_BUFFER_TOO_SMALL = 4
    ERR_UNKNOWN_KEY = 5
    ERR_INVALID_VALUE = 6
    ERR_PARSE = 7
    ERR_IO = 8
    ERR_DEVICE_UNAVAILABLE = 9
    ERR_BACKEND_UNAVAILABLE = 10
    ERR_OUT_OF_MEMORY = 11
    ERR_TORCH = 12
    ERR_CANCELLED = 13
    ERR_PANIC = 14
    ERR_INVALID_HANDLE = 15
    ERR_UNSUPPORTED = 16


class DeviceKind(enum.IntEnum):
    """``sda_device_kind``."""

    CPU = 0
    CUDA = 1
    MPS = 2

    def __str__(self) -> str:
        return self.name.lower()


class ProbeStop(enum.IntEnum):
    """``sda_probe_stop``: why a batch probe stopped."""

    BUDGET = 0
    MAX_BATCH = 1
    OUT_OF_MEMORY = 2
    CANCELLED = 3


class PlanStrategy(enum.IntEnum):
    """``sda_plan_strategy``: how workers are placed on devices."""

    CPU = 0
    SINGLE_GPU = 1
    MULTI_GPU = 2


class Launcher(enum.IntEnum):
    """``sda_launcher``: the launcher whose variables a worker plan read."""

    NONE = 0
    TORCHRUN = 1
    SLURM = 2


class Severity(enum.IntEnum):
    """``sda_severity`` of a problem found by ``sda_validate_environment``."""

    INFO = 0
    WARNING = 1
    ERROR = 2


class Verbosity(enum.IntEnum):
    """``sda_verbosity`` of a report."""

    ESSENTIAL = 0
    VERBOSE = 1


class LogLevel(enum.IntEnum):
    """``sda_log_level``."""

    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


class Dtype(enum.IntEnum):
    """``sda_dtype``: the element type of a model's input."""

    F32 = 0
    F16 = 1
    BF16 = 2

    def __str__(self) -> str:
        return self.name.lower()


class ModelFormat(enum.IntEnum):
    """``sda_model_format``: the kind of model file that was loaded."""

    TORCHSCRIPT = 0
    AOTI = 1

    def __str__(self) -> str:
        return self.name.lower()


# C enums are int32_t in the ABI.
sda_status = c_int32
sda_device_kind = c_int32
sda_log_level = c_int32
sda_probe_stop = c_int32
sda_plan_strategy = c_int32
sda_launcher = c_int32
sda_severity = c_int32
sda_dtype = c_int32
sda_model_format = c_int32


#: A boolean inside a struct (``sda_bool``, ``uint32_t``): 0 or 1; the library refuses other values.
sda_bool = c_uint32


class _Struct(ctypes.Structure):
    """Base of the ABI structs: ``repr`` shows the fields, for debugging. Every struct begins with
    ``struct_size``; make one with :func:`new` (its init function, this binding's ``sizeof``)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_)
        return f"{type(self).__name__}({fields})"


class sda_backend_details(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("loaded", sda_bool),
        ("cuda_build", sda_bool),
        ("module_path", c_char * 1024),
        ("libtorch_path", c_char * 1024),
        ("libtorch_version", c_char * 64),
        ("built_libtorch_version", c_char * 64),
        ("libtorch_cuda_version", c_char * 16),
        ("libtorch_preloaded", sda_bool),
        ("libtorch_found_by", c_char * 32),
    ]


class sda_selection(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("fell_back", sda_bool),
        ("device", c_char * 32),
        ("requested", c_char * 32),
        ("reason", c_char * 512),
    ]


class sda_device_details(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("device_count", c_uint32),
        ("device", c_char * 32),
        ("name", c_char * 256),
        ("memory_total", c_uint64),
        ("memory_free", c_uint64),
        ("compute_capability_major", c_int32),
        ("compute_capability_minor", c_int32),
        ("cuda_runtime_version", c_char * 16),
        ("cuda_driver_version", c_char * 16),
        ("bf16_supported", sda_bool),
        ("fp16_supported", sda_bool),
    ]


class sda_guard_options(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("batch_size", c_uint32),
        ("min_batch", c_uint32),
        ("max_attempts", c_uint32),
        ("keep_effective_batch", sda_bool),
        ("budget_bytes", c_uint64),
        ("margin_bytes", c_uint64),
        ("work_id", c_uint64),
    ]


class sda_run_report(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("status", sda_status),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("attempted_batch", c_uint32),
        ("final_batch", c_uint32),
        ("suggested_batch", c_uint32),
        ("accumulation_steps", c_uint32),
        ("attempts", c_uint32),
        ("oom_attempts", c_uint32),
        ("measured", sda_bool),
        ("peak_bytes", c_uint64),
        ("memory_before", c_uint64),
        ("memory_after", c_uint64),
        ("budget", c_uint64),
        ("failed_allocation_bytes", c_uint64),
        ("guidance", c_char * 1024),
    ]


class sda_memory_figures(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("allocated", c_uint64),
        ("reserved", c_uint64),
        ("peak", c_uint64),
        ("free", c_uint64),
        ("total", c_uint64),
        ("budget", c_uint64),
        ("process_resident", c_uint64),
    ]


class sda_workload(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("channels", c_uint32),
        ("sample_length", c_uint32),
        ("out_channels", c_uint32),
        ("kernel_size", c_uint32),
        ("padding", c_uint32),
        ("with_backward", sda_bool),
    ]


class sda_probe_progress(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("batch", c_uint32),
        ("ok", sda_bool),
        ("oom", sda_bool),
        ("peak_bytes", c_uint64),
        ("predicted_bytes", c_uint64),
        ("elapsed_ms", c_double),
        ("runs", c_uint32),
        ("best_batch", c_uint32),
        ("budget_bytes", c_uint64),
    ]


# Callback types of the batch probe (declared before the options struct that holds them).
sda_probe_workload_callback = ctypes.CFUNCTYPE(c_int32, c_void_p, c_uint32)
sda_probe_progress_callback = ctypes.CFUNCTYPE(c_bool, c_void_p, POINTER(sda_probe_progress))


class sda_probe_options(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("min_batch", c_uint32),
        ("max_batch", c_uint32),
        ("max_runs", c_uint32),
        ("budget_bytes", c_uint64),
        ("margin_bytes", c_uint64),
        ("workload", POINTER(sda_workload)),
        ("custom_workload", sda_probe_workload_callback),
        ("workload_user_data", c_void_p),
        ("progress", sda_probe_progress_callback),
        ("progress_user_data", c_void_p),
        ("save_to", c_void_p),
        ("model", c_void_p),
        ("start_batch", c_uint32),
        ("reserved", c_uint32),
    ]


class sda_probe_result(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("max_batch", c_uint32),
        ("recommended_batch", c_uint32),
        ("runs", c_uint32),
        ("oom_runs", c_uint32),
        ("stop", sda_probe_stop),
        ("capped", sda_bool),
        ("fixed_bytes", c_double),
        ("per_sample_bytes", c_double),
        ("predicted_peak_bytes", c_uint64),
        ("measured_peak_bytes", c_uint64),
        ("budget_bytes", c_uint64),
        ("margin_bytes", c_uint64),
        ("elapsed_ms", c_double),
    ]


class sda_worker_plan(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("strategy", sda_plan_strategy),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("device", c_char * 32),
        ("workers", c_uint32),
        ("worker_id", c_uint32),
        ("gpu_count", c_uint32),
        ("rank", c_int32),
        ("local_rank", c_int32),
        ("world_size", c_uint32),
        ("master_port", c_uint32),
        ("master_addr", c_char * 256),
        ("distributed_backend", c_char * 16),
        ("launcher", sda_launcher),
        ("env_count", c_uint32),
        ("reason", c_char * 512),
    ]


class sda_recommendation(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("device", c_char * 32),
        ("memory_total", c_uint64),
        ("batch_size", c_uint32),
        ("batch_from_probe", sda_bool),
        ("gradient_checkpointing", sda_bool),
        ("blocks", c_uint32),
        ("channels", c_uint32),
        ("tier_index", c_uint32),
        ("tier_from_config", sda_bool),
        ("tier_min_memory_gb", c_double),
        ("tier_max_memory_gb", c_double),
        ("tier_label", c_char * 128),
        ("batch_reason", c_char * 256),
        ("advice_given", sda_bool),
        ("memory_strategy", c_char * 16),
        ("memory_fraction", c_double),
        ("memory_reason", c_char * 512),
    ]


class sda_model_options(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("path", c_char_p),
        ("input_shape", POINTER(c_uint64)),
        ("input_rank", c_size_t),
        ("dtype", sda_dtype),
        ("train", sda_bool),
    ]


class sda_model_details(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("format", sda_model_format),
        ("kind", sda_device_kind),
        ("index", c_int32),
        ("dtype", sda_dtype),
        ("train", sda_bool),
        ("param_bytes", c_uint64),
        ("buffer_bytes", c_uint64),
        ("resident_bytes", c_uint64),
        ("work_id", c_uint64),
    ]


class sda_problem(_Struct):
    _fields_ = [
        ("struct_size", c_uint32),
        ("severity", sda_severity),
        ("code", c_char * 48),
        ("message", c_char * 1024),
        ("fix", c_char * 512),
    ]


#: Every struct of the ABI, by its C name (the layout test compiles a C program against sda.h that
#: prints sizeof/offsetof of each and compares them with these).
STRUCTS: dict[str, type[ctypes.Structure]] = {
    cls.__name__: cls
    for cls in (
        sda_backend_details,
        sda_selection,
        sda_device_details,
        sda_guard_options,
        sda_run_report,
        sda_memory_figures,
        sda_workload,
        sda_probe_progress,
        sda_probe_options,
        sda_probe_result,
        sda_worker_plan,
        sda_recommendation,
        sda_problem,
        sda_model_options,
        sda_model_details,
    )
}

# Opaque handles are plain pointers on this side.
sda_config_p = c_void_p
sda_context_p = c_void_p
sda_model_p = c_void_p

# Callback types. ctypes keeps the GIL rules: a callback invoked from a thread libsda runs on takes
# the GIL itself.
sda_work_callback = ctypes.CFUNCTYPE(c_int32, c_void_p)
sda_batch_callback = ctypes.CFUNCTYPE(c_int32, c_void_p, c_uint32, c_uint32)
sda_log_callback = ctypes.CFUNCTYPE(None, c_void_p, sda_log_level, c_char_p)


class Signature(NamedTuple):
    """One C function: its result, its parameters, and whether a non-OK status is always an error.

    ``checked`` functions return an ``sda_status`` and get an ``errcheck`` that raises the matching
    ``SdaError`` (with ``sda_last_error_message()``, read on the same thread right after the call).
    Status functions whose non-OK results are answers rather than failures (``sda_classify_error``,
    the guarded runs, size queries of string getters) are declared unchecked and read the status
    themselves.
    """

    restype: object
    argtypes: tuple
    checked: bool


def _status(*argtypes: object) -> Signature:
    return Signature(sda_status, argtypes, True)


def _raw(restype: object, *argtypes: object) -> Signature:
    return Signature(restype, argtypes, False)


#: Every function of sda.h. Keep the header's order; one line per function.
FUNCTIONS: dict[str, Signature] = {
    # backend
    "sda_backend_load": _status(sda_context_p),
    "sda_backend_details_init": _status(POINTER(sda_backend_details), c_size_t),
    "sda_backend_info": _status(POINTER(sda_backend_details)),
    # errors and classification
    "sda_classify_error": _raw(sda_status, c_char_p),
    # configuration
    "sda_config_new": _status(POINTER(sda_config_p)),
    "sda_config_load": _status(c_char_p, POINTER(sda_config_p)),
    "sda_config_load_str": _status(c_char_p, POINTER(sda_config_p)),
    "sda_config_save": _status(sda_config_p, c_char_p),
    "sda_config_get": _raw(sda_status, sda_config_p, c_char_p, c_void_p, c_size_t, POINTER(c_size_t)),
    "sda_config_set": _status(sda_config_p, c_char_p, c_char_p),
    "sda_config_to_string": _raw(sda_status, sda_config_p, c_void_p, c_size_t, POINTER(c_size_t)),
    "sda_config_free": _status(sda_config_p),
    # context and devices
    "sda_context_new": _status(sda_config_p, POINTER(sda_context_p)),
    "sda_context_free": _status(sda_context_p),
    "sda_selection_init": _status(POINTER(sda_selection), c_size_t),
    "sda_device_details_init": _status(POINTER(sda_device_details), c_size_t),
    "sda_select_device": _status(sda_context_p, c_char_p, POINTER(sda_selection)),
    "sda_device_info": _status(sda_context_p, POINTER(sda_device_details)),
    "sda_list_devices": _raw(sda_status, sda_context_p, POINTER(sda_device_details), c_size_t, POINTER(c_size_t)),
    "sda_device_kind_str": _raw(c_char_p, c_int32),
    # guarded runs
    "sda_guard_options_init": _status(POINTER(sda_guard_options), c_size_t),
    "sda_run_report_init": _status(POINTER(sda_run_report), c_size_t),
    "sda_guarded_run": _raw(sda_status, sda_context_p, sda_work_callback, c_void_p, POINTER(sda_guard_options), POINTER(sda_run_report)),
    "sda_guarded_run_batched": _raw(sda_status, sda_context_p, sda_batch_callback, c_void_p, POINTER(sda_guard_options), POINTER(sda_run_report)),
    # logging
    "sda_set_log_callback": _status(sda_log_callback, c_void_p),
    # memory
    "sda_memory_figures_init": _status(POINTER(sda_memory_figures), c_size_t),
    "sda_memory_info": _status(sda_context_p, POINTER(sda_memory_figures)),
    "sda_clear_cache": _status(sda_context_p),
    "sda_reset_peak": _status(sda_context_p),
    # worker placement
    "sda_worker_plan_init": _status(POINTER(sda_worker_plan), c_size_t),
    "sda_plan_workers": _raw(sda_status, sda_context_p, c_char_p, c_uint32, c_uint32, POINTER(sda_worker_plan), c_void_p, c_size_t, POINTER(c_size_t)),
    # batch probe
    "sda_probe_options_init": _status(POINTER(sda_probe_options), c_size_t),
    "sda_probe_result_init": _status(POINTER(sda_probe_result), c_size_t),
    "sda_probe_batch": _raw(sda_status, sda_context_p, POINTER(sda_probe_options), POINTER(sda_probe_result)),
    # recommendations and reports
    "sda_recommendation_init": _status(POINTER(sda_recommendation), c_size_t),
    "sda_recommend": _status(sda_context_p, c_uint64, POINTER(sda_recommendation)),
    "sda_report": _raw(sda_status, sda_context_p, c_int32, c_void_p, c_size_t, POINTER(c_size_t)),
    "sda_report_json": _raw(sda_status, sda_context_p, c_int32, c_void_p, c_size_t, POINTER(c_size_t)),
    # status, messages, version
    "sda_status_str": _raw(c_char_p, c_int32),
    "sda_last_error_message": _raw(c_char_p),
    "sda_set_error_message": _status(c_char_p),
    "sda_version": _raw(c_char_p),
    # environment validation
    "sda_problem_init": _status(POINTER(sda_problem), c_size_t),
    "sda_validate_environment": _raw(sda_status, sda_context_p, c_bool, POINTER(sda_problem), c_size_t, POINTER(c_size_t)),
    "sda_severity_str": _raw(c_char_p, c_int32),
    # built-in workload
    "sda_workload_init": _status(POINTER(sda_workload), c_size_t),
    "sda_run_workload": _status(sda_context_p, POINTER(sda_workload), c_uint32),
    # a model file as the workload
    "sda_model_options_init": _status(POINTER(sda_model_options), c_size_t),
    "sda_model_details_init": _status(POINTER(sda_model_details), c_size_t),
    "sda_model_load": _status(sda_context_p, POINTER(sda_model_options), POINTER(sda_model_p)),
    "sda_model_free": _status(sda_model_p),
    "sda_model_run": _status(sda_model_p, c_uint32),
    "sda_model_info": _status(sda_model_p, POINTER(sda_model_details)),
    "sda_guarded_run_model": _raw(sda_status, sda_context_p, sda_model_p, POINTER(sda_guard_options), POINTER(sda_run_report)),
}


class LibraryNotFoundError(ImportError):
    """libsda could not be loaded; the message lists every place that was tried and the fix."""


def _package_library(platform: str = sys.platform) -> Path:
    """Where a wheel for ``platform`` puts libsda: ``sda/_lib/<library_file_name(platform)>``."""
    return Path(__file__).resolve().parent / "_lib" / library_file_name(platform)


def candidates(environ: os._Environ | dict | None = None) -> list[str]:
    """Where libsda is looked for, in order (see the module's documentation)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(LIBRARY_ENV, "")
    if explicit:
        return [explicit]
    out = []
    bundled = _package_library()
    if bundled.is_file():
        out.append(str(bundled))
    out.append(SONAME)
    found = ctypes.util.find_library("sda")
    if found and found not in out:
        out.append(found)
    return out


def _library_abi(lib: ctypes.CDLL) -> str:
    """The ABI version of a loaded libsda: ``major`` from 1.0 on, ``0.minor`` before it."""
    version = ctypes.CFUNCTYPE(c_char_p)(("sda_version", lib))()
    major, minor = version.decode().split(".")[:2]
    return major if major != "0" else f"0.{minor}"


def load_library(environ: os._Environ | dict | None = None) -> ctypes.CDLL:
    """Loads libsda from the first candidate that loads and has ABI version ``ABI_VERSION``."""
    tried = []
    for candidate in candidates(environ):
        try:
            lib = ctypes.CDLL(candidate)
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
            continue
        abi = _library_abi(lib)
        if abi != ABI_VERSION:
            tried.append(f"{candidate}: ABI version {abi}, this binding needs {ABI_VERSION}")
            continue
        return declare(lib)
    raise LibraryNotFoundError(
        "libsda could not be loaded (tried: " + "; ".join(tried) + "). Install libsda "
        f"(make install PREFIX=...) and set {LIBRARY_ENV}=<prefix>/{installed_library(sys.platform)}, "
        f"{_loader_hint(sys.platform)}."
    )


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets ``restype``, ``argtypes`` and, for checked status functions, ``errcheck`` on ``lib``."""
    for name, signature in FUNCTIONS.items():
        function = getattr(lib, name)
        function.restype = signature.restype
        function.argtypes = list(signature.argtypes)
        if signature.checked:
            function.errcheck = _check_status
    return lib


def _check_status(result: int, function: object, arguments: tuple) -> int:
    if result != Status.OK:
        # Imported here: errors.py needs this module's Status, and the check runs only after import.
        from .errors import error_from_status

        raise error_from_status(result, last_error_message())
    return result


def library_path(lib: ctypes.CDLL) -> str:
    """The file the loaded libsda was mapped from (resolved through the loader, not the candidate):
    ``dladdr`` on Linux and macOS, ``GetModuleFileNameW`` on Windows (which has no ``dladdr``); the
    name it was loaded under when neither answers."""
    if sys.platform == "win32":
        return _windows_module_path(lib)
    info = _DlInfo()
    libdl = ctypes.CDLL(None)
    libdl.dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
    libdl.dladdr.restype = ctypes.c_int
    address = ctypes.cast(lib.sda_version, c_void_p)
    if libdl.dladdr(address, ctypes.byref(info)) and info.dli_fname:
        return os.path.realpath(info.dli_fname.decode())
    return lib._name


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p), ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]


def _windows_module_path(lib: ctypes.CDLL) -> str:
    """The DLL's path from its module handle (``lib._handle`` is the HMODULE on Windows). Not run here:
    this project's machines are Linux."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetModuleFileNameW.argtypes = [c_void_p, ctypes.c_wchar_p, c_uint32]
    kernel32.GetModuleFileNameW.restype = c_uint32
    size = 260
    while size <= 32768:
        buffer = ctypes.create_unicode_buffer(size)
        written = kernel32.GetModuleFileNameW(c_void_p(lib._handle), buffer, size)
        if written == 0:
            break
        if written < size:
            return os.path.realpath(buffer.value)
        size *= 2  # truncated: the path is longer than the buffer
    return lib._name


lib = load_library()


def last_error_message() -> str:
    """The calling thread's last libsda error message."""
    return lib.sda_last_error_message().decode("utf-8", "replace")


def new(struct_type: type, lib: ctypes.CDLL | None = None) -> ctypes.Structure:
    """A struct initialised by its C init function with this binding's ``sizeof`` (the header's rule
    for structs that grow): defaults for options, zeros for results, ``struct_size`` set."""
    if lib is None:
        from . import lib as loaded  # the package's library

        lib = loaded
    struct = struct_type()
    getattr(lib, f"{struct_type.__name__}_init")(ctypes.byref(struct), ctypes.sizeof(struct_type))
    return struct
