import Foundation
import Hummingbird

/// Administrators' view of the model servers: each one's state (up, or left aside after failures and why),
/// its slots in use, the requests waiting for it, and its models. Never its token.
public struct UpstreamController: Sendable {
    let pool: UpstreamPool

    public init(pool: UpstreamPool) {
        self.pool = pool
    }

    /// Each path, defined once.
    enum Paths {
        static let upstreams: RouterPath = "/api/admin/upstreams"
    }

    public func register(on router: Router<GatewayRequestContext>) {
        router.get(Paths.upstreams, use: upstreams)
    }

    struct UpstreamView: Codable, Sendable {
        var name: String
        var kind: String
        var url: String
        var up: Bool
        var down_until: Date?
        var last_error: String?
        var slots: Int
        var busy: Int
        /// Requests waiting that prefer this upstream.
        var waiting: Int
        var models: [String]?
        var loaded: [String]
        var models_read_at: Date?
    }

    struct UpstreamsView: ResponseEncodable {
        var data: [UpstreamView]
        /// Requests waiting for a slot, in all.
        var waiting: Int
        var discipline: String
    }

    /// Every upstream; `?refresh=true` reads their models first (with one upstream, they are read only then,
    /// or the first time).
    @Sendable func upstreams(_ request: Request, context: GatewayRequestContext) async throws -> UpstreamsView {
        _ = try context.require(.admin)
        if request.form.get("refresh") == "true" || pool.upstreams.contains(where: { $0.status.refreshedAt == nil }) {
            await pool.refreshAll()
        }
        let usage = pool.scheduler.usage()
        let waiting = pool.scheduler.waitingPerUpstream()
        let now = Date()
        let views = pool.upstreams.map { upstream in
            let status = upstream.status
            let (busy, slots) = usage[upstream.name] ?? (0, upstream.settings.slots)
            return UpstreamView(
                name: upstream.name, kind: upstream.kind.rawValue, url: upstream.settings.url, up: upstream.isAvailable(at: now),
                down_until: status.downUntil.flatMap { $0 > now ? $0 : nil }, last_error: status.lastError, slots: slots, busy: busy,
                waiting: waiting[upstream.name, default: 0], models: status.models.map { $0.sorted() }, loaded: status.loaded.sorted(),
                models_read_at: status.refreshedAt
            )
        }
        return UpstreamsView(data: views, waiting: pool.scheduler.waitingCounts().total, discipline: pool.scheduler.discipline.rawValue)
    }
}
