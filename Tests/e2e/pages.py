"""Page helpers for the browser tests (a plain module, not a test module): finding and waiting for elements,
reading the chat page's messages, signing in on the chat page and on the instructor console, requests made
by the page itself, and the browser console's entries.

Each helper reads the page afresh, so re-rendered nodes never leave a test holding a stale element. The
`browser` fixture and the console check after every browser test are in `conftest.py`.
"""

from __future__ import annotations

import re

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from helpers import WAIT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)

# Whatever a test did, the console must not show these.
CSP_MARKERS = ("Content Security Policy", "Content-Security-Policy", "Refused to")
# Expected noise: the browser logs every 401 as a failed resource (`/auth/me` before signing in, a wrong
# password on `/auth/login`).
EXPECTED_NETWORK = re.compile(r"/auth/(me|login) - Failed to load resource: the server responded with a status of 401")


# ---------------------------------------------------------------------------
# The browser's console


def console_entries(browser) -> list[dict]:
    """The console entries logged since the last call (the browser hands each out once); kept on the driver too."""
    entries = browser.get_log("browser")
    browser.console.extend(entries)
    return entries


def console_problems(entries: list[dict]) -> list[str]:
    """CSP violations and errors (SEVERE) other than the expected 401s."""
    problems = []
    for entry in entries:
        message = entry.get("message", "")
        if any(marker in message for marker in CSP_MARKERS):
            problems.append(message)
        elif entry.get("level") == "SEVERE" and not (entry.get("source") == "network" and EXPECTED_NETWORK.search(message)):
            problems.append(message)
    return problems


def expected_refusals(browser, status: int) -> None:
    """Takes the console's entries now: every error must be the browser's note of a `status` answer."""
    for entry in console_entries(browser):
        if entry.get("level") == "SEVERE" and not EXPECTED_NETWORK.search(entry.get("message", "")):
            assert entry.get("source") == "network" and f"status of {status}" in entry["message"], entry


# ---------------------------------------------------------------------------
# Elements


def wait(browser, condition, timeout: float = WAIT, message: str = "", poll: float = 0.05):
    """WebDriverWait that shrugs off elements re-rendered under it."""
    return WebDriverWait(browser, timeout, poll_frequency=poll, ignored_exceptions=(StaleElementReferenceException,)) \
        .until(condition, message)


def by_testid(testid: str) -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{testid}"]'


def find(browser, testid: str):
    return browser.find_element(*by_testid(testid))


def visible(browser, testid: str, timeout: float = WAIT):
    return wait(browser, EC.visibility_of_element_located(by_testid(testid)), timeout, f"{testid} never became visible")


# ---------------------------------------------------------------------------
# The chat page


MESSAGES_SCRIPT = """
return Array.from(document.querySelectorAll('#messages [data-testid="message"]')).map(m => {
  const pick = id => { const e = m.querySelector(`[data-testid="${id}"]`); return e ? e.innerText.trim() : null; };
  return {
    role: m.dataset.role, status: m.dataset.status,
    text: pick(m.dataset.role === 'user' ? 'message-text' : 'answer-text') || '',
    stats: pick('stats'), error: pick('message-error'),
    retry: !!m.querySelector('[data-testid="retry"]'), regenerate: !!m.querySelector('[data-testid="regenerate"]'),
    images: Array.from(m.querySelectorAll('img')).map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0})),
  };
});
"""


def messages(browser) -> list[dict]:
    """Every message on screen: role, status, text (innerText), stats, error, retry/regenerate, images."""
    return browser.execute_script(MESSAGES_SCRIPT)


def answers(browser) -> list[dict]:
    return [message for message in messages(browser) if message["role"] == "assistant"]


def wait_for_answer(browser, count: int, statuses=("complete",), timeout: float = WAIT) -> dict:
    """Waits until the `count`-th answer has ended with one of `statuses`; returns it."""
    def ended(driver):
        found = answers(driver)
        return len(found) >= count and found[count - 1]["status"] in statuses and found[count - 1]
    try:
        return wait(browser, ended, timeout)
    except TimeoutException:
        raise AssertionError(f"answer {count} did not end {statuses} within {timeout} s; on screen: {messages(browser)}")


def sign_in(browser, base_url: str, username: str, password: str) -> None:
    """Opens the page signed out, signs in through the form and waits for the composer and the models."""
    try:
        browser.delete_all_cookies()  # cookies are per host, so this signs out of every gateway on 127.0.0.1
    except Exception:
        pass  # nothing to delete before the first page
    browser.get(base_url + "/")
    visible(browser, "login-username").send_keys(username)
    find(browser, "login-password").send_keys(password)
    find(browser, "login-submit").click()
    visible(browser, "composer-input")
    wait(browser, EC.text_to_be_present_in_element(by_testid("username"), username))
    wait(browser, lambda d: d.execute_script("return document.getElementById('model-select').options.length > 0"),
         message="the model picker stayed empty")


def choose_model(browser, model: str) -> None:
    select = Select(find(browser, "model-select"))
    if select.first_selected_option.get_attribute("value") != model:
        select.select_by_value(model)


def type_message(browser, text: str) -> None:
    box = find(browser, "composer-input")
    box.clear()
    box.send_keys(text)


def send(browser, text: str) -> None:
    """Types `text` and clicks Send once it is enabled."""
    type_message(browser, text)
    wait(browser, EC.element_to_be_clickable(by_testid("send"))).click()


def conversation_id(browser) -> str:
    """The open conversation's id, from the address (`#/c/<id>`)."""
    match = wait(browser, lambda d: re.match(r"^#/c/(.+)$", d.execute_script("return location.hash")),
                 message="the address never named a conversation")
    return match.group(1)


# ---------------------------------------------------------------------------
# The instructor console


def console_sign_in(browser, base_url: str, username: str, password: str) -> None:
    """Opens the console signed out, signs in through its form and waits for the class list."""
    try:
        browser.delete_all_cookies()
    except Exception:
        pass
    browser.get("about:blank")  # from the console itself, a new hash alone would not reload the page
    browser.get(base_url + "/console.html#/classes")
    visible(browser, "login-username").send_keys(username)
    find(browser, "login-password").send_keys(password)
    find(browser, "login-submit").click()
    wait(browser, EC.text_to_be_present_in_element(by_testid("username"), username),
         message="the console did not show the signed-in instructor")
    visible(browser, "class-create-name")


def announced(browser, text: str) -> None:
    """Waits until the console's live region says `text`."""
    wait(browser, EC.text_to_be_present_in_element((By.ID, "announcer"), text), message=f"never announced {text!r}")


def member_row(browser, username: str) -> dict | None:
    """The roster row of `username`: its cells' text and the link to the student's page, or None."""
    return browser.execute_script(
        """
        const row = document.querySelector(`[data-testid="member-row"][data-username="${arguments[0]}"]`);
        if (!row) return null;
        return {cells: Array.from(row.cells).map(c => c.innerText.trim()),
                href: row.querySelector('a').getAttribute('href')};
        """,
        username,
    )


# ---------------------------------------------------------------------------
# The set-up page


def set_password_with_link(browser, url: str, password: str) -> None:
    """Opens a set-up (or reset) link afresh, sets `password` through its form and waits for its confirmation."""
    browser.get("about:blank")  # from setup.html, a new fragment alone would not reload it
    browser.get(url)
    visible(browser, "setup-password").send_keys(password)
    find(browser, "setup-confirm").send_keys(password)
    find(browser, "setup-submit").click()
    visible(browser, "setup-done")
    assert find(browser, "setup-error").text == ""
    assert browser.execute_script("return location.hash") == ""  # the token leaves the address bar


# ---------------------------------------------------------------------------
# Requests made by the page


def page_json(browser, method: str, path: str, body=None) -> dict:
    """A JSON request made by the page with its own session cookie and the CSRF token from `/auth/me`."""
    return browser.execute_async_script(
        """
        const [method, path, body, done] = arguments;
        (async () => {
          const me = await fetch('/auth/me', {credentials: 'same-origin'}).then(r => r.json());
          const headers = {'Accept': 'application/json', 'X-CSRF-Token': me.csrf_token};
          if (body !== null) headers['Content-Type'] = 'application/json';
          const r = await fetch(path, {method, headers, credentials: 'same-origin',
                                       body: body === null ? undefined : JSON.stringify(body)});
          const text = await r.text();
          let json = null;
          try { json = JSON.parse(text); } catch {}
          return {status: r.status, json, text};
        })().then(done, error => done({status: 0, json: null, text: String(error)}));
        """,
        method, path, body,
    )
