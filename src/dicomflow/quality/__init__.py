"""The RT quality loop: contour ratings of finished jobs, comparisons of results with the
clinician's edited structure sets, and processing statistics."""
