import Foundation
import Testing
@testable import PostgateCore

/// The example configs in config/ stay valid as the config reader evolves.
@Suite struct ExampleConfigTests {
    static var configDir: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("config")
    }

    @Test func everyExampleParses() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.configDir.path).filter { $0.hasSuffix(".json") }.sorted()
        #expect(files.count >= 6)
        for f in files {
            var json = try JSONParser.parse([UInt8](Data(contentsOf: Self.configDir.appendingPathComponent(f))))
            // The key placeholder is prose; put a key-shaped value in its place.
            if case .object(var root) = json, case .object(var t)? = root["tunnel_method"], t["ssh_key"] != nil {
                t["ssh_key"] = .string("-----BEGIN " + "OPENSSH PRIVATE KEY-----\nAAAA\n-----END " + "OPENSSH PRIVATE KEY-----\n")
                root["tunnel_method"] = .object(t)
                json = .object(root)
            }
            let loaded = try PostgateConfig.parse(json)
            #expect(loaded.warnings.isEmpty, "\(f): \(loaded.warnings)")
        }
    }
}
