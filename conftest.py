"""Root test configuration: isolate tests from a running portal before Django reads its settings."""

import os

os.environ.setdefault("VMPORTAL_TESTING", "1")
# A Redis database of their own, so a worker of a running portal never takes the tests' jobs.
os.environ.setdefault("VMPORTAL_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("VMPORTAL_CHANNEL_PREFIX", "vmportal-test")
