"""The chat page in a real browser: headless Chromium driven by Selenium, against the gateway over the stub
(and once over llama.cpp).

Each test signs in as a fresh student made with the CLI, so tests never see each other's conversations.
Every wait has a time limit; the page is read with small scripts that look up the elements afresh each
time, so re-rendered nodes never leave a test holding a stale element. The browser's console is checked
after every test: no Content-Security-Policy violation and no JavaScript error. The browser, the console check,
the gateway and the `student` fixtures are in `conftest.py`; the page helpers shared with the other browser
tests are in `pages.py`.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from helpers import LLAMA_MODEL, VISION, WAIT
from pages import (
    DESKTOP,
    answers,
    by_testid,
    choose_model,
    console_entries,
    console_problems,
    conversation_id,
    find,
    messages,
    send,
    sign_in,
    visible,
    wait,
    wait_for_answer,
)

LLAMA_WAIT = 60    # seconds for a real model's answer
POLL = 0.03        # seconds between looks while an answer streams
PHONE = (390, 844)


# ---------------------------------------------------------------------------
# Helpers of this module (the shared ones are in pages.py): each reads the page afresh


def wait_for_text(browser, count: int, timeout: float = WAIT) -> dict:
    """Waits until the `count`-th answer shows some text while still streaming; returns it."""
    def started(driver):
        found = answers(driver)
        return len(found) >= count and found[count - 1]["text"] and found[count - 1]
    answer = wait(browser, started, timeout, "the answer never showed any text", poll=POLL)
    assert answer["status"] == "streaming", f"the answer ended before a test could act on it: {answer}"
    return answer


def fetch_in_page(browser, url: str) -> dict:
    """GETs `url` with the page's own session; returns status, content type and body."""
    return browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: 'same-origin'})
          .then(r => r.text().then(body => done({status: r.status, type: r.headers.get('content-type'), body})))
          .catch(error => done({status: 0, type: null, body: String(error)}));
        """,
        url,
    )


def expected_title(text: str) -> str:
    """The title the gateway gives a conversation from its first message."""
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= 60 else first[:57] + "…"


def slow_prompt(label: str) -> str:
    """A prompt the stub answers word by word, 200 ms apart (about three seconds in all)."""
    return f"[[slow]] {label} one two three four five six seven eight nine ten"


# ---------------------------------------------------------------------------
# 1. Signing in and out


def test_sign_in_wrong_password_then_right_then_out(browser, gateway, student):
    name, password = student
    try:
        browser.delete_all_cookies()
    except Exception:
        pass
    browser.get(gateway.base_url + "/")
    visible(browser, "login-username").send_keys(name)
    find(browser, "login-password").send_keys(password + "-wrong")
    find(browser, "login-submit").click()
    error = wait(browser, lambda d: find(d, "login-error").text.strip(), message="no error for a wrong password")
    assert "password" in error.lower() or "invalid" in error.lower(), error
    assert not find(browser, "composer-input").is_displayed()

    find(browser, "login-password").send_keys(password)
    find(browser, "login-submit").click()
    visible(browser, "composer-input")
    wait(browser, EC.text_to_be_present_in_element(by_testid("username"), name))
    assert not find(browser, "login-username").is_displayed()

    find(browser, "logout").click()
    visible(browser, "login-username")
    assert not find(browser, "composer-input").is_displayed()
    # The session is gone on the server too: a reload stays signed out.
    browser.refresh()
    visible(browser, "login-username")
    assert not find(browser, "username").is_displayed()


# ---------------------------------------------------------------------------
# 2. Streaming, the conversation list, Enter and Shift+Enter


def test_answer_streams_in_and_conversation_is_listed(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    prompt = slow_prompt("streaming")
    final = f"Echo: {prompt}"
    send(browser, prompt)

    # Watch the answer grow: some text strictly shorter than the final one must be seen on the way.
    seen: list[str] = []

    def ended(driver):
        found = answers(driver)
        if not found:
            return False
        seen.append(found[0]["text"])
        return found[0]["status"] != "streaming" and found[0]
    answer = wait(browser, ended, WAIT, poll=POLL)
    partial = [text for text in seen if text and len(text) < len(final)]
    assert partial, f"no partial answer was ever on screen; seen: {sorted(set(seen))}"
    assert all(final.startswith(text) for text in partial), partial
    assert answer["status"] == "complete", answer
    assert answer["text"] == final
    assert answer["stats"], "no stats line under the answer"
    assert "tok" in answer["stats"], answer["stats"]
    assert answer["regenerate"], "a finished last answer offers Regenerate"
    user = messages(browser)[0]
    assert (user["role"], user["text"]) == ("user", prompt)

    # The conversation is in the list, under its title, marked as the open one.
    cid = conversation_id(browser)
    item = wait(browser, EC.visibility_of_element_located(
        (By.CSS_SELECTOR, f'[data-testid="conversation-item"][href="#/c/{cid}"]')))
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="conversation-item"][href="#/c/{cid}"] .conv-title').text == expected_title(prompt),
         message="the list does not show the conversation's title")
    assert item.get_attribute("aria-current") == "page"
    assert find(browser, "conversation-list").find_elements(By.CSS_SELECTOR, '[data-testid="conversation-item"]')

    # Shift+Enter starts a new line without sending; Enter sends.
    box = find(browser, "composer-input")
    box.send_keys("first line")
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    box.send_keys("second line")
    assert box.get_attribute("value") == "first line\nsecond line"
    assert len(messages(browser)) == 2, "Shift+Enter sent the message"
    box.send_keys(Keys.ENTER)
    second = wait_for_answer(browser, 2)
    assert "second line" in second["text"], second
    user_texts = [m["text"] for m in messages(browser) if m["role"] == "user"]
    assert user_texts == [prompt, "first line\nsecond line"]
    assert find(browser, "composer-input").get_attribute("value") == ""


# ---------------------------------------------------------------------------
# 3. Images


def test_attached_image_reaches_the_model_and_shows_in_the_message(browser, gateway, student, png_file):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    wait(browser, lambda d: find(d, "attach-input").is_enabled(), message="a vision model enables attaching")
    find(browser, "attach-input").send_keys(str(png_file))
    # A thumbnail appears and the upload finishes (the item turns "ready").
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#attachments li img")),
         message="no thumbnail for the attached image")
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#attachments li.ready")),
         message="the image never finished uploading")

    send(browser, "What is in this picture?")
    answer = wait_for_answer(browser, 1)
    assert answer["text"] == "Echo: What is in this picture? [images: 1]"
    # The composer forgot the attachment after sending.
    assert not browser.find_elements(By.CSS_SELECTOR, "#attachments li")

    def image_loaded(driver):
        user = messages(driver)[0]
        return user["images"] and user["images"][0]["loaded"] and user
    user = wait(browser, image_loaded, message="the user's image never loaded")
    assert user["role"] == "user" and user["text"] == "What is in this picture?"
    assert len(user["images"]) == 1
    assert re.fullmatch(r"/api/images/[0-9a-f]{64}", user["images"][0]["src"]), user["images"]
    # The image is served to its owner.
    served = fetch_in_page(browser, user["images"][0]["src"])
    assert served["status"] == 200 and served["type"].startswith("image/png"), served["type"]


def test_a_file_that_is_not_an_image_is_refused_with_a_message(browser, gateway, student, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    wait(browser, lambda d: find(d, "attach-input").is_enabled(), message="a vision model enables attaching")
    find(browser, "attach-input").send_keys(str(notes))
    wait(browser, EC.text_to_be_present_in_element(by_testid("error"), "notes.txt is not a PNG, JPEG, WebP or GIF image."),
         message="a text file was refused without a word")
    assert not browser.find_elements(By.CSS_SELECTOR, "#attachments li")


# ---------------------------------------------------------------------------
# 4. Reloading while an answer streams


def test_reload_mid_stream_resumes_the_answer(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    prompt = slow_prompt("reload") + " eleven twelve thirteen fourteen fifteen"
    send(browser, prompt)
    wait_for_text(browser, 1)
    cid = conversation_id(browser)

    browser.refresh()
    visible(browser, "composer-input")
    assert conversation_id(browser) == cid
    # The same conversation comes back, still streaming, and its answer runs to the end on screen.
    seen: list[tuple[str, str]] = []

    def ended(driver):
        found = answers(driver)
        if found:
            seen.append((found[0]["status"], found[0]["text"]))
        return found and found[0]["status"] != "streaming" and found[0]
    answer = wait(browser, ended, WAIT, "the answer never ended after the reload", poll=POLL)
    assert any(status == "streaming" for status, _ in seen), f"the answer was no longer streaming after the reload: {seen[:3]}"
    assert answer["status"] == "complete", answer
    assert answer["text"] == f"Echo: {prompt}"
    assert answer["stats"]
    assert [m["role"] for m in messages(browser)] == ["user", "assistant"]
    assert wait(browser, EC.element_to_be_clickable(by_testid("send")))
    assert not find(browser, "stop").is_displayed()


# ---------------------------------------------------------------------------
# 5. Stop


def test_stop_keeps_the_partial_answer(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    prompt = slow_prompt("stop") + " eleven twelve thirteen fourteen fifteen"
    final = f"Echo: {prompt}"
    send(browser, prompt)
    wait_for_text(browser, 1)
    visible(browser, "stop").click()

    answer = wait_for_answer(browser, 1, statuses=("stopped",))
    assert answer["text"], "the partial answer was not kept"
    assert final.startswith(answer["text"]) and len(answer["text"]) < len(final), answer["text"]
    wait(browser, EC.invisibility_of_element_located(by_testid("stop")), message="Stop stayed on screen")
    assert wait(browser, EC.element_to_be_clickable(by_testid("send")))
    # After a reload the server's copy says the same.
    browser.refresh()
    visible(browser, "composer-input")
    again = wait_for_answer(browser, 1, statuses=("stopped",))
    assert again["text"] == answer["text"]


# ---------------------------------------------------------------------------
# 6. An upstream failure


def test_failed_answer_shows_the_error_and_retry(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    send(browser, "[[error]] please fail")
    answer = wait_for_answer(browser, 1, statuses=("failed",))
    assert answer["error"], "no error text under the failed answer"
    assert answer["retry"], "a failed answer offers Retry"
    assert not answer["regenerate"]
    assert wait(browser, EC.element_to_be_clickable(by_testid("retry")))


# ---------------------------------------------------------------------------
# 7. Export


def test_export_links_download_the_conversation(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    text = "Export me, please"
    send(browser, text)
    wait_for_answer(browser, 1)
    cid = conversation_id(browser)

    links = {}
    for fmt in ("markdown", "json"):
        link = visible(browser, f"export-{fmt}")
        href = link.get_attribute("href")  # absolute, as the browser resolves it
        assert href == f"{gateway.base_url}/api/conversations/{cid}/export?format={fmt}", href
        assert link.get_attribute("download") is not None
        links[fmt] = href

    markdown = fetch_in_page(browser, links["markdown"])
    assert markdown["status"] == 200, markdown
    assert "## You" in markdown["body"] and text in markdown["body"], markdown["body"]
    assert "## Assistant" in markdown["body"] and f"Echo: {text}" in markdown["body"]

    exported = fetch_in_page(browser, links["json"])
    assert exported["status"] == 200 and exported["type"].startswith("application/json"), exported
    assert text in exported["body"] and f"Echo: {text}" in exported["body"]


# ---------------------------------------------------------------------------
# 8. Hostile text stays text


XSS = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [click](javascript:window.__pwned=3) <b>bold</b>'


def test_html_and_javascript_links_are_shown_as_text(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    send(browser, XSS)
    answer = wait_for_answer(browser, 1)

    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert not browser.find_elements(By.CSS_SELECTOR, '#messages img[src="x"]')
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages script, #messages b")
    assert not browser.find_elements(By.CSS_SELECTOR, 'a[href^="javascript"]')
    assert not browser.find_elements(By.CSS_SELECTOR, "[onerror]")
    assert "<script>" in answer["text"] and "onerror" in answer["text"], answer["text"]
    assert "<b>bold</b>" in answer["text"]
    user = messages(browser)[0]
    assert user["text"] == XSS
    # The title (list, header) is text too.
    assert find(browser, "conversation-list").find_elements(By.CSS_SELECTOR, '[data-testid="conversation-item"]')
    wait(browser, EC.text_to_be_present_in_element((By.ID, "chat-title"), expected_title(XSS)),
         message="the header does not show the conversation's title")
    assert browser.execute_script("return document.title").startswith(expected_title(XSS))
    assert browser.execute_script("return typeof window.__pwned") == "undefined"


# ---------------------------------------------------------------------------
# 10. Phone size


def test_phone_size_drawer_and_composer(browser, gateway, student):
    sign_in(browser, gateway.base_url, *student)
    choose_model(browser, VISION)
    browser.set_window_size(*PHONE)
    try:
        wait(browser, lambda d: d.execute_script("return innerWidth") < 800, message="the window did not shrink")
        toggle = wait(browser, EC.visibility_of_element_located((By.ID, "drawer-toggle")))
        wait(browser, EC.invisibility_of_element_located(by_testid("conversation-list")),
             message="the list is not behind the drawer")

        send(browser, "Hello from a phone")
        answer = wait_for_answer(browser, 1)
        assert answer["text"] == "Echo: Hello from a phone"
        cid = conversation_id(browser)

        # The drawer opens over the chat with the conversation in it; New chat closes it.
        toggle.click()
        wait(browser, EC.element_to_be_clickable(
            (By.CSS_SELECTOR, f'[data-testid="conversation-item"][href="#/c/{cid}"]')))
        assert toggle.get_attribute("aria-expanded") == "true"
        wait(browser, EC.element_to_be_clickable(by_testid("new-chat"))).click()
        wait(browser, EC.invisibility_of_element_located(by_testid("conversation-list")),
             message="the drawer did not close")
        assert not messages(browser)

        # Picking the conversation in the drawer closes it and opens the conversation.
        toggle.click()
        wait(browser, EC.element_to_be_clickable(
            (By.CSS_SELECTOR, f'[data-testid="conversation-item"][href="#/c/{cid}"]'))).click()
        wait(browser, EC.invisibility_of_element_located(by_testid("conversation-list")))
        assert wait_for_answer(browser, 1)["text"] == "Echo: Hello from a phone"
    finally:
        browser.set_window_size(*DESKTOP)


# ---------------------------------------------------------------------------
# 9. The Content-Security-Policy (after the tests above, whose consoles were checked one by one)


def test_content_security_policy_header_and_clean_console(browser, gateway):
    response = httpx.get(gateway.base_url + "/", timeout=WAIT)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["script-src"] == ["'self'"], policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"], policy
    assert response.headers["x-content-type-options"] == "nosniff"

    # Nothing in the whole module so far broke the policy or threw.
    console_entries(browser)
    assert not console_problems(browser.console), console_problems(browser.console)

    # The check would notice: an inline script the page did not write is refused, and says so.
    browser.delete_all_cookies()
    browser.get(gateway.base_url + "/")
    visible(browser, "login-username")
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.head.append(s);")
    assert browser.execute_script("return typeof window.__inline") == "undefined"
    refused = []
    deadline = time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        refused = [m for m in console_problems(console_entries(browser)) if "Content Security Policy" in m]
        time.sleep(0.1)
    assert refused, "the provoked CSP violation did not reach the console log"


# ---------------------------------------------------------------------------
# 11. A real model (llama.cpp through the gateway, kind openai)


def test_real_model_answers_in_the_page(browser, gateway_over_llama):
    name = f"web{uuid.uuid4().hex[:10]}"
    password = gateway_over_llama.add_user(name, "student")
    sign_in(browser, gateway_over_llama.base_url, name, password)
    choose_model(browser, LLAMA_MODEL)
    send(browser, "Say hello")
    answer = wait_for_answer(browser, 1, statuses=("complete", "failed", "stopped", "interrupted"), timeout=LLAMA_WAIT)
    assert answer["status"] == "complete", answer
    assert answer["text"].strip(), answer
    assert answer["stats"], answer
