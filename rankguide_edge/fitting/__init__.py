"""Fitting: turning SRM runs into routers and findings.

``trace`` (SRM traces with every step's signals), ``replay`` (teacher-forced partial drafts for ``early``),
``label`` (intervention labels: what routing one step changes), ``calibrate`` (thresholds -> a router file),
``router_fit`` (a learned router from labels) and ``analyze`` (which signals predict a wrong answer).
Importing this package loads nothing; the statistics live in :mod:`rankguide_edge.stats`.
"""
