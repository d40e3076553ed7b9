import FuzzSupport
import PostgateCore

/// A config document through `PostgateConfig.parse`. Every secret setting present as a string is
/// replaced by a marker first; the marker must not show in the config's descriptions, its warnings
/// or any error (errors name the setting's path, never its value).
let marker = "-----BEGIN FUZZ MARKER 7c1e9b3a-----"
let secretKeys: [(object: String?, key: String)] = [
    (nil, "password"), (nil, "entra_client_key"),
    ("ssl_mode", "client_key"), ("ssl_mode", "client_key_password"),
    ("tunnel_method", "ssh_key"), ("tunnel_method", "ssh_key_passphrase"), ("tunnel_method", "tunnel_user_password"),
]

/// `root` with every secret setting that holds a string set to `marker`.
func plantingMarkers(in root: JSONObject) -> JSONObject {
    var root = root
    for (objectKey, key) in secretKeys {
        if let objectKey {
            guard case .object(var inner)? = root[objectKey], case .string? = inner[key] else { continue }
            inner[key] = .string(marker)
            root[objectKey] = .object(inner)
        } else if case .string? = root[key] {
            root[key] = .string(marker)
        }
    }
    return root
}

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    // The marker is a setting's value only if it was planted.
    guard !String(decoding: input, as: UTF8.self).contains("FUZZ MARKER") else { return 0 }
    guard var json = try? JSONParser.parse(input) else { return 0 }
    if case .object(let root) = json { json = .object(plantingMarkers(in: root)) }
    do {
        let loaded = try PostgateConfig.parse(json)
        let texts = [String(describing: loaded.config), String(reflecting: loaded.config), String(reflecting: loaded)] + loaded.warnings
        for text in texts { require(!text.contains(marker), "a secret shows in \(text)") }
    } catch {
        for text in [error.description, String(reflecting: error)] {
            require(!text.contains(marker), "a secret shows in the error \(text)")
        }
    }
    return 0
}

runLibFuzzer(testOneInput)
