"""The fast tier: the plugin's session logic against a fake backend and tiny GGUF files.

This file makes ``tests/fast`` a package, so its ``conftest.py`` is imported as
``fast.conftest`` and never replaces the ``conftest`` module of ``tests/`` in ``sys.modules``
(test modules that still do ``from conftest import ...`` would otherwise get this one), and
its test modules may share basenames with those in ``tests/``.
"""
