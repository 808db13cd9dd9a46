"""Prefect flows. Importing this package imports Prefect (2-3 s): the CLI does it only to run one.

Before Prefect is imported we default the settings that matter on an offline laptop (telemetry
off, a startup timeout long enough for a cold ephemeral server) and route civiclake's own
loggers into Prefect's run logs. A user's explicit environment always wins.
"""

import os

_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "civiclake",
    # civiclake's loggers also run outside flows (CLI checks, library use): no API warning then
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}
for _key, _value in _PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
