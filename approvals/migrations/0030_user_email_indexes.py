"""People are found by their email in any case (a request's requester, a batch of mails'
recipients, the requester's groups at a decision): an index on each case-folded form, so a
lookup reads the account it finds, not every account. The user table is small beside the
requests; building them blocks its writes (sign-ins, SCIM) for as long as a scan of it takes."""

import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0029_message_sent_at"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="user",
            index=models.Index(django.db.models.functions.text.Upper("email"), name="user_email_upper"),
        ),
        migrations.AddIndex(
            model_name="user",
            index=models.Index(django.db.models.functions.text.Lower("email"), name="user_email_lower"),
        ),
    ]
