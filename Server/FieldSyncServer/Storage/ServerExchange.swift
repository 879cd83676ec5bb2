import FieldSyncCore
import FieldSyncStore

/// The server's half of one exchange, the same over every store: which uploaded changes are
/// considered, whose signatures hold, what is acknowledged and what refused. A store runs
/// `preverify` before its transaction and `apply` inside it.
enum ServerExchange {
    /// The upload as far as `limits.takes()` reaches (asked again before each change), and the
    /// ids of those signed by the request's author whose signatures verify against the
    /// request's roster: checked before any transaction begins, so no writer waits on Ed25519.
    static func preverify(_ r: ExchangeRequest, limits: ExchangeLimits) -> (upload: [SignedChange], verified: Set<ChangeID>) {
        var verified: Set<ChangeID> = []
        var considered = 0
        for c in r.upload {
            guard considered < limits.takes() else { break }
            considered += 1
            if c.change.device == r.author, let entry = r.roster[c.change.device], (try? c.verify(publicKey: entry.publicKey)) != nil {
                verified.insert(c.id)
            }
        }
        return (Array(r.upload.prefix(considered)), verified)
    }

    /// Receives `upload` in a store's transaction, as many changes as `limits.takes()` allows
    /// while the transaction is ours (the rest are neither accepted nor refused, and stay in the
    /// laptop's outbox). Returns the result so far and what the client holds now: what it said
    /// it had, plus what it just sent.
    static func apply<T: ExchangeTransaction>(_ upload: [SignedChange], verified: Set<ChangeID>, request r: ExchangeRequest,
                                              limits: ExchangeLimits, into t: inout T) throws -> (result: ExchangeResult, known: VersionVector) {
        var result = ExchangeResult()
        var known = r.clientVector
        // Asked again before each change: a writer taken while the server looked idle lets go
        // early once a crowd has come in behind it.
        for (taken, c) in upload.enumerated() {
            guard taken < limits.takes() else { break }
            let id = c.id.hex
            guard c.change.device == r.author else {
                if r.roster[c.change.device] == nil {
                    result.refused.append(ChangeRefusal(id: id, code: CoreError.Code.unknownDevice.description,
                                                        reason: "change \(id.prefix(12)) was signed by \(c.change.device), which is not on this server's roster"))
                    continue
                }
                result.refused.append(ChangeRefusal(id: id, code: "wrong_uploader",
                                                    reason: "change \(id.prefix(12)) was signed by \(c.change.device): a request carries one author's changes, and this one's are \(r.author)'s"))
                continue
            }
            // Values travel beside the signed bytes, so a relay could drop them and the signature
            // would still hold; stored so, they would be lost for good (the author's own upload
            // is then a duplicate). A relay may send a change without a value only where the
            // server holds the record erased (it would drop that value itself); the author may
            // always.
            if r.author != r.device, let missing = try missingValue(c, in: t) {
                result.refused.append(ChangeRefusal(id: id, code: ChangeRefusal.valuesMissing,
                                                    reason: "change \(id.prefix(12)) was relayed without the value of op \(missing), on a record this server does not hold erased: only its author may send it so"))
                continue
            }
            if let bad = invalidValue(c, schema: t.schema) {
                result.refused.append(ChangeRefusal(id: id, code: bad.code.description, reason: bad.message))
                continue
            }
            do {
                // A change that waits for an earlier one of its device (one refused outright: a
                // value this schema refuses) is held, not acknowledged. Acknowledged, the laptop
                // would count it delivered, though no one gets it until the gap is filled; held,
                // it stays in the laptop's outbox and `status` shows it waiting.
                let outcome = try t.receive(c, verified: verified.contains(c.id))
                let refusal: CoreError?
                switch outcome {
                case .pending: continue
                case .applied(let changes): refusal = changes.first?.refusal
                // An answer lost on the way: the verdict it was stored with.
                case .duplicate: refusal = try t.storedRefusal(of: c.id)
                }
                result.accepted.append(c.id)
                known.seqs[r.author] = max(known[r.author], c.change.seq)
                // Accepted and refused: kept in its chain, applied nowhere.
                if let refusal { result.refused.append(ChangeRefusal(id: id, code: refusal.code.description, reason: refusal.message)) }
            } catch let e as CoreError {
                result.refused.append(ChangeRefusal(id: id, code: e.code.description, reason: e.message))
                // Signed by the device (checked before the chain), so its key signed two versions.
                if e.code == .forkedChain { result.forks.append(ForkReport(device: c.change.device, seq: c.change.seq, refused: c.id, seenAt: r.now)) }
            }
        }
        return (result, known)
    }

    /// The first op of `c` whose value it lacks on a record `t` does not hold erased.
    static func missingValue<T: ExchangeTransaction>(_ c: SignedChange, in t: T) throws -> Int? {
        for (i, op) in c.change.ops.enumerated() where op.commitment != nil && c.values[UInt16(i)] == nil {
            if try !t.isErased(op.record) { return i }
        }
        return nil
    }

    /// Values must meet the schema on the server, which every laptop trusts to pass changes on.
    static func invalidValue(_ c: SignedChange, schema: RecordSchema) -> CoreError? {
        for (i, v) in c.values {
            let op = c.change.ops[Int(i)]
            guard op.action != .resolve || !op.field.isEmpty else { continue }
            // Null clears a value field (`--unset`); a set element or a review is never null.
            if op.action == .set || op.action == .resolve, case .null = v.value,
               schema.field(op.field, type: op.recordType, kind: nil).map({ $0.merge == .register && $0.writtenBy == nil }) == true { continue }
            do { _ = try schema.validate(v.value, field: op.field, type: op.recordType, kind: nil) } catch {
                return CoreError(error.code, "change \(c.id.hex.prefix(12)) op \(i): \(error.message)")
            }
        }
        return nil
    }

    /// What a client holding `known` will still lack after an answer of `sending` changes, when
    /// the store holds `held`: saturating, whatever the vectors hold.
    static func backlog(held: VersionVector, known: VersionVector, sending: Int) -> Int64 {
        var lacking: UInt64 = 0
        for (device, seq) in held.seqs where seq > known[device] {
            lacking = lacking.addingReportingOverflow(seq - known[device]).overflow ? .max : lacking + (seq - known[device])
        }
        let rest = lacking > UInt64(max(0, sending)) ? lacking - UInt64(max(0, sending)) : 0
        return Int64(clamping: rest)
    }
}

/// What `ServerExchange.apply` needs of a store's write transaction.
protocol ExchangeTransaction {
    var schema: RecordSchema { get }
    /// `Replicator.receive` on the store's replica.
    mutating func receive(_ change: SignedChange, verified: Bool) throws -> ReceiveOutcome
    /// The verdict a stored change was kept with (nil: applied).
    func storedRefusal(of id: ChangeID) throws -> CoreError?
    /// Whether the record is erased here (its personal values dropped).
    func isErased(_ record: RecordID) throws -> Bool
}

extension ServerTransaction: ExchangeTransaction {}
