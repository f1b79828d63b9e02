"""``python -m workbench`` runs the CLI."""

from workbench.cli import main_entry

main_entry()
