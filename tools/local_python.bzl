"""local_python: a Python toolchain for an interpreter already on this machine (nothing downloaded)."""

def _local_python_impl(rctx):
    # $PYTHON_BIN_PATH (e.g. /abs/.venv/bin/python3), else the python3 on PATH when Bazel fetches this.
    python = rctx.os.environ.get("PYTHON_BIN_PATH", "") or rctx.which("python3")
    if not python:
        fail("local_python: no python3 on PATH; set PYTHON_BIN_PATH")

    # sys.executable keeps a venv's bin/python3 as is: that path is what selects the venv's packages.
    res = rctx.execute([str(python), "-c", "import sys; print(sys.executable); print(sys.version.split()[0])"])
    if res.return_code != 0:
        fail("local_python: cannot run %s: %s" % (python, res.stderr))
    path, version = res.stdout.strip().split("\n")
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

# Python {version}
py_runtime(
    name = "py3_runtime",
    interpreter_path = "{path}",
    python_version = "PY3",
    stub_shebang = "#!{path}",  # Bazel 4's default, `#!/usr/bin/env python`, is missing on Debian
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(path = path, version = version))

local_python = repository_rule(
    implementation = _local_python_impl,
    environ = ["PYTHON_BIN_PATH", "PATH"],  # refetch when these change
    local = True,
)
