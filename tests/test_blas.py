"""FAISS's bundled OpenBLAS is told to use its AVX-512 kernels where the CPU has them, and its
OpenMP threads to sleep when they wait."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.blas import AVX512_KERNEL, CORETYPE, WAIT_POLICY, blas_kernel, cpu_flags

ROOT = Path(__file__).resolve().parents[1]
SAPPHIRE = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 207\n"
            "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
            "avx512_vnni amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
HASWELL = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
XEON_PHI = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512cd avx512er avx512pf\n"


def test_kernel_follows_the_cpus_flags() -> None:
    assert "avx512bw" in cpu_flags(SAPPHIRE) and "amx_tile" in cpu_flags(SAPPHIRE)
    assert blas_kernel(SAPPHIRE) == AVX512_KERNEL
    assert blas_kernel(HASWELL) is None  # OpenBLAS's own choice stays
    assert blas_kernel(XEON_PHI) is None  # AVX-512 without the instructions SkylakeX needs
    assert blas_kernel("") is None


def _faiss_blas(env: dict[str, str]) -> tuple[str, str]:
    """OPENBLAS_CORETYPE after importing faceidx, and the core FAISS's OpenBLAS chose."""
    code = ("import ctypes, glob, os, indexer, faiss\n"
            "libs = glob.glob(os.path.join(os.path.dirname(faiss.__file__), '..',"
            " 'faiss_cpu.libs', 'libopenblas*'))\n"
            "name = b'?'\n"
            "if libs:\n"
            "    lib = ctypes.CDLL(libs[0]); lib.openblas_get_corename.restype = ctypes.c_char_p\n"
            "    name = lib.openblas_get_corename()\n"
            "print(os.environ.get('OPENBLAS_CORETYPE', ''), name.decode())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] if len(out) > 1 else "", out[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_faiss_loads_the_kernel_chosen_and_a_users_choice_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k != CORETYPE}
    wanted = blas_kernel(Path("/proc/cpuinfo").read_text(errors="replace"))
    variable, core = _faiss_blas(env)
    assert variable == (wanted or "")
    if wanted and core != "?":
        assert core == wanted  # FAISS's own OpenBLAS took it when it loaded
    variable, core = _faiss_blas({**env, CORETYPE: "Haswell"})
    assert variable == "Haswell"
    if core != "?":
        assert core == "Haswell"


def _faiss_omp_wait(env: dict[str, str]) -> tuple[str, str]:
    """The wait policy and spin count FAISS's OpenMP runtime took when it loaded after faceidx
    (libgomp prints them on stderr with OMP_DISPLAY_ENV=VERBOSE)."""
    err = subprocess.run([sys.executable, "-c", "import indexer, faiss"],
                         env={**env, "OMP_DISPLAY_ENV": "VERBOSE"}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stderr
    found = dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", err, re.M))
    return found.get("OMP_WAIT_POLICY", "?"), found.get("GOMP_SPINCOUNT", "?")


def test_faiss_threads_sleep_when_they_wait_unless_the_user_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    policy, spins = _faiss_omp_wait(env)
    if policy == "?":
        pytest.skip("FAISS's OpenMP runtime does not print its settings (not libgomp)")
    assert (policy, spins) == ("PASSIVE", "0")  # libgomp's own default spins 300,000 times
    policy, spins = _faiss_omp_wait({**env, WAIT_POLICY: "active"})
    assert policy == "ACTIVE" and int(spins) > 0
