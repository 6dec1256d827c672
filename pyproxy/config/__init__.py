"""The configuration language: lexer, parser, syntax tree, parameter registry, compiler, loader."""
