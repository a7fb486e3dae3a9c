from django.db import migrations

# The admin's search finds an execution by a whole ARN, or the start of one
# (`execution_arn__istartswith`, selectors.request_ids_matching). The trigram index of 0017
# cannot: every ARN shares "arn:aws:states:<region>:<account>:execution:", so for a whole ARN
# PostgreSQL read every row's entries of those trigrams (19 ms at 100,000 requests for one
# match). A btree with text_pattern_ops answers `LIKE 'prefix%'` in any collation; the
# expression is what Django generates for istartswith. PostgreSQL only (SQLite has no
# operator classes); built without CONCURRENTLY, as 0003, 0006 and 0017.
INDEX = "request_execution_prefix"
EXPRESSION = "UPPER(execution_arn::text) text_pattern_ops"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON approvals_approvalrequest ({EXPRESSION})")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0026_callback_due"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index),
    ]
