"""Benchmarks: methods compared on the same problems and priced under hardware profiles.

``run`` (``bench run``: interleaved, resumable), ``report`` (``bench report``: the summary and its figures),
``settings`` (a folder's run.json), ``latency`` (token counts priced under hardware profiles) and ``capture``
(``bench capture``: what the hidden-state tap costs). Importing this package loads nothing.
"""
