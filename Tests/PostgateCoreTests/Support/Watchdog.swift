import Foundation
import Testing

/// Kills a child process that is still running after `seconds` and records that as a failure, so a
/// hang fails its test instead of blocking the run. Cancel it once the process has ended.
final class Watchdog: @unchecked Sendable {
    private let item: DispatchWorkItem

    init(_ process: Process, seconds: Double, _ what: String) {
        let pid = process.processIdentifier
        item = DispatchWorkItem {
            guard process.isRunning else { return }
            Issue.record("\(what) still running after \(Int(seconds)) s; killed")
            kill(pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
    }

    func cancel() { item.cancel() }
}
