"""The chat page's conversation list and header in a real browser: "Load more" pages, search, rename, and a
session that ends while a message is being written (the draft is kept, and sent once signed in again).

The browser fixture, the console check after every test and the `student` fixture are in `conftest.py`, the
page helpers in `pages.py`.
"""

from __future__ import annotations

import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from helpers import VISION, session
from pages import (
    by_testid,
    choose_model,
    conversation_id,
    expected_refusals,
    find,
    sign_in,
    type_message,
    visible,
    wait,
    wait_for_answer,
)

PAGE = 30  # conversations per page of the list, as the page asks for them


def listed(browser) -> list[str]:
    """The titles in the sidebar, top to bottom."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=\"conversation-item\"] .conv-title'))"
        ".map(e => e.textContent)")


def list_is(browser, expected: list[str], message: str) -> None:
    wait(browser, lambda d: listed(d) == expected, message=f"{message}: the list shows {listed(browser)!r}")


def test_the_list_pages_searches_and_renames(browser, gateway, student):
    name, password = student
    tag = uuid.uuid4().hex[:6]
    own = session(gateway.base_url, name, password)
    titles = [f"Topic {index:02d} {tag}" for index in range(PAGE + 3)]
    for title in titles:  # one after another: the newest is the last made
        made = own.post("/api/conversations", json={"model": VISION, "title": title})
        assert made.status_code == 201, made.text
    newest_first = list(reversed(titles))

    sign_in(browser, gateway.base_url, name, password)
    list_is(browser, newest_first[:PAGE], "the first page")
    visible(browser, "load-more").click()
    list_is(browser, newest_first, "after Load more")
    assert not find(browser, "load-more").is_displayed()

    search = find(browser, "search")
    search.send_keys(f"topic 07 {tag}")  # case does not matter
    list_is(browser, [titles[7]], "searching one title")
    search.clear()
    search.send_keys(f"nothing like it {tag}")
    list_is(browser, [], "searching for nothing")
    assert browser.find_element(By.ID, "list-status").text == "No conversations match."
    search.clear()
    search.send_keys(" ")  # an input event with an empty query: the whole list again
    list_is(browser, newest_first[:PAGE], "with the search cleared")

    # Rename the oldest (on the second page) from its header; the list and the server agree.
    visible(browser, "load-more").click()
    list_is(browser, newest_first, "after Load more again")
    browser.find_elements(*by_testid("conversation-item"))[-1].click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "chat-title"), titles[0]), message="the oldest did not open")
    opened = conversation_id(browser)
    visible(browser, "rename").click()
    field = visible(browser, "rename-input")
    assert field.get_attribute("value") == titles[0]
    field.clear()
    field.send_keys(f"Renamed <b>{tag}</b>")
    find(browser, "rename-save").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "chat-title"), f"Renamed <b>{tag}</b>"),
         message="the header kept the old title")
    wait(browser, lambda d: f"Renamed <b>{tag}</b>" in listed(d), message="the list kept the old title")
    assert own.get(f"/api/conversations/{opened}").json()["conversation"]["title"] == f"Renamed <b>{tag}</b>"


def test_a_session_that_ends_keeps_the_draft_and_sends_it_after_signing_in(browser, gateway, student):
    name, password = student
    sign_in(browser, gateway.base_url, name, password)
    choose_model(browser, VISION)

    # The browser's session is signed out from elsewhere (another session of the same user).
    other = session(gateway.base_url, name, password)
    sessions = other.get("/auth/sessions").json()["data"]
    page_session = [s for s in sessions if not s["current"]]
    assert len(page_session) == 1, sessions
    assert other.delete(f"/auth/sessions/{page_session[0]['id']}").status_code == 204

    draft = f"A long thought I do not want to lose {uuid.uuid4().hex[:6]}"
    type_message(browser, draft)
    wait(browser, EC.element_to_be_clickable(by_testid("send"))).click()
    visible(browser, "login-username")
    wait(browser, EC.text_to_be_present_in_element(by_testid("login-error"), "Your session has ended"),
         message="the sign-in form did not say why")
    assert find(browser, "login-error").text == "Your session has ended. Sign in again; what you typed is kept."
    expected_refusals(browser, 401)  # the browser notes the refused send in its console

    find(browser, "login-username").clear()
    find(browser, "login-username").send_keys(name)
    find(browser, "login-password").send_keys(password)
    find(browser, "login-submit").click()
    visible(browser, "composer-input")
    assert find(browser, "composer-input").get_attribute("value") == draft
    wait(browser, EC.element_to_be_clickable(by_testid("send"))).click()
    answer = wait_for_answer(browser, 1)
    assert answer["text"] == f"Echo: {draft}"
