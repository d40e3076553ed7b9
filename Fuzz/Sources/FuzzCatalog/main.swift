import FuzzSupport
import PostgateCore

/// A configured catalog through `ConfiguredCatalog.parse`: an accepted catalog has one stream per
/// entry, each with a non-empty name and namespace.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    guard let json = try? JSONParser.parse(input) else { return 0 }
    do {
        let streams = try ConfiguredCatalog.parse(json, file: "catalog.json")
        require(streams.count == json["streams"]?.arrayValue?.count, "\(streams.count) streams from \(json.jsonText)")
        for s in streams { require(!s.name.isEmpty && !s.namespace.isEmpty, "stream \(s.id) lacks a name or namespace") }
    } catch {
        _ = error.description
    }
    return 0
}

runLibFuzzer(testOneInput)
