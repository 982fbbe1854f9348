"""Command-line interface. Subcommand modules import only argparse at module level."""
