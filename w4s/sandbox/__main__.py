"""`python -m w4s.sandbox`: print the isolation level this machine gives sandbox workers."""

import json

from w4s.sandbox.pool import isolation_report

if __name__ == "__main__":
    print(json.dumps(isolation_report(), indent=2))
