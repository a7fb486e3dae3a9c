from django.db import migrations

# The inbox's search for words too short for a trigram (selectors.WordsStartWith): "42" must
# begin a word of the title, requester, state machine or state. A text-search index on those
# words lets PostgreSQL look such a word up instead of reading every request of the list. The
# expression must be the one WordsStartWith generates. PostgreSQL only: SQLite uses a regular
# expression and no index. Built without CONCURRENTLY, as 0006: it blocks writes to the table
# while it builds (about 2 s per 100,000 requests).
INDEX = "request_search_words"
EXPRESSION = (
    "to_tsvector('simple'::regconfig, regexp_replace("
    "(title || ' ' || requester_email || ' ' || state_machine_arn || ' ' || state_name), '[^[:alnum:]]+', ' ', 'g'))"
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON approvals_approvalrequest USING gin ({EXPRESSION})")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0008_inbox_requester_index"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index),
    ]
