"""Code shared by the API and the workers: settings, database, spec, model builder."""
