//! The out-of-memory classifier against a corpus of real error texts, called through the C ABI
//! (`sda_classify_error`) so that the export itself is tested: NUL-terminated bytes in, status out.
//!
//! The texts are whole messages as the producers print them: PyTorch's allocators, cuDNN, cuBLAS,
//! Metal, HIP, XPU, glibc, with the `RuntimeError: ` prefixes Python adds and the C++ backtraces
//! libtorch appends. Texts marked "captured" were produced by the libtorch 2.13 this project builds
//! against (`scripts/provision.sh`); the others are the wording of the producers' sources and of
//! the reports users post (GPU texts cannot be captured on a machine without the GPU).

use sda::classify::sda_classify_error;
use sda::status::sda_last_error_message;
use sda::status::Status;
use sda_core::classify::{classify_error, failed_allocation_bytes};
use std::ffi::{CStr, CString};

/// Out-of-memory texts: (producer, text).
const OOM: &[(&str, &str)] = &[
    (
        "CUDA caching allocator, torch 2.x, as Python prints it",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
         capacity of 79.11 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process \
         has 78.04 GiB memory in use. Of the allocated memory 76.38 GiB is allocated by PyTorch, and \
         1.12 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large \
         try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See \
         documentation for Memory Management  \
         (https://docs.pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)",
    ),
    (
        "CUDA caching allocator, torch 1.x wording, RuntimeError",
        "RuntimeError: CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total \
         capacity; 130.35 MiB already allocated; 47.06 MiB free; 188.00 MiB reserved in total by \
         PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb to avoid \
         fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF",
    ),
    (
        "CUDA caching allocator, torch 2.0-2.4 class name",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a \
         total capacity of 23.65 GiB of which 3.56 MiB is free. Process 38214 has 23.64 GiB memory in \
         use. Of the allocated memory 22.97 GiB is allocated by PyTorch, and 221.28 MiB is reserved \
         by PyTorch but unallocated.",
    ),
    (
        "CUDA caching allocator from C++ (libtorch), with the backtrace",
        "CUDA out of memory. Tried to allocate 512.00 KiB. GPU 0 has a total capacity of 15.70 GiB \
         of which 320.00 KiB is free. Including non-PyTorch memory, this process has 15.69 GiB memory \
         in use. Of the allocated memory 15.32 GiB is allocated by PyTorch, and 60.14 MiB is reserved \
         by PyTorch but unallocated.\n\
         Exception raised from malloc at /__w/pytorch/pytorch/c10/cuda/CUDACachingAllocator.cpp:1407 \
         (most recent call first):\n\
         frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x98 (0x7f3c2a8f1e48 in \
         /opt/libtorch/lib/libc10.so)\n\
         frame #1: <unknown function> + 0x3a5e2 (0x7f3c2a98b5e2 in /opt/libtorch/lib/libc10_cuda.so)\n\
         frame #2: <unknown function> + 0x3a9a0 (0x7f3c2a98b9a0 in /opt/libtorch/lib/libc10_cuda.so)\n\
         frame #3: at::detail::empty_generic(c10::ArrayRef<long>, c10::Allocator*, \
         c10::DispatchKeySet, c10::ScalarType, std::optional<c10::MemoryFormat>) + 0x5f (0x7f3c13cf0c6f \
         in /opt/libtorch/lib/libtorch_cpu.so)\n",
    ),
    (
        "CUDA caching allocator, per-process fraction (torch.cuda.set_per_process_memory_fraction)",
        "torch.OutOfMemoryError: CUDA out of memory. Allocation was preemptively rejected because it \
         would exceed per_process_memory_fraction limit. Requested size: 1.00 GiB. GPU 0 has a total \
         capacity of 79.11 GiB of which 77.02 GiB is free. Of the allocated memory 39.00 GiB is \
         allocated by PyTorch, with 39.55 GiB allowed; and 12.00 MiB is reserved by PyTorch but \
         unallocated.",
    ),
    (
        "C10_CUDA_CHECK after a failed cudaMalloc outside the caching allocator",
        "RuntimeError: CUDA error: out of memory\n\
         CUDA kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n\
         For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n\
         Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n",
    ),
    (
        "thrust's bad_alloc (cudaErrorMemoryAllocation)",
        "std::bad_alloc: cudaErrorMemoryAllocation: out of memory",
    ),
    (
        "XLA's CUDA driver wrapper",
        "E1123 14:02:11.514285  190224 cuda_driver.cc:628] failed to alloc 17179869184 bytes on \
         host: CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    ),
    (
        "NCCL inside torch.distributed",
        "torch.distributed.DistBackendError: NCCL error in: \
         ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with \
         NCCL_DEBUG=INFO for details), NCCL version 2.19.3\n\
         ncclUnhandledCudaError: Call to CUDA function failed.\n\
         Last error:\n\
         Cuda failure 'out of memory'",
    ),
    (
        "ROCm build of the caching allocator",
        "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total \
         capacity of 23.98 GiB of which 0 bytes is free. Of the allocated memory 23.10 GiB is \
         allocated by PyTorch, and 412.25 MiB is reserved by PyTorch but unallocated. If reserved but \
         unallocated memory is large try setting PYTORCH_HIP_ALLOC_CONF=expandable_segments:True to \
         avoid fragmentation.  See documentation for Memory Management  \
         (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
    ),
    (
        "HIP runtime through C10_HIP_CHECK",
        "RuntimeError: HIP error: hipErrorOutOfMemory\n\
         HIP kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n\
         For debugging consider passing AMD_SERIALIZE_KERNEL=3\n\
         Compile with `TORCH_USE_HIP_DSA` to enable device-side assertions.\n",
    ),
    (
        "XPU caching allocator",
        "torch.OutOfMemoryError: XPU out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
         capacity of 15.11 GiB. Of the allocated memory 12.00 GiB is allocated by PyTorch, and 63.92 \
         MiB is reserved by PyTorch but unallocated. Please use `empty_cache` to release all \
         unoccupied cached memory.",
    ),
    (
        "SYCL / Unified Runtime under XPU",
        "RuntimeError: Native API failed. Native API returns: 39 \
         (UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY)",
    ),
    (
        "MPS allocator, torch 2.0-2.3 (decimal unit names)",
        "RuntimeError: MPS backend out of memory (MPS allocated: 17.79 GB, other allocations: 332.53 \
         MB, max allowed: 18.13 GB). Tried to allocate 108.00 MB on private pool. Use \
         PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations (may \
         cause system failure).",
    ),
    (
        "MPS allocator, later wording",
        "RuntimeError: MPS backend out of memory (MPS allocated: 9.07 GiB, other allocations: 384.00 \
         KiB, max allowed: 9.07 GiB). Tried to allocate 256.00 MiB on shared pool. Use \
         PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations (may \
         cause system failure).",
    ),
    (
        "Metal command buffer (printed by MPSGraph to the console and the exception)",
        "Error: command buffer exited with error status.\n\
         \tThe Metal Performance Shaders operations encoded on it may not have completed.\n\
         \tError: \n\
         \t(null)\n\
         \tInsufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)\n\
         \t<AGXG13XFamilyCommandBuffer: 0x2c5fa8b20>\n\
         \x20   label = <none> \n\
         \x20   device = <AGXG13XDevice: 0x12b06b800>\n\
         \x20       name = Apple M1 Max \n",
    ),
    (
        "cuBLAS handle creation, TORCH_CUDABLAS_CHECK",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    ),
    (
        "cuDNN, AT_CUDNN_CHECK",
        "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    ),
    (
        "cuDNN convolution without workspace (OOM in practice, see src/classify.rs)",
        "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed \
         in a non-contiguous input.",
    ),
    (
        "CPU allocator on Linux, captured (torch.empty(2**42, dtype=torch.uint8))",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't \
         allocate memory: you tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate \
         memory)",
    ),
    (
        "CPU allocator on Linux with TORCH_SHOW_CPP_STACKTRACES=1, captured and shortened",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't \
         allocate memory: you tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate \
         memory)\n\
         C++ CapturedTraceback:\n\
         #5 c10::ThrowEnforceNotMet(char const*, int, char const*, std::__cxx11::basic_string<char, \
         std::char_traits<char>, std::allocator<char> > const&, void const*) from ??:0\n\
         #6 c10::alloc_cpu(unsigned long) from ??:0\n\
         #7 c10::DefaultCPUAllocator::allocate(unsigned long) from :0\n\
         #8 at::detail::empty_generic(c10::ArrayRef<long>, c10::Allocator*, c10::DispatchKeySet, \
         c10::ScalarType, std::optional<c10::MemoryFormat>) from ??:0\n",
    ),
    (
        "CPU allocator on Windows",
        "RuntimeError: [enforce fail at \
         C:\\actions-runner\\_work\\pytorch\\pytorch\\builder\\windows\\pytorch\\c10\\core\\impl\\alloc_cpu.cpp:72] \
         data. DefaultCPUAllocator: not enough memory: you tried to allocate 21474836480 bytes.",
    ),
    (
        "oneDNN primitive creation under an address-space limit (seen in this project's tests)",
        "RuntimeError: could not create a primitive",
    ),
    ("C++ std::bad_alloc::what(), libstdc++", "std::bad_alloc"),
    (
        "std::bad_alloc through pybind11",
        "MemoryError: std::bad_alloc",
    ),
    ("std::bad_alloc::what(), MSVC", "bad allocation"),
    (
        "Python MemoryError with its traceback",
        "Traceback (most recent call last):\n  File \"train.py\", line 12, in <module>\n    buf = \
         bytearray(64 * 1024**3)\nMemoryError\n",
    ),
    (
        "NumPy",
        "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 1.00 TiB for an array with \
         shape (1099511627776,) and data type uint8",
    ),
    (
        "JAX / XLA",
        "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to \
         allocate 17179869184 bytes.",
    ),
    (
        "glibc ENOMEM through Python (fork of a DataLoader worker)",
        "OSError: [Errno 12] Cannot allocate memory",
    ),
];

/// Texts that are not out-of-memory, several of them mentioning memory or devices: (what, text).
const NOT_OOM: &[(&str, &str)] = &[
    (
        "device-side assert",
        "RuntimeError: CUDA error: device-side assert triggered\n\
         CUDA kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n\
         For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n\
         Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n",
    ),
    (
        "illegal memory access (mentions memory, is a kernel bug)",
        "RuntimeError: CUDA error: an illegal memory access was encountered\n\
         CUDA kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n\
         For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n\
         Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n",
    ),
    (
        "shape mismatch with the C++ backtrace, captured",
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)\n\
         Exception raised from meta at \
         /__w/pytorch/pytorch/aten/src/ATen/native/LinearAlgebra.cpp:204 (most recent call first):\n\
         C++ CapturedTraceback:\n\
         #5 c10::Error::Error(c10::SourceLocation, std::__cxx11::basic_string<char, \
         std::char_traits<char>, std::allocator<char> >) from ??:0\n\
         #6 c10::detail::torchCheckFail(char const*, char const*, unsigned int, \
         std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > const&) \
         from ??:0\n\
         #7 at::meta::structured_mm::meta(at::Tensor const&, at::Tensor const&) from ??:0\n",
    ),
    (
        "tensors on two devices",
        "RuntimeError: Expected all tensors to be on the same device, but found at least two \
         devices, cuda:0 and cpu! (when checking argument for argument mat1 in method \
         wrapper_CUDA_addmm)",
    ),
    (
        "embedding index, captured",
        "IndexError: index out of range in self",
    ),
    (
        "tensor index, captured",
        "IndexError: index 10 is out of bounds for dimension 0 with size 3",
    ),
    (
        "bad device index",
        "RuntimeError: CUDA error: invalid device ordinal\n\
         CUDA kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n\
         For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n",
    ),
    (
        "cuDNN bad parameter",
        "RuntimeError: cuDNN error: CUDNN_STATUS_BAD_PARAM",
    ),
    (
        "kernel crash",
        "RuntimeError: CUDA error: unspecified launch failure\n\
         CUDA kernel errors might be asynchronously reported at some other API call, so the \
         stacktrace below might be incorrect.\n",
    ),
    (
        "anomaly detection NaN",
        "RuntimeError: Function 'MulBackward0' returned nan values in its 0th output.",
    ),
    (
        "NaN parameter, captured",
        "ValueError: Expected parameter loc (Tensor of shape (1,)) of distribution Normal(loc: \
         tensor([nan]), scale: tensor([1.])) to satisfy the constraint Real(), but found invalid \
         values:\ntensor([nan])",
    ),
    (
        "oneDNN unsupported layout (the word 'primitive' but not memory), captured from libtorch",
        "RuntimeError: could not create a primitive descriptor for the convolution forward \
         propagation primitive. Run workload with environment variable ONEDNN_VERBOSE=all to get \
         additional diagnostic information.",
    ),
    (
        "no GPU driver, captured",
        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA \
         GPU and installed a driver from http://www.nvidia.com/Download/index.aspx",
    ),
    (
        "dtype mismatch, captured",
        "RuntimeError: expected m1 and m2 to have the same dtype, but got: float != double",
    ),
    (
        "channel mismatch, captured",
        "RuntimeError: Given groups=1, weight of size [4, 3, 3], expected input[1, 2, 10] to have 3 \
         channels, but got 2 channels instead",
    ),
    (
        "device mismatch through tch, captured",
        "Torch(\"Tensor on device cpu is not on the expected device meta!\")",
    ),
    (
        "misaligned address",
        "RuntimeError: CUDA error: misaligned address",
    ),
    (
        "cuBLAS execution failure (not an allocation)",
        "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, \
         opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)`",
    ),
    (
        "MPS without float64",
        "TypeError: Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't \
         support float64. Please use float32 instead.",
    ),
    (
        "size overflow (not a failed allocation), captured",
        "RuntimeError: Storage size calculation overflowed with sizes=[4611686018427387904, \
         4611686018427387904]",
    ),
];

/// Classifies `text` through the C ABI.
fn classify_c(text: &str) -> Status {
    let c = CString::new(text).expect("corpus texts hold no NUL");
    sda_classify_error(c.as_ptr())
}

fn last_error() -> String {
    // SAFETY: sda_last_error_message() is documented never to return NULL and to point to this
    // thread's NUL-terminated message, valid until the next libsda call on this thread; it is copied
    // into a String here, before any other call.
    unsafe { CStr::from_ptr(sda_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn corpus_is_large_enough() {
    assert!(OOM.len() >= 20, "{} OOM texts", OOM.len());
    assert!(NOT_OOM.len() >= 10, "{} non-OOM texts", NOT_OOM.len());
}

#[test]
fn every_oom_text_is_out_of_memory() {
    let wrong: Vec<_> = OOM
        .iter()
        .filter(|(_, text)| classify_c(text) != Status::SDA_ERR_OUT_OF_MEMORY)
        .map(|(what, _)| *what)
        .collect();
    assert!(wrong.is_empty(), "classified as not OOM: {wrong:#?}");
}

#[test]
fn every_other_text_is_a_torch_error() {
    let wrong: Vec<_> = NOT_OOM
        .iter()
        .filter(|(_, text)| classify_c(text) != Status::SDA_ERR_TORCH)
        .map(|(what, _)| *what)
        .collect();
    assert!(wrong.is_empty(), "classified as OOM: {wrong:#?}");
}

#[test]
fn the_c_abi_and_the_core_agree() {
    for (_, text) in OOM.iter().chain(NOT_OOM) {
        assert_eq!(
            classify_c(text),
            Status::from(classify_error(text)),
            "{text}"
        );
    }
}

#[test]
fn classify_null_is_an_error_with_a_message() {
    assert_eq!(
        sda_classify_error(std::ptr::null()),
        Status::SDA_ERR_NULL_POINTER
    );
    assert!(last_error().contains("message"), "{}", last_error());
}

#[test]
fn classify_leaves_the_last_error_alone() {
    // A failure sets the message; classifications afterwards must not overwrite it.
    assert_eq!(
        sda_classify_error(std::ptr::null()),
        Status::SDA_ERR_NULL_POINTER
    );
    let before = last_error();
    assert_eq!(
        classify_c("CUDA out of memory."),
        Status::SDA_ERR_OUT_OF_MEMORY
    );
    assert_eq!(
        classify_c("index out of range in self"),
        Status::SDA_ERR_TORCH
    );
    assert_eq!(last_error(), before);
}

#[test]
fn classify_accepts_text_that_is_not_utf8() {
    // Latin-1 and Windows-1252 bytes around the marker: classified lossily, never rejected.
    let latin1 = b"Fehler in Modell \xe4\xf6\xfc: CUDA out of memory. Tried to allocate 2,00 GiB\0";
    assert_eq!(
        sda_classify_error(latin1.as_ptr().cast()),
        Status::SDA_ERR_OUT_OF_MEMORY
    );
    let other = b"\xff\xfe shape \x93mismatch\x94\0";
    assert_eq!(
        sda_classify_error(other.as_ptr().cast()),
        Status::SDA_ERR_TORCH
    );
}

#[test]
fn classify_from_many_threads() {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..50 {
                    for (_, text) in OOM {
                        assert_eq!(classify_c(text), Status::SDA_ERR_OUT_OF_MEMORY);
                    }
                    for (_, text) in NOT_OOM {
                        assert_eq!(classify_c(text), Status::SDA_ERR_TORCH);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no classification panics");
    }
}

#[test]
fn failed_allocation_bytes_of_the_corpus() {
    let expected: &[(&str, Option<u64>)] = &[
        ("CUDA caching allocator, torch 2.x, as Python prints it", Some(2 << 30)),
        ("CUDA caching allocator, torch 1.x wording, RuntimeError", Some(36 << 20)),
        ("CUDA caching allocator, torch 2.0-2.4 class name", Some(20 << 20)),
        ("CUDA caching allocator from C++ (libtorch), with the backtrace", Some(512 << 10)),
        (
            "CUDA caching allocator, per-process fraction (torch.cuda.set_per_process_memory_fraction)",
            Some(1 << 30),
        ),
        ("ROCm build of the caching allocator", Some(20 << 20)),
        ("XPU caching allocator", Some(2 << 30)),
        ("MPS allocator, torch 2.0-2.3 (decimal unit names)", Some(108 << 20)),
        ("MPS allocator, later wording", Some(256 << 20)),
        (
            "CPU allocator on Linux, captured (torch.empty(2**42, dtype=torch.uint8))",
            Some(4_398_046_511_104),
        ),
        (
            "CPU allocator on Linux with TORCH_SHOW_CPP_STACKTRACES=1, captured and shortened",
            Some(4_398_046_511_104),
        ),
        ("CPU allocator on Windows", Some(21_474_836_480)),
        ("JAX / XLA", Some(17_179_869_184)),
        ("NumPy", Some(1 << 40)),
        ("C10_CUDA_CHECK after a failed cudaMalloc outside the caching allocator", None),
        ("cuBLAS handle creation, TORCH_CUDABLAS_CHECK", None),
        ("C++ std::bad_alloc::what(), libstdc++", None),
    ];
    for (what, bytes) in expected {
        let text = OOM
            .iter()
            .find(|(name, _)| name == what)
            .unwrap_or_else(|| panic!("no corpus entry {what}"))
            .1;
        assert_eq!(failed_allocation_bytes(text), *bytes, "{what}");
    }
    for (what, text) in NOT_OOM {
        assert_eq!(failed_allocation_bytes(text), None, "{what}");
    }
}
