"""The sandbox's default limits, named once: the run configs (`w4s.config.SandboxLimits`)
and the sandbox's own record (`w4s.sandbox.types.SandboxSettings`) both take them from here,
and the sandbox stays free of pydantic."""

ITEM_TIMEOUT_S = 60.0  # hard wall clock per item (the whole solver call)
CODE_TIMEOUT_S = 5.0  # agent.execute_code and each test program
CONCURRENCY = 4  # items in flight at once across the harness
