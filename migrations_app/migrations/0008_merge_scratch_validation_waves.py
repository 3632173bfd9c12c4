from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("migrations_app", "0007_migrationrun_scratch"),
        ("migrations_app", "0007_validation_reports_and_probes"),
        ("migrations_app", "0007_plan_wave_plan"),
    ]

    operations = []
