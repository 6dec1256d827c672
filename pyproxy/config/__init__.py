"""The configuration language: lexer, parser, syntax tree, values and the parameter registry.

Below everything else: it imports nothing of pyproxy's outside this package. Putting a parsed
config together with the modules and the script runtime is ``assembly``'s work."""
