from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("migrations_app", "0007_backup_on_shared_storage"),
        ("migrations_app", "0008_merge_scratch_validation_waves"),
    ]

    operations = []
