"""Who may do what to whom, over HTTP: every class and administration route against every kind of caller.

Two instructors, A and B, run a class each (transcripts visible); a student S is in B's class only, has signed
in once and has a conversation there with a finished answer (the `two_instructors` fixture in `conftest.py`).
The callers are anonymous, S's login session, S's API key, A, B and the gateway's first-run administrator
(`admin`). Each route of `/openapi.json` under `/api/classes` and `/api/admin` (and the fair queue's two, listed or
not yet) is called by each caller on B's class (the student's), A's class and a class that does not
exist, and each answer's status and, for a refusal, its message are asserted; after the refusals, nothing of
S's account or of either class has changed.

Then the rules of the security fix, step by step: a roster import only invites an existing student (the
takeover of the issue ends there), a student who accepts is in two instructors' classes and only an
administrator manages their account, invitations are answered only by their student, an instructor issues a
set-up link only for an account nobody has signed in to, and a class that shares nothing hides its students'
account activity. The shared HTTP helpers are in `helpers.py`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest

from helpers import WAIT, bearer, import_roster, login_status, session, status

UNAUTHENTICATED = "missing or invalid credentials: send an API key as 'Authorization: Bearer …' or 'x-api-key', or log in"
NEEDS_INSTRUCTOR = "this needs the instructor role"
NEEDS_ADMIN = "this needs the admin role"
NO_CLASS = "no such class"
NO_MEMBER = "no such member"
NO_INVITATION = "no such invitation"
NO_CONVERSATION = "no such conversation"
NO_USER = "no such user"
ONLY_STUDENTS_JOIN = "only students join classes"
LINK_INVALID = "this set-up link is not valid; check that it was copied whole"
LINK_USED = "this set-up link has been used already; ask your instructor or an administrator for a new one"


def shared(username: str) -> str:
    return f"'{username}' is also in another instructor's class: only an administrator manages their account"


def signed_in_already(username: str) -> str:
    return f"'{username}' has signed in already: only an administrator can reset their password (they can change it themselves)"


def activity_hidden(class_name: str) -> str:
    return f"the class '{class_name}' does not share its students' activity (its transcript visibility is off)"


# ---------------------------------------------------------------------------
# The routes, as `/openapi.json` writes them


# Routes of one class (`{id}`), its invitations and its members (`{user}`): the class's instructor's and the
# administrators'.
MEMBER_ACCOUNT_ROUTES = [
    ("GET", "/api/classes/{id}/members/{user}/sessions"),
    ("DELETE", "/api/classes/{id}/members/{user}/sessions/{session}"),
    ("GET", "/api/classes/{id}/members/{user}/keys"),
    ("DELETE", "/api/classes/{id}/members/{user}/keys/{key}"),
    ("POST", "/api/classes/{id}/members/{user}/disable"),
    ("POST", "/api/classes/{id}/members/{user}/enable"),
    ("POST", "/api/classes/{id}/members/{user}/reset-link"),
]
MEMBER_ROUTES = [
    ("DELETE", "/api/classes/{id}/members/{user}"),
    ("GET", "/api/classes/{id}/members/{user}/usage"),
    ("GET", "/api/classes/{id}/members/{user}/conversations"),
    ("GET", "/api/classes/{id}/members/{user}/conversations/{conversation}"),
    *MEMBER_ACCOUNT_ROUTES,
]
CLASS_ROUTES = [
    ("GET", "/api/classes/{id}"),
    ("PATCH", "/api/classes/{id}"),
    ("DELETE", "/api/classes/{id}"),
    ("POST", "/api/classes/{id}/code"),
    ("POST", "/api/classes/{id}/open"),
    ("POST", "/api/classes/{id}/close"),
    ("GET", "/api/classes/{id}/members"),
    ("POST", "/api/classes/{id}/roster"),
    ("GET", "/api/classes/{id}/usage.csv"),
    ("GET", "/api/classes/{id}/queue"),
    ("DELETE", "/api/classes/{id}/invitations/{user}"),
    *MEMBER_ROUTES,
]
# Instructors' and administrators' routes without a class.
STAFF_ROUTES = [("GET", "/api/classes"), ("POST", "/api/classes")]
# Every signed-in user's (students' in effect: staff are in no class and invited to none).
STUDENT_ROUTES = [
    ("GET", "/api/classes/mine"),
    ("POST", "/api/classes/active"),
    ("POST", "/api/classes/join"),
    ("GET", "/api/classes/invitations"),
    ("POST", "/api/classes/invitations/{id}/accept"),
    ("POST", "/api/classes/invitations/{id}/decline"),
]
# Administrators' only (`{id}` is a user's).
ADMIN_ROUTES = [
    ("GET", "/api/admin/users"),
    ("PATCH", "/api/admin/users/{id}"),
    ("POST", "/api/admin/users/{id}/reset-link"),
    ("GET", "/api/admin/audit"),
    ("GET", "/api/admin/upstreams"),
]
ALL_ROUTES = STAFF_ROUTES + STUDENT_ROUTES + CLASS_ROUTES + ADMIN_ROUTES
# Added with the fair queue, and documented after the routes: the matrix takes them whether the document
# lists them yet or not.
UNDOCUMENTED = {("GET", "/api/classes/{id}/queue"), ("GET", "/api/admin/upstreams")}


# ---------------------------------------------------------------------------
# The callers


@dataclass
class Roles:
    """The `two_instructors` world with every caller: S's key, the administrator, an anonymous client."""

    base: str
    w: object  # conftest.TwoInstructors
    s_key: httpx.Client
    key: str
    key_id: str
    session_id: str  # S's login session (the fixture's)
    admin: httpx.Client
    admin_id: str
    anonymous: httpx.Client
    missing_class: str

    @property
    def callers(self) -> dict[str, httpx.Client]:
        return {"anonymous": self.anonymous, "student session": self.w.s.client, "student key": self.s_key,
                "instructor A": self.w.a.client, "instructor B": self.w.b.client, "admin": self.admin}

    def call(self, client: httpx.Client, method: str, route: str, class_id: str | None = None, user: str | None = None,
             **fill) -> httpx.Response:
        """Calls `route` (as in /openapi.json) with its placeholders filled: `{id}` is `class_id` (a user's id on
        the administrators' routes, S's unless `user` says otherwise), `{user}` S (or `user`), `{session}`,
        `{key}` and `{conversation}` S's; the body is what the console would send."""
        s = self.w.s
        values = {"user": user or s.id, "session": self.session_id, "key": self.key_id,
                  "conversation": self.w.conversation["conversation"]["id"], **fill}
        values["id"] = (user or s.id) if route.startswith("/api/admin/") else class_id
        path = route.format(**values)
        options: dict = {}
        if route.endswith("/roster"):
            options = {"content": f"username\n{s.username}\n", "headers": {"Content-Type": "text/csv"}}
        elif (method, route) == ("POST", "/api/classes"):
            options = {"json": {"name": f"Another {uuid.uuid4().hex[:6]}"}}
        elif (method, route) == ("PATCH", "/api/classes/{id}"):
            options = {"json": {"name": "Taken over", "policy": {"transcript_visibility": "full"}}}
        elif route == "/api/classes/active":
            options = {"json": {"class_id": class_id}}
        elif route == "/api/classes/join":
            options = {"json": {"code": self.w.a_class["join_code"]}}
        elif (method, route) == ("PATCH", "/api/admin/users/{id}"):
            options = {"json": {"disabled": True}}
        elif method == "POST":
            options = {"json": {}}
        return client.request(method, path, **options)

    def expect(self, client, expected: tuple[int, str], routes, class_ids=(None,), user: str | None = None) -> None:
        """Each route, on each class, answers `expected` (status and error message); lists every one that does not."""
        wrong = []
        for class_id in class_ids:
            for method, route in routes:
                answer = self.call(client, method, route, class_id, user)
                if status(answer) != expected:
                    wrong.append(f"{method} {route} on {class_id}: {answer.status_code} {answer.text[:200]}")
        assert not wrong, f"expected {expected}:\n" + "\n".join(wrong)

    def account(self, client, class_id: str, user_id: str) -> dict:
        """The roster entry of `user_id` in the class, as `client` reads it."""
        roster = client.get(f"/api/classes/{class_id}/members")
        assert roster.status_code == 200, roster.text
        return next(m for m in roster.json()["data"] if m["user_id"] == user_id)

    def actions_by(self, *user_ids: str) -> list[tuple[str, str, str]]:
        """The audit log's entries made by these users: (actor, action, target — detail), newest first."""
        log = self.admin.get("/api/admin/audit", params={"limit": 500})
        assert log.status_code == 200, log.text
        return [(e["actor_username"], e["action"], " — ".join(filter(None, [e["target"], e.get("detail")])))
                for e in log.json()["data"] if e["actor_id"] in user_ids]


@pytest.fixture
def roles(gateway, two_instructors):
    w = two_instructors
    base = gateway.base_url
    made = w.s.client.post("/auth/keys", json={"label": "laptop"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["api_key"]["id"]
    sessions = w.s.client.get("/auth/sessions").json()["data"]
    assert len(sessions) == 1 and sessions[0]["current"], sessions
    admin = session(base, "admin", gateway.admin_password, agent="e2e-admin")
    clients = [httpx.Client(base_url=base, timeout=WAIT, headers=bearer(key)), admin,
               httpx.Client(base_url=base, timeout=WAIT)]
    try:
        yield Roles(base=base, w=w, s_key=clients[0], key=key, key_id=key_id, session_id=sessions[0]["id"],
                    admin=admin, admin_id=admin.get("/auth/me").json()["user"]["id"], anonymous=clients[2],
                    missing_class=str(uuid.uuid4()))
    finally:
        for client in clients:
            client.close()


def assert_untouched(r: Roles) -> None:
    """Nothing of S's account or of either class changed: no action on them is in the audit log, the classes
    are as created, S is in B's class only and invited nowhere, their session, key and password still work."""
    w = r.w
    actions = r.actions_by(w.a.id, w.b.id, w.s.id)
    assert sorted(action for _, action, _ in actions) == ["class.create", "class.create"], actions
    for teacher, klass in ((w.a, w.a_class), (w.b, w.b_class)):
        now = teacher.client.get(f"/api/classes/{klass['id']}").json()
        assert {k: now[k] for k in ("name", "join_code", "is_open", "is_active", "policy")} == \
               {k: klass[k] for k in ("name", "join_code", "is_open", "is_active", "policy")}, now
    assert [m["username"] for m in r.admin.get(f"/api/classes/{w.b_class['id']}/members").json()["data"]] == [w.s.username]
    a_roster = r.admin.get(f"/api/classes/{w.a_class['id']}/members").json()
    assert (a_roster["data"], a_roster["invited"]) == ([], []), a_roster
    mine = r.s_key.get("/api/classes/mine").json()
    assert ([c["id"] for c in mine["data"]], mine["applied_class_id"]) == ([w.b_class["id"]], w.b_class["id"]), mine
    assert w.s.client.get("/auth/me").json()["user"]["username"] == w.s.username
    assert [k.get("revoked_at") for k in w.s.client.get("/auth/keys").json()["data"]] == [None]
    assert [s["id"] for s in w.s.client.get("/auth/sessions").json()["data"]] == [r.session_id]
    conversation = w.s.client.get(f"/api/conversations/{w.conversation['conversation']['id']}").json()
    assert [m["text"] for m in conversation["messages"]] == [w.question, f"Echo: {w.question}"], conversation
    assert login_status(r.base, w.s.username, w.s.password) == (200, "")


# ---------------------------------------------------------------------------
# The matrix


def test_the_matrix_covers_every_class_and_admin_route_of_the_openapi_document(gateway):
    document = httpx.get(f"{gateway.base_url}/openapi.json", timeout=WAIT)
    assert document.status_code == 200, document.text
    documented = {(method.upper(), path) for path, item in document.json()["paths"].items()
                  if path.startswith(("/api/classes", "/api/admin")) for method in item if method != "parameters"}
    matrix = set(ALL_ROUTES)
    assert len(matrix) == len(ALL_ROUTES)
    assert documented <= matrix, sorted(documented - matrix)
    assert matrix - documented <= UNDOCUMENTED, sorted(matrix - documented)


def test_an_anonymous_caller_is_refused_everywhere(roles):
    r = roles
    refused = (401, UNAUTHENTICATED)
    r.expect(r.anonymous, refused, STAFF_ROUTES + STUDENT_ROUTES + ADMIN_ROUTES, (r.w.b_class["id"],))
    r.expect(r.anonymous, refused, CLASS_ROUTES, (r.w.b_class["id"], r.w.a_class["id"], r.missing_class))
    answer = r.anonymous.get(f"/api/classes/{r.w.b_class['id']}/members")
    assert answer.json()["error"]["type"] == "authentication_error", answer.text
    assert "join_code" not in answer.text and r.w.s.username not in answer.text
    assert_untouched(r)


@pytest.mark.parametrize("credential", ["student session", "student key"])
def test_a_student_reaches_no_class_management_and_no_administration(roles, credential):
    r = roles
    student = r.callers[credential]
    classes = (r.w.b_class["id"], r.w.a_class["id"], r.missing_class)  # their own class, another, none
    r.expect(student, (403, NEEDS_INSTRUCTOR), STAFF_ROUTES + CLASS_ROUTES, classes)
    r.expect(student, (403, NEEDS_ADMIN), ADMIN_ROUTES)
    # Not even themselves: their own account's page in the class is the instructor's.
    r.expect(student, (403, NEEDS_INSTRUCTOR), MEMBER_ROUTES, (r.w.b_class["id"],), user=r.w.s.id)
    refused = r.call(student, "GET", "/api/classes/{id}/members", r.w.b_class["id"])
    assert refused.json()["error"]["type"] == "permission_error", refused.text
    assert "join_code" not in refused.text
    assert_untouched(r)


@pytest.mark.parametrize("credential", ["student session", "student key"])
def test_a_students_own_routes_reach_only_their_classes_and_invitations(roles, credential):
    r = roles
    w = r.w
    student = r.callers[credential]
    mine = student.get("/api/classes/mine")
    assert mine.status_code == 200, mine.text
    assert mine.json()["applied_class_id"] == w.b_class["id"]
    [chemistry] = mine.json()["data"]
    assert (chemistry["id"], chemistry["name"], chemistry["applies"], chemistry["is_active"]) == \
           (w.b_class["id"], w.b_class["name"], True, True), chemistry
    assert chemistry["policy"]["transcript_visibility"] == "full"
    assert "join_code" not in chemistry and "instructor_id" not in chemistry, chemistry

    # Choosing a class they are not in is "not found", like one that does not exist.
    for other in (w.a_class["id"], r.missing_class):
        assert status(r.call(student, "POST", "/api/classes/active", other)) == (404, NO_CLASS)
    chosen = r.call(student, "POST", "/api/classes/active", w.b_class["id"])
    assert chosen.status_code == 200 and chosen.json()["applied_class_id"] == w.b_class["id"], chosen.text
    assert status(student.post("/api/classes/join", json={"code": "NOPE2345"})) == (404, "no class has the join code 'NOPE2345'")

    # No invitation: none listed, and answering one is "not found", for any class.
    listed = student.get("/api/classes/invitations")
    assert (listed.status_code, listed.json()) == (200, {"data": []}), listed.text
    for answer in ("accept", "decline"):
        for class_id in (w.a_class["id"], w.b_class["id"], r.missing_class):
            assert status(r.call(student, "POST", f"/api/classes/invitations/{{id}}/{answer}", class_id)) == (404, NO_INVITATION)
    assert_untouched(r)

    # Their own action, the join code, is what puts them in A's class.
    joined = r.call(student, "POST", "/api/classes/join")
    assert joined.status_code == 200, joined.text
    assert (joined.json()["id"], joined.json()["applies"]) == (w.a_class["id"], True), joined.json()
    assert "join_code" not in joined.json()
    assert sorted(c["id"] for c in student.get("/api/classes/mine").json()["data"]) == sorted([w.a_class["id"], w.b_class["id"]])


def test_staff_have_no_classes_of_their_own_to_join_or_answer(roles):
    r = roles
    for name in ("instructor A", "instructor B", "admin"):
        staff = r.callers[name]
        assert staff.get("/api/classes/mine").json() == {"data": []}, name  # no class applies: none named
        assert staff.get("/api/classes/invitations").json() == {"data": []}, name
        assert status(r.call(staff, "POST", "/api/classes/join")) == (403, ONLY_STUDENTS_JOIN), name
        assert status(r.call(staff, "POST", "/api/classes/active", r.w.a_class["id"])) == (404, NO_CLASS), name
        for answer in ("accept", "decline"):
            assert status(r.call(staff, "POST", f"/api/classes/invitations/{{id}}/{answer}", r.w.a_class["id"])) \
                == (404, NO_INVITATION), (name, answer)
    assert_untouched(r)


def test_an_instructor_reaches_only_their_own_classes(roles):
    r = roles
    w = r.w
    for teacher, own, other in ((w.a, w.a_class, w.b_class), (w.b, w.b_class, w.a_class)):
        listed = teacher.client.get("/api/classes")
        assert [(c["id"], c["instructor_id"]) for c in listed.json()["data"]] == [(own["id"], teacher.id)], listed.text
        # Another instructor's class is "not found" exactly like a missing one, whatever is asked of it.
        r.expect(teacher.client, (404, NO_CLASS), CLASS_ROUTES, (other["id"], r.missing_class))
        r.expect(teacher.client, (403, NEEDS_ADMIN), ADMIN_ROUTES)
    # Nor is another instructor's student reachable through the instructor's own class…
    r.expect(w.a.client, (404, NO_MEMBER), MEMBER_ROUTES, (w.a_class["id"],))
    r.expect(w.a.client, (404, NO_INVITATION), [("DELETE", "/api/classes/{id}/invitations/{user}")], (w.a_class["id"],))
    # …nor their conversation, whichever way it is asked for.
    conversation_id = w.conversation["conversation"]["id"]
    assert status(w.a.client.get(f"/api/conversations/{conversation_id}")) == (404, NO_CONVERSATION)
    assert_untouched(r)


# ---------------------------------------------------------------------------
# What each may do


def test_the_owner_runs_their_class_and_manages_a_student_only_in_it(roles, gateway):
    r = roles
    w = r.w
    b, cls, s = w.b.client, w.b_class["id"], w.s
    member = f"/api/classes/{cls}/members/{s.id}"

    shown = b.get(f"/api/classes/{cls}")
    assert shown.status_code == 200, shown.text
    assert {k: shown.json()[k] for k in ("name", "instructor_id", "join_code", "is_open")} == \
           {"name": w.b_class["name"], "instructor_id": w.b.id, "join_code": w.b_class["join_code"], "is_open": True}

    roster = b.get(f"/api/classes/{cls}/members").json()
    [entry] = roster["data"]
    assert roster["invited"] == []
    assert (entry["username"], entry["disabled"], entry["has_signed_in"]) == (s.username, False, True), entry
    assert entry["last_seen_at"] is not None, entry  # the class shares usage and S is B's student only
    assert entry["account"] == {"sessions_and_keys": True, "disable": True, "setup_link": False,
                                "reasons": {"setup_link": signed_in_already(s.username)}}, entry
    usage = b.get(f"{member}/usage")
    assert usage.status_code == 200 and (usage.json()["user_id"], usage.json()["username"]) == (s.id, s.username), usage.text

    # The transcripts held in the class, read-only.
    conversation = w.conversation["conversation"]
    listed = b.get(f"{member}/conversations").json()["data"]
    assert [(c["id"], c["title"], c["class_id"]) for c in listed] == [(conversation["id"], conversation["title"], cls)], listed
    read = b.get(f"{member}/conversations/{conversation['id']}")
    assert read.status_code == 200, read.text
    assert [(m["role"], m["text"]) for m in read.json()["messages"]] == \
           [("user", w.question), ("assistant", f"Echo: {w.question}")], read.json()

    # The account's login sessions and keys.
    sessions = b.get(f"{member}/sessions").json()["data"]
    assert [(x["id"], x["user_agent"], x["current"]) for x in sessions] == [(r.session_id, w.s_agent, False)], sessions
    keys = b.get(f"{member}/keys").json()["data"]
    assert [(k["id"], k["label"], k.get("revoked_at")) for k in keys] == [(r.key_id, "laptop", None)], keys
    assert r.key not in b.get(f"{member}/keys").text and r.key.startswith(keys[0]["prefix"]), keys  # its prefix only

    csv = b.get(f"/api/classes/{cls}/usage.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv"), csv.text
    assert csv.text.startswith("day,username,model,requests,input_tokens,output_tokens\r\n"), csv.text
    queue = b.get(f"/api/classes/{cls}/queue")
    assert queue.status_code == 200 and (queue.json()["waiting"], queue.json()["running"]) == (0, 0), queue.text

    # A roster import: a new account with its set-up link; S, already in, is neither added nor invited.
    newcomer = f"new{uuid.uuid4().hex[:8]}"
    imported = import_roster(b, cls, f"{s.username}\n{newcomer}\n").json()
    assert (imported["invited"], imported["already_members"], imported["errors"]) == ([], [s.username], []), imported
    assert [c["username"] for c in imported["created"]] == [newcomer], imported
    assert imported["created"][0]["setup_url"].startswith(f"{r.base}/setup.html#token="), imported
    newcomer_id = next(m["user_id"] for m in b.get(f"/api/classes/{cls}/members").json()["data"] if m["username"] == newcomer)
    link = b.post(f"/api/classes/{cls}/members/{newcomer_id}/reset-link", json={})
    assert link.status_code == 201 and link.json()["url"].startswith(f"{r.base}/setup.html#token="), link.text
    # S has signed in: only an administrator may give them a password link.
    assert status(b.post(f"{member}/reset-link", json={})) == (403, signed_in_already(s.username))
    assert status(b.delete(f"/api/classes/{cls}/invitations/{s.id}")) == (404, NO_INVITATION)

    # The class itself.
    renamed = b.patch(f"/api/classes/{cls}", json={"name": "Chemistry II", "policy": {"daily_token_budget": 5000}})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["policy"]["daily_token_budget"]) == ("Chemistry II", 5000), renamed.json()
    code = b.post(f"/api/classes/{cls}/code", json={}).json()["join_code"]
    assert code != w.b_class["join_code"] and len(code) == 8
    assert b.post(f"/api/classes/{cls}/close", json={}).json()["is_active"] is False
    assert b.post(f"/api/classes/{cls}/open", json={}).json()["is_active"] is True

    # Ending S's session and revoking their key take effect at once.
    assert b.delete(f"{member}/sessions/{r.session_id}").status_code == 204
    assert w.s.client.get("/auth/me").status_code == 401
    assert b.delete(f"{member}/keys/{r.key_id}").status_code == 204
    assert status(r.s_key.get("/api/classes/mine")) == (401, "invalid or revoked API key")
    # Disabling keeps S out; enabling lets the password in again.
    disabled = b.post(f"{member}/disable", json={})
    assert (disabled.status_code, disabled.json()["username"], disabled.json()["disabled"]) == (200, s.username, True), disabled.text
    assert login_status(r.base, s.username, s.password) == (401, "wrong username or password")
    assert b.post(f"{member}/enable", json={}).json()["disabled"] is False
    again = session(r.base, s.username, s.password)

    # Removing S from the class ends every reach into their account.
    assert b.delete(member).status_code == 204
    assert again.get("/api/classes/mine").json() == {"data": []}
    r.expect(b, (404, NO_MEMBER), MEMBER_ROUTES, (cls,))
    assert b.delete(f"/api/classes/{cls}").status_code == 204
    assert status(b.get(f"/api/classes/{cls}")) == (404, NO_CLASS)
    # S's own conversation stays theirs.
    assert again.get(f"/api/conversations/{conversation['id']}").json()["messages"][1]["text"] == f"Echo: {w.question}"
    again.close()
    actions = [action for _, action, _ in r.actions_by(w.b.id)]
    for action in ("class.member.sessions.list", "class.member.keys.list", "class.transcript.view", "class.member.session.revoke",
                   "class.member.key.revoke", "class.member.disable", "class.member.enable", "class.member.remove",
                   "class.delete", "class.member.reset-link"):
        assert action in actions, (action, actions)


def test_an_administrator_manages_every_class_and_account(roles):
    r = roles
    w = r.w
    admin, s = r.admin, w.s
    in_b = f"/api/classes/{w.b_class['id']}/members/{s.id}"

    listed = {c["id"] for c in admin.get("/api/classes").json()["data"]}
    assert {w.a_class["id"], w.b_class["id"]} <= listed
    for klass in (w.a_class, w.b_class):
        assert admin.get(f"/api/classes/{klass['id']}").json()["join_code"] == klass["join_code"]
    entry = r.account(admin, w.b_class["id"], s.id)
    assert entry["account"] == {"sessions_and_keys": True, "disable": True, "setup_link": True, "reasons": {}}, entry
    assert entry["last_seen_at"] is not None and entry["has_signed_in"] is True, entry
    assert [x["user_agent"] for x in admin.get(f"{in_b}/sessions").json()["data"]] == [w.s_agent]
    assert [k["id"] for k in admin.get(f"{in_b}/keys").json()["data"]] == [r.key_id]
    read = admin.get(f"{in_b}/conversations/{w.conversation['conversation']['id']}")
    assert [m["text"] for m in read.json()["messages"]] == [w.question, f"Echo: {w.question}"], read.text
    # An administrator reaches a member through a class the member is in, like anyone: S is not in A's class.
    r.expect(admin, (404, NO_MEMBER), MEMBER_ROUTES, (w.a_class["id"],))
    # …and adds nobody to a class either: an import invites S, who has not answered; withdrawn again.
    imported = import_roster(admin, w.a_class["id"], f"{s.username}\n").json()
    assert (imported["invited"], imported["created"]) == ([s.username], []), imported
    assert [x["username"] for x in admin.get(f"/api/classes/{w.a_class['id']}/members").json()["invited"]] == [s.username]
    assert admin.delete(f"/api/classes/{w.a_class['id']}/invitations/{s.id}").status_code == 204
    assert status(admin.delete(f"/api/classes/{w.a_class['id']}/invitations/{s.id}")) == (404, NO_INVITATION)

    # Users and roles.
    users = {u["username"]: u for u in admin.get("/api/admin/users").json()["data"]}
    assert {(users[p.username]["id"], users[p.username]["role"]) for p in (w.a, w.b, s)} == \
           {(w.a.id, "instructor"), (w.b.id, "instructor"), (s.id, "student")}
    assert "password" not in str(users[s.username]) and "hash" not in str(users[s.username]), users[s.username]
    promoted = admin.patch(f"/api/admin/users/{s.id}", json={"role": "instructor"})
    assert (promoted.status_code, promoted.json()["role"]) == (200, "instructor"), promoted.text
    # A member who is now staff is the administrators' to manage, not their former instructor's, and the roster
    # says so (it offered B these powers, and S's last sign-in, until the fix that came with these tests).
    staff = f"only an administrator manages the account of '{s.username}'"
    for method, route in MEMBER_ACCOUNT_ROUTES:
        assert status(r.call(w.b.client, method, route, w.b_class["id"])) == (403, staff), route
    entry = r.account(w.b.client, w.b_class["id"], s.id)
    assert entry["account"] == {"sessions_and_keys": False, "disable": False, "setup_link": False,
                                "reasons": {"sessions_and_keys": staff, "disable": staff, "setup_link": staff}}, entry
    assert entry.get("last_seen_at") is None, entry
    assert admin.get(f"{in_b}/sessions").status_code == 200
    assert admin.patch(f"/api/admin/users/{s.id}", json={"role": "student"}).json()["role"] == "student"
    assert status(admin.patch(f"/api/admin/users/{r.admin_id}", json={"role": "student"})) == \
        (403, "you cannot demote or disable your own account")
    assert status(admin.patch(f"/api/admin/users/{r.admin_id}", json={"disabled": True})) == \
        (403, "you cannot demote or disable your own account")
    assert status(admin.patch(f"/api/admin/users/{s.id}", json={})) == (400, "send 'role', 'disabled' or both")
    assert status(admin.patch(f"/api/admin/users/{uuid.uuid4()}", json={"role": "student"})) == (404, NO_USER)
    assert status(admin.post(f"/api/admin/users/{uuid.uuid4()}/reset-link", json={})) == (404, NO_USER)

    # The model servers, without their token.
    upstreams = admin.get("/api/admin/upstreams")
    assert upstreams.status_code == 200 and len(upstreams.json()["data"]) >= 1, upstreams.text
    assert all({"name", "kind", "url", "up", "slots"} <= set(u) for u in upstreams.json()["data"]), upstreams.json()
    assert "stub-token" not in upstreams.text

    # Disabling and enabling through the class; set-up links through the class and for any user.
    assert admin.post(f"{in_b}/disable", json={}).json()["disabled"] is True
    assert w.s.client.get("/auth/me").status_code == 401
    assert admin.post(f"{in_b}/enable", json={}).json()["disabled"] is False
    through_class = admin.post(f"{in_b}/reset-link", json={})
    assert through_class.status_code == 201, through_class.text
    link = admin.post(f"/api/admin/users/{s.id}/reset-link", json={})
    assert link.status_code == 201 and link.json()["url"].startswith(f"{r.base}/setup.html#token="), link.text
    token = link.json()["url"].split("#token=", 1)[1]
    new_password = f"a password from the admin {uuid.uuid4().hex[:6]}"
    assert r.anonymous.post("/api/setup", json={"token": token, "password": new_password}).status_code == 204
    assert login_status(r.base, s.username, s.password) == (401, "wrong username or password")
    assert login_status(r.base, s.username, new_password) == (200, "")
    # Using one link and signing in spent the other.
    other_token = through_class.json()["url"].split("#token=", 1)[1]
    assert status(r.anonymous.post("/api/setup", json={"token": other_token, "password": "the instructor's"})) == (400, LINK_INVALID)
    assert status(r.anonymous.post("/api/setup", json={"token": token, "password": "once more please"})) == (410, LINK_USED)

    actions = r.actions_by(r.admin_id)
    for expected in (("admin", "user.reset-link", s.id),
                     ("admin", "class.member.reset-link", f"{s.id} — class {w.b_class['id']}"),
                     ("admin", "user.set-role", f"{s.id} — student → instructor"),
                     ("admin", "class.member.disable", f"{s.id} — class {w.b_class['id']}")):
        assert expected in actions, (expected, actions[:20])


# ---------------------------------------------------------------------------
# The takeover of the issue, and what stops it


def test_the_takeover_through_a_roster_import_ends_at_its_first_step(roles):
    r = roles
    w = r.w
    a, s = w.a.client, w.s
    newcomer = f"new{uuid.uuid4().hex[:8]}"

    # A names B's student in a roster: S is invited, not added; the new name becomes an account of A's class.
    imported = import_roster(a, w.a_class["id"], f"username,email\n{s.username},s@example.org\n{newcomer},n@example.org\n")
    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert (result["invited"], result["already_members"], result["errors"]) == ([s.username], [], []), result
    assert [c["username"] for c in result["created"]] == [newcomer], result
    roster = a.get(f"/api/classes/{w.a_class['id']}/members").json()
    assert [m["username"] for m in roster["data"]] == [newcomer], roster
    assert [(x["user_id"], x["username"]) for x in roster["invited"]] == [(s.id, s.username)], roster

    # So nothing of S's account is within A's reach: S is no member of A's class.
    r.expect(a, (404, NO_MEMBER), MEMBER_ROUTES, (w.a_class["id"],))
    # Nor through B's class, nor directly.
    r.expect(a, (404, NO_CLASS), MEMBER_ROUTES, (w.b_class["id"],))
    conversation_id = w.conversation["conversation"]["id"]
    assert status(a.get(f"/api/conversations/{conversation_id}")) == (404, NO_CONVERSATION)

    # S is asked, with the class's rules.
    [invitation] = w.s.client.get("/api/classes/invitations").json()["data"]
    assert (invitation["class"]["id"], invitation["class"]["name"], invitation["class"]["applies"]) == \
           (w.a_class["id"], w.a_class["name"], False), invitation
    assert invitation["class"]["policy"]["transcript_visibility"] == "full"
    assert "join_code" not in invitation["class"], invitation

    # Nothing changed for S: still B's student only, their session, key and password work, B's view as before.
    mine = r.s_key.get("/api/classes/mine").json()
    assert [c["id"] for c in mine["data"]] == [w.b_class["id"]], mine
    assert w.s.client.get("/auth/me").status_code == 200
    assert login_status(r.base, s.username, s.password) == (200, "")
    entry = r.account(w.b.client, w.b_class["id"], s.id)
    assert entry["account"]["sessions_and_keys"] and entry["account"]["disable"], entry
    # A's log: the class, the import and the roster's views; no action on S's account, no transcript read.
    assert [action for _, action, _ in r.actions_by(w.a.id)] == ["class.usage.view", "class.roster.import", "class.create"]


def test_once_the_student_accepts_only_an_administrator_manages_their_account(roles):
    r = roles
    w = r.w
    s = w.s
    assert import_roster(w.a.client, w.a_class["id"], f"{s.username}\n").json()["invited"] == [s.username]
    accepted = w.s.client.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["id"], accepted.json()["name"], accepted.json()["applies"]) == (w.a_class["id"], w.a_class["name"], True)
    mine = w.s.client.get("/api/classes/mine").json()
    assert sorted(c["id"] for c in mine["data"]) == sorted([w.a_class["id"], w.b_class["id"]])
    assert mine["applied_class_id"] == w.a_class["id"]
    assert w.a.client.get(f"/api/classes/{w.a_class['id']}/members").json()["invited"] == []

    # Neither instructor manages S's account now: each is told why.
    for teacher, klass in ((w.a, w.a_class), (w.b, w.b_class)):
        r.expect(teacher.client, (403, shared(s.username)), MEMBER_ACCOUNT_ROUTES, (klass["id"],))
        entry = r.account(teacher.client, klass["id"], s.id)
        reason = shared(s.username)
        assert entry["account"] == {"sessions_and_keys": False, "disable": False, "setup_link": False,
                                    "reasons": {"sessions_and_keys": reason, "disable": reason, "setup_link": reason}}, entry
        assert entry.get("last_seen_at") is None and entry["has_signed_in"] is True, entry
    # Each class's business stays its instructor's: A's class holds none of S's chemistry.
    conversation_id = w.conversation["conversation"]["id"]
    in_a = f"/api/classes/{w.a_class['id']}/members/{s.id}"
    assert w.a.client.get(f"{in_a}/conversations").json() == {"data": []}
    assert status(w.a.client.get(f"{in_a}/conversations/{conversation_id}")) == (404, NO_CONVERSATION)
    read = w.b.client.get(f"/api/classes/{w.b_class['id']}/members/{s.id}/conversations/{conversation_id}")
    assert [m["text"] for m in read.json()["messages"]] == [w.question, f"Echo: {w.question}"], read.text
    # The refusals changed nothing.
    assert w.s.client.get("/auth/me").status_code == 200 and r.s_key.get("/api/classes/mine").status_code == 200
    assert login_status(r.base, s.username, s.password) == (200, "")
    assert not [a for _, a, _ in r.actions_by(w.a.id, w.b.id) if a.startswith("class.member.")]

    # The administrator manages it all, through either class.
    entry = r.account(r.admin, w.a_class["id"], s.id)
    assert entry["account"] == {"sessions_and_keys": True, "disable": True, "setup_link": True, "reasons": {}}, entry
    assert entry["last_seen_at"] is not None
    sessions = r.admin.get(f"{in_a}/sessions").json()["data"]
    assert r.session_id in [x["id"] for x in sessions] and w.s_agent in [x["user_agent"] for x in sessions], sessions
    assert [k["id"] for k in r.admin.get(f"{in_a}/keys").json()["data"]] == [r.key_id]
    assert r.admin.post(f"{in_a}/reset-link", json={}).status_code == 201
    assert r.admin.post(f"/api/admin/users/{s.id}/reset-link", json={}).status_code == 201
    assert r.admin.delete(f"{in_a}/keys/{r.key_id}").status_code == 204
    assert status(r.s_key.get("/api/classes/mine")) == (401, "invalid or revoked API key")
    assert r.admin.post(f"{in_a}/disable", json={}).json()["disabled"] is True
    assert w.s.client.get("/auth/me").status_code == 401
    assert r.admin.post(f"{in_a}/enable", json={}).json()["disabled"] is False
    assert login_status(r.base, s.username, s.password) == (200, "")

    # Once S leaves B's class, A has the class's reach back, but still no password link: S has signed in.
    assert w.b.client.delete(f"/api/classes/{w.b_class['id']}/members/{s.id}").status_code == 204
    sessions = w.a.client.get(f"{in_a}/sessions")
    assert sessions.status_code == 200 and len(sessions.json()["data"]) == 1, sessions.text
    assert status(w.a.client.post(f"{in_a}/reset-link", json={})) == (403, signed_in_already(s.username))


def test_a_student_answers_only_their_own_invitations(roles, gateway):
    r = roles
    w = r.w
    a, s = w.a.client, w.s
    other_name = f"pat{uuid.uuid4().hex[:8]}"
    other_password = gateway.add_user(other_name, "student")
    other = session(r.base, other_name, other_password)
    other_id = other.get("/auth/me").json()["user"]["id"]
    imported = import_roster(a, w.a_class["id"], f"{s.username}\n{other_name}\n").json()
    assert sorted(imported["invited"]) == sorted([s.username, other_name]), imported

    # Only the invited student answers, for the class that invited them.
    assert status(w.b.client.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})) == (404, NO_INVITATION)
    assert status(r.admin.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})) == (404, NO_INVITATION)
    assert status(w.s.client.post(f"/api/classes/invitations/{w.b_class['id']}/accept", json={})) == (404, NO_INVITATION)
    # The other student declines: gone from their page and from A's roster, and it cannot be accepted after.
    assert other.post(f"/api/classes/invitations/{w.a_class['id']}/decline", json={}).status_code == 204
    assert other.get("/api/classes/invitations").json() == {"data": []}
    assert status(other.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})) == (404, NO_INVITATION)
    assert other.get("/api/classes/mine").json()["data"] == []
    assert [x["username"] for x in a.get(f"/api/classes/{w.a_class['id']}/members").json()["invited"]] == [s.username]

    # Only A withdraws A's invitation.
    assert status(w.b.client.delete(f"/api/classes/{w.a_class['id']}/invitations/{s.id}")) == (404, NO_CLASS)
    assert status(a.delete(f"/api/classes/{w.a_class['id']}/invitations/{other_id}")) == (404, NO_INVITATION)
    assert a.delete(f"/api/classes/{w.a_class['id']}/invitations/{s.id}").status_code == 204
    assert w.s.client.get("/api/classes/invitations").json() == {"data": []}
    assert status(w.s.client.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})) == (404, NO_INVITATION)

    # A closed class cannot be joined by accepting: the invitation waits until it opens.
    assert import_roster(a, w.a_class["id"], f"{s.username}\n").json()["invited"] == [s.username]
    assert a.post(f"/api/classes/{w.a_class['id']}/close", json={}).status_code == 200
    assert status(w.s.client.post(f"/api/classes/invitations/{w.a_class['id']}/accept", json={})) == \
        (403, f"the class '{w.a_class['name']}' is closed")
    assert [x["username"] for x in a.get(f"/api/classes/{w.a_class['id']}/members").json()["invited"]] == [s.username]
    assert a.post(f"/api/classes/{w.a_class['id']}/open", json={}).status_code == 200
    # Joining with the code answers it too.
    assert w.s.client.post("/api/classes/join", json={"code": w.a_class["join_code"]}).status_code == 200
    roster = a.get(f"/api/classes/{w.a_class['id']}/members").json()
    assert (roster["invited"], [m["username"] for m in roster["data"]]) == ([], [s.username]), roster
    assert w.s.client.get("/api/classes/invitations").json() == {"data": []}
    again = import_roster(a, w.a_class["id"], f"{s.username}\n").json()
    assert (again["invited"], again["already_members"]) == ([], [s.username]), again

    actions = r.actions_by(w.a.id, other_id)
    assert (other_name, "class.invitation.decline", w.a_class["id"]) in actions, actions
    assert (w.a.username, "class.invitation.withdraw", f"{s.id} — class {w.a_class['id']}") in actions, actions
    other.close()


def test_an_instructor_sets_up_only_accounts_nobody_has_signed_in_to(roles):
    r = roles
    w = r.w
    a, cls = w.a.client, w.a_class["id"]
    newcomer = f"new{uuid.uuid4().hex[:8]}"
    [created] = import_roster(a, cls, f"{newcomer}\n").json()["created"]
    first = created["setup_url"].split("#token=", 1)[1]
    entry = next(m for m in a.get(f"/api/classes/{cls}/members").json()["data"] if m["username"] == newcomer)
    assert (entry["has_signed_in"], entry.get("last_seen_at")) == (False, None), entry
    assert entry["account"] == {"sessions_and_keys": True, "disable": True, "setup_link": True, "reasons": {}}, entry
    member = f"/api/classes/{cls}/members/{entry['user_id']}"
    # Nobody can sign in yet; a lost link is replaced while nobody has used the account.
    assert login_status(r.base, newcomer, "a guessed password") == (401, "wrong username or password")
    second = a.post(f"{member}/reset-link", json={})
    assert second.status_code == 201 and second.json()["url"].startswith(f"{r.base}/setup.html#token="), second.text
    assert second.json()["expires_at"]
    # Not B's to do, through either class.
    assert status(w.b.client.post(f"{member}/reset-link", json={})) == (404, NO_CLASS)
    assert status(w.b.client.post(f"/api/classes/{w.b_class['id']}/members/{entry['user_id']}/reset-link", json={})) == (404, NO_MEMBER)
    assert status(a.post(f"/api/admin/users/{entry['user_id']}/reset-link", json={})) == (403, NEEDS_ADMIN)

    # The student sets a password and signs in: from then on, only an administrator gives them a link.
    password = f"my own password {uuid.uuid4().hex[:6]}"
    assert r.anonymous.post("/api/setup", json={"token": first, "password": password}).status_code == 204
    assert login_status(r.base, newcomer, password) == (200, "")
    assert status(a.post(f"{member}/reset-link", json={})) == (403, signed_in_already(newcomer))
    entry = r.account(a, cls, entry["user_id"])
    assert entry["has_signed_in"] is True and entry["account"]["setup_link"] is False, entry
    assert entry["account"]["reasons"] == {"setup_link": signed_in_already(newcomer)}, entry
    # The link A made while nobody had used the account no longer opens it.
    late = second.json()["url"].split("#token=", 1)[1]
    assert status(r.anonymous.post("/api/setup", json={"token": late, "password": "the instructor's"})) == (400, LINK_INVALID)
    assert login_status(r.base, newcomer, "the instructor's") == (401, "wrong username or password")
    assert status(r.anonymous.post("/api/setup", json={"token": first, "password": "again and again"})) == (410, LINK_USED)
    assert login_status(r.base, newcomer, password) == (200, "")

    # The administrator's link works for the account in use.
    link = r.admin.post(f"/api/admin/users/{entry['user_id']}/reset-link", json={})
    assert link.status_code == 201, link.text
    reset = f"reset by the admin {uuid.uuid4().hex[:6]}"
    assert r.anonymous.post("/api/setup", json={"token": link.json()["url"].split("#token=", 1)[1], "password": reset}).status_code == 204
    assert login_status(r.base, newcomer, password) == (401, "wrong username or password")
    assert login_status(r.base, newcomer, reset) == (200, "")


def test_a_class_that_shares_nothing_hides_its_students_account_activity(roles):
    r = roles
    w = r.w
    b, cls, s = w.b.client, w.b_class["id"], w.s
    member = f"/api/classes/{cls}/members/{s.id}"
    assert b.patch(f"/api/classes/{cls}", json={"policy": {"transcript_visibility": "off"}}).status_code == 200
    hidden = activity_hidden(w.b_class["name"])
    for method, route in MEMBER_ACCOUNT_ROUTES:
        expected = {"disable": (200, ""), "enable": (200, ""), "reset-link": (403, signed_in_already(s.username))}.get(
            route.rsplit("/", 1)[1], (403, hidden))
        assert status(r.call(b, method, route, cls)) == expected, route
    entry = r.account(b, cls, s.id)
    assert entry.get("last_seen_at") is None and entry.get("requests") is None, entry
    assert entry["account"] == {"sessions_and_keys": False, "disable": True, "setup_link": False,
                                "reasons": {"sessions_and_keys": hidden, "setup_link": signed_in_already(s.username)}}, entry
    name = w.b_class["name"]
    assert status(b.get(f"{member}/usage")) == (403, f"the class '{name}' does not share its students' usage")
    assert status(b.get(f"/api/classes/{cls}/usage.csv")) == (403, f"the class '{name}' does not share its students' usage")
    assert status(b.get(f"{member}/conversations")) == (403, f"the class '{name}' does not share its students' transcripts")
    # Disabling (the instructor's still) ended S's session and revoked their key; enabling let the password in again.
    assert w.s.client.get("/auth/me").status_code == 401
    assert status(r.s_key.get("/api/classes/mine")) == (401, "invalid or revoked API key")
    assert login_status(r.base, s.username, s.password) == (200, "")

    # `usage` shows the account's activity again, not the transcripts.
    assert b.patch(f"/api/classes/{cls}", json={"policy": {"transcript_visibility": "usage"}}).status_code == 200
    assert b.get(f"{member}/sessions").status_code == 200
    assert r.account(b, cls, s.id)["account"]["sessions_and_keys"] is True
    assert status(b.get(f"{member}/conversations")) == (403, f"the class '{name}' does not share its students' transcripts")


def test_an_account_used_only_through_an_api_key_is_not_the_instructors_to_set_up(roles, gateway):
    """An account used through API keys alone (made with `gseai key create`) is in use like one signed in to."""
    r = roles
    w = r.w
    name = f"bob{uuid.uuid4().hex[:8]}"
    gateway.add_user(name, "student")
    scripts = httpx.Client(base_url=r.base, timeout=WAIT, headers=bearer(gateway.create_key(name, label="scripts")))
    try:
        # Bob works through scripts only: joins A's class with its code and keeps a conversation.
        joined = scripts.post("/api/classes/join", json={"code": w.a_class["join_code"]})
        assert joined.status_code == 200, joined.text
        assert scripts.post("/api/conversations", json={"model": "stub/echo-text", "title": "Private"}).status_code == 201
        bob = next(m for m in w.a.client.get(f"/api/classes/{w.a_class['id']}/members").json()["data"] if m["username"] == name)
        assert bob["last_seen_at"] is not None, bob  # the roster itself shows the account in use
        # So A must not be able to give it a password of A's choosing.
        assert status(w.a.client.post(f"/api/classes/{w.a_class['id']}/members/{bob['user_id']}/reset-link", json={})) == \
            (403, signed_in_already(name))
    finally:
        scripts.close()
