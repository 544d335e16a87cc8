"""The shipped latency models and price table: dated, sourced, sampled as stated; overrides validated."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from scaler.simulate.models import ModelError, load_latency, load_prices


def test_the_shipped_models_load_dated_and_every_measured_or_claimed_figure_names_a_source() -> None:
    models = load_latency()
    assert models.dated == "2026-11-30"
    assert set(models.clouds) == {"gce", "ec2"}
    for cloud in models.clouds.values():
        for phase in (cloud.create, cloud.boot, cloud.resume_suspended, cloud.resume_stopped, cloud.delete):
            assert phase.evidence in {"measured", "claimed", "assumed"}
            assert phase.sources or phase.evidence == "assumed"
    # GCE's resume from suspended is quoted at 8-10 s: the model's median says so.
    assert 8 <= models.cloud("gce").resume_suspended.median <= 10


def test_a_lognormal_is_sampled_with_the_median_and_p95_it_was_given() -> None:
    create = load_latency().cloud("ec2").create
    rng = random.Random(3)
    draws = sorted(create.sample(rng) for _ in range(20000))
    assert statistics.median(draws) == pytest.approx(create.median, rel=0.05)
    assert draws[int(0.95 * len(draws))] == pytest.approx(create.p95, rel=0.07)
    startup = load_latency().runner_startup  # the long tail: capped where the source saw it end
    assert max(startup.sample(rng) for _ in range(20000)) <= startup.cap if startup.cap else True
    assert startup.quantile(0.99) > 2 * startup.quantile(0.95) > 4 * startup.median


def test_prices_by_type_region_and_spot_and_a_missing_spot_price_is_an_error() -> None:
    prices = load_prices()
    assert prices.hourly("gce", "us-central1", "e2-standard-4", spot=False) == 0.13402
    assert prices.hourly("gce", "europe-west1", "n2-standard-16", spot=True) == 0.18755
    with pytest.raises(KeyError, match="no spot price for ec2 m7i.xlarge"):
        prices.hourly("ec2", "us-east-1", "m7i.xlarge", spot=True)
    with pytest.raises(KeyError, match="no gce price for e2-standard-2 in us-central1; known:"):
        prices.hourly("gce", "us-central1", "e2-standard-2", spot=False)


def test_an_override_changes_one_figure_and_marks_it(tmp_path: Path) -> None:
    override = tmp_path / "ours.yaml"
    override.write_text("clouds:\n  gce:\n    create: {median: 6.5, p95: 12}\n", encoding="utf-8")
    models = load_latency(override)
    create = models.cloud("gce").create
    assert (create.median, create.p95, create.evidence, create.sources) == (6.5, 12, "override", (str(override),))
    assert models.cloud("gce").boot == load_latency().cloud("gce").boot  # the rest is the shipped model


def test_a_price_override_adds_a_spot_price(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "clouds:\n  ec2:\n    regions:\n      us-east-1:\n        m7i.xlarge: {on_demand: 0.2016, spot: 0.09}\n"
    )
    assert load_prices(override).hourly("ec2", "us-east-1", "m7i.xlarge", spot=True) == 0.09


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "clouds:\n  gce:\n    create: {median: 20, p95: 10}\n",
            ["clouds.gce.create.p95: must be above the median (20)"],
        ),
        ("clouds:\n  gce:\n    boot: {median: -1}\n", ["clouds.gce.boot.median: expected a number in [0, 86400]"]),
        ("clouds:\n  gce:\n    create: {speed: 3}\n", ["clouds.gce.create.speed: unknown key"]),
        (
            "clouds:\n  ec2:\n    capacity_error_rate: {value: 1.5}\n",
            ["clouds.ec2.capacity_error_rate.value: expected a number in [0, 1]"],
        ),
        (
            "clouds:\n  gce:\n    delete: {evidence: measured, sources: []}\n",
            ["clouds.gce.delete.sources: measured figures must name their sources"],
        ),
        ("clouds:\n  azure: {create: {}}\n", ["clouds.azure.boot: missing", "clouds.azure.create.median: missing"]),
        ("- a list\n", ["expected a mapping at the top level"]),
        ("clouds: {gce: [\n", ["not YAML"]),
    ],
)
def test_a_bad_override_is_refused_with_every_problem_and_its_key_path(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError) as caught:
        load_latency(override)
    assert str(caught.value).startswith(str(override))
    for problem in problems:
        assert problem in str(caught.value)


def test_a_bad_price_override_is_refused(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "clouds:\n  gce:\n    regions:\n      us-central1:\n        e2-standard-4: {on_demand: 0.1, spot: 0.2}\n"
    )
    with pytest.raises(ModelError, match="e2-standard-4.spot: 0.2 is above the on-demand price 0.1"):
        load_prices(override)
    with pytest.raises(ModelError, match="cannot read it"):
        load_prices(tmp_path / "missing.yaml")
