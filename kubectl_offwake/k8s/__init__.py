"""The only code that imports the kubernetes client."""
