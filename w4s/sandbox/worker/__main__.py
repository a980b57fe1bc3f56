"""Start the zygote: `python -s -B .../worker/__main__.py CONFIG_JSON` (see `pool.Worker`),
or the test server when CONFIG_JSON has "role": "tester" (see `tester`).

Run as a file, not with -m, so that nothing of w4s is imported: the package is imported
by its own name from its parent folder, which then leaves the import path again (a job
must not import the sandbox's other modules from the checkout).
"""

import json
import os
import sys

# only the role's own modules: the tester imports `threading`, which a zygote running
# only programs and code tests must not (see `zygote.ITEM_MODULES`)
_cfg = json.loads(sys.argv[1])
_tester = _cfg.get("role") == "tester"
if not __package__:
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    if _tester:
        from worker.tester import main as serve_tests
    else:
        from worker.zygote import main

    del sys.path[0]
elif _tester:  # python -m w4s.sandbox.worker (imports w4s first: for debugging only)
    from .tester import main as serve_tests
else:
    from .zygote import main

if _tester:
    serve_tests(_cfg)
else:
    main()
