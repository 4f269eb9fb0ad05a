// XCTest suite of the Swift binding, run by bindings/swift/run-tests.sh against an installed libsda
// (SDA_TEST_PREFIX names the prefix) inside a Debian trixie root.
import CSda
import Foundation
import XCTest

@testable import Sda

private let huge: UInt32 = 1_000_000_000  // samples: the CPU allocator refuses at once

private struct HostError: Error, Equatable { let what: String }

/// An error whose text is a CUDA out-of-memory message, as a Swift wrapper of a GPU library would throw.
private struct GPUError: Error, CustomStringConvertible {
    var description: String { "CUDA out of memory. Tried to allocate 2.00 GiB" }
}

final class SdaTests: XCTestCase {
    private func cpuContext() throws -> Context {
        let context = try Context(config: Config(toml: "[hardware]\ndevice = \"cpu\"\n"))
        try context.select("cpu")
        return context
    }

    func testVersionMatchesTheHeader() {
        XCTAssertEqual(Sda.version, "\(SDA_VERSION_MAJOR).\(SDA_VERSION_MINOR).\(SDA_VERSION_PATCH)")
    }

    /// The README's Swift quick start, as written there.
    func testReadmeQuickStart() throws {
        let context = try Context()
        let selection = try context.select("auto")
        print(selection.device, try context.deviceInfo().name, try context.memoryInfo().budget)
        do {
            try context.guardedRun(batchSize: 64) { try context.runWorkload(batch: 64) }
        } catch let error as SdaError where error.status == .outOfMemory {
            print(error.report?.guidance ?? error.message)
        }
    }

    func testConfigRoundTripAndErrors() throws {
        let config = try Config()
        XCTAssertEqual(try config.get("hardware.device"), "auto")
        try config.set("hardware.memory_strategy", "conservative")
        XCTAssertTrue(try config.toml().contains("memory_strategy = \"conservative\""))
        XCTAssertThrowsError(try config.get("hardware.nope")) { error in
            let error = error as! SdaError
            XCTAssertEqual(error.status, .unknownKey)
            XCTAssertTrue(error.message.contains("hardware.nope"), error.message)
            XCTAssertEqual("\(error.status)", "SDA_ERR_UNKNOWN_KEY")
        }
        XCTAssertThrowsError(try config.set("hardware.memory_strategy", "reckless")) { error in
            XCTAssertEqual((error as! SdaError).status, .invalidValue)
        }
        XCTAssertThrowsError(try Config(toml: "[hardware")) { error in
            XCTAssertEqual((error as! SdaError).status, .parse)
        }
        let path = NSTemporaryDirectory() + "sda-swift-\(getpid()).toml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try config.save(to: path)
        XCTAssertEqual(try Config(path: path).get("hardware.memory_strategy"), "conservative")
    }

    func testSelectDescribeAndMeasureTheCPU() throws {
        let context = try cpuContext()
        let selection = try context.select(" CPU ")
        XCTAssertEqual(selection.kind, .cpu)
        XCTAssertEqual(selection.device, "cpu")
        XCTAssertFalse(selection.fellBack)
        let device = try context.deviceInfo()
        XCTAssertFalse(device.name.isEmpty)
        XCTAssertGreaterThan(device.memoryTotal, 0)
        let memory = try context.memoryInfo()
        XCTAssertGreaterThan(memory.budget, 0)
        XCTAssertLessThanOrEqual(memory.budget, memory.total)
        XCTAssertEqual(try context.listDevices().first?.kind, .cpu)
        try context.clearCache()
        try context.resetPeak()
    }

    func testMalformedPreferencesThrow() throws {
        let context = try cpuContext()
        for preference in ["", "tpu", "cuda:x"] {
            XCTAssertThrowsError(try context.select(preference)) { error in
                XCTAssertEqual((error as! SdaError).status, .invalidArgument, preference)
            }
        }
    }

    func testAMissingGPUFallsBackAndLogsAWarning() throws {
        let lock = NSLock()
        var warnings: [String] = []
        Sda.setLogHandler { level, message in
            lock.lock()
            if level == .warn { warnings.append(message) }
            lock.unlock()
        }
        defer { Sda.setLogHandler(nil) }
        let selection = try Context(config: Config(toml: "[hardware]\nplatform_priority = [\"cuda\", \"cpu\"]\n")).select("cuda")
        try XCTSkipIf(selection.kind == .cuda, "this machine has a working CUDA device")
        XCTAssertTrue(selection.fellBack)
        XCTAssertFalse(selection.reason.isEmpty)
        lock.lock()
        XCTAssertFalse(warnings.isEmpty)
        lock.unlock()
    }

    func testBackendLoadsFromBesideTheInstalledLibrary() throws {
        let prefix = try XCTUnwrap(ProcessInfo.processInfo.environment["SDA_TEST_PREFIX"])
        let backend = try cpuContext().loadBackend()
        XCTAssertTrue(backend.loaded)
        XCTAssertEqual(URL(fileURLWithPath: backend.modulePath).standardizedFileURL.path,
                       URL(fileURLWithPath: prefix + "/lib/libsda_torch.so").standardizedFileURL.path)
        XCTAssertFalse(backend.libtorchVersion.isEmpty)
        // This test program links no libtorch: the backend's was loaded for it.
        XCTAssertFalse(backend.libtorchPreloaded)
        XCTAssertTrue(["SDA_LIBTORCH", "hardware.libtorch", "bundled", "built"].contains(backend.libtorchFoundBy),
                      backend.libtorchFoundBy)
    }

    func testDeinitFreesTheHandles() throws {
        var context: Context? = try Context()
        let handle = context!.handle
        weak var weakContext = context
        context = nil
        XCTAssertNil(weakContext)
        // Already freed by deinit: libsda answers a second free with SDA_ERR_INVALID_HANDLE.
        XCTAssertEqual(sda_context_free(handle), Status.invalidHandle.rawValue)
        var config: Config? = try Config()
        let configHandle = config!.handle
        config = nil
        XCTAssertEqual(sda_config_free(configHandle), Status.invalidHandle.rawValue)
    }

    func testClassify() {
        XCTAssertTrue(Sda.isOutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB"))
        XCTAssertTrue(Sda.isOutOfMemory("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
        XCTAssertFalse(Sda.isOutOfMemory("CUDA error: device-side assert triggered"))
        XCTAssertEqual(Sda.classify(GPUError()), .outOfMemory)
        XCTAssertEqual(Sda.classify(HostError(what: "shape")), .torch)
    }

    func testGuardedRunSucceeds() throws {
        let context = try cpuContext()
        var calls = 0
        let report = try context.guardedRun(batchSize: 4) { calls += 1 }
        XCTAssertEqual(calls, 1)
        XCTAssertEqual(report.status, .ok)
        XCTAssertEqual(report.attemptedBatch, 4)
    }

    func testARealOutOfMemoryInsideTheClosureBecomesGuidance() throws {
        let context = try cpuContext()
        try context.runWorkload(batch: 1)
        XCTAssertThrowsError(try context.guardedRun(batchSize: huge) { try context.runWorkload(batch: huge) }) { error in
            let error = error as! SdaError
            XCTAssertEqual(error.status, .outOfMemory)
            let report = error.report!
            XCTAssertEqual(report.oomAttempts, 1)
            XCTAssertTrue(report.guidance.contains("DefaultCPUAllocator"), report.guidance)
            XCTAssertGreaterThan(report.suggestedBatch, 0)
            XCTAssertLessThan(report.suggestedBatch, huge)
        }
    }

    func testAnErrorWhoseTextIsAnOOMIsRecovered() throws {
        let context = try cpuContext()
        XCTAssertThrowsError(try context.guardedRun(batchSize: 8) { throw GPUError() }) { error in
            XCTAssertEqual((error as! SdaError).status, .outOfMemory)
            XCTAssertTrue((error as! SdaError).message.contains("Tried to allocate 2.00 GiB"))
        }
    }

    func testOtherErrorsAreRethrownUnchanged() throws {
        let context = try cpuContext()
        XCTAssertThrowsError(try context.guardedRun { throw HostError(what: "bad input") }) { error in
            XCTAssertEqual(error as? HostError, HostError(what: "bad input"))
        }
        XCTAssertEqual(try context.guardedRun {}.status, .ok)  // the library is unharmed
    }

    /// A model file as the workload: bad input throws with the model's words (no model file is at
    /// hand in the Swift root: the loading, running and probing of real models are tested from C,
    /// C++ and Python).
    func testAMissingOrUnreadableModelThrowsInvalidArgument() throws {
        let context = try cpuContext()
        XCTAssertThrowsError(try context.loadModel(path: "/nonexistent/model.pt", inputShape: [2, 100])) { error in
            XCTAssertEqual((error as? SdaError)?.status, .invalidArgument)
            XCTAssertTrue((error as? SdaError)?.message.contains("/nonexistent/model.pt") ?? false)
        }
        XCTAssertThrowsError(try context.loadModel(path: "/", inputShape: [2, 100], dtype: .bf16, train: true)) { error in
            XCTAssertEqual((error as? SdaError)?.status, .invalidArgument)
        }
        XCTAssertThrowsError(try context.loadModel(path: "/nonexistent/model.pt", inputShape: [2, 0])) { error in
            XCTAssertEqual((error as? SdaError)?.status, .invalidArgument)
        }
        XCTAssertEqual(Dtype.bf16.description, "bf16")
    }

    func testBatchedRunShrinksUntilItFits() throws {
        let context = try cpuContext()
        var tried: [UInt32] = []
        let report = try context.guardedRunBatched(batchSize: 64, keepEffectiveBatch: true) { batch, _ in
            tried.append(batch)
            if batch > 10 { throw SdaError(status: .outOfMemory, message: "batch \(batch) does not fit") }
        }
        XCTAssertEqual(tried.first, 64)
        XCTAssertLessThanOrEqual(report.finalBatch, 10)
        XCTAssertEqual(report.finalBatch, tried.last)
        XCTAssertGreaterThanOrEqual(report.finalBatch * report.accumulationSteps, 64)
    }

    private func smallWorkload() -> Workload {
        var workload = Workload()
        workload.outChannels = 4  // about 0.75 MiB of activations per sample: quick runs
        return workload
    }

    func testProbeTheBuiltInWorkloadWithProgress() throws {
        let context = try cpuContext()
        var seen: [ProbeProgress] = []
        let result = try context.probeBatch(workload: smallWorkload(), maxBatch: 4096, budgetBytes: 64 << 20) {
            seen.append($0)
            return true
        }
        XCTAssertGreaterThan(result.recommendedBatch, 0)
        XCTAssertLessThanOrEqual(result.recommendedBatch, result.maxBatch)
        XCTAssertLessThanOrEqual(result.measuredPeakBytes, 64 << 20)
        XCTAssertEqual(UInt32(seen.count), result.runs)
        XCTAssertTrue(seen.contains { $0.ok && $0.batch == result.maxBatch })
    }

    func testProbeASwiftClosureWhoseOOMMarksTheLimit() throws {
        let context = try cpuContext()
        let result = try context.probeBatch(maxBatch: 1000, budgetBytes: 1 << 40) { batch in
            if batch > 37 { throw SdaError(status: .outOfMemory, message: "batch \(batch) does not fit") }
        }
        XCTAssertLessThanOrEqual(result.maxBatch, 37)
        XCTAssertGreaterThan(result.maxBatch, 0)
    }

    func testProbeStartsAtTheCallersStartBatch() throws {
        let context = try cpuContext()
        var batches: [UInt32] = []
        let result = try context.probeBatch(startBatch: 30, maxBatch: 1000, budgetBytes: 1 << 40) { batch in
            batches.append(batch)
            if batch > 37 { throw SdaError(status: .outOfMemory, message: "batch \(batch) does not fit") }
        }
        XCTAssertEqual(batches.first, 30)
        XCTAssertEqual(result.maxBatch, 37)
        XCTAssertThrowsError(try context.probeBatch(startBatch: 50, maxBatch: 40, budgetBytes: 64 << 20) { _ in }) { error in
            XCTAssertEqual((error as? SdaError)?.status, .invalidArgument)
        }
    }

    func testProbeCancelledAndErrorsRethrown() throws {
        let context = try cpuContext()
        XCTAssertThrowsError(try context.probeBatch(workload: smallWorkload(), budgetBytes: 64 << 20) { _ in false }) { error in
            XCTAssertEqual((error as! SdaError).status, .cancelled)
        }
        XCTAssertThrowsError(try context.probeBatch(budgetBytes: 64 << 20) { _ in throw HostError(what: "no model") }) { error in
            XCTAssertEqual(error as? HostError, HostError(what: "no model"))
        }
    }

    func testPlanRecommendReportValidate() throws {
        let context = try cpuContext()
        let plan = try context.planWorkers(strategy: "cpu", workers: 2, workerID: 1)
        XCTAssertEqual(plan.strategy, .cpu)
        XCTAssertEqual(plan.workerID, 1)
        XCTAssertTrue(plan.env.contains { $0.name == "OMP_NUM_THREADS" })
        XCTAssertThrowsError(try context.planWorkers(strategy: "cpu", workers: 2, workerID: 5)) { error in
            XCTAssertEqual((error as! SdaError).status, .invalidArgument)
        }
        let advice = try context.recommend(parameters: 1_000_000_000)
        XCTAssertGreaterThan(advice.batchSize, 0)
        XCTAssertTrue(advice.adviceGiven)
        XCTAssertEqual(advice.memoryStrategy, "conservative")
        XCTAssertTrue(try context.report().contains("cpu"))
        XCTAssertTrue(try context.reportJSON(verbose: true).contains("\"schema_version\""))
        let bad = try Context(config: Config(toml: "[hardware]\ndevice = \"cpu\"\n[paths]\ndatasets = \"/proc/version\"\n"))
        let problems = try bad.validateEnvironment()
        XCTAssertEqual(problems.map(\.severity), problems.map(\.severity).sorted(by: >))
        XCTAssertTrue(problems.contains { $0.severity == .error && $0.message.contains("/proc/version") && !$0.fix.isEmpty })
    }
}
