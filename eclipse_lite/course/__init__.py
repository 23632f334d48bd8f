"""What the notebooks use beyond the library: student assignments generated from the notebooks."""
