import GSEAI
import GSEAIGateway
import NIOHTTP1
import Testing

/// The five kinds of caller of a class's endpoints, and one check of an endpoint against each of them: the
/// permission matrices of `ClassPolicyTests` and `ClassAdminTests`.
struct PermissionMatrix {
    enum Caller: CaseIterable { case student, owner, otherInstructor, admin, anonymous }

    let fixture: ClassPolicyTests.Fixture
    /// An instructor who does not run the fixture's class.
    let otherInstructor: (user: User, key: String)
    let admin: (user: User, key: String)

    /// Adds the other instructor ("otto") and an administrator ("ada") to the fixture's gateway.
    init(_ fixture: ClassPolicyTests.Fixture) async throws {
        self.fixture = fixture
        otherInstructor = try await fixture.gateway.user("otto", role: .instructor)
        admin = try await fixture.gateway.user("ada", role: .admin)
    }

    func key(_ caller: Caller) -> String? {
        switch caller {
        case .student: fixture.student.key
        case .owner: fixture.instructor.key
        case .otherInstructor: otherInstructor.key
        case .admin: admin.key
        case .anonymous: nil
        }
    }

    /// The `Authorization` header of `caller` (none when anonymous).
    func headers(_ caller: Caller) -> [(String, String)] {
        key(caller).map { [("Authorization", "Bearer \($0)")] } ?? []
    }

    /// Calls the endpoint as each caller in `expected` and checks the status, and for a refusal its error:
    /// 401 an authentication error, 403 `forbidden`, 404 `notFound` (a class one may not see does not exist).
    /// The body is `body` as JSON, or `csv` as `text/csv`.
    func check(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil, csv: String? = nil, _ expected: [Caller: Int],
               notFound: String = "no such class", forbidden: String = "this needs the instructor role",
               sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for caller in Caller.allCases {
            guard let status = expected[caller] else { continue }
            let contentType = csv == nil ? "application/json" : "text/csv"
            let result = try await fixture.gateway.request(method, path, headers: [("Content-Type", contentType)] + headers(caller),
                                                           body: csv ?? body?.jsonString)
            #expect(result.status == status, "\(method) \(path) as \(caller): \(result.text)", sourceLocation: sourceLocation)
            switch result.status {
            case 401: #expect(result.json?["error"]?["type"] == "authentication_error", sourceLocation: sourceLocation)
            case 403: #expect(result.errorMessage == forbidden, sourceLocation: sourceLocation)
            case 404: #expect(result.errorMessage == notFound, sourceLocation: sourceLocation)
            default: break
            }
        }
    }
}
