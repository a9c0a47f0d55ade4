"""The Hub tab: pull a model into the list by repo id, push one with a generated model card."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from kdcore.models.hub import push_model
from kdcore_app.errors import user_errors
from kdcore_app.state import AppState

ABOUT = ("Pull a model by repo id into the model list, or push one with a generated model card (token from "
         "`HF_TOKEN` or typed here; it is not stored).")


class HubTab(NamedTuple):
    model: gr.Dropdown  # the model to push
    pulled: gr.Markdown  # changes when a pull added a model to the list


def build(state: AppState) -> HubTab:
    """Repo id and revision to pull; model, target repo, token and visibility to push."""

    @user_errors
    def on_pull(repo_id: str, revision: str):
        name, folder = state.store.pull(repo_id, revision or None)
        return f"Pulled **{name}** into the model list ({folder})."

    @user_errors
    def on_push(name: str, repo_id: str, token: str, private: bool):
        url = push_model(state.store.folder(name), repo_id, token or None, bool(private))
        return f"Pushed **{name}** to {url}"

    with gr.Tab("Hub", id="hub"):
        gr.Markdown(ABOUT)
        with gr.Row():
            repo = gr.Textbox(label="repo id to pull (OWNER/NAME)")
            revision = gr.Textbox(label="revision (optional)")
            pull = gr.Button("Pull")
        pulled = gr.Markdown()
        with gr.Row():
            model = gr.Dropdown(state.models(), label="model to push", allow_custom_value=True)
            target = gr.Textbox(label="push to (OWNER/NAME)")
            token = gr.Textbox(label="token (optional)", type="password")
            private = gr.Checkbox(label="private")
            push = gr.Button("Push")
        pushed = gr.Markdown()
    pull.click(on_pull, [repo, revision], pulled, api_name="pull")
    push.click(on_push, [model, target, token, private], pushed, api_name="push")
    return HubTab(model, pulled)
