"""The instructor console's actions in a real browser, against the gateway over the stub.

What `test_console_browser.py` leaves out: a CSV roster import whose set-up links let new students in; the
usage charts of a class and of one student; an instructor's hand on a student's account (login sessions,
disabling, a password reset link); the models page (load with a time-to-live, unload, a download's progress
bar, all as the stub really answers them); and the administrators' page (roles, disabling, the audit log),
which an instructor is refused. Each test checks what the page says and what the gateway then does. The
browser fixture, the console check after every test and the `instructor` and `console_student` accounts are in
`conftest.py`; the page helpers in `pages.py` and the HTTP helpers (`session`, `InstructorAPI`, …) in
`helpers.py`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from helpers import (
    STUB_MODELS,
    TEXT,
    USAGE_WAIT,
    WAIT,
    InstructorAPI,
    add_member,
    bearer,
    key_status,
    login_status,
    session,
)
from pages import (
    announced,
    by_testid,
    console_sign_in,
    expected_refusals,
    find,
    member_row,
    page_json,
    sign_in,
    visible,
    wait,
)


# ---------------------------------------------------------------------------
# Helpers


def submit_setup(browser, url: str, password: str, confirm: str | None = None) -> None:
    """Opens a set-up link afresh (from setup.html, a new fragment alone would not reload it) and submits its form."""
    browser.get("about:blank")
    browser.get(url)
    visible(browser, "setup-password").send_keys(password)
    find(browser, "setup-confirm").send_keys(password if confirm is None else confirm)
    find(browser, "setup-submit").click()


def set_password_on_setup_page(browser, url: str, password: str) -> None:
    """Sets `password` with a set-up link through the page's form; waits for its confirmation."""
    submit_setup(browser, url, password)
    visible(browser, "setup-done")
    assert find(browser, "setup-error").text == ""
    assert browser.execute_script("return location.hash") == ""  # the token leaves the address bar


CHART_SCRIPT = """
const fig = document.querySelector(`[data-testid="${arguments[0]}"]`);
if (!fig) return null;
return {title: fig.querySelector('svg > title').textContent, caption: fig.querySelector('figcaption').textContent,
        ticks: Array.from(fig.querySelectorAll('text.tick')).map(t => t.textContent),
        bars: Array.from(fig.querySelectorAll('rect.bar')).map(r => ({title: r.querySelector('title').textContent,
                                                                      height: parseFloat(r.getAttribute('height'))}))};
"""


def chart(browser, testid: str) -> dict:
    return wait(browser, lambda d: d.execute_script(CHART_SCRIPT, testid), message=f"no {testid} on the page")


def check_chart(found: dict, since: str, today: str, tokens: int, requests: int) -> None:
    """One bar a day from `since` to today; only today's has a height, and every label gives the counts."""
    days = (datetime.fromisoformat(today) - datetime.fromisoformat(since)).days + 1
    assert len(found["bars"]) == days, found
    by_day = {bar["title"].split(":")[0]: bar for bar in found["bars"]}
    assert by_day[today]["title"] == f"{today}: {tokens:,} tokens, {requests} requests", by_day[today]
    assert by_day[today]["height"] == 150, by_day[today]  # the busiest day reaches the top of the plot
    assert all(bar["height"] == 0 for day, bar in by_day.items() if day != today), found["bars"]
    assert found["caption"] == (f"{tokens:,} tokens in {requests} requests from {since} to {today}; "
                                f"busiest day {today} ({tokens:,} tokens)."), found["caption"]
    assert str(tokens) in found["ticks"] and today[5:] in found["ticks"], found["ticks"]


def table_rows(browser, testid: str) -> list[list[str]]:
    """The text of each cell of every row with `testid`."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(`[data-testid=\"${arguments[0]}\"]`))"
        ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))", testid)


# ---------------------------------------------------------------------------
# 1. Roster import


def test_roster_import_gives_set_up_links_that_let_new_students_in(browser, gateway, instructor, console_student, tmp_path):
    base = gateway.base_url
    teacher_name = instructor[0]
    teacher = InstructorAPI(base, *instructor)
    tag = uuid.uuid4().hex[:6]
    klass = teacher.create_class(f"Roster {tag}")
    ann, bob, existing = f"ann{tag}", f"bob{tag}", console_student[0]
    roster = tmp_path / "roster.csv"
    roster.write_text(f"username,email\n{ann},ann@example.org\nBob{tag},bob@example.org\n{existing}\n"
                      f"bad name!,x@example.org\n{ann}\n{teacher_name}\n")

    console_sign_in(browser, base, *instructor)
    browser.get(f"{base}/console.html#/classes/{klass['id']}")
    visible(browser, "roster-import").click()  # nothing to import yet
    wait(browser, EC.text_to_be_present_in_element(by_testid("roster-import-error"), "Paste usernames or choose a CSV file first."))
    find(browser, "roster-file").send_keys(str(roster))
    wait(browser, lambda d: ann in find(d, "roster-csv").get_attribute("value"), message="the file did not fill the form")
    find(browser, "roster-import").click()
    wait(browser, EC.text_to_be_present_in_element(
        by_testid("roster-result"), "2 accounts created, 1 existing students invited, 3 lines refused."))
    result = find(browser, "roster-result").text
    # An existing account is invited, never added: it joins when its student accepts.
    assert f"Invited (they join when they accept on their page): {existing}" in result, result
    links = browser.execute_script("""return Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="setup-link-row"]'))
        .map(r => [r.dataset.username, r.querySelector('[data-testid="setup-link"]').value]))""")
    assert sorted(links) == [ann, bob], links  # usernames are lowercased
    assert all(url.startswith(f"{base}/setup.html#token=") for url in links.values()), links
    assert links[ann] != links[bob]
    errors = [li.text for li in find(browser, "roster-errors").find_elements(By.TAG_NAME, "li")]
    assert errors == [
        "Line 5: 'bad name!': a username is 1–64 letters, digits, dots, dashes, underscores or @",
        f"Line 6: '{ann}' is already on line 2",
        f"Line 7: '{teacher_name}' is an instructor account, not a student's",
    ], errors
    # The roster below lists the two new students, the invitation apart, and nobody from the refused lines.
    for name in (ann, bob):
        wait(browser, lambda d: member_row(d, name), message=f"{name} is not in the roster")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-testid="invited-row"][data-username="{existing}"]'),
         message=f"{existing} is not among the invited")
    roster_now = teacher.client.get(f"/api/classes/{klass['id']}/members").json()
    assert sorted(m["username"] for m in roster_now["data"]) == sorted([ann, bob]), roster_now
    assert [i["username"] for i in roster_now["invited"]] == [existing], roster_now
    assert "bad name" not in gateway.admin_ok("user", "list")

    # Ann opens her link, sets a password (a mismatch first) and signs in on the chat page: she is in the class.
    submit_setup(browser, links[ann], "first try password", "another password")
    wait(browser, EC.text_to_be_present_in_element(by_testid("setup-error"), "The two passwords differ."))
    password = f"ann's password {tag}"
    set_password_on_setup_page(browser, links[ann], password)
    submit_setup(browser, links[ann], "yet another password")  # a link works once
    wait(browser, EC.text_to_be_present_in_element(by_testid("setup-error"), "this set-up link has been used already"))
    expected_refusals(browser, 410)

    sign_in(browser, base, ann, password)
    mine = page_json(browser, "GET", "/api/classes/mine")
    assert mine["status"] == 200, mine
    assert [(c["id"], c["name"]) for c in mine["json"]["data"]] == [(klass["id"], klass["name"])], mine["json"]
    # Bob has not set a password: nothing lets him in yet.
    assert login_status(base, bob, password)[0] == 401


# ---------------------------------------------------------------------------
# 2. Usage charts


def test_usage_charts_show_a_students_requests_and_tokens(browser, gateway, instructor, console_student):
    base = gateway.base_url
    name, password = console_student
    teacher = InstructorAPI(base, *instructor)
    klass = teacher.create_class(f"Usage {uuid.uuid4().hex[:6]}", transcript_visibility="usage")
    user_id = add_member(teacher, klass["id"], name, password)
    key = gateway.create_key(name, label="notebook")

    tokens = 0
    for text in ("What is a cell?", "And a tissue, please?"):
        answer = httpx.post(f"{base}/v1/chat/completions", headers=bearer(key), timeout=WAIT,
                            json={"model": TEXT, "messages": [{"role": "user", "content": text}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == f"Echo: {text}"
        tokens += answer.json()["usage"]["total_tokens"]
    assert tokens > 0
    today = datetime.now(timezone.utc).date().isoformat()
    since = (datetime.now(timezone.utc).date() - timedelta(days=29)).isoformat()
    deadline = time.monotonic() + USAGE_WAIT  # usage is written within a second of an answer
    while (row := next(m for m in teacher.client.get(f"/api/classes/{klass['id']}/members").json()["data"]
                       if m["user_id"] == user_id))["requests"] < 2:
        assert time.monotonic() < deadline, f"the two requests were never counted: {row}"
        time.sleep(0.3)

    # The class page: the roster's numbers and the class's chart.
    console_sign_in(browser, base, *instructor)
    browser.get(f"{base}/console.html#/classes/{klass['id']}")
    row = wait(browser, lambda d: member_row(d, name), message="the student is not in the roster")
    assert row["cells"][1:4] == ["2", f"{tokens:,}", today], row
    assert find(browser, "roster-since").get_attribute("value") == since
    class_chart = chart(browser, "class-usage-chart")
    assert class_chart["title"] == f"Class {klass['name']}: tokens per day"
    check_chart(class_chart, since, today, tokens, 2)

    # The student's page: the same numbers in words and in the student's own chart.
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="member-row"][data-username="{name}"] a').click()
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), name))
    member_chart = chart(browser, "member-usage-chart")
    assert member_chart["title"] == f"{name}: tokens per day"
    check_chart(member_chart, since, today, tokens, 2)
    assert f"Since {since}: 2 requests, {tokens:,} tokens." in find(browser, "member-usage-chart").find_element(
        By.XPATH, "ancestor::section").text


# ---------------------------------------------------------------------------
# 3. A student's account: login sessions, disabling, a password reset link


def test_instructor_ends_a_session_disables_and_resets_a_students_password(browser, gateway, instructor, console_student):
    base = gateway.base_url
    name, password = console_student
    tag = uuid.uuid4().hex[:6]
    teacher = InstructorAPI(base, *instructor)
    klass = teacher.create_class(f"Accounts {tag}")
    user_id = add_member(teacher, klass["id"], name, password)
    agent = f"e2e-laptop-{tag}"
    laptop = session(base, name, password, agent=agent)
    key = gateway.create_key(name, label="laptop")
    assert key_status(base, key)[0] == 200

    console_sign_in(browser, base, *instructor)
    browser.get(f"{base}/console.html#/classes/{klass['id']}/members/{user_id}")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), name), message="no student's page")
    assert visible(browser, "member-state").text == "Active"
    browser.execute_script("window.confirm = () => true;")  # the console asks before each of these actions

    # 1. The login session is listed with its browser; signing it out ends it on the server.
    sessions = wait(browser, lambda d: table_rows(d, "session-row"), message="no login session listed")
    assert len(sessions) == 1 and agent in sessions[0][2], sessions
    assert laptop.get("/auth/me").status_code == 200
    find(browser, "revoke-session").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("sessions"), "No login sessions."))
    assert laptop.get("/auth/me").status_code == 401

    # 2. Disabling refuses the key and the password; enabling lets the password in again, the key stays revoked.
    keys = table_rows(browser, "key-row")
    assert len(keys) == 1 and keys[0][1] == "laptop" and keys[0][4] == "Revoke", keys
    disable = find(browser, "member-disable")
    assert disable.text == "Disable account"
    disable.click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("member-state"), "Disabled"))
    assert find(browser, "member-disable").text == "Enable account"
    wait(browser, lambda d: table_rows(d, "key-row")[0][4] == "Revoked", message="the key was not shown revoked")
    assert key_status(base, key) == (401, "invalid or revoked API key")
    assert login_status(base, name, password) == (401, "wrong username or password")
    find(browser, "member-disable").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("member-state"), "Active"))
    assert find(browser, "member-error").text == ""
    assert login_status(base, name, password) == (200, "")
    assert key_status(base, key)[0] == 401
    assert key_status(base, gateway.create_key(name, label="new"))[0] == 200

    # 3. The student has signed in: only an administrator gives them a reset link, and the console says so.
    assert not find(browser, "reset-link").is_enabled()
    assert "has signed in already: only an administrator can reset their password" in find(browser, "reset-link-withheld").text
    # The administrator's link opens the set-up page; the new password replaces the old one and ends the sessions.
    phone = session(base, name, password, agent="phone")
    admin = session(base, "admin", gateway.admin_password, agent="e2e-admin")
    issued = admin.post(f"/api/admin/users/{user_id}/reset-link")
    admin.close()
    assert issued.status_code == 201, issued.text
    url = issued.json()["url"]
    assert url.startswith(f"{base}/setup.html#token="), url
    new_password = f"a new password {tag}"
    set_password_on_setup_page(browser, url, new_password)
    assert login_status(base, name, password) == (401, "wrong username or password")
    assert login_status(base, name, new_password) == (200, "")
    assert phone.get("/auth/me").status_code == 401


# ---------------------------------------------------------------------------
# 4. Models


def stub_loaded(gateway) -> set[str]:
    """The models the stub itself has loaded, asked directly."""
    upstream = gateway.upstream
    models = httpx.get(f"{upstream.base_url}/api/v1/models", headers=bearer(upstream.token),
                       timeout=WAIT).json()["models"]
    return {m["key"] for m in models if m["loaded_instances"]}


def model_rows(browser) -> dict[str, list[str]]:
    return browser.execute_script("""return Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="model-row"]'))
        .map(r => [r.dataset.model, Array.from(r.cells).map(c => c.innerText.trim())]))""")


def test_models_page_loads_unloads_and_downloads(browser, gateway, instructor):
    base = gateway.base_url
    model = "stub/embed"
    upstream = gateway.upstream
    # A known start: the stub (shared by the whole session) has not loaded the model.
    httpx.post(f"{upstream.base_url}/api/v1/models/unload", json={"instance_id": model},
               headers=bearer(upstream.token), timeout=WAIT)
    assert model not in stub_loaded(gateway)

    console_sign_in(browser, base, *instructor)
    find(browser, "nav-models").click()
    rows = wait(browser, lambda d: len(model_rows(d)) == 3 and model_rows(d), message="the stub's models are not listed")
    assert set(rows) == STUB_MODELS, rows
    loaded = stub_loaded(gateway)
    for key, cells in rows.items():
        assert cells[3] == ("Loaded" if key in loaded else "Not loaded"), (key, cells)
        assert cells[4] == ("Unload" if key in loaded else "Load"), (key, cells)
    assert rows["stub/echo-text"][0].splitlines() == ["Stub echo-text", "stub/echo-text"]
    assert rows["stub/echo-vl"][1:3] == ["llm", "Yes"] and rows[model][1:3] == ["embedding", ""], rows

    # Load with a time-to-live: the request carries it, the stub loads the model, the row says so.
    browser.execute_script("""window.__sent = []; const original = window.fetch;
        window.fetch = (url, options) => { window.__sent.push([String(url), options && options.body]); return original(url, options); };""")
    ttl = find(browser, "model-ttl")
    ttl.clear()
    ttl.send_keys("90")
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="model-row"][data-model="{model}"] [data-testid="model-load"]').click()
    wait(browser, lambda d: model_rows(d)[model][3:] == ["Loaded", "Unload"], message=f"{model} is not shown loaded")
    sent = browser.execute_script("return window.__sent.filter(s => s[0].endsWith('/models/load')).map(s => JSON.parse(s[1]))")
    assert sent == [{"model": model, "ttl": 90}], sent
    assert model in stub_loaded(gateway)
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="model-row"][data-model="{model}"] [data-testid="model-unload"]').click()
    wait(browser, lambda d: model_rows(d)[model][3:] == ["Not loaded", "Load"], message=f"{model} is not shown unloaded")
    assert model not in stub_loaded(gateway)
    assert find(browser, "models-error").text == ""

    # A download: the stub's job advances a quarter per poll (the page polls once a second) up to 4,000,000 bytes.
    fresh = f"stub/fresh-{uuid.uuid4().hex[:6]}"
    find(browser, "download-input").send_keys(fresh)
    find(browser, "download-start").click()
    seen: list[tuple[str, float, float]] = []

    def finished(driver):
        state = driver.execute_script("""const bar = document.querySelector('[data-testid="download-progress"]');
            return [document.querySelector('[data-testid="download-status"]').textContent, bar.hidden ? -1 : bar.value, bar.max];""")
        if state[0] and (not seen or seen[-1] != tuple(state)):
            seen.append(tuple(state))
        return state[0] == f"{fresh}: downloaded."
    wait(browser, finished, timeout=WAIT, message="the download never finished")
    assert seen[0] == (f"{fresh}: downloading — 0.0 MB of 3.8 MB (0%)", 0, 4_000_000), seen
    assert seen[1:-1] == [(f"{fresh}: downloading — {mb} MB of 3.8 MB ({pct}%)", done, 4_000_000)
                          for mb, pct, done in (("1.0", 25, 1e6), ("1.9", 50, 2e6), ("2.9", 75, 3e6))], seen
    assert seen[-1] == (f"{fresh}: downloaded.", 1, 1), seen
    assert find(browser, "download-start").is_enabled()
    # A model the stub has already: said at once.
    field = find(browser, "download-input")
    field.clear()
    field.send_keys("stub/echo-text")
    find(browser, "download-start").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("download-status"), "stub/echo-text is already downloaded."))
    assert find(browser, "download-error").text == ""


# ---------------------------------------------------------------------------
# 5. Administration


def test_admin_changes_a_role_disables_a_user_and_reads_the_audit_log(browser, gateway, instructor, console_student):
    base = gateway.base_url
    tag = uuid.uuid4().hex[:6]
    boss = f"boss{tag}"
    boss_password = gateway.add_user(boss, "admin")
    name, password = console_student
    other = f"other{tag}"
    other_password = gateway.add_user(other, "student")

    # The instructor reads a transcript of the student (an audited view).
    teacher = InstructorAPI(base, *instructor)
    klass = teacher.create_class(f"Audited {tag}", transcript_visibility="full")
    user_id = add_member(teacher, klass["id"], name, password)
    own = session(base, name, password)
    conversation = own.post("/api/conversations", json={"model": TEXT})
    assert conversation.status_code == 201, conversation.text
    conversation_id = conversation.json()["id"]
    read = teacher.client.get(f"/api/classes/{klass['id']}/members/{user_id}/conversations/{conversation_id}")
    assert read.status_code == 200, read.text
    assert own.get("/api/classes").status_code == 403  # a student has no classes to manage
    other_session = session(base, other, other_password)

    # The administrator makes the student an instructor and disables the other account.
    console_sign_in(browser, base, boss, boss_password)
    visible(browser, "nav-admin").click()
    row = (By.CSS_SELECTOR, f'[data-testid="user-row"][data-username="{name}"]')
    Select(wait(browser, EC.presence_of_element_located(row)).find_element(*by_testid("user-role"))).select_by_value("instructor")
    announced(browser, f"{name} is now instructor.")
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="user-row"][data-username="{other}"] [data-testid="user-disabled"]').click()
    announced(browser, f"{other} disabled.")
    assert find(browser, "users-error").text == ""
    users = {u["username"]: u for u in page_json(browser, "GET", "/api/admin/users")["json"]["data"]}
    assert (users[name]["role"], users[name]["disabled"]) == ("instructor", False), users[name]
    assert (users[other]["role"], users[other]["disabled"]) == ("student", True), users[other]
    # Both take effect at once: the same session now manages classes; the other account is out.
    classes = own.get("/api/classes")
    assert classes.status_code == 200 and classes.json()["data"] == [], classes.text
    assert other_session.get("/auth/me").status_code == 401
    assert login_status(base, other, other_password) == (401, "wrong username or password")
    # The page shows the saved state after a reload.
    browser.refresh()
    wait(browser, EC.presence_of_element_located(row))
    assert Select(browser.find_element(*row).find_element(*by_testid("user-role"))).first_selected_option.text == "instructor"
    assert browser.find_element(
        By.CSS_SELECTOR, f'[data-testid="user-row"][data-username="{other}"] [data-testid="user-disabled"]').is_selected()

    # The audit log names who did what to whom, newest first.
    entries = wait(browser, lambda d: table_rows(d, "audit-row"), message="the audit log is empty")
    actions = [(who, action, target) for _, who, action, target in entries]
    assert (boss, "user.set-role", f"{user_id} — student → instructor") in actions, actions[:10]
    assert (boss, "user.disable", users[other]["id"]) in actions, actions[:10]
    assert (instructor[0], "class.transcript.view", f"{conversation_id} — class {klass['id']}, student {user_id}") in actions, actions[:10]
    order = [action for _, action, _ in actions]
    assert order.index("user.disable") < order.index("user.set-role") < order.index("class.transcript.view"), order[:10]

    # An instructor who opens the page is told it is not theirs, and the API refuses them too.
    console_sign_in(browser, base, *instructor)
    assert not find(browser, "nav-admin").is_displayed()
    browser.get(f"{base}/console.html#/admin")
    wait(browser, EC.text_to_be_present_in_element(by_testid("view-error"), "The admin page is for administrators only"))
    assert not browser.find_elements(*by_testid("user-list")) and not browser.find_elements(*by_testid("audit-list"))
    refused = page_json(browser, "GET", "/api/admin/users")
    assert refused["status"] == 403, refused
    expected_refusals(browser, 403)
