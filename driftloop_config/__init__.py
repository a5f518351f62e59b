"""The configuration layer: settings, use cases, redaction.

The ground floor of driftloop: :mod:`driftloop_config.settings` (the one settings object),
:mod:`driftloop_config.usecase` (the use-case YAML model) and :mod:`driftloop_config.redact`
(secret redaction). It imports nothing of ``driftloop/``, ``flows/`` or ``tasks/``; they import
it (checked by import-linter: ``make lint``, tests/test_layers.py).
"""
