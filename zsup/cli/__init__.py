"""Command-line entry points: zsupd, zsupctl, zsup (Procfile tool), zsup-http."""
