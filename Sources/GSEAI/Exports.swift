// The wire formats (JSON values, Server-Sent Events, data URLs) are part of the client's API.
@_exported import GSEAIFormats
