//! Out-of-memory classification of error texts.
//!
//! Hosts (C++ catch blocks, Python `except` clauses) and libsda's own guarded runs hold an
//! exception *text* and need one decision from it: did the device run out of memory (the cure is a
//! smaller batch, `device=cpu` or freeing other GPU work) or is it any other failure (a bug to
//! fix)? No peer library knows every backend's wording, so the table below collects the real texts
//! of PyTorch's allocators (CUDA, HIP, XPU, MPS, CPU), the CUDA math libraries, Metal, oneDNN, the
//! C++ and Python runtimes and XLA.
//!
//! Matching is a case-insensitive substring search over one ASCII-lowercased copy of the text: the
//! texts come from many producers and versions, are wrapped in prefixes (`RuntimeError: `,
//! `[enforce fail at alloc_cpu.cpp:127] err == 0. `) and followed by C++ backtraces, so anchoring
//! or a regular expression would only add ways to miss.

use crate::error::ErrorKind;

/// One out-of-memory marker: a lower-case substring, and a continuation that vetoes the match when
/// it follows the marker directly (for markers that are the prefix of an unrelated text).
struct Marker {
    needle: &'static str,
    not_followed_by: Option<&'static str>,
}

/// A marker that counts wherever it occurs.
const fn m(needle: &'static str) -> Marker {
    Marker {
        needle,
        not_followed_by: None,
    }
}

/// The out-of-memory markers, lower-case. Each names the producer of the text it stands for.
///
/// Texts that contain "memory" and are *not* out-of-memory, and which no marker may catch: `CUDA
/// error: an illegal memory access was encountered` (a kernel bug), `misaligned address`, `Tensor
/// on device cpu is not on the expected device meta!`, oneDNN's `could not create a primitive
/// descriptor for ...` (an unsupported shape or layout, see below).
const OOM_MARKERS: &[Marker] = &[
    // PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp): `CUDA out of memory.
    // Tried to allocate 2.00 GiB. GPU 0 has a total capacity of ...`, and with a per-process
    // fraction set: `CUDA out of memory. Allocation was preemptively rejected because it would
    // exceed per_process_memory_fraction limit. Requested size: ...`.
    m("cuda out of memory"),
    // The preemptive rejection again, in case a host shortens the text to its second sentence.
    m("would exceed per_process_memory_fraction limit"),
    // `cudaGetErrorString(cudaErrorMemoryAllocation)` as PyTorch's C10_CUDA_CHECK prints it:
    // `CUDA error: out of memory` (also NCCL's `Cuda failure 'out of memory'`).
    m("cuda error: out of memory"),
    // The CUDA runtime's enumerator name, printed by tools and by cudaGetErrorName.
    m("cudaerrormemoryallocation"),
    // The CUDA driver API's enumerator name (cuGetErrorName, NVRTC/driver wrappers, JAX).
    m("cuda_error_out_of_memory"),
    // PyTorch's ROCm build (the CUDA allocator hipified): `HIP out of memory. Tried to allocate
    // ...`.
    m("hip out of memory"),
    // The HIP runtime's enumerator names (hipGetErrorName); hipErrorMemoryAllocation is the legacy
    // alias of the same code.
    m("hiperroroutofmemory"),
    m("hiperrormemoryallocation"),
    // PyTorch's XPU caching allocator (c10/xpu/XPUCachingAllocator.cpp): `XPU out of memory. Tried
    // to allocate ...`.
    m("xpu out of memory"),
    // Intel's Unified Runtime and Level Zero under SYCL/XPU:
    // `UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY`, `ZE_RESULT_ERROR_OUT_OF_DEVICE_MEMORY`, and the
    // host-memory variants.
    m("out_of_device_memory"),
    m("out_of_host_memory"),
    // PyTorch's MPS allocator (aten/src/ATen/mps/MPSAllocator.mm): `MPS backend out of memory (MPS
    // allocated: ..., other allocations: ..., max allowed: ...). Tried to allocate ... on private
    // pool.`
    m("mps backend out of memory"),
    // Metal's command-buffer status when a Metal/MPS graph runs out of memory: `Insufficient Memory
    // (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)`.
    m("kiogpucommandbuffercallbackerroroutofmemory"),
    // cuBLAS, as PyTorch's TORCH_CUDABLAS_CHECK prints it: `CUDA error: CUBLAS_STATUS_ALLOC_FAILED
    // when calling `cublasCreate(handle)``.
    m("cublas_status_alloc_failed"),
    // cuDNN, as PyTorch's AT_CUDNN_CHECK prints it: `cuDNN error: CUDNN_STATUS_ALLOC_FAILED`.
    m("cudnn_status_alloc_failed"),
    // cuDNN's NOT_SUPPORTED under torch: PyTorch asks cuDNN for convolution algorithms whose
    // workspace fits the memory the caching allocator can still hand out; when none fits, or a
    // batch makes a tensor exceed cuDNN's 32-bit indexing, the call fails as `cuDNN error:
    // CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.`
    // In practice (PyTorch issues and forums) it almost always goes away with a smaller batch, and
    // a smaller batch is exactly the cure the out-of-memory guidance prescribes: so it counts as
    // OOM.
    m("cudnn_status_not_supported"),
    // The other CUDA math libraries' allocation failures: cuSOLVER/cuSPARSE
    // `*_STATUS_ALLOC_FAILED`, cuFFT `CUFFT_ALLOC_FAILED`.
    m("_status_alloc_failed"),
    m("cufft_alloc_failed"),
    // PyTorch's CPU allocator on Linux/macOS (c10/core/impl/alloc_cpu.cpp): `[enforce fail at
    // alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to
    // allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)`.
    m("defaultcpuallocator: can't allocate memory"),
    // The same allocator on Windows: `DefaultCPUAllocator: not enough memory: you tried to allocate
    // ... bytes.`
    m("defaultcpuallocator: not enough memory"),
    // glibc's strerror(ENOMEM), also as Python's `OSError: [Errno 12] Cannot allocate memory`.
    m("cannot allocate memory"),
    // oneDNN (mkldnn) under memory pressure: primitive creation allocates its scratchpad and JIT
    // code, and PyTorch reports the failure as `could not create a primitive`. The same words begin
    // `could not create a primitive descriptor for the convolution forward propagation primitive`,
    // which is an unsupported shape or layout and not memory, hence the veto.
    Marker {
        needle: "could not create a primitive",
        not_followed_by: Some(" descriptor"),
    },
    // The same under an address-space limit while a primitive runs: its scratchpad is allocated at
    // execution (measured: a training step of a TorchScript conv model under RLIMIT_AS).
    m("could not execute a primitive"),
    // The what() of std::bad_alloc: libstdc++ and libc++ `std::bad_alloc`, MSVC `bad allocation`.
    m("std::bad_alloc"),
    m("bad allocation"),
    // PyTorch's exception classes as Python prints them: `torch.OutOfMemoryError: CUDA out of
    // memory...`, `torch.cuda.OutOfMemoryError: ...`, and the C++ class `c10::OutOfMemoryError`.
    m("outofmemoryerror"),
    // Python's MemoryError (and NumPy's `_ArrayMemoryError: Unable to allocate ...`, a subclass).
    m("memoryerror"),
    // JAX/XLA: `RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.`
    m("resource_exhausted: out of memory"),
    // Any other runtime's plain wording (`HIP error: out of memory`, NNPACK's `Reason: Out of
    // memory.`, TensorFlow's `OOM when allocating` is below). No non-OOM torch text contains it.
    m("out of memory"),
    // TensorFlow/XLA: `OOM when allocating tensor with shape[...]`.
    m("oom when allocating"),
];

/// Whether `lower` (already lower-case) contains `marker` without its veto continuation.
fn matches(lower: &str, marker: &Marker) -> bool {
    match marker.not_followed_by {
        None => lower.contains(marker.needle),
        Some(veto) => lower
            .match_indices(marker.needle)
            .any(|(at, _)| !lower[at + marker.needle.len()..].starts_with(veto)),
    }
}

/// Classifies an error text: [`ErrorKind::OutOfMemory`] when it reports that a device (GPU or CPU)
/// ran out of memory, [`ErrorKind::Torch`] for every other failure.
///
/// Knows the texts of CUDA, HIP, XPU, MPS, Metal, cuBLAS, cuDNN, PyTorch's CPU allocator (Linux and
/// Windows), oneDNN, `std::bad_alloc`, PyTorch's `OutOfMemoryError` classes, Python's `MemoryError`
/// and XLA's `RESOURCE_EXHAUSTED`. Case-insensitive; prefixes such as `RuntimeError: ` and trailing
/// C++ backtraces do not matter. Device-side asserts, shape or device mismatches and `an illegal
/// memory access was encountered` are *not* out-of-memory.
///
/// Allocates one lower-case copy of the text; safe to call from any thread.
pub fn classify_error(message: &str) -> ErrorKind {
    if is_out_of_memory(message) {
        ErrorKind::OutOfMemory
    } else {
        ErrorKind::Torch
    }
}

/// `true` when `message` reports an out-of-memory condition (see [`classify_error`]).
pub fn is_out_of_memory(message: &str) -> bool {
    // ASCII lower-casing keeps byte offsets (the veto check slices by them) and every marker is
    // ASCII.
    let lower = message.to_ascii_lowercase();
    OOM_MARKERS.iter().any(|marker| matches(&lower, marker))
}

/// The phrases that precede the size of the allocation that failed, lower-case.
const SIZE_PREFIXES: &[&str] = &[
    // PyTorch's CUDA, HIP, XPU and MPS allocators: `Tried to allocate 2.00 GiB`.
    "tried to allocate ",
    // PyTorch's CPU allocator: `you tried to allocate 123456 bytes` (caught by the line above too,
    // kept to document the text).
    "you tried to allocate ",
    // The CUDA allocator's preemptive rejection: `Requested size: 2.00 GiB.`
    "requested size: ",
    // XLA: `Out of memory while trying to allocate 17179869184 bytes.`
    "trying to allocate ",
    // NumPy: `Unable to allocate 1.00 TiB for an array with shape ...`.
    "unable to allocate ",
];

/// The number of bytes a failed allocation asked for, read from an out-of-memory text: CPU `you
/// tried to allocate 123456 bytes`, CUDA/HIP/XPU `Tried to allocate 2.00 GiB` (also `MiB`, `KiB`,
/// `1024 bytes`), MPS `Tried to allocate 256.00 MB`, the CUDA preemptive rejection's `Requested
/// size: ...`, XLA's `trying to allocate N bytes`. `None` when the text names no size.
///
/// Units are binary: PyTorch prints sizes divided by powers of 1024 (MPS labels them
/// `KB`/`MB`/`GB`), so `GB` is read as 2^30 too. The allocators round to two decimals, so a size
/// above 1 KiB is exact only to that precision.
pub fn failed_allocation_bytes(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    // The earliest size phrase that parses: the allocation that failed is named first, the device's
    // capacity and free figures come after it.
    let mut best: Option<(usize, u64)> = None;
    for prefix in SIZE_PREFIXES {
        for (at, _) in lower.match_indices(prefix) {
            if best.is_some_and(|(seen, _)| seen <= at) {
                break;
            }
            if let Some(bytes) = parse_size(&lower[at + prefix.len()..]) {
                best = Some((at, bytes));
                break;
            }
        }
    }
    best.map(|(_, bytes)| bytes)
}

/// Parses `<number> <unit>` at the start of `text` (lower-case): `2.00 gib`, `1024 bytes`, `512 b`.
fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let whole: u64 = text[..digits_end].parse().ok()?;
    let mut rest = &text[digits_end..];
    // Up to 9 fraction digits as an integer numerator (more precision than any allocator prints).
    let mut fraction: (u64, u64) = (0, 1);
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        for c in after_dot[..frac_end].bytes().take(9) {
            fraction = (fraction.0 * 10 + u64::from(c - b'0'), fraction.1 * 10);
        }
        rest = &after_dot[frac_end..];
    }
    let rest = rest.trim_start_matches(' ');
    let unit_end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let scale: u64 = match &rest[..unit_end] {
        "b" | "byte" | "bytes" => 1,
        "kib" | "kb" => 1 << 10,
        "mib" | "mb" => 1 << 20,
        "gib" | "gb" => 1 << 30,
        "tib" | "tb" => 1 << 40,
        "pib" | "pb" => 1 << 50,
        _ => return None,
    };
    let whole_bytes = whole.checked_mul(scale)?;
    // Rounded to the nearest byte; u128 so that scale * numerator cannot overflow.
    let fraction_bytes = (u128::from(scale) * u128::from(fraction.0) + u128::from(fraction.1) / 2)
        / u128::from(fraction.1);
    whole_bytes.checked_add(u64::try_from(fraction_bytes).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OOM: ErrorKind = ErrorKind::OutOfMemory;
    const OTHER: ErrorKind = ErrorKind::Torch;

    #[test]
    fn classify_each_marker_family() {
        for text in [
            "CUDA out of memory. Tried to allocate 2.00 GiB",
            "CUDA error: out of memory",
            "CUDA out of memory. Allocation was preemptively rejected because it would exceed \
             per_process_memory_fraction limit. Requested size: 1.00 GiB.",
            "cudaErrorMemoryAllocation",
            "CUDA_ERROR_OUT_OF_MEMORY",
            "HIP out of memory. Tried to allocate 20.00 MiB",
            "hipErrorOutOfMemory",
            "XPU out of memory. Tried to allocate 2.00 GiB",
            "UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY",
            "MPS backend out of memory (MPS allocated: 1.00 GB)",
            "Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
            "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
            "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a \
             non-contiguous input.",
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes. Error \
             code 12 (Cannot allocate memory)",
            "DefaultCPUAllocator: not enough memory: you tried to allocate 123 bytes.",
            "could not create a primitive",
            "std::bad_alloc",
            "torch.OutOfMemoryError: CUDA out of memory.",
            "torch.cuda.OutOfMemoryError",
            "MemoryError",
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.",
        ] {
            assert_eq!(classify_error(text), OOM, "{text}");
        }
    }

    #[test]
    fn classify_rejects_look_alikes() {
        for text in [
            "CUDA error: an illegal memory access was encountered",
            "CUDA error: device-side assert triggered",
            "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 \
             and cpu!",
            "index out of range in self",
            "CUDA error: invalid device ordinal",
            "cuDNN error: CUDNN_STATUS_BAD_PARAM",
            "CUDA error: unspecified launch failure",
            "could not create a primitive descriptor for the convolution forward propagation \
             primitive.",
            "Function 'MulBackward0' returned nan values in its 0th output.",
            "",
        ] {
            assert_eq!(classify_error(text), OTHER, "{text}");
        }
    }

    #[test]
    fn classify_is_case_insensitive_and_ignores_wrapping() {
        assert_eq!(classify_error("RUNTIMEERROR: CUDA OUT OF MEMORY."), OOM);
        assert_eq!(
            classify_error(
                "could not create a primitive descriptor, then could not create a primitive"
            ),
            OOM
        );
        // Non-ASCII text around a marker does not disturb the byte offsets of the veto check.
        assert_eq!(
            classify_error("Fehler ü: could not create a primitive ä descriptor"),
            OOM
        );
    }

    #[test]
    fn failed_allocation_bytes_reads_every_unit() {
        let cases: &[(&str, Option<u64>)] = &[
            (
                "you tried to allocate 123456 bytes. Error code 12",
                Some(123_456),
            ),
            (
                "Tried to allocate 2.00 GiB. GPU 0 has a total capacity",
                Some(2 << 30),
            ),
            ("Tried to allocate 20.00 MiB", Some(20 << 20)),
            ("Tried to allocate 512.00 KiB", Some(512 << 10)),
            ("Tried to allocate 1024 bytes", Some(1024)),
            ("Tried to allocate 1.50 GiB", Some(3 << 29)),
            (
                "Tried to allocate 256.00 MB on private pool",
                Some(256 << 20),
            ),
            ("Tried to allocate 7.50 GB", Some(15 << 29)),
            ("Tried to allocate 3 B", Some(3)),
            ("Requested size: 4.00 GiB. GPU 0", Some(4 << 30)),
            (
                "while trying to allocate 17179869184 bytes.",
                Some(17_179_869_184),
            ),
            ("Unable to allocate 1.00 TiB for an array", Some(1 << 40)),
            ("Tried to allocate more than 1EB memory.", None),
            ("Tried to allocate 12 parsecs", None),
            ("Tried to allocate ", None),
            ("mat1 and mat2 shapes cannot be multiplied", None),
            ("Tried to allocate 99999999999999999999 GiB", None),
        ];
        for (text, expected) in cases {
            assert_eq!(failed_allocation_bytes(text), *expected, "{text}");
        }
    }

    #[test]
    fn failed_allocation_bytes_takes_the_request_not_the_capacity() {
        let text = "HIP out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of \
                    23.98 GiB of which 0 bytes is free.";
        assert_eq!(failed_allocation_bytes(text), Some(20 << 20));
        let text = "MPS backend out of memory (MPS allocated: 17.79 GB, other allocations: 332.53 \
                    MB, max allowed: 18.13 GB). Tried to allocate 256.00 MB on private pool.";
        assert_eq!(failed_allocation_bytes(text), Some(256 << 20));
    }
}
