@testable import FieldSyncCore

/// SplitMix64: a small seeded generator, so every scenario replays from its seed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension RosterEntry {
    /// A roster entry for a fake device (no private key): for merge-only tests.
    static func fake(_ rng: inout SeededRNG, role: Role, name: String) -> RosterEntry {
        RosterEntry(publicKey: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }, name: name, role: role, enrolledAtMillis: 0)
    }
}

let day: UInt64 = 86_400_000
let baseMillis: UInt64 = 1_780_000_000_000
