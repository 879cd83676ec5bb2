@testable import FieldSyncClient
import FieldSyncCore
import Foundation
import Testing

/// The laptop decides a refusal on its problem code (`SyncTransport.problemExits`), never on the
/// words of its detail.
@Suite struct ProblemCodeTests {
    @Test func everyCodeHasAnExitAndSurvivesTheWire() throws {
        for code in Problem.Code.allCases {
            #expect(SyncTransport.problemExits[code] != nil, "\(code) has no exit code")
            let wire = try JSONEncoder().encode(Problem(code, "whatever the server says"))
            let back = try JSONDecoder().decode(Problem.self, from: wire)
            #expect(back.code == code && back.status == code.status && back.type == "urn:fieldsync:problem:\(code.rawValue)")
        }
        #expect(Problem(status: 400, title: "Bad Request", detail: "x").code == nil)
        #expect(Problem(status: 400, title: "Bad Request", detail: "x", type: "urn:fieldsync:problem:no-such-code").code == nil)
    }

    @Test func theDecisionIsTheCodesNotTheText() {
        // The clock offset is relearned for the freshness code alone, whatever the detail says.
        let created = SyncTransport.refusal(status: 401, problem: Problem(.signatureCreated, "clock skew"))
        #expect(created.exit == .authentication && created.problem == .signatureCreated)
        let expired = SyncTransport.refusal(status: 401, problem: Problem(.signatureExpired, "signature created long ago"))
        #expect(expired.exit == .authentication && expired.problem == .signatureExpired)
        let slow = SyncTransport.refusal(status: 408, problem: Problem(.transferTooSlow, "slow"))
        #expect(slow.exit == .unreachable && slow.uploadCut)
        let busy = SyncTransport.refusal(status: 429, problem: Problem(.rateLimited, "busy"))
        #expect(busy.exit == .unreachable && !busy.uploadCut)
        #expect(SyncTransport.refusal(status: 403, problem: Problem(.deviceRevoked, "")).exit == .authentication)
        #expect(SyncTransport.refusal(status: 413, problem: Problem(.tooManyChanges, "")).exit == .failure)
        // No code (a proxy's page, an older server): the status decides.
        #expect(SyncTransport.refusal(status: 502, problem: nil).exit == .unreachable)
        #expect(SyncTransport.refusal(status: 401, problem: nil).exit == .authentication && SyncTransport.refusal(status: 401, problem: nil).problem == nil)
        #expect(SyncTransport.refusal(status: 408, problem: nil).uploadCut)
    }
}
