import NIOCore
import Testing

@testable import GSEAIGateway

/// What the proxy notices in an answer going by.
@Suite struct ResponseObserverTests {
    func endpoint(_ path: String) throws -> ProxyEndpoint {
        try #require(ProxyEndpoint.all.first { $0.path == path && $0.method == .post })
    }

    @Test func theByteSearchFindsANeedleAnywhereAndOnlyWhereItIs() {
        #expect(ResponseObserver.contains("\"usage\":{}", "\"usage\""))
        #expect(ResponseObserver.contains("{\"a\":1,\"usage\"", "\"usage\""))
        #expect(ResponseObserver.contains("xx\"usa\"usage\"", "\"usage\""))
        #expect(!ResponseObserver.contains("\"usag", "\"usage\""))
        #expect(!ResponseObserver.contains("", "\"usage\""))
        #expect(!ResponseObserver.contains("\"Usage\" \"usage \"", "\"usage\""))
        #expect(ResponseObserver.contains("é\"type\"", "\"type\""))
        #expect(ResponseObserver.contains("{\"done\":true}", Array("\"done\":true".utf8)))
        #expect(!ResponseObserver.contains("{\"done\":false}", Array("\"done\":true".utf8)))
    }

    @Test func aFinalEventWithoutItsBlankLineStillEndsTheStream() throws {
        for (path, last) in [("/v1/chat/completions", "data: [DONE]\n"),
                             ("/v1/messages", "event: message_stop\ndata: {\"type\":\"message_stop\"}\n"),
                             ("/api/v1/chat", "event: chat.end\ndata: {\"type\":\"chat.end\",\"result\":{\"stats\":{\"input_tokens\":3,\"total_output_tokens\":4}}}")] {
            var observer = ResponseObserver(endpoint: try endpoint(path))
            observer.observe(streamPiece: ByteBuffer(string: "data: {\"choices\":[]}\n\n"))
            observer.observe(streamPiece: ByteBuffer(string: last))
            #expect(!observer.sawFinalEvent, "\(path): the last event is not complete yet")
            observer.finishStream()
            #expect(observer.sawFinalEvent, "\(path)")
            if path == "/api/v1/chat" {
                #expect(observer.inputTokens == 3 && observer.outputTokens == 4)
            }
        }
    }

    @Test func aStreamCutMidEventHasNoFinalEvent() throws {
        var observer = ResponseObserver(endpoint: try endpoint("/v1/chat/completions"))
        observer.observe(streamPiece: ByteBuffer(string: "data: {\"choices\":[{\"delta\":{\"content\":\"Hel"))
        observer.finishStream()
        #expect(!observer.sawFinalEvent)
    }
}
