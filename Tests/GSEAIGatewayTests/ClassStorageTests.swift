import Foundation
import Logging
import SQLiteKit
import Testing

@testable import GSEAIGateway

/// Instructors' classes, their members and policies, the audit log and set-up links, against a real SQLite
/// database.
@Suite struct ClassStorageTests {
    /// A fixed instant whose fraction survives the trip through Unix seconds exactly.
    let t0 = Date(timeIntervalSince1970: 1_700_000_000.25)

    // MARK: Classes

    @Test func classesAreCreatedFoundAndListedNewestFirst() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let omar = try await makeUser("omar", in: storage)
            let first = ClassSession(instructorID: ines.id, name: "Biology 101", joinCode: "bio-7x", createdAt: t0)
            let second = ClassSession(
                instructorID: ines.id, name: "Biology 102", joinCode: "BIO-8Y", isOpen: false,
                startsAt: t0 + 100, endsAt: t0 + 200, policy: everyFieldPolicy, createdAt: t0 + 20
            )
            let omars = ClassSession(instructorID: omar.id, name: "Statistics", joinCode: "stat", createdAt: t0 + 10)
            for item in [first, second, omars] { try await storage.classes.create(item) }

            let storedFirst = uppercased(first)
            #expect(storedFirst.joinCode == "BIO-7X")
            #expect(try await storage.classes.find(id: first.id) == storedFirst)
            #expect(try await storage.classes.find(id: second.id) == second)
            #expect(try await storage.classes.find(joinCode: "Bio-7x") == storedFirst)
            #expect(try await storage.classes.find(joinCode: "bio-8y") == second)
            #expect(try await storage.classes.find(joinCode: "BIO-9Z") == nil)
            #expect(try await storage.classes.find(id: "missing") == nil)

            #expect(try await storage.classes.list(instructorID: ines.id) == [second, storedFirst])
            #expect(try await storage.classes.list(instructorID: omar.id) == [uppercased(omars)])
            #expect(try await storage.classes.list(instructorID: nil) == [second, uppercased(omars), storedFirst])
            #expect(try await storage.classes.list(instructorID: "nobody").isEmpty)
            #expect(first.id == first.id.lowercased())

            await #expect(throws: (any Error).self) {  // the instructor must exist
                try await storage.classes.create(ClassSession(instructorID: "nobody", name: "x", joinCode: "ORPHAN"))
            }
        }
    }

    @Test func anUpdateReplacesNameCodeStateDatesAndEveryPolicyField() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let omar = try await makeUser("omar", in: storage)
            let original = ClassSession(instructorID: ines.id, name: "Biology", joinCode: "BIO", createdAt: t0)
            try await storage.classes.create(original)
            #expect(try await storage.classes.find(id: original.id)?.policy == ClassPolicy())

            var changed = original
            changed.name = "Biology, spring"
            changed.joinCode = "spring-bio"
            changed.isOpen = false
            changed.startsAt = t0 + 3600
            changed.endsAt = t0 + 7200
            changed.policy = everyFieldPolicy
            changed.instructorID = omar.id  // not part of an update
            changed.createdAt = t0 + 99  // nor this
            try await storage.classes.update(changed)

            var expected = changed
            expected.joinCode = "SPRING-BIO"
            expected.instructorID = ines.id
            expected.createdAt = t0
            let stored = try await storage.classes.find(id: original.id)
            #expect(stored == expected)
            #expect(stored?.policy.allowedModels == ["qwen/qwen3-8b", "google/gemma-3-270m"])
            #expect(stored?.policy.systemPrompt == "Answer in Spanish.")
            #expect(stored?.policy.systemPromptLocked == true)
            #expect(stored?.policy.maxOutputTokens == 512)
            #expect(stored?.policy.dailyTokenBudget == 20_000)
            #expect(stored?.policy.requestsPerMinute == 6)
            #expect(stored?.policy.imagesAllowed == false)
            #expect(stored?.policy.transcriptVisibility == .full)
            #expect(try await storage.classes.find(joinCode: "BIO") == nil)
            #expect(try await storage.classes.find(joinCode: "spring-BIO") == expected)

            // Back to the defaults: the optional fields and dates are cleared, not kept.
            var reset = expected
            reset.isOpen = true
            reset.startsAt = nil
            reset.endsAt = nil
            reset.policy = ClassPolicy()
            try await storage.classes.update(reset)
            #expect(try await storage.classes.find(id: original.id) == reset)

            let ghost = ClassSession(instructorID: ines.id, name: "Ghost", joinCode: "GHOST")
            await #expect(throws: StorageError.notFound) { try await storage.classes.update(ghost) }
        }
    }

    @Test func aTakenJoinCodeIsAConflictWhateverItsCase() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let biology = ClassSession(instructorID: ines.id, name: "Biology", joinCode: "ABC123", createdAt: t0)
            try await storage.classes.create(biology)
            let error = await #expect(throws: StorageError.self) {
                try await storage.classes.create(ClassSession(instructorID: ines.id, name: "Other", joinCode: "abc123"))
            }
            #expect(error.map(isConflict) == true)
            #expect(try await storage.classes.list(instructorID: nil) == [biology])

            let chemistry = ClassSession(instructorID: ines.id, name: "Chemistry", joinCode: "CHEM", createdAt: t0 + 1)
            try await storage.classes.create(chemistry)
            var stealing = chemistry
            stealing.name = "Renamed"
            stealing.joinCode = "Abc123"
            let updateError = await #expect(throws: StorageError.self) { try await storage.classes.update(stealing) }
            #expect(updateError.map(isConflict) == true)
            // Nothing of the refused update is written.
            #expect(try await storage.classes.find(id: chemistry.id) == chemistry)

            // Keeping its own code, in another case, is no conflict.
            var renamed = biology
            renamed.name = "Biology II"
            renamed.joinCode = "abc123"
            try await storage.classes.update(renamed)
            #expect(try await storage.classes.find(id: biology.id)?.name == "Biology II")
            #expect(try await storage.classes.find(id: biology.id)?.joinCode == "ABC123")
        }
    }

    @Test func deletingAClassDeletesItsMembershipsOnly() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let alice = try await makeUser("alice", in: storage)
            let doomed = try await makeClass("Doomed", code: "DOOM", by: ines, in: storage)
            let kept = try await makeClass("Kept", code: "KEEP", by: ines, in: storage)
            try await storage.classes.addMember(classID: doomed.id, userID: alice.id, at: t0)
            try await storage.classes.addMember(classID: kept.id, userID: alice.id, at: t0)

            #expect(try await storage.classes.delete(id: doomed.id) == true)
            #expect(try await storage.classes.delete(id: doomed.id) == false)
            #expect(try await storage.classes.find(id: doomed.id) == nil)
            #expect(try await storage.classes.find(joinCode: "DOOM") == nil)
            #expect(try await storage.classes.members(classID: doomed.id).isEmpty)
            #expect(try await storage.classes.isMember(classID: doomed.id, userID: alice.id) == false)
            #expect(try await storage.classes.classes(ofMember: alice.id) == [kept])
            #expect(try await storage.classes.members(classID: kept.id).map(\.userID) == [alice.id])
            #expect(try await storage.users.find(id: alice.id) != nil)
        }
    }

    @Test func isActiveNeedsAnOpenClassWithinItsDates() {
        let open = ClassSession(instructorID: "i", name: "n", joinCode: "C")
        #expect(open.isActive(at: t0))
        #expect(open.isActive(at: .distantFuture))

        let dated = ClassSession(instructorID: "i", name: "n", joinCode: "C", startsAt: t0, endsAt: t0 + 3600)
        #expect(!dated.isActive(at: t0 - 1))
        #expect(dated.isActive(at: t0))
        #expect(dated.isActive(at: t0 + 3599))
        #expect(!dated.isActive(at: t0 + 3600))  // the end is exclusive

        let startOnly = ClassSession(instructorID: "i", name: "n", joinCode: "C", startsAt: t0)
        #expect(!startOnly.isActive(at: t0 - 1))
        #expect(startOnly.isActive(at: t0 + 1_000_000))
        let endOnly = ClassSession(instructorID: "i", name: "n", joinCode: "C", endsAt: t0)
        #expect(endOnly.isActive(at: t0 - 1_000_000))
        #expect(!endOnly.isActive(at: t0))

        var closed = dated
        closed.isOpen = false
        #expect(!closed.isActive(at: t0 + 10))
        #expect(!ClassSession(instructorID: "i", name: "n", joinCode: "C", isOpen: false).isActive(at: t0))
    }

    @Test func aPolicyStoredBeforeAFieldExistedReadsWithDefaults() throws {
        let decoded = try JSONDecoder().decode(ClassPolicy.self, from: Data(#"{"maxOutputTokens": 100}"#.utf8))
        #expect(decoded == ClassPolicy(maxOutputTokens: 100))
        let roundTrip = try JSONDecoder().decode(ClassPolicy.self, from: try JSONEncoder().encode(everyFieldPolicy))
        #expect(roundTrip == everyFieldPolicy)
    }

    // MARK: Members

    @Test func membersAreAddedOnceListedAndRemoved() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let biology = try await makeClass("Biology", code: "BIO", by: ines, createdAt: t0, in: storage)
            let chemistry = try await makeClass("Chemistry", code: "CHEM", by: ines, createdAt: t0 + 5, in: storage)

            #expect(try await storage.classes.addMember(classID: biology.id, userID: bob.id, at: t0 + 2) == true)
            #expect(try await storage.classes.addMember(classID: biology.id, userID: alice.id, at: t0 + 1) == true)
            // Joining again changes nothing, not even the date.
            #expect(try await storage.classes.addMember(classID: biology.id, userID: alice.id, at: t0 + 9) == false)
            #expect(try await storage.classes.addMember(classID: chemistry.id, userID: alice.id, at: t0 + 3) == true)

            #expect(try await storage.classes.members(classID: biology.id) == [
                ClassMember(classID: biology.id, userID: alice.id, joinedAt: t0 + 1),
                ClassMember(classID: biology.id, userID: bob.id, joinedAt: t0 + 2),
            ])
            #expect(try await storage.classes.members(classID: chemistry.id) == [
                ClassMember(classID: chemistry.id, userID: alice.id, joinedAt: t0 + 3)
            ])
            #expect(try await storage.classes.classes(ofMember: alice.id) == [chemistry, biology])
            #expect(try await storage.classes.classes(ofMember: bob.id) == [biology])
            #expect(try await storage.classes.classes(ofMember: ines.id).isEmpty)
            #expect(try await storage.classes.isMember(classID: biology.id, userID: bob.id) == true)
            #expect(try await storage.classes.isMember(classID: chemistry.id, userID: bob.id) == false)

            #expect(try await storage.classes.removeMember(classID: biology.id, userID: alice.id) == true)
            #expect(try await storage.classes.removeMember(classID: biology.id, userID: alice.id) == false)
            #expect(try await storage.classes.isMember(classID: biology.id, userID: alice.id) == false)
            #expect(try await storage.classes.members(classID: biology.id).map(\.userID) == [bob.id])
            #expect(try await storage.classes.classes(ofMember: alice.id) == [chemistry])

            await #expect(throws: (any Error).self) {  // the class and the user must exist
                try await storage.classes.addMember(classID: "missing", userID: alice.id, at: t0)
            }
            await #expect(throws: (any Error).self) {
                try await storage.classes.addMember(classID: biology.id, userID: "nobody", at: t0)
            }
        }
    }

    @Test func theActiveClassIsSetChangedAndCleared() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let biology = try await makeClass("Biology", code: "BIO", by: ines, in: storage)
            let chemistry = try await makeClass("Chemistry", code: "CHEM", by: ines, in: storage)
            #expect(try await storage.classes.activeClass(userID: alice.id) == nil)
            #expect(try await storage.classes.activeClass(userID: "nobody") == nil)

            try await storage.classes.setActiveClass(userID: alice.id, classID: biology.id)
            try await storage.classes.setActiveClass(userID: bob.id, classID: biology.id)
            #expect(try await storage.classes.activeClass(userID: alice.id) == biology.id)
            try await storage.classes.setActiveClass(userID: alice.id, classID: chemistry.id)
            #expect(try await storage.classes.activeClass(userID: alice.id) == chemistry.id)
            try await storage.classes.setActiveClass(userID: alice.id, classID: nil)
            #expect(try await storage.classes.activeClass(userID: alice.id) == nil)
            #expect(try await storage.classes.activeClass(userID: bob.id) == biology.id)

            await #expect(throws: StorageError.notFound) {
                try await storage.classes.setActiveClass(userID: alice.id, classID: "missing")
            }
            await #expect(throws: StorageError.notFound) {
                try await storage.classes.setActiveClass(userID: "nobody", classID: biology.id)
            }
            await #expect(throws: StorageError.notFound) {
                try await storage.classes.setActiveClass(userID: "nobody", classID: nil)
            }
            #expect(try await storage.classes.activeClass(userID: alice.id) == nil)

            // Leaving the active class clears it; leaving another class does not.
            try await storage.classes.addMember(classID: biology.id, userID: alice.id, at: t0)
            try await storage.classes.addMember(classID: chemistry.id, userID: alice.id, at: t0)
            try await storage.classes.setActiveClass(userID: alice.id, classID: biology.id)
            try await storage.classes.removeMember(classID: chemistry.id, userID: alice.id)
            #expect(try await storage.classes.activeClass(userID: alice.id) == biology.id)
            try await storage.classes.removeMember(classID: biology.id, userID: alice.id)
            #expect(try await storage.classes.activeClass(userID: alice.id) == nil)

            // Deleting the class clears it too; the account stays as it was.
            let bobBefore = try await storage.users.find(id: bob.id)
            try await storage.classes.delete(id: biology.id)
            #expect(try await storage.classes.activeClass(userID: bob.id) == nil)
            #expect(try await storage.users.find(id: bob.id) == bobBefore)
        }
    }

    @Test func membershipsAndActiveClassesAreRememberedUntilAClassChanges() async throws {
        try await withStorage { storage in
            let sam = try await makeUser("sam", in: storage)
            let ines = try await makeUser("ines", in: storage)
            // `storage.classes` writes behind the back of this cache, as another process would.
            let cached = CachedClassRepository(storage.classes, lifetime: .seconds(3600))
            let biology = ClassSession(instructorID: ines.id, name: "Biology", joinCode: "BIO", createdAt: t0)
            let chemistry = ClassSession(instructorID: ines.id, name: "Chemistry", joinCode: "CHEM", createdAt: t0 + 10)
            try await cached.create(biology)
            try await cached.create(chemistry)
            try await cached.addMember(classID: biology.id, userID: sam.id, at: t0)
            #expect(try await cached.classes(ofMember: sam.id).map(\.name) == ["Biology"])
            #expect(try await cached.activeClass(userID: sam.id) == nil)

            // Remembered: changes made elsewhere are not seen yet.
            try await storage.classes.addMember(classID: chemistry.id, userID: sam.id, at: t0)
            try await storage.classes.setActiveClass(userID: sam.id, classID: biology.id)
            #expect(try await cached.classes(ofMember: sam.id).map(\.name) == ["Biology"])
            #expect(try await cached.activeClass(userID: sam.id) == nil)

            // Any write through the cache forgets everything, for every user.
            var closed = chemistry
            closed.isOpen = false
            try await cached.update(closed)
            #expect(try await cached.classes(ofMember: sam.id).map(\.name) == ["Chemistry", "Biology"])
            #expect(try await cached.classes(ofMember: sam.id).first?.isOpen == false)
            #expect(try await cached.activeClass(userID: sam.id) == biology.id)
            try await cached.setActiveClass(userID: sam.id, classID: chemistry.id)
            #expect(try await cached.activeClass(userID: sam.id) == chemistry.id)
            try await cached.removeMember(classID: chemistry.id, userID: sam.id)
            #expect(try await cached.classes(ofMember: sam.id).map(\.name) == ["Biology"])
            #expect(try await cached.activeClass(userID: sam.id) == nil)

            // Entries expire: with no lifetime, every read is fresh.
            let uncached = CachedClassRepository(storage.classes, lifetime: .zero)
            #expect(try await uncached.classes(ofMember: sam.id).map(\.name) == ["Biology"])
            try await storage.classes.addMember(classID: chemistry.id, userID: sam.id, at: t0)
            #expect(try await uncached.classes(ofMember: sam.id).map(\.name) == ["Chemistry", "Biology"])
        }
    }

    // MARK: Usage

    @Test func memberUsageHasOnlyTheMembersRowsFromTheDayOn() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            let carol = try await makeUser("carol", in: storage)  // in another class only
            let biology = try await makeClass("Biology", code: "BIO", by: ines, in: storage)
            let chemistry = try await makeClass("Chemistry", code: "CHEM", by: ines, in: storage)
            try await storage.classes.addMember(classID: biology.id, userID: alice.id, at: t0)
            try await storage.classes.addMember(classID: biology.id, userID: bob.id, at: t0)
            try await storage.classes.addMember(classID: chemistry.id, userID: carol.id, at: t0)
            try await storage.classes.addMember(classID: chemistry.id, userID: alice.id, at: t0)

            try await add(to: storage, alice, "qwen", "2025-03-01", 1, 2, in: biology.id)  // before the day
            try await add(to: storage, alice, "qwen", "2025-03-02", 10, 20, in: biology.id)
            try await add(to: storage, alice, "qwen", "2025-03-02", 5, 5, in: biology.id)
            try await add(to: storage, alice, "gemma", "2025-03-03", 3, 4, in: biology.id)
            try await add(to: storage, bob, "qwen", "2025-03-02", 7, 8, in: biology.id)
            try await add(to: storage, carol, "qwen", "2025-03-02", 100, 100, in: chemistry.id)
            try await add(to: storage, ines, "qwen", "2025-03-03", 50, 50)
            // What Alice used in the other class, or outside any, is not Biology's.
            try await add(to: storage, alice, "qwen", "2025-03-02", 1000, 1000, in: chemistry.id)
            try await add(to: storage, alice, "qwen", "2025-03-02", 2000, 2000)

            // Newest day first, then by user (ids are random, so the two of 2 March are sorted here too).
            let usage = try await storage.classes.memberUsage(classID: biology.id, since: "2025-03-02")
            #expect(usage == [
                UsageRecord(userID: alice.id, classID: biology.id, model: "gemma", day: "2025-03-03", requests: 1, inputTokens: 3, outputTokens: 4)
            ] + [
                UsageRecord(userID: alice.id, classID: biology.id, model: "qwen", day: "2025-03-02", requests: 2, inputTokens: 15, outputTokens: 25),
                UsageRecord(userID: bob.id, classID: biology.id, model: "qwen", day: "2025-03-02", requests: 1, inputTokens: 7, outputTokens: 8),
            ].sorted { $0.userID < $1.userID })
            #expect(usage.reduce(0) { $0 + $1.inputTokens + $1.outputTokens } == 7 + 40 + 15)
            #expect(try await storage.classes.memberUsage(classID: biology.id, since: "2025-03-04").isEmpty)
            #expect(try await storage.classes.memberUsage(classID: biology.id, since: "2025-01-01").count == 4)
            #expect(Set(try await storage.classes.memberUsage(classID: chemistry.id, since: "2025-03-02").map(\.userID))
                == [alice.id, carol.id])
            #expect(try await storage.classes.memberUsage(classID: "missing", since: "2025-01-01").isEmpty)

            // A member who leaves takes their usage out of the class's view.
            try await storage.classes.removeMember(classID: biology.id, userID: bob.id)
            #expect(try await storage.classes.memberUsage(classID: biology.id, since: "2025-03-02").map(\.userID)
                == [alice.id, alice.id])
        }
    }

    @Test func theUsageTotalOfADayCountsEveryModelInAndOutOfTheClassOnly() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let bob = try await makeUser("bob", in: storage)
            func add(_ user: User, _ model: String, _ day: String, _ input: Int, _ output: Int, in classID: String? = "c1") async throws {
                try await storage.usage.add(userID: user.id, classID: classID, model: model, day: day, inputTokens: input, outputTokens: output)
            }
            try await add(alice, "qwen", "2025-03-02", 10, 20)
            try await add(alice, "qwen", "2025-03-02", 1, 2)
            try await add(alice, "gemma", "2025-03-02", 100, 200)
            try await add(alice, "qwen", "2025-03-01", 1000, 1)
            try await add(alice, "qwen", "2025-03-02", 5000, 5000, in: "c2")
            try await add(alice, "qwen", "2025-03-02", 7000, 7000, in: nil)
            try await add(bob, "qwen", "2025-03-02", 7, 7)

            #expect(try await storage.usage.total(userID: alice.id, classID: "c1", day: "2025-03-02") == 333)
            #expect(try await storage.usage.total(userID: alice.id, classID: "c1", day: "2025-03-01") == 1001)
            #expect(try await storage.usage.total(userID: alice.id, classID: "c2", day: "2025-03-02") == 10000)
            #expect(try await storage.usage.total(userID: bob.id, classID: "c1", day: "2025-03-02") == 14)
            #expect(try await storage.usage.total(userID: alice.id, classID: "c1", day: "2025-03-03") == 0)
            #expect(try await storage.usage.total(userID: "nobody", classID: "c1", day: "2025-03-02") == 0)
        }
    }

    // MARK: Audit log

    @Test func theAuditLogIsListedNewestFirstAPageAtATime() async throws {
        try await withStorage { storage in
            let entries = (0..<5).map { index in
                AuditEntry(
                    actorID: "admin-\(index % 2)", action: "class.update", target: "class-\(index)",
                    detail: index.isMultiple(of: 2) ? "name: Biology \(index)" : nil, at: t0 + Double(index)
                )
            }
            for entry in entries.shuffled() { try await storage.audit.append(entry) }

            let newestFirst = Array(entries.reversed())
            #expect(try await storage.audit.list(limit: 10, before: nil) == newestFirst)

            var pages: [[AuditEntry]] = []
            var before: PageCursor? = nil
            while true {
                let page = try await storage.audit.list(limit: 2, before: before)
                if page.isEmpty { break }
                pages.append(page)
                before = page.last.map(PageCursor.init(after:))
            }
            #expect(pages == [Array(newestFirst[0..<2]), Array(newestFirst[2..<4]), [newestFirst[4]]])
            #expect(try await storage.audit.list(limit: 10, before: PageCursor(at: t0 + 2)).map(\.target) == ["class-1", "class-0"])
            #expect(try await storage.audit.list(limit: 0, before: nil).isEmpty)
            #expect(try await storage.audit.list(limit: 10, before: PageCursor(at: t0)).isEmpty)
        }
    }

    @Test func auditPagesNeitherSkipNorRepeatEntriesOfTheSameInstant() async throws {
        try await withStorage { storage in
            // A roster import writes many entries within one clock tick.
            let entries = (0..<7).map { index in
                AuditEntry(actorID: "admin", action: "class.member.add", target: "user-\(index)", at: t0 + (index < 6 ? 1 : 0))
            }
            for entry in entries.shuffled() { try await storage.audit.append(entry) }
            var seen: [AuditEntry] = []
            var before: PageCursor? = nil
            while true {
                let page = try await storage.audit.list(limit: 2, before: before)
                if page.isEmpty { break }
                seen += page
                before = page.last.map(PageCursor.init(after:))
            }
            let sameInstant = entries.prefix(6).sorted { $0.id > $1.id }
            #expect(seen == sameInstant + [entries[6]])
        }
    }

    @Test func anAuditEntryMayNameAnAccountThatIsGone() async throws {
        // No foreign key: an entry may name an actor whose account is gone.
        try await withStorage { storage in
            let entry = AuditEntry(actorID: "deleted-user", action: "user.disable", target: "bob", at: t0)
            try await storage.audit.append(entry)
            #expect(try await storage.audit.list(limit: 1, before: nil) == [entry])
        }
    }

    // MARK: Set-up links

    @Test func aSetupTokenWorksOnce() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            let token = SetupToken(tokenHash: String(repeating: "ab", count: 32), userID: alice.id, expiresAt: t0 + 3600)
            try await storage.setupTokens.create(token)
            #expect(try await storage.setupTokens.find(tokenHash: token.tokenHash) == token)
            #expect(try await storage.setupTokens.find(tokenHash: "missing") == nil)

            // Spent with the password, once; a second use changes nothing.
            func use(_ tokenHash: String, for user: User, hash: String, at date: Date) async throws -> User? {
                try await storage.users.setPassword(userID: user.id, hash: hash, spendingSetupToken: tokenHash, at: date)
            }
            #expect(try await use(token.tokenHash, for: alice, hash: "first", at: t0 + 10)?.passwordHash == "first")
            #expect(try await use(token.tokenHash, for: alice, hash: "second", at: t0 + 20) == nil)
            #expect(try await storage.users.find(id: alice.id)?.passwordHash == "first")
            var used = token
            used.usedAt = t0 + 10
            #expect(try await storage.setupTokens.find(tokenHash: token.tokenHash) == used)
            #expect(try await use("missing", for: alice, hash: "third", at: t0) == nil)
            // Another user's link does not set this user's password.
            let bob = try await makeUser("bob", in: storage)
            let bobs = SetupToken(tokenHash: String(repeating: "cd", count: 32), userID: bob.id, expiresAt: t0 + 3600)
            try await storage.setupTokens.create(bobs)
            #expect(try await use(bobs.tokenHash, for: alice, hash: "stolen", at: t0) == nil)
            #expect(try await storage.users.find(id: alice.id)?.passwordHash == "first")
            #expect(try await storage.setupTokens.find(tokenHash: bobs.tokenHash)?.usedAt == nil)

            // A role change deletes the unused links (Bob's) and keeps the used ones (Alice's).
            _ = try await storage.users.setRole(userID: bob.id, to: .instructor)
            _ = try await storage.users.setRole(userID: alice.id, to: .instructor)
            #expect(try await storage.setupTokens.find(tokenHash: bobs.tokenHash) == nil)
            #expect(try await storage.setupTokens.find(tokenHash: token.tokenHash) == used)

            let error = await #expect(throws: StorageError.self) { try await storage.setupTokens.create(token) }
            #expect(error.map(isConflict) == true)
            await #expect(throws: (any Error).self) {  // the user must exist
                try await storage.setupTokens.create(SetupToken(tokenHash: "cd", userID: "nobody", expiresAt: t0))
            }
        }
    }

    @Test func ofConcurrentUsesOfATokenOnlyOneSucceeds() async throws {
        try await withStorage { storage in
            let alice = try await makeUser("alice", in: storage)
            try await storage.setupTokens.create(SetupToken(tokenHash: "hash", userID: alice.id, expiresAt: t0 + 3600))
            let successes = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        try await storage.users.setPassword(userID: alice.id, hash: "hash-\(index)", spendingSetupToken: "hash",
                                                            at: t0 + Double(index)) != nil
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(successes == 1)
        }
    }

    // MARK: Conversations in classes

    @Test func aConversationKeepsItsClass() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let alice = try await makeUser("alice", in: storage)
            let biology = try await makeClass("Biology", code: "BIO", by: ines, in: storage)
            let inClass = Conversation(
                userID: alice.id, title: "Cells", model: "m", classID: biology.id, createdAt: t0, updatedAt: t0
            )
            let personal = Conversation(userID: alice.id, title: "Mine", model: "m", createdAt: t0, updatedAt: t0 + 1)
            try await storage.conversations.create(inClass)
            try await storage.conversations.create(personal)
            #expect(personal.classID == nil)

            #expect(try await storage.conversations.find(id: inClass.id) == inClass)
            #expect(try await storage.conversations.find(id: inClass.id, userID: alice.id)?.classID == biology.id)
            #expect(try await storage.conversations.find(id: personal.id)?.classID == nil)
            let listed = try await storage.conversations.list(userID: alice.id, search: nil, before: nil, limit: 10)
            #expect(listed.map(\.classID) == [nil, biology.id])

            // An update leaves the class as it was created.
            var renamed = inClass
            renamed.title = "Cells, again"
            renamed.classID = nil
            renamed.updatedAt = t0 + 5
            try await storage.conversations.update(renamed)
            #expect(try await storage.conversations.find(id: inClass.id)?.classID == biology.id)
            #expect(try await storage.conversations.find(id: inClass.id)?.title == "Cells, again")

            await #expect(throws: (any Error).self) {  // the class must exist
                try await storage.conversations.create(
                    Conversation(userID: alice.id, title: "x", model: "m", classID: "missing")
                )
            }

            // Deleting the class keeps the conversation, without a class.
            try await storage.classes.delete(id: biology.id)
            let kept = try await storage.conversations.find(id: inClass.id)
            #expect(kept?.classID == nil)
            #expect(kept?.title == "Cells, again")
        }
    }

    // MARK: The migration

    @Test func aDatabaseOfVersionTwoGainsClassesAndKeepsItsRows() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-classes-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appending(path: "gateway.sqlite").path
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let alice = User(username: "alice", passwordHash: "h", role: .student, createdAt: t0)
        let chat = Conversation(userID: alice.id, title: "Old chat", model: "m", createdAt: t0)
        try await self.storageTests.withRawDatabase(path: path) { database in
            try await Migrations.run(on: database, migrations: Array(Migrations.all.prefix(2)), logger: logger)
            try await database.raw("""
                INSERT INTO users (id, username, password_hash, role, disabled, created_at)
                VALUES (\(bind: alice.id), 'alice', 'h', 'student', \(bind: false), \(bind: t0.unixSeconds))
                """).run()
            try await database.raw("""
                INSERT INTO conversations (id, user_id, title, model, created_at, updated_at)
                VALUES (\(bind: chat.id), \(bind: alice.id), 'Old chat', 'm', \(bind: t0.unixSeconds), \(bind: t0.unixSeconds))
                """).run()
        }

        try await self.storageTests.withStorage(path: path) { storage in
            // An account from before sign-ins were kept counts as signed in (at its creation): only an account
            // that can only have been waiting for its set-up link counts as never used.
            var migrated = alice
            migrated.lastLoginAt = t0
            #expect(try await storage.users.find(id: alice.id) == migrated)
            #expect(try await storage.conversations.find(id: chat.id) == chat)
            #expect(try await storage.classes.activeClass(userID: alice.id) == nil)
            let biology = try await makeClass("Biology", code: "BIO", by: alice, in: storage)
            try await storage.classes.setActiveClass(userID: alice.id, classID: biology.id)
            #expect(try await storage.classes.activeClass(userID: alice.id) == biology.id)
        }
    }

    @Test func aDatabaseOfVersionFourKnowsWhichAccountsWereNeverSignedInTo() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: "gseai-logins-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appending(path: "gateway.sqlite").path
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try await self.storageTests.withRawDatabase(path: path) { database in
            try await Migrations.run(on: database, migrations: Array(Migrations.all.prefix(4)), logger: logger)
            for (id, name) in [("w", "waiting"), ("u", "used"), ("c", "cli")] {
                try await database.raw("""
                    INSERT INTO users (id, username, password_hash, role, disabled, created_at)
                    VALUES (\(bind: id), \(bind: name), 'h', 'student', \(bind: false), \(bind: t0.unixSeconds))
                    """).run()
            }
            // A set-up link each for "waiting" and "used"; "used" has signed in since (a session).
            for id in ["w", "u"] {
                try await database.raw("""
                    INSERT INTO setup_tokens (token_hash, user_id, expires_at) VALUES (\(bind: "t-" + id), \(bind: id), \(bind: t0.unixSeconds + 10))
                    """).run()
            }
            try await database.raw("""
                INSERT INTO login_sessions (id, user_id, csrf_token, created_at, expires_at, last_seen_at)
                VALUES ('s', 'u', 'x', \(bind: t0.unixSeconds), \(bind: t0.unixSeconds + 10), \(bind: t0.unixSeconds))
                """).run()
        }
        try await self.storageTests.withStorage(path: path) { storage in
            #expect(try await storage.users.find(id: "w")?.lastLoginAt == nil)
            #expect(try await storage.users.find(id: "u")?.lastLoginAt == t0)
            #expect(try await storage.users.find(id: "c")?.lastLoginAt == t0)
            try await storage.users.recordLogin(userID: "w", at: t0 + 60)
            #expect(try await storage.users.find(id: "w")?.lastLoginAt == t0 + 60)
            await #expect(throws: StorageError.notFound) { try await storage.users.recordLogin(userID: "nobody", at: t0) }
        }
    }

    // MARK: Invitations and the roster

    @Test func anInvitationIsAcceptedOnceAndMakesTheClassTheActiveOne() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let sam = try await makeUser("sam", in: storage)
            let biology = try await makeClass("Biology", code: "BIO", by: ines, in: storage)
            let chemistry = try await makeClass("Chemistry", code: "CHE", by: ines, createdAt: t0 + 1, in: storage)

            #expect(try await storage.classes.invite(classID: biology.id, userID: sam.id, at: t0 + 5))
            #expect(try await !storage.classes.invite(classID: biology.id, userID: sam.id, at: t0 + 9))  // kept, first date
            #expect(try await storage.classes.invite(classID: chemistry.id, userID: sam.id, at: t0 + 6))
            #expect(try await storage.classes.invitations(classID: nil, userID: sam.id) == [
                ClassInvitation(classID: biology.id, userID: sam.id, username: "sam", invitedAt: t0 + 5),
                ClassInvitation(classID: chemistry.id, userID: sam.id, username: "sam", invitedAt: t0 + 6),
            ])
            #expect(try await storage.classes.invitations(classID: biology.id, userID: nil).map(\.userID) == [sam.id])
            // Invited is not a member.
            #expect(try await !storage.classes.isMember(classID: biology.id, userID: sam.id))

            #expect(try await storage.classes.acceptInvitation(classID: biology.id, userID: sam.id, at: t0 + 7))
            #expect(try await !storage.classes.acceptInvitation(classID: biology.id, userID: sam.id, at: t0 + 8))
            #expect(try await storage.classes.isMember(classID: biology.id, userID: sam.id))
            #expect(try await storage.classes.members(classID: biology.id).first?.joinedAt == t0 + 7)
            #expect(try await storage.classes.activeClass(userID: sam.id) == biology.id)
            // A member is not invited again.
            #expect(try await !storage.classes.invite(classID: biology.id, userID: sam.id, at: t0 + 9))

            #expect(try await storage.classes.removeInvitation(classID: chemistry.id, userID: sam.id))
            #expect(try await !storage.classes.removeInvitation(classID: chemistry.id, userID: sam.id))
            #expect(try await storage.classes.invitations(classID: nil, userID: sam.id) == [])
            #expect(try await !storage.classes.acceptInvitation(classID: chemistry.id, userID: sam.id, at: t0 + 9))
            #expect(try await !storage.classes.isMember(classID: chemistry.id, userID: sam.id))

            // Deleting the class deletes its invitations.
            #expect(try await storage.classes.invite(classID: chemistry.id, userID: sam.id, at: t0 + 10))
            try await storage.classes.delete(id: chemistry.id)
            #expect(try await storage.classes.invitations(classID: nil, userID: sam.id) == [])
        }
    }

    @Test func theRosterComesInOneQueryWithEachMembersAccountFacts() async throws {
        try await withStorage { storage in
            let ines = try await makeUser("ines", in: storage)
            let otto = try await makeUser("otto", in: storage)
            let sam = try await makeUser("sam", in: storage)
            let ada = try await makeUser("ada", in: storage)
            let biology = try await makeClass("Biology", code: "BIO", by: ines, in: storage)
            let genetics = try await makeClass("Genetics", code: "GEN", by: ines, in: storage)
            let chemistry = try await makeClass("Chemistry", code: "CHE", by: otto, in: storage)
            try await storage.classes.addMember(classID: biology.id, userID: sam.id, at: t0 + 1)
            try await storage.classes.addMember(classID: biology.id, userID: ada.id, at: t0 + 2)
            // Ada is also in another class of the same instructor: still theirs alone. Sam is in Otto's too.
            try await storage.classes.addMember(classID: genetics.id, userID: ada.id, at: t0 + 3)
            try await storage.classes.addMember(classID: chemistry.id, userID: sam.id, at: t0 + 3)
            try await storage.users.recordLogin(userID: sam.id, at: t0 + 4)
            try await storage.sessions.create(storageTests.session("s1", for: sam, createdAt: t0 + 5, lifetime: 100))
            var key = APIKey(userID: sam.id, prefix: "gsk_abcdefgh", hash: "h", label: "k")
            key.createdAt = t0
            try await storage.apiKeys.create(key)
            try await storage.apiKeys.touch(id: key.id, at: t0 + 9)

            let roster = try await storage.classes.roster(classID: biology.id)
            #expect(roster == [
                RosterEntry(userID: sam.id, username: "sam", role: .student, disabled: false, lastLoginAt: t0 + 4, hasLiveKey: true, joinedAt: t0 + 1,
                            lastSeenAt: t0 + 9, inAnotherInstructorsClass: true),
                RosterEntry(userID: ada.id, username: "ada", role: .student, disabled: false, lastLoginAt: nil, joinedAt: t0 + 2,
                            lastSeenAt: nil, inAnotherInstructorsClass: false),
            ])
            #expect(try await storage.classes.roster(classID: chemistry.id).map(\.inAnotherInstructorsClass) == [true])
            #expect(try await storage.classes.roster(classID: "missing") == [])
        }
    }

    // MARK: Helpers

    let logger = Logger(label: "ClassStorageTests", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The storage helpers (`withStorage`, `makeUser`, `isConflict`) are the ones of the other storage tests.
    let storageTests = StorageTests()

    func withStorage(_ body: (Storage) async throws -> Void) async throws {
        try await self.storageTests.withStorage(path: nil, body)
    }

    func makeUser(_ username: String, in storage: Storage) async throws -> User {
        try await self.storageTests.makeUser(username, in: storage)
    }

    func isConflict(_ error: StorageError) -> Bool {
        self.storageTests.isConflict(error)
    }

    func add(to storage: Storage, _ user: User, _ model: String, _ day: String, _ input: Int, _ output: Int,
             in classID: String? = nil) async throws {
        try await self.storageTests.add(to: storage, user, model, day, input, output, in: classID)
    }

    func makeClass(_ name: String, code: String, by instructor: User, createdAt: Date? = nil, in storage: Storage)
        async throws -> ClassSession
    {
        let classSession = ClassSession(
            instructorID: instructor.id, name: name, joinCode: code, createdAt: createdAt ?? t0
        )
        try await storage.classes.create(classSession)
        return classSession
    }

    /// The class as stored: its join code uppercased.
    func uppercased(_ classSession: ClassSession) -> ClassSession {
        var stored = classSession
        stored.joinCode = classSession.joinCode.uppercased()
        return stored
    }

    /// A policy with every field away from its default.
    let everyFieldPolicy = ClassPolicy(
        allowedModels: ["qwen/qwen3-8b", "google/gemma-3-270m"], systemPrompt: "Answer in Spanish.",
        systemPromptLocked: true, maxOutputTokens: 512, dailyTokenBudget: 20_000, requestsPerMinute: 6,
        imagesAllowed: false, transcriptVisibility: .full
    )
}
