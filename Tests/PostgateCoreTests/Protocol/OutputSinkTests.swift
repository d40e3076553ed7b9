import Foundation
import Testing
@testable import PostgateCore

/// A record larger than the output buffer streams out in pieces: the buffer does not grow to the
/// largest value, and the bytes written are exactly the record.
@Suite struct OutputSinkTests {
    /// Runs `body` against a sink writing to a temporary file; returns what was written.
    static func written(capacity: Int, _ body: (OutputSink) throws -> Void) throws -> [UInt8] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("postgate-sink-\(UUID().uuidString)").path
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        defer { close(fd); unlink(path) }
        let sink = OutputSink(fd: fd, capacity: capacity)
        try body(sink)
        try sink.flush()
        return [UInt8](FileManager.default.contents(atPath: path) ?? Data())
    }

    @Test func aRecordLargerThanTheBufferDoesNotGrowIt() throws {
        let value = String(repeating: "ab\"c\\d", count: 200_000)  // 1.2 MB, escapes included
        var capacity = 0
        let out = try Self.written(capacity: 4096) { sink in
            try sink.append { buf in
                buf.append(#"{"v":"#)
                JSONBytes.appendString(value, to: &buf)
                buf.append("}\n")
            }
            let plain = [UInt8](repeating: UInt8(ascii: "x"), count: 3_000_000)
            try sink.append { buf in
                buf.append(plain)
                buf.append(0x0a)
            }
            capacity = sink.bufferCapacity
        }
        #expect(capacity <= 4096 + 64 * 1024, "the buffer stayed at its size (\(capacity) bytes)")
        let lines = out.split(separator: 0x0a, omittingEmptySubsequences: false)
        try #require(lines.count == 3)
        #expect(try JSONParser.parse(Array(lines[0]))["v"]?.stringValue == value)
        #expect(lines[1].count == 3_000_000 && lines[1].allSatisfy { $0 == UInt8(ascii: "x") })
    }

    @Test func anArrayThatFallsBackToTextIsWrittenWhole() throws {
        // Not an array literal after all (no closing brace): the encoder takes back what it wrote
        // and writes the text as a string, so it must not have been spilled meanwhile.
        let text = "{" + String(repeating: "1,", count: 100_000)
        let encoding = ValueEncoding.array(element: .integer, delimiter: UInt8(ascii: ","))
        let out = try Self.written(capacity: 1024) { sink in
            try sink.append { buf in
                _ = Array(text.utf8).withUnsafeBytes { encoding.append($0, to: &buf) }
                buf.append(0x0a)
            }
        }
        #expect(try JSONParser.parse(Array(out.dropLast())).stringValue == text)
    }
}
