import FuzzSupport
import PostgateCore

/// A configured catalog through `ConfiguredCatalog.parse`: an accepted catalog has one stream per
/// entry, each with a non-empty name, and a non-empty namespace unless the entry's was null or
/// absent; such a stream is never resolved against a catalog without its name.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    guard let json = try? JSONParser.parse(input) else { return 0 }
    do {
        let streams = try ConfiguredCatalog.parse(json, file: "catalog.json")
        require(streams.count == json["streams"]?.arrayValue?.count, "\(streams.count) streams from \(json.jsonText)")
        let entries = json["streams"]?.arrayValue ?? []
        for (i, s) in streams.enumerated() {
            let given = entries[i]["stream"]?["namespace"]
            require(!s.name.isEmpty && (!s.namespace.isEmpty || given == nil || given == .null), "stream \(s.id) lacks a name or namespace")
        }
        if streams.contains(where: { $0.namespace.isEmpty }) {
            let resolved = try? ConfiguredCatalog.resolveNamespaces(streams, discovered: [])
            require(resolved == nil, "a stream without a namespace was resolved against nothing")
        }
    } catch {
        _ = error.description
    }
    return 0
}

runLibFuzzer(testOneInput)
