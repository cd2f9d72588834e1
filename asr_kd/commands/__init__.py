"""The subcommands of ``asr-kd``: each parses its arguments and calls one library function."""
