"""The application layer: the core's operations over the store, the read models the pages and
commands show, and the wiring that builds them (docs/ARCHITECTURE.md, "Floors")."""
