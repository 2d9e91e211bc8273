"""The optional native forwarding path (unbroken.media._fastpath).

Everything else is declared in pyproject.toml. The extension needs only a C compiler
and CPython's headers (no libsrtp: it calls the srtp_protect that pylibsrtp's binding
exports). It is optional: without a compiler the install still succeeds and the node
forwards with the pure-Python PacketWriter (it logs which path it uses).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "unbroken.media._fastpath",
    sources=["unbroken/media/_fastpath.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                        "-Wno-unused-parameter"],
    optional=True,
)])
