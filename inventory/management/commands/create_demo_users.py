from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inventory.services.accounts import create_demo_accounts


class Command(BaseCommand):
    help = "Create the demo teams and one account per role; prints new passwords once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset-passwords", action="store_true", help="Give existing demo accounts new passwords.")

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = create_demo_accounts(reset_passwords=options["reset_passwords"])
        self.stdout.write("Demo accounts (passwords are shown only now; use --reset-passwords to get new ones):")
        for account in accounts:
            shown = account.password or "(unchanged)"
            self.stdout.write(f"  {account.username:<8} {shown:<20} {account.role}")
