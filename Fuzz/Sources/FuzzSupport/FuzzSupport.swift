import CLibFuzzer
import Foundation

/// The signature libFuzzer calls for each input (`LLVMFuzzerTestOneInput`).
public typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Hands the process arguments and `testOneInput` to libFuzzer's driver and exits with its status.
///
/// SwiftPM links an executable's `main` to the module's entry point, so libFuzzer's own `main`
/// is never linked; this does what that `main` does.
public func runLibFuzzer(_ testOneInput: TestOneInput) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}

/// A copy of libFuzzer's input.
public func inputBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// Stops the run with `message` when a property does not hold, so libFuzzer saves the input as a crash.
public func require(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    guard !condition else { return }
    fatalError("fuzz property violated: \(message())", file: file, line: line)
}
