"""The Pythonic layer: configuration, contexts, devices, memory, errors, handles, logging."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

import sda


def test_version_and_library_path(library_dir):
    assert sda.version().count(".") == 2
    assert Path(sda.library_path()).resolve() == (library_dir / sda._ffi.SONAME).resolve()


def test_config_defaults_get_set_and_text():
    with sda.Config() as config:
        assert config.get("hardware.device") == "auto"
        assert config["hardware.platform_priority"] == "cuda,mps,cpu"
        config["hardware.strict"] = True
        config.set("hardware.platform_priority", ["cpu"])
        config.set("hardware.memory_fraction", 0.5)
        assert config.get("hardware.strict") == "true"
        assert config.get("hardware.platform_priority") == "cpu"
        assert "strict = true" in config.to_toml()
        assert str(config) == config.to_toml()


def test_config_errors_carry_the_status_and_the_library_message():
    with sda.Config() as config:
        with pytest.raises(sda.UnknownKeyError) as unknown:
            config.get("hardware.nope")
        assert unknown.value.code == sda.Status.ERR_UNKNOWN_KEY
        assert "hardware.nope" in str(unknown.value)
        assert unknown.value.status_name == "SDA_ERR_UNKNOWN_KEY"
        assert isinstance(unknown.value, KeyError)  # catchable the Python way too
        with pytest.raises(sda.InvalidValueError, match="memory_strategy"):
            config.set("hardware.memory_strategy", "reckless")
        assert "memory_strategy" in sda.last_error_message()
    with pytest.raises(sda.ParseError):
        sda.Config.from_toml("[hardware\n")
    with pytest.raises(sda.IOFailureError, match="does-not-exist"):
        sda.Config.load("/does-not-exist/sda.toml")


def test_config_save_and_load_round_trip(tmp_path: Path):
    path = tmp_path / "sda.toml"
    with sda.Config.from_toml('[hardware]\ndevice = "cpu"\nmemory_strategy = "conservative"\n') as config:
        config.save(path)
    with sda.Config.load(path) as loaded:
        assert loaded["hardware.device"] == "cpu"
        assert loaded["hardware.memory_strategy"] == "conservative"


def test_strings_must_be_str():
    with sda.Config() as config, pytest.raises(TypeError):
        config.get(b"hardware.device")  # type: ignore[arg-type]


def test_select_cpu_describe_and_measure(ctx):
    selection = ctx.select_device("  CPU ")
    assert (selection.kind, selection.device, selection.fell_back) == (sda.DeviceKind.CPU, "cpu", False)
    details = ctx.device_info()
    assert details.kind == sda.DeviceKind.CPU and details.name and details.memory_total > 0
    memory = ctx.memory_info()
    assert 0 < memory.budget <= memory.free <= memory.total
    devices = ctx.list_devices()
    assert devices[0].kind == sda.DeviceKind.CPU
    assert [d.device for d in devices].count("cpu") == 1
    ctx.clear_cache()
    ctx.reset_peak()


def test_malformed_preferences_are_errors_not_a_silent_cpu(ctx):
    for preference in ("", "tpu", "cuda:x"):
        with pytest.raises(sda.InvalidArgumentError):
            ctx.select_device(preference)


def test_a_missing_gpu_falls_back_and_logs_a_warning():
    messages = []
    sda.set_log_callback(lambda level, message: messages.append((level, message)))
    with sda.Context(sda.Config.from_toml('[hardware]\nplatform_priority = ["cuda", "cpu"]\n')) as context:
        selection = context.select_device("cuda")
    if selection.kind == sda.DeviceKind.CUDA:
        pytest.skip("this machine has a working CUDA device")
    assert selection.fell_back and selection.reason
    assert any(level == sda.LogLevel.WARN for level, _ in messages), messages


def test_strict_selection_raises_device_unavailable():
    config = sda.Config.from_toml('[hardware]\nstrict = true\n')
    with sda.Context(config) as context:
        try:
            selection = context.select_device("cuda")
        except sda.DeviceUnavailableError as error:
            assert error.message
        else:
            assert selection.kind == sda.DeviceKind.CUDA  # only on a machine with a working GPU


def test_an_exception_in_the_log_callback_never_reaches_the_library(monkeypatch):
    seen = []
    monkeypatch.setattr("sys.unraisablehook", lambda args: seen.append(args.exc_value))

    def broken(level, message):
        raise RuntimeError("bug in the host's logger")

    sda.set_log_callback(broken)
    with sda.Context() as context:
        selection = context.select_device("cuda")  # logs a fallback warning on a machine without a GPU
        assert context.device_info().kind == selection.kind  # the library is unharmed
    if selection.fell_back:
        assert seen and isinstance(seen[0], RuntimeError)


def test_handles_close_once_and_closed_handles_are_refused():
    config = sda.Config()
    config.close()
    config.close()  # idempotent
    assert config.closed
    with pytest.raises(sda.NullPointerError):
        config.get("hardware.device")
    with sda.Context() as context:
        pass
    with pytest.raises(sda.NullPointerError):
        context.device_info()
    # A closed config must not silently become "the defaults" (NULL) when a context is made from it.
    with pytest.raises(sda.InvalidHandleError):
        sda.Context(config)


def test_handles_free_themselves_when_collected():
    context = sda.Context()
    pointer = context._pointer
    ref = weakref.ref(context)
    del context
    gc.collect()
    assert ref() is None
    # The handle was freed by __del__: libsda answers a second free with SDA_ERR_INVALID_HANDLE.
    with pytest.raises(sda.InvalidHandleError):
        sda.lib.sda_context_free(pointer)


def test_a_context_is_shared_by_threads(ctx):
    errors = []

    def work():
        try:
            for _ in range(20):
                assert ctx.memory_info().total > 0
                assert ctx.device_info().kind == sda.DeviceKind.CPU
        except BaseException as exc:  # noqa: BLE001 - collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_error_messages_are_per_thread():
    sda.set_error_message("main thread's message")
    other = []
    thread = threading.Thread(target=lambda: (sda.set_error_message("other"), other.append(sda.last_error_message())))
    thread.start()
    thread.join()
    assert other == ["other"]
    assert sda.last_error_message() == "main thread's message"


@pytest.mark.parametrize(
    "text, oom",
    [
        ("CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 40000000000000 bytes.", True),
        ("MPS backend out of memory", True),
        ("CUDA error: device-side assert triggered", False),
        ("Expected all tensors to be on the same device", False),
    ],
)
def test_classify_error_texts(text, oom):
    assert sda.is_out_of_memory(text) is oom
    assert sda.classify_error(text) == (sda.Status.ERR_OUT_OF_MEMORY if oom else sda.Status.ERR_TORCH)


def test_classify_python_exceptions():
    assert sda.classify_error(MemoryError()) == sda.Status.ERR_OUT_OF_MEMORY
    assert sda.classify_error(ValueError("shapes do not match")) == sda.Status.ERR_TORCH


def test_names_of_statuses_and_kinds():
    assert sda.status_str(11) == "SDA_ERR_OUT_OF_MEMORY"
    assert sda.status_str(9999) == "SDA_UNKNOWN_STATUS"
    assert sda.device_kind_str(sda.DeviceKind.CUDA) == "cuda"
    assert sda.device_kind_str(42) == "unknown"


def test_backend_loads_from_beside_the_installed_library(ctx, library_dir):
    details = ctx.backend_load()
    assert details.loaded
    assert Path(details.module_path).resolve() == (library_dir / "libsda_torch.so").resolve()
    assert details.libtorch_version and details.built_libtorch_version
    assert sda.backend_info() == details
    # Other test modules import torch, so this process may hold libtorch already: either way the
    # report names the discovery step, and "already in the process" goes with "mapped".
    assert details.libtorch_found_by in FOUND_BY, details
    assert details.libtorch_preloaded is (details.libtorch_found_by == "mapped"), details


#: The names sda_backend_details.libtorch_found_by takes.
FOUND_BY = ("mapped", "SDA_LIBTORCH", "hardware.libtorch", "bundled", "built")

LOAD_AND_REPORT = """
import json, sys
if sys.argv[1] == "torch-first":
    import torch  # Python's libtorch is in the process before libsda looks for one
import sda
with sda.Config.from_toml('[hardware]\\ndevice = "cpu"\\n') as config, sda.Context(config) as ctx:
    before = sda.backend_info()
    details = ctx.backend_load()
print(json.dumps({"before": [before.loaded, before.libtorch_preloaded, before.libtorch_found_by],
                  "preloaded": details.libtorch_preloaded, "found_by": details.libtorch_found_by,
                  "path": details.libtorch_path}))
"""


def _load_in_a_fresh_python(mode: str) -> dict:
    """Loads the backend in a new interpreter (this process's libtorch state is not the question)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SDA_BACKEND", "SDA_LIBTORCH", "SDA_CONFIG")}
    result = subprocess.run([sys.executable, "-c", LOAD_AND_REPORT, mode], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_backend_info_says_python_s_libtorch_was_already_in_the_process():
    torch = pytest.importorskip("torch")
    report = _load_in_a_fresh_python("torch-first")
    assert report["before"] == [False, False, ""]
    assert report["preloaded"] is True, report
    assert report["found_by"] == "mapped", report
    assert Path(report["path"]).resolve().parent == (Path(torch.__file__).parent / "lib").resolve()


def test_backend_info_says_a_libtorch_loaded_for_the_backend_was_not_in_the_process():
    report = _load_in_a_fresh_python("sda-only")
    assert report["preloaded"] is False, report
    assert report["found_by"] in FOUND_BY and report["found_by"] != "mapped", report


def test_run_workload_and_a_real_cpu_out_of_memory(ctx):
    small = sda.Workload.default()
    assert (small.sample_length, small.out_channels, small.kernel_size) == (48000, 16, 1024)
    small.out_channels = 4
    ctx.run_workload(1, small)
    # 10**9 samples ask the CPU allocator for hundreds of TiB: it fails at once, for real.
    with pytest.raises(sda.OutOfMemoryError, match="DefaultCPUAllocator") as error:
        ctx.run_workload(10**9)
    assert isinstance(error.value, MemoryError)
