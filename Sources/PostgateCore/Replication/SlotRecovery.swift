/// What a CDC run does with its replication slot before reading: use it, create it, or
/// recreate it and load every stream again; or stop with an explanation. A pure decision over
/// what the server reports and what the config allows.
///
/// A recreated slot starts at a new position: the run then reads from that slot's start with a
/// fresh state (every stream loaded again, the destination's rows replaced), never from the
/// saved position or the larger of the two, since the changes between them were never read.
enum SlotRecovery {
    /// What `pg_replication_slots` says of the slot.
    enum Slot: Equatable {
        case usable
        case missing
        /// `wal_status = 'lost'`: WAL the slot needed was removed (`max_slot_wal_keep_size`).
        case lost
    }

    case use
    /// No slot and nothing read yet: create it and load every stream from its start.
    case create
    /// Drop the slot (when it is still there), create it, and load every stream again.
    case recreate(drop: Bool, why: String)
    case fail(CDCError)

    static func decide(slot: Slot, name: String, saved: LSN?, behaviour: CDCSettings.InvalidCursorBehaviour, createSlot: Bool) -> SlotRecovery {
        switch (slot, saved) {
        case (.usable, _):
            return .use
        case (.missing, nil):
            return createSlot ? .create : .fail(.slotMissing(slot: name))
        case (.missing, let saved?):
            let why = "replication slot \"\(name)\" is gone (dropped, or the server was restored or failed over) while the saved state is at \(saved); the changes since then cannot be read"
            switch behaviour {
            case .failSync: return .fail(.slotGone(why: why, createSlot: createSlot))
            case .resync: return createSlot ? .recreate(drop: false, why: why) : .fail(.slotGoneNeedsCreate(why: why))
            }
        case (.lost, let saved):
            let why = "replication slot \"\(name)\" was invalidated (wal_status 'lost'): the server removed WAL it still needed, because the slot fell more than max_slot_wal_keep_size behind\(saved.map { " the saved position \($0)" } ?? "")"
            // With nothing saved there is nothing to lose by starting over.
            if saved != nil && behaviour == .failSync { return .fail(.slotGone(why: why, createSlot: createSlot)) }
            return createSlot ? .recreate(drop: true, why: why) : .fail(.slotGoneNeedsCreate(why: why))
        }
    }
}
