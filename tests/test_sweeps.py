import json

import pytest
import yaml
from conftest import REPO

from lasegm import LasegmError
from lasegm.cli import build_parser, main
from lasegm.sweep import load_sweep

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def test_there_is_a_sweep_per_question():
    assert {p.stem for p in SWEEPS} >= {"lr", "encoder", "unet_modifications", "architectures"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_yaml_is_valid_for_wandb_and_drives_lasegm(path):
    import sweeps

    from lasegm.sweep import is_cross_validated

    config = load_sweep(path)  # W&B's sweep schema + every parameter is a train flag
    command = "cv" if is_cross_validated(config) else "train"
    metric = "cv/oof_dice_3d" if command == "cv" else "val/dice_3d"  # the out-of-fold mean for a CV sweep
    assert config["metric"] == {"name": metric, "goal": "maximize"}
    assert config["command"][-3:] == ["lasegm", command, "${args}"]
    # what `wandb agent` would run: --key=value for one proposed trial
    proposal = sweeps.next_run(config, [], validate=True)
    argv = [command, *(f"--{k}={v['value']}" for k, v in proposal.config.items())]
    args = build_parser().parse_args(argv)
    for k, v in proposal.config.items():
        assert str(getattr(args, k)) == str(v["value"]) or getattr(args, k) == pytest.approx(float(v["value"]))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(method="grd"), "method: 'grd' is not one of"),
    (lambda c: c["metric"].update(goal="maximise"), "metric.goal: 'maximise' is not one of"),
    (lambda c: c["parameters"].update(lrr={"values": [1]}), "parameters.lrr: not a `lasegm train` flag"),
    (lambda c: c["parameters"]["lr"].update(min=1.0), "lr: min 1.0 is not less than max"),
    (lambda c: c.pop("metric"), "metric: missing"),
])
def test_malformed_sweep_names_the_key(edit, message, tmp_path):
    config = yaml.safe_load((REPO / "sweeps" / "lr.yaml").read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(LasegmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep(path)


def test_broken_yaml_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters: [unclosed\n")
    assert main(["sweep", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.slow
def test_local_sweep_runs_trials_and_ranks_them(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({
        "method": "random", "metric": {"name": "val/dice_3d", "goal": "maximize"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
                       "decoder_width": {"values": [16, 32]}},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
    }))
    code = main(["--quiet", "sweep", str(sweep), "--count", "3", "--out", "sw", "--set", f"data={dataset}",
                 f"split_file={split}", "arch=unet", "image_size=32", "fov_mm=80", "epochs=2", "samples_per_epoch=32",
                 "batch_size=8"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3 trials ranked by val/dice_3d" in out
    ranking = json.loads((tmp_path / "sw" / "tiny" / "ranking.json").read_text())
    scores = [t["val/dice_3d"] for t in ranking["trials"]]
    assert [t["rank"] for t in ranking["trials"]] == [1, 2, 3] and scores == sorted(scores, reverse=True)
    assert len({t["lr"] for t in ranking["trials"]}) == 3  # the engine proposed distinct values
    assert all(1e-3 <= t["lr"] <= 1e-2 for t in ranking["trials"])


@pytest.fixture
def tiny_trials(dataset, tmp_path, monkeypatch):
    """`--set` flags that make each trial a seconds-long run on the synthetic data and its own split."""
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    return ["--set", f"data={dataset}", f"split_file={split}", "image_size=32", "fov_mm=80", "epochs=1",
            "samples_per_epoch=16", "batch_size=8"]


def write_sweep(path, parameters: dict, method="grid"):
    path.write_text(yaml.safe_dump({"method": method, "metric": {"name": "val/dice_3d", "goal": "maximize"},
                                    "parameters": parameters}))
    return str(path)


@pytest.mark.slow
def test_grid_sweep_stops_when_exhausted(tiny_trials, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "grid.yaml", {"arch": {"values": ["pspnet", "fpn"]}})
    assert main(["--quiet", "sweep", sweep, "--count", "5", "--out", "sw", *tiny_trials, "decoder_width=32"]) == 0
    out = capsys.readouterr().out
    assert "exhausted after 2 trials" in out and "2 trials ranked" in out


def test_set_rejects_unknown_flags(tmp_path, capsys):
    assert main(["sweep", str(REPO / "sweeps" / "lr.yaml"), "--set", "learning_rate=1"]) == 2
    assert "learning_rate=1" in capsys.readouterr().err


@pytest.mark.slow
def test_set_overrides_fixed_values_but_not_searched_ones(tiny_trials, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", {"arch": {"values": ["pspnet"]}, "epochs": {"value": 50}})
    assert main(["--quiet", "sweep", sweep, "--count", "1", "--out", "sw", *tiny_trials]) == 0
    assert json.loads((tmp_path / "sw" / "s" / "ranking.json").read_text())["trials"][0]["epochs"] == 1
    assert main(["sweep", sweep, "--set", "arch=fpn"]) == 2
    assert "searched by this sweep" in capsys.readouterr().err


def test_a_crashed_trial_is_recorded_and_the_sweep_goes_on(tiny_trials, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "enc.yaml", {"encoder": {"values": ["nope18", "resnet18"]}, "arch": {"value": "fpn"}})
    assert main(["--quiet", "sweep", sweep, "--count", "2", "--out", "sw", *tiny_trials, "decoder_width=32"]) == 0
    assert "trial-01] failed: LasegmError: unknown encoder 'nope18'" in capsys.readouterr().out
    trials = json.loads((tmp_path / "sw" / "enc" / "ranking.json").read_text())["trials"]
    assert [(t["encoder"], t["status"][:6]) for t in trials] == [("resnet18", "finish"), ("nope18", "failed")]
    assert trials[0]["val/dice_3d"] is not None and trials[1]["val/dice_3d"] is None
