"""The RT quality loop's pure parts: comparison metrics, structure-set comparison, TG-263 names,
Eclipse structure templates. No Django (the ``quality`` app stores ratings and comparisons)."""
