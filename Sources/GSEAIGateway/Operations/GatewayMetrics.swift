import Hummingbird
import NIOCore
import Prometheus
import Synchronization

/// The gateway's Prometheus metrics, kept in a registry of their own.
///
/// The registry is owned here rather than bootstrapped into the global `MetricsSystem`, because
/// the global system can be bootstrapped only once per process and the tests build the app many
/// times. Every label has a bounded set of values, so a caller cannot grow the exposition by
/// inventing methods, paths or model names.
public final class GatewayMetrics: Sendable {
    /// The registry behind ``exposition()``; other parts of the gateway may add metrics to it.
    public let registry: PrometheusCollectorRegistry

    /// How many distinct model names get a label of their own before the rest share `other`.
    public let modelLabelLimit: Int

    private let activeStreams: Gauge

    /// One series: a metric and its label values, in the metric's label order (unused ones empty). Its labels
    /// are fields, not an array: a request's look-ups allocate nothing (bench/README.md, "Strings hashed").
    private struct Series: Hashable {
        enum Metric { case timeToFirstByte, upstreamErrors, queueWait }
        var metric: Metric
        var first: String
        var second = ""
    }
    /// The series made so far. The registry would find them again, but it builds the metric's name and
    /// checks its help text on every call, which costs more per request than everything else here.
    private let counters = Mutex<[Series: Counter]>([:])
    private let histograms = Mutex<[Series: DurationHistogram]>([:])
    private let gauges = Mutex<[String: Gauge]>([:])
    /// Each route's series (by method and route pattern): one look-up per request for its duration and its
    /// count by status.
    private let routes = Mutex<[RouteKey: RouteSeries]>([:])
    /// Each model's token counters, by the model's name as given: at most ``modelLabelLimit`` names, the rest
    /// counted in ``otherModel``'s (one look-up per answer for the label and both directions).
    private let models = Mutex<[String: TokenCounters]>([:])
    private let otherModel: TokenCounters
    /// How many distinct classes get a label of their own in the queue's metrics before the rest share `other`.
    private let seenClasses = Mutex<Set<String>>([])

    private struct RouteKey: Hashable {
        var method: String
        var route: String
    }

    /// A route's request duration, and its request counter by status (a route answers with a few statuses: they are
    /// looked for in order, without hashing).
    private final class RouteSeries: Sendable {
        let duration: DurationHistogram
        let byStatus: Mutex<[(code: Int, counter: Counter)]> = Mutex([])

        init(duration: DurationHistogram) {
            self.duration = duration
        }

        func counter(_ code: Int, _ make: () -> Counter) -> Counter {
            byStatus.withLock { known in
                if let found = known.first(where: { $0.code == code }) { return found.counter }
                let made = make()
                known.append((code, made))
                return made
            }
        }
    }

    /// A model's token counters, each made when first counted (a series at 0 is not shown).
    private final class TokenCounters: Sendable {
        let label: String
        let counters = Mutex<(input: Counter?, output: Counter?)>((nil, nil))

        init(label: String) {
            self.label = label
        }
    }

    private func counter(_ series: Series, _ make: () -> Counter) -> Counter {
        if let known = counters.withLock({ $0[series] }) { return known }
        let made = make()
        counters.withLock { $0[series] = made }
        return made
    }

    private func histogram(_ series: Series, _ make: () -> DurationHistogram) -> DurationHistogram {
        if let known = histograms.withLock({ $0[series] }) { return known }
        let made = make()
        histograms.withLock { $0[series] = made }
        return made
    }

    /// Creates the metrics in a new registry.
    /// - Parameter modelLabelLimit: the number of distinct `model` label values kept apart.
    public init(modelLabelLimit: Int = 64) {
        self.registry = PrometheusCollectorRegistry()
        self.modelLabelLimit = modelLabelLimit
        self.activeStreams = registry.makeGauge(descriptor: Self.activeStreamsName)
        self.otherModel = TokenCounters(label: "other")
        activeStreams.set(to: 0)
    }

    // MARK: HTTP

    /// Counts one answered request and records how long it took to produce the response head.
    /// - Parameters:
    ///   - method: the request method; unusual methods are counted as `other`.
    ///   - route: the matched route pattern (`/auth/keys/{id}`), or `unmatched`; never the raw path.
    ///   - status: the response status.
    ///   - duration: the time from the request to the response head.
    public func recordRequest(method: HTTPRequest.Method, route: String, status: HTTPResponse.Status, duration: Duration) {
        let method = Self.methodLabel(method)
        let key = RouteKey(method: method, route: route)
        let series = routes.withLock { routes in
            if let known = routes[key] { return known }
            let made = RouteSeries(duration: registry.makeDurationHistogram(
                descriptor: Self.requestDurationName, labels: [("method", method), ("route", route)], buckets: Self.requestBuckets))
            routes[key] = made
            return made
        }
        series.duration.record(duration)
        series.counter(status.code) {
            registry.makeCounter(descriptor: Self.requestsName, labels: [("method", method), ("route", route), ("status", String(status.code))])
        }.increment()
    }

    // MARK: Upstream

    /// Records how long the upstream took to send the first byte of its answer.
    /// - Parameters:
    ///   - surface: the API family of the call (``APISurface/rawValue``, such as `openAI`).
    ///   - duration: the time from sending the request to the first response byte.
    public func recordTimeToFirstByte(surface: String, _ duration: Duration) {
        histogram(Series(metric: .timeToFirstByte, first: surface)) {
            registry.makeDurationHistogram(descriptor: Self.timeToFirstByteName, labels: [("surface", surface)],
                                           buckets: Self.upstreamBuckets)
        }.record(duration)
    }

    /// Counts one failed upstream call.
    /// - Parameter kind: a short fixed category such as `timeout`, `connection` or `status`.
    public func recordUpstreamError(kind: String) {
        counter(Series(metric: .upstreamErrors, first: kind)) {
            registry.makeCounter(descriptor: Self.upstreamErrorsName, labels: [("kind", kind)])
        }.increment()
    }

    /// Counts the tokens of one answer.
    /// - Parameters:
    ///   - model: the model that answered; after ``modelLabelLimit`` distinct names, new ones count as `other`.
    ///   - input: prompt tokens.
    ///   - output: generated tokens.
    public func recordTokens(model: String, input: Int, output: Int) {
        guard input > 0 || output > 0 else { return }
        let model = tokenCounters(model)
        model.counters.withLock { counters in
            if input > 0 {
                if counters.input == nil { counters.input = makeTokenCounter("input", model.label) }
                counters.input?.increment(by: Int64(input))
            }
            if output > 0 {
                if counters.output == nil { counters.output = makeTokenCounter("output", model.label) }
                counters.output?.increment(by: Int64(output))
            }
        }
    }

    private func makeTokenCounter(_ direction: String, _ model: String) -> Counter {
        registry.makeCounter(descriptor: Self.tokensName, labels: [("direction", direction), ("model", model)])
    }

    /// The model's counters; model names come from callers, so only the first few get series of their own.
    private func tokenCounters(_ model: String) -> TokenCounters {
        models.withLock { models in
            if let known = models[model] { return known }
            guard models.count < modelLabelLimit else { return otherModel }
            let made = TokenCounters(label: model)
            models[model] = made
            return made
        }
    }

    // MARK: The fair queue

    /// Records how long a request waited for a slot of `upstream`, in the class whose policy applied.
    public func recordQueueWait(upstream: String, classID: String?, _ duration: Duration) {
        let label = classLabel(classID)
        histogram(Series(metric: .queueWait, first: upstream, second: label)) {
            registry.makeDurationHistogram(descriptor: Self.queueWaitName, labels: [("upstream", upstream), ("class", label)],
                                           buckets: Self.queueBuckets)
        }.record(duration)
    }

    /// Sets the queue's gauges of one upstream: its slots in use, all of them, and the requests waiting that
    /// prefer it.
    public func recordQueue(upstream: String, busy: Int, slots: Int, waiting: Int, up: Bool) {
        for (name, value, help) in [
            ("slots_busy", busy, "Slots of the model server running a request now."),
            ("slots", slots, "Requests the model server runs at once."),
            ("queue_waiting", waiting, "Requests waiting for a slot that prefer this model server."),
            ("up", up ? 1 : 0, "Whether the model server answers (1) or is left aside after failures (0)."),
        ] {
            let key = "\(name)|\(upstream)"
            let gauge = gauges.withLock { gauges in
                if let known = gauges[key] { return known }
                let made = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "gseai", subsystem: "upstream", metricName: name, helpText: help),
                                              labels: [("upstream", upstream)])
                gauges[key] = made
                return made
            }
            gauge.set(to: Double(value))
        }
    }

    /// The class as a label: class ids come from the database, a bounded but growing set; past the limit
    /// they share `other`.
    func classLabel(_ classID: String?) -> String {
        guard let classID else { return "none" }
        return seenClasses.withLock { seen in
            if seen.contains(classID) { return classID }
            guard seen.count < modelLabelLimit else { return "other" }
            seen.insert(classID)
            return classID
        }
    }

    // MARK: Streams

    /// Notes that a streamed answer began; pair every call with ``streamEnded()``.
    public func streamStarted() {
        activeStreams.increment()
    }

    /// Notes that a streamed answer finished, failed or was abandoned by the client.
    public func streamEnded() {
        activeStreams.decrement()
    }

    // MARK: Exposition

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    public func exposition() -> ByteBuffer {
        ByteBuffer(bytes: registry.emitToBuffer())
    }

    // MARK: Labels

    /// The route label for a request: the pattern the router matched, or `unmatched`.
    ///
    /// Hummingbird records the pattern in `context.endpointPath` (`NotFound` when nothing matched);
    /// the raw path is never used because ids in it would make a series per id.
    public static func routeLabel(endpointPath: String?) -> String {
        guard let endpointPath, endpointPath != "NotFound" else { return "unmatched" }
        return endpointPath
    }

    /// The method as a label; any other method (HTTP allows any token) would be a new series per token.
    static func methodLabel(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get, .head, .post, .put, .patch, .delete, .options: method.rawValue
        default: "other"
        }
    }

    // MARK: Names and buckets

    // Computed rather than stored: `MetricNameDescriptor` is not `Sendable`, so it cannot be a static constant.
    private static var requestsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", subsystem: "http", metricName: "requests", unitName: "total",
            helpText: "HTTP requests answered, by method, route pattern and status."
        )
    }
    private static var requestDurationName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", subsystem: "http", metricName: "request_duration", unitName: "seconds",
            helpText: "Time from request to response head, by method and route pattern."
        )
    }
    private static var timeToFirstByteName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", subsystem: "upstream", metricName: "time_to_first_byte", unitName: "seconds",
            helpText: "Time until the model server sent the first byte of its answer, by API surface."
        )
    }
    private static var activeStreamsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", metricName: "active", unitName: "streams",
            helpText: "Streamed answers currently being relayed."
        )
    }
    private static var tokensName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", metricName: "tokens", unitName: "total",
            helpText: "Tokens processed, by direction (input or output) and model."
        )
    }
    private static var upstreamErrorsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", subsystem: "upstream", metricName: "errors", unitName: "total",
            helpText: "Failed calls to the model server, by kind."
        )
    }

    private static var queueWaitName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gseai", subsystem: "queue", metricName: "wait", unitName: "seconds",
            helpText: "Time a request waited for a slot of a model server, by upstream and class."
        )
    }

    /// 1 ms to 3 min: no wait at all, up to the longest wait allowed.
    static let queueBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(10), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        .seconds(10), .seconds(20), .seconds(30), .seconds(60), .seconds(120), .seconds(180),
    ]

    /// 1 ms to 60 s: static pages answer in milliseconds, non-streamed model answers take up to a minute.
    static let requestBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    /// 10 ms to 60 s: a first byte comes after the model is loaded and the prompt is processed.
    static let upstreamBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(20), .seconds(30), .seconds(60),
    ]
}
