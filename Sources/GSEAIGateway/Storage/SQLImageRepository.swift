import Foundation
import SQLKit

/// Images in the `images` table, once per hash, and who uploaded each in `image_owners`.
struct SQLImageRepository: ImageRepository {
    let database: any SQLDatabase

    func store(_ image: StoredImage, ownerID: String) async throws {
        try await self.database.transaction { session in
            // The same bytes uploaded again, by anyone, keep the first row; only the ownership is new.
            try await session.insert(into: "images")
                .columns("hash", "mime_type", "data", "width", "height", "created_at")
                .values(
                    SQLBind(image.hash), SQLBind(image.mimeType), SQLBind(image.data), SQLBind(image.width),
                    SQLBind(image.height), SQLBind(image.createdAt.unixSeconds)
                )
                .ignoringConflicts(with: "hash")
                .run()
            try await session.insert(into: "image_owners")
                .columns("user_id", "hash", "created_at")
                .values(SQLBind(ownerID), SQLBind(image.hash), SQLBind(image.createdAt.unixSeconds))
                .ignoringConflicts(with: ["user_id", "hash"])
                .run()
        }
    }

    func find(hash: String) async throws -> StoredImage? {
        try await self.database.select()
            .columns("hash", "mime_type", "data", "width", "height", "created_at")
            .from("images")
            .where("hash", .equal, hash)
            .first()
            .map { row in
                StoredImage(
                    hash: try row.decode(column: "hash", as: String.self),
                    mimeType: try row.decode(column: "mime_type", as: String.self),
                    data: try row.decode(column: "data", as: Data.self),
                    width: try row.decode(column: "width", as: Int.self),
                    height: try row.decode(column: "height", as: Int.self),
                    createdAt: try row.decodeDate(column: "created_at")
                )
            }
    }

    func isOwned(hash: String, by userID: String) async throws -> Bool {
        try await self.database.select()
            .column("hash")
            .from("image_owners")
            .where("user_id", .equal, userID)
            .where("hash", .equal, hash)
            .first() != nil
    }

    func owners(hash: String) async throws -> [String] {
        try await self.database.select()
            .column("user_id")
            .from("image_owners")
            .where("hash", .equal, hash)
            .orderBy("user_id")
            .all()
            .map { try $0.decode(column: "user_id", as: String.self) }
    }
}
