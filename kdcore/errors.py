"""The one exception type the CLI and the app turn into a single line of message, never a traceback."""


class KDCoreError(RuntimeError):
    """A problem the user can fix (bad path, wrong classes, missing weights...): its message is shown as is."""
