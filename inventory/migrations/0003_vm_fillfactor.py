"""Leave room in the VM table's pages so that a re-sync's update of `last_seen_at` (not indexed) can be a
heap-only tuple update: without it every such update writes a new entry into each of the table's eight
indexes. Rows written before this keep their pages until they are next rewritten."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0002_host_link_speed"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE inventory_virtualmachine SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE inventory_virtualmachine RESET (fillfactor)",
        ),
    ]
