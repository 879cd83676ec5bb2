import FieldSyncCore

/// One change's ops on one record, with their values, as one `edits` row keeps them (migration
/// 0009): a first sync stores a row per change and record instead of two rows per field write.
///
/// Each entry: the op's index in its change (varint), the op in the change encoding with its
/// record left out (the row's key says it), then either 0, or 1 with the salt and the canonical
/// value (each length-prefixed). Erasing a value rewrites the row without it.
struct EditBody {
    struct Entry {
        var index: UInt16
        var op: Op
        /// Nil when the op carries no value, or its value was erased.
        var value: (salt: [UInt8], canonical: [UInt8])?
    }

    var entries: [Entry] = []

    var bytes: [UInt8] {
        var w = ByteWriter()
        for e in entries {
            w.varint(UInt64(e.index))
            ChangeCodec.encode(e.op, into: &w, recordIndex: 0)
            if let v = e.value {
                w.u8(1)
                w.blob(v.salt)
                w.blob(v.canonical)
            } else {
                w.u8(0)
            }
        }
        return w.bytes
    }

    /// Decodes a stored body of `record`'s ops.
    static func decode(_ bytes: [UInt8], record: RecordID) throws -> EditBody {
        var r = ByteReader(bytes)
        var body = EditBody()
        do throws(CoreError) {
            while !r.isAtEnd {
                let index = try Self.index(&r)
                let op = try ChangeCodec.decodeOp(&r, readRecord: { r throws(CoreError) in
                    guard try r.varint() == 0 else { throw CoreError(.malformed, "a stored op names a record table") }
                    return record
                })
                body.entries.append(Entry(index: index, op: op, value: try value(&r)))
            }
        } catch {
            throw StoreError(.notAReplica, "a stored edit of record \(record) is malformed: \(error.message)")
        }
        return body
    }

    static func index(_ r: inout ByteReader) throws(CoreError) -> UInt16 {
        let i = try r.varint()
        guard i <= UInt64(UInt16.max) else { throw CoreError(.malformed, "op index \(i) is out of range") }
        return UInt16(i)
    }

    static func value(_ r: inout ByteReader) throws(CoreError) -> (salt: [UInt8], canonical: [UInt8])? {
        switch try r.u8() {
        case 0: return nil
        case 1: return (try r.blob(max: 64, what: "salt"), try r.blob(max: Int(Int32.max), what: "value"))
        case let b: throw CoreError(.malformed, "value flag \(b)")
        }
    }
}
