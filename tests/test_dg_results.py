"""DG results table: math on known inputs, outputs, and the demo's table (workflow)."""

import json
import math

import pandas as pd
import pytest

from mice2machines.dg import results as R

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def _metrics(tmp_path, arch, variant, seed, accs, source="mnist"):
    d = tmp_path / arch / variant / source / f"seed{seed}"
    d.mkdir(parents=True)
    targets = {t: {"acc": a, "n": 100, "split": "all"} for t, a in accs.items()}
    m = {
        "arch": arch,
        "variant": variant,
        "source": source,
        "seed": seed,
        "val_acc": 0.9,
        "selected_epoch": 2,
        "targets": targets,
        "config": {"neurn": {"kernel_size": 5, "max_over": "image", "padding": "reflect"}},
    }
    (d / "metrics.json").write_text(json.dumps(m))
    return d / "metrics.json"


@pytest.fixture
def known(tmp_path):
    """baseline svhn [0.5, 0.6, 0.7], neurn [0.6, 0.8, 0.7] -> differences [0.1, 0.2, 0.0]."""
    paths = []
    for seed, b, n in [(0, 0.5, 0.6), (1, 0.6, 0.8), (2, 0.7, 0.7)]:
        paths.append(_metrics(tmp_path, "small_cnn", "baseline", seed, {"svhn": b, "mnist": 0.99}))
        paths.append(_metrics(tmp_path, "small_cnn", "neurn", seed, {"svhn": n, "mnist": 0.98}))
    return paths


def test_mean_std_and_paired_t_interval(known):
    s = R.summarize(R.collect(known), 0.95).set_index(["target", "variant"])
    base, neurn, diff = (s.loc[("svhn", v)] for v in ("baseline", "neurn", R.DIFF))
    assert (
        base["n"] == 3 and base["mean"] == pytest.approx(0.6) and base["std"] == pytest.approx(0.1)
    )
    assert neurn["mean"] == pytest.approx(0.7) and neurn["std"] == pytest.approx(0.1)
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(0.1)
    assert diff["std"] == pytest.approx(0.1)
    assert diff["ci_low"] == pytest.approx(0.1 - half) and diff["ci_high"] == pytest.approx(
        0.1 + half
    )
    assert s.loc[("mnist", R.DIFF), "mean"] == pytest.approx(-0.01)


def test_pairing_uses_only_seeds_run_in_both_variants(tmp_path):
    paths = [
        _metrics(tmp_path, "vit", "baseline", s, {"usps": a})
        for s, a in [(0, 0.2), (1, 0.4), (2, 0.9)]
    ]
    paths += [_metrics(tmp_path, "vit", "neurn", s, {"usps": a}) for s, a in [(0, 0.3), (1, 0.4)]]
    s = R.summarize(R.collect(paths)).set_index("variant")
    assert s.loc[R.DIFF, "n"] == 2 and s.loc[R.DIFF, "mean"] == pytest.approx(0.05)
    lo = 0.05 - 12.706204736174698 * (0.1 / math.sqrt(2)) / math.sqrt(2)
    assert s.loc[R.DIFF, "ci_low"] == pytest.approx(lo)


def test_single_seed_has_no_interval(tmp_path):
    paths = [
        _metrics(tmp_path, "small_cnn", v, 0, {"usps": a})
        for v, a in [("baseline", 0.5), ("neurn", 0.6)]
    ]
    s = R.summarize(R.collect(paths))
    d = s[s.variant == R.DIFF].iloc[0]
    assert d["mean"] == pytest.approx(0.1) and math.isnan(d["ci_low"]) and math.isnan(d["std"])
    assert "+10.0 [n/a, n/a]" in R.to_markdown(R.wide_table(s), s)


def test_outputs_markdown_csv_plot_manifest(known, tmp_path):
    from mice2machines.models.zoo import read_zoo

    out = tmp_path / "out"
    R.write_results(known, out / "t.csv", out / "t.md", out / "a.png", out / "models.tsv")
    md = (out / "t.md").read_text()
    half = 100 * T_975_2 * 0.1 / math.sqrt(3)
    assert f"+10.0 [{10 - half:+.1f}, {10 + half:+.1f}]" in md
    assert "| small_cnn | mnist | baseline | 99.0 ± 0.0 | 60.0 ± 10.0 |" in md
    assert "mnist (source, held out)" in md
    csv = pd.read_csv(out / "t.csv")
    assert set(csv.variant) == {"baseline", "neurn", R.DIFF} and len(csv) == 6
    assert (out / "a.png").read_bytes()[:4] == b"\x89PNG"
    specs = read_zoo(out / "models.tsv")  # the model zoo reads the manifest as it is
    assert len(specs) == 6
    neurn = [s for s in specs if "neurn" in s.name]
    assert neurn[0].neurn_config == {
        "kernel_size": 5,
        "max_over": "image",
        "padding": "reflect",
    }
    assert all(s.weights.startswith("ckpt:") and s.weights.endswith("best.pt") for s in specs)


def test_duplicate_jobs_are_rejected(tmp_path):
    p = _metrics(tmp_path, "small_cnn", "baseline", 0, {"usps": 0.5})
    with pytest.raises(ValueError, match="duplicate"):
        R.collect([p, p])


@pytest.mark.workflow
def test_demo_dg_table(demo_run):
    """The demo trains baseline and NeuRN small CNNs on MNIST and tables every offline target."""
    import yaml

    from mice2machines.dg import domains, networks

    dg = demo_run / "results" / "dg"
    from mice2machines.settings import section

    raw = yaml.safe_load((demo_run / "config" / "config.yaml").read_text()).get("dg")
    cfg = section("dg", raw)  # the config holds only non-defaults
    csv = pd.read_csv(dg / "table.csv")
    assert set(csv.target) == set(domains.OFFLINE) == set(cfg["targets"])
    assert set(csv.variant) == {"baseline", "neurn", R.DIFF} and set(csv.arch) == {"small_cnn"}
    assert (csv[csv.variant != R.DIFF].n == len(cfg["seeds"])).all()
    src = csv[(csv.target == "mnist") & (csv.variant == "baseline")]
    assert src["mean"].iloc[0] > 0.5  # learned the source
    assert (dg / "accuracy.png").stat().st_size > 0 and (dg / "table.md").exists()
    for row in pd.read_csv(dg / "models.tsv", sep="\t").itertuples():
        path = row.weights.split(":", 1)[1]
        model = networks.load_checkpoint(path if path.startswith("/") else demo_run / path)
        assert model.arch == "small_cnn"
    logs = list((demo_run / "logs" / "dg" / "train").glob("*.log"))
    assert len(logs) == 2 * len(cfg["seeds"])
    assert "epoch 1/" in logs[0].read_text()
