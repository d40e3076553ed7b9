import FuzzSupport
import PostgateCore

/// Any bytes through `JSONParser`. A parsed document written back by `JSONWriter` must parse to an
/// equal value and write the same bytes again; a syntax error must name an offset inside the input.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    let value: JSONValue
    do {
        value = try JSONParser.parse(input)
    } catch {
        require((0...input.count).contains(error.offset), "error offset \(error.offset) outside 0...\(input.count)")
        return 0
    }
    var writer = JSONWriter()
    writer.value(value)
    let again: JSONValue
    do {
        again = try JSONParser.parse(writer.bytes)
    } catch {
        require(false, "written JSON \(value.jsonText) does not parse: \(error)")
        return 0
    }
    require(again == value, "written JSON \(value.jsonText) parses to a different value")
    var rewriter = JSONWriter()
    rewriter.value(again)
    require(rewriter.bytes == writer.bytes, "JSON written twice differs")
    return 0
}

runLibFuzzer(testOneInput)
