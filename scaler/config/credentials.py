"""Who holds which GitHub credential: a department's runner App, the hub's webhook App.

A department's credential must reach only that department (docs/security.md):
the hub's webhook App and secret never sit in a department stack, the hub holds
no runner credential, and two departments never share a runner App unless
both declare it (checked across stack files by :func:`check_shared_credentials`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from scaler.config.model import (
    NAME_RE,
    REPOSITORY_RE,
    AppKey,
    GitHubSettings,
    Issue,
    RunnerApp,
    RunnerGroup,
    RunnerScope,
    Secret,
    StackConfig,
    WebhookApp,
)
from scaler.config.reader import Reader

APP_KEYS = {"appId", "installationId", "privateKey"}  # an App entry: webhookApp, runnerApp.additional[i]
RUNNER_APP_KEYS = APP_KEYS | {"scope", "repositories", "sharedWith", "additional", "jitPerMinute"}
# GitHub's secondary limit: about 900 points a minute per endpoint, 5 per POST (scaler.github.ratelimit).
JIT_PER_MINUTE_LIMIT = 180
# Before per-department credentials, one App's keys sat directly under garo:github.
MOVED_KEYS = ("appId", "installationId", "privateKey")


def read_github(r: Reader, own: Mapping[str, Any], kind: str) -> GitHubSettings:
    gh = r.mapping(own.get("github"), "garo:github")
    moved = [key for key in MOVED_KEYS if key in gh]
    for key in moved:
        # Never echo the value: it may be the key itself.
        r.fail(
            f"garo:github.{key}",
            "moved: a department's own GitHub App goes under garo:github.runnerApp, "
            "the hub's webhook App under garo:github.webhookApp (docs/security.md)",
        )
    allowed = {"org", "apiUrl", "runnerApp", "webhookApp", "webhookSecret", "token"}
    r.unknown({k: v for k, v in gh.items() if k not in moved}, allowed, "garo:github")
    if not gh:
        r.fail("garo:github", "is required (at least github.org)")
    api_url = gh.get("apiUrl", "https://api.github.com")
    if not isinstance(api_url, str) or not api_url.startswith(("https://", "http://")):
        r.fail("garo:github.apiUrl", f"expected an http(s) URL, got {api_url!r}")
        api_url = "https://api.github.com"
    org = r.string(gh, "org", "garo:github") if gh else ""
    github = GitHubSettings(
        org=org,
        api_url=api_url.rstrip("/"),
        runner_app=_read_runner_app(r, gh.get("runnerApp"), org) if "runnerApp" in gh else None,
        webhook_app=_read_webhook_app(r, gh.get("webhookApp")) if "webhookApp" in gh else None,
        webhook_secret=r.secret(gh, "webhookSecret", "garo:github"),
        token=r.secret(gh, "token", "garo:github"),
    )
    if kind == "hub":
        for key in ("runnerApp", "token"):
            if key in gh:
                r.fail(
                    f"garo:github.{key}",
                    "the hub holds no runner credential: each department stack has its own runnerApp",
                )
    else:
        for key in ("webhookApp", "webhookSecret"):
            if key in gh:
                r.fail(
                    f"garo:github.{key}",
                    "belongs to the hub stack only: a department holding it could forge or redirect "
                    "every department's events",
                )
        if "runnerApp" in gh and "token" in gh:
            r.fail("garo:github.token", "give garo:github.runnerApp or a development token, not both")
    return github


def _app_id(r: Reader, data: Mapping[str, Any], key: str, path: str, required: bool) -> int | None:
    value = data.get(key)
    if value is None:
        if required:
            r.fail(f"{path}.{key}", "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        r.fail(f"{path}.{key}", f"expected a positive integer, got {value!r}")
        return None
    return value


def _read_app_key(
    r: Reader, raw: Mapping[str, Any], path: str, allowed: set[str] = APP_KEYS, missing_key: str = "is required"
) -> tuple[int | None, int | None, Secret | None]:
    """What every GitHub App entry holds: (appId, installationId, privateKey), each wrong one reported.

    appId and privateKey are required; the ids are None when missing or wrong, the key when missing
    or not a reference (never echoed: it may be the secret itself).
    """
    r.unknown(raw, allowed, path)
    app_id = _app_id(r, raw, "appId", path, required=True)
    installation_id = _app_id(r, raw, "installationId", path, required=False)
    private_key = r.secret(raw, "privateKey", path)
    if "privateKey" not in raw:
        r.fail(f"{path}.privateKey", missing_key)
    return app_id, installation_id, private_key


def _read_runner_app(r: Reader, raw: Any, org: str) -> RunnerApp | None:
    path = "garo:github.runnerApp"
    if not isinstance(raw, Mapping):
        r.fail(path, "expected a mapping {appId, installationId, privateKey, scope, repositories}")
        return None
    app_id, installation_id, private_key = _read_app_key(r, raw, path, RUNNER_APP_KEYS)
    given = raw.get("scope")
    scope: RunnerScope = "organization" if given == "organization" else "repository"
    if given not in ("organization", "repository"):
        r.fail(
            f"{path}.scope",
            f"expected 'repository' (isolated: runners in the department's repository) or 'organization' "
            f"(runner groups; the key can register runners in any group of the org), got {given!r}",
        )
    repositories = r.strings(raw, "repositories", path, required=scope == "repository")
    for i, repo in enumerate(repositories):
        owner = repo.split("/", 1)[0]
        if not REPOSITORY_RE.match(repo):
            r.fail(f"{path}.repositories[{i}]", f"expected 'owner/name', got {repo!r}")
        elif org and owner.lower() != org.lower():
            r.fail(f"{path}.repositories[{i}]", f"{repo!r} is not in the organisation {org!r}")
    if scope == "repository" and len(repositories) > 1:
        r.fail(
            f"{path}.repositories",
            "a repository-scoped department registers its runners in one repository; "
            "give each repository its own department, or use scope: organization",
        )
    shared_with = r.strings(raw, "sharedWith", path)
    for i, name in enumerate(shared_with):
        if not NAME_RE.match(name):
            r.fail(f"{path}.sharedWith[{i}]", f"expected a department name, got {name!r}")
    additional = _read_additional(r, raw.get("additional"), path, app_id)
    # Departments sharing an App split its limit evenly unless they say otherwise.
    jit_per_minute = raw.get("jitPerMinute", JIT_PER_MINUTE_LIMIT // (1 + len(shared_with)))
    if (
        isinstance(jit_per_minute, bool)
        or not isinstance(jit_per_minute, int)
        or not (1 <= jit_per_minute <= JIT_PER_MINUTE_LIMIT)
    ):
        r.fail(f"{path}.jitPerMinute", f"expected an integer from 1 to {JIT_PER_MINUTE_LIMIT}, got {jit_per_minute!r}")
        jit_per_minute = JIT_PER_MINUTE_LIMIT
    if app_id is None:
        return None
    return RunnerApp(
        additional=additional,
        jit_per_minute=jit_per_minute,
        app_id=app_id,
        private_key=private_key,
        installation_id=installation_id,
        scope=scope,
        repositories=repositories,
        shared_with=shared_with,
    )


def _read_additional(r: Reader, raw: Any, path: str, first: int | None) -> tuple[AppKey, ...]:
    """``additional``: more Apps installed with the same scope, each with its own key."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.fail(f"{path}.additional", "expected a list of {appId, installationId, privateKey}")
        return ()
    apps: list[AppKey] = []
    seen = {first}
    for i, item in enumerate(raw):
        where = f"{path}.additional[{i}]"
        if not isinstance(item, Mapping):
            r.fail(where, "expected a mapping {appId, installationId, privateKey}")
            continue
        app_id, installation_id, key = _read_app_key(r, item, where)
        if key is not None and key.kind not in ("secret-manager", "env", "file"):
            # The agent reads an additional key by its reference; the stack grants it access (infra).
            r.fail(f"{where}.privateKey", "expected {secretManager: <name>} (or {env: ...}/{file: ...} in development)")
        if app_id in seen:
            r.fail(f"{where}.appId", f"App {app_id} is listed twice: a second entry adds no budget")
            continue
        seen.add(app_id)
        if app_id is not None:
            apps.append(AppKey(app_id, key, installation_id))
    return tuple(apps)


def _read_webhook_app(r: Reader, raw: Any) -> WebhookApp | None:
    path = "garo:github.webhookApp"
    if not isinstance(raw, Mapping):
        r.fail(path, "expected a mapping {appId, installationId, privateKey}")
        return None
    app_id, installation_id, private_key = _read_app_key(
        r, raw, path, missing_key="is required (the redelivery sweeper signs with it)"
    )
    if app_id is None:
        return None
    return WebhookApp(app_id=app_id, private_key=private_key, installation_id=installation_id)


def apply_repository_scope(r: Reader, github: GitHubSettings, groups: Sequence[RunnerGroup]) -> tuple[RunnerGroup, ...]:
    """Repository runners have no runner groups and take jobs of their own repository only.

    So each group of a repository-scoped department routes that repository's
    jobs only (its ``repositories`` default to it): a job from elsewhere with
    the same labels would otherwise start a VM no runner of ours could serve.
    """
    repo = github.runner_repository
    if repo is None:
        return tuple(groups)
    scoped: list[RunnerGroup] = []
    for i, group in enumerate(groups):
        if group.runner_group_id != 1:
            r.fail(
                f"garo:groups[{i}].runnerGroupId",
                "repository-scoped runners join the repository's default group (id 1); runner groups are org-level",
            )
        if group.repositories and {x.lower() for x in group.repositories} != {repo.lower()}:
            r.fail(
                f"garo:groups[{i}].repositories",
                f"runners registered in {repo!r} take that repository's jobs only",
            )
        scoped.append(replace(group, repositories=(repo,)))
    return tuple(scoped)


def check_shared_credentials(configs: Sequence[StackConfig]) -> list[Issue]:
    """Runner Apps that reach more than one department, and departments holding the hub's App.

    An App's private key signs JWTs for every installation of that App, so two
    departments with the same ``appId`` share one credential whatever their
    installation ids: a thief of either acts for both. That is refused unless
    each names the other in ``sharedWith`` (then it shows in both stacks'
    outputs). A department using the webhook App's id would hold the key that
    can redirect the org's webhook: always refused.
    """
    issues: list[Issue] = []
    webhook_apps = {
        c.github.webhook_app.app_id: c.department for c in configs if c.kind == "hub" and c.github.webhook_app
    }
    departments = [c for c in configs if c.kind == "department" and c.github.runner_app]
    for c in departments:
        app = c.github.runner_app
        assert app is not None
        for app_id in app.app_ids:
            if app_id in webhook_apps:
                issues.append(
                    Issue(
                        "garo:github.runnerApp.appId",
                        f"{c.department!r} uses App {app_id}, the webhook App of stack {webhook_apps[app_id]!r}: "
                        "a department must never hold the App that owns the webhook",
                    )
                )
    undeclared_apps: set[int] = set()  # shared without both sides saying so: that issue comes first
    for i, a in enumerate(departments):
        for b in departments[i + 1 :]:
            app_a, app_b = a.github.runner_app, b.github.runner_app
            assert app_a is not None and app_b is not None
            common = sorted(set(app_a.app_ids) & set(app_b.app_ids))
            if not common or a.department == b.department:
                continue
            undeclared = [x.department for x, y in ((a, b), (b, a)) if y.department not in _shared(x)]
            if undeclared:
                undeclared_apps.update(common)
                issues.append(
                    Issue(
                        "garo:github.runnerApp",
                        f"{a.department!r} and {b.department!r} share runner App {common[0]}: a thief of either "
                        f"acts for both; give each department its own App, or declare it with sharedWith on both "
                        f"sides (missing in {', '.join(repr(d) for d in undeclared)})",
                    )
                )
    issues += _over_budget(departments, undeclared_apps)
    return issues


def _over_budget(departments: Sequence[StackConfig], skip: set[int]) -> list[Issue]:
    """Departments sharing an App must together stay under its JIT limit (``jitPerMinute`` summed)."""
    users: dict[int, list[StackConfig]] = {}
    for c in departments:
        assert c.github.runner_app is not None
        for app_id in c.github.runner_app.app_ids:
            users.setdefault(app_id, []).append(c)
    issues = []
    for app_id, sharing in sorted(users.items()):
        if app_id in skip:
            continue
        names = sorted({c.department for c in sharing})
        total = sum(c.github.runner_app.jit_per_minute for c in sharing if c.github.runner_app)
        if len(names) > 1 and total > JIT_PER_MINUTE_LIMIT:
            issues.append(
                Issue(
                    "garo:github.runnerApp.jitPerMinute",
                    f"{', '.join(repr(n) for n in names)} share runner App {app_id} and may create {total} JIT "
                    f"configs a minute through it together; GitHub allows about {JIT_PER_MINUTE_LIMIT}: lower "
                    "their jitPerMinute so the sum fits, or give them Apps of their own",
                )
            )
    return issues


def _shared(config: StackConfig) -> tuple[str, ...]:
    return config.github.runner_app.shared_with if config.github.runner_app else ()


def check_secret_projects(r: Reader, github: GitHubSettings, project: str | None) -> None:
    """A Secret Manager reference must name a secret in the stack's own project.

    The stack grants its service (scaler or webhook) read access to the secret
    it names: a reference into the hub's or another department's project would
    hand this stack's identity someone else's credential.
    """
    refs = {
        "garo:github.runnerApp.privateKey": github.runner_app.private_key if github.runner_app else None,
        "garo:github.webhookApp.privateKey": github.webhook_app.private_key if github.webhook_app else None,
        "garo:github.webhookSecret": github.webhook_secret,
        "garo:github.token": github.token,
    }
    for i, extra in enumerate(github.runner_app.additional if github.runner_app else ()):
        refs[f"garo:github.runnerApp.additional[{i}].privateKey"] = extra.private_key
    for path, ref in refs.items():
        if ref is None or ref.kind != "secret-manager" or not ref.ref.startswith("projects/"):
            continue
        owner = ref.ref.split("/")[1]
        if owner != project:
            r.fail(
                path,
                f"names a secret in project {owner!r}, not this stack's {project!r}: "
                "a stack may only read credentials kept in its own project",
            )
