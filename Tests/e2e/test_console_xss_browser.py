"""Text from users and models is never inserted as HTML in the instructor console, nor in the chat page's
class picker and notice: a class name, a system prompt, a conversation title, a student's message and the
model's answer, each carrying markup that would run script if it were parsed, are shown as text on every
page that shows them (the class list and page, the student's transcripts, the administrator's audit log).

The chat page's own messages are covered by `test_browser.py::test_html_and_javascript_links_are_shown_as_text`.
The browser fixture, the console check after every test and the `instructor` and `console_student` accounts are
in `conftest.py`; the page helpers in `pages.py` and the HTTP helpers in `helpers.py`.
"""

from __future__ import annotations

import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from helpers import TEXT, InstructorAPI, add_member, session
from pages import by_testid, console_sign_in, find, sign_in, visible, wait

# Each payload sets `window.__xss` if it is ever parsed as HTML or followed as a link.
CLASS_NAME = '<img src=x onerror="window.__xss=\'class\'">Seminar'
PROMPT = '<script>window.__xss="prompt"</script>Be brief.'
TITLE = '<svg onload="window.__xss=\'title\'"></svg>Cells'
MESSAGE = ('<img src=x onerror="window.__xss=\'message\'"> <script>window.__xss="script"</script> '
           '[click](javascript:window.__xss="link") **bold**')

INJECTED = """
return {
  xss: window.__xss === undefined ? null : String(window.__xss),
  handlers: document.querySelectorAll('[onerror], [onload], [onclick]').length,
  scripts: Array.from(document.scripts).filter(s => !s.src).length,
  images: Array.from(document.images).filter(i => (i.getAttribute('src') || '') === 'x').length,
  javascriptLinks: Array.from(document.querySelectorAll('a[href]'))
    .filter(a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:')).length,
  text: document.body.innerText,
};
"""


def nothing_injected(browser, *expected_text: str) -> str:
    """Checks that no payload became markup and that each expected text is on the page as text."""
    wait(browser, lambda d: all(t in d.execute_script("return document.body.innerText") for t in expected_text),
         message=f"the page never showed {expected_text!r}")
    found = browser.execute_script(INJECTED)
    assert found["xss"] is None, found["xss"]
    assert (found["handlers"], found["scripts"], found["images"], found["javascriptLinks"]) == (0, 0, 0, 0), found
    return found["text"]


def test_markup_from_users_and_models_is_text_throughout_the_console(browser, gateway, instructor, console_student):
    base = gateway.base_url
    name, password = console_student
    tag = uuid.uuid4().hex[:6]
    class_name = f"{CLASS_NAME} {tag}"

    # An instructor's class with markup in its name and system prompt, sharing transcripts.
    teacher = InstructorAPI(base, *instructor)
    klass = teacher.create_class(class_name, transcript_visibility="full", system_prompt=PROMPT)
    user_id = add_member(teacher, klass["id"], name, password)

    # The student chats in it (the stub echoes the message back: the model's answer carries it too).
    own = session(base, name, password)
    made = own.post("/api/conversations", json={"model": TEXT, "title": TITLE})
    assert made.status_code == 201, made.text
    conversation = made.json()["id"]
    sent = own.post(f"/api/conversations/{conversation}/messages", json={"text": MESSAGE})
    assert sent.status_code == 202, sent.text
    answer = sent.json()["assistant_message"]["id"]
    events = own.get(f"/api/conversations/{conversation}/messages/{answer}/events")
    assert events.status_code == 200 and "event: end" in events.text, events.text

    # The chat page: the class picker and the class notice.
    sign_in(browser, base, name, password)
    wait(browser, EC.text_to_be_present_in_element(by_testid("class-notice"), class_name),
         message="the class notice never named the class")
    nothing_injected(browser, class_name)
    picker = browser.execute_script(
        "return Array.from(document.getElementById('class-select').options).map(o => o.textContent)")
    assert any(class_name in option for option in picker), picker

    # The console: the class list, the class page (name and locked-or-not system prompt), the student's
    # transcript list and the transcript itself.
    console_sign_in(browser, base, *instructor)
    nothing_injected(browser, class_name)
    browser.get(f"{base}/console.html#/classes/{klass['id']}")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), class_name),
         message="the class page never showed the class name")
    nothing_injected(browser, class_name)
    assert find(browser, "policy-system-prompt").get_attribute("value") == PROMPT

    browser.get(f"{base}/console.html#/classes/{klass['id']}/members/{user_id}")
    nothing_injected(browser, TITLE)
    visible(browser, "transcript-open").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("transcript"), "Echo:"), message="the transcript never opened")
    text = nothing_injected(browser, "Echo:", 'window.__xss="script"')
    assert "<img src=x onerror=" in text and "<script>" in text, text
    bold = browser.find_elements(By.CSS_SELECTOR, '[data-testid="transcript"] .md strong')
    assert [b.text for b in bold] == ["bold"], [b.text for b in bold]  # Markdown still renders, as elements

    # The administrator's audit log names the class in its details.
    boss = f"boss{tag}"
    console_sign_in(browser, base, boss, gateway.add_user(boss, "admin"))
    visible(browser, "nav-admin").click()
    visible(browser, "audit-list")
    nothing_injected(browser, class_name)
