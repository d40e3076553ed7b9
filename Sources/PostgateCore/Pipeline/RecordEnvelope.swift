import Foundation

/// What surrounds a record's data on the wire: an Airbyte RECORD message, a Singer RECORD
/// message, or nothing (JSON Lines). Encoders write the prefix once per record and refresh the
/// suffix (which carries the time) every few thousand records.
public enum RecordEnvelope: Sendable {
    case airbyte(StreamID)
    /// `stream` is the Singer stream id; `version` is set for full-table streams (ACTIVATE_VERSION).
    case singer(stream: String, version: Int64?)
    case dataOnly

    /// The largest suffix `appendSuffix` writes.
    static let suffixCapacity = 128

    /// Bytes before the data object's first member (ending with `{`).
    var prefix: [UInt8] {
        var p: [UInt8]
        switch self {
        case .airbyte(let id):
            p = Array(#"{"type":"RECORD","record":{"namespace":"#.utf8)
            JSONBytes.appendString(id.namespace, to: &p)
            p += Array(#","stream":"#.utf8)
            JSONBytes.appendString(id.name, to: &p)
            p += Array(#","data":{"#.utf8)
        case .singer(let stream, _):
            p = Array(#"{"type":"RECORD","stream":"#.utf8)
            JSONBytes.appendString(stream, to: &p)
            p += Array(#","record":{"#.utf8)
        case .dataOnly:
            p = [UInt8(ascii: "{")]
        }
        return p
    }

    /// Airbyte records may carry `meta.changes` (values nulled or left out); the others cannot.
    var carriesMeta: Bool {
        if case .airbyte = self { return true }
        return false
    }

    /// What follows the data object (and its `meta`), with the current time, ending the line.
    func appendSuffix(to s: inout ByteBuffer) {
        switch self {
        case .airbyte:
            s.append(#","emitted_at":"#)
            JSONBytes.appendInt(AirbyteMessage.nowMillis, to: &s)
            s.append("}}\n")
        case .singer(_, let version):
            if let version {
                s.append(#","version":"#)
                JSONBytes.appendInt(version, to: &s)
            }
            s.append(#","time_extracted":"#)
            JSONBytes.appendString(Self.nowISO(), to: &s)
            s.append("}\n")
        case .dataOnly:
            s.append(0x0a)
        }
    }

    /// The current time as RFC 3339 UTC with microseconds.
    static func nowISO() -> String {
        ReplicationFrame.isoTimestamp(ReplicationFrame.postgresMicros(Date()))
    }
}

/// The names of the fields CDC adds to each record: the change's LSN, its commit time, and the
/// commit time of a delete (null otherwise). Airbyte's names, or the Singer (`_sdc_`) ones that
/// Singer targets act on (`_sdc_deleted_at` marks a delete).
public struct CDCFields: Sendable, Equatable {
    public var lsn: String
    public var updatedAt: String
    public var deletedAt: String

    public static let airbyte = CDCFields(lsn: "_ab_cdc_lsn", updatedAt: "_ab_cdc_updated_at", deletedAt: "_ab_cdc_deleted_at")
    public static let singer = CDCFields(lsn: "_sdc_lsn", updatedAt: "_sdc_updated_at", deletedAt: "_sdc_deleted_at")

    public var all: [String] { [lsn, updatedAt, deletedAt] }

    /// The JSON schema of each field, in `all` order.
    public var schemas: [(String, JSONValue)] {
        [(lsn, ["type": "number"]),
         (updatedAt, ["type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"]),
         (deletedAt, ["type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"])]
    }

    /// The members a CDC stream's snapshot row gets after its columns (starting with a comma).
    func snapshotSuffix(_ stamp: RowShape.CDCStamp) -> [UInt8] {
        var suffix: [UInt8] = [UInt8(ascii: ",")]
        JSONBytes.appendString(lsn, to: &suffix)
        suffix += Array(":\(stamp.lsn.value),".utf8)
        JSONBytes.appendString(updatedAt, to: &suffix)
        suffix.append(UInt8(ascii: ":"))
        JSONBytes.appendString(stamp.time, to: &suffix)
        suffix.append(UInt8(ascii: ","))
        JSONBytes.appendString(deletedAt, to: &suffix)
        suffix += Array(":null".utf8)
        return suffix
    }
}
