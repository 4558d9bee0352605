"""Errors the toolkit raises for bad user input; the CLI prints them as one line."""


class AsrError(Exception):
    """Base class for errors caused by user input (files, configs, manifests)."""
