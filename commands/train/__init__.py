"""``actorq train``: typed settings (``args``), every service's config checked before
start (``configs``), the run that owns the processes (``run``), the monitor ``attach``
shares (``monitor``, ``state``), the evaluator, the progress display, and the run's
``RunSummary`` (``summary``)."""
