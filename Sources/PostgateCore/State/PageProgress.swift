/// Which heap pages of one relation a chunked load has read: every page below `below`, and the
/// page ranges in `ranges` above it (sorted, disjoint, not touching `below`). Work items finish
/// out of order when several connections read, so the ranges hold what finished ahead of the
/// lowest item still in flight; there are at most as many as there were readers.
public struct PageProgress: Sendable, Equatable {
    /// An upper bound meaning "to the end of the relation" (no page has this number).
    public static let end = UInt32.max

    public private(set) var below: UInt32
    public private(set) var ranges: [Range<UInt32>]

    public init(below: UInt32 = 0, ranges: [Range<UInt32>] = []) {
        self.below = below
        self.ranges = []
        for r in ranges { add(r) }
    }

    /// True once the range reaching the end of the relation and everything before it are read.
    public var complete: Bool { below == Self.end }

    /// Records that the pages of `r` were read.
    public mutating func add(_ r: Range<UInt32>) {
        guard !r.isEmpty, r.upperBound > below else { return }
        var lo = max(r.lowerBound, below)
        var hi = r.upperBound
        var kept: [Range<UInt32>] = []
        for x in ranges {
            if x.upperBound < lo || x.lowerBound > hi {
                kept.append(x)
            } else {
                lo = min(lo, x.lowerBound)
                hi = max(hi, x.upperBound)
            }
        }
        if lo <= below {
            below = hi
        } else {
            kept.append(lo..<hi)
        }
        kept.sort { $0.lowerBound < $1.lowerBound }
        // A range that now starts at `below` joins it.
        while let first = kept.first, first.lowerBound <= below {
            below = max(below, first.upperBound)
            kept.removeFirst()
        }
        ranges = kept
    }

    /// The page ranges not yet read (the last one reaches `end`).
    public func remaining() -> [Range<UInt32>] {
        var gaps: [Range<UInt32>] = []
        var from = below
        for r in ranges {
            if r.lowerBound > from { gaps.append(from..<r.lowerBound) }
            from = r.upperBound
        }
        if from < Self.end { gaps.append(from..<Self.end) }
        return gaps
    }

    /// True when page `p` was read.
    public func contains(_ p: UInt32) -> Bool {
        p < below || ranges.contains { $0.contains(p) }
    }
}
