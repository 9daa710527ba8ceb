"""Ground utilities every layer uses (errors, declared types, import paths, run-folder files,
progress lines, provenance). Nothing here imports torch or any other part of clbench."""
