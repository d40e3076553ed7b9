import Foundation
import Logging
import PostgateCore

/// Process-level plumbing for the executable: logging, signals, exit paths and failure reporting.
enum CLI {
    static func bootstrapLogging() {
        let level = ProcessInfo.processInfo.environment["POSTGATE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
    }

    /// Makes every way out of the process remove inline key material: exit and a return from main
    /// (atexit), SIGINT, SIGTERM and SIGHUP (a handler that scrubs, then dies of the signal as
    /// before); SIGPIPE is ignored, so a closed stdout ends the run through the error path. Also
    /// removes what killed runs left behind, and keeps closed standard descriptors
    /// from being reused.
    static func installCleanup() {
        holdStandardDescriptors()
        // What the handler touches is initialised here, not lazily inside it. No graceful stop is
        // possible yet, so `request()` changes nothing.
        _ = SyncStop.isRequested
        _ = SyncStop.request()
        atexit { PrivateFilesRegistry.removeAll() }
        // A parent may have blocked these signals (the mask is inherited); a CLI must still stop on them.
        // A closed stdout (or a closed tunnel client) is an error to report and clean up after
        // (EPIPE, system_error), not a silent death by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let signals = [SIGINT, SIGTERM, SIGHUP]
        var set = sigset_t()
        sigemptyset(&set)
        for sig in signals { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in signals {
            signal(sig) { s in
                // Async-signal-safe only: an atomic flag, the C scrub (open/write/fsync/unlink/rmdir
                // over preallocated paths), signal and raise. No locks, no allocation.
                // `sync --follow` stops gracefully: it commits, confirms and exits on its own.
                if (s == SIGINT || s == SIGTERM) && SyncStop.request() { return }
                PrivateFilesRegistry.removeAll()
                signal(s, SIG_DFL)
                raise(s)
            }
        }
        PrivateFilesRegistry.sweepStale()
    }

    /// A closed stdin, stdout or stderr would be handed out by the next open (a key file, a database
    /// socket), and protocol output would go there. Each is held on /dev/null instead; stdout
    /// read-only, so that writing output fails and the run ends with an error.
    static func holdStandardDescriptors() {
        for (fd, flags) in [(Int32(0), O_RDONLY), (1, O_RDONLY), (2, O_WRONLY)] where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
            let n = open("/dev/null", flags)
            if n >= 0 && n != fd {
                dup2(n, fd)
                close(n)
            }
        }
    }

    /// The one clean-up before leaving on an error: closes tunnels and removes inline key material
    /// (exit() skips deinitializers; atexit repeats the removal for every other exit).
    static func cleanUp() {
        TunnelManager.shared.shutdown()
        PrivateFilesRegistry.removeAll()
    }

    static func emitTrace(message: String, failureType: String) {
        let out = OutputSink()
        // A record cut short by the failure does not swallow the error message.
        if OutputSink.stdoutHasOpenLine { try? out.append { $0.append(0x0a) } }
        try? out.emit(AirbyteMessage.traceError(message: message, internalMessage: nil, failureType: failureType))
        try? out.flush()
    }

    /// Reports a failure on stdout (a TRACE, unless `trace` is false) and stderr, and exits with
    /// the failure type's status.
    static func fail(message: String, failureType: FailureType, trace: Bool = true) -> Never {
        cleanUp()
        if trace { emitTrace(message: message, failureType: failureType.rawValue) }
        FileHandle.standardError.write(Data("postgate: error: \(message)\n".utf8))
        exit(failureType.exitCode)
    }
}
