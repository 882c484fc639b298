"""Performance figures, each a ratio to a baseline measured in the same run (issue 7)."""
