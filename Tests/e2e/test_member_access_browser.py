"""Who may do what to whom, in a real browser: the rules of the takeover fix as the student and the staff see them.

Instructors A and B run a class each; a student S is in B's class only and has signed in (the `two_instructors`
fixture in `conftest.py`). (a) On S's chat page, an invitation from A's class shows that class's rules; S declines
it, is invited again and accepts, and the class picker and notice then follow A's class. (b) A's console imports
S, sees the invitation (and withdraws one), and once S has accepted, S's page in A's console shows why A may not
see S's sessions and keys, disable S or give S a password link, with those buttons disabled and no session
listed; a new account of the same import shows the opposite. (c) B, S's only instructor so far, sees S's sessions
but may not give S a password link; the administrator's user list issues one, which sets S's password on the
set-up page, and S signs in with it. The HTTP checks use `helpers.py`, the page helpers `pages.py`.
"""

from __future__ import annotations

import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from helpers import import_roster, login_status, session, status
from pages import (
    announced,
    by_testid,
    console_sign_in,
    find,
    member_row,
    set_password_with_link,
    sign_in,
    visible,
    wait,
)

USAGE = ("Your instructor sees how much you use GSE AI in this class (requests and tokens) and when and from where you "
         "sign in, not what you write.")
FULL = ("Your instructor can read the conversations you have in this class, and sees how much you use GSE AI and when "
        "and from where you sign in.")


def shared(username: str) -> str:
    return f"'{username}' is also in another instructor's class: only an administrator manages their account"


def signed_in_already(username: str) -> str:
    return f"'{username}' has signed in already: only an administrator can reset their password (they can change it themselves)"


# ---------------------------------------------------------------------------
# Helpers


def invitations(browser) -> list[dict]:
    """The invitations on the chat page: class id, text, the class's notice, and whether the list is shown."""
    return browser.execute_script("""
        const list = document.getElementById('invitations');
        return Array.from(list.querySelectorAll('[data-testid="invitation"]')).map(li => ({
          class_id: li.dataset.classId, shown: !list.hidden && li.offsetParent !== null,
          text: li.querySelector('p').innerText.trim(),
          notice: li.querySelector('[data-testid="invitation-notice"]').innerText.trim(),
          buttons: Array.from(li.querySelectorAll('button')).map(b => [b.dataset.testid, b.innerText.trim(), b.disabled]),
        }));""")


def invitation_button(browser, class_id: str, testid: str):
    return browser.find_element(By.CSS_SELECTOR, f'[data-testid="invitation"][data-class-id="{class_id}"] [data-testid="{testid}"]')


def class_options(browser) -> list[tuple[str, str]]:
    return [tuple(option) for option in browser.execute_script(
        "return Array.from(document.getElementById('class-select').options).map(o => [o.value, o.text])")]


def selected_class(browser) -> str:
    return browser.execute_script("return document.getElementById('class-select').value")


def open_member_page(browser, base: str, class_id: str, user_id: str, username: str) -> None:
    """Opens a member's page in the console afresh and waits for its title and its account actions."""
    browser.get("about:blank")  # from the console itself, a new hash alone would not reload the page
    browser.get(f"{base}/console.html#/classes/{class_id}/members/{user_id}")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), username), message=f"no page of {username}")
    visible(browser, "member-state")


def open_class_page(browser, base: str, class_id: str) -> None:
    browser.get("about:blank")
    browser.get(f"{base}/console.html#/classes/{class_id}")
    visible(browser, "roster-import")


def invited_rows(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=\"invited-row\"]')).map(r => r.dataset.username)")


def import_in_console(browser, usernames: list[str]) -> str:
    """Pastes usernames into the class page's import form, imports them and returns the new result's text (an
    earlier import's result stays until the new one replaces it)."""
    before = find(browser, "roster-result").text.strip()
    box = find(browser, "roster-csv")
    box.clear()
    box.send_keys("\n".join(usernames))
    find(browser, "roster-import").click()
    return wait(browser, lambda d: (text := find(d, "roster-result").text.strip()) != before and text,
                message="the import showed no new result")


def withheld(browser, testid: str) -> str | None:
    found = browser.find_elements(*by_testid(testid))
    return found[0].text if found else None


# ---------------------------------------------------------------------------
# (a) The student's page


def test_student_declines_an_invitation_then_accepts_it_and_its_class_applies(browser, gateway, two_instructors):
    base = gateway.base_url
    w = two_instructors
    a_class, b_class, s = w.a_class, w.b_class, w.s
    made = w.a.client.patch(f"/api/classes/{a_class['id']}", json={"policy": {
        "transcript_visibility": "usage", "daily_token_budget": 20000, "requests_per_minute": 30, "images_allowed": False}})
    assert made.status_code == 200, made.text
    rules = f"Class: {a_class['name']}. {USAGE} Daily limit: 20,000 tokens. At most 30 requests a minute. Images are not allowed."
    assert import_roster(w.a.client, a_class["id"], f"{s.username}\n").json()["invited"] == [s.username]

    # 1. The invitation is on S's page with the class's rules, above all what A would see; S is still B's only.
    sign_in(browser, base, s.username, s.password)
    [shown] = wait(browser, lambda d: invitations(d), message="the invitation is not on the page")
    assert shown == {"class_id": a_class["id"], "shown": True,
                     "text": f"Your instructor invites you to the class {a_class['name']}.", "notice": rules,
                     "buttons": [["invitation-accept", "Accept", False], ["invitation-decline", "Decline", False]]}, shown
    assert class_options(browser) == [(b_class["id"], b_class["name"])]
    assert selected_class(browser) == b_class["id"]
    assert visible(browser, "class-notice").text == f"Class: {b_class['name']}. {FULL}"

    # 2. Declining removes it, here and on A's roster; S is in no more classes than before.
    invitation_button(browser, a_class["id"], "invitation-decline").click()
    wait(browser, lambda d: invitations(d) == [], message="the declined invitation stayed on the page")
    announced(browser, f"Invitation to {a_class['name']} declined.")
    assert not find(browser, "invitations").is_displayed()
    assert find(browser, "class-error").text == ""
    assert class_options(browser) == [(b_class["id"], b_class["name"])]
    assert w.a.client.get(f"/api/classes/{a_class['id']}/members").json()["invited"] == []
    assert w.s.client.get("/api/classes/invitations").json() == {"data": []}

    # 3. A second import invites S again: the page shows it when opened again.
    assert import_roster(w.a.client, a_class["id"], f"{s.username}\n").json()["invited"] == [s.username]
    browser.refresh()
    wait(browser, lambda d: [i["class_id"] for i in invitations(d)] == [a_class["id"]], message="the new invitation is not shown")
    assert invitations(browser)[0]["notice"] == rules

    # 4. Accepting joins the class, which the picker then holds and whose rules the notice states.
    invitation_button(browser, a_class["id"], "invitation-accept").click()
    wait(browser, lambda d: selected_class(d) == a_class["id"], message="the accepted class is not the chosen one")
    announced(browser, f"You joined {a_class['name']}.")
    assert invitations(browser) == [] and not find(browser, "invitations").is_displayed()
    assert sorted(class_options(browser)) == sorted([(a_class["id"], a_class["name"]), (b_class["id"], b_class["name"])])
    wait(browser, EC.text_to_be_present_in_element(by_testid("class-notice"), rules),
         message=f"the notice does not state A's class's rules: {find(browser, 'class-notice').text!r}")
    assert find(browser, "class-notice").text == rules
    assert find(browser, "attach-input").get_attribute("disabled") is not None  # images are not allowed there
    # On the server too: S is a member of A's class now, which applies to them.
    mine = w.s.client.get("/api/classes/mine").json()
    assert mine["applied_class_id"] == a_class["id"], mine
    roster = w.a.client.get(f"/api/classes/{a_class['id']}/members").json()
    assert ([m["username"] for m in roster["data"]], roster["invited"]) == ([s.username], []), roster


# ---------------------------------------------------------------------------
# (b) The instructor's console


def test_console_withholds_a_shared_students_account_and_says_why(browser, gateway, two_instructors):
    base = gateway.base_url
    w = two_instructors
    a_class, s = w.a_class, w.s
    newcomer = f"new{uuid.uuid4().hex[:8]}"

    # 1. A imports S and a new name: the new account joins at once, S is only invited.
    console_sign_in(browser, base, w.a.username, w.a.password)
    open_class_page(browser, base, a_class["id"])
    result = import_in_console(browser, [s.username])
    assert result.startswith("0 accounts created, 1 existing students invited, 0 lines refused."), result
    assert find(browser, "roster-invited").text == f"Invited (they join when they accept on their page): {s.username}"
    wait(browser, lambda d: invited_rows(d) == [s.username], message="S is not among the invited")
    assert member_row(browser, s.username) is None

    # 2. A withdraws the invitation: gone from the page and from S's.
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="invited-row"][data-username="{s.username}"] '
                                          '[data-testid="invitation-withdraw"]').click()
    announced(browser, f"Invitation of {s.username} withdrawn.")
    wait(browser, lambda d: invited_rows(d) == [], message="the withdrawn invitation is still listed")
    assert w.s.client.get("/api/classes/invitations").json() == {"data": []}

    # 3. Invited again (with a new account beside), S accepts on their side.
    result = import_in_console(browser, [s.username, newcomer])
    assert result.startswith("1 accounts created, 1 existing students invited, 0 lines refused."), result
    wait(browser, lambda d: invited_rows(d) == [s.username], message="S is not among the invited")
    accepted = w.s.client.post(f"/api/classes/invitations/{a_class['id']}/accept", json={})
    assert accepted.status_code == 200, accepted.text

    # 4. The roster: S is a member, signed in, with no "last seen" for A; the new account has not signed in yet.
    open_class_page(browser, base, a_class["id"])
    row = wait(browser, lambda d: member_row(d, s.username), message="S is not in the roster")
    assert row["cells"][4] == "–" and "Not signed in yet" not in row["cells"][5], row
    new_row = wait(browser, lambda d: member_row(d, newcomer), message="the new account is not in the roster")
    assert "Not signed in yet" in new_row["cells"][5], new_row
    assert browser.find_elements(
        By.CSS_SELECTOR, f'[data-testid="member-row"][data-username="{newcomer}"] [data-testid="not-signed-in"]')
    assert invited_rows(browser) == []

    # 5. S's page: every account action withheld, each with its reason, and no sessions or keys asked for.
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="member-row"][data-username="{s.username}"] a').click()
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), s.username), message="S's page did not open")
    reason = shared(s.username)
    assert visible(browser, "access-withheld").text == f"Not shown: {reason}."
    assert find(browser, "disable-withheld").text == f"Disable: {reason}."
    assert find(browser, "reset-link-withheld").text == f"Password link: {reason}."
    assert find(browser, "member-state").text == "Active"
    assert not find(browser, "member-disable").is_enabled()
    assert not find(browser, "reset-link").is_enabled()
    assert find(browser, "member-remove").is_enabled()  # the class is still A's to manage
    assert not browser.find_elements(*by_testid("session-row")) and not browser.find_elements(*by_testid("key-row"))
    assert find(browser, "keys").text == ""
    wait(browser, EC.text_to_be_present_in_element(by_testid("conversations"), "No conversations in this class."))
    assert find(browser, "member-error").text == "" and find(browser, "access-error").text == ""
    # The page asked nothing of S's account (A's reads of it would be in the audit log), only of S in A's class.
    admin = session(base, "admin", gateway.admin_password)
    actions = {e["action"] for e in admin.get("/api/admin/audit", params={"limit": 500}).json()["data"] if e["actor_id"] == w.a.id}
    assert actions >= {"class.member.usage.view", "class.transcript.list"}, actions
    assert not actions & {"class.member.sessions.list", "class.member.keys.list", "class.member.session.revoke",
                          "class.member.key.revoke", "class.member.disable", "class.member.enable", "class.member.reset-link"}, actions
    admin.close()
    assert status(w.s.client.get("/auth/me"))[0] == 200

    # 6. The new account, A's alone and never signed in: everything is A's, a password link included.
    new_id = w.a.client.get(f"/api/classes/{a_class['id']}/members").json()["data"]
    new_id = next(m["user_id"] for m in new_id if m["username"] == newcomer)
    open_member_page(browser, base, a_class["id"], new_id, newcomer)
    wait(browser, EC.text_to_be_present_in_element(by_testid("sessions"), "No login sessions."))
    assert withheld(browser, "access-withheld") is None and withheld(browser, "disable-withheld") is None
    assert withheld(browser, "reset-link-withheld") is None
    assert find(browser, "member-disable").is_enabled() and find(browser, "reset-link").is_enabled()
    find(browser, "reset-link").click()
    url = wait(browser, lambda d: d.find_elements(*by_testid("reset-link-url")), message="no set-up link")[0].get_attribute("value")
    assert url.startswith(f"{base}/setup.html#token="), url


# ---------------------------------------------------------------------------
# (c) The administrator's console


def test_only_the_admin_console_gives_a_signed_in_student_a_working_reset_link(browser, gateway, two_instructors):
    base = gateway.base_url
    w = two_instructors
    s = w.s

    # 1. B, S's only instructor, sees S's sessions but may not set S's password: S has signed in.
    console_sign_in(browser, base, w.b.username, w.b.password)
    open_member_page(browser, base, w.b_class["id"], s.id, s.username)
    sessions = wait(browser, lambda d: d.find_elements(*by_testid("session-row")), message="S's session is not listed")
    assert len(sessions) == 1 and w.s_agent in sessions[0].text, sessions[0].text
    assert find(browser, "reset-link-withheld").text == f"Password link: {signed_in_already(s.username)}."
    assert not find(browser, "reset-link").is_enabled()
    assert find(browser, "member-disable").is_enabled() and withheld(browser, "disable-withheld") is None

    # 2. The administrator's user list gives S a link; S's password stays until it is used.
    console_sign_in(browser, base, "admin", gateway.admin_password)
    visible(browser, "nav-admin").click()
    row = (By.CSS_SELECTOR, f'[data-testid="user-row"][data-username="{s.username}"]')
    wait(browser, EC.presence_of_element_located(row), message="S is not in the user list")
    browser.find_element(*row).find_element(*by_testid("user-reset-link")).click()
    url = wait(browser, lambda d: d.find_elements(*by_testid("user-reset-link-url")), message="no reset link")[0].get_attribute("value")
    assert url.startswith(f"{base}/setup.html#token="), url
    box = find(browser, "user-reset-link-box").text
    assert box.startswith(f"Password link for {s.username} (works once, until ") and "their password stays until it is used" in box, box
    assert find(browser, "users-error").text == ""
    assert login_status(base, s.username, s.password) == (200, "")

    # 3. The link sets a new password on the set-up page; S signs in with it, the old one and S's sessions end.
    new_password = f"S's new password {uuid.uuid4().hex[:6]}"
    set_password_with_link(browser, url, new_password)
    assert login_status(base, s.username, s.password) == (401, "wrong username or password")
    assert w.s.client.get("/auth/me").status_code == 401
    sign_in(browser, base, s.username, new_password)
    assert find(browser, "username").text == s.username
    assert selected_class(browser) == w.b_class["id"]  # the same account, still in B's class
