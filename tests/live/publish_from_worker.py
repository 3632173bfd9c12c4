"""Run as a separate process: publish progress of one run the way a migration worker does, then finish it.

python -m tests.live.publish_from_worker RUN_ID SAMPLES
"""

from __future__ import annotations

import os
import sys


def main(run_id: int, count: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
    import django

    django.setup()
    from migrations_app import events
    from migrations_app.choices import RunStatus
    from migrations_app.engine.progress import Sample
    from migrations_app.models import MigrationRun
    from migrations_app.services import runs

    run = MigrationRun.objects.get(pk=run_id)
    total = 256 * 1024 * 1024
    for i in range(1, count + 1):
        done = total * i // count
        events.record_sample(
            run,
            Sample(
                elapsed_s=100.0 + i,
                phase="memory",
                percent=min(99.0, 100.0 * i / count),
                bytes_processed=done,
                bytes_remaining=total - done,
                bytes_total=total,
                throughput_bps=64e6,
                dirty_rate_bps=1e6,
                iteration=i,
                eta_s=float(count - i),
                note=f"from worker pid {os.getpid()}",
            ),
            lease_seconds=30,
        )
    runs.finish(run, RunStatus.SUCCEEDED, outcome="Running on the destination.", downtime_ms=21.0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
