import AsyncHTTPClient
import Foundation
import GSEAI
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The gateway's parts, wired in one place.
public struct Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let storage: Storage
    public let accounts: AccountService
    /// The model servers and the fair queue for their slots.
    public let pool: UpstreamPool
    /// The one admission step: policy, route, a slot.
    public let admission: Admission
    public let metrics: GatewayMetrics
    /// The answers being generated now.
    public let hub: GenerationHub
    public let engine: ConversationEngine
    /// Token usage counted in memory and written once a second.
    public let usageMeter: UsageMeter
    /// Class policies, applied on every surface.
    public let policies: PolicyEnforcer

    /// Wires the parts. `passwordCost` is bcrypt's; tests lower it. `clock` is "now" for class policies
    /// (dates, rate windows, budget days); tests move it.
    public init(configuration: GatewayConfiguration, storage: Storage, passwordCost: UInt8 = 12,
                clock: @escaping @Sendable () -> Date = Date.init, logger: Logger) throws {
        self.configuration = configuration
        self.storage = storage
        self.accounts = AccountService(storage: storage, hasher: PasswordHasher(cost: passwordCost),
                                       sessionLifetime: configuration.sessionLifetime)
        self.metrics = GatewayMetrics()
        self.pool = try UpstreamPool(settings: configuration.upstreams, timeouts: configuration.timeouts,
                                     scheduler: FairScheduler(limits: configuration.queueLimits, discipline: configuration.queueDiscipline),
                                     refreshInterval: configuration.upstreamRefresh, metrics: metrics, logger: logger)
        self.hub = GenerationHub()
        self.usageMeter = UsageMeter(repository: storage.usage, interval: configuration.usageFlushInterval, logger: logger)
        if let local = storage.shared.budgets as? LocalBudgetLedger {
            // One process: its budgets read the meter's totals, which include what is not written yet.
            let meter = usageMeter
            local.meter.withLock { $0 = meter }
        }
        self.policies = PolicyEnforcer(classes: storage.classes, limits: storage.shared.limits, budgets: storage.shared.budgets,
                                       clock: clock)
        self.admission = Admission(policies: policies, pool: pool, metrics: metrics, defaultCap: configuration.concurrencyPerUser)
        var engine = ConversationEngine(storage: storage, admission: admission, hub: hub, metrics: metrics, usageMeter: usageMeter,
                                        logger: logger)
        engine.maxOutputTokens = configuration.chatMaxOutputTokens
        self.engine = engine
    }

    /// Marks answers that were being generated when the process last stopped as interrupted: every one for
    /// a gateway alone; with replicas (PostgreSQL), only those of replicas no longer alive, never a live
    /// sibling's. The replicas run it again every few seconds (``ReplicaSweeper``), for a sibling that died.
    @discardableResult
    public func recoverInterruptedAnswers() async throws -> Int {
        try await storage.messages.markStreamingAsInterrupted(sparing: try await storage.shared.replicas.liveReplicaIDs())
    }

    /// The folder the page is served from: the configured one, else the copy built into the package.
    var pageFolder: String {
        configuration.publicDirectory.isEmpty ? PageFolder.bundled() ?? "Public" : configuration.publicDirectory
    }

    /// The router with every endpoint and middleware.
    public func buildRouter() -> Router<GatewayRequestContext> {
        buildRouter(proxy: makeProxy())
    }

    /// The forwarded routes' handler (one for both lanes: it remembers which upstream runs each download job).
    func makeProxy() -> ProxyController {
        ProxyController(admission: admission, storage: storage, metrics: metrics, usageMeter: usageMeter,
                        maxBodyBytes: configuration.maxBodyBytes, imageLimits: configuration.imageLimits)
    }

    /// The gateway's own handling of the forwarded routes' requests that the lane reads: the router's middleware
    /// (less the page's files) and handler, without the router (``ForwardedResponder``).
    func forwardedResponder(proxy: ProxyController) -> ForwardedResponder {
        ForwardedResponder(middleware: GatewayMiddleware<GatewayRequestContext>(metrics: metrics),
                           authentication: AuthenticationMiddleware(accounts: accounts, publicOrigin: configuration.publicOrigin),
                           proxy: proxy)
    }

    func buildRouter(proxy: ProxyController) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        let pageFolder = self.pageFolder
        let accounts = self.accounts
        let publicOrigin = configuration.publicOrigin
        let metrics = self.metrics
        // One stack of one type rather than one layer each (`add(middleware:)` wraps each in closures behind
        // an existential): fewer asynchronous frames and calls per request. The gateway's own handling is one
        // middleware (the log, metrics, gzip, error format and path guard; the security headers are the codec's,
        // `GatewayHTTP1Codec.FixedFields`).
        router.addMiddleware {
            GatewayMiddleware(metrics: metrics)
            // The page: index.html for "/", with validators (ETag, Last-Modified) for caches.
            FileMiddleware(pageFolder, cacheControl: .init([(MediaType(type: .any), [.noCache])]), searchForIndexHtml: true)
            AuthenticationMiddleware(accounts: accounts, publicOrigin: publicOrigin)
        }

        let pool = self.pool
        HealthController(checks: [
            (name: "database", check: storage.ping),
            // Ready when at least one model server answers.
            (name: "upstream", check: { try await pool.anyAnswers() }),
        ], metrics: metrics).register(on: router)
        AccountController(accounts: accounts, throttle: LoginThrottle(limit: configuration.loginAttempts, window: configuration.loginWindow, attempts: storage.shared.rates),
                          secureCookies: configuration.secureCookies, publicOrigin: configuration.publicOrigin).register(on: router)
        ConversationController(engine: engine, imageLimits: configuration.imageLimits).register(on: router)
        proxy.register(on: router)
        UpstreamController(pool: pool).register(on: router)
        let setupLinks = SetupLinks(accounts: accounts, publicURL: configuration.effectivePublicURL, clock: policies.clock)
        ClassController(accounts: accounts, policies: policies, secureCookies: configuration.secureCookies,
                        publicOrigin: configuration.publicOrigin, setupLinks: setupLinks, scheduler: pool.scheduler).register(on: router)
        SetupLinkController(links: setupLinks, publicOrigin: configuration.publicOrigin).register(on: router)
        AdminController(accounts: accounts, setupLinks: setupLinks).register(on: router)
        return router
    }

    /// The application: the HTTP(S) server plus the services whose lifetime it owns.
    public func buildApplication(
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in },
        logger: Logger
    ) throws -> some ApplicationProtocol {
        // Long enough for the slowest upstream answer, so that a connection waiting on one is not dropped.
        let idle = TimeAmount(configuration.firstByteTimeout + configuration.idleTimeout + .seconds(30))
        let http1 = HTTP1Channel.Configuration(idleTimeout: idle)
        let proxy = makeProxy()
        let routing = buildRouter(proxy: proxy).buildResponder()
        let responder = SeparateTaskResponder(routing)
        let serverName = "gseai"
        // The forwarded routes' requests are answered by the same middleware and handler, from the connection's
        // handler (whose task for the request is already one of its own: no child task).
        let forwarded = forwardedResponder(proxy: proxy)
        let lane = ForwardingLane.Service(routes: ForwardedRoutes(ProxyEndpoint.all),
                                          respond: { request, context, match in try await forwarded.respond(to: request, context: consume context, match) },
                                          logger: logger, serverName: serverName,
                                          bodyLimit: min(ForwardingLane.largestBody, configuration.maxBodyBytes))
        var server = HTTPServerBuilder { respond in
            GatewayHTTP1(inner: HTTP1Channel(responder: respond, configuration: http1), lane: lane,
                         stallLimit: TimeAmount(configuration.callerStallTimeout))
        }
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            let tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
            server = try .tls(server, tlsConfiguration: tls)
        }
        return Application(
            responder: responder,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: serverName),
            // A service group stops its services one after another, the last first (and the server, which
            // Hummingbird puts after these, before them all): the chat page's answers still being generated
            // (stopped and written, their usage counted), then the upstream pool, then the usage meter's final
            // write, then the replica sweeper, and only then the storage they all write to.
            services: [
                ShutdownService(name: "storage", action: storage.close), ReplicaSweeper(gateway: self), usageMeter, pool,
                ShutdownService(name: "answers", action: { [hub] in await hub.stopAll(within: .seconds(5)) }),
            ],
            onServerRunning: onServerRunning,
            logger: logger
        )
    }

    /// After the application has stopped, however it stopped: writes the usage still counted and closes the
    /// storage (both harmless when the graceful stop did them already).
    public func finishAfterStop() async {
        await usageMeter.flush()
        try? await storage.close()
    }

    /// On the first start (no users), creates the `admin` account with a generated password and returns
    /// the lines to print, so that a newcomer can log in with no other step.
    public func firstRunSetup() async throws -> [String]? {
        guard try await storage.users.count() == 0 else { return nil }
        let (user, password) = try await accounts.createUser(username: "admin", password: nil, role: .admin)
        return [
            "First run: created the administrator account.",
            "  Log in at \(configuration.effectivePublicURL)/ as '\(user.username)' with password: \(password ?? "")",
            "  This password is shown only once; change it after logging in (POST /auth/password).",
        ]
    }
}

extension GatewayConfiguration {
    /// The origin (scheme, host, port) of the public URL, for the CSRF check.
    var publicOrigin: String {
        guard let url = URL(string: effectivePublicURL), let scheme = url.scheme, let host = url.host else { return effectivePublicURL }
        return "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
    }
}

/// A service that does nothing until the application stops gracefully, then runs `action` in its turn: for
/// resources the application owns. Cancelled instead (every service at once, in no order: a graceful stop that
/// outlasted its limit), it does nothing: whoever ran the application then finishes the work in order
/// (``Gateway/finishAfterStop()``).
struct ShutdownService: Service {
    let name: String
    let action: @Sendable () async throws -> Void

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            return
        }
        try await action()
    }
}

/// Bounded waits, for the steps of a stop (the storage's, the answers', a replica's): none may hold it for ever.
extension Task where Success == Void, Failure == Never {
    /// Waits for the task to end, but at most `limit`.
    func value(within limit: Duration) async {
        let resumed = Mutex(false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resume: @Sendable () -> Void = {
                if resumed.withLock({ done in defer { done = true }; return !done }) { continuation.resume() }
            }
            Task<Void, Never> {
                await self.value
                resume()
            }
            Task<Void, Never> {
                try? await Task<Never, Never>.sleep(for: limit)
                resume()
            }
        }
    }
}

/// With several replicas: every few seconds, marks the answers of a replica that died (its heartbeat
/// stopped) as interrupted, and shares each model server's slots among the live replicas (each queues for
/// its share, at least one); alone, it does nothing.
struct ReplicaSweeper: Service {
    let gateway: Gateway
    var interval: Duration = .seconds(5)

    func run() async throws {
        // A service that returned would end the application: alone, it waits for the shutdown.
        guard let first = (try? await gateway.storage.shared.replicas.liveReplicaIDs()) ?? nil else {
            try? await gracefulShutdown()
            return
        }
        let initial = share(among: first.count, previous: nil)
        await cancelWhenGracefulShutdown {
            var shared = initial
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                do {
                    let count = try await gateway.recoverInterruptedAnswers()
                    if count > 0 { gateway.engine.logger.notice("answers of a replica that stopped are marked interrupted", metadata: ["count": "\(count)"]) }
                    if let live = try await gateway.storage.shared.replicas.liveReplicaIDs() {
                        shared = share(among: live.count, previous: shared)
                    }
                } catch {
                    gateway.engine.logger.warning("could not check the other replicas", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Gives this replica its share of every upstream's slots when the number of replicas changed; returns
    /// the number it shared among.
    private func share(among replicas: Int, previous: Int?) -> Int {
        let replicas = max(1, replicas)
        guard replicas != previous else { return replicas }
        for upstream in gateway.pool.upstreams {
            let share = max(1, upstream.settings.slots / replicas)
            gateway.pool.scheduler.setSlots(share, for: upstream.name)
        }
        gateway.engine.logger.notice("slots shared among replicas", metadata: ["replicas": "\(replicas)"])
        return replicas
    }
}
