"""Hugging Face Hub I/O: pull and push model folders, push an assembled Gradio Space.

A pushed model is exactly a kdcore model folder (``config.json`` + ``model.safetensors`` + ``README.md`` card with
a model-index), so ``timm.create_model("hf-hub:OWNER/NAME", pretrained=True)`` and ``kdcore.models.load_model``
both load it. Never a pickle. Hub and network failures become one-line :class:`KDCoreError` messages.
Tokens: an explicit ``token`` argument, else huggingface_hub's own lookup (``HF_TOKEN``, then the stored login).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdcore.errors import KDCoreError
from kdcore.models.card import model_card_text
from kdcore.models.factory import count_params
from kdcore.models.folder import WEIGHTS, load_folder

#: What a model repo holds (ood.safetensors: the fitted out-of-distribution statistics, when the check needs
#: them); nothing else is pulled or pushed.
MODEL_FILES = ("config.json", WEIGHTS, "README.md", "ood.safetensors")


@contextmanager
def _hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one-line :class:`KDCoreError`s."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise KDCoreError(f"{what}: the repo is gated; accept its terms on the Hub and use a token") from None
    except RepositoryNotFoundError:
        raise KDCoreError(f"{what}: repo not found (or private and no valid token)") from None
    except RevisionNotFoundError:
        raise KDCoreError(f"{what}: revision not found") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise KDCoreError(f"{what}: not in the local Hub cache and the Hub cannot be reached (offline)") from None
    except HFValidationError as e:
        raise KDCoreError(f"{what}: invalid repo id ({str(e).splitlines()[0]})") from None
    except HfHubHTTPError as e:
        raise KDCoreError(f"{what}: Hub error ({str(e).splitlines()[0]})") from None
    except (httpx2.HTTPError, ConnectionError, TimeoutError) as e:
        raise KDCoreError(f"{what}: cannot reach the Hub ({type(e).__name__})") from None


def _repo_id(ref: str) -> str:
    repo_id = ref.removeprefix("hf-hub:").strip()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise KDCoreError(f"{ref!r}: a Hub repo id looks like OWNER/NAME")
    return repo_id


def pull_model(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the HF cache, also with ``HF_HUB_OFFLINE=1``) a model repo; return its local folder."""
    from huggingface_hub import snapshot_download

    repo_id = _repo_id(repo_id)
    with _hub_errors(repo_id):
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(MODEL_FILES)))
    missing = [f for f in ("config.json", WEIGHTS) if not (folder / f).is_file()]
    if missing:
        raise KDCoreError(f"{repo_id}: not a kdcore/timm safetensors model (missing {', '.join(missing)})")
    return folder


def push_model(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Push a model folder to ``repo_id`` in one commit, with a freshly generated card; return the repo URL.

    Uploads ``config.json``, ``model.safetensors``, ``ood.safetensors`` (when there) and ``README.md`` only. The
    card (model-index metrics, training summary, data, intended use, limitations) names ``repo_id`` in its loading
    snippet.
    """
    from huggingface_hub import CommitOperationAdd, HfApi


    repo_id = _repo_id(repo_id)
    model, info = load_folder(folder)  # also proves the weights fit the config
    card = model_card_text(info, count_params(model), repo_id=repo_id)
    api = HfApi(token=token or None)
    with _hub_errors(repo_id):
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        ops = [CommitOperationAdd(f, str(Path(folder) / f)) for f in MODEL_FILES
               if f != "README.md" and (Path(folder) / f).is_file()]
        ops.append(CommitOperationAdd("README.md", card.encode()))
        api.create_commit(repo_id, ops, commit_message=f"Upload {info.arch} from kdcore")
    return str(url)


def push_space(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Create (if needed) a Gradio Space ``repo_id`` and upload an assembled folder to it; return the Space URL."""
    from huggingface_hub import HfApi

    repo_id = _repo_id(repo_id)
    if not (Path(folder) / "app.py").is_file():
        raise KDCoreError(f"{folder}: not an assembled Space (no app.py); run `python -m kdcore space` first")
    api = HfApi(token=token or None)
    with _hub_errors(repo_id):
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                          commit_message="Deploy the kdcore app", ignore_patterns=["*.pyc", "__pycache__/*"])
    return str(url)
