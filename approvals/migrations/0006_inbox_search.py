from django.db import DatabaseError, migrations, transaction

# The inbox's search (approvals/selectors.py inbox_filter): every word must be "contained" in
# the title, requester, state machine or state. selectors.SearchText puts the four in one
# string; a trigram index on it lets PostgreSQL look a word up instead of reading every
# request of the approver's list. The expression must be what Django generates for
# `icontains` on SearchText: UPPER(<SearchText>::text), the ::text a no-op on text.
# PostgreSQL only, as in 0003: SQLite has no pg_trgm and searches without an index.
INDEX = "request_search_trgm"
EXPRESSION = "UPPER((title || ' ' || requester_email || ' ' || state_machine_arn || ' ' || state_name))"


def create_search_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as error:
            # A role that may not create extensions: the search still works, only slower.
            print(f"\n  pg_trgm unavailable ({error.__class__.__name__}); the inbox search will scan the rows")
            return
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON approvals_approvalrequest USING gin ({EXPRESSION} gin_trgm_ops)"
        )


def drop_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0005_approval_policies"),
    ]

    operations = [
        migrations.RunPython(create_search_index, drop_search_index),
    ]
