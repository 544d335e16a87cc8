"""`--set` parsing, the Pareto front, --target-p95's choice and the stack-file diff."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from scaler.simulate.whatif import (
    SetError,
    cheapest_meeting,
    pareto,
    parse_duration,
    parse_set,
    stack_diff,
    variants,
)
from tests.simkit import STACK_TEXT, stack_raw

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "Pulumi.payments.yaml"


def test_a_set_option_resolves_group_names_and_reads_yaml_values() -> None:
    opt = parse_set("garo:groups[small].warmPool.size=0,1,2,4", stack_raw())
    assert opt.path == ("garo:groups", 0, "warmPool", "size") and opt.values == (0, 1, 2, 4)
    sched = parse_set("garo:groups[0].warmPool.schedule=Mon-Fri 07:00-19:00 UTC", stack_raw())
    assert sched.values == ("Mon-Fri 07:00-19:00 UTC",)
    assert parse_set("garo:groups[1].spot=true,false", stack_raw()).values == (True, False)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("garo:groups[0].max", "expected KEY=VALUE"),
        ("garo:groups[0].max=", "no values after '=' for garo:groups[0].max"),
        ("garo:groups[0].max=1,,2", "an empty value"),
        ("garo:groups[0].max=2,2", "a value is given twice"),
        ("groups[0].max=2", "must start with a garo: setting"),
        ("garo:groups[0]..max=2", "cannot read the key path at '..max'"),
        ("garo:groups[7].max=2", "garo:groups[7]: the list has 2 entries"),
        ("garo:groups[gpu].max=2", "garo:groups has no entry named 'gpu'"),
        ("garo:groups[0].labels.x=2", "garo:groups[0].labels is not a mapping"),
        ("garo:groups[0].max=[1]", "values are single numbers, booleans or strings"),
    ],
)
def test_bad_set_options_name_the_option_and_the_key_path(option: str, message: str) -> None:
    with pytest.raises(SetError) as caught:
        parse_set(option, stack_raw())
    assert message in str(caught.value)
    assert option in str(caught.value)


def test_every_combination_is_validated_as_a_stack_with_its_key_path() -> None:
    raw = stack_raw()
    options = [parse_set("garo:groups[0].warmPool.size=1,30", raw), parse_set("garo:groups[0].max=20", raw)]
    with pytest.raises(SetError) as caught:
        variants(raw, options, "Pulumi.eng.yaml")
    assert "garo:groups[0].warmPool.size" in str(caught.value)
    assert "warm pool (30) is larger than max (20)" in str(caught.value)
    unknown = [parse_set("garo:groups[0].warmPool.sise=1", raw)]
    with pytest.raises(SetError, match=r"garo:groups\[0\]\.warmPool\.sise"):
        variants(raw, unknown, "Pulumi.eng.yaml")
    assert raw == stack_raw()  # nothing was changed


def test_options_multiply_into_a_cartesian_product() -> None:
    raw = stack_raw()
    options = [parse_set("garo:groups[0].warmPool.size=0,1,2", raw), parse_set("garo:groups[1].max=2,4", raw)]
    found = variants(raw, options, "s")
    assert len(found) == 6
    assert {(v.config.groups[0].warm_pool.size, v.config.groups[1].max) for v in found} == {
        (w, m) for w in (0, 1, 2) for m in (2, 4)
    }


def test_pareto_front_keeps_only_configurations_nothing_beats_on_both() -> None:
    points = [(10.0, 300.0), (12.0, 60.0), (11.0, 400.0), (20.0, 60.0), (25.0, 10.0), (9.0, 900.0)]
    assert pareto(points) == [5, 0, 1, 4]  # by cost: 9/900, 10/300, 12/60, 25/10; 11/400 and 20/60 are beaten


def test_target_picks_the_cheapest_configuration_meeting_it() -> None:
    points = [(10.0, 300.0), (12.0, 60.0), (20.0, 40.0), (25.0, 10.0)]
    assert cheapest_meeting(points, 45.0) == 2
    assert cheapest_meeting(points, 60.0) == 1
    assert cheapest_meeting(points, 5.0) is None
    assert parse_duration("45s") == 45 and parse_duration("2m") == 120 and parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match="45 seconds"):
        parse_duration("45 seconds")


def _apply_patch(tmp_path: Path, name: str, text: str, diff: str) -> str:
    (tmp_path / name).write_text(text)
    (tmp_path / "change.diff").write_text(diff)
    subprocess.run(["patch", "-p1", "-s", "-i", "change.diff"], cwd=tmp_path, check=True)
    return (tmp_path / name).read_text()


def test_the_diff_changes_only_the_chosen_lines_and_applies_as_a_patch(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    raw = yaml.safe_load(text)["config"]
    options = [
        parse_set("garo:groups[default].warmPool.size=4", raw),  # an existing value
        parse_set("garo:groups[default].warmPool.offHoursSize=1", raw),  # a new key in a block mapping
        parse_set("garo:groups[large].warmPool.size=1", raw),  # a new mapping
    ]
    (variant,) = variants(raw, options, EXAMPLE.name)
    diff = stack_diff(text, variant.changes, EXAMPLE.name)
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert removed == ["-        size: 2"]
    assert sorted(added) == sorted(["+        size: 4", "+        offHoursSize: 1", "+      warmPool: {size: 1}"])
    patched = _apply_patch(tmp_path, EXAMPLE.name, text, diff)
    assert yaml.safe_load(patched)["config"] == variant.raw
    assert '# Department "payments"' in patched  # comments stay


def test_the_diff_edits_flow_mappings_in_place(tmp_path: Path) -> None:
    raw = yaml.safe_load(STACK_TEXT)["config"]
    options = [parse_set("garo:groups[large].standbyPool.size=2", raw), parse_set("garo:groups[0].max=30", raw)]
    (variant,) = variants(raw, options, "Pulumi.eng.yaml")
    diff = stack_diff(STACK_TEXT, variant.changes, "Pulumi.eng.yaml")
    assert "+      standbyPool: {size: 2}" in diff and "+      max: 30" in diff
    assert yaml.safe_load(_apply_patch(tmp_path, "Pulumi.eng.yaml", STACK_TEXT, diff))["config"] == variant.raw
