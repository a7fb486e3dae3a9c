from django.core.management.base import BaseCommand

from approvals import services


class Command(BaseCommand):
    help = "Re-encrypt stored task tokens with the first key in TOKEN_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        count = services.token_keys_rotate()
        self.stdout.write(f"re-encrypted {count} task tokens with the newest key")
