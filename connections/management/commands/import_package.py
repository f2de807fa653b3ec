"""`manage.py import_package FILE [--set KEY=VALUE]… [--dry-run] [--connection-json FILE]`."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections.package_format import PackageError
from connections.packages import apply_import, load_package, plan_import


class Command(BaseCommand):
    help = (
        "Import a connection package (our JSON format or a Saviynt transport zip). Prints what "
        "will be created or changed, then applies it in one transaction unless --dry-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file", help="package file: .json (ours) or .zip (Saviynt transport export)"
        )
        parser.add_argument(
            "--set",
            dest="values",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="value for a @KEY@ variable of the package; repeat for each variable",
        )
        parser.add_argument(
            "--connection-json",
            metavar="FILE",
            help="ConnectionJSON for every connection of the package that has none "
            "(a Saviynt export carries it encrypted, so it cannot be read)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="check and print the plan; write nothing"
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        values = _parse_values(options["values"])
        try:
            package = load_package(_read(path), path.name)
            overrides = _connection_json_overrides(package, options["connection_json"])
            plan = plan_import(package, values, overrides=overrides)
        except PackageError as exc:
            raise CommandError(_problems(path.name, exc.errors)) from exc
        for note in package.notes:
            self.stdout.write(f"note: {note}")
        for line in plan.lines():
            self.stdout.write(line)
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
            return
        apply_import(plan)
        self.stdout.write(self.style.SUCCESS(f"Imported {package.name} from {path.name}."))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror})") from exc


def _parse_values(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--set {pair}: expected KEY=VALUE")
        values[key.strip().strip("@")] = value
    return values


def _connection_json_overrides(package, file: str | None) -> dict[str, dict[str, str]]:
    """Give the --connection-json text to each connection whose package has no ConnectionJSON."""
    if not file:
        return {}
    try:
        text = _read(Path(file)).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{file}: not UTF-8 text (invalid byte at offset {exc.start})") from exc
    return {
        c.name: {"connectionJSON": text}
        for c in package.connections
        if not c.documents.get("connectionJSON")
    }


def _problems(filename: str, errors: list[str]) -> str:
    listing = "\n".join(f"  - {error}" for error in errors)
    return f"{filename} was not imported ({len(errors)} problem{'s' if len(errors) != 1 else ''}); nothing was written:\n{listing}"
