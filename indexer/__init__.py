"""faceidx's library: the use cases the CLI and the web app call."""

from .blas import choose_blas_kernel

choose_blas_kernel()  # before any `import faiss` (see blas.py)
