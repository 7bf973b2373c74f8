"""An app module that cannot be imported (boot-error tests)."""
import this_module_does_not_exist  # noqa: F401
