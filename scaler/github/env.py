"""GitHub credentials from the environment, for the commands that run outside the agent.

``garo history export``, ``garo images --org`` and ``garo redeliver`` run from
an operator's shell or a cron job, not from a stack: they take a token or one
App's id and private key from ``GARO_GITHUB_*`` variables. Read in one place so
the three accept the same variables and say the same thing when one is missing.
The key is read from the variable or from the file it names, never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scaler.github.auth import AppCredentials
from scaler.github.client import GitHubClient

DEFAULT_API_URL = "https://api.github.com"


def api_url_from_env(env: Mapping[str, str]) -> str:
    return env.get("GARO_GITHUB_API_URL", "") or DEFAULT_API_URL


def app_from_env(env: Mapping[str, str], hint: str = "") -> AppCredentials:
    """The App in GARO_GITHUB_APP_ID with GARO_GITHUB_PRIVATE_KEY or GARO_GITHUB_PRIVATE_KEY_FILE.

    ValueError names the variable that is missing or unreadable, never its value; ``hint`` is
    added to the message for a missing key (a command that also takes a token says so).
    """
    app_id = env.get("GARO_GITHUB_APP_ID", "").strip()
    if not app_id.isdigit():
        raise ValueError("GARO_GITHUB_APP_ID must be set to the GitHub App's numeric id")
    key = env.get("GARO_GITHUB_PRIVATE_KEY", "")
    key_file = env.get("GARO_GITHUB_PRIVATE_KEY_FILE", "")
    if not key and key_file:
        try:
            key = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"GARO_GITHUB_PRIVATE_KEY_FILE: cannot read it: {exc.strerror}") from None
    if not key:
        raise ValueError(f"set GARO_GITHUB_PRIVATE_KEY (PEM) or GARO_GITHUB_PRIVATE_KEY_FILE (path){hint}")
    return AppCredentials(int(app_id), key)


def client_from_env(org: str, env: Mapping[str, str], **options: Any) -> GitHubClient:
    """A client from GARO_GITHUB_TOKEN, or else from the App variables (:func:`app_from_env`)."""
    token = env.get("GARO_GITHUB_TOKEN", "").strip()
    if token:
        return GitHubClient(org, token=token, api_url=api_url_from_env(env), **options)
    if not env.get("GARO_GITHUB_APP_ID", "").strip():
        raise ValueError("set GARO_GITHUB_TOKEN, or GARO_GITHUB_APP_ID with GARO_GITHUB_PRIVATE_KEY[_FILE]")
    app = app_from_env(env, hint=", or GARO_GITHUB_TOKEN instead of the App")
    return GitHubClient(org, app=app, api_url=api_url_from_env(env), **options)
