"""Serving: an OpenAI-compatible server on transformers' own serving app, a chat page, and Ray Serve replicas.

    hf-simplegpt serve MODEL_DIR [--host 127.0.0.1] [--port 8000] [--chat] [--ray --replicas N]
    hf-simplegpt chat-ui --base_url http://127.0.0.1:8000/v1

`app.py` builds the app (`build_app`), `server.py` is the `serve` job, `chat_page.py` the gradio page (mounted at
/chat by `serve --chat`, or standalone against any OpenAI-compatible server with `chat-ui`), `ray_app.py` the Ray
Serve deployment. They need the `serving` extra: pip install -e ".[serving]".
"""
