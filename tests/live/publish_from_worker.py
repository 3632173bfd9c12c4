"""Run as a separate process: store and publish progress of one run exactly as a migration worker does
(`events.record_sample`: the durable row first, then the channel layer), then, if asked, finish it.
Used by the consumer tests and by B-FANOUT.

    python -m tests.live.publish_from_worker RUN_ID SAMPLES [INTERVAL_S [FINISH]]
"""

from __future__ import annotations

import os
import sys
import time


def main(run_id: int, count: int, interval: float = 0.0, finish: bool = True) -> None:
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
    start = time.perf_counter()
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
            lease_seconds=60,
        )
        if interval:
            time.sleep(max(0.0, start + i * interval - time.perf_counter()))
    print(f"published {count} in {time.perf_counter() - start:.3f} s", flush=True)
    if finish:
        runs.finish(run, RunStatus.SUCCEEDED, outcome="Running on the destination.", downtime_ms=21.0)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]), int(args[1]), float(args[2]) if len(args) > 2 else 0.0, len(args) < 4 or args[3] == "1")
