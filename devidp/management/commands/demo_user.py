"""Change demo users while the IdP runs, as an admin would in a real directory.

    python -m devidp demo_user alice --no-groups          # removed from every group
    python -m devidp demo_user dave --groups finance-approvers,legal
    python -m devidp demo_user bob --email bob.smith@example.com
    python -m devidp demo_user carol --inactive           # disabled: no sign-in, no silent refresh
    python -m devidp demo_user alice bob --reset          # back to the seeded email, names, groups, active

It works on the same DEVIDP_DATA_DIR as the running server, so the change shows at the user's
next sign-in, or at the portal's next session refresh (prompt=none). Passwords are untouched.
"""

from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from devidp.seed import DEMO_USERS


class Command(BaseCommand):
    help = "Change a demo user's email, groups or active flag (or --reset them to the seeded values)."

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="+", metavar="username")
        parser.add_argument("--reset", action="store_true", help="first restore the seeded email, names and groups")
        parser.add_argument("--email", help="a new email address (one user only)")
        groups = parser.add_mutually_exclusive_group()
        groups.add_argument("--groups", help="comma-separated group names; replaces the user's groups")
        groups.add_argument("--no-groups", action="store_true", help="remove the user from every group")
        active = parser.add_mutually_exclusive_group()
        active.add_argument("--active", dest="active", action="store_true", default=None, help="enable the account")
        active.add_argument("--inactive", dest="active", action="store_false", help="disable the account")

    def handle(self, *args, usernames, reset, email, groups, no_groups, active, **options):
        if email is not None:
            if len(usernames) > 1:
                raise CommandError("--email applies to one user at a time")
            try:
                validate_email(email)
            except ValidationError as error:
                raise CommandError(f"not an email address: {email!r}") from error
        group_names = None
        if no_groups:
            group_names = []
        elif groups is not None:
            group_names = sorted({name.strip() for name in groups.split(",") if name.strip()})
        seeded = {demo.username: demo for demo in DEMO_USERS}

        with transaction.atomic():
            users = {user.username: user for user in User.objects.filter(username__in=usernames)}
            missing = [name for name in usernames if name not in users]
            if missing:
                raise CommandError(f"no such user: {', '.join(missing)} (run `python -m devidp setup` first?)")
            for username in usernames:
                user = users[username]
                names = group_names
                if reset:
                    demo = seeded.get(username)
                    if demo is None:
                        raise CommandError(f"{username} is not a demo user: nothing to reset to")
                    user.email, user.first_name, user.last_name = demo.email, demo.first_name, demo.last_name
                    user.is_active = True
                    names = list(demo.groups) if names is None else names
                if email is not None:
                    user.email = email
                if active is not None:
                    user.is_active = active
                user.save()
                if names is not None:
                    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in names])
                self.stdout.write(self.describe(user))

    @staticmethod
    def describe(user: User) -> str:
        groups = ",".join(sorted(user.groups.values_list("name", flat=True))) or "-"
        state = "active" if user.is_active else "inactive"
        return f"{user.username}: email={user.email} groups={groups} {state}"
