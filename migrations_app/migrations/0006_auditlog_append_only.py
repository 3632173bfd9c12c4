"""The database itself refuses to change or remove audit-log rows: UPDATE and DELETE raise."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION vmportal_auditlog_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % of a row is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER migrations_app_auditlogentry_append_only
    BEFORE UPDATE OR DELETE ON migrations_app_auditlogentry
    FOR EACH ROW EXECUTE FUNCTION vmportal_auditlog_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS migrations_app_auditlogentry_append_only ON migrations_app_auditlogentry;
DROP FUNCTION IF EXISTS vmportal_auditlog_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("migrations_app", "0005_governance_notifications")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
