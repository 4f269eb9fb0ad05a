// Sda: the Swift face of libsda's C API (module CSda, over sda.h).
//
// - Failures throw `SdaError`: the status and the library's message, read on the same thread right
//   after the failing call (the C convention of sda_last_error_message()).
// - `Config` and `Context` are final classes that own one handle each and free it in `deinit`.
// - Guarded runs take Swift closures. A closure that throws never unwinds through libsda (a C
//   function pointer cannot throw): the error is caught in the C callback, an out-of-memory error
//   becomes SDA_ERR_OUT_OF_MEMORY for libsda's recovery, and any other error is rethrown to the caller
//   once the run has returned.
//
// The C enums are spelled here by number through their C constants: sda.h declares each status type
// both as an enum tag and as an int32_t typedef of the same name, which Swift imports as two types.
import CSda
import Foundation

// MARK: - Status and errors

/// A libsda status code (`sda_status`).
public struct Status: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    fileprivate init<C: RawRepresentable>(_ constant: C) where C.RawValue: BinaryInteger {
        rawValue = Int32(constant.rawValue)
    }

    public static let ok = Status(SDA_OK)
    public static let invalidArgument = Status(SDA_ERR_INVALID_ARGUMENT)
    public static let nullPointer = Status(SDA_ERR_NULL_POINTER)
    public static let invalidUTF8 = Status(SDA_ERR_INVALID_UTF8)
    public static let bufferTooSmall = Status(SDA_ERR_BUFFER_TOO_SMALL)
    public static let unknownKey = Status(SDA_ERR_UNKNOWN_KEY)
    public static let invalidValue = Status(SDA_ERR_INVALID_VALUE)
    public static let parse = Status(SDA_ERR_PARSE)
    public static let io = Status(SDA_ERR_IO)
    public static let deviceUnavailable = Status(SDA_ERR_DEVICE_UNAVAILABLE)
    public static let backendUnavailable = Status(SDA_ERR_BACKEND_UNAVAILABLE)
    public static let outOfMemory = Status(SDA_ERR_OUT_OF_MEMORY)
    public static let torch = Status(SDA_ERR_TORCH)
    public static let cancelled = Status(SDA_ERR_CANCELLED)
    public static let panic = Status(SDA_ERR_PANIC)
    public static let invalidHandle = Status(SDA_ERR_INVALID_HANDLE)
    public static let unsupported = Status(SDA_ERR_UNSUPPORTED)

    /// The C name (`SDA_ERR_OUT_OF_MEMORY`).
    public var description: String { String(cString: sda_status_str(rawValue)) }
}

/// A failed libsda call: its status and the library's message. After a guarded run, `report` holds
/// what happened (for an out-of-memory error: the guidance and a batch that fits).
public struct SdaError: Error, CustomStringConvertible {
    public let status: Status
    public let message: String
    public var report: RunReport?

    public init(status: Status, message: String, report: RunReport? = nil) {
        self.status = status
        self.message = message
        self.report = report
    }

    public var description: String { "\(status): \(message)" }

    /// The error of a failed call, with this thread's last libsda message.
    static func last(_ status: Int32) -> SdaError {
        SdaError(status: Status(rawValue: status), message: Sda.lastErrorMessage)
    }
}

/// Throws unless `status` is SDA_OK.
@inline(__always)
func check(_ status: Int32) throws {
    if status != Status.ok.rawValue { throw SdaError.last(status) }
}

/// A C struct initialised by its init function with this program's own size (the header's rule for
/// structs that grow: `struct_size` set, defaults for options, zeros for results). Cannot fail: the
/// size is this program's own.
func initialised<T>(_ initialise: (UnsafeMutablePointer<T>?, Int) -> Int32, _ blank: T) -> T {
    var value = blank
    _ = initialise(&value, MemoryLayout<T>.stride)
    return value
}

/// A NUL-terminated fixed-size C array (imported as a tuple) as a String.
func string<T>(fromFixed tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[..<end], as: UTF8.self)
    }
}

// MARK: - Library-wide functions

public enum Sda {
    /// The library's version, "MAJOR.MINOR.PATCH".
    public static var version: String { String(cString: sda_version()) }

    /// This thread's last libsda error message.
    public static var lastErrorMessage: String { String(cString: sda_last_error_message()) }

    /// Sets this thread's libsda error message (what a work callback does before it reports a failure).
    public static func setErrorMessage(_ message: String) {
        _ = sda_set_error_message(message)
    }

    /// `.outOfMemory` when an error text reports that a device ran out of memory, else `.torch`.
    public static func classify(_ message: String) -> Status {
        Status(rawValue: sda_classify_error(message))
    }

    /// `.outOfMemory` or `.torch` for a Swift error, by its type name and description.
    public static func classify(_ error: Error) -> Status {
        if let sda = error as? SdaError { return sda.status }
        return classify("\(type(of: error)): \(error)")
    }

    /// Whether `classify(message)` says out-of-memory.
    public static func isOutOfMemory(_ message: String) -> Bool { classify(message) == .outOfMemory }

    /// The loaded torch backend (`loaded` false while none is); never loads anything.
    public static func backendInfo() throws -> BackendDetails {
        var details = initialised(sda_backend_details_init, sda_backend_details())
        try check(sda_backend_info(&details))
        return BackendDetails(details)
    }

    /// Sends libsda's log messages to `handler` (called on whichever thread logs), or stops with nil.
    public static func setLogHandler(_ handler: ((LogLevel, String) -> Void)?) {
        LogSink.lock.lock()
        defer { LogSink.lock.unlock() }
        LogSink.handler = handler
        if handler != nil {
            _ = sda_set_log_callback({ _, level, message in
                LogSink.lock.lock()
                let handler = LogSink.handler
                LogSink.lock.unlock()
                handler?(LogLevel(rawValue: level) ?? .debug, message.map { String(cString: $0) } ?? "")
            }, nil)
        } else {
            _ = sda_set_log_callback(nil, nil)
        }
    }
}

/// Severity of a log message (`sda_log_level`).
public enum LogLevel: Int32, Sendable {
    case error = 1, warn = 2, info = 3, debug = 4
}

private enum LogSink {
    static let lock = NSLock()
    nonisolated(unsafe) static var handler: ((LogLevel, String) -> Void)?
}

// MARK: - Values

/// A family of compute devices (`sda_device_kind`).
public enum DeviceKind: Int32, Sendable, CustomStringConvertible {
    case cpu = 0, cuda = 1, mps = 2
    public var description: String { String(cString: sda_device_kind_str(rawValue)) }
}

/// The outcome of `Context.select`.
public struct Selection: Sendable {
    public let kind: DeviceKind
    public let index: Int32
    public let fellBack: Bool
    public let device: String
    public let requested: String
    public let reason: String

    init(_ c: sda_selection) {
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        index = c.index
        fellBack = c.fell_back != 0
        device = string(fromFixed: c.device)
        requested = string(fromFixed: c.requested)
        reason = string(fromFixed: c.reason)
    }
}

/// One device.
public struct DeviceDetails: Sendable {
    public let kind: DeviceKind
    public let index: Int32
    public let device: String
    public let name: String
    public let memoryTotal: UInt64
    public let memoryFree: UInt64
    public let computeCapability: (major: Int32, minor: Int32)
    public let cudaRuntimeVersion: String
    public let cudaDriverVersion: String
    public let bf16Supported: Bool
    public let fp16Supported: Bool
    public let deviceCount: UInt32

    init(_ c: sda_device_details) {
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        index = c.index
        device = string(fromFixed: c.device)
        name = string(fromFixed: c.name)
        memoryTotal = c.memory_total
        memoryFree = c.memory_free
        computeCapability = (c.compute_capability_major, c.compute_capability_minor)
        cudaRuntimeVersion = string(fromFixed: c.cuda_runtime_version)
        cudaDriverVersion = string(fromFixed: c.cuda_driver_version)
        bf16Supported = c.bf16_supported != 0
        fp16Supported = c.fp16_supported != 0
        deviceCount = c.device_count
    }
}

/// Memory of the selected device, in bytes.
public struct MemoryFigures: Sendable {
    public let allocated, reserved, peak, free, total, budget, processResident: UInt64

    init(_ c: sda_memory_figures) {
        allocated = c.allocated
        reserved = c.reserved
        peak = c.peak
        free = c.free
        total = c.total
        budget = c.budget
        processResident = c.process_resident
    }
}

/// What the torch backend module loaded.
public struct BackendDetails: Sendable {
    public let loaded: Bool
    public let cudaBuild: Bool
    public let modulePath: String
    public let libtorchPath: String
    public let libtorchVersion: String
    public let builtLibtorchVersion: String
    public let libtorchCudaVersion: String
    /// The libtorch was already in the process before the backend was opened (the host's own).
    public let libtorchPreloaded: Bool
    /// How the libtorch was found: `mapped`, `SDA_LIBTORCH`, `hardware.libtorch`, `bundled` or
    /// `built`; empty while none is loaded, or for a backend module that records no libtorch.
    public let libtorchFoundBy: String

    init(_ c: sda_backend_details) {
        loaded = c.loaded != 0
        cudaBuild = c.cuda_build != 0
        modulePath = string(fromFixed: c.module_path)
        libtorchPath = string(fromFixed: c.libtorch_path)
        libtorchVersion = string(fromFixed: c.libtorch_version)
        builtLibtorchVersion = string(fromFixed: c.built_libtorch_version)
        libtorchCudaVersion = string(fromFixed: c.libtorch_cuda_version)
        libtorchPreloaded = c.libtorch_preloaded != 0
        libtorchFoundBy = string(fromFixed: c.libtorch_found_by)
    }
}

/// What happened in a guarded run.
public struct RunReport: Sendable {
    public let status: Status
    public let kind: DeviceKind
    public let index: Int32
    public let attemptedBatch, finalBatch, suggestedBatch, accumulationSteps, attempts, oomAttempts: UInt32
    public let measured: Bool
    public let peakBytes, memoryBefore, memoryAfter, budget, failedAllocationBytes: UInt64
    public let guidance: String

    init(_ c: sda_run_report) {
        status = Status(rawValue: c.status)
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        index = c.index
        attemptedBatch = c.attempted_batch
        finalBatch = c.final_batch
        suggestedBatch = c.suggested_batch
        accumulationSteps = c.accumulation_steps
        attempts = c.attempts
        oomAttempts = c.oom_attempts
        measured = c.measured != 0
        peakBytes = c.peak_bytes
        memoryBefore = c.memory_before
        memoryAfter = c.memory_after
        budget = c.budget
        failedAllocationBytes = c.failed_allocation_bytes
        guidance = string(fromFixed: c.guidance)
    }
}

/// Shape of the built-in conv1d workload; `Workload()` has the library's defaults (the seeds' benchmark).
public struct Workload: Sendable {
    public var channels, sampleLength, outChannels, kernelSize, padding: UInt32
    public var withBackward: Bool

    public init() {
        let c = initialised(sda_workload_init, sda_workload())
        channels = c.channels
        sampleLength = c.sample_length
        outChannels = c.out_channels
        kernelSize = c.kernel_size
        padding = c.padding
        withBackward = c.with_backward != 0
    }

    var c: sda_workload {
        var c = initialised(sda_workload_init, sda_workload())  // sets struct_size
        c.channels = channels
        c.sample_length = sampleLength
        c.out_channels = outChannels
        c.kernel_size = kernelSize
        c.padding = padding
        c.with_backward = withBackward ? 1 : 0
        return c
    }
}

/// Why a batch probe stopped (`sda_probe_stop`).
public enum ProbeStop: Int32, Sendable {
    case budget = 0, maxBatch = 1, outOfMemory = 2, cancelled = 3
}

/// Progress of a batch probe after each run.
public struct ProbeProgress: Sendable {
    public let batch: UInt32
    public let ok, oom: Bool
    public let peakBytes, predictedBytes: UInt64
    public let elapsedMs: Double
    public let runs, bestBatch: UInt32
    public let budgetBytes: UInt64

    init(_ c: sda_probe_progress) {
        batch = c.batch
        ok = c.ok != 0
        oom = c.oom != 0
        peakBytes = c.peak_bytes
        predictedBytes = c.predicted_bytes
        elapsedMs = c.elapsed_ms
        runs = c.runs
        bestBatch = c.best_batch
        budgetBytes = c.budget_bytes
    }
}

/// The outcome of a batch probe: `maxBatch` ran within the budget; `recommendedBatch` keeps the margin.
public struct ProbeResult: Sendable {
    public let maxBatch, recommendedBatch, runs, oomRuns: UInt32
    public let stop: ProbeStop
    public let capped: Bool
    public let fixedBytes, perSampleBytes: Double
    public let predictedPeakBytes, measuredPeakBytes, budgetBytes, marginBytes: UInt64
    public let elapsedMs: Double

    init(_ c: sda_probe_result) {
        maxBatch = c.max_batch
        recommendedBatch = c.recommended_batch
        runs = c.runs
        oomRuns = c.oom_runs
        stop = ProbeStop(rawValue: c.stop) ?? .budget
        capped = c.capped != 0
        fixedBytes = c.fixed_bytes
        perSampleBytes = c.per_sample_bytes
        predictedPeakBytes = c.predicted_peak_bytes
        measuredPeakBytes = c.measured_peak_bytes
        budgetBytes = c.budget_bytes
        marginBytes = c.margin_bytes
        elapsedMs = c.elapsed_ms
    }
}

/// How workers are placed on devices (`sda_plan_strategy`).
public enum PlanStrategy: Int32, Sendable {
    case cpu = 0, singleGPU = 1, multiGPU = 2
}

/// The launcher whose variables a worker plan read (`sda_launcher`).
public enum Launcher: Int32, Sendable {
    case none = 0, torchrun = 1, slurm = 2
}

/// Where one worker runs and the environment to start it with (`env`: NAME=value, in order).
public struct WorkerPlan: Sendable {
    public let strategy: PlanStrategy
    public let kind: DeviceKind
    public let index: Int32
    public let device: String
    public let workers, workerID, gpuCount: UInt32
    public let rank, localRank: Int32
    public let worldSize, masterPort: UInt32
    public let masterAddr, distributedBackend: String
    public let launcher: Launcher
    public let reason: String
    public let env: [(name: String, value: String)]

    init(_ c: sda_worker_plan, env: String) {
        strategy = PlanStrategy(rawValue: c.strategy) ?? .cpu
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        index = c.index
        device = string(fromFixed: c.device)
        workers = c.workers
        workerID = c.worker_id
        gpuCount = c.gpu_count
        rank = c.rank
        localRank = c.local_rank
        worldSize = c.world_size
        masterPort = c.master_port
        masterAddr = string(fromFixed: c.master_addr)
        distributedBackend = string(fromFixed: c.distributed_backend)
        launcher = Launcher(rawValue: c.launcher) ?? .none
        reason = string(fromFixed: c.reason)
        self.env = env.split(separator: "\n").map { line in
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
    }
}

/// A configuration recommended for the selected device.
public struct Recommendation: Sendable {
    public let kind: DeviceKind
    public let device: String
    public let memoryTotal: UInt64
    public let batchSize: UInt32
    public let batchFromProbe, gradientCheckpointing: Bool
    public let blocks, channels: UInt32
    public let tierLabel, batchReason: String
    public let adviceGiven: Bool
    public let memoryStrategy: String
    public let memoryFraction: Double
    public let memoryReason: String

    init(_ c: sda_recommendation) {
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        device = string(fromFixed: c.device)
        memoryTotal = c.memory_total
        batchSize = c.batch_size
        batchFromProbe = c.batch_from_probe != 0
        gradientCheckpointing = c.gradient_checkpointing != 0
        blocks = c.blocks
        channels = c.channels
        tierLabel = string(fromFixed: c.tier_label)
        batchReason = string(fromFixed: c.batch_reason)
        adviceGiven = c.advice_given != 0
        memoryStrategy = string(fromFixed: c.memory_strategy)
        memoryFraction = c.memory_fraction
        memoryReason = string(fromFixed: c.memory_reason)
    }
}

/// Severity of a problem (`sda_severity`).
public enum Severity: Int32, Sendable, Comparable {
    case info = 0, warning = 1, error = 2
    public static func < (a: Severity, b: Severity) -> Bool { a.rawValue < b.rawValue }
}

/// A problem of the environment, with how to fix it.
public struct Problem: Sendable {
    public let severity: Severity
    public let code, message, fix: String

    init(_ c: sda_problem) {
        severity = Severity(rawValue: c.severity) ?? .error
        code = string(fromFixed: c.code)
        message = string(fromFixed: c.message)
        fix = string(fromFixed: c.fix)
    }
}

/// A progress closure of a probe, reached from the C callback through `user_data`.
final class ProgressBox {
    let body: (ProbeProgress) -> Bool
    init(_ body: @escaping (ProbeProgress) -> Bool) { self.body = body }
}

// MARK: - Handles

/// Reads a string through an snprintf-style C function (size query first, then the value).
func readString(_ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> Int32) throws -> String {
    var needed = 0
    var status = call(nil, 0, &needed)
    while true {
        if status != Status.ok.rawValue && status != Status.bufferTooSmall.rawValue { throw SdaError.last(status) }
        var buffer = [CChar](repeating: 0, count: max(needed, 1))
        status = buffer.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &needed) }
        if status == Status.ok.rawValue { return String(cString: buffer) }
    }
}

/// A libsda configuration (TOML). Freed when the last reference goes.
public final class Config: @unchecked Sendable {
    let handle: OpaquePointer

    /// The built-in defaults, `$SDA_CONFIG` and `$SDA_DEVICE`.
    public convenience init() throws {
        var handle: OpaquePointer?
        try check(sda_config_new(&handle))
        self.init(handle: handle!)
    }

    /// Parses TOML text.
    public convenience init(toml: String) throws {
        var handle: OpaquePointer?
        try check(sda_config_load_str(toml, &handle))
        self.init(handle: handle!)
    }

    /// Reads a TOML file.
    public convenience init(path: String) throws {
        var handle: OpaquePointer?
        try check(sda_config_load(path, &handle))
        self.init(handle: handle!)
    }

    init(handle: OpaquePointer) { self.handle = handle }

    deinit { _ = sda_config_free(handle) }

    /// A value by dotted key, as plain text.
    public func get(_ key: String) throws -> String {
        try readString { sda_config_get(handle, key, $0, $1, $2) }
    }

    /// Sets a value by dotted key from plain text (validated; the message names the key on error).
    public func set(_ key: String, _ value: String) throws {
        try check(sda_config_set(handle, key, value))
    }

    /// Saves atomically.
    public func save(to path: String) throws {
        try check(sda_config_save(handle, path))
    }

    /// The whole configuration as TOML text.
    public func toml() throws -> String {
        try readString { sda_config_to_string(handle, $0, $1, $2) }
    }
}

/// A snapshot of a configuration and the device selected under it; may be shared by threads.
public final class Context: @unchecked Sendable {
    let handle: OpaquePointer

    /// A context from `config`, or from `Config()` when nil.
    public init(config: Config? = nil) throws {
        var handle: OpaquePointer?
        try check(sda_context_new(config?.handle, &handle))
        self.handle = handle!
    }

    deinit { _ = sda_context_free(handle) }

    /// Selects `auto`, `cpu`, `cuda`, `cuda:N` or `mps` (nil: the config's `hardware.device`).
    @discardableResult
    public func select(_ preference: String? = nil) throws -> Selection {
        var out = initialised(sda_selection_init, sda_selection())
        if let preference {
            try check(sda_select_device(handle, preference, &out))
        } else {
            try check(sda_select_device(handle, nil, &out))
        }
        return Selection(out)
    }

    /// The selected device, free memory measured now.
    public func deviceInfo() throws -> DeviceDetails {
        var out = initialised(sda_device_details_init, sda_device_details())
        try check(sda_device_info(handle, &out))
        return DeviceDetails(out)
    }

    /// Every device of the machine: the CPU first, then CUDA devices, then MPS.
    public func listDevices() throws -> [DeviceDetails] {
        var count = 0
        var status = sda_list_devices(handle, nil, 0, &count)
        while true {
            if status != Status.ok.rawValue && status != Status.bufferTooSmall.rawValue { throw SdaError.last(status) }
            var devices = [sda_device_details](repeating: initialised(sda_device_details_init, sda_device_details()), count: max(count, 1))
            status = devices.withUnsafeMutableBufferPointer { sda_list_devices(handle, $0.baseAddress, $0.count, &count) }
            if status == Status.ok.rawValue { return devices.prefix(count).map(DeviceDetails.init) }
        }
    }

    /// Memory figures of the selected device.
    public func memoryInfo() throws -> MemoryFigures {
        var out = initialised(sda_memory_figures_init, sda_memory_figures())
        try check(sda_memory_info(handle, &out))
        return MemoryFigures(out)
    }

    /// Returns cached device memory to the driver.
    public func clearCache() throws { try check(sda_clear_cache(handle)) }

    /// Resets the peak figure to the current allocation.
    public func resetPeak() throws { try check(sda_reset_peak(handle)) }

    /// Loads the torch backend now (once per process) and describes it.
    @discardableResult
    public func loadBackend() throws -> BackendDetails {
        try check(sda_backend_load(handle))
        return try Sda.backendInfo()
    }

    /// Runs the built-in workload once with `batch` samples; a real allocation failure throws
    /// `SdaError` with status `.outOfMemory` and libtorch's message.
    public func runWorkload(batch: UInt32, workload: Workload? = nil) throws {
        if var c = workload?.c {
            try check(sda_run_workload(handle, &c, batch))
        } else {
            try check(sda_run_workload(handle, nil, batch))
        }
    }

    /// Runs `body` under libsda's guard. An out-of-memory error inside it (`SdaError` with
    /// `.outOfMemory`, or any error whose text libsda classifies as one) is recovered from after
    /// `body` has returned, and thrown as `SdaError(.outOfMemory)` whose `report` has the guidance
    /// and a suggested batch (`batchSize` says which batch `body` attempts). Other errors are
    /// rethrown unchanged.
    @discardableResult
    public func guardedRun(batchSize: UInt32 = 0, budgetBytes: UInt64 = 0, workID: UInt64 = 0,
                           _ body: () throws -> Void) throws -> RunReport {
        var options = initialised(sda_guard_options_init, sda_guard_options())
        options.batch_size = batchSize
        options.budget_bytes = budgetBytes
        options.work_id = workID
        return try withoutActuallyEscaping(body) { body in
            let call = Call { _, _ in try body() }
            return try call.run { userData, report in
                sda_guarded_run(handle, { userData in
                    Unmanaged<Call>.fromOpaque(userData!).takeUnretainedValue().invoke(0, 0)
                }, userData, &options, report)
            }
        }
    }

    /// Runs `body(batch, accumulationSteps)` from `batchSize` down, retrying with a batch chosen from
    /// the measured memory after each out-of-memory error; `report.finalBatch` is the batch that fit.
    @discardableResult
    public func guardedRunBatched(batchSize: UInt32, minBatch: UInt32 = 1, maxAttempts: UInt32 = 8,
                                  keepEffectiveBatch: Bool = false, budgetBytes: UInt64 = 0, workID: UInt64 = 0,
                                  _ body: (UInt32, UInt32) throws -> Void) throws -> RunReport {
        var options = initialised(sda_guard_options_init, sda_guard_options())
        options.batch_size = batchSize
        options.min_batch = minBatch
        options.max_attempts = maxAttempts
        options.keep_effective_batch = keepEffectiveBatch ? 1 : 0
        options.budget_bytes = budgetBytes
        options.work_id = workID
        return try withoutActuallyEscaping(body) { body in
            let call = Call(body)
            return try call.run { userData, report in
                sda_guarded_run_batched(handle, { userData, batch, steps in
                    Unmanaged<Call>.fromOpaque(userData!).takeUnretainedValue().invoke(batch, steps)
                }, userData, &options, report)
            }
        }
    }
}

extension Context {
    /// Plans where worker `workerID` of `workers` runs (`auto`, `cpu`, `single_gpu`, `multi_gpu`; 0
    /// workers = the strategy's default) and the environment to start it with. Launches nothing.
    public func planWorkers(strategy: String = "auto", workers: UInt32 = 0, workerID: UInt32 = 0) throws -> WorkerPlan {
        var plan = initialised(sda_worker_plan_init, sda_worker_plan())
        let env = try readString { sda_plan_workers(handle, strategy, workers, workerID, &plan, $0, $1, $2) }
        return WorkerPlan(plan, env: env)
    }

    /// The tier for the selected device's memory, and with `parameters` > 0 a memory strategy for a
    /// model of that size. Changes nothing.
    public func recommend(parameters: UInt64 = 0) throws -> Recommendation {
        var out = initialised(sda_recommendation_init, sda_recommendation())
        try check(sda_recommend(handle, parameters, &out))
        return Recommendation(out)
    }

    /// The report as text (essential, or everything when `verbose`).
    public func report(verbose: Bool = false) throws -> String {
        try readString { sda_report(handle, verbose ? 1 : 0, $0, $1, $2) }
    }

    /// The report's facts as JSON text (layout: docs/report.schema.json).
    public func reportJSON(verbose: Bool = false) throws -> String {
        try readString { sda_report_json(handle, verbose ? 1 : 0, $0, $1, $2) }
    }

    /// Every problem of the environment with a severity and a fix, worst first; changes nothing.
    public func validateEnvironment(loadBackend: Bool = false) throws -> [Problem] {
        var count = 0
        var status = sda_validate_environment(handle, loadBackend, nil, 0, &count)
        while true {
            if status != Status.ok.rawValue && status != Status.bufferTooSmall.rawValue { throw SdaError.last(status) }
            var problems = [sda_problem](repeating: initialised(sda_problem_init, sda_problem()), count: max(count, 1))
            status = problems.withUnsafeMutableBufferPointer { sda_validate_environment(handle, loadBackend, $0.baseAddress, $0.count, &count) }
            if status == Status.ok.rawValue { return problems.prefix(count).map(Problem.init) }
        }
    }

    /// Finds the largest batch of the built-in workload (`workload`, nil: the seeds' conv1d) that fits
    /// the memory budget on the selected device. `progress` is called after every run; returning
    /// false cancels (`SdaError` with `.cancelled`). `saveTo` stores the recommended batch in that
    /// configuration's `hardware.max_batch_size`. `startBatch` is the first batch to run, one known to
    /// fit (0: `minBatch`). Zero means the library's default for each number.
    public func probeBatch(workload: Workload? = nil, minBatch: UInt32 = 0, startBatch: UInt32 = 0, maxBatch: UInt32 = 0,
                           maxRuns: UInt32 = 0,
                           budgetBytes: UInt64 = 0, marginBytes: UInt64 = 0, saveTo: Config? = nil,
                           progress: ((ProbeProgress) -> Bool)? = nil) throws -> ProbeResult {
        var shape = (workload ?? Workload()).c
        return try withUnsafePointer(to: &shape) { shape in
            try probe(minBatch, startBatch, maxBatch, maxRuns, budgetBytes, marginBytes, saveTo, progress, work: nil) { options in
                options.workload = shape
            }
        }
    }

    /// Finds the largest batch of the host's own work that fits: `work(batch)` runs it once; an
    /// out-of-memory error inside it marks the batch as not fitting, any other error stops the probe
    /// and is rethrown.
    public func probeBatch(minBatch: UInt32 = 0, startBatch: UInt32 = 0, maxBatch: UInt32 = 0,
                           maxRuns: UInt32 = 0,
                           budgetBytes: UInt64 = 0, marginBytes: UInt64 = 0, saveTo: Config? = nil,
                           progress: ((ProbeProgress) -> Bool)? = nil,
                           _ work: (UInt32) throws -> Void) throws -> ProbeResult {
        try withoutActuallyEscaping(work) { work in
            let call = Call { batch, _ in try work(batch) }
            return try withExtendedLifetime(call) {
                try probe(minBatch, startBatch, maxBatch, maxRuns, budgetBytes, marginBytes, saveTo, progress, work: call) { options in
                    options.custom_workload = { userData, batch in
                        Unmanaged<Call>.fromOpaque(userData!).takeUnretainedValue().invoke(batch, 1)
                    }
                    options.workload_user_data = Unmanaged.passUnretained(call).toOpaque()
                }
            }
        }
    }

    private func probe(_ minBatch: UInt32, _ startBatch: UInt32, _ maxBatch: UInt32, _ maxRuns: UInt32, _ budgetBytes: UInt64,
                       _ marginBytes: UInt64, _ saveTo: Config?, _ progress: ((ProbeProgress) -> Bool)?,
                       work: Call?, configure: (inout sda_probe_options) -> Void) throws -> ProbeResult {
        var options = initialised(sda_probe_options_init, sda_probe_options())
        if minBatch != 0 { options.min_batch = minBatch }
        options.start_batch = startBatch
        if maxBatch != 0 { options.max_batch = maxBatch }
        if maxRuns != 0 { options.max_runs = maxRuns }
        options.budget_bytes = budgetBytes
        if marginBytes != 0 { options.margin_bytes = marginBytes }
        options.save_to = saveTo?.handle
        configure(&options)
        let box = progress.map(ProgressBox.init)
        if let box {
            options.progress = { userData, progress in
                Unmanaged<ProgressBox>.fromOpaque(userData!).takeUnretainedValue().body(ProbeProgress(progress!.pointee))
            }
            options.progress_user_data = Unmanaged.passUnretained(box).toOpaque()
        }
        var result = initialised(sda_probe_result_init, sda_probe_result())
        let status = withExtendedLifetime(box) { sda_probe_batch(handle, &options, &result) }
        let message = status == Status.ok.rawValue ? "" : Sda.lastErrorMessage
        if let error = work?.error { throw error }
        if status != Status.ok.rawValue { throw SdaError(status: Status(rawValue: status), message: message) }
        return ProbeResult(result)
    }
}

/// A Swift closure running inside a guarded run or a probe, reached from the C callback through
/// `user_data`.
final class Call {
    let body: (UInt32, UInt32) throws -> Void
    var error: Error?

    init(_ body: @escaping (UInt32, UInt32) throws -> Void) { self.body = body }

    /// Called by libsda; must not throw (it cannot: C has no unwinding for Swift errors).
    func invoke(_ batch: UInt32, _ steps: UInt32) -> Int32 {
        do {
            try body(batch, steps)
            return Status.ok.rawValue
        } catch {
            let status = Sda.classify(error)
            Sda.setErrorMessage((error as? SdaError)?.message ?? String(describing: error))
            // Out-of-memory errors are not kept: libsda's recovery runs after this return, and the
            // error may hold what the failed attempt allocated.
            if status != .outOfMemory { self.error = error }
            return status.rawValue
        }
    }

    /// Calls `start(user_data, &report)` and turns its status into a report or a thrown error.
    func run(_ start: (UnsafeMutableRawPointer, UnsafeMutablePointer<sda_run_report>) -> Int32) throws -> RunReport {
        var report = initialised(sda_run_report_init, sda_run_report())
        let status = withExtendedLifetime(self) { start(Unmanaged.passUnretained(self).toOpaque(), &report) }
        let message = status == Status.ok.rawValue ? "" : Sda.lastErrorMessage
        let result = RunReport(report)
        if let error { throw error }
        if status != Status.ok.rawValue {
            throw SdaError(status: Status(rawValue: status), message: result.guidance.isEmpty ? message : result.guidance, report: result)
        }
        return result
    }
}

// MARK: - A model file as the workload

/// Element type of a model's input (`sda_dtype`).
public enum Dtype: Int32, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, bf16 = 2

    public var description: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .bf16: return "bf16"
        }
    }
}

/// The kind of model file that was loaded (`sda_model_format`).
public enum ModelFormat: Int32, Sendable {
    /// A TorchScript module (`torch.jit.save`).
    case torchscript = 0
    /// An AOTInductor package (`.pt2`), inference only.
    case aoti = 1
}

/// What a loaded model is: its format, the device it was loaded on, its input and its sizes in bytes
/// (`residentBytes` = parameters + buffers, held while it is loaded).
public struct ModelDetails: Sendable {
    public let format: ModelFormat
    public let kind: DeviceKind
    public let index: Int32
    public let dtype: Dtype
    public let train: Bool
    public let paramBytes, bufferBytes, residentBytes, workID: UInt64

    init(_ c: sda_model_details) {
        format = ModelFormat(rawValue: c.format) ?? .torchscript
        kind = DeviceKind(rawValue: c.kind) ?? .cpu
        index = c.index
        dtype = Dtype(rawValue: c.dtype) ?? .f32
        train = c.train != 0
        paramBytes = c.param_bytes
        bufferBytes = c.buffer_bytes
        residentBytes = c.resident_bytes
        workID = c.work_id
    }
}

/// A model file (a TorchScript module, or an AOTInductor `.pt2` package for inference) loaded on a
/// context's selected device, run with random input `[batch] + inputShape` (`Context.loadModel`).
/// Freed in `deinit`. It keeps its context's state alive: it still runs after the `Context` is
/// gone, but `Context.probeBatch(model:)` and `Context.guardedRunModel` need the context that loaded
/// it.
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer
    /// The model file.
    public let path: String
    /// Shape of one sample.
    public let inputShape: [UInt64]

    init(context: Context, path: String, inputShape: [UInt64], dtype: Dtype, train: Bool) throws {
        var options = initialised(sda_model_options_init, sda_model_options())
        options.input_rank = inputShape.count
        options.dtype = dtype.rawValue
        options.train = train ? 1 : 0
        var handle: OpaquePointer?
        let status = path.withCString { cPath in
            inputShape.withUnsafeBufferPointer { shape in
                options.path = cPath
                options.input_shape = shape.baseAddress
                return sda_model_load(context.handle, &options, &handle)
            }
        }
        try check(status)
        self.handle = handle!
        self.path = path
        self.inputShape = inputShape
    }

    deinit { _ = sda_model_free(handle) }

    /// Runs the model once with `batch` samples (inference, or one training step when loaded with
    /// `train`). A real allocation failure throws `SdaError` with `.outOfMemory`; a batch, shape or
    /// dtype the model does not accept throws `.invalidArgument` with the model's message.
    public func run(batch: UInt32) throws { try check(sda_model_run(handle, batch)) }

    /// Format, device, input and sizes of the loaded model.
    public func details() throws -> ModelDetails {
        var out = initialised(sda_model_details_init, sda_model_details())
        try check(sda_model_info(handle, &out))
        return ModelDetails(out)
    }
}

extension Context {
    /// Loads a model file onto the selected device: `inputShape` is one sample's shape (the batch
    /// dimension is added in front), `dtype` the input's element type (the weights are not
    /// converted), `train` makes every run one training step. A missing file, a file that is no
    /// model or a zero dimension throw `.invalidArgument` and leave nothing loaded; a shape or dtype
    /// the model rejects is found by the first run.
    public func loadModel(path: String, inputShape: [UInt64], dtype: Dtype = .f32, train: Bool = false) throws -> Model {
        try Model(context: self, path: path, inputShape: inputShape, dtype: dtype, train: train)
    }

    /// Finds the largest batch of `model` (loaded with this context) that fits the memory budget;
    /// every run's peak counts the model's resident bytes. A model that accepts only its traced batch
    /// throws `.invalidArgument`, not out-of-memory.
    public func probeBatch(model: Model, minBatch: UInt32 = 0, startBatch: UInt32 = 0, maxBatch: UInt32 = 0,
                           maxRuns: UInt32 = 0,
                           budgetBytes: UInt64 = 0, marginBytes: UInt64 = 0, saveTo: Config? = nil,
                           progress: ((ProbeProgress) -> Bool)? = nil) throws -> ProbeResult {
        try withExtendedLifetime(model) {
            try probe(minBatch, startBatch, maxBatch, maxRuns, budgetBytes, marginBytes, saveTo, progress, work: nil) { options in
                options.model = model.handle
            }
        }
    }

    /// Runs `model` under guard with `batch` samples: one run with `maxAttempts` 1, otherwise (0: the
    /// library's default of 8 attempts) retries with a smaller batch chosen from the measured memory
    /// after each out-of-memory failure, down to `minBatch`; `report.finalBatch` is the batch that
    /// fit. When none fits it throws `SdaError(.outOfMemory)` whose `report` names a batch that does;
    /// a batch the model does not accept throws `.invalidArgument`, never out-of-memory.
    @discardableResult
    public func guardedRunModel(_ model: Model, batch: UInt32, minBatch: UInt32 = 0, maxAttempts: UInt32 = 0,
                                budgetBytes: UInt64 = 0, marginBytes: UInt64 = 0, workID: UInt64 = 0) throws -> RunReport {
        var options = initialised(sda_guard_options_init, sda_guard_options())
        options.batch_size = batch
        if minBatch != 0 { options.min_batch = minBatch }
        if maxAttempts != 0 { options.max_attempts = maxAttempts }
        options.budget_bytes = budgetBytes
        options.margin_bytes = marginBytes
        options.work_id = workID
        var report = initialised(sda_run_report_init, sda_run_report())
        let status = withExtendedLifetime(model) { sda_guarded_run_model(handle, model.handle, &options, &report) }
        let message = status == Status.ok.rawValue ? "" : Sda.lastErrorMessage
        let result = RunReport(report)
        if status != Status.ok.rawValue {
            throw SdaError(status: Status(rawValue: status), message: result.guidance.isEmpty ? message : result.guidance,
                           report: result.attempts > 0 ? result : nil)
        }
        return result
    }
}
