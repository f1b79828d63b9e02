"""Battery spec files (TOML): models x prompt sets x probes, capture settings, output directory.

```toml
name = "my-study"
output = "runs/my-study"          # relative to the current directory
seed = 0
threads = 1                       # torch threads per unit (fixed, so serial and Ray runs agree bit for bit)
models = ["tiny-moe", { source = "path/to/model", name = "mine", device_map = "auto", dtype = "bfloat16" },
          { source = "tiny-llama", name = "tiny-llama-q8", quantization = { method = "quanto", bits = 8 } }]
pairs = [["tiny-llama", "tiny-llama-ru"]]   # base, tuned: the checkpoint-diff probes run on each pair

[capture]
dtype = "float32"                 # float32 | bfloat16 | float16
device = "cpu"
store = false                     # keep a capture store per model and prompt set

[prompts.mix]
builtin = "heldout"               # heldout | parallel | short
per_group = 2                     # texts per domain / language
chars = 300                       # texts cut to this many characters (0: whole)

[prompts.mine]
file = "prompts.jsonl"            # .txt, .jsonl or .parquet (relative to the spec file)

[probes.sinks]                    # a registered probe (probes.registry; or: probe = "sinks")
prompts = "mix"
models = ["mine"]                 # only these model labels (default: every model)
eps = 0.3

[probes.diff_outputs]             # a pair probe (probes.diff*): runs on the pairs, labelled TUNED-vs-BASE
```

Every problem is a :class:`SpecError` naming the file, the key and what is wrong, raised before anything
is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from probes.params import ParamError, parse
from workbench.battery.params import SLUG_RULE, PromptParams, RunParams, is_slug, slug
from workbench.errors import InputError, WorkbenchError
from workbench.models.quantize import check_request

BUILTIN_PROMPTS = ("heldout", "parallel", "short")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_SPEC = Path(__file__).resolve().parent / "default.toml"


class SpecError(InputError):
    """A battery spec that cannot be run (unknown key, missing file, wrong type)."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of a battery: ``source`` (zoo name, local dir or hub id) and its label in the tables."""

    source: str
    name: str
    device_map: str | None = None
    trust_remote_code: bool = False
    dtype: str | None = None  # None: the spec's [capture] dtype
    quantization: dict[str, Any] | None = (
        None  # {method, bits}: quantised on load (workbench.models.quantize)
    )


@dataclass(frozen=True)
class PairEntry:
    """Two checkpoints of one architecture that a battery's pair probes compare: ``base`` and ``tuned``,
    labelled ``TUNED-vs-BASE`` in the tables."""

    base: ModelEntry
    tuned: ModelEntry

    @property
    def name(self) -> str:
        return f"{self.tuned.name}-vs-{self.base.name}"


@dataclass(frozen=True)
class PromptSet:
    """A named prompt set: a built-in set or a user file, grouped (by domain, language ...)."""

    name: str
    builtin: str | None = None
    file: str | None = None
    per_group: int = 0
    chars: int = 0


@dataclass(frozen=True)
class ProbeEntry:
    """One probe of a battery: its label, the registry probe, its prompt set and parameters."""

    name: str
    probe: str
    prompts: str
    params: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # model or pair labels it runs on (empty: all)
    pair: bool = False  # a pair probe: runs on the pairs, not the models


@dataclass(frozen=True)
class BatterySpec:
    """A parsed, validated battery spec (see the module docstring for the file format)."""

    name: str
    output: Path
    models: list[ModelEntry]
    prompts: dict[str, PromptSet]
    probes: list[ProbeEntry]
    pairs: list[PairEntry] = field(default_factory=list)
    seed: int = 0
    threads: int = 1
    dtype: str = "float32"
    device: str = "cpu"
    store: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 of what the results depend on: the spec without its output directory, and the content of
        every prompt file (a resumed run must match it)."""
        content = {k: v for k, v in self.raw.items() if k != "output"}
        files = {
            n: hashlib.sha256(Path(p.file).read_bytes()).hexdigest()
            for n, p in self.prompts.items()
            if p.file
        }
        return hashlib.sha256(json.dumps([content, files], sort_keys=True, default=str).encode()).hexdigest()


def check_device(device: str, at: str = "device") -> None:
    """Refuse a device torch cannot parse, or an accelerator this machine does not have.

    Raises:
        SpecError: One line naming ``at``.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SpecError(f"{at}: not a torch device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    count = {"cpu": 1, "cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    if count.get(parsed.type, 0) <= (parsed.index or 0):
        raise SpecError(f"{at}: device {device!r} is not available on this machine")


def _take(
    table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    value = table.get(key, default)
    if value is not None and (
        not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float))
    ):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise SpecError(f"{where}.{key}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise SpecError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _unique(names: list[str], what: str, where: str) -> None:
    """Refuse two names that would share a file (compared case-insensitively, as some file systems do)."""
    seen: dict[str, str] = {}
    for name in names:
        if name.casefold() in seen:
            raise SpecError(f"{where}: {what} {seen[name.casefold()]!r} and {name!r} would share one file")
        seen[name.casefold()] = name


def _check_source(source: str, at: str) -> None:
    """A zoo name, an existing directory or a hub id (``name`` or ``org/name``); anything else is refused
    before anything is written."""
    from workbench.zoo.registry import zoo

    path = Path(source)
    if source in zoo() or path.is_dir() or (path.suffix == ".gguf" and path.is_file()):
        return
    if ".." in source or not HUB_ID.fullmatch(source):
        raise SpecError(f"{at}.source: no zoo model, model directory or hub id {source!r}")


def _models(raw: list[Any], where: str) -> list[ModelEntry]:
    models = []
    for i, item in enumerate(raw):
        at = f"{where}.models[{i}]"
        if isinstance(item, str):
            item = {"source": item}
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            raise SpecError(f"{at}: expected a source string or {{source = ...}}")
        _no_unknown(item, {"source", "name", "device_map", "trust_remote_code", "dtype", "quantization"}, at)
        quantization = _take(item, "quantization", dict, at)
        if quantization is not None:
            try:
                check_request(quantization)
            except WorkbenchError as error:
                raise SpecError(f"{at}.{error}") from None
        dtype = _take(item, "dtype", str, at)
        if dtype is not None and dtype not in DTYPES:
            raise SpecError(f"{at}.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        _check_source(item["source"], at)
        name = _take(item, "name", str, at)
        if name is None:  # the file name in the run directory comes from the source's last part
            name = slug(Path(item["source"]).name)
            if not name:
                raise SpecError(f"{at}: no file name can be made from {item['source']!r}; give name = ...")
        elif not is_slug(name):
            raise SpecError(f"{at}.name: {name!r} is not a safe file name ({SLUG_RULE})")
        models.append(
            ModelEntry(
                item["source"],
                name,
                _take(item, "device_map", str, at),
                bool(_take(item, "trust_remote_code", bool, at, False)),
                dtype,
                quantization,
            )
        )
    _unique([m.name for m in models], "models", f"{where}.models")
    return models


def _pairs(raw: list[Any], where: str) -> list[PairEntry]:
    pairs = []
    for i, item in enumerate(raw):
        at = f"{where}.pairs[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise SpecError(f"{at}: expected [base, tuned] (two sources or {{source = ...}} tables)")
        base, tuned = _models(item, at)
        pairs.append(PairEntry(base, tuned))
    for i, pair in enumerate(pairs):
        if not is_slug(pair.name):
            raise SpecError(f"{where}.pairs[{i}]: label {pair.name!r} is too long; name the models")
    _unique([p.name for p in pairs], "pairs", f"{where}.pairs")
    return pairs


def _prompt_sets(raw: dict[str, Any], base: Path, where: str) -> dict[str, PromptSet]:
    sets = {}
    for name, table in raw.items():
        at = f"{where}.prompts.{name}"
        if not isinstance(table, dict):
            raise SpecError(f"{at}: expected a table")
        _no_unknown(table, {"builtin", "file", "per_group", "chars"}, at)
        builtin, file = _take(table, "builtin", str, at), _take(table, "file", str, at)
        cut = parse(PromptParams, {k: v for k, v in table.items() if k not in ("builtin", "file")}, at)
        if (builtin is None) == (file is None):
            raise SpecError(f"{at}: give exactly one of builtin or file")
        if builtin is not None and builtin not in BUILTIN_PROMPTS:
            raise SpecError(f"{at}.builtin: unknown set {builtin!r} (known: {', '.join(BUILTIN_PROMPTS)})")
        if file is not None:
            path = (base / file).resolve()
            if not path.is_file():
                raise SpecError(f"{at}.file: no such file {path}")
            file = str(path)
        sets[name] = PromptSet(name, builtin, file, cut.per_group, cut.chars)
    return sets


def _probes(
    raw: dict[str, Any],
    prompt_sets: dict[str, PromptSet],
    models: list[ModelEntry],
    pairs: list[PairEntry],
    where: str,
) -> list[ProbeEntry]:
    from probes.registry import registry

    probes = registry()
    entries = []
    for name, table in raw.items():
        at = f"{where}.probes.{name}"
        if not isinstance(table, dict):
            raise SpecError(f"{at}: expected a table")
        if not is_slug(name):
            raise SpecError(f"{at}: {name!r} is not a safe file name ({SLUG_RULE})")
        table = dict(table)
        probe = _take(table, "probe", str, at) or name
        table.pop("probe", None)
        if probe not in probes:
            raise SpecError(f"{at}: unknown probe {probe!r} (known: {', '.join(probes)})")
        unit = probes[probe]
        only = next(iter(prompt_sets)) if len(prompt_sets) == 1 else unit.prompts
        prompts = _take(table, "prompts", str, at) or (unit.prompts if unit.prompts in prompt_sets else only)
        table.pop("prompts", None)
        if prompts not in prompt_sets:
            raise SpecError(
                f"{at}.prompts: no prompt set {prompts!r} (defined: {', '.join(prompt_sets) or 'none'})"
            )
        only_on = _take(table, "models", list, at, [])
        table.pop("models", None)
        pair = unit.needs.pair
        labels = [p.name for p in pairs] if pair else [m.name for m in models]
        what = "pair" if pair else "model"
        if not labels:
            raise SpecError(
                f"{at}: {probe} compares two checkpoints: give pairs = [[base, tuned]]"
                if pair
                else f"{at}: {probe} runs on models: give models = [...]"
            )
        for i, label in enumerate(only_on):
            if label not in labels:
                raise SpecError(
                    f"{at}.models[{i}]: no {what} labelled {label!r} ({what}s: {', '.join(labels)})"
                )
        params = asdict(parse(unit.params, table, at))
        entries.append(ProbeEntry(name, probe, prompts, params, tuple(only_on), pair))
    _unique([e.name for e in entries], "probe labels", f"{where}.probes")
    return entries


def load_spec(path: str | Path, output: str | Path | None = None) -> BatterySpec:
    """Read and validate a battery spec file.

    Args:
        path: The TOML file.
        output: Output directory overriding the spec's ``output``.

    Raises:
        SpecError: One line naming the file, the key and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no battery spec at {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    try:
        return _parse(raw, path, output)
    except (SpecError, ParamError) as error:
        raise SpecError(f"{path.name}: {str(error).lstrip('.')}") from None


def _parse(raw: dict[str, Any], path: Path, output: str | Path | None = None) -> BatterySpec:
    where = ""
    known = {"name", "output", "seed", "threads", "models", "pairs", "capture", "prompts", "probes"}
    _no_unknown(raw, known, where)
    capture = _take(raw, "capture", dict, where, {})
    _no_unknown(capture, {"dtype", "device", "store"}, f"{where}.capture")
    dtype = _take(capture, "dtype", str, f"{where}.capture", "float32")
    if dtype not in DTYPES:
        raise SpecError(f"{where}.capture.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    device = _take(capture, "device", str, f"{where}.capture", "cpu")
    check_device(device, f"{where}.capture.device")
    numbers = parse(RunParams, {k: raw[k] for k in ("seed", "threads") if k in raw}, where)
    models = _models(_take(raw, "models", list, where, []), where)
    pairs = _pairs(_take(raw, "pairs", list, where, []), where)
    prompt_sets = _prompt_sets(_take(raw, "prompts", dict, where, {}), path.parent, where)
    probes = _probes(_take(raw, "probes", dict, where, {}), prompt_sets, models, pairs, where)
    if not (models or pairs) or not probes:
        raise SpecError("a battery needs at least one model (or pair) and one probe")
    name = _take(raw, "name", str, where, path.stem)
    out = _take(raw, "output", str, where)
    if output is None and out is None and not is_slug(name):  # the name becomes runs/NAME
        raise SpecError(f"{where}.name: {name!r} is not a safe file name ({SLUG_RULE}); give output = ...")
    out = Path(output if output is not None else out or f"runs/{name}")
    return BatterySpec(
        name=name,
        output=out,
        models=models,
        prompts=prompt_sets,
        probes=probes,
        pairs=pairs,
        seed=numbers.seed,
        threads=numbers.threads,
        dtype=dtype,
        device=device,
        store=bool(_take(capture, "store", bool, f"{where}.capture", False)),
        raw=raw,
    )
