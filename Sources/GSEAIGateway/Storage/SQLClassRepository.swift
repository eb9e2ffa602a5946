import Foundation
import SQLKit

/// Classes in the `classes` table (the policy as JSON text), their members in `class_members`, and each user's
/// active class in `users.active_class_id`.
struct SQLClassRepository: ClassRepository {
    let database: any SQLDatabase

    // MARK: Classes

    func create(_ classSession: ClassSession) async throws {
        let joinCode = Self.stored(joinCode: classSession.joinCode)
        let inserted = try await self.database.insert(into: "classes")
            .columns(Self.columns)
            .values(try Self.values(of: classSession, joinCode: joinCode))
            // Only the join code: a clash of ids is a bug and should fail loudly, not read as "code taken".
            .ignoringConflicts(with: "join_code")
            .returning("id")
            .first()
        guard inserted != nil else { throw Self.codeTaken(joinCode) }
    }

    func find(id: String) async throws -> ClassSession? {
        try await self.select().where("id", .equal, id).first().map(ClassSession.init(row:))
    }

    func find(joinCode: String) async throws -> ClassSession? {
        try await self.select()
            .where("join_code", .equal, Self.stored(joinCode: joinCode))
            .first()
            .map(ClassSession.init(row:))
    }

    func list(instructorID: String?) async throws -> [ClassSession] {
        var query = self.select()
        if let instructorID {
            query = query.where("instructor_id", .equal, instructorID)
        }
        return try await query
            .orderBy("created_at", .descending)
            .orderBy("id", .descending)
            .all()
            .map(ClassSession.init(row:))
    }

    func update(_ classSession: ClassSession) async throws {
        let joinCode = Self.stored(joinCode: classSession.joinCode)
        let policy = try Self.json(classSession.policy)
        try await self.database.transaction { session in
            // Writing first takes the write lock before the code is checked, so no other class can take the code
            // between the check and the commit; a taken code then rolls the write back.
            let updated = try await session.update("classes")
                .set("name", to: classSession.name)
                .set("is_open", to: classSession.isOpen)
                .set("starts_at", to: classSession.startsAt?.unixSeconds)
                .set("ends_at", to: classSession.endsAt?.unixSeconds)
                .set("policy", to: policy)
                .where("id", .equal, classSession.id)
                .returning("id")
                .first()
            guard updated != nil else { throw StorageError.notFound }
            let holder = try await session.select()
                .column("id")
                .from("classes")
                .where("join_code", .equal, joinCode)
                .where("id", .notEqual, classSession.id)
                .first()
            guard holder == nil else { throw Self.codeTaken(joinCode) }
            try await session.update("classes")
                .set("join_code", to: joinCode)
                .where("id", .equal, classSession.id)
                .run()
        }
    }

    func delete(id: String) async throws -> Bool {
        // The memberships go with it (ON DELETE CASCADE); conversations and active classes lose it (SET NULL).
        try await self.database.delete(from: "classes")
            .where("id", .equal, id)
            .returning("id")
            .first() != nil
    }

    // MARK: Members

    func addMember(classID: String, userID: String, at date: Date) async throws -> Bool {
        try await self.database.insert(into: "class_members")
            .columns("class_id", "user_id", "joined_at")
            .values(SQLBind(classID), SQLBind(userID), SQLBind(date.unixSeconds))
            .ignoringConflicts(with: ["class_id", "user_id"])
            .returning("user_id")
            .first() != nil
    }

    func removeMember(classID: String, userID: String) async throws -> Bool {
        try await self.database.transaction { session in
            let removed = try await session.delete(from: "class_members")
                .where("class_id", .equal, classID)
                .where("user_id", .equal, userID)
                .returning("user_id")
                .first() != nil
            // A class the student has left no longer applies to them.
            try await session.update("users")
                .set("active_class_id", to: SQLLiteral.null)
                .where("id", .equal, userID)
                .where("active_class_id", .equal, classID)
                .run()
            return removed
        }
    }

    func members(classID: String) async throws -> [ClassMember] {
        try await self.database.select()
            .columns("class_id", "user_id", "joined_at")
            .from("class_members")
            .where("class_id", .equal, classID)
            .orderBy("joined_at")
            .orderBy("user_id")
            .all()
            .map { row in
                ClassMember(
                    classID: try row.decode(column: "class_id", as: String.self),
                    userID: try row.decode(column: "user_id", as: String.self),
                    joinedAt: try row.decodeDate(column: "joined_at")
                )
            }
    }

    func roster(classID: String) async throws -> [RosterEntry] {
        try await self.database.raw("""
            SELECT users.id, users.username, users.role, users.disabled, users.last_login_at, class_members.joined_at,
                CASE WHEN EXISTS (SELECT 1 FROM api_keys WHERE api_keys.user_id = users.id AND api_keys.revoked_at IS NULL)
                    THEN 1 ELSE 0 END AS has_key,
                (SELECT MAX(login_sessions.last_seen_at) FROM login_sessions WHERE login_sessions.user_id = users.id)
                    AS session_seen_at,
                (SELECT MAX(api_keys.last_used_at) FROM api_keys WHERE api_keys.user_id = users.id) AS key_used_at,
                CASE WHEN EXISTS (
                    SELECT 1 FROM class_members AS other
                    JOIN classes AS other_class ON other_class.id = other.class_id
                    WHERE other.user_id = users.id AND other_class.instructor_id <> (
                        SELECT instructor_id FROM classes WHERE classes.id = \(bind: classID))
                ) THEN 1 ELSE 0 END AS shared
            FROM class_members
            JOIN users ON users.id = class_members.user_id
            WHERE class_members.class_id = \(bind: classID)
            ORDER BY class_members.joined_at, users.id
            """)
            .all()
            .map { row in
                let roleName = try row.decode(column: "role", as: String.self)
                let seen = [try row.decodeOptionalDate(column: "session_seen_at"), try row.decodeOptionalDate(column: "key_used_at")]
                return RosterEntry(
                    userID: try row.decode(column: "id", as: String.self),
                    username: try row.decode(column: "username", as: String.self),
                    role: Role(rawValue: roleName) ?? .student,
                    disabled: try row.decode(column: "disabled", as: Bool.self),
                    lastLoginAt: try row.decodeOptionalDate(column: "last_login_at"),
                    hasLiveKey: try row.decode(column: "has_key", as: Int.self) != 0,
                    joinedAt: try row.decodeDate(column: "joined_at"),
                    lastSeenAt: seen.compactMap { $0 }.max(),
                    inAnotherInstructorsClass: try row.decode(column: "shared", as: Int.self) != 0
                )
            }
    }

    func classes(ofMember userID: String) async throws -> [ClassSession] {
        try await self.select()
            .where(SQLColumn("id"), .in, SQLGroupExpression(
                self.database.select()
                    .column("class_id")
                    .from("class_members")
                    .where("user_id", .equal, userID)
                    .select
            ))
            .orderBy("created_at", .descending)
            .orderBy("id", .descending)
            .all()
            .map(ClassSession.init(row:))
    }

    func isMember(classID: String, userID: String) async throws -> Bool {
        try await self.database.select()
            .column("user_id")
            .from("class_members")
            .where("class_id", .equal, classID)
            .where("user_id", .equal, userID)
            .first() != nil
    }

    // MARK: Invitations

    func invite(classID: String, userID: String, at date: Date) async throws -> Bool {
        guard try await !isMember(classID: classID, userID: userID) else { return false }
        return try await self.database.insert(into: "class_invitations")
            .columns("class_id", "user_id", "created_at")
            .values(SQLBind(classID), SQLBind(userID), SQLBind(date.unixSeconds))
            .ignoringConflicts(with: ["class_id", "user_id"])
            .returning("user_id")
            .first() != nil
    }

    func invitations(classID: String?, userID: String?) async throws -> [ClassInvitation] {
        var query = self.database.select()
            .columns(SQLColumn("class_id", table: "class_invitations"), SQLColumn("user_id", table: "class_invitations"),
                     SQLColumn("created_at", table: "class_invitations"), SQLColumn("username", table: "users"))
            .from("class_invitations")
            .join("users", on: SQLColumn("id", table: "users"), .equal, SQLColumn("user_id", table: "class_invitations"))
        if let classID { query = query.where(SQLColumn("class_id", table: "class_invitations"), .equal, SQLBind(classID)) }
        if let userID { query = query.where(SQLColumn("user_id", table: "class_invitations"), .equal, SQLBind(userID)) }
        return try await query
            .orderBy(SQLColumn("created_at", table: "class_invitations"))
            .orderBy(SQLColumn("class_id", table: "class_invitations"))
            .all()
            .map { row in
                ClassInvitation(
                    classID: try row.decode(column: "class_id", as: String.self),
                    userID: try row.decode(column: "user_id", as: String.self),
                    username: try row.decode(column: "username", as: String.self),
                    invitedAt: try row.decodeDate(column: "created_at")
                )
            }
    }

    func acceptInvitation(classID: String, userID: String, at date: Date) async throws -> Bool {
        try await self.database.transaction { session in
            // Deleting first takes the write lock: of two acceptances at once, one finds the invitation.
            let removed = try await session.delete(from: "class_invitations")
                .where("class_id", .equal, classID)
                .where("user_id", .equal, userID)
                .returning("user_id")
                .first()
            guard removed != nil else { return false }
            try await session.insert(into: "class_members")
                .columns("class_id", "user_id", "joined_at")
                .values(SQLBind(classID), SQLBind(userID), SQLBind(date.unixSeconds))
                .ignoringConflicts(with: ["class_id", "user_id"])
                .run()
            try await session.update("users")
                .set("active_class_id", to: classID)
                .where("id", .equal, userID)
                .run()
            return true
        }
    }

    func removeInvitation(classID: String, userID: String) async throws -> Bool {
        try await self.database.delete(from: "class_invitations")
            .where("class_id", .equal, classID)
            .where("user_id", .equal, userID)
            .returning("user_id")
            .first() != nil
    }

    // MARK: Active class

    func setActiveClass(userID: String, classID: String?) async throws {
        var query = self.database.update("users")
            .set("active_class_id", to: classID)
            .where("id", .equal, userID)
        if let classID {
            // In the statement, so that a missing class reads as not found rather than as a foreign key error.
            query = query.where(
                "EXISTS (SELECT 1 FROM classes WHERE classes.id = \(bind: classID))" as SQLQueryString
            )
        }
        let updated = try await query.returning("id").first()
        guard updated != nil else { throw StorageError.notFound }
    }

    func activeClass(userID: String) async throws -> String? {
        try await self.database.select()
            .column("active_class_id")
            .from("users")
            .where("id", .equal, userID)
            .first(decodingColumn: "active_class_id", as: String?.self) ?? nil
    }

    // MARK: Usage

    func memberUsage(classID: String, since day: String) async throws -> [UsageRecord] {
        // Days are `YYYY-MM-DD`, so comparing the text compares the dates.
        try await self.database.raw("""
            SELECT usage_daily.user_id, usage_daily.class_id, usage_daily.model, usage_daily.day, usage_daily.requests,
                usage_daily.input_tokens, usage_daily.output_tokens
            FROM usage_daily
            JOIN class_members ON class_members.class_id = usage_daily.class_id
                AND class_members.user_id = usage_daily.user_id
            WHERE usage_daily.class_id = \(bind: classID) AND usage_daily.day >= \(bind: day)
            ORDER BY usage_daily.day DESC, usage_daily.user_id, usage_daily.model
            """)
            .all()
            .map(UsageRecord.init(row:))
    }

    // MARK: Rows

    private static let columns = [
        "id", "instructor_id", "name", "join_code", "is_open", "starts_at", "ends_at", "policy", "created_at",
    ]

    private static func values(of classSession: ClassSession, joinCode: String) throws -> [any SQLExpression] {
        [
            SQLBind(classSession.id), SQLBind(classSession.instructorID), SQLBind(classSession.name),
            SQLBind(joinCode), SQLBind(classSession.isOpen), SQLBind(classSession.startsAt?.unixSeconds),
            SQLBind(classSession.endsAt?.unixSeconds), SQLBind(try Self.json(classSession.policy)),
            SQLBind(classSession.createdAt.unixSeconds),
        ]
    }

    /// Join codes are compared case-insensitively by storing and looking them up uppercased.
    private static func stored(joinCode: String) -> String {
        joinCode.uppercased()
    }

    private static func codeTaken(_ joinCode: String) -> StorageError {
        StorageError.conflict("The join code \(joinCode) is taken.")
    }

    /// The policy as JSON text, with sorted keys so that equal policies are stored alike.
    private static func json(_ policy: ClassPolicy) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(policy), as: UTF8.self)
    }

    private func select() -> SQLSelectBuilder {
        self.database.select().columns(Self.columns).from("classes")
    }
}

extension ClassSession {
    fileprivate init(row: any SQLRow) throws {
        let policy = try row.decode(column: "policy", as: String.self)
        self.init(
            id: try row.decode(column: "id", as: String.self),
            instructorID: try row.decode(column: "instructor_id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            joinCode: try row.decode(column: "join_code", as: String.self),
            isOpen: try row.decode(column: "is_open", as: Bool.self),
            startsAt: try row.decodeOptionalDate(column: "starts_at"),
            endsAt: try row.decodeOptionalDate(column: "ends_at"),
            policy: try JSONDecoder().decode(ClassPolicy.self, from: Data(policy.utf8)),
            createdAt: try row.decodeDate(column: "created_at")
        )
    }
}
