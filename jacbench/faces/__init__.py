"""How people reach jacbench: the command line, the reports it prints and writes, grading
(``jacbench check``), the pytest plugin, and the library's sweep. Only here are rich and
matplotlib imported.

May import every layer below; nothing imports it but the package's top.
"""
