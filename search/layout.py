"""The files of a search folder: the one place that names them.

A search lives in `<storage>/<name>`, a local folder or a URI (s3://, gs://, see search.storage).
Ray Tune writes its own files there (experiment_state-*.json, tuner.pkl, trial_*/result.json,
checkpoints); hpsearch adds the files below. For a search on a URI the driver writes its files into
a local *mirror* of the folder (under the hpsearch cache) and uploads them (`DRIVER_FILES`, `BEST`).

    hpsearch.json          the search's state: its resolved spec, storage, tracking URI, final report
    mlflow_runs.json       trial id -> MLflow run id (search.tracking), so a resume reuses the runs
    asha_rungs.state       ASHA with promotions' rungs and pauses (search.schedulers.state)
    user_errors.json       {trial id: message} of a trial whose user error stopped the search
    best/checkpoint.pt     the model handed over (search.finalize), what `hpsearch export` reads
    best/test_metrics.json, best/results.csv, best/plots/*.png   its test metrics, the trials, the plots
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search import storage as S
from trainables.files import CHECKPOINT_FILE

STATE = "hpsearch.json"
RUNS = "mlflow_runs.json"
# JSON, but not named *.json: on resume Tune copies the search folder's *.json and *.pkl into its
# staging folder and copies them back when it ends, which would put a killed driver's rungs back.
RUNGS = "asha_rungs.state"
USER_ERRORS = "user_errors.json"
BEST = "best"
BEST_CHECKPOINT = CHECKPOINT_FILE  # best/checkpoint.pt, as in every trial's checkpoint_NNNNNN/ folder
BEST_TEST_METRICS = "test_metrics.json"  # best/: the test split, evaluated once
BEST_RESULTS = "results.csv"  # best/: every trial, best first
BEST_PLOTS = "plots"  # best/plots/*.png
TUNER_FILE = "tuner.pkl"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
DRIVER_FILES = (RUNS, RUNGS, USER_ERRORS)  # written by the driver, uploaded to a URI search at the end
NOT_MIRRORED = (BEST, RUNS, STATE, RUNGS, USER_ERRORS)  # never downloaded by reading a URI search back


@dataclass(frozen=True)
class SearchFolder:
    """One search folder: `location` is a local path or a URI; `local` is where this machine reads and
    writes its files (the folder itself, or the URI's mirror)."""

    location: str

    @classmethod
    def of(cls, storage_root: str | Path, name: str) -> "SearchFolder":
        """The folder of search `name` under a storage root (a path or a URI)."""
        if S.is_uri(storage_root):
            return cls(S.join(S.normalize(str(storage_root)), name))
        return cls(str(S.local_path(str(storage_root)) / name))

    @classmethod
    def at(cls, folder: "str | Path | SearchFolder") -> "SearchFolder":
        """A SearchFolder from a path, a URI or a SearchFolder."""
        return folder if isinstance(folder, SearchFolder) else cls(str(folder))

    @property
    def remote(self) -> bool:
        return S.is_uri(self.location)

    @property
    def name(self) -> str:
        return S.display(self.location).rstrip("/").rsplit("/", 1)[-1] if self.remote else Path(self.location).name

    @property
    def local(self) -> Path:
        return S.mirror_dir(self.location) if self.remote else Path(self.location)

    def uri(self, *names: str) -> str:
        """A file of the folder where it lives (a URI, or a local path as text)."""
        return S.join(self.location, *names) if self.remote else str(Path(self.location, *names))

    @property
    def state_file(self) -> Path:
        return self.local / STATE

    @property
    def runs_file(self) -> Path:
        return self.local / RUNS

    @property
    def rungs_file(self) -> Path:
        return self.local / RUNGS

    @property
    def user_errors_file(self) -> Path:
        return self.local / USER_ERRORS

    @property
    def best_dir(self) -> Path:
        return self.local / BEST

    @property
    def best_checkpoint(self) -> Path:
        return self.best_dir / BEST_CHECKPOINT

    def tune_saved(self) -> bool:
        """Whether Ray Tune saved this search's experiment state (a search that can be resumed)."""
        if self.remote:
            names = S.list_names(self.location)
            return TUNER_FILE in names and any(n.startswith("experiment_state-") and n.endswith(".json") for n in names)
        folder = Path(self.location)
        return (folder / TUNER_FILE).is_file() and bool(list(folder.glob(EXPERIMENT_STATE_GLOB)))

    def tune_path(self) -> tuple[str, object]:
        """(path, storage_filesystem) of the folder as Ray Tune takes them."""
        if self.remote:
            filesystem, path = S.filesystem(self.location)
            return path, filesystem
        return self.location, None

    def upload_driver_files(self) -> None:
        """A URI search: what the driver wrote into the mirror goes up to the URI (the best model, the maps)."""
        if not self.remote:
            return
        if self.best_dir.is_dir():
            S.upload(self.best_dir, self.uri(BEST))
        for name in DRIVER_FILES:
            if (self.local / name).is_file():
                S.upload(self.local / name, self.uri(name))

    def __str__(self) -> str:
        return self.location
