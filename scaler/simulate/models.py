"""The latency models and price table `garo simulate` runs on: shipped data, overridable from a file.

`data/latency.yaml` and `data/prices.yaml` ship with the package, dated, each
figure with its sources and how strong its evidence is (measured, claimed,
assumed). A team that has its own numbers overrides any part with a file of
the same shape: it is merged key by key over the shipped one, so one figure
can change alone, and the result is checked as a whole. Every problem is
reported with its key path; a bad override changes nothing.

An overridden figure is marked ``evidence: override`` with the file as its
source (unless the override names its own), so a report can say where each
number came from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

LATENCY_SCHEMA = "garo.latency.v1"
PRICES_SCHEMA = "garo.prices.v1"
PHASES = ("create", "boot", "resume_suspended", "resume_stopped", "delete")
RATES = ("capacity_error_rate", "spot_preemption_per_hour")
EVIDENCE = frozenset({"measured", "claimed", "assumed", "override"})
Z95 = 1.6448536269514722  # the standard normal's 95th percentile
T = TypeVar("T")


class ModelError(ValueError):
    """The models or prices are not valid; lists every problem with its key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Distribution:
    """Seconds, lognormal by median and p95 (or fixed), optionally capped."""

    kind: str
    median: float
    p95: float
    cap: float | None
    evidence: str
    sources: tuple[str, ...]
    note: str

    @property
    def sigma(self) -> float:
        return math.log(self.p95 / self.median) / Z95 if self.kind == "lognormal" else 0.0

    def sample(self, rng: random.Random) -> float:
        value = self.median if self.kind == "fixed" else rng.lognormvariate(math.log(self.median), self.sigma)
        return min(value, self.cap) if self.cap is not None else value

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q < 1), for reports and sanity checks."""
        if self.kind == "fixed":
            return self.median
        value = math.exp(math.log(self.median) + self.sigma * _normal_quantile(q))
        return min(value, self.cap) if self.cap is not None else value


@dataclass(frozen=True)
class Rate:
    value: float
    evidence: str
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class CloudModel:
    name: str
    create: Distribution
    boot: Distribution
    resume_suspended: Distribution
    resume_stopped: Distribution
    delete: Distribution
    capacity_error_rate: Rate
    spot_preemption_per_hour: Rate


@dataclass(frozen=True)
class LatencyModels:
    dated: str
    runner_startup: Distribution
    clouds: Mapping[str, CloudModel]

    def cloud(self, name: str) -> CloudModel:
        if name not in self.clouds:
            raise KeyError(f"no latency model for cloud {name!r} (have: {', '.join(sorted(self.clouds))})")
        return self.clouds[name]


@dataclass(frozen=True)
class PriceTable:
    dated: str
    currency: str
    prices: Mapping[tuple[str, str, str], tuple[float, float | None]]  # (cloud, region, type) -> (on-demand, spot)
    sources: Mapping[str, str]

    def hourly(self, cloud: str, region: str, machine_type: str, spot: bool) -> float:
        key = (cloud, region, machine_type)
        if key not in self.prices:
            known = sorted(f"{t} in {r}" for c, r, t in self.prices if c == cloud)
            raise KeyError(f"no {cloud} price for {machine_type} in {region}; known: {', '.join(known) or 'none'}")
        on_demand, spot_price = self.prices[key]
        if not spot:
            return on_demand
        if spot_price is None:
            raise KeyError(f"no spot price for {cloud} {machine_type} in {region}; give one in a --prices file")
        return spot_price


# ---------------------------------------------------------------------------- loading


def _shipped(name: str) -> dict[str, Any]:
    text = resources.files("scaler.simulate").joinpath("data", name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict), name
    return data


def _override(base: dict[str, Any], path: Path, mark: bool) -> dict[str, Any]:
    try:
        override = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(str(path), [f"cannot read it: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ModelError(str(path), [f"not YAML: {exc}"]) from None
    if not isinstance(override, dict):
        raise ModelError(str(path), ["expected a mapping at the top level"])
    merged: dict[str, Any] = _merge(base, override, str(path), mark)
    return merged


def _merge(base: Any, override: Any, source: str, mark: bool) -> Any:
    """`override` over `base`, key by key; a changed figure (a mapping with a value) is marked as overridden."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base.get(key), value, source, mark)
        figure = merged[key]
        if mark and isinstance(value, dict) and isinstance(figure, dict) and "evidence" in figure:
            if "evidence" not in value:
                merged[key] = {**figure, "evidence": "override", "sources": [source], "note": f"from {source}"}
    return merged


def load_latency(override: Path | None = None) -> LatencyModels:
    return _load("latency.yaml", _latency, override, mark=True)


def load_prices(override: Path | None = None) -> PriceTable:
    return _load("prices.yaml", _prices, override, mark=False)


def _load(name: str, parse: Callable[[dict[str, Any], list[str]], T | None], override: Path | None, mark: bool) -> T:
    """A shipped data file, with `override` merged over it; ModelError lists every problem, naming the file."""
    data = _shipped(name)
    source = f"scaler/simulate/data/{name}"
    if override is not None:
        data, source = _override(data, override, mark=mark), str(override)
    problems: list[str] = []
    parsed = parse(data, problems)
    if problems or parsed is None:
        raise ModelError(source, problems)
    return parsed


def _keys(obj: Any, path: str, required: set[str], optional: set[str], problems: list[str]) -> bool:
    if not isinstance(obj, dict):
        problems.append(f"{path}: expected a mapping, got {type(obj).__name__}")
        return False
    problems.extend(f"{path}.{k}: unknown key" for k in sorted(set(obj) - required - optional, key=str))
    problems.extend(f"{path}.{k}: missing" for k in sorted(required - set(obj)))
    return not required - set(obj)


def _number(obj: dict[str, Any], key: str, path: str, problems: list[str], low: float, high: float) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        problems.append(f"{path}.{key}: expected a number in [{low:g}, {high:g}], got {value!r}")
        return math.nan
    return float(value)


def _provenance(obj: dict[str, Any], path: str, problems: list[str]) -> tuple[str, tuple[str, ...], str]:
    evidence, sources, note = obj.get("evidence"), obj.get("sources"), obj.get("note", "")
    if evidence not in EVIDENCE:
        problems.append(f"{path}.evidence: expected one of {', '.join(sorted(EVIDENCE))}, got {evidence!r}")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        problems.append(f"{path}.sources: expected a list of strings")
        sources = []
    elif evidence in ("measured", "claimed") and not sources:
        problems.append(f"{path}.sources: {evidence} figures must name their sources")
    return str(evidence), tuple(sources), str(note)


def _distribution(obj: Any, path: str, problems: list[str]) -> Distribution | None:
    fields = {"distribution", "median", "evidence", "sources"}
    if not _keys(obj, path, fields, {"p95", "cap", "note"}, problems):
        return None
    kind = obj["distribution"]
    if kind not in ("lognormal", "fixed"):
        problems.append(f"{path}.distribution: expected lognormal or fixed, got {kind!r}")
        return None
    median = _number(obj, "median", path, problems, 0.0, 86400.0)
    p95 = _number(obj, "p95", path, problems, 0.0, 86400.0) if kind == "lognormal" else median
    cap = _number(obj, "cap", path, problems, 0.0, 86400.0) if obj.get("cap") is not None else None
    if kind == "lognormal" and median == 0:
        problems.append(f"{path}.median: a lognormal needs a median above 0 (use distribution: fixed for 0)")
    if kind == "lognormal" and median > 0 and not p95 > median:
        problems.append(f"{path}.p95: must be above the median ({median:g}), got {p95:g}")
    if cap is not None and not cap >= p95:
        problems.append(f"{path}.cap: must be at least the p95 ({p95:g}), got {cap:g}")
    evidence, sources, note = _provenance(obj, path, problems)
    return Distribution(kind, median, p95, cap, evidence, sources, note)


def _rate(obj: Any, path: str, problems: list[str]) -> Rate | None:
    if not _keys(obj, path, {"value", "evidence", "sources"}, {"note"}, problems):
        return None
    value = _number(obj, "value", path, problems, 0.0, 1.0)
    evidence, sources, note = _provenance(obj, path, problems)
    return Rate(value, evidence, sources, note)


def _latency(data: dict[str, Any], problems: list[str]) -> LatencyModels | None:
    if not _keys(data, "latency", {"schema", "dated", "runner_startup", "clouds"}, set(), problems):
        return None
    if data["schema"] != LATENCY_SCHEMA:
        problems.append(f"schema: expected {LATENCY_SCHEMA}, got {data['schema']!r}")
    startup = _distribution(data["runner_startup"], "runner_startup", problems)
    clouds: dict[str, CloudModel] = {}
    if not isinstance(data["clouds"], dict) or not data["clouds"]:
        problems.append("clouds: expected a mapping of cloud names to models")
        return None
    for name, model in data["clouds"].items():
        path = f"clouds.{name}"
        if not _keys(model, path, set(PHASES) | set(RATES), set(), problems) and not isinstance(model, dict):
            continue
        phases = {p: _distribution(model[p], f"{path}.{p}", problems) for p in PHASES if p in model}
        rates = {r: _rate(model[r], f"{path}.{r}", problems) for r in RATES if r in model}
        complete = len(phases) + len(rates) == len(PHASES) + len(RATES)
        if complete and all(v is not None for v in (*phases.values(), *rates.values())):
            clouds[str(name)] = CloudModel(str(name), **phases, **rates)  # type: ignore[arg-type]
    if startup is None:
        return None
    return LatencyModels(str(data["dated"]), startup, clouds)


def _prices(data: dict[str, Any], problems: list[str]) -> PriceTable | None:
    if not _keys(data, "prices", {"schema", "dated", "currency", "clouds"}, set(), problems):
        return None
    if data["schema"] != PRICES_SCHEMA:
        problems.append(f"schema: expected {PRICES_SCHEMA}, got {data['schema']!r}")
    prices: dict[tuple[str, str, str], tuple[float, float | None]] = {}
    sources: dict[str, str] = {}
    for cloud, entry in (data["clouds"] or {}).items():
        path = f"clouds.{cloud}"
        if not _keys(entry, path, {"source", "regions"}, {"note"}, problems):
            continue
        if not isinstance(entry["source"], str) or not entry["source"]:
            problems.append(f"{path}.source: name where the prices come from")
        sources[str(cloud)] = str(entry["source"])
        for region, types in (entry["regions"] or {}).items():
            for machine_type, price in (types or {}).items():
                where = f"{path}.regions.{region}.{machine_type}"
                if not _keys(price, where, {"on_demand", "spot"}, set(), problems):
                    continue
                on_demand = _number(price, "on_demand", where, problems, 0.0, 1000.0)
                spot = None if price["spot"] is None else _number(price, "spot", where, problems, 0.0, 1000.0)
                if spot is not None and spot > on_demand:
                    problems.append(f"{where}.spot: {spot:g} is above the on-demand price {on_demand:g}")
                prices[(str(cloud), str(region), str(machine_type))] = (on_demand, spot)
    return PriceTable(str(data["dated"]), str(data["currency"]), prices, sources)


def _normal_quantile(q: float) -> float:
    """The standard normal's q-quantile (statistics.NormalDist, imported lazily)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)
