"""The `auto` model choice for a new index: facenet when its weights are on disk or can be
downloaded, otherwise sface, which ships with faceidx and works offline."""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
from pathlib import Path

from ..settings import Settings

log = logging.getLogger(__name__)


def reachable(probe: str, timeout: float) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds, name lookup
    included (getaddrinfo has no timeout of its own, so it runs on a thread we stop waiting
    for)."""
    host, _, port = probe.rpartition(":")
    if not host or not port.isdigit():
        return False
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True, name="faceidx-probe")
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def choose_model(settings: Settings) -> tuple[str, str]:
    """The model `auto` stands for on this machine, and why, in a few words."""
    from .facenet_model import cached_weights_path

    if importlib.util.find_spec("facenet_pytorch") is None:
        return "sface", "facenet-pytorch is not installed"
    local = settings.facenet_weights
    if local is not None and Path(local).is_file():
        return "facenet", f"facenet weights found at {local}"
    if cached_weights_path().is_file():
        return "facenet", f"facenet weights found at {cached_weights_path()}"
    probe = settings.facenet_probe.strip()
    if probe and reachable(probe, settings.facenet_probe_timeout):
        return "facenet", f"facenet weights can be downloaded ({probe} answered)"
    where = f"and {probe} did not answer within {settings.facenet_probe_timeout:g} s" if probe \
        else "and downloads are off (FACEIDX_FACENET_PROBE is empty)"
    return "sface", f"facenet weights are not at {cached_weights_path()} {where}"
