"""libsda for Python: device selection, memory figures and out-of-memory guidance over libsda's C ABI.

::

    import sda

    with sda.Context() as ctx:                       # config from defaults, $SDA_CONFIG, $SDA_DEVICE
        selection = ctx.select_device("auto")
        print(selection.device, ctx.device_info().name, ctx.memory_info().budget)
        try:
            ctx.guarded_run(lambda: train_step(batch), batch_size=batch)
        except sda.OutOfMemoryError as e:
            print(e.report.guidance)                 # what happened, and a batch that fits

A thin layer over ``sda.h`` (``sda._ffi`` declares every function): failures raise ``SdaError``
subclasses carrying the status and the library's message; ``Config`` and ``Context`` free their
handle in ``close()``, at the end of a ``with`` block, or when collected. The library is found
through ``$SDA_LIBRARY``, then package data, then the system (see ``sda._ffi``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import json
import os
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import _ffi, _libtorch
from ._ffi import (
    ABI_MAJOR,
    DeviceKind,
    Dtype,
    Launcher,
    LogLevel,
    ModelFormat,
    PlanStrategy,
    ProbeStop,
    Severity,
    Status,
    Verbosity,
    lib,
)
from .errors import (
    ERRORS,
    BackendUnavailableError,
    BufferTooSmallError,
    CancelledError,
    DeviceUnavailableError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidUtf8Error,
    InvalidValueError,
    IOFailureError,
    NullPointerError,
    OutOfMemoryError,
    PanicError,
    ParseError,
    SdaError,
    TorchError,
    UnknownKeyError,
    UnsupportedError,
    error_from_status,
)

__version__ = "0.1.0"

__all__ = [
    "ABI_MAJOR", "BackendDetails", "BackendUnavailableError", "BufferTooSmallError", "CancelledError",
    "Config", "Context", "DeviceDetails", "DeviceKind", "DeviceUnavailableError", "Dtype", "ERRORS",
    "IOFailureError", "InvalidArgumentError", "InvalidHandleError", "InvalidUtf8Error",
    "InvalidValueError", "Launcher", "LogLevel", "Model", "ModelDetails", "ModelFormat", "PlanStrategy", "Problem", "Recommendation", "Severity",
    "Verbosity", "WorkerPlan", "MemoryFigures", "NullPointerError", "OutOfMemoryError",
    "PanicError", "ParseError", "ProbeProgress", "ProbeResult", "ProbeStop", "RunReport", "SdaError", "Selection", "Status", "TorchError",
    "UnknownKeyError", "UnsupportedError", "Workload", "backend_info", "classify_error",
    "device_kind_str", "error_from_status", "is_out_of_memory", "last_error_message", "library_path",
    "set_error_message", "set_log_callback", "severity_str", "status_str", "version",
]


def _encode(text: str | None, name: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, not {type(text).__name__}")
    return text.encode("utf-8")


def _decode(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


# ---- Plain functions ------------------------------------------------------------------------------


def version() -> str:
    """The library's version, ``MAJOR.MINOR.PATCH``."""
    return _decode(lib.sda_version())


def library_path() -> str:
    """The file libsda was loaded from."""
    return _ffi.library_path(lib)


def status_str(code: int) -> str:
    """The C name of a status code (``SDA_ERR_OUT_OF_MEMORY``); ``SDA_UNKNOWN_STATUS`` for others."""
    return _decode(lib.sda_status_str(int(code)))


def device_kind_str(kind: int) -> str:
    """``cpu``, ``cuda``, ``mps`` (``unknown`` for other values)."""
    return _decode(lib.sda_device_kind_str(int(kind)))


def severity_str(severity: int) -> str:
    """``info``, ``warning``, ``error`` (``unknown`` for other values)."""
    return _decode(lib.sda_severity_str(int(severity)))


def last_error_message() -> str:
    """The calling thread's last libsda error message (empty when none failed yet)."""
    return _ffi.last_error_message()


def set_error_message(message: str) -> None:
    """Sets the calling thread's libsda error message (what a work callback does before it returns a
    failure status, so that the guard reads the real text). Guarded runs through this module do it
    for you."""
    lib.sda_set_error_message(_encode(message, "message"))


def classify_error(error: str | BaseException) -> Status:
    """``Status.ERR_OUT_OF_MEMORY`` when an error text (or an exception, by its type name and text)
    reports that a device ran out of memory (CUDA, CPU allocator, MPS, ``MemoryError`` ...), else
    ``Status.ERR_TORCH``."""
    text = _exception_text(error) if isinstance(error, BaseException) else error
    return Status(lib.sda_classify_error(_encode(text, "error")))


def is_out_of_memory(error: str | BaseException) -> bool:
    """Whether ``classify_error(error)`` says out-of-memory."""
    return classify_error(error) == Status.ERR_OUT_OF_MEMORY


def _exception_text(error: BaseException) -> str:
    # The type name matters for texts like "MemoryError" or "torch.OutOfMemoryError", whose message
    # alone may be empty or generic.
    kind = type(error)
    module = "" if kind.__module__ == "builtins" else kind.__module__ + "."
    return f"{module}{kind.__qualname__}: {error}"


_log_callback_keepalive: Any = None
_log_lock = threading.Lock()


def set_log_callback(callback: Callable[[LogLevel, str], None] | None) -> None:
    """Sends libsda's log messages to ``callback(level, message)`` (from any thread that calls into
    libsda), or stops with None. An exception in the callback goes to ``sys.unraisablehook``; it
    never reaches libsda."""
    global _log_callback_keepalive
    with _log_lock:
        if callback is None:
            lib.sda_set_log_callback(_ffi.sda_log_callback(), None)
            # Returned: libsda no longer calls the old thunk, so it may go.
            _log_callback_keepalive = None
            return

        def on_log(_user_data: int | None, level: int, message: bytes | None) -> None:
            try:
                callback(LogLevel(level), _decode(message))
            except BaseException as exc:  # noqa: BLE001 - nothing may unwind into libsda
                _unraisable(exc, "in the libsda log callback", callback)

        c_callback = _ffi.sda_log_callback(on_log)
        lib.sda_set_log_callback(c_callback, None)
        # libsda calls the thunk until sda_set_log_callback replaces it, and not once after that call
        # returns (its documented guarantee): so the new thunk is kept from here on, and the old one
        # may be released now, not earlier.
        _log_callback_keepalive = c_callback


def _unraisable(exc: BaseException, where: str, obj: object) -> None:
    sys.unraisablehook(
        types.SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__, err_msg=f"Exception ignored {where}", object=obj
        )
    )


# ---- Records (the ABI's structs as Python values) -------------------------------------------------


def _convert(value: Any, kind: Any) -> Any:
    if isinstance(value, bytes):
        return _decode(value)
    if kind in (DeviceKind, ProbeStop, PlanStrategy, Launcher, Severity, Dtype, ModelFormat):
        try:
            return kind(value)
        except ValueError:  # a newer library's value: keep the number
            return value
    if kind is Status:
        try:
            return Status(value)
        except ValueError:  # a newer library's code: keep the number
            return value
    if kind is bool:  # an sda_bool (uint32_t 0 or 1)
        return bool(value)
    return value


def _from_struct(cls: type, struct: ctypes.Structure) -> Any:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{name: _convert(getattr(struct, name), _TYPES.get(hint)) for name, hint in hints.items()})


_TYPES = {
    "DeviceKind": DeviceKind, "Status": Status, "ProbeStop": ProbeStop, "PlanStrategy": PlanStrategy,
    "Launcher": Launcher, "Severity": Severity, "bool": bool, "Dtype": Dtype, "ModelFormat": ModelFormat,
}


@dataclass(frozen=True)
class Selection:
    """The outcome of ``Context.select_device``."""

    kind: DeviceKind
    index: int
    fell_back: bool
    device: str
    requested: str
    reason: str


@dataclass(frozen=True)
class DeviceDetails:
    """One device (``Context.device_info``, ``Context.list_devices``)."""

    kind: DeviceKind
    index: int
    device: str
    name: str
    memory_total: int
    memory_free: int
    compute_capability_major: int
    compute_capability_minor: int
    cuda_runtime_version: str
    cuda_driver_version: str
    bf16_supported: bool
    fp16_supported: bool
    device_count: int


@dataclass(frozen=True)
class MemoryFigures:
    """Memory of the selected device in bytes (``Context.memory_info``)."""

    allocated: int
    reserved: int
    peak: int
    free: int
    total: int
    budget: int
    process_resident: int


@dataclass(frozen=True)
class BackendDetails:
    """What the torch backend module loaded (``backend_info``).

    ``libtorch_preloaded``: the libtorch was already in the process before the backend was opened
    (the host's own, or this Python's after ``import torch``). ``libtorch_found_by``: how it was
    found: ``"mapped"`` (already in the process), ``"SDA_LIBTORCH"``, ``"hardware.libtorch"``,
    ``"bundled"`` or ``"built"`` (the one the backend was built against); ``""`` while none is loaded,
    or for a backend module that records no libtorch."""

    loaded: bool
    cuda_build: bool
    module_path: str
    libtorch_path: str
    libtorch_version: str
    built_libtorch_version: str
    libtorch_cuda_version: str
    libtorch_preloaded: bool
    libtorch_found_by: str


@dataclass(frozen=True)
class RunReport:
    """What happened in a guarded run (returned on success, ``error.report`` on failure)."""

    status: Status
    kind: DeviceKind
    index: int
    attempted_batch: int
    final_batch: int
    suggested_batch: int
    accumulation_steps: int
    attempts: int
    oom_attempts: int
    measured: bool
    peak_bytes: int
    memory_before: int
    memory_after: int
    budget: int
    failed_allocation_bytes: int
    guidance: str


@dataclass(frozen=True)
class ProbeProgress:
    """Progress of a batch probe after each run (handed to ``Context.probe_batch``'s ``progress``)."""

    batch: int
    ok: bool
    oom: bool
    peak_bytes: int
    predicted_bytes: int
    elapsed_ms: float
    runs: int
    best_batch: int
    budget_bytes: int


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of ``Context.probe_batch``: ``max_batch`` ran within the budget;
    ``recommended_batch`` keeps the safety margin; ``capped`` means ``max_batch`` was the limit asked
    for, not the device's."""

    max_batch: int
    recommended_batch: int
    runs: int
    oom_runs: int
    stop: ProbeStop
    capped: bool
    fixed_bytes: float
    per_sample_bytes: float
    predicted_peak_bytes: int
    measured_peak_bytes: int
    budget_bytes: int
    margin_bytes: int
    elapsed_ms: float


@dataclass(frozen=True)
class WorkerPlan:
    """Where one worker of a job runs and the environment to start it with (``Context.plan_workers``);
    ``env`` holds the variables in the library's order."""

    strategy: PlanStrategy
    kind: DeviceKind
    index: int
    device: str
    workers: int
    worker_id: int
    gpu_count: int
    rank: int
    local_rank: int
    world_size: int
    master_port: int
    master_addr: str
    distributed_backend: str
    launcher: Launcher
    env_count: int
    reason: str
    env: dict


@dataclass(frozen=True)
class Recommendation:
    """A configuration recommended for the selected device (``Context.recommend``)."""

    kind: DeviceKind
    index: int
    device: str
    memory_total: int
    batch_size: int
    batch_from_probe: bool
    gradient_checkpointing: bool
    blocks: int
    channels: int
    tier_index: int
    tier_from_config: bool
    tier_min_memory_gb: float
    tier_max_memory_gb: float
    tier_label: str
    batch_reason: str
    advice_given: bool
    memory_strategy: str
    memory_fraction: float
    memory_reason: str


@dataclass(frozen=True)
class Problem:
    """A problem ``Context.validate_environment`` found, with how to fix it."""

    severity: Severity
    code: str
    message: str
    fix: str


@dataclass(frozen=True)
class ModelDetails:
    """What a loaded model is (``Model.details``): its format, the device it was loaded on, its input
    and its sizes in bytes (``resident_bytes`` = parameters + buffers, held while it is loaded)."""

    format: ModelFormat
    kind: DeviceKind
    index: int
    dtype: Dtype
    train: bool
    param_bytes: int
    buffer_bytes: int
    resident_bytes: int
    work_id: int


@dataclass
class Workload:
    """Shape of the built-in conv1d workload (defaults: the seeds' benchmark, from the library)."""

    channels: int
    sample_length: int
    out_channels: int
    kernel_size: int
    padding: int
    with_backward: bool

    @classmethod
    def default(cls) -> "Workload":
        return _from_struct(cls, _ffi.new(_ffi.sda_workload))

    def _to_c(self) -> _ffi.sda_workload:
        struct = _ffi.new(_ffi.sda_workload)  # sets struct_size
        for field in dataclasses.fields(self):
            setattr(struct, field.name, getattr(self, field.name))
        return struct


def backend_info() -> BackendDetails:
    """The loaded torch backend (``loaded`` is False while none is); never loads anything."""
    details = _ffi.new(_ffi.sda_backend_details)
    lib.sda_backend_info(ctypes.byref(details))
    return _from_struct(BackendDetails, details)


# ---- Handles --------------------------------------------------------------------------------------


class _Handle:
    """An owned libsda handle: ``close()`` frees it (once), so do ``with`` and garbage collection."""

    _free_name = ""

    def __init__(self, pointer: ctypes.c_void_p):
        self._pointer = pointer

    @property
    def _as_parameter_(self) -> ctypes.c_void_p:
        # ctypes passes the object itself as the handle argument; a closed handle is passed as NULL,
        # which libsda answers with SDA_ERR_NULL_POINTER instead of touching freed memory.
        return self._pointer if self._pointer is not None else ctypes.c_void_p()

    @property
    def closed(self) -> bool:
        return self._pointer is None

    def close(self) -> None:
        """Frees the handle; later calls on this object raise ``NullPointerError``. Idempotent."""
        pointer, self._pointer = self._pointer, None
        if pointer is not None and pointer.value:
            getattr(lib, self._free_name)(pointer)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown the module globals may already be gone; the process is ending and
        # its memory with it, so there is nothing left to free.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a finaliser must not raise
            pass


def _require_open(handle: _Handle | None, name: str) -> None:
    if handle is not None and handle.closed:
        raise InvalidHandleError(f"{name} was closed", Status.ERR_INVALID_HANDLE)


def _read_string(call: Callable[[Any, int, Any], int]) -> str:
    """Reads a string through an snprintf-style function: ask for the size, then fill a buffer
    (again if the value grew in between)."""
    needed = ctypes.c_size_t(0)
    status = call(None, 0, ctypes.byref(needed))
    while True:
        if status not in (Status.OK, Status.ERR_BUFFER_TOO_SMALL):
            raise error_from_status(status, last_error_message())
        buffer = ctypes.create_string_buffer(max(needed.value, 1))
        status = call(buffer, len(buffer), ctypes.byref(needed))
        if status == Status.OK:
            return _decode(buffer.value)


def _plain_text(value: object) -> str:
    """A Python value in the plain-text form sda_config_set takes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_plain_text(v) for v in value)
    return str(value)


class Config(_Handle):
    """A libsda configuration (TOML). ``Config()`` starts from the defaults, ``$SDA_CONFIG`` and
    ``$SDA_DEVICE``; ``Config.load(path)`` and ``Config.from_toml(text)`` read one."""

    _free_name = "sda_config_free"

    def __init__(self) -> None:
        pointer = ctypes.c_void_p()
        lib.sda_config_new(ctypes.byref(pointer))
        super().__init__(pointer)

    @classmethod
    def _adopt(cls, pointer: ctypes.c_void_p) -> "Config":
        self = cls.__new__(cls)
        _Handle.__init__(self, pointer)
        return self

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Config":
        """Reads a TOML file; unknown keys and bad values raise, naming the key."""
        pointer = ctypes.c_void_p()
        lib.sda_config_load(_encode(str(path), "path"), ctypes.byref(pointer))
        return cls._adopt(pointer)

    @classmethod
    def from_toml(cls, text: str) -> "Config":
        """Parses TOML text."""
        pointer = ctypes.c_void_p()
        lib.sda_config_load_str(_encode(text, "text"), ctypes.byref(pointer))
        return cls._adopt(pointer)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves atomically; a file there that does not parse is never overwritten."""
        lib.sda_config_save(self, _encode(str(path), "path"))

    def get(self, key: str) -> str:
        """A value by dotted key as plain text (lists comma-separated, booleans true/false)."""
        encoded = _encode(key, "key")
        return _read_string(lambda buf, cap, needed: lib.sda_config_get(self, encoded, buf, cap, needed))

    def set(self, key: str, value: object) -> None:
        """Sets a value by dotted key; str, bool, int, float and lists are accepted."""
        lib.sda_config_set(self, _encode(key, "key"), _encode(_plain_text(value), "value"))

    __getitem__ = get
    __setitem__ = set

    def to_toml(self) -> str:
        """The whole configuration as TOML text."""
        return _read_string(lambda buf, cap, needed: lib.sda_config_to_string(self, buf, cap, needed))

    def __str__(self) -> str:
        return self.to_toml()


class _Call:
    """One Python callable running inside a guarded run, seen from its C callback."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.error: BaseException | None = None

    def invoke(self, *args: int) -> int:
        # Nothing may unwind into libsda: every exception ends here and becomes a status.
        try:
            self.function(*args)
            return Status.OK
        except BaseException as exc:  # noqa: BLE001
            status = _status_of(exc)
            message = exc.message if isinstance(exc, SdaError) else str(exc)
            lib.sda_set_error_message((message or type(exc).__name__).encode("utf-8", "replace"))
            if status != Status.ERR_OUT_OF_MEMORY:
                # Re-raised by the caller once the run has returned.
                self.error = exc
            # An out-of-memory exception is dropped here: its traceback holds the frames (and the
            # tensors) of the failed attempt, and libsda's recovery (emptying the cache) after this
            # return must find them released.
            return status

    def report_progress(self, progress: _ffi.sda_probe_progress) -> bool:
        """A probe's progress callback: False (or an exception, re-raised later) cancels."""
        try:
            return self.function(_from_struct(ProbeProgress, progress)) is not False
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind into libsda
            self.error = exc
            return False


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, SdaError):
        return int(exc.code)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stop, do not retry
        return Status.ERR_CANCELLED
    return lib.sda_classify_error(_exception_text(exc).encode("utf-8", "replace"))


# Calls in flight, by the key passed as user_data: one C trampoline per callback type serves all of
# them, and the key finds the Python callable.
_calls: dict[int, _Call] = {}
_call_keys = itertools.count(1)
_calls_lock = threading.Lock()


@_ffi.sda_work_callback
def _work_trampoline(user_data: int | None) -> int:
    return _calls[user_data or 0].invoke()


@_ffi.sda_batch_callback
def _batch_trampoline(user_data: int | None, batch_size: int, accumulation_steps: int) -> int:
    return _calls[user_data or 0].invoke(batch_size, accumulation_steps)


@_ffi.sda_probe_workload_callback
def _probe_workload_trampoline(user_data: int | None, batch: int) -> int:
    return _calls[user_data or 0].invoke(batch)


@_ffi.sda_probe_progress_callback
def _probe_progress_trampoline(user_data: int | None, progress: Any) -> bool:
    return _calls[user_data or 0].report_progress(progress.contents)


def _register(call: "_Call") -> int:
    with _calls_lock:
        key = next(_call_keys)
        _calls[key] = call
    return key


def _unregister(*keys: int) -> None:
    with _calls_lock:
        for key in keys:
            _calls.pop(key, None)


def _work_id(function: Callable[..., Any]) -> int:
    """A stable number per Python function, so that libsda recognises the same work again.

    libsda's default identity of a work is its C callback, and every Python callable goes through the
    same trampoline; so the binding names the work after the code it runs (a lambda re-created on
    every call is still the same work)."""
    target = getattr(function, "func", function)  # functools.partial
    target = getattr(target, "__func__", target)  # bound methods
    code = getattr(target, "__code__", None)
    key = (code.co_filename, code.co_firstlineno, code.co_name) if code else (type(target).__qualname__, id(type(target)))
    return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1


class Model(_Handle):
    """A model file loaded on a context's selected device (``Context.load_model``): a TorchScript
    module or an AOTInductor ``.pt2`` package, run with random input ``[batch, *input_shape]``.

    ``run(batch)`` runs it once; ``Context.probe_batch(model)`` finds the largest batch that fits;
    ``Context.guarded_run_model(model, batch=...)`` runs it under guard. ``close()`` (or the end of a
    ``with`` block) frees it. The model keeps its context's state alive: it still runs after the
    ``Context`` is closed, but the probe and guarded runs need the open context that loaded it.
    """

    _free_name = "sda_model_free"

    def __init__(self, pointer: ctypes.c_void_p, path: str, input_shape: tuple[int, ...], dtype: Dtype, train: bool):
        super().__init__(pointer)
        self.path = path
        self.input_shape = input_shape
        self.dtype = dtype
        self.train = train

    def run(self, batch: int) -> None:
        """Runs the model once with ``batch`` samples (inference, or one training step when loaded
        with ``train``). A real allocation failure raises ``OutOfMemoryError``; a batch, shape or
        dtype the model does not accept raises ``InvalidArgumentError`` with the model's message."""
        lib.sda_model_run(self, batch)

    @property
    def details(self) -> ModelDetails:
        """Format, device, input and sizes of the loaded model."""
        out = _ffi.new(_ffi.sda_model_details)
        lib.sda_model_info(self, ctypes.byref(out))
        return _from_struct(ModelDetails, out)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Model({self.path!r}, input_shape={self.input_shape}, dtype={self.dtype}, train={self.train}, {state})"


def _dtype(dtype: str | Dtype) -> Dtype:
    if isinstance(dtype, Dtype):
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a str or sda.Dtype, not {type(dtype).__name__}")
    try:
        return Dtype[dtype.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use 'f32', 'f16' or 'bf16'") from None


class Context(_Handle):
    """A snapshot of a configuration and the device selected under it; may be shared by threads."""

    _free_name = "sda_context_free"

    def __init__(self, config: Config | None = None) -> None:
        """``config`` None: the defaults, ``$SDA_CONFIG`` and ``$SDA_DEVICE`` (as ``Config()``).

        When neither the configuration (``hardware.libtorch``) nor ``$SDA_LIBTORCH`` names a
        libtorch, the context names the torch installed in this Python environment, if there is one
        (``sda._libtorch``); the caller's ``Config`` object itself is not changed."""
        # A closed Config would reach libsda as NULL, which means "the defaults": refuse it instead.
        _require_open(config, "config")
        effective = config if config is not None else Config()
        libtorch = _libtorch.default_for(effective.get(_libtorch.CONFIG_KEY))
        if libtorch is not None:
            if effective is config:
                effective = Config.from_toml(config.to_toml())
            effective.set(_libtorch.CONFIG_KEY, libtorch)
        pointer = ctypes.c_void_p()
        try:
            lib.sda_context_new(effective, ctypes.byref(pointer))
        finally:
            if effective is not config:
                effective.close()
        super().__init__(pointer)

    def select_device(self, preference: str | None = None) -> Selection:
        """Selects ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (None: the config's
        ``hardware.device``). A missing or broken device falls back to the CPU with ``fell_back``
        and ``reason`` set (or raises ``DeviceUnavailableError`` under ``hardware.strict``)."""
        out = _ffi.new(_ffi.sda_selection)
        lib.sda_select_device(self, _encode(preference, "preference"), ctypes.byref(out))
        return _from_struct(Selection, out)

    def device_info(self) -> DeviceDetails:
        """The selected device (free memory measured now)."""
        out = _ffi.new(_ffi.sda_device_details)
        lib.sda_device_info(self, ctypes.byref(out))
        return _from_struct(DeviceDetails, out)

    def list_devices(self) -> list[DeviceDetails]:
        """Every device of the machine: the CPU first, then CUDA devices, then MPS."""
        count = ctypes.c_size_t(0)
        while True:
            array = (_ffi.sda_device_details * max(count.value, 1))()
            array[0] = _ffi.new(_ffi.sda_device_details)  # its struct_size is the array's stride
            status = lib.sda_list_devices(self, array, count.value, ctypes.byref(count))
            if status == Status.OK:
                return [_from_struct(DeviceDetails, array[i]) for i in range(count.value)]
            if status != Status.ERR_BUFFER_TOO_SMALL:
                raise error_from_status(status, last_error_message())

    def memory_info(self) -> MemoryFigures:
        """Memory figures of the selected device, the same fields on every device kind."""
        out = _ffi.new(_ffi.sda_memory_figures)
        lib.sda_memory_info(self, ctypes.byref(out))
        return _from_struct(MemoryFigures, out)

    def clear_cache(self) -> None:
        """Returns cached device memory to the driver (``torch.cuda.empty_cache``)."""
        lib.sda_clear_cache(self)

    def reset_peak(self) -> None:
        """Resets the peak figure to the current allocation."""
        lib.sda_reset_peak(self)

    def backend_load(self) -> BackendDetails:
        """Loads the torch backend now (once per process) and describes it."""
        lib.sda_backend_load(self)
        return backend_info()

    def run_workload(self, batch: int, workload: Workload | None = None) -> None:
        """Runs the built-in conv1d workload once with ``batch`` samples on the selected device; a
        real allocation failure raises ``OutOfMemoryError`` with libtorch's message."""
        struct = workload._to_c() if workload is not None else None
        lib.sda_run_workload(self, ctypes.byref(struct) if struct is not None else None, batch)

    def guarded_run(
        self,
        work: Callable[[], Any],
        *,
        batch_size: int = 0,
        budget_bytes: int = 0,
        margin_bytes: int = 0,
        work_id: int | None = None,
    ) -> RunReport:
        """Runs ``work()`` under libsda's guard and returns the ``RunReport``.

        An out-of-memory failure inside ``work`` — an ``OutOfMemoryError`` from this module, a torch
        OOM (``torch.OutOfMemoryError``, ``DefaultCPUAllocator: can't allocate memory``), a
        ``MemoryError`` — is recovered from after ``work`` has returned and raises
        ``OutOfMemoryError`` whose ``report.guidance`` says what to do and ``report.suggested_batch``
        names a batch that fits (``batch_size`` says which batch ``work`` attempts). Any other
        exception is re-raised unchanged once the run has returned.
        """
        options = self._options(batch_size, 0, 0, False, budget_bytes, margin_bytes, work_id, work)
        return self._run(lib.sda_guarded_run, _work_trampoline, work, options)

    def guarded_run_batched(
        self,
        work: Callable[[int, int], Any],
        *,
        batch_size: int,
        min_batch: int = 0,
        max_attempts: int = 0,
        keep_effective_batch: bool = False,
        budget_bytes: int = 0,
        margin_bytes: int = 0,
        work_id: int | None = None,
    ) -> RunReport:
        """Runs ``work(batch, accumulation_steps)`` from ``batch_size`` down, retrying with a batch
        chosen from the measured memory after each out-of-memory failure; ``report.final_batch`` is
        the batch that fit. Raises as ``guarded_run`` does when no batch fits."""
        options = self._options(
            batch_size, min_batch, max_attempts, keep_effective_batch, budget_bytes, margin_bytes, work_id, work
        )
        return self._run(lib.sda_guarded_run_batched, _batch_trampoline, work, options)

    def load_model(
        self,
        path: str | os.PathLike[str],
        input_shape: Sequence[int],
        dtype: str | Dtype = "f32",
        train: bool = False,
    ) -> Model:
        """Loads a model file (TorchScript, or an AOTInductor ``.pt2`` for inference) onto the
        selected device. ``input_shape`` is the shape of one sample (the batch dimension is added in
        front); ``dtype`` the input's element type (``f32``, ``f16``, ``bf16``; the weights are not
        converted); ``train`` makes every run one training step. A missing file, a file that is not
        a model, a zero dimension raise ``InvalidArgumentError`` and leave nothing loaded; a shape
        or dtype the model rejects is found by the first run."""
        encoded = _encode(os.fspath(path), "path")
        shape = tuple(int(d) for d in input_shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"input_shape {shape}: dimensions are positive integers")
        kind = _dtype(dtype)
        array = (ctypes.c_uint64 * max(len(shape), 1))(*shape)
        options = _ffi.new(_ffi.sda_model_options)
        options.path = encoded
        options.input_shape = ctypes.cast(array, ctypes.POINTER(ctypes.c_uint64))
        options.input_rank = len(shape)
        options.dtype = kind
        options.train = 1 if train else 0
        pointer = ctypes.c_void_p()
        lib.sda_model_load(self, ctypes.byref(options), ctypes.byref(pointer))
        return Model(pointer, os.fspath(path), shape, kind, bool(train))

    def guarded_run_model(
        self,
        model: Model,
        *,
        batch: int,
        min_batch: int = 0,
        max_attempts: int = 0,
        budget_bytes: int = 0,
        margin_bytes: int = 0,
        work_id: int = 0,
    ) -> RunReport:
        """Runs ``model`` under guard with ``batch`` samples and returns the ``RunReport``. With
        ``max_attempts=1`` it is one run; otherwise (0: the library's default of 8 attempts) an
        out-of-memory failure is retried with a smaller batch chosen from the measured memory, down to
        ``min_batch``, and ``report.final_batch`` is the batch that fit. When no batch fits it raises
        ``OutOfMemoryError`` whose ``report.suggested_batch`` names one that does; a batch the model
        does not accept raises ``InvalidArgumentError``, never out-of-memory. ``work_id`` 0 is the
        model's own."""
        if not isinstance(model, Model):
            raise TypeError(f"model must be an sda.Model, not {type(model).__name__}")
        _require_open(model, "model")
        options = _ffi.new(_ffi.sda_guard_options)
        options.batch_size = batch
        if min_batch:
            options.min_batch = min_batch
        if max_attempts:
            options.max_attempts = max_attempts
        options.budget_bytes = budget_bytes
        options.margin_bytes = margin_bytes
        options.work_id = work_id
        report = _ffi.new(_ffi.sda_run_report)
        status = lib.sda_guarded_run_model(self, model, ctypes.byref(options), ctypes.byref(report))
        if status != Status.OK:
            message = last_error_message()
            result = _from_struct(RunReport, report)
            raise error_from_status(status, result.guidance or message, result if result.attempts else None)
        return _from_struct(RunReport, report)

    def plan_workers(self, strategy: str | None = "auto", workers: int = 0, worker_id: int = 0) -> WorkerPlan:
        """Plans where worker ``worker_id`` of ``workers`` runs (strategy ``auto``, ``cpu``,
        ``single_gpu``, ``multi_gpu``; 0 workers = the strategy's default) and the environment to
        start it with. Launches nothing."""
        encoded = _encode(strategy, "strategy")
        needed = ctypes.c_size_t(0)
        while True:
            plan = _ffi.new(_ffi.sda_worker_plan)
            buffer = ctypes.create_string_buffer(max(needed.value, 1))
            status = lib.sda_plan_workers(self, encoded, workers, worker_id, ctypes.byref(plan), buffer, len(buffer), ctypes.byref(needed))
            if status == Status.OK:
                break
            if status != Status.ERR_BUFFER_TOO_SMALL:
                raise error_from_status(status, last_error_message())
        env = dict(line.split("=", 1) for line in _decode(buffer.value).splitlines() if line)
        fields = {f.name for f in dataclasses.fields(WorkerPlan)} - {"env"}
        return WorkerPlan(
            env=env, **{name: _convert(getattr(plan, name), _TYPES.get(WorkerPlan.__dataclass_fields__[name].type)) for name in fields}
        )

    def recommend(self, parameters: int = 0) -> Recommendation:
        """The tier for the selected device's memory (batch size, gradient checkpointing, model size;
        a probed batch in the config wins), and with ``parameters`` > 0 a memory strategy for a model
        of that many parameters. Changes nothing."""
        out = _ffi.new(_ffi.sda_recommendation)
        lib.sda_recommend(self, parameters, ctypes.byref(out))
        return _from_struct(Recommendation, out)

    def report(self, verbose: bool = False) -> str:
        """The report as text (essential, or everything with ``verbose``)."""
        level = Verbosity.VERBOSE if verbose else Verbosity.ESSENTIAL
        return _read_string(lambda buf, cap, needed: lib.sda_report(self, level, buf, cap, needed))

    def report_json(self, verbose: bool = False) -> dict:
        """The report's facts as parsed JSON (layout: ``docs/report.schema.json``)."""
        level = Verbosity.VERBOSE if verbose else Verbosity.ESSENTIAL
        return json.loads(_read_string(lambda buf, cap, needed: lib.sda_report_json(self, level, buf, cap, needed)))

    def validate_environment(self, load_backend: bool = False) -> list[Problem]:
        """Every problem of the environment with a severity and a fix, worst first; changes nothing.
        ``load_backend`` also loads the torch backend to check its libtorch."""
        count = ctypes.c_size_t(0)
        while True:
            array = (_ffi.sda_problem * max(count.value, 1))()
            array[0] = _ffi.new(_ffi.sda_problem)  # its struct_size is the array's stride
            status = lib.sda_validate_environment(self, load_backend, array, count.value, ctypes.byref(count))
            if status == Status.OK:
                return [_from_struct(Problem, array[i]) for i in range(count.value)]
            if status != Status.ERR_BUFFER_TOO_SMALL:
                raise error_from_status(status, last_error_message())

    def probe_batch(
        self,
        workload: Workload | Model | Callable[[int], Any] | None = None,
        *,
        min_batch: int = 0,
        start_batch: int = 0,
        max_batch: int = 0,
        max_runs: int = 0,
        budget_bytes: int = 0,
        margin_bytes: int = 0,
        progress: Callable[[ProbeProgress], bool | None] | None = None,
        save_to: Config | None = None,
    ) -> ProbeResult:
        """Finds the largest batch of a workload that fits the memory budget on the selected device.

        ``workload`` is the built-in conv1d (None: the seeds' shape, or a ``Workload``), a loaded
        ``Model`` (loaded with this context; a model that accepts only its traced batch raises
        ``InvalidArgumentError``), or a Python callable ``work(batch)`` that runs the host's own work once; inside it, an out-of-memory
        exception (torch's, ``MemoryError``, ``OutOfMemoryError``) marks the batch as not fitting,
        and any other exception stops the probe and is re-raised. ``progress(ProbeProgress)`` is
        called after every run; returning False cancels (``CancelledError``). ``save_to`` stores the
        recommended batch in that config's ``hardware.max_batch_size``. ``start_batch`` is the first
        batch to run, one known to fit (a batch that ran before; 0: ``min_batch``); the search grows
        from it. Zero means the library's default for every number.
        """
        options = _ffi.new(_ffi.sda_probe_options)
        for name, value in (("min_batch", min_batch), ("start_batch", start_batch), ("max_batch", max_batch),
                            ("max_runs", max_runs),
                            ("budget_bytes", budget_bytes), ("margin_bytes", margin_bytes)):
            if value:
                setattr(options, name, value)
        keys = []
        work_call = progress_call = None
        shape = None
        if isinstance(workload, Workload):
            shape = workload._to_c()  # must outlive the call: options points at it
            options.workload = ctypes.pointer(shape)
        elif isinstance(workload, Model):
            _require_open(workload, "model")
            options.model = workload._as_parameter_.value
        elif workload is not None:
            work_call = _Call(workload)
            keys.append(_register(work_call))
            options.custom_workload = _probe_workload_trampoline
            options.workload_user_data = keys[-1]
        if progress is not None:
            progress_call = _Call(progress)
            keys.append(_register(progress_call))
            options.progress = _probe_progress_trampoline
            options.progress_user_data = keys[-1]
        if save_to is not None:
            _require_open(save_to, "save_to")
            options.save_to = save_to._as_parameter_.value
        result = _ffi.new(_ffi.sda_probe_result)
        try:
            status = lib.sda_probe_batch(self, ctypes.byref(options), ctypes.byref(result))
            message = last_error_message() if status != Status.OK else ""
        finally:
            _unregister(*keys)
        for call in (work_call, progress_call):
            if call is not None and call.error is not None:
                raise call.error
        if status != Status.OK:
            raise error_from_status(status, message)
        return _from_struct(ProbeResult, result)

    @staticmethod
    def _options(batch, min_batch, attempts, keep, budget, margin, work_id, work) -> _ffi.sda_guard_options:
        options = _ffi.new(_ffi.sda_guard_options)
        options.batch_size = batch
        if min_batch:
            options.min_batch = min_batch
        if attempts:
            options.max_attempts = attempts
        options.keep_effective_batch = 1 if keep else 0
        options.budget_bytes = budget
        options.margin_bytes = margin
        options.work_id = _work_id(work) if work_id is None else work_id
        return options

    def _run(self, function: Any, trampoline: Any, work: Callable[..., Any], options: Any) -> RunReport:
        call = _Call(work)
        key = _register(call)
        report = _ffi.new(_ffi.sda_run_report)
        try:
            status = function(self, trampoline, key, ctypes.byref(options), ctypes.byref(report))
            message = last_error_message() if status != Status.OK else ""
        finally:
            _unregister(key)
        result = _from_struct(RunReport, report)
        if call.error is not None:
            raise call.error
        if status != Status.OK:
            raise error_from_status(status, result.guidance or message, result)
        return result

