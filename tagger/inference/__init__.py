"""Batch tagging: the public API (`api`), its options and inputs, the local and Ray engines,
decode workers, the ONNX backend, and the records every input yields.

Imports inside the stage run one way: `options` (leaf) <- `inputs`, `records`, `selection`,
`decoding` <- `onnx_export`, `engine`, `ray_engine` <- `api` <- `command`. The engines are
imported by `api` only inside a call, so `import tagger` stays free of torch.
"""

from tagger.inference.runtime import prefer_heap_reuse, prefer_passive_omp

__all__ = ["prefer_heap_reuse", "prefer_passive_omp"]
