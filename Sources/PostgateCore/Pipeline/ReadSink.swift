import Logging

/// The columns of the rows one reader produces for one stream, in the order the values arrive:
/// a snapshot's SELECT list, or a CDC relation's columns. Built once per read or Relation
/// message; sinks key their per-shape caches on its identity.
public final class RowShape: Sendable {
    public struct Column: Sendable {
        public let name: String
        /// How the value's text becomes JSON (the one value encoding).
        public let encoding: ValueEncoding
        /// The source type, when known (drives the destination type map).
        public let type: PostgresType?
        /// False for a column selected only to follow a cursor.
        public let emitted: Bool
        /// True for the columns of the replica identity (CDC) or primary key.
        public let isKey: Bool

        public init(name: String, encoding: ValueEncoding, type: PostgresType?, emitted: Bool = true, isKey: Bool = false) {
            self.name = name
            self.encoding = encoding
            self.type = type
            self.emitted = emitted
            self.isKey = isKey
        }
    }

    /// The position and commit time CDC stamps on a stream's initial snapshot rows.
    public struct CDCStamp: Sendable {
        public let lsn: LSN
        public let time: String
    }

    public let stream: StreamID
    public let columns: [Column]
    /// Set for snapshot rows of a CDC stream: each row gets `_ab_cdc_lsn` and `_ab_cdc_updated_at`.
    public let cdcStamp: CDCStamp?
    /// True when every column is emitted (so a row's fields are exactly the emitted values).
    public let allEmitted: Bool

    public init(stream: StreamID, columns: [Column], cdcStamp: CDCStamp? = nil) {
        self.stream = stream
        self.columns = columns
        self.cdcStamp = cdcStamp
        allEmitted = columns.allSatisfy(\.emitted)
    }
}

/// How a stream's read is going (Airbyte STREAM_STATUS).
public enum StreamStatus: String, Sendable {
    case started = "STARTED", running = "RUNNING", complete = "COMPLETE", incomplete = "INCOMPLETE"
}

/// A position a later run resumes from: one stream's, or the CDC reader's for all its streams.
public enum Checkpoint: Sendable {
    /// `records`: records of the stream since its previous checkpoint.
    case stream(StreamID, StreamState, records: Int64)
    case global(CDCState)
}

/// One captured row change (pgoutput), with values as the server printed them.
public struct Change {
    public enum Kind: Sendable { case insert, update, delete }
    public var kind: Kind
    /// The new row (insert, update) or the old row (delete).
    public var values: [TupleValue]
    /// An update's old row or old key, when the server sent one (key change, REPLICA IDENTITY FULL).
    public var old: [TupleValue]?
    /// `old` holds only the key (its other columns are not the row's values).
    public var oldKeyOnly: Bool = false
    /// A delete that carries only the key columns (default replica identity).
    public var keyOnly: Bool
    public var lsn: LSN
    /// The commit time, ISO 8601 UTC.
    public var time: String
}

/// Where readers put what they read. `read` writes Airbyte messages; `sync` hands the events to a
/// destination in-process. Readers call it from one thread.
public protocol ReadSink: AnyObject {
    func status(_ stream: StreamID, _ status: StreamStatus) throws
    func estimate(_ stream: StreamID, rows: Int64, bytes: Int64) throws
    /// One row in COPY text format (fields in `shape` order, ending with a newline).
    func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws
    /// One change captured by CDC, with values in `shape` order.
    func change(_ shape: RowShape, _ change: Change) throws
    /// Every row of the stream was removed at the source (TRUNCATE).
    func truncate(_ stream: StreamID) throws
    /// A reload chunk replaces the stream's rows with keys in (`after`, `through`] (nil: unbounded;
    /// values as PostgreSQL prints them, in `keys` order): what the destination holds there goes.
    func deleteRange(_ keys: RowShape, after: [String]?, through: [String]?) throws
    /// True when `deleteRange` really replaces what the destination holds, so a stream can be
    /// loaded again range by range instead of emptied first (`truncate`).
    var replacesKeyRanges: Bool { get }
    /// The stream's columns or table changed at the source, in order with its changes (CDC);
    /// `type` is the column's type for an added or retyped column. Already logged by the reader.
    func schemaChange(_ stream: StreamID, _ change: SchemaChange, type: PostgresType?) throws
    /// Everything before this is covered by `checkpoint`.
    func checkpoint(_ checkpoint: Checkpoint) throws
    /// Events since the last checkpoint are void: the reader reads again from that checkpoint.
    func rollback() throws
    /// A message for the user (already written to the log by the reader).
    func log(_ level: Logger.Level, _ message: String)
    /// Hands buffered output on (before a slow wait).
    func flush() throws
    /// True when a resumed full refresh should also re-read what changed in its copied ranges and
    /// report the keys still present (a destination that can apply them).
    var reconcilesResumedLoads: Bool { get }
    /// A resumed full refresh's reconciliation: the key values (COPY text rows of `shape`) of every
    /// row of the stream in the current snapshot; keys not listed are gone at the source.
    func presentKeys(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws
    /// The end of the `presentKeys` rows of the stream.
    func presentKeysEnd(_ stream: StreamID) throws
    /// A full refresh that was to resume starts over from the first page (the table was
    /// rewritten, or the interrupted read cannot be compared with it): what was staged is void.
    func restartLoad(_ stream: StreamID) throws
    /// A row buffer for one of several connections reading at once (see `RowLane`).
    func makeLane() -> RowLane
    /// How far CDC is behind the server (reported periodically; already logged on stderr).
    func lag(_ lag: CDCLag) throws
    /// True when tables that join the publication while CDC runs may become streams (`adopt`).
    var adoptsTables: Bool { get }
    /// A table that joined the publication while CDC runs: the stream to read it as from here on
    /// (announced to the destination, in order with the changes), or nil to leave it out.
    func adopt(_ table: DiscoveredStream) throws -> ConfiguredStream?
}

/// Rows of one connection of a parallel read, buffered apart from the others' and handed to the
/// sink in whole blocks, so rows of different items may interleave but never mix within a line.
/// `row` is called on the connection's thread; `handOver` with the sink's lock held.
public protocol RowLane: AnyObject {
    func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws
    /// Bytes waiting to be handed over.
    var buffered: Int { get }
    /// Passes the buffered rows on to the sink, in order with the sink's other events.
    func handOver() throws
}

extension ReadSink {
    public var reconcilesResumedLoads: Bool { false }
    public func presentKeys(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {}
    public func presentKeysEnd(_ stream: StreamID) throws {}
    public func restartLoad(_ stream: StreamID) throws {}
    public func lag(_ lag: CDCLag) throws {}
    public func schemaChange(_ stream: StreamID, _ change: SchemaChange, type: PostgresType?) throws {}
    public func deleteRange(_ keys: RowShape, after: [String]?, through: [String]?) throws {}
    public var replacesKeyRanges: Bool { false }
    /// A configured catalog is fixed: a table outside it is not read.
    public var adoptsTables: Bool { false }
    public func adopt(_ table: DiscoveredStream) throws -> ConfiguredStream? { nil }
}
