"""agentbox: the daemon of a small box that runs AI agents around the clock."""

import time

__version__ = "0.1.0"
# When agentbox was first imported: start-up is measured from here. (The process's own start
# time would also count whatever ran before an `exec`, such as ./scripts/run's set-up.)
STARTED = time.monotonic()
