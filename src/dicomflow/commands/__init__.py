"""Command groups of the ``dicomflow`` CLI, one module per product area."""
