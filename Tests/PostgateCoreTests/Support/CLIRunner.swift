import Foundation
import Testing
@testable import PostgateCore

/// Runs the built `postgate` executable and captures its output.
struct CLIResult {
    let status: Int32
    let stdout: String
    let stderr: String

    /// Each stdout line parsed as JSON.
    var messages: [JSONValue] {
        stdout.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
    }

    var stdoutLines: [Substring] { stdout.split(separator: "\n") }
}

enum CLI {
    /// The repository's root (this file is Tests/PostgateCoreTests/Support/CLIRunner.swift).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// The `postgate` binary next to the test bundle (both are in the build directory).
    static var binary: String {
        if let p = ProcessInfo.processInfo.environment["POSTGATE_BIN"] { return p }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("postgate").path
    }

    /// Runs postgate with `args`; asserts that no known secret appears in stdout or stderr.
    static func run(_ args: [String], environment: [String: String] = [:], secrets: [String] = []) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Read both pipes concurrently so neither fills up.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        let result = CLIResult(
            status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
        let all = secrets + ((try? Lab.load().secrets) ?? TestSecrets.extra)
        for s in all where !s.isEmpty {
            #expect(!result.stdout.contains(s), "a secret appeared on stdout of postgate \(args.first ?? "")")
            #expect(!result.stderr.contains(s), "a secret appeared on stderr of postgate \(args.first ?? "")")
        }
        return result
    }

    /// Writes a config to a private temporary file and returns its path.
    static func writeConfig(_ object: JSONObject) throws -> String {
        try writeTemp(JSONValue.object(object).jsonText, suffix: ".json")
    }

    static func writeTemp(_ text: String, suffix: String) throws -> String {
        guard let dir = TestFiles.directory else { throw PrivateServerError(message: "cannot make a private directory for test files") }
        let path = dir + "/" + UUID().uuidString + suffix
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw PrivateServerError(message: "cannot write \(path)")
        }
        return path
    }
}

/// The test process's own directory for configs and other files holding secrets (mode 0700,
/// unique to the process), removed when the process exits, however the suite was started.
enum TestFiles {
    static let directory: String? = {
        var template = Array((FileManager.default.temporaryDirectory.path + "/postgate-tests-XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { return nil }
        let path = String(cString: template)
        atexit { if let d = TestFiles.directory { try? FileManager.default.removeItem(atPath: d) } }
        return path
    }()
}
