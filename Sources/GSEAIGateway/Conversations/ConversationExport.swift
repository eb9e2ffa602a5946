import Foundation
import GSEAI

/// A conversation as a Markdown document a person can keep.
enum ConversationExport {
    static func markdown(_ conversation: Conversation, _ messages: [StoredMessage]) -> String {
        let formatter = ISO8601DateFormatter()
        var lines = ["# \(conversation.title.isEmpty ? "Conversation" : conversation.title)", ""]
        lines.append("- Model: \(conversation.model)")
        lines.append("- Started: \(formatter.string(from: conversation.createdAt))")
        if let system = conversation.systemPrompt, !system.isEmpty { lines.append("- System prompt: \(system)") }
        lines.append("")
        for message in messages {
            lines.append(message.role == "user" ? "## You" : "## Assistant")
            lines.append("")
            if let reasoning = message.reasoning, !reasoning.isEmpty {
                lines.append("<details><summary>Reasoning</summary>")
                lines.append("")
                lines.append(reasoning)
                lines.append("")
                lines.append("</details>")
                lines.append("")
            }
            lines.append(message.text)
            for hash in message.imageHashes { lines += ["", "![image](/api/images/\(hash))"] }
            if message.status != .complete {
                lines += ["", "*(\(message.status.rawValue)\(message.error.map { ": \($0)" } ?? ""))*"]
            }
            lines.append("")
        }
        return lines.joined(separator: "\n")
    }

    /// A safe file name from a title.
    static func fileName(_ title: String) -> String {
        let kept = title.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII ? Character($0) : "-" }
        let name = String(kept).split(separator: "-").joined(separator: "-").prefix(60)
        return name.isEmpty ? "conversation" : String(name)
    }
}
