"""Which names a department owns: parsed against its own groups, never by prefix alone."""

from __future__ import annotations

import pytest

from scaler import naming


def test_a_department_does_not_own_the_names_of_one_that_extends_it() -> None:
    """`data` (group eng-gpu) and `data-eng` (group gpu) both make garo-data-eng-gpu-<job>."""
    foreign = naming.instance_name("data-eng", "gpu", 5)
    assert not naming.is_ours("data", foreign, ["linux"])
    assert naming.group_of("data", ["linux"], foreign) is None
    assert naming.is_ours("data-eng", foreign, ["gpu"])
    assert naming.parse_name("data-eng", ["gpu"], foreign) == naming.ParsedName("gpu", job_id=5)
    # Runners that merely share the prefix are not ours either.
    for name in ("garo-data-linux", "garo-data-linux-", "garo-data-linux-5-x", "garo-data-linux-05", "garo-data-x-1"):
        assert not naming.is_ours("data", name, ["linux"]), name


def test_every_name_the_agent_makes_parses_back() -> None:
    groups = ["a", "a-b", "b" * 20]
    for group in groups:
        for job, generation in ((1, 0), (naming.MAX_JOB_ID, 0), (42, 7), (42, 99)):
            name = naming.instance_name("d" * 20, group, job, generation)
            assert naming.parse_name("d" * 20, groups, name) == naming.ParsedName(group, job, generation), name
        warm = naming.warm_name("d" * 20, group, 9999)
        assert naming.parse_name("d" * 20, groups, warm) == naming.ParsedName(group, warm_slot=9999)


def test_a_name_two_groups_could_have_made_belongs_to_neither() -> None:
    """Group `a`'s warm slot 5 and group `a-w`'s job 5 are both garo-d-a-w-5: never act on it."""
    name = naming.warm_name("d", "a", 5)
    assert name == naming.instance_name("d", "a-w", 5)
    assert naming.parse_name("d", ["a", "a-w"], name) is None
    assert naming.parse_name("d", ["a"], name) == naming.ParsedName("a", warm_slot=5)


@pytest.mark.parametrize(
    ("job_id", "valid"),
    [
        (1, True),
        (2**63 - 1, True),
        ("9223372036854775807", True),
        (2**63, False),
        (10**20, False),
        ("9223372036854775808", False),
        (0, False),
        (-1, False),
        (True, False),
        ("1e3", False),
        ("\u00b2", False),  # str.isdigit() says True for a superscript two
        (1.0, False),
        (None, False),
    ],
)
def test_valid_job_id_is_what_github_can_send(job_id: object, valid: bool) -> None:
    assert naming.valid_job_id(job_id) is valid
    if valid:
        assert isinstance(job_id, int | str)
        assert naming.job_of("d", "g", naming.instance_name("d", "g", job_id)) == int(job_id)
    elif isinstance(job_id, int | str):
        with pytest.raises(ValueError):
            naming.instance_name("d", "g", job_id)
