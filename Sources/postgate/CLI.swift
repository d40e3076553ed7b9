import Foundation
import Logging
import PostgateCore

/// Process-level plumbing for the executable: logging, signals and failure reporting.
enum CLI {
    static func bootstrapLogging() {
        let level = ProcessInfo.processInfo.environment["POSTGATE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
    }

    /// On SIGINT/SIGTERM, removes inline key material before exiting.
    static func installSignalCleanup() {
        // A parent may have blocked these signals (the mask is inherited); a CLI must still stop on them.
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { s in
                // `sync --follow` stops gracefully: it commits, confirms and exits on its own.
                if s != SIGHUP && SyncStop.request() { return }
                PrivateFilesRegistry.shared.removeAll()
                signal(s, SIG_DFL)
                raise(s)
            }
        }
    }

    static func emitTrace(message: String, failureType: String) {
        let out = OutputSink()
        try? out.emit(AirbyteMessage.traceError(message: message, internalMessage: nil, failureType: failureType))
        try? out.flush()
    }

    /// Reports a failure on stdout (TRACE) and stderr, and exits with the failure type's status.
    static func fail(message: String, failureType: FailureType) -> Never {
        // exit() skips deinitializers: remove inline key material explicitly.
        PrivateFilesRegistry.shared.removeAll()
        emitTrace(message: message, failureType: failureType.rawValue)
        FileHandle.standardError.write(Data("postgate: error: \(message)\n".utf8))
        exit(failureType.exitCode)
    }
}
