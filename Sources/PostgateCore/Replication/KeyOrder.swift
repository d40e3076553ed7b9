import Foundation

/// The order of a primary key whose every column is an integer or a uuid: for these types the
/// text PostgreSQL prints compares here exactly as the server orders the values, so a change's
/// key can be placed against a chunk's bounds without asking the server.
public struct KeyOrder: Sendable {
    enum Kind: Sendable { case integer, uuid }
    let kinds: [Kind]

    /// Nil when some column has another type (its order depends on collations or encodings).
    public init?(_ types: [PostgresType]) {
        var kinds: [Kind] = []
        for t in types {
            switch t.name {
            case "int2", "int4", "int8": kinds.append(.integer)
            case "uuid": kinds.append(.uuid)
            default: return nil
            }
        }
        guard !kinds.isEmpty else { return nil }
        self.kinds = kinds
    }

    /// True when `key` has one value per column, each as PostgreSQL prints the column's type.
    public func valid(_ key: [String]) -> Bool {
        guard key.count == kinds.count else { return false }
        for (kind, v) in zip(kinds, key) {
            switch kind {
            case .integer: if Int64(v) == nil { return false }
            case .uuid: if UUID(uuidString: v) == nil { return false }
            }
        }
        return true
    }

    /// True when key `a` sorts before key `b`.
    public func less(_ a: [String], _ b: [String]) -> Bool {
        for (i, kind) in kinds.enumerated() where i < a.count && i < b.count {
            let x = a[i], y = b[i]
            switch kind {
            case .integer:
                guard let p = Int64(x), let q = Int64(y) else { return x < y }
                if p != q { return p < q }
            case .uuid:
                let p = x.lowercased(), q = y.lowercased()
                if p != q { return p < q }
            }
        }
        return false
    }

    /// True when `key` is in (`after`, `through`] (a nil bound is open).
    public func contains(_ key: [String], after: [String]?, through: [String]?) -> Bool {
        if let after, !less(after, key) { return false }
        if let through, less(through, key) { return false }
        return true
    }
}
