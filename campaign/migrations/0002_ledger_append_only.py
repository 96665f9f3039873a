"""The ledger is append-only: PostgreSQL refuses UPDATE and DELETE on it.

TRUNCATE (used by test isolation) is not a row operation and is unaffected.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION campaign_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'campaign_ledgerentry is append-only (%% refused)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER campaign_ledger_append_only
    BEFORE UPDATE OR DELETE ON campaign_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION campaign_ledger_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS campaign_ledger_append_only ON campaign_ledgerentry;
DROP FUNCTION IF EXISTS campaign_ledger_append_only();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("campaign", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
