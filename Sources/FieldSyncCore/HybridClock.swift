/// A hybrid logical clock reading: 48 bits of Unix milliseconds and a 16-bit counter.
/// Compared as one 64-bit number; ties between devices break on the device id (`Stamp`).
public struct HLC: Comparable, Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    public init(raw: UInt64) { self.raw = raw }
    public init(millis: UInt64, counter: UInt16) { raw = (millis & 0xFFFF_FFFF_FFFF) << 16 | UInt64(counter) }

    public var millis: UInt64 { raw >> 16 }
    public var counter: UInt16 { UInt16(truncatingIfNeeded: raw) }

    public static let zero = HLC(raw: 0)
    public static func < (a: HLC, b: HLC) -> Bool { a.raw < b.raw }
    public var description: String { "\(millis).\(counter)" }
}

/// The total order every replica uses for writes: HLC first, then the author's device id.
public struct Stamp: Comparable, Hashable, Sendable {
    public let hlc: HLC
    public let device: DeviceID

    public init(hlc: HLC, device: DeviceID) { self.hlc = hlc; self.device = device }
    public static func < (a: Stamp, b: Stamp) -> Bool { a.hlc != b.hlc ? a.hlc < b.hlc : a.device < b.device }
}

/// The device's hybrid logical clock. It never goes backwards and follows the highest time it
/// has seen, so a laptop whose wall clock is days wrong still orders its writes after
/// everything it has received. Wall time is passed in: the core reads no clock itself.
public struct HybridClock: Sendable {
    /// A received HLC further ahead of the local wall clock than this is flagged as clock skew.
    public static let skewThresholdMillis: UInt64 = 10 * 60 * 1000
    /// How far ahead of the local wall clock a received reading may lift this clock: a week. A
    /// laptop days slow still follows the others' (honest) times, while one change dated
    /// 2^64 − 1 can no longer drag every replica to the end of time (where the next tick wrapped
    /// to 1970 and lost every comparison): at worst a hostile device moves every clock a week
    /// ahead. The change itself is kept, flagged as skewed, and ordered by its own HLC.
    public static let maxLeadMillis: UInt64 = 7 * 24 * 3_600_000
    /// The highest reading: the clock stays here rather than wrap.
    public static let maxMillis: UInt64 = 0xFFFF_FFFF_FFFF

    public private(set) var last: HLC

    public init(last: HLC = .zero) { self.last = last }

    /// A reading for a local write at wall time `wallMillis`.
    public mutating func tick(wallMillis: UInt64) -> HLC {
        if wallMillis > last.millis && wallMillis <= Self.maxMillis {
            last = HLC(millis: wallMillis, counter: 0)
        } else if last.counter == UInt16.max {
            // Saturates at the top instead of wrapping to 0 (a reading there repeats; the device
            // id and seq still order its writes).
            if last.millis < Self.maxMillis { last = HLC(millis: last.millis + 1, counter: 0) }
        } else {
            last = HLC(millis: last.millis, counter: last.counter + 1)
        }
        return last
    }

    /// Takes in a received reading. Returns true when it is far ahead of the local wall
    /// clock (the sender's or our clock is wrong): the change is kept, the log flags it.
    @discardableResult
    public mutating func observe(_ remote: HLC, wallMillis: UInt64) -> Bool {
        let followed = min(remote, Self.ceiling(wallMillis: wallMillis))
        if followed > last { last = followed }
        let (limit, overflow) = wallMillis.addingReportingOverflow(Self.skewThresholdMillis)
        return !overflow && remote.millis > limit
    }

    /// The highest reading a received HLC may lift the clock to at this wall time.
    public static func ceiling(wallMillis: UInt64) -> HLC {
        let (millis, overflow) = wallMillis.addingReportingOverflow(maxLeadMillis)
        return HLC(millis: overflow ? maxMillis : min(millis, maxMillis), counter: 0)
    }
}
