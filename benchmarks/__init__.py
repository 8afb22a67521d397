"""Benchmark code: `dmmlkd bench allocator|learner` and the scripts that regenerate docs tables.

Numbers are printed and written as Markdown; nothing here is a timed unit test.
"""
