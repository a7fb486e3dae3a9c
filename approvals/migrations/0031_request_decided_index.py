"""The operations dashboard's last 30 days of decisions read from a partial index on decided_at
(approved and rejected requests), not from every decision ever made. Building it reads the
requests table once and blocks writes to it meanwhile, as 0017 and 0027 do (about 0.1 s per
100,000 requests)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0030_user_email_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="approvalrequest",
            index=models.Index(
                condition=models.Q(("status__in", ["approved", "rejected"])),
                fields=["decided_at"],
                name="request_decided",
            ),
        ),
    ]
