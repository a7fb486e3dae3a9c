from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0028_ingest_error_source_queue_url"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalrequest",
            name="message_sent_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="ingesterror",
            name="message_sent_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
