"""The instructor console (`/console.html`) in a real browser, against the gateway over the stub: issue 5's
scenario from both sides.

An instructor creates a class and makes its transcripts visible; a fresh student joins it with the code
read from the console, chats on the chat page and makes an API key; the instructor sees the student's
usage and transcript and revokes the key, which the gateway then refuses. One headless Chromium plays both
people in turn (cookies are per host, so signing in as one signs the other out). The browser fixture, the
console check after every test and the `instructor` and `console_student` accounts are in `conftest.py`; the
page helpers in `pages.py` and the HTTP helpers (`InstructorAPI`, …) in `helpers.py`.
"""

from __future__ import annotations

import time
import uuid

import httpx
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from helpers import TEXT, USAGE_WAIT, VISION, WAIT, InstructorAPI, bearer
from pages import (
    announced,
    by_testid,
    choose_model,
    console_sign_in,
    expected_refusals,
    find,
    member_row,
    page_json,
    send,
    sign_in,
    visible,
    wait,
    wait_for_answer,
)


# ---------------------------------------------------------------------------
# Helpers


def console_log_out(browser) -> None:
    visible(browser, "logout").click()
    visible(browser, "login-username")


def join_in_page(browser, code: str) -> None:
    """Opens the chat page's join form, types `code` and submits it."""
    toggle = visible(browser, "join-toggle")
    if not find(browser, "join-code").is_displayed():
        toggle.click()
    field = visible(browser, "join-code")
    field.clear()
    field.send_keys(code)
    find(browser, "join-submit").click()


def selected_class(browser) -> str:
    return browser.execute_script("return document.getElementById('class-select').value")


def model_options(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.getElementById('model-select').options).map(o => o.value)")


def notice_says(browser, text: str) -> str:
    """Waits until the class notice contains `text`; returns the whole notice."""
    wait(browser, EC.text_to_be_present_in_element(by_testid("class-notice"), text),
         message=f"the class notice never said {text!r}: {find(browser, 'class-notice').text!r}")
    return find(browser, "class-notice").text


def roster_with_requests(browser, base_url: str, class_id: str, username: str) -> dict:
    """Opens the class page until the student's row shows a non-zero request count; returns the row."""
    deadline = time.monotonic() + USAGE_WAIT
    row = None
    while True:
        # From the console itself, the same address again would not reload the page: start from a blank one.
        browser.get("about:blank")
        browser.get(f"{base_url}/console.html#/classes/{class_id}")
        try:
            row = wait(browser, lambda d: member_row(d, username), message="the student is not in the roster")
        except TimeoutException:
            raise AssertionError(f"{username} never appeared in the roster: {find(browser, 'roster').text!r}")
        requests = int(row["cells"][1].replace(",", "")) if row["cells"][1].replace(",", "").isdigit() else 0
        if requests > 0:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"the roster never counted a request of {username}: {row}")
        time.sleep(0.3)


# ---------------------------------------------------------------------------
# Issue 5's scenario


def test_instructor_sees_student_usage_and_transcript_and_revokes_key(browser, gateway, instructor, console_student):
    base = gateway.base_url
    teacher, teacher_password = instructor
    name, password = console_student
    class_name = f"Seminar {uuid.uuid4().hex[:6]}"

    # 1. The instructor creates a class, makes its transcripts visible and reads the join code.
    console_sign_in(browser, base, teacher, teacher_password)
    find(browser, "class-create-name").send_keys(class_name)
    find(browser, "class-create").click()
    wait(browser, lambda d: d.execute_script("return location.hash").startswith("#/classes/"),
         message="creating the class did not open it")
    class_id = browser.execute_script("return location.hash").split("/", 2)[2]
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), class_name))
    assert visible(browser, "class-status").text == "Active"
    code = wait(browser, lambda d: find(d, "join-code").text.strip(), message="no join code on the page")

    Select(find(browser, "policy-transcript-visibility")).select_by_value("full")
    find(browser, "policy-save").click()
    announced(browser, "Settings saved.")
    assert find(browser, "policy-error").text == ""
    saved = page_json(browser, "GET", f"/api/classes/{class_id}")
    assert saved["status"] == 200, saved
    assert saved["json"]["policy"]["transcript_visibility"] == "full", saved["json"]
    assert saved["json"]["join_code"] == code
    # The new class is on the list too.
    find(browser, "nav-classes").click()
    wait(browser, EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'[data-testid="class-item"][data-id="{class_id}"]')), message="the class is not listed")
    console_log_out(browser)

    # 2. The student signs in on the chat page, joins with the code (the page says what the instructor will
    #    see), chats and makes an API key.
    sign_in(browser, base, name, password)
    assert visible(browser, "class-select").get_attribute("disabled") is not None  # in no class yet
    assert not find(browser, "class-notice").is_displayed()
    join_in_page(browser, code)
    wait(browser, lambda d: selected_class(d) == class_id, message="the joined class is not the chosen one")
    notice = visible(browser, "class-notice").text
    assert notice.startswith(f"Class: {class_name}."), notice
    assert "Your instructor can read the conversations you have in this class, and sees how much you use GSE AI" in notice, notice
    mine = page_json(browser, "GET", "/api/classes/mine")
    assert mine["json"]["applied_class_id"] == class_id, mine
    choose_model(browser, VISION)
    message = f"Please explain photosynthesis {uuid.uuid4().hex[:6]}"
    send(browser, message)
    answer = wait_for_answer(browser, 1)
    assert answer["text"] == f"Echo: {message}"

    made = page_json(browser, "POST", "/auth/keys", {"label": "notebook"})
    assert made["status"] == 201, made
    key, key_id = made["json"]["key"], made["json"]["api_key"]["id"]
    assert key.startswith("gsk_")
    models = httpx.get(f"{base}/v1/models", headers=bearer(key), timeout=WAIT)
    assert models.status_code == 200, models.text
    assert any(m["id"] == VISION for m in models.json()["data"]), models.json()
    # The console is not for students.
    browser.get(base + "/console.html")
    visible(browser, "not-instructor")

    # 3. The instructor sees the student's requests, the transcript, and revokes the key.
    console_sign_in(browser, base, teacher, teacher_password)
    row = roster_with_requests(browser, base, class_id, name)
    assert row["href"].startswith(f"#/classes/{class_id}/members/"), row
    browser.find_element(By.CSS_SELECTOR, f'[data-testid="member-row"][data-username="{name}"] a').click()
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), name), message="the student's page did not open")
    assert visible(browser, "member-state").text == "Active"

    visible(browser, "transcript-open").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("transcript"), message),
         message="the transcript does not show the student's message")
    transcript = find(browser, "transcript").text
    assert f"Echo: {message}" in transcript, transcript
    assert "[object" not in transcript and "null" not in transcript, transcript
    roles = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=\"transcript\"] article')).map(a => a.dataset.role)")
    assert roles == ["user", "assistant"], roles
    assert find(browser, "transcript-error").text == ""

    key_row = (By.CSS_SELECTOR, f'[data-testid="key-row"][data-key-id="{key_id}"]')
    wait(browser, EC.presence_of_element_located(key_row), message="the student's key is not listed")
    browser.execute_script("window.confirm = () => true;")  # the console asks before revoking
    wait(browser, EC.element_to_be_clickable(
        (By.CSS_SELECTOR, f'[data-testid="key-row"][data-key-id="{key_id}"] [data-testid="revoke-key"]'))).click()
    wait(browser, EC.text_to_be_present_in_element(key_row, "Revoked"), message="the key was not marked revoked")
    assert not browser.find_elements(
        By.CSS_SELECTOR, f'[data-testid="key-row"][data-key-id="{key_id}"] [data-testid="revoke-key"]')
    assert find(browser, "access-error").text == ""

    # 4. The student's next call with the key is refused.
    refused = httpx.get(f"{base}/v1/models", headers=bearer(key), timeout=WAIT)
    assert refused.status_code == 401, refused.text
    console_log_out(browser)


def test_console_refuses_a_student(browser, gateway, console_student):
    """A student who signs in on the console is sent to the chat page."""
    name, password = console_student
    try:
        browser.delete_all_cookies()
    except Exception:
        pass
    browser.get(gateway.base_url + "/console.html")
    visible(browser, "login-username").send_keys(name)
    find(browser, "login-password").send_keys(password)
    find(browser, "login-submit").click()
    visible(browser, "not-instructor")
    assert not find(browser, "logout").is_displayed()
    assert not browser.find_elements(*by_testid("class-list"))


# ---------------------------------------------------------------------------
# The student's side: join links, the class picker, and what the page says about each class


def test_student_signs_up_with_a_join_link_and_the_chosen_class_decides_the_rules(browser, gateway, instructor):
    base = gateway.base_url
    teacher = InstructorAPI(base, *instructor)
    tag = uuid.uuid4().hex[:6]
    strict = teacher.create_class(f"Strict {tag}", allowed_models=[TEXT], images_allowed=False,
                                  system_prompt="Answer in French.", system_prompt_locked=True,
                                  transcript_visibility="off", daily_token_budget=20000, requests_per_minute=30)
    open_class = teacher.create_class(f"Open {tag}", transcript_visibility="full")
    name, password = f"new{tag}", "a long enough password"

    # 1. The join link opens the sign-up form with the code filled in; the new account lands in the class.
    try:
        browser.delete_all_cookies()
    except Exception:
        pass
    browser.get(f"{base}/?code={strict['join_code']}")
    assert visible(browser, "signup-code").get_attribute("value") == strict["join_code"]
    assert not find(browser, "login-username").is_displayed()
    find(browser, "signup-username").send_keys(name)
    find(browser, "signup-password").send_keys(password)
    find(browser, "signup-submit").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("username"), name), message="signing up did not sign in")
    assert browser.execute_script("return location.search") == ""  # the code leaves the address
    wait(browser, lambda d: selected_class(d) == strict["id"], message="the class of the join link is not the chosen one")

    # 2. The notice and the composer follow the strict class: no reading of chats, limits, no images, its prompt.
    notice = notice_says(browser, f"Class: {strict['name']}.")
    for sentence in ("Your instructor sees neither your conversations, nor how much you use GSE AI, nor when or from where you sign in.",
                     "Daily limit: 20,000 tokens.", "At most 30 requests a minute.", "Images are not allowed.",
                     "The class sets the system prompt."):
        assert sentence in notice, notice
    wait(browser, lambda d: model_options(d) == [TEXT], message=f"models offered: {model_options(browser)}")
    prompt = find(browser, "system-prompt")
    assert prompt.get_attribute("readonly") is not None
    assert prompt.get_attribute("value") == "Answer in French."
    assert "cannot be changed" in find(browser, "system-prompt-help").get_attribute("textContent")
    assert find(browser, "attach-input").get_attribute("disabled") is not None
    message = f"Bonjour {tag}"
    send(browser, message)
    assert wait_for_answer(browser, 1)["text"] == f"Echo: {message}"

    # 3. Joining a second class (a wrong code first) makes it the chosen one; its rules replace the first's.
    join_in_page(browser, "no-such-code")
    wait(browser, EC.text_to_be_present_in_element(by_testid("class-error"), "no class has the join code 'no-such-code'"))
    expected_refusals(browser, 404)
    join_in_page(browser, open_class["join_code"])
    wait(browser, lambda d: selected_class(d) == open_class["id"], message="the second class was not chosen")
    notice = notice_says(browser, f"Class: {open_class['name']}.")
    assert "Your instructor can read the conversations you have in this class, and sees how much you use GSE AI" in notice, notice
    assert "Images are not allowed." not in notice and "Daily limit" not in notice, notice
    assert find(browser, "class-error").text == ""
    assert browser.execute_script("return location.hash") == ""  # a new chat in the new class
    wait(browser, lambda d: VISION in model_options(d), message=f"models offered: {model_options(browser)}")
    prompt = find(browser, "system-prompt")
    assert prompt.get_attribute("readonly") is None and prompt.get_attribute("value") == ""
    choose_model(browser, VISION)
    assert find(browser, "attach-input").get_attribute("disabled") is None
    mine = page_json(browser, "GET", "/api/classes/mine")
    assert mine["json"]["applied_class_id"] == open_class["id"], mine
    assert sorted(c["id"] for c in mine["json"]["data"]) == sorted([strict["id"], open_class["id"]])

    # 4. Choosing the strict class again in the picker applies it again, on the server too.
    Select(find(browser, "class-select")).select_by_value(strict["id"])
    notice_says(browser, "Your instructor sees neither")
    wait(browser, lambda d: model_options(d) == [TEXT], message=f"models offered: {model_options(browser)}")
    mine = page_json(browser, "GET", "/api/classes/mine")
    assert mine["json"]["applied_class_id"] == strict["id"], mine

    # 5. The instructor closes it: the next message is refused, and the notice says why.
    teacher.close_class(strict["id"])
    send(browser, "Are you still there?")
    wait(browser, EC.text_to_be_present_in_element(by_testid("error"), f"your class '{strict['name']}' is closed"))
    expected_refusals(browser, 403)
    notice = notice_says(browser, "Your instructor has closed it")
    assert "closed" in find(browser, "class-notice").get_attribute("class").split(), notice
    option = browser.execute_script("return document.getElementById('class-select').selectedOptions[0].text")
    assert option == f"{strict['name']} (closed)"
