"""The BLAS kernels FAISS runs on, and how its OpenMP threads wait.

faiss-cpu's wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1), older than many CPUs
with AVX-512 (Sapphire and Emerald Rapids among them). On a CPU it does not know, it falls back
to its generic "Prescott" kernels, about 3x slower, and every matrix product in FAISS pays: the
k-means of the search index and of the recluster's kNN graph, and the coarse search. It is told
to use its AVX-512 kernels ("SkylakeX") where the CPU has their instructions, unless the user
has already chosen with OPENBLAS_CORETYPE. OpenBLAS reads the variable when it loads, so this
runs before the first `import faiss` (from `indexer/__init__.py`); child processes inherit it.

FAISS's OpenMP threads are told to sleep when they wait (OMP_WAIT_POLICY=PASSIVE, as FAISS's
troubleshooting guide advises with OpenBLAS) rather than spin. A search of one query face shares
its probed lists between the threads (store/faceindex.py); on a machine whose cores are busy
(the daemon indexing) spinning threads take the cores from the ones with work: 14-33 ms a query
face on 2 threads against 6.1-10.7 ms on one, and 5.8-9.8 ms once they sleep (1M faces, 1024
lists probed). The user's own OMP_WAIT_POLICY wins. libgomp reads it when it loads, so it is
set here too.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # start-up of every command: nothing more to import
    from collections.abc import Iterable

CORETYPE = "OPENBLAS_CORETYPE"
WAIT_POLICY = "OMP_WAIT_POLICY"
AVX512_KERNEL = "SkylakeX"
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
"""What OpenBLAS's SkylakeX kernels need (Xeon Phi's AVX-512 lacks some of them)."""


def cpu_flags(cpuinfo: str | Iterable[str]) -> frozenset[str]:
    """The first processor's flags in the text (or the lines) of /proc/cpuinfo; reading stops
    there, so an open file is not read past its first processor (the kernel makes the rest on
    demand, and each processor's block costs more on a machine with many)."""
    for line in cpuinfo.splitlines() if isinstance(cpuinfo, str) else cpuinfo:
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def blas_kernel(cpuinfo: str | Iterable[str]) -> str | None:
    """The OpenBLAS core type to ask for on a CPU described by this /proc/cpuinfo text (or its
    lines), or None to leave OpenBLAS's own choice."""
    return AVX512_KERNEL if AVX512_FLAGS.issubset(cpu_flags(cpuinfo)) else None


def prepare_faiss() -> None:
    """Before FAISS loads, for this process and its children: its threads sleep when they wait,
    and its BLAS kernels suit the CPU (each unless the user has chosen)."""
    if "faiss" in sys.modules:
        return
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    choose_blas_kernel()


def choose_blas_kernel() -> None:
    """Set OPENBLAS_CORETYPE for this process and its children, if unset and if it helps."""
    if CORETYPE in os.environ or not sys.platform.startswith("linux") or "faiss" in sys.modules:
        return
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            kernel = blas_kernel(fh)
    except OSError:
        return
    if kernel is not None:
        os.environ[CORETYPE] = kernel
