"""pytest_test: a py_test that runs pytest on one test file (tests use fixtures, not unittest)."""

def pytest_test(src, deps = [], data = [], **kwargs):
    """A py_test named after `src` (tests/test_lint.py -> :test_lint); extra args go to py_test."""
    native.py_test(
        name = src.split("/")[-1][:-len(".py")],
        srcs = ["//tools:pytest_main.py", src],
        main = "//tools:pytest_main.py",
        args = ["$(rootpath %s)" % src],  # relative to the test's cwd, the runfiles root
        deps = deps,
        data = data,
        # Keep Bazel from adding __init__.py to tests/, which would stop `import conftest`.
        legacy_create_init = False,
        **kwargs
    )
