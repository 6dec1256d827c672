"""A config's text made into what runs: its modules loaded with their parameters, its TLS domains
gathered and its route blocks compiled into Python (loader.py, compiler.py).

It sits above the configuration language (``config``: lexer, parser, syntax tree, parameters),
the script runtime and the modules, all of which it puts together; none of them imports it.
"""
