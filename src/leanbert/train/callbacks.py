"""Training callbacks: hooks through which a training run reports to outside trackers.

The training engine calls every callback it is given, on the main process only (rank 0):

* ``on_start(info)`` once, before the first step, with a :class:`RunInfo` (output directory,
  job, the full config as plain JSON data, start and total steps, whether the run resumed);
* ``on_log(record)`` for every record written to ``metrics.jsonl`` (``record["kind"]`` is
  ``"train"``, ``"eval"``, ...; ``record["step"]`` is an int; the other values are numbers,
  ``None`` or strings);
* ``on_checkpoint(path, step)`` after each checkpoint is complete on disk;
* ``on_end(status)`` once, with ``"finished"``, ``"interrupted"`` (SIGINT / SIGTERM, a checkpoint
  was saved and the run can resume) or ``"failed"``.

Writing your own: subclass :class:`Callback`, override the hooks you need (they all default to
no-ops) and hand an instance to the engine::

    class PrintLoss(Callback):
        def on_log(self, record):
            if record["kind"] == "train":
                print(record["step"], record.get("loss"))

Two trackers come built in, each an optional extra, both offline by default (no network is
needed or tried) and both keeping everything inside the run's output directory:

* :class:`WandbCallback` (``pip install 'leanbert[wandb]'``): Weights & Biases in ``offline``
  mode; the run is written to ``<output_dir>/wandb/offline-run-*/`` and can be uploaded later
  with ``wandb sync <output_dir>/wandb/offline-run-*``.
* :class:`MLflowCallback` (``pip install 'leanbert[mlflow]'``, which installs
  ``mlflow-skinny``): an MLflow file store at ``file://<output_dir>/mlruns``; browse it with
  ``mlflow ui --backend-store-uri file://<output_dir>/mlruns`` (needs the full ``mlflow``
  package) or read it with ``mlflow.tracking.MlflowClient``.

:func:`make_callbacks` builds them from names, as listed in the ``log.callbacks`` config key.

Both keep one tracker run per output directory: the run id is stored in
``<output_dir>/wandb_run_id.txt`` / ``<output_dir>/mlflow_run_id.txt`` on first start, and a
resumed training run continues that tracker run. Metric keys are ``"<kind>/<name>"``, e.g.
``train/loss`` and ``eval/perplexity``, at the record's step. A tracker that fails while
training runs (disk full, a bad value) warns once and never stops the training run.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanbert.errors import ConfigError, did_you_mean
from leanbert.io import atomic_write_text

__all__ = ["RunInfo", "Callback", "WandbCallback", "MLflowCallback", "make_callbacks"]

WANDB_RUN_ID_FILE = "wandb_run_id.txt"
MLFLOW_RUN_ID_FILE = "mlflow_run_id.txt"


@dataclass
class RunInfo:
    output_dir: Path
    job: str  # "pretrain" | "finetune" | "distill"
    config: dict[str, Any]  # the run's full config as plain JSON data
    start_step: int  # 0, or the step a resumed run starts from
    total_steps: int
    resumed: bool


class Callback:
    """Hooks the engine calls on the main process only (rank 0). All default to no-ops."""

    def on_start(self, info: RunInfo) -> None:
        """Called once before the first step."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Called with every record written to ``metrics.jsonl``."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """Called after the checkpoint at ``path`` (for ``step``) is complete on disk."""

    def on_end(self, status: str) -> None:
        """Called once at the end: ``"finished"``, ``"interrupted"`` or ``"failed"``."""


END_STATUSES = ("finished", "interrupted", "failed")


# ----------------------------------------------------------------------------- helpers


def _import_optional(module: str, callback: str, extra: str):
    """Import ``module`` or raise a one-line ConfigError that names the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == top:
            raise ConfigError(
                f"log.callbacks has '{callback}' but {top} is not installed; "
                f"pip install 'leanbert[{extra}]'"
            ) from None
        raise ConfigError(
            f"log.callbacks has '{callback}' but {top} failed to import ({e}); "
            f"reinstall it with pip install -U 'leanbert[{extra}]'"
        ) from e


@contextlib.contextmanager
def _env_defaults(values: Mapping[str, str]) -> Iterator[None]:
    """Set the variables in ``values`` that the user has not set, restore them afterwards."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _numeric_items(record: Mapping[str, Any]) -> Iterator[tuple[str, float | int]]:
    """``("<kind>/<name>", value)`` for every numeric value of a metrics record."""
    kind = str(record.get("kind") or "train")
    for name, value in record.items():
        if name in ("kind", "step") or value is None:
            continue
        if isinstance(value, bool):
            yield f"{kind}/{name}", int(value)
        elif isinstance(value, numbers.Real):
            yield f"{kind}/{name}", value


def _read_run_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return text or None


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; empty dicts are dropped."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        elif not (isinstance(value, Mapping) and not value):
            out[name] = value
    return out


class _WarnOnce:
    """Warns about the first failure of a tracker only, so a broken tracker never floods the
    log nor stops the training run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.warned = False

    def __call__(self, what: str, error: BaseException) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"{self.name}: {what} failed ({type(error).__name__}: {error}); training goes on, "
                f"later {self.name} errors are not reported",
                RuntimeWarning,
                stacklevel=3,
            )


# ----------------------------------------------------------------------------- W&B


class WandbCallback(Callback):
    """Logs a run to Weights & Biases, offline by default.

    ``mode``: ``"offline"`` (default: written to ``<dir>/wandb/``, nothing is sent; upload later
    with ``wandb sync``), ``"online"`` or ``"disabled"``. ``dir`` defaults to the run's output
    directory. In offline mode nothing is written outside ``dir``: wandb's cache, config and
    data directories (``WANDB_CACHE_DIR``, ``WANDB_CONFIG_DIR``, ``WANDB_DATA_DIR``) point
    inside ``<dir>/wandb/`` unless you set them yourself, and error reporting to W&B is off
    (``WANDB_ERROR_REPORTING=false``); the one exception is two empty temporary folders that
    ``import wandb`` makes in ``$TMPDIR`` and removes at exit. wandb starts one ``wandb-core``
    helper process; ``on_end`` waits until it has written everything and stops it (unless
    another wandb run of the process is still open), so no process is left behind.

    The config is logged as the W&B run config; every numeric value of a record as
    ``<kind>/<name>`` at the record's step; the last checkpoint's path and step go to the run
    summary (checkpoints themselves are not uploaded). A resumed training run continues the
    W&B run whose id is in ``<output_dir>/wandb_run_id.txt`` (in offline mode each session is
    its own ``offline-run-*`` folder with that id; ``wandb sync`` joins them). W&B keeps only
    increasing steps, so steps logged again after resuming from an older checkpoint are
    dropped there.

    ``settings`` holds the ``wandb.Settings`` values used; subclass and change it to, e.g.,
    collect system metrics (``x_disable_stats=False``). Names this wandb version does not know
    are left out.
    """

    MODES = ("offline", "online", "disabled")

    settings: dict[str, Any] = {
        "silent": True,  # no banner, no "wandb sync" hint on stdout
        "console": "off",  # leave sys.stdout / stderr (and the progress bar) alone
        "x_disable_stats": True,  # no system-metrics sampler process
        "x_disable_meta": True,  # no host / GPU / git probing at start
        "x_disable_machine_info": True,
        "x_save_requirements": False,
        "disable_git": True,
        "save_code": False,
    }

    def __init__(
        self,
        project: str = "leanbert",
        mode: str = "offline",
        name: str | None = None,
        dir: str | Path | None = None,
    ) -> None:
        if mode not in self.MODES:
            raise ConfigError(
                f"wandb mode '{mode}' is not one of {', '.join(map(repr, self.MODES))}"
                f"{did_you_mean(mode, self.MODES)}"
            )
        self.project = project
        self.mode = mode
        self.name = name
        self.dir = Path(dir) if dir is not None else None
        self.run: Any = None
        self.run_id: str | None = None
        self._warn = _WarnOnce("wandb")
        if mode != "online":
            # Read by wandb when reporting its own errors, at any time: keep it for the process.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = _import_optional("wandb", "wandb", "wandb")

    def _settings(self) -> Any:
        wandb = self._wandb
        fields = getattr(wandb.Settings, "model_fields", None)
        values = dict(self.settings)
        if fields is not None:
            values = {k: v for k, v in values.items() if k in fields}
            reinit = fields.get("reinit")
            if reinit is not None and "create_new" in str(reinit.annotation):
                values["reinit"] = "create_new"  # never finish a run the user has open
        else:  # old, non-pydantic Settings: only the long-standing public names
            values = {k: v for k, v in values.items() if not k.startswith("x_")}
        return wandb.Settings(**values)

    def on_start(self, info: RunInfo) -> None:
        wandb = self._wandb
        output_dir = Path(info.output_dir)
        root = (self.dir or output_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        id_file = output_dir / WANDB_RUN_ID_FILE
        run_id = _read_run_id(id_file) if info.resumed else None
        resuming = run_id is not None
        if run_id is None:
            run_id = uuid.uuid4().hex[:16]
        env = {"WANDB_MODE": self.mode}
        if self.mode != "online":
            # The wandb-core helper writes its own log to the cache directory; it is started
            # by the first init of the process and takes its environment from there.
            base = root / "wandb"
            env |= {
                "WANDB_CACHE_DIR": str(base / "cache"),
                "WANDB_CONFIG_DIR": str(base / "config"),
                "WANDB_DATA_DIR": str(base / "data"),
            }
        with _env_defaults(env):
            self.run = wandb.init(
                project=self.project,
                name=self.name or output_dir.name,
                dir=str(root),
                mode=self.mode,
                id=run_id,
                resume="allow" if resuming else None,
                job_type=info.job,
                config=info.config,
                settings=self._settings(),
            )
        self.run_id = run_id if self.run is None else (getattr(self.run, "id", None) or run_id)
        atomic_write_text(id_file, self.run_id + "\n")

    def on_log(self, record: dict[str, Any]) -> None:
        if self.run is None:
            return
        values = dict(_numeric_items(record))
        if not values:
            return
        try:
            self.run.log(values, step=int(record["step"]))
        except Exception as e:  # a tracker must never stop training
            self._warn("log", e)

    def on_checkpoint(self, path: Path, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.summary["checkpoint/path"] = str(path)
            self.run.summary["checkpoint/step"] = int(step)
        except Exception as e:
            self._warn("checkpoint", e)

    def on_end(self, status: str) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        # W&B marks a non-zero exit code "failed"; 130 is the shell's code for SIGINT.
        exit_code = {"finished": 0, "interrupted": 130}.get(status, 1)
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:
            self._warn("finish", e)
            return
        # finish() returns before wandb-core has written the run's last records (in offline
        # mode: the .wandb file). The only way wandb offers to wait for them is shutting its
        # helper process down, so do that unless another wandb run in this process is open.
        if not self._other_runs_open():
            try:
                self._wandb.teardown()
            except (Exception, SystemExit) as e:  # teardown may sys.exit() on a helper error
                self._warn("teardown", e)

    def _other_runs_open(self) -> bool:
        try:
            from wandb.sdk import wandb_setup

            setup = wandb_setup._singleton
            return bool(setup is not None and setup._active_runs)
        except Exception:  # private API changed: leave the helper alone (it flushes at exit)
            return True


# ----------------------------------------------------------------------------- MLflow


_MLFLOW_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")
_MLFLOW_MAX_KEY = 250
_MLFLOW_MAX_PARAM_VALUE = 6000
_MLFLOW_BATCH = 100  # params (and tags) per log_batch call
_MLFLOW_MAX_PARAMS = 2000  # beyond this a config is not a list of hyperparameters any more


def _mlflow_key(key: str) -> str:
    return _MLFLOW_BAD_KEY_CHARS.sub("_", key)[:_MLFLOW_MAX_KEY]


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text[:_MLFLOW_MAX_PARAM_VALUE]


def _is_file_uri(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


class MLflowCallback(Callback):
    """Logs a run to MLflow, by default to a local file store at ``file://<output_dir>/mlruns``.

    Works with ``mlflow-skinny`` (the ``leanbert[mlflow]`` extra). MLflow 3 puts the file store
    in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``; this callback
    sets that variable (unless you set it) when the tracking URI is a file store. Any other
    tracking URI works too (``sqlite:///...`` needs the full ``mlflow`` package,
    ``http://host:5000`` a server). MLflow's usage telemetry is switched off
    (``MLFLOW_DISABLE_TELEMETRY=true`` unless you set it) so that nothing tries the network.

    The flattened config is logged as params (``optim.lr``, ...; values cut at 6000
    characters, lists as JSON); every numeric value of a record as the metric
    ``<kind>/<name>`` at the record's step, one ``log_batch`` per record; the last checkpoint's
    path as the tag ``leanbert.checkpoint``. ``on_end`` ends the run as FINISHED, KILLED
    (interrupted) or FAILED. A resumed training run reopens the MLflow run whose id is in
    ``<output_dir>/mlflow_run_id.txt``; params already there keep their first value (MLflow
    forbids changing one). Uses its own ``MlflowClient``, never MLflow's global active run.
    """

    END_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "leanbert",
        run_name: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.client: Any = None
        self.run_id: str | None = None
        self._warn = _WarnOnce("mlflow")
        # Read when mlflow is imported: set it first. Kept for the process (mlflow reads it
        # again for every telemetry event).
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self._mlflow = _import_optional("mlflow", "mlflow", "mlflow")

    def _client(self, uri: str) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if _is_file_uri(uri):
            # MLflow reads this each time it opens a file store: keep it for the process.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            return MlflowClient(tracking_uri=uri)
        except ImportError as e:
            raise ConfigError(
                f"MLflow tracking URI '{uri}' needs {e.name or 'a package'} that is not installed;"
                " pip install mlflow (the full package), or use a file:// URI"
            ) from e
        except MlflowException as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"MLflow tracking URI '{uri}' cannot be used: {first}") from e

    def _experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            return client.create_experiment(self.experiment)
        if getattr(found, "lifecycle_stage", "active") == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def on_start(self, info: RunInfo) -> None:
        from mlflow.entities import Param, RunStatus

        output_dir = Path(info.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        uri = self.tracking_uri or (output_dir.resolve() / "mlruns").as_uri()
        client = self._client(uri)
        id_file = output_dir / MLFLOW_RUN_ID_FILE
        run = None
        if info.resumed and (old := _read_run_id(id_file)) is not None:
            with contextlib.suppress(Exception):  # gone (deleted store, other URI): start anew
                run = client.get_run(old)
        if run is not None:
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            logged = dict(run.data.params)
        else:
            run = client.create_run(
                self._experiment_id(client),
                run_name=self.run_name or output_dir.name,
                tags={"leanbert.job": info.job, "leanbert.output_dir": str(output_dir.resolve())},
            )
            logged = {}
        self.client, self.run_id = client, run.info.run_id
        atomic_write_text(id_file, self.run_id + "\n")

        params = {_mlflow_key(k): _param_value(v) for k, v in _flatten(info.config).items()}
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        if len(new) > _MLFLOW_MAX_PARAMS:
            warnings.warn(
                f"mlflow: the config has {len(new)} params; only the first {_MLFLOW_MAX_PARAMS} are logged",
                RuntimeWarning,
                stacklevel=2,
            )
            new = new[:_MLFLOW_MAX_PARAMS]
        try:
            for i in range(0, len(new), _MLFLOW_BATCH):
                client.log_batch(self.run_id, params=new[i : i + _MLFLOW_BATCH])
        except Exception as e:  # params are a convenience; the run goes on
            self._warn("log_params", e)

    def on_log(self, record: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        step = int(record["step"])
        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), float(v), now, step) for k, v in _numeric_items(record)]
        if not metrics:
            return
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as e:  # a tracker must never stop training
            self._warn("log", e)

    def on_checkpoint(self, path: Path, step: int) -> None:
        if self.client is None:
            return
        try:
            self.client.set_tag(self.run_id, "leanbert.checkpoint", str(path))
        except Exception as e:
            self._warn("checkpoint", e)

    def on_end(self, status: str) -> None:
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            client.set_terminated(self.run_id, status=self.END_STATUS.get(status, "FAILED"))
        except Exception as e:
            self._warn("end_run", e)


# ----------------------------------------------------------------------------- factory

CALLBACKS = ("wandb", "mlflow")


def make_callbacks(
    names: Sequence[str],
    output_dir: Path,
    *,
    wandb_project: str = "leanbert",
    wandb_mode: str = "offline",
    mlflow_tracking_uri: str | None = None,
    mlflow_experiment: str = "leanbert",
) -> list[Callback]:
    """The callbacks named in ``log.callbacks`` (``"wandb"``, ``"mlflow"``), in that order.

    Raises :class:`ConfigError` for an unknown or repeated name, or a tracker that is not
    installed, before any training starts.
    """
    if isinstance(names, str):
        names = [names]
    seen: set[str] = set()
    for raw in names:
        name = str(raw).strip().lower()
        if name not in CALLBACKS:
            raise ConfigError(
                f"log.callbacks: unknown callback '{raw}'{did_you_mean(name, CALLBACKS)}; "
                f"allowed: {', '.join(map(repr, CALLBACKS))}"
            )
        if name in seen:
            raise ConfigError(f"log.callbacks: '{name}' is listed twice; list it once")
        seen.add(name)
    out: list[Callback] = []
    for raw in names:
        name = str(raw).strip().lower()
        if name == "wandb":
            out.append(WandbCallback(project=wandb_project, mode=wandb_mode, dir=output_dir))
        else:
            uri = mlflow_tracking_uri or (Path(output_dir).resolve() / "mlruns").as_uri()
            out.append(MLflowCallback(tracking_uri=uri, experiment=mlflow_experiment))
    return out
