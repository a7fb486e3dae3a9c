from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from approvals import checks  # noqa: F401 - registers the system checks
        from approvals.roles import approver_access_group_sync

        post_migrate.connect(approver_access_group_sync, sender=self, dispatch_uid="approvals.approver_access_group")
