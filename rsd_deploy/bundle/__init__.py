"""A bundle: the folder ``rsd-export`` writes (graphs, engines, ``manifest.json``).

``specs``: the one description of each graph's I/O (names, roles, shapes, profiles);
``manifest``: read, validate and write ``manifest.json`` (schema ``manifest.schema.json``).
Runtime backends import this package, never the export tooling.
"""
