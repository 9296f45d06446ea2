"""The web console (docs/CONSOLE.md): pages and charts are pure, the server reads the store
read-only (:mod:`authtrail.console.server`)."""
