import Foundation
import Hummingbird

/// A class's line for the model servers, for its instructor: who waits, who is being answered, and how long
/// the class's requests waited lately.
extension ClassController.Paths {
    static let queue: RouterPath = "/api/classes/:id/queue"
}

extension ClassController {
    func registerQueue(on router: Router<GatewayRequestContext>) {
        router.get(Paths.queue, use: queue)
    }

    struct QueueStudentView: Codable, Sendable {
        var user_id: String
        var username: String
        /// Requests waiting for a slot.
        var waiting: Int
        /// Requests being answered now.
        var running: Int
    }

    struct QueueView: ResponseEncodable {
        var waiting: Int
        var running: Int
        var students: [QueueStudentView]
        /// The class's last waits (up to 200), in seconds: how many, the median and the 95th percentile.
        var recent_waits: Int
        var wait_p50_seconds: Double?
        var wait_p95_seconds: Double?
    }

    @Sendable func queue(_ request: Request, context: GatewayRequestContext) async throws -> QueueView {
        let (_, classSession) = try await ownedClass(context)
        let (waiting, holding, waits) = scheduler.classQueue(classSession.id)
        let names = Dictionary(try await storage.classes.roster(classID: classSession.id).map { ($0.userID, $0.username) },
                               uniquingKeysWith: { first, _ in first })
        let students = Set(waiting.keys).union(holding.keys).map { userID in
            QueueStudentView(user_id: userID, username: names[userID] ?? "(left the class)", waiting: waiting[userID, default: 0],
                             running: holding[userID, default: 0])
        }.sorted { ($0.waiting + $0.running, $1.username) > ($1.waiting + $1.running, $0.username) }
        let sorted = waits.map(\.seconds).sorted()
        func percentile(_ p: Double) -> Double? {
            guard !sorted.isEmpty else { return nil }
            let index = min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)
            return (sorted[max(0, index)] * 1000).rounded() / 1000
        }
        return QueueView(waiting: waiting.values.reduce(0, +), running: holding.values.reduce(0, +), students: students,
                         recent_waits: sorted.count, wait_p50_seconds: percentile(0.5), wait_p95_seconds: percentile(0.95))
    }
}
