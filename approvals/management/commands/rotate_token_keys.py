from django.core.management.base import BaseCommand, CommandError

from approvals import services


class Command(BaseCommand):
    help = (
        "Move stored task tokens to the newest keys: re-encrypt with the first key in TOKEN_ENCRYPTION_KEYS "
        "and re-fingerprint with the first key in TOKEN_FINGERPRINT_KEYS. A row no key can read is skipped "
        "and reported (exit status 1 after the run), never the end of the run."
    )

    def handle(self, *args, **options):
        report = services.token_keys_rotate()
        self.stdout.write(
            f"re-encrypted {report.rotated} task tokens with the newest key, "
            f"re-fingerprinted {report.refingerprinted}; {report.erased} erased after the retention period"
        )
        for public_id, reason in report.skipped:
            self.stderr.write(f"skipped request {public_id}: {reason}")
        if report.skipped:
            raise CommandError(
                f"{len(report.skipped)} request(s) skipped (listed above); all others were rotated. "
                "Restore the key that encrypted them, or leave them: Step Functions cannot be answered for them."
            )
