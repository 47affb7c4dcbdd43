"""runstream.compat.wandb: how wandb's API maps onto runstream's (init arguments, env
variables, settings, log's commit default, define_metric's argument order and modes),
the module-level names on real runs, and the media stand-ins' JSON."""

from __future__ import annotations

import json
import logging

import pytest
import runstream
import runstream.compat.wandb as wandb
from runstream import _state, _values
from runstream.api import Api as RsApi

WANDB_ENV = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_NAME", "WANDB_NOTES", "WANDB_TAGS",
             "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_RUN_ID", "WANDB_RESUME",
             "WANDB_MODE", "WANDB_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)   # run journals default to the working directory
    for name in WANDB_ENV + ("RUNSTREAM_ENTITY", "RUNSTREAM_MODE", "RUNSTREAM_DIR",
                             "RUNSTREAM_API_URL", "RUNSTREAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wandb, "_warned", set())


class FakeRsRun:
    """Records what the wrapper calls on the runstream run."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.name = "n"
        self.mode = "online"
        self.url = "localhost:50051/e/p/runs/abc"

    def log(self, data, step=None, commit=True):
        self.calls.append(("log", dict(data), step, commit))

    def define_metric(self, name, summary=None, step_metric=None, **kw):
        self.calls.append(("define_metric", name, summary, step_metric, kw))
        return runstream.MetricDefinition(name, summary or "", step_metric or "")

    def finish(self, exit_code=None):
        self.calls.append(("finish", exit_code))


@pytest.fixture
def fake_init(monkeypatch):
    """runstream.init replaced by a recorder; returns the list of its keyword arguments."""
    seen: list[dict] = []

    def init(**kwargs):
        seen.append(kwargs)
        return FakeRsRun()

    monkeypatch.setattr(runstream, "init", init)
    return seen


# ------------------------------------------------------------------------------ init


def test_init_passes_wandbs_arguments_through(fake_init, tmp_path):
    run = wandb.init(project="p", entity="e", config={"lr": 0.1}, name="n", notes="x",
                     tags=("a", "b"), group="g", job_type="train", reinit="create_new",
                     resume="allow", id="abc", mode="online", dir=tmp_path)
    assert isinstance(run, wandb.Run)
    assert fake_init == [dict(project="p", entity="e", name="n", notes="x", tags=["a", "b"],
                              config={"lr": 0.1}, group="g", job_type="train", id="abc",
                              resume="allow", reinit="create_new", mode="online",
                              dir=str(tmp_path), settings=None)]


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        wandb.init("entity-or-job-type")


@pytest.mark.parametrize("given, mode", [("dryrun", "offline"), ("run", "online"),
                                         ("offline", "offline"), ("disabled", "disabled"),
                                         ("shared", "online")])
def test_init_maps_wandb_modes(fake_init, given, mode):
    wandb.init(mode=given)
    assert fake_init[-1]["mode"] == mode


def test_unknown_init_arguments_are_ignored_with_one_warning_each(fake_init, caplog):
    with caplog.at_level(logging.WARNING, "runstream"):
        wandb.init(project="p", save_code=True, sync_tensorboard=True)
        wandb.init(project="p", save_code=True)
    warned = [r.getMessage() for r in caplog.records]
    assert len([m for m in warned if "save_code" in m]) == 1
    assert len([m for m in warned if "sync_tensorboard" in m]) == 1
    assert "save_code" not in fake_init[-1]


def test_config_include_and_exclude_keys(fake_init):
    cfg = {"lr": 0.1, "batch": 32, "secret": "x"}
    wandb.init(config=cfg, config_exclude_keys=["secret"])
    assert fake_init[-1]["config"] == {"lr": 0.1, "batch": 32}
    wandb.init(config=cfg, config_include_keys=["lr", "secret"], config_exclude_keys=["secret"])
    assert fake_init[-1]["config"] == {"lr": 0.1}


def test_wandb_environment_variables_fill_missing_arguments(fake_init, monkeypatch):
    env = {"WANDB_PROJECT": "wp", "WANDB_ENTITY": "we", "WANDB_NAME": "wn",
           "WANDB_NOTES": "notes", "WANDB_TAGS": "a, b,", "WANDB_RUN_GROUP": "wg",
           "WANDB_JOB_TYPE": "wj", "WANDB_RUN_ID": "wid", "WANDB_RESUME": "allow",
           "WANDB_MODE": "dryrun", "WANDB_DIR": "/tmp/wd"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    wandb.init()
    kw = fake_init[-1]
    assert (kw["project"], kw["entity"], kw["name"], kw["notes"], kw["tags"], kw["group"],
            kw["job_type"], kw["id"], kw["resume"], kw["mode"], kw["dir"]) == (
        "wp", "we", "wn", "notes", ["a", "b"], "wg", "wj", "wid", "allow", "offline",
        "/tmp/wd")
    wandb.init(project="arg", name="arg-name", tags=[])
    assert (fake_init[-1]["project"], fake_init[-1]["name"], fake_init[-1]["tags"]) == (
        "arg", "arg-name", [])
    # runstream's own variables win over wandb's.
    monkeypatch.setenv("RUNSTREAM_ENTITY", "re")
    monkeypatch.setenv("RUNSTREAM_MODE", "online")
    monkeypatch.setenv("RUNSTREAM_DIR", "/tmp/rd")
    wandb.init()
    assert (fake_init[-1]["entity"], fake_init[-1]["mode"], fake_init[-1]["dir"]) == (
        None, None, None)


def test_settings_are_permissive_and_translated(fake_init):
    s = wandb.Settings(start_method="thread", x_disable_stats=True, finish_timeout_s=3.0,
                       mode="offline", console="off")
    assert s.start_method == "thread" and s.anything_else is None
    s.update(x_stats_sampling_interval=2)
    wandb.init(settings=s)
    assert fake_init[-1]["settings"] == {"finish_timeout_s": 3.0, "system_metrics": False,
                                         "system_metrics_interval_s": 2.0}
    assert fake_init[-1]["mode"] == "offline"
    wandb.init(settings={"_disable_stats": False, "_stats_sample_rate_seconds": 5})
    assert fake_init[-1]["settings"] == {"system_metrics": True,
                                         "system_metrics_interval_s": 5.0}
    native = runstream.Settings(url="h:1")
    wandb.init(settings=native)
    assert fake_init[-1]["settings"] is native


# ------------------------------------------------------------------ log / define_metric


def test_log_commit_defaults_follow_wandb(fake_init):
    run = wandb.init()
    run.log({"a": 1})
    run.log({"a": 2}, step=5)                  # wandb: a step's values wait for commit
    run.log({"a": 3}, step=5, commit=True)
    run.log({"a": 4}, commit=False)
    run.log({"a": 5}, sync=True)
    assert run._run.calls == [("log", {"a": 1}, None, True), ("log", {"a": 2}, 5, False),
                              ("log", {"a": 3}, 5, True), ("log", {"a": 4}, None, False),
                              ("log", {"a": 5}, None, True)]


def test_define_metric_uses_wandbs_argument_order_and_modes(fake_init, caplog):
    run = wandb.init()
    calls = run._run.calls
    run.define_metric("val/loss", "epoch")                         # positional step_metric
    assert calls[-1][:4] == ("define_metric", "val/loss", None, "epoch")
    run.define_metric("val/loss", summary="min")
    assert calls[-1][:4] == ("define_metric", "val/loss", "min", None)
    with caplog.at_level(logging.WARNING, "runstream"):
        run.define_metric("acc", summary="max,mean")
    assert calls[-1][2] == "max" and "one summary per metric" in caplog.text
    run.define_metric("f1", summary="best", goal="maximize")
    assert calls[-1][2] == "max"
    run.define_metric("err", summary="best", goal="minimize")
    assert calls[-1][2] == "min"
    run.define_metric("x", summary="copy")
    assert calls[-1][2] == "last"
    epoch = run.define_metric("epoch", hidden=True)
    run.define_metric("val/*", step_metric=epoch, step_sync=True)  # a Metric object
    assert calls[-1][:4] == ("define_metric", "val/*", None, "epoch")
    assert calls[-1][4] == {"step_sync": True, "hidden": None, "goal": None,
                            "overwrite": None}


def test_run_wrapper_properties(fake_init):
    run = wandb.init()
    assert run.display_name == "n"
    run.display_name = "m"
    run.notes = "set through"
    assert run._run.name == "m" and run._run.notes == "set through"
    assert run.offline is False and run.disabled is False and run.sweep_id is None
    assert run.get_url() == "localhost:50051/e/p/runs/abc"
    assert run.get_project_url() == "localhost:50051/e/p"
    run.finish(exit_code=2, quiet=True)
    assert run._run.calls[-1] == ("finish", 2)


# ---------------------------------------------------------------------- real runs


@pytest.fixture
def offline_client(monkeypatch):
    """Process-wide client state pointed at a port nobody listens on (runs continue
    locally, as with the server down); exit hooks not installed; no system metrics."""
    for name in ("RUNSTREAM_URL", "RUNSTREAM_HEARTBEAT_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNSTREAM_URL", "127.0.0.1:9")
    monkeypatch.setenv("RUNSTREAM_FINISH_TIMEOUT", "0.2")
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS", "0")
    monkeypatch.setattr(_state, "install_hooks", lambda: None)
    _state.set_active(None)
    _state._sender = None
    yield
    for r in reversed(_state.live()):
        r.finish(timeout=0.2)
    _state.set_active(None)
    if _state._sender is not None:
        _state._sender.close(timeout=0.3)
        _state._sender = None


def test_module_level_names_follow_the_active_run(offline_client):
    assert wandb.run is None
    with pytest.raises(runstream.PreInitError):
        wandb.config.lr = 1
    with pytest.raises(wandb.Error, match="wandb.init"):
        wandb.log({"a": 1})
    run = wandb.init(project="compat", config={"lr": 0.1, "arch": {"layers": 2}})
    assert wandb.run is run and wandb.init() is run           # reinit default: same run
    assert isinstance(run._run, runstream.Run) and run.project == "compat"
    assert wandb.config.lr == 0.1 and wandb.config["arch"]["layers"] == 2
    wandb.config.update({"lr": 0.2}, allow_val_change=True)
    assert run.config.lr == 0.2
    with pytest.raises(runstream.ConfigError):
        wandb.config.update({"lr": 0.3})
    wandb.config.batch = 64
    assert wandb.config.as_dict() == {"lr": 0.2, "arch": {"layers": 2}, "batch": 64}
    wandb.define_metric("loss", summary="min")
    for i, loss in enumerate([3.0, 1.0, 2.0]):
        wandb.log({"loss": loss, "epoch": i})
    assert run.step == 3 and wandb.summary["loss"] == 1.0 and wandb.summary["epoch"] == 2
    wandb.summary["best_epoch"] = 1
    assert run.summary["best_epoch"] == 1
    wandb.finish()
    assert wandb.run is None and run.exit_code == 0
    wandb.finish()                                           # nothing active: nothing


def test_with_block_and_exit_codes(offline_client):
    with pytest.raises(ValueError):
        with wandb.init(project="compat") as run:
            assert wandb.run is run
            raise ValueError("boom")
    assert wandb.run is None and run.exit_code == 1
    with wandb.init(project="compat", reinit="finish_previous") as run2:
        run2.log({"x": 1})
    assert run2.exit_code == 0 and run2 is not run


def test_init_allow_val_change(offline_client):
    run = wandb.init(project="compat", config={"lr": 0.1}, allow_val_change=True)
    wandb.config.lr = 0.2
    wandb.config["lr"] = 0.3
    wandb.config.update({"lr": 0.4})
    assert run.config.lr == 0.4


# -------------------------------------------------------------------------- media


def stored(value) -> dict:
    """How a logged value is stored: exactly one non-numeric key with a JSON object."""
    nums, others = _values.split({"v": value})
    assert nums == {} and list(others) == ["v"]
    return json.loads(others["v"])


def test_table_is_one_json_object():
    t = wandb.Table(columns=["a", "b"], data=[[1, "x"]])
    t.add_data(2, "y")
    t.add_column("c", [True, False])
    assert t.columns == ["a", "b", "c"] and t.get_column("b") == ["x", "y"]
    assert stored(t) == {"_type": "table", "columns": ["a", "b", "c"],
                         "data": [[1, "x", True], [2, "y", False]]}
    with pytest.raises(ValueError):
        t.add_data(1, 2)
    nested_nums, nested_others = _values.split({"eval": {"table": t, "acc": 0.5}})
    assert nested_nums == {"eval/acc": 0.5} and list(nested_others) == ["eval/table"]
    assert wandb.Table(data=[[1, 2, 3]]).columns == ["Input", "Output", "Expected"]
    assert wandb.Table(data=[[1, 2]]).columns == ["Column1", "Column2"]


def test_table_from_a_dataframe_and_numpy_cells():
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    t = wandb.Table(dataframe=pd.DataFrame({"x": [1, 2], "y": [0.5, 1.5]}))
    t.add_data(np.int64(3), np.float32(2.5))
    assert stored(t) == {"_type": "table", "columns": ["x", "y"],
                         "data": [[1.0, 0.5], [2.0, 1.5], [3, 2.5]]}


def test_histogram_counts_and_np_histogram():
    h = wandb.Histogram([0, 1, 1, 2, 2, 2, 3, float("nan")], num_bins=3)
    assert h.bins == [0.0, 1.0, 2.0, 3.0] and h.histogram == [1.0, 2.0, 4.0]
    assert stored(h) == {"_type": "histogram", "bins": [0.0, 1.0, 2.0, 3.0],
                         "values": [1.0, 2.0, 4.0]}
    assert wandb.Histogram([5, 5], num_bins=2).bins == [4.5, 5.0, 5.5]
    assert wandb.Histogram(np_histogram=([1, 2], [0, 1, 2])).histogram == [1.0, 2.0]
    with pytest.raises(ValueError):
        wandb.Histogram()
    np = pytest.importorskip("numpy")
    data = np.random.default_rng(0).normal(size=(100, 10))
    counts, edges = np.histogram(data, bins=16)
    h = wandb.Histogram(data, num_bins=16)
    assert h.histogram == [float(c) for c in counts]
    assert h.bins == pytest.approx(list(edges))


def test_image_records_what_is_known():
    assert stored(wandb.Image("plots/loss.PNG", caption="loss")) == {
        "_type": "image", "path": "plots/loss.PNG", "format": "png", "caption": "loss"}
    np = pytest.importorskip("numpy")
    assert stored(wandb.Image(np.zeros((28, 32, 3)))) == {
        "_type": "image", "height": 28, "width": 32, "channels": 3}
    assert stored(wandb.Image(np.zeros((3, 28, 32)), mode="RGB")) == {      # CHW
        "_type": "image", "height": 28, "width": 32, "channels": 3, "mode": "RGB"}
    assert stored(wandb.Image(np.zeros((28, 32)))) == {
        "_type": "image", "height": 28, "width": 32, "channels": 1}


def test_media_in_summary_and_log_of_a_real_run(offline_client):
    run = wandb.init(project="compat")
    t = wandb.Table(columns=["k"], data=[[1]])
    wandb.log({"samples": t, "hist": wandb.Histogram([1, 2, 3], num_bins=2), "loss": 1.0})
    wandb.summary["table"] = t
    assert set(run.summary) == {"samples", "hist", "loss", "table"}
    assert run.summary["table"] == {"_type": "table", "columns": ["k"], "data": [[1]]}


# ------------------------------------------------------------------ the rest of wandb


def test_api_is_runstreams_and_never_sends_a_wandb_key(monkeypatch):
    monkeypatch.setenv("RUNSTREAM_URL", "127.0.0.1:9")
    api = wandb.Api(overrides={"base_url": "https://api.wandb.ai"}, api_key="wandb-key",
                    timeout=5)
    try:
        assert isinstance(api, RsApi) and api.url == "127.0.0.1:9" and api.timeout == 5.0
        assert api.api_key == "" and api._metadata == ()
        api.flush()
    finally:
        api.close()


def test_no_op_functions(caplog):
    assert wandb.login() is True and wandb.login(key="k", relogin=True) is True
    assert wandb.setup() is None
    with caplog.at_level(logging.WARNING, "runstream"):
        assert wandb.watch(object(), log="all", log_freq=10) is None
        wandb.watch(object())
        assert wandb.save("*.pt") == []
    assert caplog.text.count("wandb.watch() is not supported") == 1
    assert "wandb.save() is not supported" in caplog.text
    with pytest.raises(AttributeError, match="not provided by Runstream"):
        wandb.Artifact  # noqa: B018
