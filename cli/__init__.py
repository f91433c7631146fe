"""The click application (installed as `compress.cli`): parse options, call the library, render."""
