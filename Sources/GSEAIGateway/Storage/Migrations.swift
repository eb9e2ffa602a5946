// The database schema, as an append-only list of migrations.
//
// To change the schema, append a `Migration` to `Migrations.all` with the next version number, a short
// name, and its statements. Never edit, reorder or remove a migration that has been released: databases
// already carry it, and it will not run again. Rules for the statements:
//
// - one SQL statement per string (SQLite prepares only the first statement of a string);
// - SQL that SQLite and PostgreSQL both accept: `TEXT`, `BIGINT`, `DOUBLE PRECISION` (dates, as Unix
//   seconds), `BOOLEAN`, JSON as `TEXT`, bytes as `SQLBytesType` (`BLOB` here, `BYTEA` in PostgreSQL, the
//   one type name the two do not share); no `AUTOINCREMENT`, no `STRICT`, no engine-specific functions;
// - SQLite's `ALTER TABLE` adds and renames columns but cannot change constraints; for that, create the new
//   table, copy the rows, drop the old one and rename (https://sqlite.org/lang_altertable.html).
//
// At start, `Migrations.run` creates `schema_migrations` if needed and applies every migration the
// database lacks, in order, each in its own transaction together with its row in `schema_migrations`: a
// migration is applied entirely or not at all, and never twice, even when two processes start at once.

import Foundation
import Logging
import SQLKit

/// One step of the schema.
struct Migration: Sendable {
    /// Its place in the order: 1, 2, 3 … without gaps.
    let version: Int
    /// What it does, for the logs and `schema_migrations`.
    let name: String
    /// The statements, run in order in one transaction.
    let statements: [SQLQueryString]
}

/// Why the schema could not be brought up to date.
public enum MigrationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The database was migrated by a newer build of the gateway, whose schema this build does not know.
    case databaseIsNewer(databaseVersion: Int, knownVersion: Int)
    /// The list of migrations is malformed (a programming error caught at start).
    case invalidList(String)

    /// A sentence for the log and the terminal.
    public var description: String {
        switch self {
        case .databaseIsNewer(let databaseVersion, let knownVersion):
            "The database has schema version \(databaseVersion), but this build knows only up to \(knownVersion); "
                + "run a newer gateway or restore a backup."
        case .invalidList(let reason):
            "The list of migrations is invalid: \(reason)"
        }
    }
}

enum Migrations {
    /// Every migration, oldest first. Append only.
    static let all: [Migration] = [
        Migration(version: 1, name: "accounts, sessions, API keys, response owners and usage", statements: [
            """
            CREATE TABLE users (
                id TEXT NOT NULL PRIMARY KEY,
                username TEXT NOT NULL UNIQUE,
                password_hash TEXT,
                role TEXT NOT NULL,
                disabled BOOLEAN NOT NULL DEFAULT FALSE,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE login_sessions (
                id TEXT NOT NULL PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                last_seen_at DOUBLE PRECISION NOT NULL,
                user_agent TEXT,
                remote_address TEXT
            )
            """,
            // A user's sessions, newest first; and the expiry sweep.
            "CREATE INDEX login_sessions_user_id_created_at ON login_sessions (user_id, created_at)",
            "CREATE INDEX login_sessions_expires_at ON login_sessions (expires_at)",
            """
            CREATE TABLE api_keys (
                id TEXT NOT NULL PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                prefix TEXT NOT NULL UNIQUE,
                hash TEXT NOT NULL,
                label TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_used_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX api_keys_user_id_created_at ON api_keys (user_id, created_at)",
            """
            CREATE TABLE response_owners (
                response_id TEXT NOT NULL PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            // Without it, deleting a user scans the whole table for the cascade.
            "CREATE INDEX response_owners_user_id ON response_owners (user_id)",
            """
            CREATE TABLE usage_daily (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                model TEXT NOT NULL,
                day TEXT NOT NULL,
                requests BIGINT NOT NULL DEFAULT 0,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, model, day)
            )
            """,
            // Everyone's usage, newest day first (a user's rows are served by the primary key).
            "CREATE INDEX usage_daily_day ON usage_daily (day)",
        ]),
        Migration(version: 2, name: "conversations, messages and images", statements: [
            """
            CREATE TABLE conversations (
                id TEXT NOT NULL PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                title TEXT NOT NULL,
                model TEXT NOT NULL,
                system_prompt TEXT,
                last_response_id TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            // A user's conversations, most recently updated first, a page at a time, with no sort step (the id
            // orders ties); and the cascade from users.
            "CREATE INDEX conversations_user_id_updated_at ON conversations (user_id, updated_at, id)",
            // JSON as text: `image_hashes` an array of strings, `output_items` and `stats` any JSON or NULL.
            // The unique pair also serves a conversation's messages in order, and the cascade.
            """
            CREATE TABLE messages (
                id TEXT NOT NULL PRIMARY KEY,
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                sequence BIGINT NOT NULL,
                role TEXT NOT NULL,
                text TEXT NOT NULL,
                image_hashes TEXT NOT NULL,
                reasoning TEXT,
                output_items TEXT,
                stats TEXT,
                response_id TEXT,
                status TEXT NOT NULL,
                error TEXT,
                model TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                UNIQUE (conversation_id, sequence)
            )
            """,
            // The start-up sweep of answers cut off by a stop; tiny, as few messages stream at any moment.
            "CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'",
            """
            CREATE TABLE images (
                hash TEXT NOT NULL PRIMARY KEY,
                mime_type TEXT NOT NULL,
                data \(SQLBytesType()) NOT NULL,
                width BIGINT NOT NULL,
                height BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE image_owners (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                hash TEXT NOT NULL REFERENCES images (hash),
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (user_id, hash)
            )
            """,
            // Without it, deleting an image would scan every ownership row for the foreign key.
            "CREATE INDEX image_owners_hash ON image_owners (hash)",
        ]),
        Migration(version: 3, name: "classes, members, audit log and set-up links", statements: [
            // The policy is one JSON text column (a `ClassPolicy`): it is always read and written whole, never
            // queried, and a field added later needs no migration (a missing field decodes to its default).
            // Join codes are stored uppercased, so the unique constraint is case-insensitive.
            """
            CREATE TABLE classes (
                id TEXT NOT NULL PRIMARY KEY,
                instructor_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                join_code TEXT NOT NULL UNIQUE,
                is_open BOOLEAN NOT NULL,
                starts_at DOUBLE PRECISION,
                ends_at DOUBLE PRECISION,
                policy TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )
            """,
            // An instructor's classes, newest first; and the cascade from users.
            "CREATE INDEX classes_instructor_id_created_at ON classes (instructor_id, created_at)",
            """
            CREATE TABLE class_members (
                class_id TEXT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                joined_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (class_id, user_id)
            )
            """,
            // A student's classes; and the cascade from users.
            "CREATE INDEX class_members_user_id ON class_members (user_id)",
            // No foreign key on `actor_id`: the log outlives the accounts it names.
            """
            CREATE TABLE audit_log (
                id TEXT NOT NULL PRIMARY KEY,
                actor_id TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                detail TEXT,
                at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX audit_log_at ON audit_log (at)",
            """
            CREATE TABLE setup_tokens (
                token_hash TEXT NOT NULL PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX setup_tokens_user_id ON setup_tokens (user_id)",
            // The class whose policy applies to a student in several. SQLite adds a column with a foreign key
            // only when its default is NULL, as here; deleting the class clears it.
            "ALTER TABLE users ADD COLUMN active_class_id TEXT REFERENCES classes (id) ON DELETE SET NULL",
            // Without it, deleting a class would scan every user to clear their active class.
            "CREATE INDEX users_active_class_id ON users (active_class_id)",
            // The class a conversation was started in, for its instructors; the conversation stays, without a
            // class, when the class is deleted.
            "ALTER TABLE conversations ADD COLUMN class_id TEXT REFERENCES classes (id) ON DELETE SET NULL",
            // A class's conversations; and clearing them when the class is deleted.
            "CREATE INDEX conversations_class_id ON conversations (class_id)",
        ]),
        Migration(version: 4, name: "usage per class; the audit log's page order", statements: [
            // Usage gains the class whose policy applied, so that an instructor sees only what a student used
            // in their class. Outside any class (and for the rows before this version) the class is '', not
            // NULL: a NULL in the key would never conflict, and the upsert would add rows instead of summing.
            // No foreign key: usage outlives a deleted class, for the student and administrators.
            """
            CREATE TABLE usage_daily_by_class (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                day TEXT NOT NULL,
                class_id TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL,
                requests BIGINT NOT NULL DEFAULT 0,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, day, class_id, model)
            )
            """,
            """
            INSERT INTO usage_daily_by_class (user_id, day, class_id, model, requests, input_tokens, output_tokens)
            SELECT user_id, day, '', model, requests, input_tokens, output_tokens FROM usage_daily
            """,
            "DROP TABLE usage_daily",
            "ALTER TABLE usage_daily_by_class RENAME TO usage_daily",
            // Everyone's usage, newest day first (a user's day is served by the primary key).
            "CREATE INDEX usage_daily_day ON usage_daily (day)",
            // A class's usage since a day.
            "CREATE INDEX usage_daily_class_id_day ON usage_daily (class_id, day)",
            // The audit log is paged by (at, id), so that entries of the same instant are neither skipped nor
            // shown twice.
            "DROP INDEX audit_log_at",
            "CREATE INDEX audit_log_at_id ON audit_log (at, id)",
        ]),
        Migration(version: 5, name: "last sign-in of each account; class invitations", statements: [
            // Only an account nobody has signed in to may get a password from its instructor's set-up link.
            "ALTER TABLE users ADD COLUMN last_login_at DOUBLE PRECISION",
            // Accounts from before this version count as signed in (their creation time stands in) unless they
            // can only have been waiting for a set-up link: one was made for them, and they have no session,
            // key or conversation. When in doubt, an account is treated as in use, which only an admin resets.
            """
            UPDATE users SET last_login_at = created_at
            WHERE id NOT IN (SELECT user_id FROM setup_tokens)
                OR id IN (SELECT user_id FROM login_sessions)
                OR id IN (SELECT user_id FROM api_keys)
                OR id IN (SELECT user_id FROM conversations)
            """,
            // An existing account joins a class only by its owner's action: a roster import invites it, and
            // the student accepts or declines on their page.
            """
            CREATE TABLE class_invitations (
                class_id TEXT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (class_id, user_id)
            )
            """,
            // A student's invitations; and the cascade from users.
            "CREATE INDEX class_invitations_user_id ON class_invitations (user_id)",
        ]),
        Migration(version: 6, name: "the upstream that issued each response id", statements: [
            // With several model servers, a stored response continues only on the one that issued it; ids from
            // before this version have none (the gateway had one upstream).
            "ALTER TABLE response_owners ADD COLUMN upstream TEXT",
        ]),
        Migration(version: 7, name: "the replica generating each answer", statements: [
            // With several replicas on one database, an answer being generated belongs to the replica that runs
            // it: the others follow and stop it through that one, and mark it interrupted only once it is dead.
            "ALTER TABLE messages ADD COLUMN replica TEXT",
        ]),
    ]

    /// Applies the migrations `database` lacks; returns the versions it applied.
    @discardableResult
    static func run(on database: any SQLDatabase, migrations: [Migration] = Migrations.all, logger: Logger)
        async throws -> [Int]
    {
        try validate(migrations)
        try await database.raw("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT NOT NULL PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at DOUBLE PRECISION NOT NULL
            )
            """).run()

        let applied = Set(
            try await database.select().column("version").from("schema_migrations")
                .all(decodingColumn: "version", as: Int.self)
        )
        let knownVersion = migrations.last?.version ?? 0
        if let databaseVersion = applied.max(), databaseVersion > knownVersion {
            throw MigrationError.databaseIsNewer(databaseVersion: databaseVersion, knownVersion: knownVersion)
        }

        var appliedNow: [Int] = []
        for migration in migrations where !applied.contains(migration.version) {
            let didApply = try await database.transaction { session in
                // Claiming the version first takes the write lock, so a second process starting at the same
                // moment waits here and then finds the version taken instead of failing on CREATE TABLE.
                let claimed = try await session.insert(into: "schema_migrations")
                    .columns("version", "name", "applied_at")
                    .values(SQLBind(migration.version), SQLBind(migration.name), SQLBind(Date().unixSeconds))
                    .ignoringConflicts(with: "version")
                    .returning("version")
                    .first()
                guard claimed != nil else { return false }
                for statement in migration.statements {
                    try await session.raw(statement).run()
                }
                return true
            }
            if didApply {
                appliedNow.append(migration.version)
                logger.info(
                    "Applied database migration",
                    metadata: ["version": "\(migration.version)", "name": "\(migration.name)"]
                )
            }
        }
        return appliedNow
    }

    /// Catches a mistake in the list before it reaches a database.
    static func validate(_ migrations: [Migration]) throws {
        for (index, migration) in migrations.enumerated() {
            guard migration.version == index + 1 else {
                throw MigrationError.invalidList(
                    "migration \"\(migration.name)\" has version \(migration.version), expected \(index + 1)"
                )
            }
            guard !migration.statements.isEmpty else {
                throw MigrationError.invalidList("migration \(migration.version) has no statements")
            }
        }
    }
}

/// The column type for bytes, the one type whose name SQLite (`BLOB`) and PostgreSQL (`BYTEA`) do not share.
struct SQLBytesType: SQLExpression {
    func serialize(to serializer: inout SQLSerializer) {
        serializer.write(serializer.dialect.name == "postgresql" ? "BYTEA" : "BLOB")
    }
}
