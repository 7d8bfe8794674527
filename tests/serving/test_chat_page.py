"""hf_simplegpt.serving.chat_page: the gradio chat page, at /chat of the shared `hf-simplegpt serve --chat`, driven in
Debian's chromium by Playwright. A screenshot goes to tests/artifacts/chat_page.png."""

import importlib.util
import os
import re
import time

import pytest

from hf_simplegpt.serving.chat_page import stream_reply
from tests.conftest import REPO_ROOT
from tests.serving.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
# Playwright cannot download its own browser here: it drives the system one, headless, with no network of its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "tests" / "artifacts" / "chat_page.png"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="gradio is not installed")


def reply_to(client, server, messages) -> str:
    """The server's reply with the page's default settings for the test server's greedy folder (128 new tokens,
    temperature 0)."""
    return (
        client.chat.completions.create(model=server.model, messages=messages, max_tokens=128, temperature=0.0)
        .choices[0]
        .message.content
    )


def words(text: str) -> str:
    """The letters and digits of a text: what survives the page's markdown rendering of a random model's bytes."""
    return re.sub(r"[\W_]", "", text)


def test_the_page_streams_the_reply_to_the_whole_conversation(client, server):
    history = [
        {"role": "user", "content": "The quick brown fox"},
        {"role": "assistant", "content": [{"type": "text", "text": "jumps."}]},
    ]
    growing = list(stream_reply(client, server.model, "And then?", history, max_tokens=32, temperature=0.0))
    assert len(growing) > 1 and all(later.startswith(earlier) for earlier, later in zip(growing, growing[1:]))
    messages = [history[0], {"role": "assistant", "content": "jumps."}, {"role": "user", "content": "And then?"}]
    assert (
        growing[-1]
        == client.chat.completions.create(model=server.model, messages=messages, max_tokens=32, temperature=0.0)
        .choices[0]
        .message.content
    )


def test_the_page_starts_from_the_folders_sampling_settings(tmp_path):
    from transformers import GenerationConfig

    from hf_simplegpt.generation import SAMPLING_DEFAULTS
    from hf_simplegpt.serving.chat_page import sampling_defaults

    GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9).save_pretrained(tmp_path / "sampling")
    GenerationConfig(do_sample=False).save_pretrained(tmp_path / "greedy")
    assert sampling_defaults(str(tmp_path / "sampling")) == {"temperature": 0.7, "top_p": 0.9}
    assert sampling_defaults(str(tmp_path / "greedy")) == {"temperature": 0.0, "top_p": 1.0}
    # chat-ui before a server that is not a folder here: what pretraining saves.
    expected = {"temperature": SAMPLING_DEFAULTS["temperature"], "top_p": SAMPLING_DEFAULTS["top_p"]}
    assert sampling_defaults(None) == sampling_defaults("someone/model") == expected


def test_chat_ui_puts_the_page_before_a_running_server(client, server, monkeypatch):
    """`hf-simplegpt chat-ui --base_url ...` (its main, in this process, returning where it would wait for Ctrl+C),
    asked through gradio's own client as the page asks it."""
    import gradio
    from gradio_client import Client

    from hf_simplegpt.serving import chat_page

    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda self: None)
    port = free_port()
    page = chat_page.main(["--base_url", server.base_url, "--port", str(port)])
    try:
        asked = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
        answer = asked.predict("The quick brown fox", 24, 0.0, 1.0, api_name="/respond")
    finally:
        page.close()
    expected = client.chat.completions.create(
        model=server.model,
        max_tokens=24,
        temperature=0.0,
        messages=[{"role": "user", "content": "The quick brown fox"}],
    )
    assert answer == expected.choices[0].message.content


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: apt-get install -y chromium")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed")
def test_chat_in_a_real_browser(client, server):
    from playwright.sync_api import sync_playwright

    first, second = "The quick brown fox", "Tell me more."
    expected = [reply_to(client, server, [{"role": "user", "content": first}])]
    conversation = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": expected[0]},
        {"role": "user", "content": second},
    ]
    expected.append(reply_to(client, server, conversation))
    forgetful = reply_to(client, server, [{"role": "user", "content": second}])
    assert words(expected[1]) != words(forgetful)  # else the test could not tell that the page sends the history

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.base_url.removesuffix("/v1") + "/chat/", timeout=TIMEOUT_MS)
            for turn, message in enumerate((first, second)):
                box = page.get_by_role("textbox").first
                box.fill(message)
                box.press("Enter")
                bot = page.locator('[data-testid="bot"]').nth(turn)
                bot.wait_for(timeout=TIMEOUT_MS)
                deadline = time.monotonic() + TIMEOUT_MS / 1000  # the reply streams in: wait until it is complete
                while words(bot.inner_text()) != words(expected[turn]) and time.monotonic() < deadline:
                    page.wait_for_timeout(200)
                assert words(bot.inner_text()) == words(expected[turn])
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
