"""Placeholder demo, replaced as the pipeline lands."""
print("ncml demo: the pipelines are not built yet")
