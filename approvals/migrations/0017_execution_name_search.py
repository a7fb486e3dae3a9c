from django.db import DatabaseError, migrations, transaction

# The admin's search finds a request by its execution's name, the last part of the execution
# ARN (…:execution:<state machine>:<name>), or any part of it: `execution_arn__icontains`. This
# trigram index lets PostgreSQL look the term up instead of reading the whole table, as 0003
# does for titles and requesters; the expression is what Django generates for icontains.
# PostgreSQL only; without pg_trgm the search still works, only slower. Built without
# CONCURRENTLY, as 0003 and 0006: it blocks writes to the table while it builds.
INDEX = "request_execution_trgm"
EXPRESSION = "UPPER(execution_arn::text)"


def create_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as error:
            print(f"\n  pg_trgm unavailable ({error.__class__.__name__}); the admin search will scan the table")
            return
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON approvals_approvalrequest USING gin ({EXPRESSION} gin_trgm_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0016_ingest_error_message"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index),
    ]
