"""faceidx's library: the use cases the CLI and the web app call."""

from .blas import prepare_faiss

prepare_faiss()  # before any `import faiss` (see blas.py)
