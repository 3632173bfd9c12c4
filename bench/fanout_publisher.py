"""The worker side of B-FANOUT, run as its own process: store and publish progress samples of one run
exactly as a migration worker does (`events.record_sample`: durable row first, then the channel layer).

    python -m bench.fanout_publisher RUN_ID COUNT INTERVAL_S
"""

from __future__ import annotations

import os
import sys
import time


def main(run_id: int, count: int, interval: float) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
    import django

    django.setup()
    from migrations_app import events
    from migrations_app.engine.progress import Sample
    from migrations_app.models import MigrationRun

    run = MigrationRun.objects.get(pk=run_id)
    total = 1 << 30
    start = time.perf_counter()
    for i in range(1, count + 1):
        done = total * i // count
        events.record_sample(
            run,
            Sample(
                elapsed_s=float(i),
                phase="memory",
                percent=min(99.0, 100.0 * i / count),
                bytes_processed=done,
                bytes_remaining=total - done,
                bytes_total=total,
                throughput_bps=1e8,
                dirty_rate_bps=1e6,
                iteration=i,
                eta_s=float(count - i),
            ),
            lease_seconds=60,
        )
        if interval:
            time.sleep(max(0.0, start + i * interval - time.perf_counter()))
    print(f"published {count} in {time.perf_counter() - start:.3f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
