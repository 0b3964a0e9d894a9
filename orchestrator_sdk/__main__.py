"""``python -m orchestrator_sdk``: the client commands, where only the SDK is installed."""

import sys

from orchestrator_sdk.cli import main

sys.exit(main())
