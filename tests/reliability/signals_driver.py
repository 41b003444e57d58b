"""Run a resnet-deploy command with one function made slow, to deliver a signal at that point.

    python signals_driver.py MODULE:ATTR -- resnet-deploy args...

``MODULE.ATTR`` is wrapped so that, when first called, it prints ``READY`` on stderr and sleeps
(the parent then sends SIGINT or SIGTERM); afterwards it behaves as before. The CLI runs in this
process exactly as the console script would.
"""

import importlib
import sys
import time

target, _, *argv = sys.argv[1:]
module_name, attr = target.split(":")
module = importlib.import_module(module_name)
real = getattr(module, attr)


def slow(*args, **kwargs):
    sys.__stderr__.write("READY\n")  # the real stderr: the stages redirect sys.stderr around noisy tools
    sys.__stderr__.flush()
    for _ in range(600):
        time.sleep(0.05)
    return real(*args, **kwargs)


setattr(module, attr, slow)
from resnet_deploy.cli import main  # noqa: E402

sys.argv = ["resnet-deploy", *argv]
main()
