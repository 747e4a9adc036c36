"""thermsr_tools: the measurements around the study, not part of it.

``python -m thermsr_tools.bench`` (the throughput benchmark, docs/performance.md) and ``thermsr_tools.gpu_check``
(the GPU check behind ``tools/gpu_check.sh``, docs/gpu.md). They import ``thermsr_utils``; no module of
``thermsr_utils`` imports them (tests/test_architecture.py), so the notebooks never load them.
"""
